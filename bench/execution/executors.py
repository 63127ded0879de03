"""Executors: where work units run. The driver (``bench.execution.runner``) hands every unit to an
executor and commits the ``CellOutcome``s it yields, in whatever order they finish.

``local`` runs units one after another in this process, on one ``CellWorker``; ``ray``
(``bench.execution.ray_executor``) runs them on Ray actors, one per GPU or CPU worker slot. Both give
``describe()`` (for the manifest), ``labels()`` and ``stats`` (cells and seconds per worker).
"""

import time
from collections.abc import Iterable, Iterator

from bench.execution.config import ExecutorSpec, RunConfig
from bench.execution.plan import WorkUnit
from bench.execution.worker import CellOutcome, CellWorker


class LocalExecutor:
    """Runs units in this process, in plan order."""

    name = "local"

    def __init__(self, worker: CellWorker):
        self.worker = worker
        self.stats = [{"worker": worker.name, "cells": 0, "seconds": 0.0}]

    def describe(self) -> dict:
        return {"name": self.name, "workers": [self.worker.name]}

    def labels(self) -> list[str]:
        return self.worker.labels()

    def run(self, units: Iterable[WorkUnit]) -> Iterator[CellOutcome]:
        stats = self.stats[0]
        for unit in units:
            outcomes = self.worker.run_unit(unit)
            while True:  # time the worker only, not the driver's commits between outcomes
                started = time.perf_counter()
                outcome = next(outcomes, None)
                stats["seconds"] += time.perf_counter() - started
                if outcome is None:
                    break
                stats["cells"] += 1
                yield outcome


def check_executor(spec: ExecutorSpec) -> None:
    """Fail before any work when the executor cannot run here (Ray not installed)."""
    if spec.name == "ray":
        from bench.execution.ray_executor import import_ray

        import_ray()


def make_executor(spec: ExecutorSpec, config: RunConfig, worker: CellWorker):
    """The executor ``spec`` names; ``worker`` is the driver's (it runs the cells when local)."""
    if spec.name == "ray":
        from bench.execution.ray_executor import RayExecutor

        return RayExecutor(config.resolved, worker.backbone.fingerprint_id, spec.workers, spec.address)
    return LocalExecutor(worker)
