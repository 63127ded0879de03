"""Methods from outside the repository: the ``editbench.methods`` entry-point group and the
config's ``include:`` list (``--include`` on the command line).

An entry point is named after its method; its object is a ``Method`` subclass (registered on
load) or a module whose import registers one. An include is a module name (``my_pkg.my_method``)
or a path to a ``.py`` file; importing it runs its ``@register``. Either way the method is then
validated, listed, cached and reported like a built-in one. A name that a built-in method
already has is an error (``bench.registry.register``).
"""

import hashlib
import importlib
import importlib.util
import inspect
import sys
from importlib.metadata import entry_points
from pathlib import Path

from .errors import ConfigError

ENTRY_POINT_GROUP = "editbench.methods"


def method_entry_points() -> dict:
    """Entry points of the ``editbench.methods`` group, by name; one named like a built-in is an error."""
    from .registry import builtin_names

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
    from .method import Method
    from .registry import register

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
