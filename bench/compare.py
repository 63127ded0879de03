"""Comparing two runs for regressions, usable as a CI gate.

For every method x setting x metric present in both runs, the change is judged in the
metric's direction. It is a regression only when the new mean is worse by more than the
allowed threshold AND the two 95% confidence intervals do not overlap (when either side has
no interval, e.g. a set-level metric or a single image, the threshold alone decides). A
setting whose failed cells grew, or that lost every value of a metric, also regressed.
Changes that no interval explains but that are within the threshold are reported, not flagged.

Exit codes: 0 nothing regressed, 1 something did, 2 the runs cannot be compared (not run
folders, or no method x setting x metric in common). A changed backbone fingerprint,
dataset, sample set or package versions is stated at the top but does not stop the
comparison: comparing across such a change is often the point.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from .aggregate import (
    RunData,
    Stat,
    arrow,
    format_stat,
    higher_is_better,
    incomplete_note,
    load_run,
    row_name,
    setting_label,
    summarize,
    varying_params,
)
from .errors import ConfigError
from .plots import caveat
from .report import md_table, md_text

OK, REGRESSED, INCOMPARABLE = 0, 1, 2


@dataclass(frozen=True)
class Threshold:
    """How much worse a metric may get before it counts: ``max(abs, rel * |base mean|)``."""

    abs: float = 0.0
    rel: float = 0.0

    def allowed(self, base: float) -> float:
        return max(self.abs, self.rel * abs(base)) if math.isfinite(base) else self.abs


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


def load_thresholds(path: str | Path | None) -> dict[str, Threshold]:
    """Per-metric thresholds from a YAML/JSON file mapping metric names (and ``default``) to
    a number, ``"N%"`` or ``{abs, rel}``; without a file every metric's threshold is 0."""
    if path is None:
        return {"default": Threshold()}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"thresholds file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"thresholds {path}: not valid YAML/JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"thresholds {path}: expected a mapping of metric name to threshold")
    out = {str(k): _threshold(v, f"{path}: {k!r}") for k, v in raw.items()}
    out.setdefault("default", Threshold())
    return out


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


def judge(base: Stat, new: Stat, higher: bool | None, allowed: float) -> str:
    """The verdict on one metric's change (see the module docstring)."""
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
    if _overlap(base, new):
        return "within CI"
    return "regressed" if worse_by > 0 else "improved"


@dataclass
class Comparison:
    base: RunData
    new: RunData
    changes: list[Change]
    failures: list[str]  # settings whose failed cells grew (regressions)
    notes: list[str]  # stated up front: what differs between the runs
    only_base: list[str]
    only_new: list[str]
    thresholds: dict[str, Threshold]

    @property
    def regressions(self) -> list[str]:
        bad = [c for c in self.changes if c.verdict == "regressed"]
        found = [f"{row_name(c.method, c.label)}: {c.metric} {_fmt_delta(c)}" for c in bad]
        return found + self.failures

    @property
    def exit_code(self) -> int:
        return REGRESSED if self.regressions else OK


def _fmt_delta(c: Change) -> str:
    direction = f" {arrow(c.metric)}" if arrow(c.metric) else ""
    return f"{format_stat(c.base)} → {format_stat(c.new)} ({c.delta:+.4g}{direction})"


def _differences(base: RunData, new: RunData) -> list[str]:
    notes = [f"{side} run {note}" for side, run in (("base", base), ("new", new)) if (note := incomplete_note(run))]
    if base.fingerprint != new.fingerprint:
        notes.append(f"backbone fingerprint changed: {base.fingerprint} → {new.fingerprint}")
    if base.dataset != new.dataset:
        notes.append(f"dataset changed: {json.dumps(base.dataset)} → {json.dumps(new.dataset)}")
    samples = [set(zip(r.cells["sample_id"], r.cells["seed"])) for r in (base, new)]
    if samples[0] != samples[1]:
        notes.append(f"sample set differs: {len(samples[0] - samples[1])} (sample, seed) pairs only in base, "
                     f"{len(samples[1] - samples[0])} only in new")  # fmt: skip
    pb, pn = (r.manifest.get("packages") or {} for r in (base, new))
    changed = [f"{k} {pb.get(k)} → {pn.get(k)}" for k in sorted(set(pb) | set(pn)) if pb.get(k) != pn.get(k)]
    if changed:
        notes.append("package versions changed: " + ", ".join(changed))
    if base.labels != new.labels:
        notes.append(f"labels differ: {base.labels} → {new.labels}")
    return notes


def compare_runs(base_dir, new_dir, thresholds: dict[str, Threshold] | None = None) -> Comparison:
    """Compare two run folders; raise ``ConfigError`` when they cannot be compared."""
    thresholds = thresholds or {"default": Threshold()}
    base, new = load_run(base_dir), load_run(new_dir)
    rows = [{(r.method, r.setting_json): r for r in summarize(run)} for run in (base, new)]

    def label(key) -> str:  # varying parameters over both runs
        settings = [json.loads(k[1]) for k in set(rows[0]) | set(rows[1]) if k[0] == key[0]]
        return setting_label(json.loads(key[1]), varying_params(key[0], settings)[0])

    only_base = [row_name(k[0], label(k)) for k in rows[0] if k not in rows[1]]
    only_new = [row_name(k[0], label(k)) for k in rows[1] if k not in rows[0]]
    changes, failures, nan_changes = [], [], []
    for key, b in rows[0].items():
        n = rows[1].get(key)
        if n is None:
            continue
        name = row_name(key[0], label(key))
        if n.failed > b.failed:
            failures.append(f"{name}: failed cells {b.failed} → {n.failed} (first error: {n.first_error})")
        for metric in b.metrics.keys() | n.metrics.keys():
            if metric not in b.metrics or metric not in n.metrics:
                (only_base if metric in b.metrics else only_new).append(f"{name}: metric {metric}")
                continue
            before, after = b.metrics[metric], n.metrics[metric]
            allowed = thresholds.get(metric, thresholds["default"]).allowed(before.mean)
            verdict = judge(before, after, higher_is_better(metric), allowed)
            if after.n_nan != before.n_nan:
                nan_changes.append(f"{name}: {metric} NaN count {before.n_nan} → {after.n_nan}")
            changes.append(Change(key[0], label(key), metric, before, after, allowed, verdict))
    if not changes:
        raise ConfigError(
            f"runs {base_dir} and {new_dir} have no method x setting x metric in common; nothing to compare"
        )
    order = {m: i for i, m in enumerate(base.metric_names)}
    changes.sort(key=lambda c: (c.method, c.label, order.get(c.metric, len(order)), c.metric))
    notes = _differences(base, new) + nan_changes
    return Comparison(base, new, changes, failures, notes, only_base, only_new, thresholds)


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
    lines += [f"> **Note:** {md_text(n)}" for n in c.notes] + ([""] if c.notes else [])
    if c.regressions:
        lines += [f"**{len(c.regressions)} regression(s):**", ""] + [f"- {md_text(r)}" for r in c.regressions]
    else:
        lines.append("**No regressions.**")
    improved = [ch for ch in c.changes if ch.verdict == "improved"]
    if improved:
        names = [md_text(f"{row_name(ch.method, ch.label)} {ch.metric}") for ch in improved]
        lines += ["", f"{len(improved)} improvement(s): " + "; ".join(names)]
    lines += ["", "A change is a regression when it is worse, in the metric's direction, by more than the threshold",
              "and the 95% CIs do not overlap (threshold alone where a side has no CI).", ""]  # fmt: skip
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
