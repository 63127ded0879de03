"""Per-category tables of a run: ``editbench report RUN --table categories [--by NAME]``.

One table per category the run's cells carry (``RunData.categories``): the benchmark's edit or
task type (``edit_type``) and every group its card names (GEdit-Bench's ``language`` and
``intersection``, ...), as the PIE-Bench view has one per edit type. Each row is a category
value x method x setting with ``n``, the ok cells behind its means, and every per-image metric as
mean [95% CI]. Set-level metrics are computed over the whole set and are not split.
"""

from bench.reporting.aggregate import format_stat, load_run, nan_notes, row_name, summarize
from bench.reporting.report import md_table, md_text


def category_markdown(run_dir, by: list[str] = ()) -> str:
    """The Markdown tables, one per category (``by``: only these; default every category of the run)."""
    run = load_run(run_dir)
    names = list(by) or run.categories
    lines = [f"# {md_text(run.run_dir.name)}: per-category tables", ""]
    lines += [f"**{md_text(label)}** (smoke numbers)" for label in run.labels] + [""] * bool(run.labels)
    if not names:
        return "\n".join(lines + ["This run's samples carry no edit type and no groups: see `editbench report RUN`."])
    metrics = run.image_metrics
    for name in names:
        rows = summarize(run, by=name)
        header = [name, "method", "setting", "n", "failed", "skipped"] + metrics
        body = [[r.edit_type, row_name(r.method, r.label), r.label, str(r.ok), str(r.failed), str(r.skipped)]
                + [format_stat(r.metrics.get(m)) for m in metrics] for r in rows]  # fmt: skip
        lines += [f"## by {md_text(name)}", "", *md_table(header, body), ""]
        lines += [f"- {md_text(note)}" for note in nan_notes(rows)] + [""] * bool(nan_notes(rows))
    return "\n".join(lines)
