"""Per-category tables of a run: ``editbench report RUN --table categories [--by NAME]``.

One table per category the run's cells carry (``RunData.categories``): the benchmark's edit or
task type (``edit_type``) and every group its card names (GEdit-Bench's ``language`` and
``intersection``, ...), as the PIE-Bench view has one per edit type. Each row is a category
value x method x setting with ``n`` (samples behind its means), and every per-image metric as
mean [95% CI] under its direction arrow. Set-level metrics are computed over the whole set and
are not split. What is untrained is said once, at the top of the page.
"""

from bench.reporting.aggregate import format_stat, load_run, nan_notes, summarize
from bench.reporting.report import caveat_md, md_table, md_text, metric_headers


def category_markdown(run_dir, by: list[str] = ()) -> str:
    """The Markdown tables, one per category (``by``: only these; default every category of the run)."""
    run = load_run(run_dir)
    names = list(by) or run.categories
    lines = [f"# {md_text(run.run_dir.name)}: per-category tables", "", *caveat_md(run)]
    if not names:
        return "\n".join(lines + ["This run's samples carry no edit type and no groups: see `editbench report RUN`."])
    metrics = run.image_metrics
    for name in names:
        rows = summarize(run, by=name)
        header = [name, "method", "setting", "n", "failed", "skipped"] + metric_headers(metrics, run.untrained_metrics)
        body = [[r.edit_type, r.method, r.label, r.n_text, str(r.failed), str(r.skipped)]
                + [format_stat(r.metrics.get(m)) for m in metrics] for r in rows]  # fmt: skip
        lines += [f"## by {md_text(name)}", "", *md_table(header, body), ""]
        lines += [f"- {md_text(note)}" for note in nan_notes(rows)] + [""] * bool(nan_notes(rows))
    return "\n".join(lines)
