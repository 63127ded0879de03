"""The ``ray`` executor: one run's work units on Ray Core actors, on one machine or a cluster.

One actor per worker slot: on a cluster with GPUs one per GPU (``num_gpus=1``), on CPUs
``num_cpus`` = the cluster's CPUs / workers, so that N workers fit, each with as many torch
threads (at most the driver's). Each actor builds its
``CellWorker`` once from the run's resolved config (``config_from_resolved``) and reports its
backbone fingerprint; a worker whose fingerprint differs from the driver's stops the run before
any cell (results would mix).

The driver keeps one unit in flight per actor and hands the next unit to whichever actor
finishes first (``ray.wait``). A unit's outcomes come back together when it is done, and the
driver (``bench.execution.runner``) writes each cell's PNGs into the run folder and then commits its row:
workers never need the run folder, and a PNG exists before its row commits, as locally.

Faults: actors restart when their process dies (``max_restarts=-1``) and Ray does not retry
their tasks (``max_task_retries=0``), so the driver alone decides what runs again: a unit whose
worker died is put back at the front of the queue and run by the next free worker (maybe the
restarted one). A dead unit has returned nothing, and the runner skips outcomes of keys it has
already committed, so every cell ends exactly once. On Ctrl-C (or any error) the actors are
killed, a Ray started for the run is shut down, and the run folder is left resumable.
"""

import os
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator

import torch

from bench.errors import ConfigError
from bench.execution.plan import WorkUnit
from bench.execution.worker import CellOutcome
from bench.paths import repo_root

INSTALL_COMMAND = 'pip install "editbench[ray]"'
#: How often one unit may lose its worker before the run gives up (a unit that kills every worker).
MAX_UNIT_ATTEMPTS = 3
#: Driver environment variables a worker needs too (same caches, same offline mode).
FORWARDED_ENV = ("EDITBENCH_CACHE", "HF_HUB_OFFLINE", "HF_HOME")


def import_ray():
    """The ``ray`` module, or a ``ConfigError`` naming the install command."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"--executor ray needs Ray, which is not installed: {INSTALL_COMMAND}") from exc
    return ray


class RayWorker:
    """The body of one worker actor: a ``CellWorker`` built once, then any number of units.

    A failure to build (missing weights, a different checkpoint) is kept and reported by
    ``describe`` rather than raised, so the driver can stop with a one-line error.
    """

    def __init__(self, resolved: dict, slot: int, threads: int | None):
        import ray

        from bench.execution.config import config_from_resolved
        from bench.execution.worker import CellWorker

        if threads:
            torch.set_num_threads(threads)
        self.error, self.worker = None, None
        try:
            self.worker = CellWorker(config_from_resolved(resolved))
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            return
        gpu_ids = ray.get_gpu_ids()
        if self.worker.backbone.device.type == "cuda" and gpu_ids:
            host = self.worker.name.split("/")[0]
            self.worker.name = f"{host}/cuda:{gpu_ids[0]} {torch.cuda.get_device_name()}"
        else:
            self.worker.name += f" worker{slot}"

    def describe(self) -> dict:
        """Name (host/device), pid, backbone fingerprint and labels; or the error that stopped it."""
        if self.worker is None:
            return {"pid": os.getpid(), "error": self.error}
        return {
            "worker": self.worker.name,
            "pid": os.getpid(),
            "fingerprint": self.worker.backbone.fingerprint_id,
            "labels": self.worker.labels(),
        }

    def run_unit(self, unit: WorkUnit) -> tuple[list[CellOutcome], float]:
        """Every outcome of ``unit`` and the seconds it took."""
        started = time.perf_counter()
        outcomes = list(self.worker.run_unit(unit))
        return outcomes, time.perf_counter() - started


class RayExecutor:
    """Runs units on ``workers`` Ray actors; ``address``: ``None`` starts a local Ray (unless one
    is already initialised in this process), ``auto`` or ``ray://host:port`` joins a cluster."""

    name = "ray"

    def __init__(self, resolved: dict, fingerprint_id: str, workers: int | None = None, address: str | None = None):
        ray = self.ray = import_ray()
        self.started_ray, self._busy_pids = not ray.is_initialized(), {}
        self.rerun_units = 0  # units run again because their worker died
        if self.started_ray:
            ray.init(address=address, include_dashboard=False, logging_level="WARNING")
        try:
            self.actors = self._start_actors(resolved, workers)
            self.workers = ray.get([actor.describe.remote() for actor in self.actors])
            self._check(fingerprint_id)
        except BaseException:
            self.close()
            raise
        self.stats = [{"worker": w["worker"], "cells": 0, "seconds": 0.0} for w in self.workers]

    def _start_actors(self, resolved: dict, workers: int | None) -> list:
        resources = self.ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        device = resolved["backbone"]["device"]
        use_gpu = gpus > 0 and (device == "auto" or device.startswith("cuda"))
        if use_gpu:
            n = workers or gpus
            if n > gpus:
                raise ConfigError(f"--workers {n}: the Ray cluster has {gpus} GPUs; one worker per GPU at most")
            options, threads = {"num_gpus": 1, "num_cpus": 1}, None
            resolved = {**resolved, "backbone": {**resolved["backbone"], "device": "cuda"}}  # the actor's one visible GPU
        else:
            n = workers or 1
            cpus = resources.get("CPU", 1)
            # never more threads than the driver's torch uses (OMP_NUM_THREADS): on an oversubscribed
            # machine two OpenMP threads per worker ran 20x slower than one (benchmarks/ray_scaling.py)
            options, threads = {"num_cpus": cpus / n}, max(1, min(int(cpus // n), torch.get_num_threads()))
        env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo_root()), os.environ.get("PYTHONPATH")]))
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        actor = self.ray.remote(RayWorker).options(
            max_restarts=-1, max_task_retries=0, runtime_env={"env_vars": env}, **options
        )
        return [actor.remote(resolved, slot, threads) for slot in range(n)]

    def _check(self, fingerprint_id: str) -> None:
        for info in self.workers:
            if info.get("error"):
                raise ConfigError(f"ray worker (pid {info['pid']}) could not load the run: {info['error']}")
            if info["fingerprint"] != fingerprint_id:
                raise ConfigError(
                    f"ray worker {info['worker']}: backbone fingerprint {info['fingerprint']} differs from the "
                    f"driver's {fingerprint_id}; every machine must hold the same checkpoint"
                )

    def labels(self) -> list[str]:
        return [label for info in self.workers for label in info["labels"]]

    def describe(self) -> dict:
        """For the manifest: Ray's version and every worker's host/device."""
        return {"name": self.name, "ray": self.ray.__version__, "workers": [info["worker"] for info in self.workers]}

    def pids(self) -> dict[int, int]:
        """Worker slot -> the pid of its actor process, for slots with a unit in flight."""
        return dict(self._busy_pids)

    def run(self, units: Iterable[WorkUnit]) -> Iterator[CellOutcome]:
        """Yield every cell's outcome, unit by unit in completion order."""
        ray = self.ray
        queue, free, attempts = deque(units), list(range(len(self.actors))), Counter()
        in_flight = {}  # ObjectRef -> (unit, slot); unit None: waiting for the slot's restarted actor
        try:
            while queue or any(unit for unit, _ in in_flight.values()):
                if not free and not in_flight:
                    raise RuntimeError("every Ray worker is gone; resume the run when the cluster is back")
                while queue and free:
                    slot, unit = free.pop(0), queue.popleft()
                    in_flight[self.actors[slot].run_unit.remote(unit)] = (unit, slot)
                    self._busy_pids[slot] = self.workers[slot]["pid"]
                (ref,), _ = ray.wait(list(in_flight), num_returns=1)
                unit, slot = in_flight.pop(ref)
                self._busy_pids.pop(slot, None)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayActorError as exc:  # the worker process died
                    if unit is not None:
                        attempts[unit.unit_id] += 1
                        if attempts[unit.unit_id] >= MAX_UNIT_ATTEMPTS:
                            raise RuntimeError(f"unit {unit.unit_id} ({unit.method}) lost its worker {MAX_UNIT_ATTEMPTS} times") from exc
                        queue.appendleft(unit)
                        self.rerun_units += 1
                        in_flight[self._when_restarted(slot)] = (None, slot)
                    continue  # a probe that failed: the actor is gone for good, its slot stays out
                free.append(slot)
                if unit is None:
                    self.workers[slot]["pid"] = result["pid"]
                    continue
                outcomes, seconds = result
                self.stats[slot]["cells"] += len(outcomes)
                self.stats[slot]["seconds"] += seconds
                yield from outcomes
        finally:
            self.close()

    def _when_restarted(self, slot: int):
        """A reference that resolves (to ``describe()``) once the slot's actor is back."""
        return self.actors[slot].describe.options(max_task_retries=-1).remote()

    def close(self) -> None:
        """Kill the actors (no restart) and shut down a Ray this executor started."""
        for actor in getattr(self, "actors", []):
            self.ray.kill(actor, no_restart=True)
        self.actors = []
        if self.started_ray and self.ray.is_initialized():
            self.ray.shutdown()
