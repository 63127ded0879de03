"""The plan of a run: every pending cell, grouped into work units and batches.

A **cell** is (method, setting, sample, seed). A **work unit** holds every pending cell of a
block of samples that shares one method and one preparation key, so a preparation (an
inversion, say) is computed once per sample and reused by all of the unit's cells. Inside a
unit, cells are cut into **batches** of up to ``batch_size`` cells of one setting (rows whose
timesteps differ are never batched together); a batch may mix samples and seeds.

Samples are blocked ``max(1, batch_size // seeds)`` at a time, so a batch fills up with the
seeds of one sample and then with further samples; at ``batch_size = 1`` the order is the
sample-major order of one cell at a time. Units are independent: an executor may run them in
any order and on any worker.
"""

import hashlib
import json
from dataclasses import dataclass, field

from .data import SampleRef
from .store import setting_json


def cell_key(method: str, setting: dict, sample_id: str, seed: int) -> str:
    """The cell's primary key in the store: stable across runs, resumes and batchings."""
    text = json.dumps([method, setting_json(setting), sample_id, seed])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cell_seed(sample_id: str, seed: int) -> int:
    """The generator seed of every cell of (sample, seed), whatever the method or batch."""
    return int(hashlib.sha256(f"{sample_id}\0{seed}".encode()).hexdigest()[:15], 16)


@dataclass(frozen=True)
class Cell:
    """One pending cell; ``ref`` is its sample (loaded by whoever runs it)."""

    key: str
    method: str
    setting: dict = field(hash=False, compare=False)
    ref: SampleRef = field(hash=False, compare=False)
    seed: int = 0

    @property
    def sample_id(self) -> str:
        return self.ref.id


@dataclass
class WorkUnit:
    """Cells that share ``method`` and one preparation key, in ``batches`` (each of one
    setting, at most the run's batch size)."""

    unit_id: int
    method: str
    batches: list[list[Cell]]

    @property
    def cells(self) -> list[Cell]:
        return [cell for batch in self.batches for cell in batch]


def sample_blocks(refs: list[SampleRef], batch_size: int, n_seeds: int) -> list[list[SampleRef]]:
    """Consecutive blocks of samples whose seeds together fill about one batch."""
    size = max(1, batch_size // max(1, n_seeds))
    return [refs[i : i + size] for i in range(0, len(refs), size)]


def plan_units(
    settings: dict, refs: list[SampleRef], seeds: list[int], done: set[str], batch_size: int, prep_key
) -> list[WorkUnit]:
    """Work units of every cell not in ``done``.

    ``settings``: method name -> its settings (a config's). ``prep_key(method, setting)``: the
    key under which that method shares preparations between settings.
    """
    units = []
    for block in sample_blocks(refs, batch_size, len(seeds)):
        for method, method_settings in settings.items():
            groups: dict[tuple, list[dict]] = {}
            for setting in method_settings:
                groups.setdefault(prep_key(method, setting), []).append(setting)
            for group in groups.values():
                batches = []
                for setting in group:
                    cells = [
                        Cell(key, method, setting, ref, seed)
                        for ref in block
                        for seed in seeds
                        if (key := cell_key(method, setting, ref.id, seed)) not in done
                    ]
                    batches += [cells[i : i + batch_size] for i in range(0, len(cells), batch_size)]
                if batches:
                    units.append(WorkUnit(len(units), method, batches))
    return units
