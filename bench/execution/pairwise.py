"""Pairwise judging of a finished run (``editbench pairwise``): for every two rows (method x
setting) of the run, the judge compares their cells of the same sample and seed.

Each match shows the judge what its template names: the sample's source, the two rows' saved
images and the instruction (``judge.instruction`` as for the VIEScore judge); GEditBench v2's
visual-quality prompt shows the two edits only. The source is prepared as the two cells saw it
(their backbone's size rule, ``run_frames``); when the two rows ran on backbones of different
rules, at the larger of the two.

Each pair is asked once, in one order, as GEditBench v2's arena asks it (``generate_canonical_pairs``
in its ``common_utils/pairwise.py``, used by ``GEditBenchV2Eval``): Image A is the row whose name
comes first under its ``model_sort_key`` (``name_order_key``), in every dimension; the verdict is
mapped back to the rows. Their arena neither swaps A and B nor randomises the order, so there is
no second verdict to combine. Every match, with its judge identity and which row was shown as
Image A, is written to ``RUN/pairwise.jsonl`` with its ``dimension`` (the template's version;
judging again with a template replaces that template's matches and keeps the others'): the input
of win rates (``bench.reporting.pairwise``) and of the Elo fit (``report --table geditbench_v2``).
"""

import json
import re
from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path

from bench.execution.scoring import read_png
from bench.metrics.judge import instruction_of, to_pil
from bench.metrics.judge_failures import NO_INSTRUCTION
from bench.paths import write_atomic
from bench.samples import Frame, cell_frame, run_frames

MATCHES = "pairwise.jsonl"


@dataclass
class Match:
    """One comparison: rows ``first`` and ``second`` (``method setting-json``) on one cell; ``winner``
    is first, second, tie or None (a failure of class ``kind``); ``first_shown_as`` A or B."""

    first: str
    second: str
    sample_id: str
    seed: int
    winner: str | None
    kind: str
    reason: str
    first_shown_as: str


_NAME_TOKENS = re.compile(r"\d+|[a-zA-Z]+")


def name_order_key(name: str) -> tuple:
    """GEditBench v2's ``model_sort_key``: the name's runs of letters (lower-cased) and of digits
    (as numbers), then the name itself. A token is tagged by kind so that a number never meets a
    word (their key raises TypeError there); wherever theirs is defined the order is the same."""
    tokens = [(0, int(t)) if t.isdigit() else (1, t) for t in _NAME_TOKENS.findall(name.lower())]
    return tokens, name


def judge_run(run_dir: Path, judge, rows: list[str] | None, instruction_mode: str, batch_size: int = 16) -> list[Match]:
    """Every match between the run's rows (or only ``rows``, by ``method setting-json`` or method
    name), judged by ``judge`` (a ``PairwiseJudge``); also written to ``RUN/pairwise.jsonl``."""
    from bench.data import load_dataset
    from bench.execution.config import config_from_resolved
    from bench.store import read_manifest, Store

    manifest = read_manifest(run_dir)
    config = config_from_resolved(manifest["config"])
    refs = {r.id: r for r in load_dataset(config.dataset)}
    store = Store(run_dir)
    try:
        cells = store.cells_frame()
    finally:
        store.close()
    cells = cells[(cells["status"] == "ok") & cells["output_path"].notna()]
    cells = cells.assign(row=cells["method"] + " " + cells["setting"])
    names = list(dict.fromkeys(cells["row"]))
    if rows:
        names = [n for n in names if n in rows or n.split(" ", 1)[0] in rows]
    by_row = {n: {(c.sample_id, int(c.seed)): c for c in cells[cells["row"] == n].itertuples()} for n in names}
    frames = run_frames(manifest)  # each backbone's resolution rule: sources as its cells saw them
    matches, todo = [], []
    for first, second in combinations(names, 2):
        for sample_id, seed in sorted(by_row[first].keys() & by_row[second].keys()):
            todo.append((first, second, sample_id, seed))
    sources: dict[tuple[str, Frame], tuple] = {}
    for at in range(0, len(todo), batch_size):
        batch = todo[at : at + batch_size]
        triples, instructions, asked = [], [], []
        for first, second, sample_id, seed in batch:
            cells_shown = [by_row[r][sample_id, seed] for r in (first, second)]
            frame = max((cell_frame(frames, c.backbone) for c in cells_shown), key=lambda frame: frame.pixels)
            if (sample_id, frame) not in sources:
                sample = refs[sample_id].load(frame)
                sources[sample_id, frame] = (to_pil(sample.image), instruction_of(sample, instruction_mode))
            source, instruction = sources[sample_id, frame]
            if instruction is None:
                matches.append(Match(first, second, sample_id, seed, None, NO_INSTRUCTION, "the sample has no instruction", ""))
                continue
            images = [to_pil(read_png(Path(run_dir) / c.output_path)) for c in cells_shown]
            first_as_a = name_order_key(first) <= name_order_key(second)
            a, b = images if first_as_a else images[::-1]
            triples.append((source, a, b))
            instructions.append(instruction)
            asked.append((first, second, sample_id, seed, first_as_a))
        for (first, second, sample_id, seed, first_as_a), verdict in zip(asked, judge.verdicts(triples, instructions)):
            winner = verdict.winner
            if winner in ("a", "b"):
                winner = "first" if (winner == "a") == first_as_a else "second"
            matches.append(Match(first, second, sample_id, seed, winner, verdict.kind, verdict.reason,
                                 "A" if first_as_a else "B"))  # fmt: skip
    line, dimension = judge.describe(), judge.template.version
    path = Path(run_dir) / MATCHES
    kept = [r for r in read_matches(path) if r.get("dimension") != dimension]  # other templates' verdicts stay
    records = kept + [{**asdict(m), "judge": line, "dimension": dimension} for m in matches]
    write_atomic(path, lambda p: p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                                              encoding="utf-8"))  # fmt: skip
    return matches


def read_matches(path: Path) -> list[dict]:
    """The records of a run's ``pairwise.jsonl`` (none when it is absent), each with its
    ``dimension``: the template it was judged with (an Elo fit is joint over dimensions)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
