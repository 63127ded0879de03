"""Throughput of batched execution: cells per second at batch sizes 1, 2, 4, 8.

Runs ``sdedit`` and ``p2p`` (over a DDIM inversion) through the planner, the local executor
and the worker exactly as ``editbench run`` does, without a store, on the bundled sample set
with several seeds per image, and prints cells/s and the speedup over batch 1. Inversions are
computed by a warm-up pass into a temporary cache, so the timed passes measure editing, not
inverting. The default is the tiny backbone on the CPU; ``--sd15`` measures SD 1.5's
architecture at 512 px with seeded random weights (built as ``benchmarks/memory.py`` builds it;
speed does not depend on the weight values), fp16 on CUDA; ``--backbone`` a real checkpoint.

    python benchmarks/batching.py                       # tiny backbone, CPU
    python benchmarks/batching.py --sd15 --steps 50     # on a CUDA machine
"""

import os
import sys
import tempfile
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

METHODS = {
    "sdedit": {"t0": 0.6},
    "p2p": {"inversion": "ddim", "blend_words": "none"},
}


def measure(config, worker, batch_size: int) -> tuple[float, int]:
    """Seconds and cells of one pass over every cell of ``config`` at ``batch_size``."""
    from bench.data import load_dataset
    from bench.execution.executors import LocalExecutor
    from bench.execution.plan import plan_units

    units = plan_units(config.settings, load_dataset(config.dataset), config.seeds, set(), batch_size)
    started, cells = time.perf_counter(), 0
    for outcome in LocalExecutor(worker).run(units):
        if outcome.record.status != "ok":
            raise SystemExit(f"cell failed: {outcome.record.error}")
        cells += 1
    if worker.backbone.device.type == "cuda":
        import torch

        torch.cuda.synchronize()
    return time.perf_counter() - started, cells


def throughput(loaded, backbone: str, device: str, dtype: str, name: str, sizes, steps: int, seeds: int,
               limit: int | None, repeats: int, keep=min) -> list[dict]:
    """One row per batch size: cells, ``keep`` (the best, or e.g. the median) of ``repeats`` passes'
    seconds, cells/s and the speedup over the first size, for ``name`` on the ``loaded`` backbone
    (after one warm-up pass)."""
    from bench.execution.config import build_config
    from bench.execution.worker import CellWorker

    raw = {
        "backbone": {"name": backbone, "device": device, "dtype": dtype},
        "dataset": {"name": "sample", "limit": limit},
        "methods": {name: {**METHODS.get(name, {}), "steps": steps}},
        "seeds": list(range(seeds)),
        "metrics": [],
    }
    config = build_config(raw)
    worker = CellWorker(config, loaded)
    measure(config, worker, max(sizes))  # warm-up: inversions into the cache, kernels, allocator
    rows, base = [], None
    for size in sizes:
        passes = [measure(config, worker, size) for _ in range(repeats)]
        seconds, cells = keep([s for s, _ in passes]), passes[0][1]
        base = base or cells / seconds
        rows.append(dict(batch=size, cells=cells, seconds=seconds, cells_per_s=cells / seconds,
                         speedup=cells / seconds / base))  # fmt: skip
    return rows


@click.command()
@click.option("--sizes", default="1,2,4,8", show_default=True, help="batch sizes to measure")
@click.option("--steps", default=10, show_default=True, help="DDIM steps per edit")
@click.option("--seeds", default=8, show_default=True, help="seeds per image (a batch fills with one image's seeds)")
@click.option("--limit", default=None, type=int, help="images of the bundled set (default: all 6)")
@click.option("--repeats", default=2, show_default=True, help="timed passes per batch size (the best is kept)")
@click.option("--methods", "names", default="sdedit,p2p", show_default=True)
@click.option("--sd15", is_flag=True, help="SD 1.5's architecture at 512 px, random weights")
@click.option("--backbone", default=None, help="a real SD pipeline folder or hub id instead")
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default=None, help="default: fp16 on cuda, fp32 elsewhere")
def main(sizes, steps, seeds, limit, repeats, names, sd15, backbone, device, dtype):
    import torch

    sizes = [int(s) for s in sizes.split(",")]
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    dtype = dtype or ("fp16" if cuda else "fp32")
    if sd15 and backbone is None:
        from memory import build_random_sd15, default_model_dir

        folder = default_model_dir()
        if not (folder / "model_index.json").is_file():
            click.echo(f"building a random SD 1.5 pipeline in {folder} ...", err=True)
            build_random_sd15(folder)
        backbone = str(folder)
    with tempfile.TemporaryDirectory(prefix="editbench-batching-") as tmp:
        os.environ["EDITBENCH_CACHE"] = str(Path(tmp) / "cache")
        from bench.diffusion.backbone import Backbone, BackboneSpec

        loaded = Backbone(BackboneSpec(name=backbone or "tiny", device=device, dtype=dtype))
        print(f"backbone {backbone or 'tiny'} on {loaded.device} ({dtype}), {loaded.resolution} px, {steps} steps, "
              f"{seeds} seeds per image" + (" -- untrained weights: speed numbers only" if loaded.labels or sd15 else ""))
        for name in names.split(","):
            rows = throughput(loaded, backbone or "tiny", device, dtype, name, sizes, steps, seeds, limit, repeats)
            print(f"\n{name}: {'batch':>5} {'cells':>6} {'seconds':>8} {'cells/s':>8} {'speedup':>8}")
            for row in rows:
                print(f"{'':{len(name) + 1}} {row['batch']:>5} {row['cells']:>6} {row['seconds']:>8.2f} "
                      f"{row['cells_per_s']:>8.2f} {row['speedup']:>7.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
