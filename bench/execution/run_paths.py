"""The files a run reads are fixed when it starts: every relative path its config names is made
absolute, and a resume refuses a stored path that would now read other files.

What is a path is declared where it is read: a method parameter or a ``metric_options`` key with
``path=LOCAL`` (always a file or folder: ``external``'s ``folder``, ``dreamsim_dir``) or
``path=LOCAL_OR_HUB`` (a local folder when one exists, else a hub id: a model name, ``external``'s
``hub``); the backbone's ``name`` is LOCAL_OR_HUB. A value the config file gives starts from the
config file's folder; one ``--set`` gives, from the working folder (``dataset.path`` has the same
rule, in ``bench.execution.config``). The run's manifest stores the absolute path, so a resume, a
report or a Ray worker reads the same files from any folder.
"""

from pathlib import Path

from bench.diffusion.tiny import TINY_BACKBONES
from bench.errors import ConfigError
from bench.metrics import OPTIONS, get_metric
from bench.params import LOCAL, LOCAL_OR_HUB
from bench.registry import get_method


def absolute(value, kind: str, base: Path):
    """``value`` made absolute against ``base`` when it names a local path (``kind``); else as given."""
    if not isinstance(value, str) or not value or not kind:
        return value
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    candidate = (base / path).resolve()
    if kind == LOCAL or candidate.exists():
        return str(candidate)
    return value  # LOCAL_OR_HUB naming no local folder: a hub id


def _each(value, fix):
    """``fix`` applied to a value, or to each value of a swept list."""
    return [fix(v) for v in value] if isinstance(value, list) else fix(value)


def method_path_params(method: str) -> dict[str, str]:
    """The method's parameters that name paths, with their kind."""
    return {p.name: p.path for p in get_method(method).params if p.path}


def fix_paths(raw: dict, base: Path) -> None:
    """Make every relative path of a raw config dict absolute against ``base`` (in place): method
    parameters (plain, swept or zipped), the backbone's folder, and ``metric_options`` keys.
    Unknown methods and keys are left for the config's validation to name."""
    methods = raw.get("methods")
    for method, block in (methods.items() if isinstance(methods, dict) else ()):
        if not isinstance(block, dict):  # build_config names what is wrong with it
            continue
        try:
            kinds = method_path_params(method)
        except ConfigError:  # an unknown method: build_config names it
            continue
        for holder in (block, block.get("zip")):
            if isinstance(holder, dict):
                for name, kind in kinds.items():
                    if name in holder:
                        holder[name] = _each(holder[name], lambda v, kind=kind: absolute(v, kind, base))
    backbone = raw.get("backbone")
    if isinstance(backbone, dict) and "name" in backbone and backbone["name"] not in TINY_BACKBONES:
        backbone["name"] = absolute(backbone["name"], LOCAL_OR_HUB, base)
    options = raw.get("metric_options")
    if isinstance(options, dict):
        for name, value in options.items():
            option = OPTIONS.get(name)
            if option is not None and option.path:
                options[name] = absolute(value, option.path, base)


def fix_default_paths(raw: dict, base: Path) -> None:
    """Give ``metric_options`` keys of kind LOCAL that the config leaves out their default made absolute
    against ``base`` (the working folder): ``dreamsim_dir = ./models`` is the folder the run started in."""
    if raw.get("metric_options") is None:
        raw["metric_options"] = {}
    options = raw["metric_options"]
    if not isinstance(options, dict):
        return
    for name, option in OPTIONS.items():
        if option.path == LOCAL and name not in options and isinstance(option.default, str):
            options[name] = absolute(option.default, LOCAL, base)


def unfixed_paths(resolved: dict, here: Path) -> list[str]:
    """The paths of a run's stored config that a resume from ``here`` could read differently: each
    relative one (a run started before paths were stored absolute) that names a file, as
    ``key = value (here: absolute path)``; a LOCAL_OR_HUB value counts only when it names a local
    folder here (else it is a hub id). Metric options count only where a metric of the run reads them."""
    found = []

    def check(key: str, value, kind: str) -> None:
        if isinstance(value, str) and value and kind and not Path(value).expanduser().is_absolute():
            candidate = (here / Path(value).expanduser()).resolve()
            if kind == LOCAL or candidate.exists():
                found.append(f"{key} = {value!r} (from here: {candidate})")

    for method, settings in (resolved.get("methods") or {}).items():
        kinds = method_path_params(method)
        for setting in settings or []:
            for name, kind in kinds.items():
                check(f"{method}.{name}", setting.get(name), kind)
    name = (resolved.get("backbone") or {}).get("name")
    if name not in TINY_BACKBONES:
        check("backbone.name", name, LOCAL_OR_HUB)
    read = {o.name for m in resolved.get("metrics") or [] for o in get_metric(m).options}
    for key, value in (resolved.get("metric_options") or {}).items():
        option = OPTIONS.get(key)
        if option is not None and key in read:
            check(f"metric_options.{key}", value, option.path)
    return list(dict.fromkeys(found))
