"""A benchmark's own table view, drawn from its card: ``editbench report RUN --table NAME``.

A bundled card (``datasets/<name>/card.yaml``) with a ``table`` entry declares its view as data:

- ``title``, ``explanation`` (printed above the tables) and ``aliases`` (other ``--table`` names);
- ``columns``: metric -> column title; ``rows``: ``edit_type``, a row per method, setting and
  edit type in the card's ``edit_types`` order (``row_title`` heads that column);
- ``sections``: one table per combination, in order; ``{group: G, values: {v: title}, missing:
  title}`` splits by a group's values (``missing``: cells without the group), ``{subset: G,
  titles: [full, subset]}`` gives the full set and the cells whose boolean group is true;
- ``drop_together``: a cell with any column NaN is left out of every column's mean (counted in
  the notes), as a scorer that writes a sample whole or not at all;
- ``overall``: the row below each method's rows, ``{name, rule, reference}`` with ``rule``
  ``mean of category means`` (the mean of the rows' means) or ``mean of samples`` (the mean over
  the cells), and ``reference`` saying what the benchmark's own scripts compute. It says over
  how many of the card's edit types it is taken (``k/N``): an overall over fewer than all is
  never shown as if it were the benchmark's.

``kind: elo`` (GEditBench v2) is an arena view instead: each row's Elo with its bootstrap interval
from the run's pairwise verdicts (``RUN/pairwise.jsonl``, ``bench.reporting.elo``), with
``bootstrap`` refits and ``seed``, fitted jointly over the judged dimensions; ``dimensions``
(template version -> title) are the ones the benchmark's Elo is over: the view counts each one's
matches and says which the run lacks (such an Elo is not the benchmark's).

Which cards a view cannot express, and why: ``bench/reporting/piebench_table.py`` (PIE-Bench's
published numbers beside the run, per-column units and scaling, metrics computed on masked
regions: a view with reference rows read from ``references/*.yaml``).
"""

import dataclasses
import itertools
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.data import dataset_cards
from bench.errors import ConfigError, unknown
from bench.reporting.aggregate import UNTRAINED_MARK, Row, RunData, Stat, arrow, load_run, nan_notes, summarize
from bench.reporting.html_report import STYLE, _caveat, _table, esc
from bench.reporting.piebench_table import value_text
from bench.reporting.report import caveat_md, md_table, md_text

MEAN_OF_MEANS, MEAN_OF_SAMPLES = "mean of category means", "mean of samples"
AVERAGE = "average"  # the key of a view's ``average`` column in a row's metrics


def table_cards() -> dict[str, dict]:
    """Every ``--table`` name (a card's name and its aliases) -> the card that declares a view."""
    names = {}
    for name, card in dataset_cards().items():
        if card.get("table"):
            for alias in [name, *card["table"].get("aliases", [])]:
                names[alias] = card
    return names


@dataclass
class Section:
    """One table: its title, its rows (per method, setting and category, then the overall row),
    whether it is the whole set (notes count those), how many cells ``drop_together`` left out,
    and over how many categories each method's overall row is taken."""

    title: str
    whole: bool
    rows: list[Row]
    dropped: int = 0
    covered: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclass
class CardTable:
    card: dict
    run: RunData
    sections: list[Section]
    ci: bool = False

    @property
    def view(self) -> dict:
        return self.card["table"]

    @property
    def columns(self) -> list[tuple[str, str]]:
        return list(self.view["columns"].items())

    @property
    def shown(self) -> list[tuple[str, str]]:
        """The columns drawn: the metrics', then the ``average`` column when the view has one."""
        return self.columns + ([(AVERAGE, self.view["average"])] if self.view.get("average") else [])

    @property
    def categories(self) -> list[str]:
        return list(self.card.get("edit_types") or [])

    @property
    def overall(self) -> str:
        return self.view["overall"]["name"]

    @property
    def summary_rows(self) -> set[str]:
        """The rows that pool others: the overall row and the ``groups`` rows."""
        return {self.overall, *(g["name"] for g in self.view.get("groups", []))}

    @property
    def missing_metrics(self) -> list[str]:
        return [m for m, _ in self.columns if m not in self.run.metric_names]

    def n_text(self, section: Section, row: Row) -> str:
        """The n column (``Row.n_text``: samples), and for an overall row over how many categories it is taken."""
        if row.edit_type != self.overall:
            return row.n_text
        kind = self.view.get("row_title", "categories")
        return f"{row.n_text} ({section.covered[row_key(row)]}/{len(self.categories)} {plural(kind)})"


def plural(noun: str) -> str:
    return noun[:-1] + "ies" if noun.endswith("y") else noun + "s"


def row_key(row: Row) -> str:
    return f"{row.method} {row.setting_json}"


def drop_together(run: RunData, cells: pd.DataFrame, metrics: list[str]) -> tuple[pd.DataFrame, int]:
    """``cells`` with every one of ``metrics`` NaN wherever one of them is NaN, and how many ok
    cells that touched (cells where each is NaN or not computed are not counted)."""
    present = [m for m in metrics if m in run.image_metrics]
    stored = {m: pd.Series([(key, m) in run.present for key in cells["key"]], index=cells.index) for m in present}
    failed = pd.Series(False, index=cells.index)
    whole = pd.Series(True, index=cells.index)
    for m in present:
        nan = cells[f"metric.{m}"].isna()
        failed |= stored[m] & nan
        whole &= ~stored[m] | nan
    cells = cells.copy()
    cells.loc[failed, [f"metric.{m}" for m in present]] = math.nan
    return cells, int((failed & ~whole & (cells["status"] == "ok")).sum())


def _has_mean(row: Row, metrics: list[str]) -> bool:
    """Whether a category row has a finite mean of a column metric (KRIS-Bench's KP exists on some
    categories only; a view that drops a cell's scores together has all or none)."""
    return any(not math.isnan(row.metrics[m].mean) for m in metrics if m in row.metrics)


def _macro_mean(rows: list[Row], metric: str) -> Stat:
    """The mean of the rows' means of ``metric`` (rows without a finite mean left out); the counts summed."""
    stats = [r.metrics[metric] for r in rows if metric in r.metrics]
    means = [s.mean for s in stats if not math.isnan(s.mean)]
    return Stat(sum(means) / len(means) if means else math.nan, n=sum(s.n for s in stats),
                n_nan=sum(s.n_nan for s in stats), n_missing=sum(s.n_missing for s in stats))  # fmt: skip


def _overall(view: CardTable, rows: list[Row], pooled: Row | None) -> Row:
    """The overall row of one method and setting over its category rows, by the card's rule."""
    rule = view.view["overall"]["rule"]
    if rule == MEAN_OF_SAMPLES:
        metrics = {m: pooled.metrics[m] for m, _ in view.columns if m in pooled.metrics}
    else:
        metrics = {m: _macro_mean(rows, m) for m, _ in view.columns}
    return dataclasses.replace(
        rows[0], edit_type=view.overall, cells=sum(r.cells for r in rows), ok=sum(r.ok for r in rows),
        failed=sum(r.failed for r in rows), skipped=sum(r.skipped for r in rows),
        samples=sum(r.sample_count for r in rows), metrics=metrics, values={},
    )  # fmt: skip


def _normalised(stat: Stat, scale: dict | None) -> Stat:
    """``stat`` mapped from ``scale['from']`` (e.g. [1, 5]) onto ``scale['to']`` (e.g. [0, 100])."""
    if not scale:
        return stat
    (a, b), (c, d) = scale["from"], scale["to"]

    def at(x: float) -> float:
        return c + (x - a) * (d - c) / (b - a)

    return dataclasses.replace(stat, mean=at(stat.mean), low=at(stat.low), high=at(stat.high))


def _members(view: CardTable, name: str) -> set[str]:
    """The categories of a ``groups`` entry (whose members may be other groups), or the category itself."""
    groups = {g["name"]: g["members"] for g in view.view.get("groups", [])}
    if name not in groups:
        return {name}
    return set().union(*(_members(view, m) for m in groups[name]))


def _pooled(cells: pd.DataFrame, metrics: list[str]) -> Stat:
    """The mean of every finite value of ``metrics`` over ``cells`` together (KRIS-Bench's AVG; the
    NaN values are counted in their own columns)."""
    values = pd.concat([cells[f"metric.{m}"] for m in metrics if f"metric.{m}" in cells]).astype(float).dropna()
    return Stat(float(values.mean()) if len(values) else math.nan, n=len(values))


def _section(view: CardTable, title: str, whole: bool, cells: pd.DataFrame) -> Section:
    run, metrics = view.run, [m for m, _ in view.columns]
    dropped = 0
    if view.view.get("drop_together"):
        cells, dropped = drop_together(run, cells, metrics)
    chosen = dataclasses.replace(run, cells=cells)
    order = {name: i for i, name in enumerate(view.categories)}
    rows = summarize(chosen, by_edit_type=True)
    for group in view.view.get("groups", []):  # a group's row pools its categories' cells
        inside = cells[cells["edit_type"].isin(_members(view, group["name"]))].assign(edit_type=group["name"])
        rows += summarize(dataclasses.replace(run, cells=inside), by_edit_type=True) if len(inside) else []
        order.setdefault(group["name"], len(order))
    pooled = {row_key(r): r for r in summarize(chosen)} if view.view["overall"]["rule"] == MEAN_OF_SAMPLES else {}
    out, covered = [], {}
    for method in dict.fromkeys(r.method for r in rows):
        for setting in dict.fromkeys(r.setting_json for r in rows if r.method == method):
            own = sorted((r for r in rows if r.method == method and r.setting_json == setting),
                         key=lambda r: order.get(r.edit_type, len(order)))  # fmt: skip
            categories = [r for r in own if r.edit_type in view.categories or r.edit_type not in order]
            out += own + [_overall(view, categories, pooled.get(row_key(own[0])))]
            covered[row_key(own[0])] = sum(r.edit_type in view.categories and _has_mean(r, metrics) for r in own)
    average = view.view.get("average")
    for row in out:
        own = cells[(cells["method"] == row.method) & (cells["setting"] == row.setting_json) & (cells["status"] == "ok")]
        if row.edit_type != view.overall:
            own = own[own["edit_type"].isin(_members(view, row.edit_type))]
        row.metrics = {m: _normalised(s, view.view.get("normalise")) if m in metrics else s for m, s in row.metrics.items()}
        if average:
            row.metrics[AVERAGE] = _normalised(_pooled(own, metrics), view.view.get("normalise"))
    return Section(title, whole, out, dropped, covered)


def _splits(run: RunData, spec: dict) -> list[tuple[str, bool, pd.Series]]:
    """(title, whole set?, which cells) for one ``sections`` entry of a card's view."""
    if "subset" in spec:
        inside = run.groups(spec["subset"]) == "true"
        full, part = spec["titles"]
        return [(full, True, pd.Series(True, index=run.cells.index)), (part, False, inside)]
    values = run.groups(spec["group"])
    out = [(title, True, values == value) for value, title in spec["values"].items()]
    if values.isna().any() and spec.get("missing"):
        out.append((spec["missing"], True, values.isna()))
    return out


def build_table(run_dir, name: str, ci: bool = False) -> CardTable:
    """The view card ``name`` declares, of a run folder."""
    cards = table_cards()
    if name not in cards:
        raise ConfigError(f"--table: {unknown('table', name, ['piebench', 'categories', *cards])}")
    card, run = cards[name], load_run(run_dir)
    view = CardTable(card, run, [], ci)
    for parts in itertools.product(*(_splits(run, spec) for spec in card["table"].get("sections", []))):
        chosen = pd.Series(True, index=run.cells.index)
        for _, _, which in parts:
            chosen &= which
        if chosen.any():
            title = ", ".join(t for t, _, _ in parts) or card["table"]["title"]
            view.sections.append(_section(view, title, all(w for _, w, _ in parts), run.cells[chosen]))
    return view


def header(view: CardTable) -> list[str]:
    """The header; a column an untrained judge made carries ``UNTRAINED_MARK``."""
    untrained = view.run.untrained_metrics
    return (["method", "setting", view.view.get("row_title", "category"), "n"]
            + [" ".join(p for p in (title, arrow(m), UNTRAINED_MARK * (m in untrained)) if p)
               for m, title in view.shown])  # fmt: skip


def body(view: CardTable, section: Section) -> list[list[str]]:
    return [[r.method, r.label, r.edit_type, view.n_text(section, r)]
            + [value_text(r.metrics.get(m), view.ci) for m, _ in view.shown] for r in section.rows]  # fmt: skip


def explanation(view: CardTable) -> str:
    """The card's explanation and the rules of its overall row and drop rule, as the tables apply them."""
    overall = view.view["overall"]
    kind = view.view.get("row_title", "category")
    text = " ".join(view.view.get("explanation", "").split())
    text += (f" {overall['name']} = the {overall['rule']} over the {plural(kind)} present (k/{len(view.categories)} in"
             f" the n column); {' '.join(overall['reference'].split())}.")  # fmt: skip
    if view.view.get("drop_together"):
        text += " A cell with any column NaN is left out of every column's mean, as the benchmark's scorer drops it."
    return text + " NaN cells are counted beside the means."


def notes(view: CardTable) -> list[str]:
    out = []
    if view.missing_metrics:
        missing = ",".join(view.missing_metrics)
        out.append(f"Not computed in this run: {missing} (add them from the saved images: "
                   f"editbench score {view.run.run_dir} --metrics {missing}).")  # fmt: skip
    dropped = sum(s.dropped for s in view.sections if s.whole)
    if dropped:
        titles = ", ".join(t for _, t in view.columns)
        out.append(f"{dropped} cell(s) with one of {titles} NaN are left out of all their means "
                   "(the benchmark keeps or drops a sample's scores together).")  # fmt: skip
    if any(k < len(view.categories) for s in view.sections for k in s.covered.values()):
        out.append(f"An {view.overall} over fewer than {len(view.categories)} {plural(view.view.get('row_title', 'category'))} "
                   f"is not {view.view['title']}'s {view.overall}; the n column says how many it covers.")  # fmt: skip
    names = dict(view.columns)
    shown = [dataclasses.replace(r, metrics={m: s for m, s in r.metrics.items() if m in names})
             for s in view.sections if s.whole for r in s.rows if r.edit_type not in view.summary_rows]  # fmt: skip
    return out + nan_notes(shown)


def _judge(run: RunData) -> str:
    """The judge line the page carries once, at its top."""
    return f"Judge: {run.judge_line}" if run.judge_line else "Judge: not recorded (no judge metric computed)"


def table_markdown(view: CardTable) -> str:
    run = view.run
    lines = [f"# {md_text(view.view['title'])} table: {md_text(run.run_dir.name)}", "", *caveat_md(run),
             md_text(_judge(run)), "", md_text(explanation(view)), ""]  # fmt: skip
    for section in view.sections:
        lines += [f"## {md_text(section.title)}", ""] + md_table(header(view), body(view, section)) + [""]
    remarks = notes(view)
    if remarks:
        lines += ["Notes:", ""] + [f"- {md_text(n)}" for n in remarks]
    return "\n".join(lines) + "\n"


def table_html(view: CardTable) -> str:
    run = view.run
    title = f"{esc(view.view['title'])} table: {esc(run.run_dir.name)}"
    parts = [f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>',
             f"<style>{STYLE}</style></head><body><h1>{title}</h1>", _caveat(run), f"<p>{esc(_judge(run))}</p>",
             f"<p>{esc(explanation(view))}</p>"]  # fmt: skip
    for section in view.sections:
        parts += [f"<h2>{esc(section.title)}</h2>",
                  _table(header(view), body(view, section), 3, [r.is_reference for r in section.rows])]  # fmt: skip
    remarks = notes(view)
    if remarks:
        parts += ["<p>Notes:</p>", "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in remarks) + "</ul>"]
    return "\n".join(p for p in parts if p) + "\n</body></html>\n"


@dataclass
class EloTable:
    """A card's arena view (``table.kind: elo``): Elo ratings of the run's rows from the pairwise
    verdicts in ``RUN/pairwise.jsonl`` (``editbench pairwise``), fitted jointly over dimensions."""

    card: dict
    run_dir: Path
    ratings: list
    judges: list[str]
    failed: int
    per_dimension: dict  # dimension (template version) -> its judged matches

    def dimensions_line(self) -> str:
        """Each judged dimension (by the card's title) with its matches, and the card's dimensions
        the run lacks."""
        titles = self.view.get("dimensions") or {}
        judged = [f"{titles.get(d, d)} ({d}): {n} matches" for d, n in self.per_dimension.items()]
        missing = [f"{t} ({d})" for d, t in titles.items() if d not in self.per_dimension]
        line = "Dimensions fitted jointly: " + "; ".join(judged) + "."
        if missing:
            line += (f" Not judged: {', '.join(missing)}: {self.view['title']}'s Elo is over all "
                     f"{len(titles)} dimensions, this one over {len(titles) - len(missing)} of them.")
        return line

    @property
    def view(self) -> dict:
        return self.card["table"]


def build_elo(run_dir, card: dict) -> EloTable:
    from bench.execution.pairwise import MATCHES, read_matches
    from bench.reporting.elo import Match, elo_ratings

    records = read_matches(Path(run_dir) / MATCHES)
    if not records:
        raise ConfigError(f"--table {card['name']}: {run_dir} has no {MATCHES}; judge its rows first "
                          f"(editbench pairwise {run_dir} --template T, once per dimension)")  # fmt: skip
    outcome = {"first": 1.0, "second": 0.0, "tie": 0.5}
    matches = [Match(r.get("dimension", "?"), f"{r['sample_id']} {r['seed']}", r["first"], r["second"], outcome[r["winner"]])
               for r in records if r["winner"]]  # fmt: skip
    view = card["table"]
    ratings = elo_ratings(matches, n_boot=int(view.get("bootstrap", 100)), seed=int(view.get("seed", 42)))
    judges = list(dict.fromkeys(f"{r.get('dimension', '?')}: {r['judge']}" for r in records))
    per_dimension = dict(Counter(m.dimension for m in matches))
    return EloTable(card, Path(run_dir), ratings, judges, sum(not r["winner"] for r in records), per_dimension)


def elo_markdown(view: EloTable) -> str:
    head = ["row", "Elo", "95% CI", "dimensions", "matches"]
    body = [[r.name, f"{r.elo:.1f}", f"[{r.low:.1f}, {r.high:.1f}]", str(r.dimensions), str(r.matches)]
            for r in view.ratings]  # fmt: skip
    lines = [f"# {md_text(view.view['title'])} table: {md_text(view.run_dir.name)}", ""]
    lines += [f"Judge ({md_text(j)})" for j in view.judges] + ["", md_text(" ".join(view.view["explanation"].split())), ""]
    lines += [md_text(view.dimensions_line()), ""]
    lines += md_table(head, body) + [""]
    if view.failed:
        lines += [f"Notes: {view.failed} match(es) without a verdict (failures, counted in editbench pairwise) are left out."]
    return "\n".join(lines) + "\n"


def write_table(run_dir, name: str, ci: bool = False, html_path=None, md_path=None) -> list[str]:
    """Write card ``name``'s view to ``html_path`` and/or ``md_path``; without either, return its Markdown."""
    card = table_cards().get(name)
    if card is not None and card["table"].get("kind") == "elo":
        if html_path:
            raise ConfigError(f"--table {name} is written as Markdown (--md), not with --html")
        text = elo_markdown(build_elo(run_dir, card))
        if md_path:
            Path(md_path).parent.mkdir(parents=True, exist_ok=True)
            Path(md_path).write_text(text, encoding="utf-8")
            return [f"{card['table']['title']} table -> {md_path}"]
        return [text]
    view = build_table(run_dir, name, ci)
    if not (html_path or md_path):
        return [table_markdown(view)]
    written = []
    for path, render in ((html_path, table_html), (md_path, table_markdown)):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(render(view), encoding="utf-8")
            written.append(f"{view.view['title']} table -> {path}")
    return written
