"""Comparing two runs for regressions, usable as a CI gate.

Runs on different datasets or sample sets (dataset spec or seeds) are not comparable unless
``allow_different_samples``. Otherwise the comparison is paired: both runs are restricted to
the cells they share (method, setting, sample, seed), so an interrupted run is compared on
what it finished. For every method x setting x metric, the change is judged in the metric's
direction: a regression is worse by more than the allowed threshold AND distinguishable by
the paired test (the 95% paired bootstrap interval of the per-cell difference excludes 0;
``bench.reporting.aggregate.paired_better``). With fewer than two shared values, or a set-level metric
(one value per setting), the threshold alone decides. A setting whose failed cells grew, or
that lost every value of a metric, also regressed; so does a setting or method of the base
that the new run lacks, unless ``allow_missing``. The thresholds default to per-metric
tolerances just above environment noise (``bench.reporting.tolerances``). NFE per cell is
compared exactly; time per cell only on settings with ``MIN_TIMING_PAIRS`` shared ok cells, where a
median slower by more than the tolerance must also pass the paired test on per-cell times:
warnings, or failures when gated.

Exit codes: 0 nothing regressed, 1 something did, 2 the runs cannot be compared (not run
folders, different samples, no method x setting x metric in common, a bad thresholds file).
A changed backbone fingerprint or package versions is stated at the top but does not stop
the comparison: comparing across such a change is often the point. A changed version of a
package that metrics or kernels come from (``METRIC_PACKAGES``) is a warning: the change may come
from the environment, not the method (torchmetrics changed SSIM in 1.4.2, torchvision its resize in 0.17).
"""

import json
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from bench.errors import ConfigError, unknown
from bench.metrics import METRICS
from bench.reporting.aggregate import (
    Row,
    RunData,
    Stat,
    arrow,
    cell_sample_ids,
    format_stat,
    higher_is_better,
    failure_rate_warnings,
    incomplete_note,
    judge_drift,
    load_run,
    paired_better,
    row_name,
    summarize,
)
from bench.reporting.plots import caveat
from bench.reporting.report import md_table, md_text
from bench.reporting.tolerances import DEFAULT_THRESHOLDS, MIN_TIMING_PAIRS, Threshold
from bench.settings import setting_label, varying_params
from bench.yaml_file import read_yaml

OK, REGRESSED, INCOMPARABLE = 0, 1, 2
# Packages whose version changes what a metric computes or the kernels a method runs on.
METRIC_PACKAGES = ("torch", "torchvision", "torchmetrics", "transformers", "diffusers", "lpips", "clean-fid")


def _threshold(value, where: str) -> Threshold:
    try:
        if isinstance(value, str) and value.strip().endswith("%"):
            t = Threshold(rel=float(value.strip()[:-1]) / 100)
        elif isinstance(value, dict):
            unknown_keys = set(value) - {"abs", "rel"}
            if unknown_keys:
                raise ValueError(f"unknown keys {sorted(unknown_keys)}")
            t = Threshold(float(value.get("abs", 0.0)), float(value.get("rel", 0.0)))
        else:
            t = Threshold(abs=float(value))
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"thresholds {where} = {value!r}: expected a number (absolute), a percentage like '5%' "
            f"(relative to the base mean) or {{abs: X, rel: Y}} ({exc})"
        ) from exc
    if t.abs < 0 or t.rel < 0:
        raise ConfigError(f"thresholds {where} = {value!r}: must not be negative")
    return t


def threshold_keys() -> list[str]:
    """Keys a thresholds file may use: every metric name and ``default``."""
    return ["default", *METRICS]


@dataclass(frozen=True)
class CompareOptions:
    """How strict ``compare_runs`` is. ``time_tolerance``: relative slow-down of the median time
    per cell that is tolerated; ``gate_nfe``/``gate_time``: cost changes fail instead of warn."""

    allow_different_samples: bool = False
    allow_missing: bool = False
    time_tolerance: float = 0.25
    gate_nfe: bool = False
    gate_time: bool = False


def load_thresholds(path: str | Path | None) -> dict[str, Threshold]:
    """Per-metric thresholds from a YAML/JSON file mapping metric names (and ``default``) to
    a number, ``"N%"`` or ``{abs, rel}``, over the built-in ``DEFAULT_THRESHOLDS``; a file that
    gives ``default`` replaces every built-in value it does not name (``default: 0``: exact)."""
    if path is None:
        return dict(DEFAULT_THRESHOLDS)
    raw = read_yaml(path, "thresholds") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"thresholds {path}: expected a mapping of metric name to threshold")
    for key in raw:
        if str(key) not in threshold_keys():
            raise ConfigError(f"thresholds {path}: {unknown('key', key, threshold_keys())}")
    given = {str(k): _threshold(v, f"{path}: {k!r}") for k, v in raw.items()}
    return given if "default" in given else {**DEFAULT_THRESHOLDS, **given}


@dataclass
class Change:
    """One method x setting x metric in both runs, and the verdict on it."""

    method: str
    label: str
    metric: str
    base: Stat
    new: Stat
    allowed: float
    verdict: str  # regressed, improved, unchanged, within threshold, within CI, no direction, no value

    @property
    def delta(self) -> float:
        return 0.0 if self.base.mean == self.new.mean else self.new.mean - self.base.mean


def _overlap(a: Stat, b: Stat) -> bool | None:
    if not (a.has_ci and b.has_ci):
        return None
    return a.low <= b.high and b.low <= a.high


def judge(base: Stat, new: Stat, higher: bool | None, allowed: float, distinguishable: bool | None = None) -> str:
    """The verdict on one metric's change (see the module docstring). ``distinguishable``: the
    paired test's answer; None when there are no pairs, then the two CIs' overlap decides."""
    if math.isnan(base.mean) and math.isnan(new.mean):
        return "no value"
    if math.isnan(new.mean):
        return "regressed"  # it had values and lost them all
    if math.isnan(base.mean):
        return "improved"
    if base.mean == new.mean:
        return "unchanged"
    if higher is None:
        return "no direction"
    worse_by = (base.mean - new.mean) if higher else (new.mean - base.mean)
    if abs(worse_by) <= allowed:
        return "within threshold"
    if (not distinguishable) if distinguishable is not None else _overlap(base, new):
        return "within CI"
    return "regressed" if worse_by > 0 else "improved"


@dataclass
class Comparison:
    base: RunData
    new: RunData
    changes: list[Change]
    failures: list[str]  # settings whose failed cells grew, missing settings, gated cost changes (regressions)
    notes: list[str]  # stated up front: what differs between the runs
    only_base: list[str]
    only_new: list[str]
    thresholds: dict[str, Threshold]
    warnings: list[str] = field(default_factory=list)  # version drift and ungated cost changes; never the exit code

    @property
    def regressions(self) -> list[str]:
        bad = [c for c in self.changes if c.verdict == "regressed"]
        found = [f"{row_name(c.method, c.label)}: {c.metric} {_fmt_delta(c)}" for c in bad]
        return found + self.failures

    @property
    def exit_code(self) -> int:
        return REGRESSED if self.regressions else OK

    def threshold_of(self, metric: str) -> Threshold:
        return self.thresholds.get(metric, self.thresholds["default"])


def _fmt_delta(c: Change) -> str:
    direction = f" {arrow(c.metric)}" if arrow(c.metric) else ""
    return f"{format_stat(c.base)} → {format_stat(c.new)} ({c.delta:+.4g}{direction})"


def sample_set_difference(base: RunData, new: RunData) -> str | None:
    """How the runs' planned samples differ (dataset spec or seeds), or None when they match."""
    seeds = [(r.manifest.get("config") or {}).get("seeds") for r in (base, new)]
    if base.dataset != new.dataset:
        keys = sorted(k for k in set(base.dataset) | set(new.dataset) if base.dataset.get(k) != new.dataset.get(k))
        changes = ", ".join(f"{k} {json.dumps(base.dataset.get(k))} vs {json.dumps(new.dataset.get(k))}" for k in keys)
        return f"dataset differs: {changes} (base vs new)"
    if seeds[0] != seeds[1]:
        return f"seeds differ: {seeds[0]} (base) vs {seeds[1]} (new)"
    return None


def _differences(base: RunData, new: RunData) -> list[str]:
    notes = [f"{side} run {note}" for side, run in (("base", base), ("new", new)) if (note := incomplete_note(run))]
    if base.fingerprint != new.fingerprint:
        why = _fingerprint_changes(base, new)
        notes.append(f"backbone fingerprint changed: {base.fingerprint} → {new.fingerprint}" + (f" ({why})" if why else ""))
    moved = [m for m in set(base.methods) & set(new.methods) if base.backbone_of(m) != new.backbone_of(m)]
    notes += [f"{m}: backbone {base.backbone_of(m)} → {new.backbone_of(m)}; its cells are not compared"
              for m in sorted(moved)]
    firsts = [next(iter(r.backbones), None) for r in (base, new)]
    for label in [b for b in base.fingerprints if b in new.fingerprints and b not in firsts]:
        if base.fingerprints[label] != new.fingerprints[label]:
            before, after = base.fingerprints[label], new.fingerprints[label]
            notes.append(f"backbone {label} fingerprint changed: {before} → {after}")
    devices = [(r.manifest.get("backbone") or {}).get("device") for r in (base, new)]
    if devices[0] != devices[1] and None not in devices:
        notes.append(f"backbone device changed: {devices[0]} → {devices[1]} (kernels differ: expect noise-level changes)")
    samples = [set(zip(r.cells["sample_id"], r.cells["seed"])) for r in (base, new)]
    if samples[0] != samples[1]:
        notes.append(f"cells differ: {len(samples[0] - samples[1])} (sample, seed) pairs only in base, "
                     f"{len(samples[1] - samples[0])} only in new; compared on the cells both have")  # fmt: skip
    pb, pn = (r.manifest.get("packages") or {} for r in (base, new))
    warned = set(_drifted_metric_packages(pb, pn))  # stated as a warning by version_drift
    changed = [f"{k} {pb.get(k)} → {pn.get(k)}" for k in sorted(set(pb) | set(pn))
               if pb.get(k) != pn.get(k) and k not in warned]  # fmt: skip
    if changed:
        notes.append("package versions changed: " + ", ".join(changed))
    if base.labels != new.labels:
        notes.append(f"labels differ: {base.labels} → {new.labels}")
    return notes


def _fingerprint_changes(base: RunData, new: RunData) -> str:
    """Which parts of the backbone's fingerprint changed (dtype, source, ...), in words."""
    before, after = ((r.manifest.get("backbone") or {}).get("fingerprint") or {} for r in (base, new))
    keys = [k for k in dict.fromkeys([*before, *after]) if k != "id" and before.get(k) != after.get(k)]
    named = [k for k in keys if not isinstance(before.get(k, after.get(k)), dict)]
    return ", ".join([f"{k} {before.get(k)} → {after.get(k)}" for k in named] + [f"{k} changed" for k in keys if k not in named])


def _drifted_metric_packages(pb: dict, pn: dict) -> list[str]:
    """``METRIC_PACKAGES`` whose recorded versions differ (recorded in both manifests)."""
    return [k for k in METRIC_PACKAGES if k in pb and k in pn and pb[k] != pn[k]]


def version_drift(base: RunData, new: RunData) -> list[str]:
    """A warning when the runs' manifests record different versions of ``METRIC_PACKAGES``."""
    pb, pn = (r.manifest.get("packages") or {} for r in (base, new))
    changed = [f"{k} {pb[k]} → {pn[k]}" for k in _drifted_metric_packages(pb, pn)]
    if not changed:
        return []
    return [f"package versions differ: {', '.join(changed)}. Metric definitions and kernels change between "
            "versions, so a difference may come from the environment rather than the method."]  # fmt: skip


def _shared_cells(base: RunData, new: RunData) -> tuple[RunData, RunData]:
    """Both runs restricted to the cells (method, setting, sample, seed) they both hold on the same backbone."""
    pairs = [set(zip(r.cells["key"], r.cells["backbone"])) for r in (base, new)]
    common = {key for key, _ in pairs[0] & pairs[1]}
    return tuple(replace(r, cells=r.cells[r.cells["key"].isin(common)]) for r in (base, new))


def _distinguishable(before: Row, after: Row, metric: str, higher: bool | None) -> bool | None:
    """The paired test on the shared cells: is the worse side's deficit more than noise?
    None when a side has no per-cell values (set-level metric) or there are under two pairs."""
    if higher is None or metric not in before.values or metric not in after.values:
        return None
    b, n = before.values[metric].align(after.values[metric], join="inner")
    if int((b.notna() & n.notna()).sum()) < 2:
        return None
    better, worse = (b, n) if (b.mean() >= n.mean()) == higher else (n, b)
    return paired_better(better, worse, higher)


def cell_times(run: RunData, method: str, setting_text: str) -> pd.Series:
    """Time per ok cell of one method and setting, by (sample_id, seed)."""
    cells = run.cells
    ok = cells[(cells["method"] == method) & (cells["setting"] == setting_text) & (cells["status"] == "ok")]
    index = pd.MultiIndex.from_arrays([cell_sample_ids(ok), ok["seed"]])
    return pd.Series(ok["time_s"].to_numpy(dtype=float), index=index).dropna()


def _cost_changes(
    name: str, before: Row, after: Row, times: tuple[pd.Series, pd.Series], options: CompareOptions
) -> list[tuple[bool, str]]:
    """(gated, message) for NFE per cell that changed and for a median time per cell slower than the
    tolerance on at least ``MIN_TIMING_PAIRS`` shared cells and by the paired test."""
    found = []
    if before.cost["nfe"] != after.cost["nfe"] and not (math.isnan(before.cost["nfe"]) and math.isnan(after.cost["nfe"])):
        found.append((options.gate_nfe, f"{name}: NFE per cell {before.cost['nfe']:g} → {after.cost['nfe']:g}"))
    t0, t1 = before.cost["time_median"], after.cost["time_median"]
    pairs = len(times[0].index.intersection(times[1].index))
    slower = math.isfinite(t0) and math.isfinite(t1) and t1 > t0 * (1 + options.time_tolerance)
    if slower and pairs >= MIN_TIMING_PAIRS and paired_better(times[0], times[1], higher=False):
        found.append((options.gate_time, f"{name}: median time per cell {t0:.3g} s → {t1:.3g} s (more than "
                                         f"{options.time_tolerance:.0%} slower; paired test over {pairs} cells)"))  # fmt: skip
    return found


def compare_runs(
    base_dir, new_dir, thresholds: dict[str, Threshold] | None = None, options: CompareOptions = CompareOptions()
) -> Comparison:
    """Compare two run folders; raise ``ConfigError`` when they cannot be compared."""
    thresholds = thresholds or dict(DEFAULT_THRESHOLDS)
    base, new = load_run(base_dir), load_run(new_dir)
    difference = sample_set_difference(base, new)
    if difference and not options.allow_different_samples:
        raise ConfigError(f"not comparable: {difference}; pass --allow-different-samples to compare the shared cells anyway")
    planned = [set(zip(run.cells["method"], run.cells["setting"])) for run in (base, new)]
    shared = _shared_cells(base, new)
    rows = [{(r.method, r.setting_json): r for r in summarize(run) if r.cells} for run in shared]

    def label(key) -> str:  # varying parameters over both runs
        settings = [json.loads(k[1]) for k in planned[0] | planned[1] if k[0] == key[0]]
        return setting_label(json.loads(key[1]), varying_params(key[0], settings)[0])

    only_base = [row_name(k[0], label(k)) for k in planned[0] if k not in planned[1]]
    only_new = [row_name(k[0], label(k)) for k in planned[1] if k not in planned[0]]
    failures = [] if options.allow_missing else [f"{item}: in base, missing in new" for item in only_base]
    changes, warnings, nan_changes, untimed = [], [], [], 0
    for key, b in rows[0].items():
        n = rows[1].get(key)
        if n is None:
            continue
        name = row_name(key[0], label(key))
        if n.failed > b.failed:
            failures.append(f"{name}: failed cells {b.failed} → {n.failed} (first error: {n.first_error})")
        sides = [replace(row, method=f"{side} {row.method}") for side, row in (("base", b), ("new", n))]
        warnings += failure_rate_warnings(sides)
        times = tuple(cell_times(run, *key) for run in shared)
        untimed += len(times[0].index.intersection(times[1].index)) < MIN_TIMING_PAIRS
        for gated, message in _cost_changes(name, b, n, times, options):
            (failures if gated else warnings).append(message)
        for metric in b.metrics.keys() | n.metrics.keys():
            if metric not in b.metrics or metric not in n.metrics:
                (only_base if metric in b.metrics else only_new).append(f"{name}: metric {metric}")
                continue
            before, after = b.metrics[metric], n.metrics[metric]
            allowed = thresholds.get(metric, thresholds["default"]).allowed(before.mean)
            higher = higher_is_better(metric)
            verdict = judge(before, after, higher, allowed, _distinguishable(b, n, metric, higher))
            if after.n_nan != before.n_nan:
                nan_changes.append(f"{name}: {metric} NaN count {before.n_nan} → {after.n_nan}")
            changes.append(Change(key[0], label(key), metric, before, after, allowed, verdict))
    if not changes:
        raise ConfigError(
            f"runs {base_dir} and {new_dir} have no method x setting x metric in common; nothing to compare"
        )
    order = {m: i for i, m in enumerate(base.metric_names)}
    changes.sort(key=lambda c: (c.method, c.label, order.get(c.metric, len(order)), c.metric))
    notes = ([f"{difference} (allowed by --allow-different-samples)"] if difference else []) + _differences(base, new)
    if Path(base_dir).resolve() == Path(new_dir).resolve():
        notes.insert(0, "base and new are the same run folder: every change is 0 by construction, so this checks nothing")
    if untimed:
        notes.append(f"time per cell not judged for {untimed} setting(s) with under {MIN_TIMING_PAIRS} shared ok cells "
                     "(too few to tell a slow-down from timing noise)")  # fmt: skip
    warnings = version_drift(base, new) + judge_drift([base, new]) + warnings
    return Comparison(base, new, changes, failures, notes + nan_changes, sorted(only_base), sorted(only_new), thresholds,
                      warnings)  # fmt: skip


def _run_line(run: RunData) -> str:
    git = run.manifest.get("git") or {}
    commit = (git.get("commit") or "unknown")[:10] + (" (dirty)" if git.get("dirty") else "")
    return f"{run.run_dir} (created {run.manifest.get('created', '?')}, commit {commit}, backbone {run.fingerprint})"


def comparison_markdown(c: Comparison) -> str:
    """The comparison as Markdown: differences and verdict first, then every change."""
    labels = list(dict.fromkeys(c.base.labels + c.new.labels))
    lines = ["# editbench compare", "", f"- base: {md_text(_run_line(c.base))}", f"- new: {md_text(_run_line(c.new))}"]
    lines.append("")
    if labels:
        lines += [f"**{md_text(caveat(labels))}**", ""]
    lines += [f"> **Warning:** {md_text(w)}" for w in c.warnings] + ([""] if c.warnings else [])
    lines += [f"> **Note:** {md_text(n)}" for n in c.notes] + ([""] if c.notes else [])
    if c.regressions:
        lines += [f"**{len(c.regressions)} regression(s):**", ""] + [f"- {md_text(r)}" for r in c.regressions]
    else:
        lines.append("**No regressions.**")
    improved = [ch for ch in c.changes if ch.verdict == "improved"]
    if improved:
        names = [md_text(f"{row_name(ch.method, ch.label)} {ch.metric}") for ch in improved]
        lines += ["", f"{len(improved)} improvement(s): " + "; ".join(names)]
    if c.warnings:
        lines += ["", f"{len(c.warnings)} cost warning(s) (not gated):", ""] + [f"- {md_text(w)}" for w in c.warnings]
    lines += ["", "Compared on the cells both runs hold (same method, setting, sample, seed). A change is a regression",
              "when it is worse, in the metric's direction, by more than the threshold and the 95% paired bootstrap",
              "interval of the per-cell difference excludes 0 (threshold alone for set-level metrics or under two",
              "pairs). A setting of the base missing in the new run fails unless --allow-missing. Time per cell is",
              f"judged only with at least {MIN_TIMING_PAIRS} shared ok cells, by the tolerance and a paired test.",
              "", "Thresholds (a worsening this small is noise): " + _thresholds_used(c) + ".", ""]  # fmt: skip
    body = [
        [ch.method, ch.label, f"{ch.metric} {arrow(ch.metric)}".strip(), format_stat(ch.base), format_stat(ch.new),
         f"{ch.delta:+.4g}" if math.isfinite(ch.delta) else "—", f"{ch.allowed:g}", ch.verdict]
        for ch in c.changes
    ]  # fmt: skip
    lines += md_table(["method", "setting", "metric", "base", "new", "Δ", "allowed", "verdict"], body)
    for title, items in (("Only in base", c.only_base), ("Only in new", c.only_new)):
        if items:
            lines += ["", f"{title}:", ""] + [f"- {md_text(i)}" for i in items]
    return "\n".join(lines) + "\n"


def _thresholds_used(c: Comparison) -> str:
    metrics = list(dict.fromkeys(ch.metric for ch in c.changes))
    return ", ".join(f"{m} {c.threshold_of(m)}" for m in metrics)


def _stat_json(stat: Stat) -> dict:
    def number(x):
        return x if isinstance(x, (int, float)) and math.isfinite(x) else None

    return {"mean": number(stat.mean), "low": number(stat.low), "high": number(stat.high), "n": stat.n}


def comparison_json(c: Comparison) -> dict:
    """The comparison as plain data for CI (``compare --json``): verdict, every change, the rest."""
    changes = [
        {"method": ch.method, "setting": ch.label, "metric": ch.metric, "base": _stat_json(ch.base),
         "new": _stat_json(ch.new), "delta": ch.delta if math.isfinite(ch.delta) else None, "allowed": ch.allowed,
         "verdict": ch.verdict}
        for ch in c.changes
    ]  # fmt: skip
    return {
        "exit_code": c.exit_code, "base": str(c.base.run_dir), "new": str(c.new.run_dir), "regressions": c.regressions,
        "warnings": c.warnings, "notes": c.notes, "only_in_base": c.only_base, "only_in_new": c.only_new,
        "changes": changes,
    }  # fmt: skip


def comparison_junit(c: Comparison) -> str:
    """The comparison as JUnit XML (``compare --junit``): one test case per metric x setting (failed
    when it regressed), and one per other regression (failed cells, missing settings, gated cost)."""
    suite = ET.Element("testsuite", name="editbench compare")
    for ch in c.changes:
        case = ET.SubElement(suite, "testcase", classname=row_name(ch.method, ch.label), name=ch.metric)
        message = f"{format_stat(ch.base)} -> {format_stat(ch.new)} (allowed {ch.allowed:g}): {ch.verdict}"
        if ch.verdict == "regressed":
            ET.SubElement(case, "failure", message=message)
        else:
            ET.SubElement(case, "system-out").text = message
    for failure in c.failures:
        case = ET.SubElement(suite, "testcase", classname="run", name=failure.split(":")[0])
        ET.SubElement(case, "failure", message=failure)
    return _junit_text(suite)


def incomparable_junit(message: str) -> str:
    """JUnit XML for runs that cannot be compared: one errored test case saying why."""
    suite = ET.Element("testsuite", name="editbench compare")
    ET.SubElement(ET.SubElement(suite, "testcase", classname="run", name="comparable"), "error", message=message)
    return _junit_text(suite)


def _junit_text(suite: ET.Element) -> str:
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(case.find("failure") is not None for case in cases)))
    suite.set("errors", str(sum(case.find("error") is not None for case in cases)))
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
