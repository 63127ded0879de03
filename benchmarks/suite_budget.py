"""The GPU suite's time budget and its stages (``benchmarks/gpu_suite.py``): stages run in order, each
only if the budget left covers what it needs, each stopped (SIGALRM) when the budget runs out; a
stage's failure is recorded and the next one runs. Also the suite's figures: goals and medians."""

import signal
import statistics
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable


class OutOfBudget(Exception):
    """The suite's time budget ran out while a stage was running."""


class Skip(Exception):
    """A stage that cannot run here, with the reason (e.g. the FLUX family is absent)."""


class Budget:
    """Seconds left of ``seconds`` from creation, keeping ``reserve`` for the summary."""

    def __init__(self, seconds: float, reserve: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.total, self.reserve, self.clock = seconds, reserve, clock
        self.start = clock()

    def left(self) -> float:
        return self.total - self.reserve - (self.clock() - self.start)

    def allows(self, seconds: float) -> bool:
        return self.left() >= seconds


@dataclass
class Stage:
    """One step of the suite: ``run(suite)`` returns its figures (a dict); ``need_s``: the seconds it needs
    at least (estimated, by mode: ``full`` on a GPU, ``quick`` with the tiny backbones)."""

    name: str
    run: Callable
    need_s: dict = field(default_factory=lambda: {"full": 60, "quick": 5})


def _on_alarm(signum, frame):
    raise OutOfBudget


def run_stages(stages: list[Stage], suite, budget: Budget, mode: str, record: Callable[[dict], None]) -> list[dict]:
    """Run ``stages`` in order within ``budget``; one entry per stage, given to ``record`` as it ends:
    ``status`` ok, error (with the cause), skipped (with the reason) or cut off (the budget ran out)."""
    entries = []
    for stage in stages:
        entry = dict(stage=stage.name, status="ok", seconds=0.0, figures={}, note="")
        need = stage.need_s[mode]
        started = time.monotonic()
        if not budget.allows(need):
            entry.update(status="skipped", note=f"needs about {need:.0f} s, {max(budget.left(), 0):.0f} s left")
        else:
            signal.signal(signal.SIGALRM, _on_alarm)
            signal.setitimer(signal.ITIMER_REAL, max(budget.left(), 0.01))
            try:
                entry["figures"] = stage.run(suite) or {}
            except Skip as reason:
                entry.update(status="skipped", note=str(reason))
            except OutOfBudget:
                entry.update(status="cut off", note="the time budget ran out", figures=getattr(suite, "partial", {}))
            except Exception as exc:  # a stage's failure is a finding; the next stage still runs
                entry.update(status="error", note=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc())
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                suite.partial = {}
        entry["seconds"] = round(time.monotonic() - started, 1)
        entries.append(entry)
        record(entry)
    return entries


# -- goals ----------------------------------------------------------------------------------------------
def goal(name: str, value: float | None, limit: float, at_most: bool = True, unit: str = "") -> dict:
    """A goal's line: ``value`` against ``limit`` (at most, or at least), ``met`` None when unmeasured."""
    met = None if value is None else (value <= limit if at_most else value >= limit)
    return dict(goal=name, value=value, limit=limit, at_most=at_most, unit=unit, met=met)


def median_row(values: list[float]) -> dict:
    """min / median / max of repeated measurements (the median is the figure)."""
    return dict(n=len(values), min=min(values), median=statistics.median(values), max=max(values))
