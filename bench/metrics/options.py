"""The ``metric_options`` block of a config: its keys are declared by the metrics that read them.

An ``Option`` is one key: its name, the type it holds, its default, a one-line doc and, where
values are checked, ``check(value, where) -> value`` (raises ``ConfigError``; may convert, e.g. a
mapping into ``JudgeOptions``); ``path``: ``LOCAL`` or ``LOCAL_OR_HUB`` (``bench.params``) for a
key naming a file, folder or model, which a run stores absolute. A metric lists the options it reads in its ``options``
(``bench.metrics.base.Metric``), declared as constants of its own module; the options every
metric shares (``GLOBAL_OPTIONS``) are declared here. ``bench.metrics`` collects the
declarations of every registered metric (``collect``) and builds the ``MetricOptions``
dataclass from them (``options_class``): one field per option, in name order, the config
block's keys.
"""

import dataclasses
import json
from collections.abc import Callable, Iterable
from typing import Any

from bench.errors import ConfigError, unknown


@dataclasses.dataclass(frozen=True)
class Option:
    """One ``metric_options`` key (see the module doc)."""

    name: str
    type: Any
    default: Any
    doc: str
    check: Callable[[Any, str], Any] | None = None
    path: str = ""

    def checked(self, value: Any) -> Any:
        """``value`` as the config gives it, checked (and converted) by ``check``."""
        return self.check(value, f"metric_options.{self.name}") if self.check else value

    def type_name(self) -> str:
        return getattr(self.type, "__name__", str(self.type))

    def default_text(self) -> str:
        """The default as a config may write it (JSON, which YAML reads; a dataclass as its mapping)."""
        default = dataclasses.asdict(self.default) if dataclasses.is_dataclass(self.default) else self.default
        return json.dumps(default)

    def summary(self) -> str:
        """``name = default``; a mapping-valued option by its name alone (its keys are long)."""
        return self.name if dataclasses.is_dataclass(self.default) else f"{self.name} = {self.default_text()}"


def one_of(choices: Iterable[str], what: str) -> Callable[[Any, str], Any]:
    """A ``check`` accepting only ``choices`` (``what`` names them in the error)."""
    choices = tuple(choices)

    def check(value, where):
        if value not in choices:
            raise ConfigError(f"{where}: {unknown(what, value, choices)}")
        return value

    return check


def true_or_false(value, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} = {value!r}; expected true or false")
    return value


def positive_int(value, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{where} = {value!r}; expected a positive integer")
    return value


UNTRAINED_EXTRACTORS = Option("untrained_extractors", bool, False, "networks without local weights get seeded "
                              "random weights (smoke numbers, labelled); --untrained-extractors sets it", true_or_false)
SEED = Option("seed", int, 0, "seed of untrained networks' weights and of KID's subsets")
BATCH_SIZE = Option("batch_size", int, 16, "images per metric call, in a run and in editbench score", positive_int)
GLOBAL_OPTIONS = (UNTRAINED_EXTRACTORS, SEED, BATCH_SIZE)


def collect(declared: Iterable[Option]) -> dict[str, Option]:
    """The options by name, in name order; one name declared twice must be one declaration."""
    found: dict[str, Option] = {}
    for option in declared:
        if found.setdefault(option.name, option) is not option:
            raise TypeError(f"metric option {option.name!r} is declared twice ({found[option.name]} and {option}); "
                            "declare it once and list that constant in each metric that reads it")  # fmt: skip
    return dict(sorted(found.items()))


def options_class(options: dict[str, Option]) -> type:
    """A frozen dataclass with one field per option (its default), checked on construction."""

    def __post_init__(self):
        for option in options.values():
            object.__setattr__(self, option.name, option.checked(getattr(self, option.name)))

    fields = [(o.name, o.type, dataclasses.field(default=o.default)) for o in options.values()]
    doc = "The ``metric_options`` block of a config; its fields are the declared options (``bench.metrics.OPTIONS``)."
    cls = dataclasses.make_dataclass("MetricOptions", fields, frozen=True,
                                     namespace={"__post_init__": __post_init__, "__doc__": doc})  # fmt: skip
    cls.__module__ = "bench.metrics"  # where it is kept, so that it pickles (Ray workers get the config)
    return cls
