"""A metric across runs over time: tracking methods across commits.

Runs are ordered by their manifest's creation time; each is named by its date and commit.
A folder that is not itself a run but holds run folders (``reports/runs``) stands for all
of them. Runs over different datasets or sample sets (dataset spec or seeds) are said to be so,
with a column naming each run's. Runs on different backbones (fingerprints) are said to be so too,
and a setting gets one line per backbone: its values on two backbones are not one series.
"""

from dataclasses import dataclass
from pathlib import Path

from bench.errors import ConfigError
from bench.reporting.aggregate import (
    RunData,
    Stat,
    expected_cells,
    format_stat,
    judge_drift,
    load_run,
    row_name,
    summarize,  # fmt: skip
)
from bench.reporting.plots import caveat, history_figure, png
from bench.reporting.report import dataset_text, md_table, md_text
from bench.settings import setting_label, varying_params
from bench.store import Store


def expand_runs(paths) -> list[Path]:
    """Run folders from ``paths``: each a run folder, or a folder whose children are runs."""
    runs = []
    for path in map(Path, paths):
        if (path / Store.FILENAME).is_file():
            runs.append(path)
            continue
        children = sorted(p for p in path.iterdir() if (p / Store.FILENAME).is_file()) if path.is_dir() else []
        if not children:
            raise ConfigError(f"{path} is neither a run folder nor a folder of run folders (no {Store.FILENAME})")
        runs += children
    return list(dict.fromkeys(runs))


def run_name(run: RunData) -> str:
    """``2026-12-02 12:13:18 ff1c336`` (``+``: uncommitted changes): creation time to the second
    and commit."""
    commit = ((run.manifest.get("git") or {}).get("commit") or "nocommit")[:7]
    dirty = "+" if (run.manifest.get("git") or {}).get("dirty") else ""
    return f"{str(run.manifest.get('created', '?'))[:19].replace('T', ' ')} {commit}{dirty}"


def run_names(runs: list[RunData]) -> list[str]:
    """Each run's ``run_name``, with its folder added where two runs would share a name."""
    names = [run_name(r) for r in runs]
    return [f"{n} {r.run_dir.name}" if names.count(n) > 1 else n for n, r in zip(names, runs)]


@dataclass
class History:
    metric: str
    runs: list[RunData]
    series: dict[str, list[tuple[int, Stat]]]  # "method setting" -> (run index, stat)

    @property
    def labels(self) -> list[str]:
        """What is untrained behind the runs' numbers (``RunData.caveats``)."""
        return list(dict.fromkeys(label for run in self.runs for label in run.caveats))

    @property
    def backbones(self) -> list[str]:
        """The runs' backbones (``backbone_text``), each once."""
        return list(dict.fromkeys(backbone_text(run) for run in self.runs))

    @property
    def names(self) -> list[str]:
        return run_names(self.runs)


def history(paths, metric: str | None = None, methods: list[str] | None = None) -> History:
    """``metric`` (default: the first run's first metric) per method and setting in each run."""
    runs = [load_run(p) for p in expand_runs(paths)]
    runs.sort(key=lambda r: (str(r.manifest.get("created", "")), str(r.run_dir)))
    if not runs:
        raise ConfigError("history: give at least one run folder")
    available = list(dict.fromkeys(m for r in runs for m in r.metric_names))
    metric = metric or (runs[0].metric_names or [None])[0]
    if metric not in available:
        have = ", ".join(available) or "no metrics"
        raise ConfigError(f"history: no run has metric {metric!r}; the runs have {have}")
    per_run = [summarize(r) for r in runs]
    settings: dict[str, list[dict]] = {}
    for rows in per_run:
        for row in rows:
            settings.setdefault(row.method, []).append(row.setting)
    unknown_methods = set(methods or []) - set(settings)
    if unknown_methods:
        raise ConfigError(f"history: no run has method(s) {sorted(unknown_methods)}; they have {', '.join(settings)}")
    varying = {m: varying_params(m, ss)[0] for m, ss in settings.items()}
    several = len({backbone_text(r) for r in runs}) > 1
    series: dict[str, list[tuple[int, Stat]]] = {}
    for i, rows in enumerate(per_run):
        on = f" on {backbone_text(runs[i])}" if several else ""
        for row in rows:
            if (methods and row.method not in methods) or metric not in row.metrics:
                continue
            label = setting_label(row.setting, varying[row.method])
            series.setdefault(row_name(row.method, label) + on, []).append((i, row.metrics[metric]))
    return History(metric, runs, series)


def backbone_text(run: RunData) -> str:
    """The run's backbone: its name (a folder's last part) and fingerprint, e.g. ``tiny fp-a``; a run
    of several backbones (``RunData.backbones``) names each by its label and fingerprint."""
    if len(run.backbones) > 1:
        return ", ".join(f"{label} {str(fp)[:12]}" for label, fp in run.fingerprints.items())
    name = str(((run.manifest.get("backbone") or {}).get("spec") or {}).get("name") or "?")
    return f"{Path(name).name or name} {str(run.fingerprint)[:12]}"


def history_markdown(h: History) -> str:
    """One row per run, one column per method and setting."""
    lines = [f"# History of {md_text(h.metric)}", ""]
    cells = [cells_text(run) for run in h.runs]
    incomplete = [run.run_dir.name for run, text in zip(h.runs, cells) if "incomplete" in text]
    if incomplete:
        lines += [f"**incomplete: {len(incomplete)} of {len(h.runs)} runs ({md_text(', '.join(incomplete))})**", ""]
    if h.labels:
        lines += [f"**{md_text(caveat(h.labels))}**", ""]
    samples = [sample_set_text(run) for run in h.runs]
    mixed = len(set(samples)) > 1
    if mixed:
        lines += [f"**The runs cover {len(set(samples))} different datasets or sample sets (column 'samples'): "
                  "values from different ones are not comparable.**", ""]  # fmt: skip
    if len(h.backbones) > 1:
        lines += [f"**The runs use {len(h.backbones)} different backbones ({md_text(', '.join(h.backbones))}): "
                  "values from different backbones are not comparable; each setting has one line per backbone.**",
                  ""]  # fmt: skip
    drift = judge_drift(h.runs)
    judges = list(dict.fromkeys(r.judge_line for r in h.runs if r.judge_line))
    lines += [f"> **Warning:** {md_text(w)}" for w in drift] + [""] * bool(drift)
    lines += [f"Judge: {md_text(judges[0])}", ""] if len(judges) == 1 else []
    header = ["run", "backbone", "folder", "cells"] + (["samples"] if mixed else []) + list(h.series)
    body = []
    for i, run in enumerate(h.runs):
        values = {name: dict(points).get(i) for name, points in h.series.items()}
        stats = [format_stat(values[n]) + (f" n={values[n].samples}" if values[n] else "") for n in h.series]
        fingerprints = str(run.fingerprint) if len(run.backbones) < 2 else \
            ", ".join(f"{label}: {fp}" for label, fp in run.fingerprints.items())
        body.append([run_name(run), fingerprints, run.run_dir.name, cells[i]] + ([samples[i]] if mixed else []) + stats)
    lines += md_table(header, body)
    lines.append("\nValues: mean [95% bootstrap CI] over ok cells; n = samples behind the mean (resampled).")
    return "\n".join(lines) + "\n"


def sample_set_text(run: RunData) -> str:
    """The run's dataset spec and seeds in words: runs with different ones measured different samples."""
    seeds = (run.manifest.get("config") or {}).get("seeds")
    return f"{dataset_text(run.dataset)}; seeds: {', '.join(map(str, seeds or ['?']))}"


def cells_text(run: RunData) -> str:
    """``30``, or ``14 of 30 (incomplete)`` for a run that lacks cells its config asks for."""
    total = expected_cells(run)
    if total is None or len(run.cells) >= total:
        return str(len(run.cells))
    return f"{len(run.cells)} of {total} (incomplete)"


def history_png(h: History) -> bytes:
    return png(history_figure(h.series, h.names, h.metric, h.labels))

