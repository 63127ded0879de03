"""Typed method parameters with defaults and allowed ranges, validated before any work."""

import math
from dataclasses import dataclass
from typing import Any

from bench.errors import ConfigError

#: ``Param.path`` (and ``Option.path``): the value is a local file or folder ...
LOCAL = "local"
#: ... or a local folder when one exists, else a hub id (``bench.execution.run_paths``).
LOCAL_OR_HUB = "local_or_hub"


@dataclass(frozen=True)
class Param:
    """One method parameter.

    ``low``/``high`` bound numbers (``low_open``/``high_open`` exclude the bound itself);
    ``choices`` restricts any type to a fixed set of values. ``step_fraction``: a fraction of
    ``steps`` that the method rounds down to whole steps (``int(steps * value)``), so that two
    values can run exactly the same steps (see ``Method.effective_setting``). ``path``: ``LOCAL``
    or ``LOCAL_OR_HUB`` for a parameter naming a file, folder or model, which a run stores
    absolute (relative values start from the config file's folder).
    """

    name: str
    type: type
    default: Any
    help: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    step_fraction: bool = False
    #: (family, default) pairs where a backbone family has its own published default (FLUX.1's
    #: FlowEdit configuration, say); ``default`` elsewhere.
    family_defaults: tuple[tuple[str, Any], ...] = ()

    def default_for(self, family: str | None) -> Any:
        """The default on backbone ``family`` (None: not known)."""
        return dict(self.family_defaults).get(family, self.default)
    path: str = ""

    def allowed(self) -> str:
        """Human-readable allowed values, e.g. ``float in (0, 1]``."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.low is None and self.high is None:
            return self.type.__name__
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        left = "(" if self.low_open or self.low is None else "["
        right = ")" if self.high_open or self.high is None else "]"
        return f"{self.type.__name__} in {left}{lo}, {hi}{right}"

    def validate(self, value: Any, where: str) -> Any:
        """Return ``value`` coerced to the parameter's type, or raise naming the parameter."""
        fail = ConfigError(f"{where}: parameter {self.name!r} = {value!r} is not allowed; expected {self.allowed()}")
        if self.type is bool:
            if not isinstance(value, bool):
                raise fail
        elif self.type is int:
            if isinstance(value, bool) or not isinstance(value, int):
                if not (isinstance(value, float) and value.is_integer()):
                    raise fail
            value = int(value)
        elif self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise fail
            value = float(value)
        elif not isinstance(value, self.type):
            raise fail
        if self.choices is not None and value not in self.choices:
            raise fail
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            raise fail
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            raise fail
        return value


def steps_param(default: int = 50) -> Param:
    """Sampler steps of the full schedule (DDIM on SD 1.x/2.x, flow-matching Euler on SD3)."""
    return Param("steps", int, default, "sampler steps of the full schedule (DDIM; Euler on SD3)", low=1, high=1000)


def guidance_param(default: float = 7.5) -> Param:
    """Classifier-free guidance weight ``w`` (0 unconditional, 1 conditional)."""
    return Param("w", float, default, "classifier-free guidance weight (0 unconditional, 1 conditional)", low=0, high=50)


def start_level_param(default: float = 0.5) -> Param:
    """SDEdit-style start level ``t0``: noise the source to ``t0 * T`` (1 = from pure noise)."""
    return Param("t0", float, default, "noise level to start from, fraction of T (1 = pure noise)", low=0, high=1,
                 low_open=True, step_fraction=True)  # fmt: skip


def whole_steps(steps: int, fraction: float) -> int:
    """The steps a fraction of ``steps`` amounts to: ``int(steps * fraction)``, at most ``steps``."""
    return min(int(steps * fraction), steps)


def check_skip(method: str, setting: dict) -> None:
    """A ``skip``/``steps`` setting (the noisiest ``skip`` steps not run) must run at least one step."""
    if setting["skip"] >= setting["steps"]:
        raise ConfigError(
            f"method {method!r}: skip = {setting['skip']} with steps = {setting['steps']} runs no step; "
            "need skip < steps"
        )


def check_start_level(method: str, setting: dict) -> None:
    """A ``t0``/``steps`` setting must run at least one step: ``int(steps * t0) >= 1``."""
    if whole_steps(setting["steps"], setting["t0"]) < 1:
        raise ConfigError(
            f"method {method!r}: t0 = {setting['t0']} with steps = {setting['steps']} runs no step; "
            "need int(steps * t0) >= 1"
        )
