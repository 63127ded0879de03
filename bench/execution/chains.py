"""Multi-turn chains (``dataset.turns: iterative``): turn 1 edits the source, turn k edits the
method's own output of turn k-1 with turn k's instruction and prompts.

An iterative run holds both of MagicBrush's settings, as its generation script makes them: every
turn edited independently from its recorded source (keys as in ``turns: independent``), and each
chain's turns after the first edited from the previous turn's output (``cell_key(...,
chained=True)``; turn 1 is shared). The independent turns are planned as ordinary cells
(``plan_units``). A chain's cells of one method, setting and seed form one sequence, planned by
``plan_chain_units`` into one work unit per block of chains, so they run in order on one worker:
the unit's batches go turn by turn, each batch holding the same turn of different chains (and
seeds). Its turn k edits the 8-bit pixels of turn k-1 exactly as saved, from the worker's memory
or, after a kill, from the PNG in the run folder (``Cell.input_png``), so a resumed chain is
byte-identical to one that ran through. A turn whose input cell failed or was skipped is
skipped with that reason, and so, one after another, are the turns after it.
"""

import io

import torch
from PIL import Image

from bench.data import SampleRef, chains
from bench.execution.plan import Cell, WorkUnit, cell_key, grouped_by_backbone, plan_units, sample_blocks
from bench.registry import get_method
from bench.samples import image_tensor

#: (status, error, output path) of a stored cell, as ``Store.outcomes`` gives it.
Stored = tuple[str, str | None, str | None]


def input_image(png: bytes) -> torch.Tensor:
    """(3, H, W) float in [0, 1] of a saved turn's PNG: the next turn's input."""
    return image_tensor(Image.open(io.BytesIO(png)))


def blocked_reason(chain: str | None, turn: int | None, status: str, error: str | None) -> str:
    """Why the turn after ``turn`` of ``chain`` (which ended ``status`` with ``error``) is skipped."""
    return f"turn {turn} of chain {chain} {status}: {error}"


def _turn_key(method: str, setting: dict, ref: SampleRef, seed: int, position: int) -> str:
    return cell_key(method, setting, ref.id, seed, chained=position > 0)


def plan_chain_units(settings: dict, refs: list[SampleRef], seeds: list[int], stored: dict[str, Stored],
                     batch_size: int, run_dir, backbones: dict[str, str] | None = None) -> list[WorkUnit]:  # fmt: skip
    """Work units of every cell of an iterative run not in ``stored``: the independent turns
    (``plan_units``), then per block of chains, method and preparation key one unit whose
    batches run turn by turn. ``run_dir``: where a stored turn's output is read from;
    ``backbones``: as ``plan_units``'s (a chain's turns run on its method's backbone)."""
    backbones = backbones or {}
    every = [ref for chain in chains(refs) for ref in chain[1:]]
    units = plan_units(settings, every, seeds, set(stored), batch_size, backbones)
    for block in sample_blocks(chains(refs), batch_size, len(seeds)):
        for method, method_settings in settings.items():
            groups: dict = {}
            for setting in method_settings:
                groups.setdefault(get_method(method).preparation_key(setting), []).append(setting)
            for group in groups.values():
                batches = []
                for setting in group:
                    for position in range(max(len(chain) for chain in block)):
                        cells = [cell for chain in block if position < len(chain)
                                 for seed in get_method(method).seeds_to_run(setting, seeds)
                                 if (cell := _chain_cell(method, setting, chain, position, seed, stored, run_dir))]  # fmt: skip
                        batches += [cells[i : i + batch_size] for i in range(0, len(cells), batch_size)]
                if batches:
                    units.append(WorkUnit(len(units), method, batches, backbones.get(method)))
    return grouped_by_backbone(units)


def _chain_cell(method: str, setting: dict, chain: list[SampleRef], position: int, seed: int,
                stored: dict[str, Stored], run_dir) -> Cell | None:  # fmt: skip
    """The pending cell of the chain's turn at ``position`` (None when stored), reading its input
    from the run folder when the previous turn finished in an earlier session."""
    ref = chain[position]
    key = _turn_key(method, setting, ref, seed, position)
    if key in stored:
        return None
    if position == 0:
        return Cell(key, method, setting, ref, seed)
    input_key = _turn_key(method, setting, chain[position - 1], seed, position - 1)
    if input_key not in stored:  # runs earlier in the same unit
        return Cell(key, method, setting, ref, seed, input_key)
    status, error, path = stored[input_key]
    if status != "ok":
        reason = blocked_reason(ref.chain, chain[position - 1].turn, status, error)
        return Cell(key, method, setting, ref, seed, input_key, blocked=reason)
    return Cell(key, method, setting, ref, seed, input_key, input_png=(run_dir / path).read_bytes())
