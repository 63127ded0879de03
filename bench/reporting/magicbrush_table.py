"""MagicBrush's table view of a run: ``editbench report RUN --table magicbrush``.

MagicBrush (Zhang et al., NeurIPS 2023; ``evaluation/image_eval.py``) scores two settings, one
row per method in each, as its Table 2 does:

- **Single-turn** (its "all turn" pairs): turn 1 and every turn edited independently from its
  recorded source, each against its own ground truth;
- **Multi-turn** (its "final turn" pairs): each chain's last image of the iterative edits (turn k
  editing the method's own turn k-1) against the chain's last ground truth.

Columns L1, L2, CLIP-I, DINO (to the ground truth: ``l1_gt``, ``l2_gt``, ``clip_i_gt``,
``dino_gt``) and CLIP-T (``clip_t``, NaN without output captions): means over the images, as
MagicBrush averages over pairs, four decimals (with 95% intervals under ``--ci``). The
multi-turn rows need ``dataset.turns: iterative`` (``bench.reporting.turns``).
"""

import dataclasses
from pathlib import Path

from bench.reporting import plots
from bench.reporting.aggregate import Row, RunData, arrow, independent_cells, load_run, nan_notes, row_name, summarize
from bench.reporting.piebench_table import value_text
from bench.reporting.report import md_table, md_text
from bench.reporting.turns import final_turn_cells, has_chains

METRICS = (("l1_gt", "L1"), ("l2_gt", "L2"), ("clip_i_gt", "CLIP-I"), ("dino_gt", "DINO"), ("clip_t", "CLIP-T"))
SETTINGS = (("Single-turn", "all turns, each edited from its recorded source", independent_cells),
            ("Multi-turn", "each chain's final turn, edited turn after turn from the method's own output",
             final_turn_cells))  # fmt: skip
DIGITS = 4


def magicbrush_rows(run: RunData) -> list[tuple[str, list[Row]]]:
    """(MagicBrush setting, its rows per method and setting); the multi-turn setting only when the
    run has chains."""
    out = []
    for name, _, cells_of in SETTINGS:
        if name == "Multi-turn" and not has_chains(run.cells):
            continue
        out.append((name, summarize(dataclasses.replace(run, cells=cells_of(run.cells)), keep_chained=True)))
    return out


def magicbrush_markdown(run_dir, ci: bool = False) -> str:
    """The table (a row per MagicBrush setting, method and setting of the run) with its notes."""
    run = load_run(run_dir)
    lines = [f"# MagicBrush table: {md_text(run.run_dir.name)}", ""]
    if run.labels:
        lines += [f"**{md_text(plots.caveat(run.labels))}**", ""]
    lines += [f"- {name}: {md_text(what)}." for name, what, _ in SETTINGS] + [""]
    header = ["setting", "method", "n"] + [f"{title} {arrow(m)}".strip() for m, title in METRICS]
    body, shown = [], []
    for name, rows in magicbrush_rows(run):
        for r in rows:
            if r.is_reference:
                continue
            body.append([name, row_name(r.method, r.label), str(r.ok)] +
                        [value_text(r.metrics.get(m), ci, DIGITS) for m, _ in METRICS])  # fmt: skip
            kept = {m: s for m, s in r.metrics.items() if m in dict(METRICS)}
            shown.append(dataclasses.replace(r, edit_type=name, metrics=kept))
    lines += md_table(header, body) + [""]
    notes = [] if has_chains(run.cells) else [
        "No multi-turn rows: the run has no chains (run it with dataset.turns: iterative)."]
    missing = [m for m, _ in METRICS if m not in run.metric_names]
    if missing:
        notes.append(f"Not computed in this run: {', '.join(missing)} "
                     f"(editbench score {run.run_dir} --metrics {','.join(missing)}).")  # fmt: skip
    notes += nan_notes(shown)
    if notes:
        lines += ["Notes:", ""] + [f"- {md_text(n)}" for n in notes]
    return "\n".join(lines) + "\n"


def write_magicbrush(run_dir, ci: bool = False, md_path=None) -> list[str]:
    """The table as Markdown, written to ``md_path`` when given, else returned to print."""
    text = magicbrush_markdown(run_dir, ci)
    if not md_path:
        return [text]
    Path(md_path).parent.mkdir(parents=True, exist_ok=True)
    Path(md_path).write_text(text, encoding="utf-8")
    return [f"MagicBrush table -> {md_path}"]
