"""Aggregating a run: NaN-aware means with bootstrap confidence intervals, per method and
setting and per edit type, plus the cost of each setting.

NaNs are never dropped silently. A per-image metric's ``Stat`` says how many ok cells gave
NaN (and why: the reason a judge metric's note gives, counted by failure class, else the
metric's declared ``nan_reason``) and how many have no value at all; the mean and its
interval are over the finite values only. Failed and skipped cells are counted beside the
metrics, never folded into them.

Confidence intervals are percentile bootstraps of the mean from a fixed seed, so the same
values always give the same interval. They resample **samples** (clusters), not cells: the
seeds of one sample are not independent evidence (a method deterministic given the sample gives
every seed the same image), so all of a sample's cells enter or leave a resample together, and
``n`` in a report counts samples. Paired tests compare per-sample means, resampling samples.
"""

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from bench.data import DatasetSpec, chained_turns, load_dataset
from bench.errors import ConfigError
from bench.execution.judged_by import JUDGED_BY
from bench.metrics import METRICS
from bench.metrics.judge_failures import FAILURE_CLASSES, NO_INSTRUCTION
from bench.registry import get_method
from bench.settings import setting_label, varying_params
from bench.store import MANIFEST, Store, setting_json

#: How a label says what is untrained, and (an extractor's or judge's) which metrics it made
#: (``bench.metrics.extractors.Extractors.labels``, ``bench.diffusion.backbone.UNTRAINED_LABEL``).
UNTRAINED = "untrained"
UNTRAINED_BACKBONE = "untrained backbone"
BEHIND = " behind "
#: The short marker of a metric column an untrained extractor or judge made.
UNTRAINED_MARK = "†"

CI_LEVEL = 0.95
N_BOOT = 2000
REFERENCE_METHOD = "reconstruct"


@dataclass(frozen=True)
class FailureCount:
    """NaN values of one failure class (``bench.metrics.judge_failures``) in a group of cells,
    with the first cell's specific reason as an example."""

    kind: str
    n: int
    example: str


@dataclass(frozen=True)
class Stat:
    """A metric of one group of cells: mean and 95% CI over the finite values.

    ``n``: finite values used; ``n_samples``: the samples they come from (the unit the interval
    resamples; equal to ``n`` with one seed); ``n_nan``: values that were NaN; ``n_missing``: ok
    cells with no value stored. ``low``/``high`` are NaN when there is no interval (fewer than two
    samples, or a set-level metric computed once over the whole set)."""

    mean: float
    low: float = math.nan
    high: float = math.nan
    n: int = 0
    n_nan: int = 0
    n_missing: int = 0
    per_image: bool = True
    failures: tuple[FailureCount, ...] = ()  # a judge metric's NaN values by class
    judge_sd: float = math.nan  # with k judge answers per item: the mean over items of their standard deviation
    judge_k: int = 0
    n_samples: int | None = None  # None: as many as ``n`` (one value per sample)

    @property
    def samples(self) -> int:
        """Samples behind the mean (``n`` when not recorded)."""
        return self.n if self.n_samples is None else self.n_samples

    @property
    def has_ci(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    def failed(self, kind: str) -> int:
        return sum(f.n for f in self.failures if f.kind == kind)


def bootstrap_ci(
    values, level: float = CI_LEVEL, n_boot: int = N_BOOT, seed: int = 0, clusters=None
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (finite values only).

    ``clusters``: one label per value (its sample id); a resample draws clusters with replacement
    and averages all of their values, so values of one cluster are never counted as independent.
    None: every value is its own cluster. Seeded: the same values give the same interval.
    ``(nan, nan)`` for fewer than two clusters."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError("bootstrap_ci takes finite values only; count and drop NaNs first")
    labels = np.arange(len(values)) if clusters is None else np.asarray(clusters)
    _, members = np.unique(labels, return_inverse=True)
    n_clusters = int(members.max()) + 1 if len(values) else 0
    if n_clusters < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n_clusters, size=(n_boot, n_clusters))
    if n_clusters == len(values):  # one value per cluster: the plain bootstrap of the values
        means = values[drawn].mean(axis=1)
    else:
        sums = np.bincount(members, weights=values, minlength=n_clusters)
        counts = np.bincount(members, minlength=n_clusters).astype(np.float64)
        means = sums[drawn].sum(axis=1) / counts[drawn].sum(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def nested_bootstrap_ci(samples, level: float = CI_LEVEL, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-item means, resampling the items and,
    within each, its k answers (``samples``: an (items, k) array): the interval includes the
    judge's own noise as well as the items'."""
    samples = np.asarray(samples, dtype=np.float64)
    n, k = samples.shape
    if n < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    items = rng.integers(0, n, size=(n_boot, n))
    answers = rng.integers(0, k, size=(n_boot, n, k))
    means = np.take_along_axis(samples[items], answers, axis=2).mean(axis=(1, 2))
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def with_judge_noise(stat: Stat, samples: list) -> Stat:
    """``stat`` with the judge's spread and the nested interval, when every finite value has k
    answers (the same k); unchanged otherwise."""
    if not samples or any(s is None for s in samples) or len({len(s) for s in samples}) != 1 or len(samples[0]) < 2:
        return stat
    array = np.asarray(samples, dtype=np.float64)
    low, high = nested_bootstrap_ci(array)
    return replace(stat, low=low, high=high, judge_sd=float(array.std(axis=1, ddof=1).mean()), judge_k=array.shape[1])


def describe(values, n_missing: int = 0, seed: int = 0, samples=None) -> Stat:
    """``Stat`` of per-image values: NaNs counted and excluded, the rest averaged with a CI that
    resamples ``samples`` (each value's sample id; None: one sample per value).

    Infinite values (e.g. PSNR of an identical image) are kept: they are values, not gaps."""
    values = np.asarray(values, dtype=np.float64)
    nan = np.isnan(values)
    kept = values[~nan]
    clusters = None if samples is None else np.asarray(samples, dtype=object)[~nan]
    n_samples = None if clusters is None else len(set(clusters))
    if not len(kept):
        return Stat(math.nan, n=0, n_nan=int(nan.sum()), n_missing=n_missing, n_samples=n_samples)
    mean = float(kept.mean())
    finite = np.isfinite(kept).all()
    low, high = bootstrap_ci(kept, seed=seed, clusters=clusters) if finite else (math.nan, math.nan)
    return Stat(mean, low, high, len(kept), int(nan.sum()), n_missing, n_samples=n_samples)


def failure_counts(metric: str, notes) -> tuple[FailureCount, ...]:
    """The NaN values' notes of ``metric`` counted by failure class, in ``FAILURE_CLASSES`` order
    (empty for a metric whose notes record no failures)."""
    cls = METRICS.get(metric)
    failures = [cls.failure(note) for note in notes] if cls is not None else []
    found = [f for f in failures if f is not None]
    order = {kind: i for i, kind in enumerate(FAILURE_CLASSES)}
    kinds = sorted(dict.fromkeys(f.kind for f in found), key=lambda k: order.get(k, len(order)))
    return tuple(FailureCount(k, sum(f.kind == k for f in found), next(f.reason for f in found if f.kind == k))
                 for k in kinds)  # fmt: skip


def is_judge(metric: str) -> bool:
    return bool(getattr(METRICS.get(metric), "is_judge", False))


def nan_reason(metric: str) -> str | None:
    """Why a metric can be NaN, as the metric class declares it (None when undeclared)."""
    return getattr(METRICS.get(metric), "nan_reason", None)


def higher_is_better(metric: str) -> bool | None:
    """The metric's direction, or None for a metric this editbench does not know."""
    cls = METRICS.get(metric)
    return None if cls is None else cls.higher_is_better


def arrow(metric: str) -> str:
    direction = higher_is_better(metric)
    return "" if direction is None else ("↑" if direction else "↓")


# -- reading a run -------------------------------------------------------------------------------
@dataclass
class RunData:
    """Everything a report reads from one run folder."""

    run_dir: Path
    manifest: dict
    labels: list[str]
    cells: pd.DataFrame
    present: set = field(repr=False)  # (cell key, metric name) pairs with a stored row
    set_metrics: pd.DataFrame
    set_n_source: int | None = None  # source images the set-level metrics compared against
    sessions: list[dict] = field(default_factory=list)  # per run/resume: cells computed, wall seconds, batch size
    judged_by: dict[str, str] = field(default_factory=dict)  # per judge metric: the judge that made its values

    @property
    def throughput(self) -> str | None:
        """Cells per second of wall time over the run's sessions, as a sentence (None before any)."""
        cells = sum(s["cells"] for s in self.sessions)
        wall = sum(s["wall_s"] for s in self.sessions)
        if not cells or wall <= 0:
            return None
        sizes = ", ".join(str(b) for b in dict.fromkeys(s["batch_size"] for s in self.sessions))
        return (
            f"Throughput: {cells / wall:.3g} cells/s of wall time ({cells} cells computed in {wall:.1f} s "
            f"over {len(self.sessions)} session(s); batch size {sizes})."
        )

    @property
    def image_metrics(self) -> list[str]:
        found = [c.removeprefix("metric.") for c in self.cells.columns if c.startswith("metric.")]
        return _config_order(found, self.manifest)

    @property
    def set_metric_names(self) -> list[str]:
        return _config_order(list(dict.fromkeys(self.set_metrics["name"])), self.manifest)

    @property
    def metric_names(self) -> list[str]:
        return self.image_metrics + [m for m in self.set_metric_names if m not in self.image_metrics]

    @property
    def configured(self) -> dict[str, list[str]]:
        """Per method, the setting JSON strings the run's config asks for (finished or not)."""
        methods = (self.manifest.get("config") or {}).get("methods") or {}
        return {m: [setting_json(s) for s in ss] for m, ss in methods.items() if isinstance(ss, list)}

    @property
    def methods(self) -> list[str]:
        """Methods in config order (then any others the store holds), the reference method first."""
        names = list(dict.fromkeys([*self.configured, *self.cells["method"]]))
        return sorted(names, key=lambda m: m != REFERENCE_METHOD)

    def settings(self, method: str) -> list[str]:
        """Setting JSON strings of a method in config order, those without a finished cell
        included (an unfinished run shows them with 0 cells), then any others the store holds."""
        stored = self.cells.loc[self.cells["method"] == method, "setting"]
        return list(dict.fromkeys([*self.configured.get(method, []), *stored]))

    @property
    def caveats(self) -> list[str]:
        """The labels that say what is untrained behind the run's numbers ("untrained backbone",
        "untrained extractor X ... behind m", a judge, a guidance network), each once; the
        backbone's only when a method of the run made images with it (``external`` reads them)."""
        makes_images = any(measures_cost(m) for m in self.methods)
        return [label for label in self.labels if UNTRAINED in label and (label != UNTRAINED_BACKBONE or makes_images)]

    @property
    def notes(self) -> list[str]:
        """The run's other labels (how external images were sized, cost not measured, the executor)."""
        return [label for label in self.labels if UNTRAINED not in label]

    @property
    def untrained_metrics(self) -> list[str]:
        """Metrics whose values an untrained extractor or judge made (named by its label's "behind" list)."""
        found = [m.strip() for label in self.caveats if BEHIND in label for m in label.split(BEHIND, 1)[1].split(",")]
        return list(dict.fromkeys(found))

    @property
    def judge_line(self) -> str | None:
        """The judge behind the run's judge metrics (model@revision, template, decoding), or None;
        metrics made by different judges: each metric's, ``name: judge; name: judge``."""
        lines = {name: line for name, line in self.judged_by.items() if name in self.image_metrics}
        if len(set(lines.values())) > 1:
            return "; ".join(f"{name}: {line}" for name, line in lines.items())
        return next(iter(lines.values()), None) or (self.manifest.get("judge") or {}).get("line")

    def groups(self, key: str) -> pd.Series:
        """Each cell's value of group ``key`` (e.g. ``language``), None where its sample has none."""
        return self.cells["groups"].map(lambda g: g.get(key))

    @property
    def categories(self) -> list[str]:
        """What the run's cells can be grouped by: ``edit_type`` (when any cell has one) and every group name."""
        found = ["edit_type"] if self.cells["edit_type"].notna().any() else []
        return found + [c.removeprefix(GROUP_PREFIX) for c in self.cells.columns if c.startswith(GROUP_PREFIX)]

    @property
    def fingerprint(self) -> str | None:
        """The fingerprint id of the run's (first) backbone; ``fingerprints`` has every backbone's."""
        return ((self.manifest.get("backbone") or {}).get("fingerprint") or {}).get("id")

    @property
    def backbones(self) -> dict[str, dict]:
        """Each backbone's description by its label (the cells' ``backbone``); a run from before
        several backbones has its one backbone under its name."""
        own = self.manifest.get("backbones")
        if own:
            return own
        described = self.manifest.get("backbone")
        return {default_backbone_label(self.manifest): described} if described else {}

    @property
    def fingerprints(self) -> dict[str, str | None]:
        """Backbone label -> fingerprint id."""
        return {label: (info.get("fingerprint") or {}).get("id") for label, info in self.backbones.items()}

    def backbone_of(self, method: str) -> str | None:
        """The label of the backbone ``method``'s cells ran on."""
        found = self.cells.loc[self.cells["method"] == method, "backbone"].dropna()
        return found.iloc[0] if len(found) else None

    @property
    def dataset(self) -> dict:
        return (self.manifest.get("config") or {}).get("dataset") or {}


JUDGE_FIELDS = ("model", "revision", "template")


def judge_drift(runs: list[RunData]) -> list[str]:
    """A warning when runs were judged by different judges: model, revision or template version
    (judge scores move with each), and one per judge metric whose values different judges made in
    different runs (``RunData.judged_by``); runs without judge metrics are left out."""
    return _manifest_judge_drift(runs) + _metric_judge_drift(runs)


def _metric_judge_drift(runs: list[RunData]) -> list[str]:
    by_metric: dict[str, dict[str, str]] = {}  # metric -> run folder name -> judge line
    for run in runs:
        for metric, line in run.judged_by.items():
            if metric in run.image_metrics:
                by_metric.setdefault(metric, {})[run.run_dir.name] = line
    return [f"{metric}: judged by different judges in different runs "
            f"({'; '.join(f'{name}: {line}' for name, line in lines.items())}): its scores are comparable only from "
            "the same judge." for metric, lines in by_metric.items() if len(set(lines.values())) > 1]  # fmt: skip


def _manifest_judge_drift(runs: list[RunData]) -> list[str]:
    judged = [(r.run_dir.name, r.manifest["judge"]) for r in runs if r.manifest.get("judge")]
    changed = [f for f in JUDGE_FIELDS if len({str(j.get(f)) for _, j in judged}) > 1]
    if not changed:
        return []
    each = "; ".join(f"{name}: {', '.join(f'{f} {j.get(f)}' for f in JUDGE_FIELDS)}" for name, j in judged)
    return [f"judge {', '.join(changed)} differ between runs ({each}): judge scores are comparable only from "
            "the same judge model, revision and template."]  # fmt: skip


def expected_cells(run: RunData) -> int | None:
    """How many cells the run's config asks for (samples and the chained turns of ``turns:
    iterative``, x settings x the seeds each setting runs: one for a setting deterministic given the
    sample), or None when its dataset can no longer be read."""
    config = run.manifest.get("config") or {}
    dataset = {k: tuple(v) if isinstance(v, list) else v for k, v in (config.get("dataset") or {}).items()}
    try:
        spec = DatasetSpec(**dataset)
        refs = load_dataset(spec)
    except (ConfigError, TypeError, OSError):
        return None
    n_samples = len(refs) + len(chained_turns(refs, spec.turns))
    seeds = config.get("seeds") or [0]
    per_sample = sum(_seeds_run(method, setting, seeds) for method, settings in (config.get("methods") or {}).items()
                     for setting in settings or [{}])  # fmt: skip
    return n_samples * per_sample


def _seeds_run(method: str, setting: dict, seeds: list[int]) -> int:
    """How many of ``seeds`` the run computed for the setting (all of them for an unknown method)."""
    try:
        return len(get_method(method).seeds_to_run(setting, seeds))
    except (ConfigError, KeyError):
        return len(seeds)


def incomplete_note(run: RunData) -> str | None:
    """``incomplete: 14 of 30 cells`` (with the command that finishes it) for a run whose store
    lacks cells its config asks for; None for a complete run."""
    total = expected_cells(run)
    if total is None or len(run.cells) >= total:
        return None
    return (f"incomplete: {len(run.cells)} of {total} cells in {run.run_dir.name}; "
            f"finish it with editbench run --resume {run.run_dir}")  # fmt: skip


def _config_order(names: list[str], manifest: dict) -> list[str]:
    configured = (manifest.get("config") or {}).get("metrics") or []
    return sorted(names, key=lambda m: (configured.index(m) if m in configured else len(configured), m))


def load_run(run_dir) -> RunData:
    """Read a run folder (manifest, cells, per-image and set-level metrics)."""
    run_dir = Path(run_dir)
    if not (run_dir / Store.FILENAME).is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no {Store.FILENAME})")
    store = Store(run_dir)
    try:
        cells = store.cells_frame()
        present = set(store.db.execute("SELECT key, name FROM metrics"))
        has_set = store.db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='set_metrics'").fetchone()
        set_metrics = (
            pd.read_sql_query("SELECT method, setting, name, value, n FROM set_metrics", store.db)
            if has_set
            else pd.DataFrame(columns=["method", "setting", "name", "value", "n"])
        )
        manifest = store.info("manifest") or {}
        labels = store.info("labels", [])
        n_source = store.info("set_metrics_n_source")
        sessions = store.info("sessions", [])
        judged_by = store.info(JUDGED_BY, {})
    finally:
        store.close()
    if (run_dir / MANIFEST).is_file():
        manifest = json.loads((run_dir / MANIFEST).read_text())
    labels = list(dict.fromkeys(list(manifest.get("labels", [])) + list(labels)))
    cells["backbone"] = cells["backbone"].fillna(default_backbone_label(manifest))  # cells stored before the column
    return RunData(run_dir, manifest, labels, with_group_columns(cells), present, set_metrics, n_source, sessions,
                   judged_by)  # fmt: skip


def default_backbone_label(manifest: dict) -> str | None:
    """The label of a run's first backbone: its name (``RunConfig.backbones``)."""
    first = next(iter(manifest.get("backbones") or {}), None)
    return first or ((manifest.get("backbone") or {}).get("spec") or {}).get("name")


GROUP_PREFIX = "group."


def with_group_columns(cells: pd.DataFrame) -> pd.DataFrame:
    """``cells`` with one ``group.<name>`` column per category the cells' ``groups`` name (e.g.
    ``group.language``; None where a cell's sample lacks it)."""
    parsed = list(cells["groups"])
    names = list(dict.fromkeys(name for g in parsed for name in g))
    cells = cells.copy()
    for name in names:
        cells[GROUP_PREFIX + name] = [g.get(name) for g in parsed]
    return cells


# -- setting labels ---------------------------------------------------------------------------------
def has_preparation(method: str) -> bool:
    """Whether the method prepares work shared across settings (an inversion); True when unknown."""
    try:
        return get_method(method).prepares()
    except ConfigError:
        return True


def measures_cost(method: str) -> bool:
    """Whether the method's cells carry measured cost (False for images made elsewhere); True when unknown."""
    try:
        return get_method(method).measures_cost
    except ConfigError:
        return True


NOT_MEASURED = "not measured"


def row_name(method: str, label: str) -> str:
    """``method label``, or the method alone when it has a single setting."""
    return method if label == "—" else f"{method} {label}"


# -- grouping ---------------------------------------------------------------------------------------
@dataclass
class Row:
    """One method x setting (x edit type) of a run: counts, metric stats and cost."""

    method: str
    setting: dict
    setting_json: str
    label: str
    edit_type: str | None  # the category value when the rows are grouped (by edit type or ``category``)
    cells: int
    ok: int
    failed: int
    skipped: int
    metrics: dict[str, Stat]
    cost: dict[str, float]
    first_error: str | None = None
    values: dict[str, pd.Series] = field(default_factory=dict, repr=False)  # per-image metric by (cell sample id, seed)
    category: str | None = None  # what ``edit_type`` holds the value of: "edit_type" or a group name
    samples: int | None = None  # samples with an ok cell (None: as many as ``ok``)

    @property
    def sample_count(self) -> int:
        return self.ok if self.samples is None else self.samples

    @property
    def n_text(self) -> str:
        """The table's ``n``: samples with an ok cell, and the ok cells when seeds repeat a sample
        (``3 (6 cells)``): the interval and the paired test resample samples (``N_NOTE``)."""
        return str(self.sample_count) if self.sample_count == self.ok else f"{self.sample_count} ({self.ok} cells)"

    @property
    def is_reference(self) -> bool:
        return self.method == REFERENCE_METHOD


def _cost(ok: pd.DataFrame) -> dict[str, float]:
    """Cost of a group's ok cells: means per cell, the spread of time per cell (median and
    quartiles), and the preparation's cost per preparation this run computed (the cells that
    reused one, in memory or from the disk cache, are counted in ``prep_reused``), so the
    numbers do not depend on what other runs left in the cache."""

    def mean(frame, col):
        values = frame[col].dropna()
        return float(values.mean()) if len(values) else math.nan

    time = ok["time_s"].dropna()
    q1, median, q3 = (float(q) for q in time.quantile([0.25, 0.5, 0.75])) if len(time) else (math.nan,) * 3
    cached = ok["prep_cached"].dropna()
    computed = ok[(ok["prep_cached"] == 0) & ((ok["prep_nfe"].fillna(0) > 0) | (ok["prep_grad_evals"].fillna(0) > 0))]
    peak = ok["peak_mem_mb"].dropna()
    return {
        "time_s": mean(ok, "time_s"),
        "time_median": median,
        "time_q1": q1,
        "time_q3": q3,
        "gpu_time_s": mean(ok, "gpu_time_s"),
        "nfe": mean(ok, "nfe"),
        "grad_evals": mean(ok, "grad_evals"),
        "peak_mem_mb": float(peak.max()) if len(peak) else math.nan,
        "prep_computed": float(len(computed)),
        "prep_time_s": mean(computed, "prep_time_s"),
        "prep_nfe": mean(computed, "prep_nfe"),
        "prep_grad_evals": mean(computed, "prep_grad_evals"),
        "prep_reused": float(cached.sum()) if len(cached) else math.nan,
    }


ITERATIVE_SUFFIX = " (iterative)"


def chained(cells: pd.DataFrame) -> pd.Series:
    """Whether each cell edited its chain's previous output (``input_key`` set: ``turns: iterative``)."""
    return cells["input_key"].notna() if "input_key" in cells else pd.Series(False, index=cells.index)


def independent_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells that edited their turn's recorded source (MagicBrush's single-turn setting)."""
    return cells[~chained(cells)]


def chained_note(run: RunData) -> str | None:
    """What a report of a ``turns: iterative`` run says under its main table and grids: they hold the
    independent edits; the chained turns have their own tables. None for other runs."""
    n = int(chained(run.cells).sum())
    if not n:
        return None
    return (f"This run is dataset.turns: iterative. The tables and image grids show the independent edits (every "
            f"turn edited from its recorded source, MagicBrush's single-turn setting); its {n} chained turn cell(s) "
            f"(each turn edited from the method's own previous output) are left out: see editbench report "
            f"{run.run_dir} --table magicbrush --md PATH (the multi-turn, final-turn rows) or --table drift "
            f"(each metric per turn).")


def cell_sample_ids(cells: pd.DataFrame) -> pd.Series:
    """Each cell's sample id, with `` (iterative)`` added for a chain's turn that edited the previous
    output (``input_key`` set): with the seed, what pairs a cell with its counterpart in another row."""
    if "input_key" not in cells:
        return cells["sample_id"]
    return cells["sample_id"].where(cells["input_key"].isna(), cells["sample_id"] + ITERATIVE_SUFFIX)


def _row(run: RunData, method: str, setting_text: str, label: str, group: pd.DataFrame, edit_type, seed: int) -> Row:
    ok = group[group["status"] == "ok"]
    metrics, per_cell = {}, {}
    cell_index = pd.MultiIndex.from_arrays([cell_sample_ids(ok), ok["seed"]])
    for name in run.image_metrics:
        stored = np.array([(key, name) in run.present for key in ok["key"]], dtype=bool)
        values = ok[f"metric.{name}"].to_numpy(dtype=np.float64)[stored]
        samples = ok["sample_id"].to_numpy()[stored]
        metrics[name] = describe(values, n_missing=int((~stored).sum()), seed=seed, samples=samples)
        if is_judge(name) and f"note.{name}" in ok.columns:
            notes = ok[f"note.{name}"].to_numpy(dtype=object)[stored]
            metrics[name] = replace(metrics[name], failures=failure_counts(name, notes[np.isnan(values)]))
            answers = [METRICS[name].judge_samples(n) if isinstance(n, str) else None for n in notes[~np.isnan(values)]]
            metrics[name] = with_judge_noise(metrics[name], answers)
        per_cell[name] = pd.Series(values, index=cell_index[stored])
    if edit_type is None:
        sets = run.set_metrics[(run.set_metrics["method"] == method) & (run.set_metrics["setting"] == setting_text)]
        for rec in sets.itertuples():
            value = math.nan if rec.value is None else float(rec.value)
            metrics[rec.name] = Stat(value, n=int(rec.n or 0), n_nan=int(math.isnan(value)), per_image=False)
    failed = group[group["status"] == "failed"]
    return Row(
        method, json.loads(setting_text), setting_text, label, edit_type, len(group), len(ok), len(failed),
        int((group["status"] == "skipped").sum()), metrics, _cost(ok),
        failed.iloc[0]["error"] if len(failed) else None, per_cell, samples=int(ok["sample_id"].nunique()),
    )  # fmt: skip


def summarize(run: RunData, by_edit_type: bool = False, seed: int = 0, by: str | None = None,
              keep_chained: bool = False) -> list[Row]:  # fmt: skip
    """One ``Row`` per method and setting (and per value of a category when ``by_edit_type``, or
    ``by`` names one of ``run.categories``: the value is in ``Row.edit_type``), in run order with
    the reference method first. Set-level metrics appear in the overall rows only.

    The chained turns of a ``turns: iterative`` run are left out (``chained_note``): averaged with
    the independent edits of the same turns they would mix MagicBrush's two settings in one mean.
    ``keep_chained``: summarize the cells as given (the multi-turn table passes the chains' cells)."""
    rows = []
    cells = run.cells if keep_chained else independent_cells(run.cells)
    by = "edit_type" if by_edit_type else by
    if by not in (None, "edit_type", *run.categories):
        raise ConfigError(f"cannot group by {by!r}; this run's cells have: {', '.join(run.categories) or 'no categories'}")
    column = None if by is None else by if by == "edit_type" else GROUP_PREFIX + by
    keys = [column] if column else []
    for method in run.methods:
        texts = run.settings(method)
        varying, _ = varying_params(method, [json.loads(t) for t in texts])
        for text in texts:
            group = cells[(cells["method"] == method) & (cells["setting"] == text)]
            label = setting_label(json.loads(text), varying)
            if not keys:
                rows.append(_row(run, method, text, label, group, None, seed))
                continue
            for value, part in group.groupby(group[column].fillna("(none)"), sort=True):
                rows.append(_row(run, method, text, label, part, value, seed))
                rows[-1].category = by
    if by is not None:
        rows.sort(key=lambda r: r.edit_type)
    return rows


def fixed_params(run: RunData) -> dict[str, dict]:
    """Per method, the parameters every setting of the run shares (shown once, not per row)."""
    out = {}
    for method in run.methods:
        _, fixed = varying_params(method, [json.loads(t) for t in run.settings(method)])
        if fixed:
            out[method] = fixed
    return out


#: What a table's ``n`` counts (``Row.n_text``); captions say it.
N_NOTE = "n = samples with an ok cell (with the ok cells in parentheses when a sample has several seeds)"

#: What a marked (bold) value in a table means; captions say it.
BEST_RULE = (
    "best mean in its column and better than every other row by a paired comparison: the 95% paired "
    "bootstrap interval of the mean difference over the samples both rows share (each row's mean over its seeds; "
    "samples resampled, as seeds of one sample are not independent) excludes 0; "
    "no bold when no row is distinguishable; set-level metrics (FID, KID) and the reference row are never bold"
)


def paired_better(best: pd.Series, other: pd.Series, higher: bool, seed: int = 0) -> bool:
    """Whether ``best`` beats ``other`` on the samples both have: each side's values (indexed by
    (sample id, seed), or by sample id) are averaged per sample over its seeds, and the 95%
    bootstrap interval of the mean per-sample difference (in the metric's direction), resampling
    samples, lies above 0. Needs two shared samples with finite values."""
    best, other = (per_sample_means(s) for s in (best, other))
    best, other = best.align(other, join="inner")
    diff = (best - other).to_numpy(dtype=np.float64) * (1 if higher else -1)
    diff = diff[np.isfinite(diff)]
    if len(diff) < 2:
        return False
    low, _ = bootstrap_ci(diff, seed=seed)
    return low > 0


def per_sample_means(values: pd.Series) -> pd.Series:
    """The finite ``values`` averaged per sample (the first index level): one value per sample."""
    values = values[np.isfinite(values.to_numpy(dtype=np.float64))]
    return values.groupby(level=0, sort=True).mean()


def best_rows(rows: list[Row], metric: str) -> set[int]:
    """The index of the row with the best mean of ``metric``, when it is distinguishable from every
    other contender (``BEST_RULE``); otherwise the empty set.

    The reference row is a ceiling, not a contender. Nothing is marked for a metric without a
    known direction, a set-level metric (one value per row, no per-cell pairs; biased by n),
    a tie, or a single contender."""
    direction = higher_is_better(metric)
    candidates = [
        (i, r) for i, r in enumerate(rows)
        if not r.is_reference and metric in r.metrics and not math.isnan(r.metrics[metric].mean)
    ]  # fmt: skip
    if direction is None or len(candidates) < 2 or any(metric not in r.values for _, r in candidates):
        return set()
    pick = max if direction else min
    best_index, best = pick(candidates, key=lambda c: c[1].metrics[metric].mean)
    others = [r for i, r in candidates if i != best_index]
    if all(paired_better(best.values[metric], r.values[metric], direction) for r in others):
        return {best_index}
    return set()


MAX_GROUPS_LISTED = 8  # groups named in a NaN note; the rest are counted


def nan_notes(rows: list[Row]) -> list[str]:
    """One sentence per reason values are missing (a judge failure class, a metric's declared NaN
    reason, or "not computed"), however many groups and metrics share it: the metrics, how many
    values of how many, and the count per group."""
    found: dict[tuple[str, str], dict] = {}
    totals: dict[str, int] = {}
    for r in rows:
        where = row_name(r.method, r.label) + (f" [{r.edit_type}]" if r.edit_type else "")
        for name, s in r.metrics.items():
            totals[name] = totals.get(name, 0) + s.n_nan + s.n + s.n_missing
            for f in s.failures:
                _count(found, ("nan", f"judge answer class {f.kind}"), name, where, f.n, f.example)
            unclassed = s.n_nan - sum(f.n for f in s.failures)
            if unclassed:
                _count(found, ("nan", nan_reason(name) or "no reason declared by the metric"), name, where, unclassed)
            if s.n_missing:
                _count(found, ("missing", "not computed"), name, where, s.n_missing)
    notes = []
    for (kind, reason), f in found.items():
        names = ", ".join(f["metrics"])
        groups = [f"{w}: {n}" for w, n in f["where"].items()]
        listed = ", ".join(groups[:MAX_GROUPS_LISTED])
        if len(groups) > MAX_GROUPS_LISTED:
            listed += f", and {len(groups) - MAX_GROUPS_LISTED} more"
        what = "was NaN for" if kind == "nan" else "has no value for"
        total = sum(totals[m] for m in f["metrics"])
        example = f" (first: {f['example']}; export's nan_reason column has each cell's)" if f["example"] else ""
        notes.append(f"{names} {what} {f['n']} of {total} values ({listed}) — {reason}{example}")
    return notes


def _count(found: dict, key: tuple[str, str], metric: str, where: str, n: int, example: str = "") -> None:
    f = found.setdefault(key, {"metrics": {}, "where": {}, "n": 0, "example": example})
    f["metrics"][metric] = True
    f["where"][where] = f["where"].get(where, 0) + n
    f["n"] += n


#: How far (in percentage points) the judge failure rates of compared rows may differ before a
#: report warns: a row judged on fewer, perhaps easier, samples is not comparable.
FAILURE_RATE_MARGIN = 5.0


def judged_count(s: Stat) -> int:
    """Values a judge was asked for (NaN values of samples without an instruction were not asked)."""
    return s.n + s.n_nan - s.failed(NO_INSTRUCTION)


def failure_rate_warnings(rows: list[Row], margin: float = FAILURE_RATE_MARGIN) -> list[str]:
    """Per judge metric, a warning when its failure rate (failed / judged) differs between
    ``rows`` by more than ``margin`` percentage points."""
    warnings = []
    for name in dict.fromkeys(m for r in rows for m in r.metrics if is_judge(m)):
        rates = [(r, judged_count(r.metrics[name])) for r in rows if name in r.metrics]
        rates = [(r, judged, 100 * (judged - r.metrics[name].n) / judged) for r, judged in rates if judged]
        if len(rates) < 2 or max(p for *_, p in rates) - min(p for *_, p in rates) <= margin:
            continue
        each = ", ".join(f"{row_name(r.method, r.label)}{f' [{r.edit_type}]' if r.edit_type else ''}: "
                         f"{p:.0f}% of {judged}" for r, judged, p in rates)  # fmt: skip
        warnings.append(f"{name}: judge failure rates differ by more than {margin:g} points between rows ({each}); "
                        "rows judged on different samples are not comparable (retry with editbench score "
                        "--retry-failed, or compare on the cells every row has)")  # fmt: skip
    return warnings


def format_stat(s: Stat | None, digits: int = 4) -> str:
    """``mean [low, high]`` plus NaN counts; ``—`` when there is no value."""
    if s is None:
        return "—"
    text = "—" if math.isnan(s.mean) else f"{s.mean:.{digits}g}"
    if s.has_ci:
        text += f" [{s.low:.{digits}g}, {s.high:.{digits}g}]"
    if not s.per_image and not math.isnan(s.mean):
        text += f" (set, n={s.n})"
    if s.judge_k:
        never = ": the samples never differed" if s.judge_sd == 0 else ""  # no spread measured, not a steady judge
        text += f" (judge sd {s.judge_sd:.{digits}g}, k={s.judge_k}{never})"
    classes = ": " + ", ".join(f"{f.n} {f.kind}" for f in s.failures) if s.failures else ""
    gaps = [f"{s.n_nan} NaN{classes}"] * bool(s.n_nan) + [f"{s.n_missing} missing"] * bool(s.n_missing)
    return text + (f" ({', '.join(gaps)})" if gaps else "")


@dataclass
class Ranked:
    """One setting in a method's ranking by a metric: its row, and whether the paired test
    (``paired_better``) tells it from its neighbours. ``None``: not testable (no per-cell
    values, e.g. a set-level metric, or no next setting)."""

    row: Row
    above_next: bool | None  # distinguishably better than the setting ranked after it
    below_best: bool | None  # the top setting is distinguishably better than this one


def rank_settings(rows: list[Row], metric: str) -> dict[str, list[Ranked]]:
    """Per method (reference excluded), its settings ordered best first by ``metric``'s mean in
    the metric's direction; settings without a finite mean come last. The top setting is
    "the best" only where ``best_rows`` says so."""
    higher = higher_is_better(metric)
    if higher is None:
        raise ConfigError(f"--rank {metric}: the metric has no direction (higher or lower is better), so no order")
    out: dict[str, list[Ranked]] = {}
    for method in dict.fromkeys(r.method for r in rows if not r.is_reference):
        own = [r for r in rows if r.method == method and metric in r.metrics]

        def key(r: Row) -> tuple[bool, float]:
            mean = r.metrics[metric].mean
            return (math.isnan(mean), -mean if higher else mean)

        ordered = sorted(own, key=key)
        testable = [metric in r.values for r in ordered]

        def better(a: int, b: int) -> bool | None:
            if not (testable[a] and testable[b]) or math.isnan(ordered[b].metrics[metric].mean):
                return None
            return paired_better(ordered[a].values[metric], ordered[b].values[metric], higher)

        out[method] = [
            Ranked(r, better(i, i + 1) if i + 1 < len(ordered) else None, better(0, i) if i else None)
            for i, r in enumerate(ordered)
        ]
    return out
