"""editbench's command line: ``editbench ...`` and ``python run_bench.py ...`` are the same."""

import sys
from pathlib import Path

import click

from bench import __version__
from bench.errors import ConfigError
from bench.paths import output_file
from bench.reporting.tolerances import MIN_TIMING_PAIRS, thresholds_text


def _fail_cleanly(fn):
    """Show ConfigError as a one-line usage error instead of a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


def tracker_options(fn):
    """``--log``, ``--log-uri`` and ``--log-project``: log the run to an experiment tracker."""
    options = [
        click.option("--log", "log_to", type=click.Choice(["mlflow", "wandb"]),
                     help="Also log the run to MLflow or Weights & Biases (the extra editbench[mlflow] or [wandb]); "
                          "offline by default; a logging failure is a warning, never a failed run."),
        click.option("--log-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else a SQLite store in "
                                       "mlflow/ beside the run folder) or W&B folder (default: $WANDB_DIR, else beside it)."),
        click.option("--log-project", default="editbench", show_default=True, help="MLflow experiment or W&B project."),
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn


def _log_run(run_dir, log_to, uri, project) -> None:
    """Log ``run_dir`` to the tracker, if one is asked for; a failure is a warning on stderr."""
    if log_to:
        from bench.reporting.tracking import log_run

        logged, message = log_run(run_dir, log_to, uri, project)
        click.echo(message if logged else f"warning: {message}", err=True)


def _check_tracker(log_to) -> None:
    if log_to:
        from bench.reporting.tracking import check_tracker

        check_tracker(log_to)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="editbench", message="%(prog)s %(version)s")
def main():
    """editbench: benchmark diffusion image-editing methods on one Stable Diffusion backbone."""


@main.command()
@click.argument("config", type=click.Path(dir_okay=False), required=False)
@click.option("--backbone", help="Backbone: an embedded untrained one (tiny, tiny-sdxl, tiny-sd3, tiny-flux, "
              "tiny-kontext, ...: editbench backbones lists them), a pipeline folder, or a hub id (owner/name).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=V[,V...]", help="Override a config value, e.g. sdedit.t0=0.3,0.5.")
@click.option("--out", type=click.Path(file_okay=False), help="Parent folder of the new run folder (default: the config's output).")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), help="Finish an interrupted run folder instead.")
@click.option("--retry-failed", is_flag=True,
              help="With --resume: run the failed cells again too (e.g. an API's errors).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--untrained-extractors", is_flag=True, help="Metric extractors without local weights get seeded random weights (smoke numbers, labelled).")
@click.option("--batch-size", type=click.IntRange(1), help="Cells per UNet batch (default: the config's batch_size, else 1).")
@click.option("--dry-run", is_flag=True, help="List cells per method and setting, preparations and an NFE estimate; load and run nothing.")
@click.option("--executor", type=click.Choice(["local", "ray"]), help="Where cells run: this process, or Ray workers (default: the config's).")
@click.option("--workers", type=click.IntRange(1), help="Ray workers (default: one per GPU, else 1).")
@click.option("--ray-address", help="Join this Ray cluster ('auto' or ray://host:port) instead of starting a local Ray.")
@click.option("--include", "includes", multiple=True, metavar="MODULE|FILE.py", help="Import methods from outside editbench (repeatable).")
@tracker_options
@_fail_cleanly
def run(config, backbone, overrides, out, resume_dir, retry_failed, quiet, untrained_extractors, batch_size, dry_run,
        executor, workers, ray_address, includes, log_to, log_uri, log_project):  # fmt: skip
    """Run a sweep CONFIG (or --resume RUN_DIR); prints the run folder (also on stderr as it starts)."""
    from bench.execution.config import load_config
    from bench.execution.plan import collapsed_settings, dry_run_text
    from bench.execution.runner import resume_run, start_run

    executor_overrides = executor_settings(executor, workers, ray_address)
    _check_tracker(log_to)
    started = [Path(resume_dir)] if resume_dir else []

    def announce(run_dir):
        started.append(run_dir)
        click.echo(f"run folder: {run_dir}", err=True)

    try:
        if resume_dir:
            if config or backbone or overrides or out or untrained_extractors or batch_size or dry_run or includes:
                raise ConfigError(
                    "--resume takes the run folder's own config; give no CONFIG, --backbone, --set, --out, "
                    "--untrained-extractors, --batch-size, --dry-run or --include"
                )
            executor_spec = resumed_executor(resume_dir, executor_overrides)
            run_dir, counts = resume_run(resume_dir, progress=not quiet, executor=executor_spec,
                                         retry_failed=retry_failed)
        else:
            if retry_failed:
                raise ConfigError("--retry-failed runs a run folder's failed cells again: "
                                  "give it with --resume RUN_DIR")
            if not config:
                raise ConfigError("give a CONFIG file (e.g. configs/quickstart.yaml) or --resume RUN_DIR")
            if untrained_extractors:
                overrides += ("metric_options.untrained_extractors=true",)
            if batch_size:
                overrides += (f"batch_size={batch_size}",)
            overrides += tuple(f"executor.{key}={value}" for key, value in executor_overrides.items())
            loaded = load_config(config, list(overrides), backbone, list(includes))
            if dry_run:
                click.echo(dry_run_text(loaded), nl=False)
                return
            for warning in collapsed_settings(loaded):
                click.echo(f"warning: {warning}", err=True)
            run_dir, counts = start_run(loaded, out, progress=not quiet, announce=announce)
    except KeyboardInterrupt:
        _interrupted(started[0] if started else None)
    click.echo(", ".join(f"{v} {k}" for k, v in counts.items() if v), err=True)
    _report_warnings(run_dir)
    nothing_succeeded = _report_failures(run_dir)
    _log_run(run_dir, log_to, log_uri, log_project)
    click.echo(str(run_dir))
    if nothing_succeeded:
        sys.exit(ALL_FAILED)


#: Exit status of ``run`` when cells failed and none succeeded (the run folder is still printed).
ALL_FAILED = 3


#: Dataset warnings printed at the end of a run; the run's store keeps every one.
MAX_WARNINGS_SHOWN = 5


def _report_warnings(run_dir: Path) -> None:
    """Print the dataset warnings the run recorded (a clipped mask, an upscaled tiny source) on stderr."""
    from bench.store import Store

    store = Store(run_dir)
    try:
        warnings = store.info("warnings", [])
    finally:
        store.close()
    for warning in warnings[:MAX_WARNINGS_SHOWN]:
        click.echo(f"warning: {warning}", err=True)
    if len(warnings) > MAX_WARNINGS_SHOWN:
        click.echo(f"warning: ... and {len(warnings) - MAX_WARNINGS_SHOWN} more (recorded in {run_dir})", err=True)


def _report_failures(run_dir: Path) -> bool:
    """Print the run's most common error with its count on stderr; True when every cell that
    ran failed (no ok cell)."""
    from bench.store import Store, error_counts

    store = Store(run_dir)
    try:
        cells = store.cells_frame()
    finally:
        store.close()
    errors = error_counts(cells)
    if not errors:
        return False
    error, n = errors[0]
    total = sum(count for _, count in errors)
    others = f"; {len(errors) - 1} other distinct errors (editbench report RUN_DIR lists them)" if len(errors) > 1 else ""
    click.echo(f"most common error ({n} of {total} failed cells): {error}{others}", err=True)
    return not (cells["status"] == "ok").any()


def _interrupted(run_dir: Path | None):
    """Ctrl-C during a run: say where the finished cells are and how to finish the run; exit 130."""
    import shlex

    from bench.store import MANIFEST

    if run_dir is not None and (Path(run_dir) / MANIFEST).is_file():
        click.echo(f"\nInterrupted. Finished cells are saved in {run_dir}; finish the run with:\n"
                   f"  editbench run --resume {shlex.quote(str(run_dir))}", err=True)  # fmt: skip
    else:
        click.echo("\nInterrupted before any cell ran; nothing was saved.", err=True)
    sys.exit(130)


def executor_settings(name, workers, address) -> dict:
    """The executor keys given on the command line."""
    given = {"name": name, "workers": workers, "address": address}
    return {key: value for key, value in given.items() if value is not None}


def resumed_executor(run_dir, overrides: dict):
    """The executor a resumed run uses: the run's own, with the command line's keys over it."""
    from dataclasses import asdict

    from bench.execution.config import ExecutorSpec
    from bench.store import read_manifest

    spec = ExecutorSpec(**read_manifest(run_dir)["config"].get("executor", {}))
    return ExecutorSpec(**{**asdict(spec), **overrides})


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Write a self-contained HTML report here.")
@click.option("--md", "md_path", type=click.Path(dir_okay=False), help="Write a Markdown report here (figures in <name>_files/).")
@click.option("--plane", "planes", multiple=True, metavar="X:Y", help="Trade-off plot axes, e.g. clip_score:lpips_bg (repeatable).")
@click.option("--grid", "n_grid", type=click.IntRange(0), default=3, show_default=True, help="Samples shown as image grids.")
@click.option("--table", metavar="NAME", help="Show a benchmark's own table view instead: piebench (its columns, units, edit types), the name of any dataset card that declares a view (gedit_bench or gedit: VIEScore SC/PQ/O per task type, language and subset; see editbench datasets), categories (one table per edit/task type, language, subset, ... with n per row), magicbrush (L1, L2, CLIP-I, DINO, CLIP-T in its single-turn and multi-turn settings), or drift (each metric per turn of a multi-turn run; --md adds its plots).")
@click.option("--by", "by", multiple=True, metavar="CATEGORY", help="With --table categories: only this category (edit_type or a group, e.g. language; repeatable).")
@click.option("--metric", "drift_metrics", multiple=True, metavar="METRIC", help="With --table drift: only this metric (repeatable; default: every per-image metric of the run).")
@click.option("--reference", "reference_path", type=click.Path(dir_okay=False), help="YAML of published numbers shown beside the run, e.g. references/piebench_table1.yaml (implies --table piebench).")
@click.option("--ci", is_flag=True, help="With --table: also show 95% bootstrap intervals.")
@click.option("--rank", "rank_metric", metavar="METRIC", help="Print each method's settings ordered by METRIC, with CI, n and which differences the paired test tells apart.")
@click.option("--gallery", "gallery_path", type=click.Path(dir_okay=False), help="Write a gallery of every sample here: one HTML page to filter and sort by any metric, against a baseline.")
@tracker_options
@_fail_cleanly
def report(run_dir, html_path, md_path, planes, n_grid, table, by, drift_metrics, reference_path, ci, rank_metric,
           gallery_path, log_to, log_uri, log_project):  # fmt: skip
    """Print the run's tables as Markdown; with --html/--md also write full reports with plots and image grids,
    with --gallery a page of every sample to filter and sort, with --log send the run to a tracker."""
    _check_tracker(log_to)
    if gallery_path:
        from bench.reporting.gallery import write_gallery

        click.echo(f"gallery -> {write_gallery(run_dir, gallery_path)}", err=True)
    views = (html_path, md_path, table, by, drift_metrics, reference_path, ci, rank_metric)
    if any(views) or not (gallery_path or log_to):  # the tables are printed when nothing else is asked for
        _report_views(run_dir, html_path, md_path, planes, n_grid, table, by, drift_metrics, reference_path, ci,
                      rank_metric)
    _log_run(run_dir, log_to, log_uri, log_project)


def _report_views(run_dir, html_path, md_path, planes, n_grid, table, by, drift_metrics, reference_path, ci, rank_metric):
    from bench.reporting.report import build_report, report_markdown, write_markdown

    if by and table != "categories":
        raise ConfigError("--by picks the categories of --table categories; add --table categories")
    if drift_metrics and table != "drift":
        raise ConfigError("--metric picks the metrics of --table drift; add --table drift")
    if table in ("magicbrush", "drift"):
        if html_path or reference_path:
            raise ConfigError(f"--table {table} is written as Markdown (--md), not with --html or --reference")
        if table == "magicbrush":
            from bench.reporting.magicbrush_table import write_magicbrush

            lines = write_magicbrush(run_dir, ci, md_path)
        else:
            from bench.reporting.turns import write_drift

            lines = write_drift(run_dir, list(drift_metrics) or None, md_path)
        for line in lines:
            click.echo(line, err=bool(md_path))
        return
    if table == "categories":
        from bench.reporting.category_table import category_markdown

        text = category_markdown(run_dir, list(by))
        if md_path:
            Path(md_path).write_text(text + "\n")
            click.echo(f"Markdown tables -> {md_path}", err=True)
        else:
            click.echo(text)
        return
    if ci and not (table or reference_path):
        raise ConfigError("--ci adds intervals to --table piebench|NAME; the ordinary report always shows them")
    if table not in (None, "piebench"):
        from bench.reporting.card_table import write_table

        if reference_path:
            raise ConfigError(f"--reference holds PIE-Bench's published numbers; it goes with --table piebench, not {table}")
        for line in write_table(run_dir, table, ci, html_path, md_path):
            click.echo(line, err=bool(html_path or md_path))
        return
    if table or reference_path:
        from bench.reporting.piebench_table import write_piebench

        for line in write_piebench(run_dir, reference_path, ci, html_path, md_path):
            click.echo(line, err=bool(html_path or md_path))
        return
    report = build_report(run_dir, list(planes) or None, n_grid, figures=bool(html_path or md_path))
    if rank_metric:
        from bench.reporting.report import rank_markdown

        click.echo(rank_markdown(report, rank_metric))
    if html_path:
        from bench.reporting.html_report import write_html

        click.echo(f"HTML report -> {write_html(report, html_path)}", err=True)
    if md_path:
        click.echo(f"Markdown report -> {write_markdown(report, md_path)}", err=True)
    if not (html_path or md_path or rank_metric):
        click.echo(report_markdown(report))


@main.command()
@click.argument("base_run", type=click.Path(file_okay=False))
@click.argument("new_run", type=click.Path(file_okay=False))
@click.option("--thresholds", type=click.Path(dir_okay=False),
              help="YAML/JSON: metric (or 'default') -> allowed worsening, e.g. psnr: 0.5, lpips: 5%; over the "
                   f"built-in ones ({thresholds_text()}); a file giving 'default' replaces those it does not name.")
@click.option("--md", "md_path", type=click.Path(dir_okay=False), help="Also write the comparison as Markdown here.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the comparison as JSON here (for CI).")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False), help="Also write JUnit XML here: one test case per metric x setting.")
@click.option("--allow-different-samples", is_flag=True, help="Compare runs of different datasets or seeds on the cells they share (else exit 2).")
@click.option("--allow-missing", is_flag=True, help="A setting or method of BASE_RUN missing in NEW_RUN is reported, not a failure.")
@click.option("--time-tolerance", type=click.FloatRange(0), default=0.25, show_default=True,
              help="Relative slow-down of the median time per cell that is not reported; time is judged only on settings "
                   f"with {MIN_TIMING_PAIRS} or more shared ok cells and by a paired test on per-cell times.")
@click.option("--gate-nfe", is_flag=True, help="A changed NFE per cell fails (default: a warning).")
@click.option("--gate-time", is_flag=True, help="A slow-down beyond --time-tolerance fails (default: a warning).")
def compare(base_run, new_run, thresholds, md_path, json_path, junit_path, allow_different_samples, allow_missing,
            time_tolerance, gate_nfe, gate_time):  # fmt: skip
    """Compare NEW_RUN with BASE_RUN: exit 0 if nothing regressed, 1 if something did, 2 if they cannot be compared."""
    import json

    from bench.reporting.compare import (
        INCOMPARABLE,
        CompareOptions,
        compare_runs,
        comparison_json,
        comparison_junit,
        comparison_markdown,
        incomparable_junit,
        load_thresholds,
    )

    options = CompareOptions(allow_different_samples, allow_missing, time_tolerance, gate_nfe, gate_time)
    paths = {"md": md_path, "json": json_path, "junit": junit_path}
    try:
        outputs = {kind: output_file(path) for kind, path in paths.items() if path}
    except ConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(INCOMPARABLE)
    try:
        result = compare_runs(base_run, new_run, load_thresholds(thresholds), options)
    except ConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        if "json" in outputs:  # CI reads why, too
            outputs["json"].write_text(json.dumps({"exit_code": INCOMPARABLE, "error": str(exc)}, indent=2) + "\n")
        if "junit" in outputs:
            outputs["junit"].write_text(incomparable_junit(str(exc)))
        sys.exit(INCOMPARABLE)
    for warning in result.warnings:
        click.echo(f"Warning: {warning}", err=True)
    text = comparison_markdown(result)
    written = {"md": lambda: text, "json": lambda: json.dumps(comparison_json(result), indent=2) + "\n",
               "junit": lambda: comparison_junit(result)}  # fmt: skip
    for kind, path in outputs.items():
        path.write_text(written[kind]())
    click.echo(text)
    sys.exit(result.exit_code)


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--metric", help="Metric to track (default: the first run's first metric).")
@click.option("--method", "methods_", multiple=True, help="Only these methods (repeatable).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write the history plot (PNG) here.")
@click.option("--md", "md_path", type=click.Path(dir_okay=False), help="Also write the table as Markdown here.")
@_fail_cleanly
def history(run_dirs, metric, methods_, plot_path, md_path):
    """A metric across runs (run folders, or folders of run folders) in time order, as a table and a plot."""
    from bench.reporting.history import history as build_history
    from bench.reporting.history import history_markdown, history_png

    result = build_history(run_dirs, metric, list(methods_) or None)
    text = history_markdown(result)
    if md_path:
        output_file(md_path).write_text(text)
    if plot_path:
        output_file(plot_path).write_bytes(history_png(result))
        click.echo(f"plot -> {plot_path}", err=True)
    click.echo(text)


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Where to write the CSV.")
@click.option("--parquet", "parquet_path", type=click.Path(dir_okay=False), help="Where to write Parquet.")
@_fail_cleanly
def export(run_dir, csv_path, parquet_path):
    """Write one row per cell (parameters, metrics, cost) as CSV and/or Parquet."""
    from bench.reporting.report import cells_table

    if not (csv_path or parquet_path):
        raise ConfigError("export: give --csv PATH and/or --parquet PATH")
    table = cells_table(Path(run_dir))
    if csv_path:
        table.to_csv(output_file(csv_path), index=False)
    if parquet_path:
        table.to_parquet(output_file(parquet_path), index=False)
    click.echo(f"{len(table)} cells -> {', '.join(p for p in (csv_path, parquet_path) if p)}", err=True)


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--metrics", "names", default="", metavar="NAME[,NAME...]", help="Metrics to add, e.g. lpips,clip_score,fid.")
@click.option("--rescore", default="", metavar="NAME[,NAME...]",
              help="Metrics to compute again from scratch, dropping their stored values (e.g. made by another judge).")
@click.option("--untrained-extractors", is_flag=True, help="Extractors without local weights get seeded random weights (labelled).")
@click.option("--retry-failed", is_flag=True,
              help="Also ask the judge again the requests that failed (refused, filtered, transport error, timeout).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@tracker_options
@_fail_cleanly
def score(run_dir, names, rescore, untrained_extractors, retry_failed, quiet, log_to, log_uri, log_project):
    """Add metrics to a finished run from its saved images, without re-running methods."""
    from bench.execution.scoring import score_run

    _check_tracker(log_to)
    names, rescore = ([n.strip() for n in given.split(",") if n.strip()] for given in (names, rescore))
    if not (names or rescore):
        raise ConfigError("score: give --metrics NAME[,NAME...] to add, or --rescore NAME[,NAME...] to compute again")
    counts = score_run(run_dir, names, untrained_extractors, not quiet, retry_failed, tuple(rescore))
    click.echo(", ".join(f"{v} {k}" for k, v in counts.items()), err=True)
    _log_run(run_dir, log_to, log_uri, log_project)


@main.command("judge-agreement")
@click.option("--set", "set_name", required=True, metavar="NAME", help="A preference set card: editreward_bench, vcreward_bench.")
@click.option("--judge", "judge_path", type=click.Path(dir_okay=False), help="YAML with judge: (JudgeOptions keys) or metric_options:.")
@click.option("--metric", default="vie_o", show_default=True, help="The metric that scores each candidate: a judge (vie_o) or a reward model (edit_reward).")
@click.option("--path", "set_path", type=click.Path(file_okay=False), help="A local copy of the set, laid out as on the hub.")
@click.option("--limit", type=int, help="At most this many groups per subset.")
@click.option("--resolution", default=512, show_default=True, help="Image side the judge sees (shorter side, centre crop).")
@click.option("--device", default="cpu", show_default=True, help="Where a local judge runs.")
@click.option("--untrained-extractors", is_flag=True, help="A local judge without weights is tiny and random (smoke numbers).")
@click.option("--md", "md_path", type=click.Path(dir_okay=False), help="Also write the Markdown here.")
@_fail_cleanly
def judge_agreement(set_name, judge_path, metric, set_path, limit, resolution, device, untrained_extractors, md_path):
    """How well a judge agrees with human preferences: pairwise accuracy (with/without ties), group accuracy, rank correlations."""
    from bench.execution.agreement import judge_options, score_groups
    from bench.preferences import load_preferences, preference_cards
    from bench.reporting.agreement import agreement, agreement_markdown

    groups = load_preferences(set_name, set_path, limit)
    judged, identity = score_groups(groups, metric, judge_options(judge_path, untrained_extractors), resolution, device)
    line = (identity or {}).get("line") or f"metric {metric}"
    if untrained_extractors:
        line += " (untrained: smoke numbers)"
    text = agreement_markdown(agreement(set_name, preference_cards()[set_name], judged, metric, line))
    if md_path:
        output_file(md_path).write_text(text)
    click.echo(text)


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--judge", "judge_path", type=click.Path(dir_okay=False), help="YAML with judge: (JudgeOptions keys), e.g. PVC-Judge's endpoint.")
@click.option("--rows", multiple=True, metavar="METHOD", help="Compare only these methods' rows (repeatable; default: all).")
@click.option("--template", default="pvc_pairwise_v1", show_default=True,
              help="A pairwise template of bench/metrics/templates: one dimension (GEditBench v2: pvc_pairwise_v1, "
                   "geditbench_v2_if_pairwise_v1, geditbench_v2_vq_pairwise_v1).")
@click.option("--untrained-extractors", is_flag=True, help="A local judge without weights is tiny and random (smoke numbers).")
@_fail_cleanly
def pairwise(run_dir, judge_path, rows, template, untrained_extractors):
    """Compare a run's rows cell by cell with a pairwise judge (A / B / tie): win rates; matches to pairwise.jsonl."""
    from bench.devices import resolve_device
    from bench.execution.agreement import judge_options
    from bench.execution.pairwise import judge_run
    from bench.metrics.pairwise import load_pairwise_judge
    from bench.reporting.pairwise import win_rate_markdown, win_rates

    options = judge_options(judge_path, untrained_extractors)
    judge = load_pairwise_judge(options.judge, resolve_device("auto"), untrained_extractors, options.seed, template)
    matches = judge_run(Path(run_dir), judge, list(rows), options.judge.instruction, options.batch_size)
    line = judge.describe() + (" (untrained: smoke numbers)" if untrained_extractors else "")
    click.echo(win_rate_markdown(win_rates(matches), line))


@main.command()
def metrics():
    """List metrics with direction, value range, what each needs and the metric_options each reads."""
    from bench.metrics import METRICS, OPTIONS, CostMetric, SetMetric, needs_text
    from bench.metrics.options import GLOBAL_OPTIONS

    for cls in METRICS.values():
        kind = "cost" if issubclass(cls, CostMetric) else "per set" if issubclass(cls, SetMetric) else "per image"
        lo, hi = cls.value_range
        click.echo(f"{cls.name} {'↑' if cls.higher_is_better else '↓'}  [{lo:g}, {hi:g}]  {kind}; needs {needs_text(cls)}")
        click.echo(f"    {cls.description}")
        if cls.options:
            click.echo(f"    options: {', '.join(o.summary() for o in cls.options)}")
    click.echo(f"metric_options (a config block; {', '.join(o.name for o in GLOBAL_OPTIONS)} apply to every metric):")
    for o in OPTIONS.values():
        click.echo(f"  {o.name}: {o.type_name()} = {o.default_text()}  {o.doc}")


@main.command()
@click.option("--include", "includes", multiple=True, metavar="MODULE|FILE.py", help="Also list methods from these (repeatable).")
@_fail_cleanly
def methods(includes):
    """List methods (built-in, entry points, --include) with their parameters, defaults and allowed ranges."""
    from bench.execution.config import load_includes
    from bench.diffusion.families import FAMILY_TITLES
    from bench.registry import all_methods

    load_includes({}, list(includes), Path.cwd())
    for cls in all_methods():
        needs = f"  (needs: {', '.join(sorted(cls.needs))})" if cls.needs else ""
        click.echo(f"{cls.name}: {cls.description}{needs}")
        click.echo(f"    families: {', '.join(FAMILY_TITLES.get(f, f) for f in cls.families)}")
        for p in cls.params:
            on_families = "".join(f", {FAMILY_TITLES.get(f, f)}: {v!r}" for f, v in p.family_defaults)
            click.echo(f"    {p.name} = {p.default!r}{on_families}  [{p.allowed()}]  {p.help}")


@main.command()
@click.argument("names", nargs=-1)
def backbones(names):
    """Each backbone's family and parameters per network, counted from its configs without loading weights.

    NAMES: tiny backbones, pipeline folders, or hub ids in the Hugging Face cache (default: every tiny one)."""
    from bench.diffusion.backbone import BackboneSpec, config_folder
    from bench.diffusion.families import FAMILY_TITLES, family_of_folder
    from bench.diffusion.model_size import component_parameters, format_count
    from bench.diffusion.tiny import TINY_BACKBONES

    for name in names or TINY_BACKBONES:
        folder = config_folder(BackboneSpec(name=name))
        if folder is None:
            click.echo(f"{name}: not on disk "
                       "(a hub id is read from the Hugging Face cache; download its configs first)")
            continue
        counts = component_parameters(folder)
        family = family_of_folder(folder)
        each = ", ".join(f"{component} {format_count(n)}" for component, n in counts.items())
        total = format_count(sum(counts.values()))
        click.echo(f"{name} ({FAMILY_TITLES.get(family, family)}): {total} parameters: {each}")


@main.command()
def datasets():
    """List bundled datasets, the formats ``dataset.path`` accepts and, per hub card, the columns a
    local copy must have, its metrics, judge protocol and table view."""
    from bench.data import DatasetSpec, dataset_cards, load_dataset
    from bench.hub_data import card_summary

    order = {"hub": 1, "json_map": 1, "preferences": 2}  # bundled sets first, then benchmarks, then preference sets
    cards = sorted(dataset_cards().items(), key=lambda item: order.get(item[1].get("format"), 0))
    for name, card in cards:
        if card.get("format") == "preferences":  # human preferences for judge-agreement, not samples to edit
            click.echo(f"{name}: preference set {card['hub']} (editbench judge-agreement --set {name}). "
                       f"{' '.join(card['description'].split())}")
            continue
        if card.get("format") == "hub":  # not loaded here: it may not be in the cache
            click.echo(f"{name}: hub {card['hub']} (split {card['split']}; licence {card['license']}; metrics its "
                       f"authors report: {' '.join(card['reported'].split())}). {' '.join(card['description'].split())}")
            for line in card_summary(card):
                click.echo(line)
            continue
        if card.get("format") == "json_map":  # a local copy only: dataset: {name: NAME, path: FOLDER}
            click.echo(f"{name}: a local copy (dataset: {{name: {name}, path: FOLDER}}; licence {card['license']}; "
                       f"metrics its authors report: {' '.join(card['reported'].split())}). "
                       f"{' '.join(card['description'].split())}")  # fmt: skip
            for line in card_summary(card):
                click.echo(line)
            continue
        n = len(load_dataset(DatasetSpec(name=name)))
        click.echo(f"{name}: {n} samples. {card.get('description', '').strip()}")
    click.echo("dataset.path also accepts a PIE-Bench folder (mapping_file.json + annotation_images/) or a .jsonl manifest;"
               " with a hub card's name, a local copy of that benchmark (parquet files or a save_to_disk folder).")


if __name__ == "__main__":
    sys.exit(main())
