"""Sweep configs: YAML (backbone, dataset, methods with parameter grids, seeds, metrics, output).

In a method block, a list gives the values to sweep (the cartesian product over parameters);
a ``zip`` block holds lists of equal length that are paired instead of crossed::

    methods:
      sdedit:
        t0: [0.3, 0.5, 0.7]     # 3 settings ...
        zip: {w: [3, 7.5], steps: [20, 50]}   # ... times 2 paired = 6
Command-line overrides ``--set KEY=VALUE[,VALUE...]``: ``sdedit.t0=0.3,0.5``,
``dataset.limit=2``, ``seeds=0,1``. Everything is validated before any work starts.
``include:`` lists modules or ``.py`` files defining methods from outside the repository
(``bench.registry``); they are imported first, and stored resolved so ``--resume`` finds them.
A relative ``dataset.path`` starts from the config file's folder too (from the working folder
when ``--set`` gives it) and is stored absolute, so a run resumes and reports from any folder; so
does every other path the run reads (``bench.execution.run_paths``: method parameters such as
``external.folder``, a backbone folder, ``metric_options`` folders).
"""

import copy
import itertools
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from bench.data import DatasetSpec
from bench.diffusion.backbone import BackboneSpec, known_family
from bench.diffusion.families import check_method_family
from bench.errors import ConfigError, unknown
from bench.execution.run_paths import fix_default_paths, fix_paths, unfixed_paths
from bench.metrics import MetricOptions, get_metric
from bench.registry import get_method, include, method_names, resolve_include
from bench.store import setting_json
from bench.yaml_file import read_yaml

TOP_KEYS = ("backbone", "dataset", "methods", "seeds", "metrics", "metric_options", "output", "batch_size", "executor",
            "include")
#: ``batch_size`` 1 suits CPUs; on a CUDA GPU 8 fills an SD 1.5 UNet at 512 px (docs/scale-out.md, "Batched execution").
DEFAULTS = {"seeds": [0], "metrics": ["psnr", "ssim"], "output": "reports/runs", "batch_size": 1}


EXECUTORS = ("local", "ray")


@dataclass
class ExecutorSpec:
    """Where the run's work units run: ``local`` (this process) or ``ray`` (``workers`` actors,
    default one per GPU or 1 on CPU; ``address``: none starts a local Ray, ``auto`` or
    ``ray://host:port`` joins a cluster)."""

    name: str = "local"
    workers: int | None = None
    address: str | None = None

    def __post_init__(self):
        if self.name not in EXECUTORS:
            raise ConfigError(f"executor: {unknown('executor', self.name, EXECUTORS)}")
        if self.workers is not None and (not isinstance(self.workers, int) or isinstance(self.workers, bool) or self.workers < 1):
            raise ConfigError(f"executor: workers = {self.workers!r}; expected a positive integer")


@dataclass
class RunConfig:
    """A validated config: the specs, each method's expanded settings, and the resolved dict."""

    backbone: BackboneSpec
    dataset: DatasetSpec
    settings: dict[str, list[dict[str, Any]]]
    seeds: list[int]
    metrics: list[str]
    output: str
    resolved: dict
    metric_options: MetricOptions = field(default_factory=MetricOptions)
    batch_size: int = 1
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)
    #: ``dataset.path`` as the config or ``--set`` gave it (``dataset.path`` itself is absolute).
    dataset_path_given: str | None = None
    #: Each method's backbone spec (``methods.<name>.backbone``; default ``backbone``).
    method_backbones: dict[str, BackboneSpec] = field(default_factory=dict)

    @property
    def n_settings(self) -> int:
        return sum(len(v) for v in self.settings.values())

    def backbone_of(self, method: str) -> BackboneSpec:
        """The spec of the backbone ``method`` runs on."""
        return self.method_backbones.get(method, self.backbone)

    @property
    def backbones(self) -> dict[str, BackboneSpec]:
        """Every backbone of the run by its label, in the order methods name them (the default first
        when a method runs on it). A label is the model's name, plus the fields that tell two specs
        of one model apart (e.g. ``tiny (dtype=fp16)``): the store's ``backbone`` column."""
        specs = list(dict.fromkeys(self.backbone_of(m) for m in self.settings)) or [self.backbone]
        names = [spec.name for spec in specs]
        return {_label(spec, names.count(spec.name) > 1): spec for spec in specs}

    def backbone_label(self, method: str) -> str:
        """The label of the backbone ``method`` runs on."""
        spec = self.backbone_of(method)
        return next(label for label, known in self.backbones.items() if known == spec)


#: Fields a method's ``backbone`` does not inherit from the run's default when it names another model.
MODEL_FIELDS = ("revision", "resolution", "scheduler", "text_encoder_3", "true_cfg_scale")


def _label(spec: BackboneSpec, shared_name: bool) -> str:
    if not shared_name:
        return spec.name
    differing = {k: v for k, v in asdict(spec).items() if k != "name" and v != getattr(BackboneSpec, k)}
    return f"{spec.name} ({', '.join(f'{k}={v}' for k, v in sorted(differing.items()))})"


def method_backbone(default: BackboneSpec, value, method: str) -> BackboneSpec:
    """A method's own backbone (``methods.<name>.backbone``: a name, or a mapping of backbone
    fields) over the run's default: device, dtype and offloading are inherited; the model's own
    fields (``MODEL_FIELDS``) only when the name is the default's."""
    block = {"name": value} if isinstance(value, str) else value
    if not isinstance(block, dict) or not block.get("name", default.name):
        raise ConfigError(f"method {method!r}: backbone = {value!r}; expected a name or a mapping with 'name'")
    base = asdict(default)
    if block.get("name", default.name) != default.name:
        base = {k: v for k, v in base.items() if k not in MODEL_FIELDS}
    return _spec(BackboneSpec, {**base, **block}, f"method {method!r}: backbone")


def _spec(cls, block, where: str):
    if block is None:
        block = {}
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: expected a mapping, got {block!r}")
    names = [f.name for f in fields(cls)]
    for key in block:
        if key not in names:
            raise ConfigError(f"{where}: {unknown('key', key, names)}")
    if "edit_types" in block and block["edit_types"] is not None:
        block = {**block, "edit_types": tuple(_as_list(block["edit_types"]))}
    return cls(**block)


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def expand_grid(method: str, block: dict | None, family: str | None = None) -> list[dict[str, Any]]:
    """Validated parameter settings of one method block (cartesian product x zip); defaults are
    ``family``'s where a parameter has its own (None: the family is not known)."""
    cls = get_method(method)
    if block is not None and not isinstance(block, dict):
        raise ConfigError(f"method {method!r}: expected a mapping of parameters, got {block!r}, e.g. {method}: {{}}")
    block = dict(block or {})
    zipped = block.pop("zip", None) or {}
    if not isinstance(zipped, dict):
        raise ConfigError(f"method {method!r}: 'zip' must map parameter names to lists of equal length")
    empty = [k for k, v in [*block.items(), *zipped.items()] if isinstance(v, (list, tuple)) and not v]
    if empty:
        raise ConfigError(f"method {method!r}: parameter {empty[0]!r} has an empty list; give at least one value")
    lengths = {k: len(_as_list(v)) for k, v in zipped.items()}
    if len(set(lengths.values())) > 1:
        raise ConfigError(f"method {method!r}: lists under 'zip' differ in length: {lengths}")
    overlap = set(zipped) & set(block)
    if overlap:
        raise ConfigError(f"method {method!r}: {sorted(overlap)} appear both under 'zip' and outside it")
    zip_rows = [dict(zip(zipped, row)) for row in zip(*(_as_list(v) for v in zipped.values()))] or [{}]
    crossed = [dict(zip(block, row)) for row in itertools.product(*(_as_list(v) for v in block.values()))]
    settings, seen = [], set()
    for a in crossed:
        for b in zip_rows:
            setting = cls.resolve({**a, **b}, family)
            if setting_json(setting) not in seen:
                seen.add(setting_json(setting))
                settings.append(setting)
    return settings


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one ``--set KEY=VALUE[,VALUE...]`` to the raw config dict; a relative path it gives
    starts from the working folder (``bench.execution.run_paths``)."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. sdedit.t0=0.3,0.5")
    try:
        values = [yaml.safe_load(v) for v in text.split(",")] if text else [None]
    except yaml.YAMLError as exc:
        problem = str(exc).splitlines()[0]
        raise ConfigError(f"--set {assignment!r}: the value is not valid YAML ({problem}); e.g. sdedit.t0=0.3,0.5") from exc
    value = values[0] if len(values) == 1 else values
    path = key.split(".")
    if path[0] not in TOP_KEYS:
        if path[0] not in method_names():
            raise ConfigError(f"--set {key}: {unknown('key', path[0], list(TOP_KEYS) + method_names())}")
        path = ["methods"] + path
    _check_method_present(raw, path, key)
    node = raw
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if node is None or not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a mapping")
    node[path[-1]] = _given_path(path, value)


def _given_path(path: list[str], value):
    """``value`` of ``--set`` made absolute against the working folder where ``path`` names a path."""
    probe = node = {}
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    fix_paths(probe, Path.cwd())
    return node[path[-1]]


def _check_method_present(raw: dict, path: list[str], key: str) -> None:
    """``--set M.P=V`` changes a method the config runs; it never adds one silently (with its
    defaults, a whole sweep). Adding a method is explicit: ``--set M={}`` (then ``--set M.P=V``)."""
    if path[0] != "methods" or len(path) < 3:
        return
    present = list(raw.get("methods") or {})
    if path[1] not in present:
        raise ConfigError(
            f"--set {key}: method {path[1]!r} is not in the config (its methods: {', '.join(present) or 'none'}); "
            f"to add it, put --set {path[1]}={{}} before this override"
        )


def load_includes(raw: dict, includes: list[str], base: Path) -> list[str]:
    """Import the config's ``include:`` items (relative paths against ``base``) and ``includes``
    (relative to the working folder); the resolved list, for the run's manifest."""
    items = [resolve_include(item, base) for item in _as_list(raw.get("include") or [])]
    items += [resolve_include(item, Path.cwd()) for item in includes]
    for item in items:
        include(item)
    return list(dict.fromkeys(items))


def build_config(
    raw: dict, overrides: list[str] = (), backbone: str | None = None, includes: list[str] = (), base: Path = Path(".")
) -> RunConfig:
    """Validate a raw config dict (after includes and overrides); raise ``ConfigError`` on the first problem.
    ``includes``: extra include items (``--include``); ``base``: the folder relative ``include:`` paths start from."""
    raw = copy.deepcopy(raw or {})
    raw["include"] = load_includes(raw, list(includes), base)  # before overrides: --set may name an included method
    file_dataset_path = _dataset_path(raw)
    fix_paths(raw, base)  # the file's paths start from its folder; an override's from the working folder
    for assignment in overrides:
        apply_override(raw, assignment)
    fix_default_paths(raw, Path.cwd())
    dataset_path_given = _resolve_dataset_path(raw, base if _dataset_path(raw) == file_dataset_path else Path.cwd())
    if backbone is not None:
        raw.setdefault("backbone", {})
        raw["backbone"] = {**(raw["backbone"] or {}), "name": backbone}
        fix_paths({"backbone": raw["backbone"]}, Path.cwd())
    for key in raw:
        if key not in TOP_KEYS:
            raise ConfigError(f"config: {unknown('key', key, TOP_KEYS)}")
    for key, value in DEFAULTS.items():
        raw.setdefault(key, copy.deepcopy(value))
    methods = raw.get("methods") or {}
    if not isinstance(methods, dict):
        raise ConfigError(
            f"config: 'methods' must be a mapping of method names to their parameters, got {methods!r}, "
            "e.g. methods: {sdedit: {t0: 0.5}}"
        )
    if not methods:
        raise ConfigError("config: 'methods' must name at least one method, e.g. methods: {sdedit: {t0: 0.5}}")
    backbone_spec = _spec(BackboneSpec, raw.get("backbone"), "backbone")
    method_backbones = {}
    for name, block in methods.items():
        if isinstance(block, dict) and "backbone" in block:
            methods[name] = {k: v for k, v in block.items() if k != "backbone"}
            method_backbones[name] = method_backbone(backbone_spec, block["backbone"], name)
    families = {name: known_family(method_backbones.get(name, backbone_spec)) for name in methods}
    settings = {name: expand_grid(name, block, families[name]) for name, block in methods.items()}
    seeds = _as_list(raw["seeds"])
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ConfigError(f"config: seeds = {raw['seeds']!r}; expected non-negative integers")
    metrics = _as_list(raw["metrics"])
    for m in metrics:
        get_metric(m)
    batch_size = raw["batch_size"]
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"config: batch_size = {batch_size!r}; expected a positive integer (cells per UNet batch)")
    for name, family in families.items():  # a hub id's family is known once loaded: the worker checks it then
        if family is not None:
            check_method_family(get_method(name), family)
    dataset_spec = _spec(DatasetSpec, raw.get("dataset"), "dataset")
    metric_options = _spec(MetricOptions, raw.get("metric_options"), "metric_options")  # fields: declared options
    executor = _spec(ExecutorSpec, raw.get("executor"), "executor")
    resolved = {
        "backbone": asdict(backbone_spec),
        "dataset": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(dataset_spec).items()},
        "methods": settings,
        "seeds": seeds,
        "metrics": metrics,
        "metric_options": asdict(metric_options),
        "output": str(raw["output"]),
        "batch_size": batch_size,
        "executor": asdict(executor),
        "include": raw["include"],
    }
    if method_backbones:
        resolved["method_backbones"] = {name: asdict(spec) for name, spec in method_backbones.items()}
    return RunConfig(
        backbone_spec, dataset_spec, settings, seeds, metrics, str(raw["output"]), copy.deepcopy(resolved),
        metric_options, batch_size, executor, dataset_path_given, method_backbones,
    )  # fmt: skip


def _dataset_path(raw: dict):
    dataset = raw.get("dataset")
    return dataset.get("path") if isinstance(dataset, dict) else None


def _resolve_dataset_path(raw: dict, base: Path) -> str | None:
    """Make a relative ``dataset.path`` absolute against ``base`` (the config file's folder, or the
    working folder for a ``--set``), so the run resumes and reports from any folder; the path as given."""
    given = _dataset_path(raw)
    if not isinstance(given, str) or not given:
        return None
    path = Path(given).expanduser()
    raw["dataset"]["path"] = str(path if path.is_absolute() else (base / path).resolve())
    return given


def load_config(
    path: str | Path, overrides: list[str] = (), backbone: str | None = None, includes: list[str] = ()
) -> RunConfig:
    path = Path(path)
    raw = read_yaml(path, "config")
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"config {path}: expected a mapping at the top level")
    return build_config(raw or {}, overrides, backbone, includes, path.parent)


def config_from_resolved(resolved: dict) -> RunConfig:
    """Rebuild a RunConfig from a run manifest's resolved config (used by ``--resume``, ``score`` and
    Ray workers); refuse one whose stored relative paths would read other files from here."""
    unfixed = unfixed_paths(resolved, Path.cwd())
    if unfixed:
        raise ConfigError(
            f"the run's config stores relative paths, read from the folder the run started in (not recorded): "
            f"{'; '.join(unfixed)}. From here they may name other files than its first cells read, and its results "
            "would mix them; start a new run (a run now stores every path absolute)"
        )
    raw = copy.deepcopy(resolved)
    own = raw.pop("method_backbones", {})
    raw["methods"] = {name: {"zip": _columns(ss)} if ss else {} for name, ss in resolved["methods"].items()}
    for name, spec in own.items():
        raw["methods"][name]["backbone"] = spec
    return build_config(raw)


def _columns(settings: list[dict]) -> dict:
    return {k: [s[k] for s in settings] for k in settings[0]}
