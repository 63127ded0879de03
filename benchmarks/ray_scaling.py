"""Scale-out: cells/s of one run with the ``local`` executor and with ``ray`` at 1 and 2 workers.

Runs a config (default: the quickstart on the tiny backbone) through ``Runner`` exactly as
``editbench run`` does, into temporary run folders, once per executor, on one local Ray
instance started with ``--cpus`` CPUs. Timed is the run loop (``Runner.run``: plan, units,
commits, set metrics); starting the actors (each loads the backbone and metrics once) is
printed separately as start-up. Scaling efficiency is cells/s at N workers over N times
cells/s at 1 worker. On the tiny backbone the numbers are smoke numbers: small units, so
Ray's per-unit overhead weighs more than it would at 50 steps and 512 px on GPUs.

    python benchmarks/ray_scaling.py                              # quickstart, 2 CPUs
    python benchmarks/ray_scaling.py --set sdedit.steps=50 --cpus 4
"""

import sys
import tempfile
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def timed_run(config, executor, out: Path) -> tuple[float, float, int]:
    """Start-up seconds, run seconds and computed cells of one fresh run of ``config``."""
    from bench.execution.runner import Runner, new_run_dir

    started = time.perf_counter()
    runner = Runner(config, new_run_dir(config, str(out)), progress=False, executor=executor)
    runner.write_manifest()
    ready = time.perf_counter()
    counts = runner.run()
    runner.store.close()
    return ready - started, time.perf_counter() - ready, counts["ok"] + counts["failed"] + counts["skipped"]


@click.command()
@click.option("--config", "config_path", default="configs/quickstart.yaml", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=V[,V...]", help="config overrides, as editbench run")
@click.option("--cpus", default=2, show_default=True, help="CPUs of the local Ray instance")
@click.option("--workers", default="1,2", show_default=True, help="Ray worker counts to measure")
def main(config_path, overrides, cpus, workers):
    import ray
    import torch

    from bench.execution.config import ExecutorSpec, load_config

    config = load_config(config_path, list(overrides))
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level="WARNING")
    print(f"{config_path} {' '.join(overrides)}: backbone {config.backbone.name}, {cpus} CPUs for Ray (smoke numbers)")
    print(f"{'executor':<10}{'threads/workers':>16}{'start-up s':>12}{'run s':>9}{'cells':>7}{'cells/s':>9}{'efficiency':>12}")
    runs = [("local", torch.get_num_threads(), ExecutorSpec("local"))]
    runs += [(f"ray x{n}", n, ExecutorSpec("ray", workers=n)) for n in (int(w) for w in workers.split(","))]
    one_worker_rate = None
    with tempfile.TemporaryDirectory() as out:
        for name, n, executor in runs:
            start_s, run_s, cells = timed_run(config, executor, Path(out))
            rate = cells / run_s
            if name == "ray x1":
                one_worker_rate = rate
            efficiency = f"{rate / (n * one_worker_rate):.0%}" if one_worker_rate and name.startswith("ray") else "-"
            print(f"{name:<10}{n:>16}{start_s:>12.1f}{run_s:>9.1f}{cells:>7}{rate:>9.2f}{efficiency:>12}", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
