"""The method registry: ``@register`` in ``methods/<name>.py``, looked up lazily by name.

Looking up one method imports only its module (``methods.<name>``); listing imports all.
Methods from outside the repository (entry points, includes: ``bench.plugins``) join the same
registry under names no built-in method has.
"""

import importlib
import pkgutil

from .errors import ConfigError, unknown
from .method import SAMPLE_FIELDS, Method

_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator registering a method adapter under ``cls.name``."""
    if cls.name in builtin_names() and cls.__module__ != f"methods.{cls.name}":
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
    _REGISTRY[cls.name] = cls
    return cls


def builtin_names() -> list[str]:
    """Names of every method module in ``methods/`` (without importing them)."""
    import methods

    return sorted(m.name for m in pkgutil.iter_modules(methods.__path__) if not m.name.startswith("_"))


def method_names() -> list[str]:
    """Built-in methods, entry-point methods and methods registered by includes."""
    from .plugins import method_entry_points

    return sorted({*builtin_names(), *method_entry_points(), *_REGISTRY})


def get_method(name: str) -> type[Method]:
    """The method class registered as ``name``; a clear error with a suggestion otherwise."""
    if name not in _REGISTRY:
        from .plugins import load_entry_point, method_entry_points

        if name in builtin_names():
            importlib.import_module(f"methods.{name}")
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
    return [get_method(n) for n in method_names()]
