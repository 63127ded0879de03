"""The method registry: built-in methods, entry points and includes, looked up lazily by name.

A built-in method is ``@register`` in ``methods/<name>.py``; looking one up imports only its
module, listing imports all. Methods from outside the repository join the same registry under
names no built-in method has:

- an **entry point** of the ``editbench.methods`` group, named after its method; its object is
  a ``Method`` subclass (registered on load) or a module whose import registers one;
- an **include** (the config's ``include:`` list, ``--include`` on the command line): a module
  name (``my_pkg.my_method``) or a path to a ``.py`` file; importing it runs its ``@register``.

Either way the method is then validated, listed, cached and reported like a built-in one. The
``methods`` package is found by name (``importlib``), like an entry point: the registry sits
below the methods in the layers, and a method module imports it, never the other way round.
"""

import hashlib
import importlib
import importlib.util
import inspect
import pkgutil
import sys
from importlib.metadata import entry_points
from pathlib import Path

from bench.errors import ConfigError, unknown
from bench.method import SAMPLE_FIELDS, Method

BUILTIN_PACKAGE = "methods"
ENTRY_POINT_GROUP = "editbench.methods"
#: Preparation hooks of the interface before ``Method.preparation``; a method defining one is refused,
#: since it would silently go unused.
RETIRED_HOOKS = ("prep_params", "prep_key", "cached_preparation")
_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator registering a method adapter under ``cls.name``."""
    if cls.name in builtin_names() and cls.__module__ != f"{BUILTIN_PACKAGE}.{cls.name}":
        raise ConfigError(
            f"method {cls.name!r} from {cls.__module__} clashes with the built-in method of that name; rename it"
        )
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ConfigError(
            f"method {cls.name!r} registered twice ({_REGISTRY[cls.name].__module__} and {cls.__module__})"
        )
    bad = set(cls.needs) - set(SAMPLE_FIELDS)
    if bad:
        raise ValueError(f"method {cls.name!r} needs unknown sample fields {sorted(bad)}")
    retired = [hook for hook in RETIRED_HOOKS if hasattr(cls, hook)]
    retired += ["prepare"] if cls.prepare is not Method.prepare else []
    if retired:
        raise ConfigError(
            f"method {cls.name!r} defines {', '.join(retired)}: a method declares its preparation with the one hook "
            "preparation(setting) -> PreparationSpec, whose spec computes it (bench.method)"
        )
    _REGISTRY[cls.name] = cls
    return cls


def builtin_names() -> list[str]:
    """Names of every method module in ``methods/`` (without importing them)."""
    package = importlib.util.find_spec(BUILTIN_PACKAGE)
    return sorted(m.name for m in pkgutil.iter_modules(package.submodule_search_locations) if not m.name.startswith("_"))


def method_names() -> list[str]:
    """Built-in methods, entry-point methods and methods registered by includes."""
    return sorted({*builtin_names(), *method_entry_points(), *_REGISTRY})


def get_method(name: str) -> type[Method]:
    """The method class registered as ``name``; a clear error with a suggestion otherwise."""
    if name not in _REGISTRY:
        if name in builtin_names():
            importlib.import_module(f"{BUILTIN_PACKAGE}.{name}")
            where = f"module methods/{name}.py"
        elif name in (found := method_entry_points()):
            load_entry_point(found[name])
            where = f"entry point {name!r} ({found[name].value})"
        else:
            raise ConfigError(unknown("method", name, method_names()))
        if name not in _REGISTRY:
            raise ConfigError(f"{where} does not register a method named {name!r}")
    return _REGISTRY[name]


def all_methods() -> list[type[Method]]:
    """Every method class: built-in, entry points and includes."""
    return [get_method(n) for n in method_names()]


# -- methods from outside the repository --------------------------------------------------------
def method_entry_points() -> dict:
    """Entry points of the ``editbench.methods`` group, by name; one named like a built-in is an error."""
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    clashes = sorted(set(found) & set(builtin_names()))
    if clashes:
        ep = found[clashes[0]]
        raise ConfigError(
            f"entry point {ep.name!r} ({ep.value}) in group {ENTRY_POINT_GROUP!r} clashes with the built-in "
            "method of that name; rename it"
        )
    return found


def load_entry_point(ep) -> None:
    """Import an entry point; a ``Method`` subclass it names is registered."""
    try:
        obj = ep.load()
    except Exception as exc:
        raise ConfigError(f"entry point {ep.name!r} ({ep.value}) in group {ENTRY_POINT_GROUP!r} failed to load: {exc}") from exc
    if inspect.isclass(obj) and issubclass(obj, Method):
        register(obj)


def is_file_include(item: str) -> bool:
    return item.endswith(".py") or "/" in item or "\\" in item


def resolve_include(item: str, base: Path) -> str:
    """A ``.py`` path made absolute against ``base``; a module name unchanged."""
    if not isinstance(item, str) or not item.strip():
        raise ConfigError(f"include: {item!r} is not a module name or a .py path")
    return str((base / item).resolve()) if is_file_include(item) else item


def include(item: str) -> None:
    """Import one include (a module name, or an absolute ``.py`` path) so its methods register.
    A file is imported once per process, under a module name derived from its path."""
    if not is_file_include(item):
        try:
            importlib.import_module(item)
        except ImportError as exc:
            raise ConfigError(f"include: module {item!r} cannot be imported: {exc}") from exc
        return
    path = Path(item)
    if not path.exists():
        raise ConfigError(f"include: file not found: {item}")
    if not path.is_file() or path.suffix != ".py":
        raise ConfigError(f"include: {item} is not a .py file")
    name = f"editbench_include_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except ConfigError:
        del sys.modules[name]
        raise
    except Exception as exc:
        del sys.modules[name]
        raise ConfigError(f"include: {item} failed to import: {type(exc).__name__}: {exc}") from exc
