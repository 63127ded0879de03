"""Executors: where work units run. The driver (``bench.runner``) hands every unit to an
executor and commits the ``CellOutcome``s it yields, in whatever order they finish.

``local`` runs units one after another in this process, on one ``CellWorker``.
"""

from collections.abc import Iterable, Iterator

from .plan import WorkUnit
from .worker import CellOutcome, CellWorker


class LocalExecutor:
    """Runs units in this process, in plan order."""

    name = "local"

    def __init__(self, worker: CellWorker):
        self.worker = worker

    def run(self, units: Iterable[WorkUnit]) -> Iterator[CellOutcome]:
        for unit in units:
            yield from self.worker.run_unit(unit)
