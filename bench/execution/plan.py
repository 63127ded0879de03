"""The plan of a run, worked out from the config and the dataset alone (no backbone).

**Execution plan.** A **cell** is (method, setting, sample, seed). A **work unit** holds every
pending cell of a block of samples that shares one method and one preparation key
(``Method.preparation_key``: the setting's preparation spec), so a preparation (an inversion,
say) is computed once per sample and reused by all of the unit's cells. Inside a unit, cells
are cut into **batches** of up to ``batch_size`` cells of one setting (rows whose timesteps
differ are never batched together); a batch may mix samples and seeds. Samples are blocked
``max(1, batch_size // seeds)`` at a time, so a batch fills up with the seeds of one sample and
then with further samples; at ``batch_size = 1`` the order is the sample-major order of one
cell at a time. A setting its method declares deterministic given the sample
(``Method.is_stochastic``) has one cell per sample, at the first seed, whatever ``seeds`` says:
further seeds would repeat its images, and count them as evidence. Units are independent: an
executor may run them in any order and on any worker.
The chains of ``dataset.turns: iterative``, whose turns must run in order, are planned by
``bench.execution.chains`` (one unit per block of chains).

**Estimate** (``editbench run --dry-run``): the cells of each method and setting, settings that
collapse onto the same steps, the preparations a run computes (kept in the disk cache or in
memory only) and the NFE to expect, edits and preparations together, and whether a run folder
already holds every cell (so ``--resume`` of a finished run returns at once).
"""

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bench.data import SampleRef, chained_turns, load_dataset
from bench.diffusion.backbone import identity_on_disk, known_family, step_rules
from bench.errors import ConfigError
from bench.execution.config import RunConfig
from bench.method import PreparationSpec, rules_in_force
from bench.metrics import SetMetric, get_metric
from bench.registry import get_method
from bench.settings import setting_label, varying_params
from bench.store import Store, setting_json


def cell_key(method: str, setting: dict, sample_id: str, seed: int, chained: bool = False) -> str:
    """The cell's primary key in the store: stable across runs, resumes and batchings. ``chained``:
    the turn edits the method's own previous output (``turns: iterative``), not its recorded source."""
    parts = [method, setting_json(setting), sample_id, seed] + (["iterative"] if chained else [])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def cell_seed(sample_id: str, seed: int) -> int:
    """The generator seed of every cell of (sample, seed), whatever the method or batch."""
    return int(hashlib.sha256(f"{sample_id}\0{seed}".encode()).hexdigest()[:15], 16)


@dataclass(frozen=True)
class Cell:
    """One pending cell; ``ref`` is its sample (loaded by whoever runs it).

    A turn of a chain (``bench.execution.chains``) edits the output of cell ``input_key``: from
    ``input_png`` when that cell finished in an earlier session, else from the unit that runs it
    first; ``blocked`` says why it cannot run (that cell failed or was skipped)."""

    key: str
    method: str
    setting: dict = field(hash=False, compare=False)
    ref: SampleRef = field(hash=False, compare=False)
    seed: int = 0
    input_key: str | None = None
    input_png: bytes | None = field(default=None, hash=False, compare=False, repr=False)
    blocked: str | None = field(default=None, hash=False, compare=False)

    @property
    def sample_id(self) -> str:
        return self.ref.id


@dataclass
class WorkUnit:
    """Cells that share ``method`` and one preparation key, in ``batches`` (each of one
    setting, at most the run's batch size), on the backbone labelled ``backbone``."""

    unit_id: int
    method: str
    batches: list[list[Cell]]
    backbone: str | None = None  # None: the run's default backbone

    @property
    def cells(self) -> list[Cell]:
        return [cell for batch in self.batches for cell in batch]


def sample_blocks(refs: list[SampleRef], batch_size: int, n_seeds: int) -> list[list[SampleRef]]:
    """Consecutive blocks of samples whose seeds together fill about one batch."""
    size = max(1, batch_size // max(1, n_seeds))
    return [refs[i : i + size] for i in range(0, len(refs), size)]


def plan_units(
    settings: dict, refs: list[SampleRef], seeds: list[int], done: set[str], batch_size: int,
    backbones: dict[str, str] | None = None,
) -> list[WorkUnit]:
    """Work units of every cell not in ``done``.

    ``settings``: method name -> its settings (a config's); a method's settings are grouped by
    their ``preparation_key``, the key the worker computes preparations under. ``backbones``:
    method name -> the label of its backbone (``RunConfig.backbone_label``); the units of one
    backbone come together, backbones in the order the methods name them, so a worker that runs
    them in order loads each model once.
    """
    backbones = backbones or {}
    units = []
    for block in sample_blocks(refs, batch_size, len(seeds)):
        for method, method_settings in settings.items():
            cls = get_method(method)
            groups: dict = {}
            for setting in method_settings:
                groups.setdefault(cls.preparation_key(setting), []).append(setting)
            for group in groups.values():
                batches = []
                for setting in group:
                    cells = [
                        Cell(key, method, setting, ref, seed)
                        for ref in block
                        for seed in cls.seeds_to_run(setting, seeds)
                        if (key := cell_key(method, setting, ref.id, seed)) not in done
                    ]
                    batches += [cells[i : i + batch_size] for i in range(0, len(cells), batch_size)]
                if batches:
                    units.append(WorkUnit(len(units), method, batches, backbones.get(method)))
    return grouped_by_backbone(units)


def grouped_by_backbone(units: list[WorkUnit]) -> list[WorkUnit]:
    """``units`` with those of one backbone together (backbones in the order they first come,
    plan order within one), renumbered: a worker that runs them in order loads each model once."""
    order = list(dict.fromkeys(unit.backbone for unit in units))
    units = sorted(units, key=lambda unit: order.index(unit.backbone))
    for unit_id, unit in enumerate(units):
        unit.unit_id = unit_id
    return units



# -- the estimate (--dry-run), and what a run folder still lacks ------------------------------------
def dataset_refs(config: RunConfig) -> list[SampleRef]:
    refs = load_dataset(config.dataset)
    if not refs:
        raise ConfigError(f"dataset {config.resolved['dataset']} selects no samples")
    return refs


def collapsed_settings(config: RunConfig) -> list[str]:
    """One warning per group of a method's settings that run exactly the same steps: fractions
    of ``steps`` (``t0``, ``cond_stop``...) are rounded down to whole steps, so at few steps
    different values coincide (4 steps: ``int(4*0.5) == int(4*0.7)``) and give identical outputs.
    A start level ``t0`` counts under the backbone family's rule (``StepRules.start_steps``)."""
    warnings = []
    for method, settings in config.settings.items():
        cls = get_method(method)
        groups = defaultdict(list)
        with rules_in_force(step_rules(config.backbone_of(method))):
            for setting in settings:
                if "steps" in setting:
                    groups[setting_json(cls.effective_setting(setting))].append(setting)
            schedules = {key: cls.schedule(same[0]) for key, same in groups.items()}
        varying, _ = varying_params(method, settings)
        for key, same in groups.items():
            if len(same) > 1:
                labels = " and ".join(setting_label(s, varying) for s in same)
                start, run = schedules[key]
                warnings.append(
                    f"{method}: settings {labels} run the same steps (start step {start}, {run} timesteps run "
                    f"of {same[0]['steps']}); their outputs will be identical. Use more steps or other values."
                )
    return warnings


def ignored_references(config: RunConfig, refs: list[SampleRef]) -> list[str]:
    """One warning per method of the run that does not read reference images
    (``Method.reads_references``) when samples carry them: it edits those samples from their source
    alone. Methods that make no image (``external``) read nothing and are left out."""
    carrying = sum(1 for ref in refs if ref.references)
    if not carrying:
        return []
    ignoring = [m for m in config.settings if not get_method(m).reads_references and get_method(m).measures_cost]
    carry = "carries" if carrying == 1 else "carry"
    return [f"{method}: {carrying} of the {len(refs)} samples {carry} reference images, which {method} does not "
            "read; it edits them from their source alone" for method in ignoring]  # fmt: skip


@dataclass
class SettingPlan:
    """One method x setting of a config: its cells, schedule and estimated NFE per cell."""

    method: str
    label: str
    cells: int
    start_step: int | None
    steps_run: int | None
    edit_nfe: int
    backbone: str = ""


@dataclass
class PreparationPlan:
    """A preparation one method's settings need per sample, as a run computes it: ``spec`` (kept in
    the disk cache or not), once per source sample, and once more per ``chained`` cell (a turn of
    ``turns: iterative`` that edits the method's own previous output prepares that image)."""

    method: str
    spec: PreparationSpec
    chained: int = 0

    def count(self, n_sources: int) -> int:
        return n_sources + self.chained


def plan_settings(config: RunConfig, n_sources: int,
                  n_chained: int = 0) -> tuple[list[SettingPlan], list[PreparationPlan]]:  # fmt: skip
    """Per setting, what it runs (``n_sources`` samples and ``n_chained`` chained turns); and the
    preparations the run computes, as the worker does: a sample's preparation once per disk-cache
    entry (``cache_entry``: the second setting loads it) when it is cached, else once per
    ``preparation_key`` (settings of one key share a unit, which prepares each sample once)."""
    plans, preparations = [], {}
    for method, settings in config.settings.items():
        rules = step_rules(config.backbone_of(method))
        cls = get_method(method)
        varying, _ = varying_params(method, settings)
        for setting in settings:
            seeds = len(cls.seeds_to_run(setting, config.seeds))
            with rules_in_force(rules):  # the backbone family's NFE per guided step and start-level steps
                (start, run), nfe = cls.schedule(setting) or (None, None), cls.estimate_nfe(setting)[0]
            plans.append(SettingPlan(method, setting_label(setting, varying), (n_sources + n_chained) * seeds,
                                     start, run, nfe, config.backbone_label(method)))  # fmt: skip
            spec = cls.preparation_key(setting)
            if spec is not None:
                entry = preparations.setdefault((method, spec.cache_entry() if spec.cached else spec),
                                                PreparationPlan(method, spec))  # fmt: skip
                entry.chained += n_chained * seeds
    return plans, list(preparations.values())


def cached_preparations(config: RunConfig, refs: list[SampleRef], preparations: list[PreparationPlan]) -> int | None:
    """How many of the (sample, disk-cached preparation) pairs the disk cache already holds, each
    sample at its method's backbone's size; None when a backbone's files are not on disk (nothing of
    it can be cached yet, or it is a hub id)."""
    by_backbone: dict[str, list[PreparationPlan]] = defaultdict(list)
    for p in preparations:
        if p.spec.cached:
            by_backbone[config.backbone_label(p.method)].append(p)
    found = 0
    for mine in by_backbone.values():
        identity = identity_on_disk(config.backbone_of(mine[0].method))
        if identity is None:
            return None
        frame = identity.frame(config.dataset.policy())
        for ref in refs:
            try:
                sample = ref.load(frame)
            except Exception:  # a bad sample fails its cells in the run; here it is simply not cached
                continue
            found += sum(p.spec.is_cached(identity, sample) for p in mine)
    return found


def dry_run_text(config: RunConfig) -> str:
    """The ``--dry-run`` listing: cells per method and setting, preparations, NFE estimate, warnings."""
    refs = dataset_refs(config)
    plans, preparations = plan_settings(config, len(refs), len(chained_turns(refs, config.dataset.turns)))
    lines = [f"dry run: {len(refs)} sample(s) x {len(config.seeds)} seed(s); nothing is loaded or run", ""]
    several = len(config.backbones) > 1
    header = "method | setting | cells | start step | timesteps run | NFE/cell (est.)"
    lines.append(("backbone | " if several else "") + header)
    for p in plans:
        schedule = ("—", "—") if p.start_step is None else (str(p.start_step), str(p.steps_run))
        lines.append(("{p.backbone} | " if several else "").format(p=p) +
                     f"{p.method} | {p.label} | {p.cells} | {schedule[0]} | {schedule[1]} | {p.edit_nfe}")  # fmt: skip
    total_cells = sum(p.cells for p in plans)
    edit_nfe = sum(p.cells * p.edit_nfe for p in plans)
    lines += ["", f"{total_cells} cells; estimated NFE: {edit_nfe} for the edits"]
    if several:
        for label in config.backbones:
            mine = [p for p in plans if p.backbone == label]
            lines.append(f"  backbone {label}: {sum(p.cells for p in mine)} cells, "
                         f"{sum(p.cells * p.edit_nfe for p in mine)} NFE")  # fmt: skip
    costs = []
    for p in preparations:
        with rules_in_force(step_rules(config.backbone_of(p.method))):  # the NFE of its backbone's family
            costs.append((p, p.count(len(refs)), p.spec.nfe() * p.count(len(refs))))
    cached = [cost for cost in costs if cost[0].spec.cached]
    if cached:
        total, nfe, each = _summary(cached)
        found = cached_preparations(config, refs, [p for p, _, _ in cached])
        found = "disk cache not checked (the backbone's files are not on disk)" if found is None else \
            f"{found} found in the disk cache, {total - found} to compute"
        lines.append(f"preparations (inversions): {total} ({each}); {found}; up to {nfe} NFE if all are computed")
    in_memory = [cost for cost in costs if not cost[0].spec.cached]
    if in_memory:
        total, nfe, each = _summary(in_memory)
        lines.append(f"preparations kept in memory only (every run computes them): {total} ({each}); {nfe} NFE")
    if costs:
        lines.append(f"estimated NFE in all: up to {edit_nfe + sum(nfe for _, _, nfe in costs)} "
                     "(the edits and every preparation computed)")  # fmt: skip
    lines += one_seed_notes(config) + unknown_family_notes(config)
    lines += [f"warning: {w}" for w in collapsed_settings(config) + ignored_references(config, refs)]
    return "\n".join(lines) + "\n"


def _summary(costs: list[tuple[PreparationPlan, int, int]]) -> tuple[int, int, str]:
    """(how many, their NFE, ``method: how many, ...``) of (preparation, count, NFE) triples."""
    per_method: dict[str, int] = defaultdict(int)
    for p, count, _ in costs:
        per_method[p.method] += count
    each = ", ".join(f"{method}: {count}" for method, count in per_method.items())
    return sum(count for _, count, _ in costs), sum(nfe for _, _, nfe in costs), each


def unknown_family_notes(config: RunConfig) -> list[str]:
    """A line per hub backbone whose family is not known before it is downloaded (configs not in the hub
    cache, not an official id: ``bench.diffusion.families.OFFICIAL_HUB_IDS``), saying what was assumed."""
    return [f"note: backbone {label}: its configs are not in the hub cache and it is not an official id editbench "
            "knows, so its family is a guess: this estimate assumes SD 1.x (2 NFE per guided step; a FLUX.2 "
            "checkpoint would count as [klein]) and the settings take each method's generic defaults, not a "
            "family's own (e.g. flowedit's FLUX.1 guidance); download its configs first for exact figures"
            for label, spec in config.backbones.items()
            if known_family(spec) is None and not Path(spec.name).expanduser().exists()]  # fmt: skip


def one_seed_notes(config: RunConfig) -> list[str]:
    """A line per method with settings deterministic given the sample, when the config has several
    seeds: those settings run the first seed only (their cells and NFE above count it once)."""
    if len(config.seeds) < 2:
        return []
    notes = []
    for method, settings in config.settings.items():
        cls = get_method(method)
        fixed = [s for s in settings if not cls.is_stochastic(s)]
        if fixed:
            which = "its settings" if len(fixed) == len(settings) else f"{len(fixed)} of its {len(settings)} settings"
            notes.append(f"note: {method} is deterministic given the sample ({which}): one seed per sample "
                         f"(seed {config.seeds[0]}), not {len(config.seeds)}; more seeds would repeat its images")
    return notes


def config_cell_keys(config: RunConfig, refs: list[SampleRef]) -> list[str]:
    """The key of every cell the config asks for, chained turns included (one seed per sample for
    deterministic settings)."""
    edits = [(ref, False) for ref in refs] + [(ref, True) for ref in chained_turns(refs, config.dataset.turns)]
    return [
        cell_key(method, setting, ref.id, seed, chained)
        for method, settings in config.settings.items()
        for setting in settings
        for ref, chained in edits
        for seed in get_method(method).seeds_to_run(setting, config.seeds)
    ]


def missing_work(run_dir: Path, config: RunConfig, retry_failed: bool = False) -> tuple[int, int]:
    """(cells of the config, how many of them, per-image metric values of ok cells and set-metric
    rows the run folder's store lacks; ``retry_failed``: failed cells count as lacking)."""
    refs = dataset_refs(config)
    store = Store(Path(run_dir))
    try:
        done = store.finished_keys(except_failed=retry_failed)
        set_rows = set(store.db.execute("SELECT method, setting, name FROM set_metrics"))
        stored = store.stored_metrics()
        cells = store.cells_frame()
    finally:
        store.close()
    keys = config_cell_keys(config, refs)
    set_names = [m for m in config.metrics if issubclass(get_metric(m), SetMetric)]
    image_names = [m for m in config.metrics if m not in set_names]
    ok = cells[cells["status"] == "ok"]
    missing_values = sum((key, name) not in stored for key in ok["key"] for name in image_names)
    scored = ok[["method", "setting"]].drop_duplicates().itertuples(index=False)
    missing_sets = sum((method, setting, name) not in set_rows for method, setting in scored for name in set_names)
    return len(keys), sum(k not in done for k in keys) + missing_values + missing_sets
