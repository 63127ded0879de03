"""The runner (the driver): plans a run's cells, hands the work units to an executor, and
commits every finished cell to the run's store as it comes back.

The plan (``bench.execution.plan``) groups the pending cells into work units (cells of a block of samples
that share a method and a preparation key) cut into batches of up to ``batch_size`` cells; an
executor (``bench.execution.executors``) runs them on a worker (``bench.execution.worker``). Only the driver
writes the run folder: for each finished cell it writes the PNG (and artifact pictures) first
and then commits the row, so a kill at any moment leaves whole cells and ``--resume`` redoes
only what is missing. Each cell has its own generator, seeded from (sample id, seed) alone, so
every method, setting, batch and executor sees the same noise for the same sample and seed.
"""

import hashlib
import json
import platform
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch

from bench import __version__
from bench.data import load_dataset
from bench.diffusion.backbone import Backbone
from bench.diffusion.extra_networks import changed_networks
from bench.errors import ConfigError
from bench.execution.chains import plan_chain_units
from bench.execution.config import ExecutorSpec, RunConfig, config_from_resolved
from bench.execution.executors import check_executor, make_executor
from bench.execution.judged_by import claim_judges
from bench.execution.plan import config_cell_keys, ignored_references, plan_units
from bench.execution.progress import progress_bar
from bench.execution.runlock import locked_run, run_lock
from bench.execution.scoring import score_missing, score_sets
from bench.execution.worker import CellOutcome, CellWorker
from bench.metrics.judge import judge_identity
from bench.paths import output_stem, repo_root, write_atomic
from bench.registry import get_method
from bench.samples import Frame
from bench.settings import unused_params
from bench.store import CellRecord, Store, setting_json, write_manifest_file

PACKAGES = ("editbench", "torch", "torchvision", "diffusers", "transformers", "torchmetrics", "lpips", "clean-fid",
            "numpy", "pillow")  # fmt: skip


def setting_slug(setting: dict, method: str | None = None) -> str:
    """A readable folder name for a setting (the parameters ``method`` reads), with a short hash of
    the whole setting so it is unique."""
    if not setting:
        return "default"
    unread = unused_params(method, setting) if method else frozenset()
    text = "_".join(f"{k}={v}" for k, v in setting.items() if k not in unread)
    text = re.sub(r"[^A-Za-z0-9.=_-]", "-", text)[:80]
    return f"{text}_{hashlib.sha256(setting_json(setting).encode()).hexdigest()[:6]}"


def output_relpath(record: CellRecord) -> Path:
    """Where a cell's image goes, relative to the run folder (``_iter`` marks a chain's turn that
    edited the previous output, beside the same turn edited from its recorded source)."""
    chained = "_iter" if record.input_key else ""
    name = f"{output_stem(record.sample_id)}{chained}_seed{record.seed}.png"
    return Path("images") / record.method / setting_slug(record.setting, record.method) / name


def _package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git_state() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=repo_root(), capture_output=True, text=True, timeout=10)

    try:
        commit = git("rev-parse", "HEAD")
        if commit.returncode:
            return {"commit": None, "dirty": None}
        return {"commit": commit.stdout.strip(), "dirty": bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}


def _device_info(device: torch.device) -> dict:
    info = {"type": device.type, "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


class Runner:
    """Runs (or resumes) one run folder: the driver of its plan, executor and store."""

    def __init__(
        self, config: RunConfig, run_dir: Path, backbone: Backbone | None = None, progress: bool = True,
        executor: ExecutorSpec | None = None,
    ):  # fmt: skip
        executor = executor or config.executor
        check_executor(executor)
        for name, settings in config.settings.items():  # an API key, a server: before anything loads
            for setting in settings:
                get_method(name).check_ready(setting)
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.refs = load_dataset(config.dataset)
        if not self.refs:
            raise ConfigError(f"dataset {config.resolved['dataset']} selects no samples")
        self.worker = CellWorker(config, backbone)
        self.backbone, self.metrics = self.worker.backbone, self.worker.metrics
        self.executor = make_executor(executor, config, self.worker)
        self.store = Store(self.run_dir)
        self.manifest: dict = {}  # the manifest as last saved (none: a runner of tests, which writes none)

    # -- manifest ------------------------------------------------------------------------------
    def write_manifest(self, started: dict | None = None) -> dict:
        """The full manifest; ``started``: the one written when the run folder was created
        (``starting_manifest``), whose creation time and command it keeps. The metrics' judges are
        claimed first (``claim_judges``: a resumed run's metric of another judge stops it)."""
        claim_judges(self.store, started or {}, self.metrics, self.run_dir)
        manifest = {
            **(started or starting_manifest(self.config)),
            "backbone": self.backbone.describe(),
            "images": self.worker.frame.to_dict(),
            "backbones": {**(started or {}).get("backbones", {}), **self.worker.described},
            "packages": _package_versions(),
            "git": _git_state(),
            "device": _device_info(self.backbone.device),
            "executor": self.executor.describe(),
            "labels": self.executor.labels(),
        }
        judge = judge_identity(self.worker.extractors)
        if judge:
            manifest["judge"] = judge
        self.store.save_manifest(manifest)
        self.store.set_info("labels", manifest["labels"])
        self.manifest = manifest
        return manifest

    def _record_backbone(self, label: str, description: dict) -> None:
        """Add a backbone a worker took up to the manifest; stop the run when a resumed one's
        weights changed since its cells were made (results would mix)."""
        known = self.manifest.setdefault("backbones", {})
        if label in known:
            before, now = known[label]["fingerprint"]["id"], description["fingerprint"]["id"]
            if before != now:
                raise ConfigError(f"run {self.run_dir}: backbone {label!r} fingerprint changed since it started "
                                  f"({before} -> {now}); results would mix. Start a new run instead of resuming.")  # fmt: skip
            return
        known[label] = description
        if "config" in self.manifest:
            self.store.save_manifest(self.manifest)

    def _frames(self) -> dict:
        """Each backbone's size rule by label, and under ``None`` (cells stored before labels) the first's."""
        described = {**self.manifest.get("backbones", {}), **self.worker.described}
        frames = {label: Frame.from_dict(info["images"]) for label, info in described.items()}
        return {**frames, None: frames[next(iter(self.config.backbones))]}

    def _add_labels(self, labels: list[str]) -> None:
        """Record caveats (e.g. an untrained network) that every number of the run carries."""
        self._add_info_items("labels", labels)

    def _add_info_items(self, key: str, items) -> None:
        """Append the ``items`` not yet in the run info list ``key`` (labels, dataset warnings)."""
        current = self.store.info(key, [])
        new = [item for item in items if item not in current]
        if new:
            self.store.set_info(key, current + new)

    def check_fingerprint(self, manifest: dict) -> None:
        self.manifest = manifest
        before = manifest["backbone"]["fingerprint"]["id"]
        if before != self.backbone.fingerprint_id:
            raise ConfigError(
                f"run {self.run_dir}: backbone fingerprint changed since it started ({before} -> "
                f"{self.backbone.fingerprint_id}); results would mix. Start a new run instead of resuming."
            )
        changed = changed_networks(manifest["backbone"].get("extra_networks", {}), self.backbone)
        if changed:
            raise ConfigError(
                f"run {self.run_dir}: extra network weights changed since it started: {'; '.join(changed)}; "
                "results would mix. Start a new run instead of resuming."
            )
        claim_judges(self.store, manifest, self.metrics, self.run_dir)

    # -- the loop ------------------------------------------------------------------------------
    def total_cells(self) -> int:
        return len(config_cell_keys(self.config, self.refs))

    def plan(self, done: set[str]):
        """Work units of every cell not in ``done`` (the store's cells: a chain's next turn reads them)."""
        config = self.config
        labels = {method: config.backbone_label(method) for method in config.settings}
        if config.dataset.turns == "iterative":
            return plan_chain_units(config.settings, self.refs, config.seeds, self.store.outcomes(), config.batch_size,
                                    self.run_dir, labels)  # fmt: skip
        return plan_units(config.settings, self.refs, config.seeds, done, config.batch_size, labels)

    def run(self, retry_failed: bool = False) -> dict:
        """Run every cell not yet in the store (``retry_failed``: and every failed one again);
        returns counts of ok/failed/skipped cells."""
        self._add_labels(self.executor.labels())
        self._add_info_items("warnings", ignored_references(self.config, self.refs))
        done = self.store.finished_keys(except_failed=retry_failed)
        counts = {"ok": 0, "failed": 0, "skipped": 0, "already done": len(done)}
        bar = progress_bar(self.total_cells(), initial=len(done), unit="cell", enabled=self.progress)
        started, computed = time.perf_counter(), 0
        outcomes = self.executor.run(self.plan(done))
        try:
            for outcome in outcomes:
                if outcome.record.key in done:  # a unit re-run after its worker died: commit each cell once
                    continue
                self._commit(outcome)
                done.add(outcome.record.key)
                counts[outcome.record.status] += 1
                computed += 1
                bar.update(1)
                bar.set_postfix(failed=counts["failed"], skipped=counts["skipped"], refresh=False)
        finally:
            outcomes.close()  # on Ctrl-C too: stops the executor's workers
            bar.close()
            self._record_session(computed, time.perf_counter() - started)
            if self.progress and computed:
                print(per_worker_summary(self.executor.stats), file=sys.stderr)
        batch_size = self.config.metric_options.batch_size
        frames = self._frames()
        score_missing(self.store, self.run_dir, self.metrics, self.refs, frames, batch_size, progress=False)
        score_sets(self.store, self.run_dir, self.metrics, self.refs, frames, batch_size)
        return counts

    def _record_session(self, cells: int, wall_s: float) -> None:
        """Add this session's cells and wall time to the run's totals (the report's throughput)."""
        if cells:
            sessions = self.store.info("sessions", [])
            sessions.append({
                "cells": cells, "wall_s": wall_s, "batch_size": self.config.batch_size, "executor": self.executor.name,
                "workers": self.executor.stats,
            })  # fmt: skip
            self.store.set_info("sessions", sessions)

    def _commit(self, outcome: CellOutcome) -> None:
        """Write the cell's pictures, then commit its row: a PNG exists before its row does."""
        record = outcome.record
        if outcome.backbone is not None:
            self._record_backbone(*outcome.backbone)
        if outcome.image_png is not None:
            path = self.run_dir / output_relpath(record)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, lambda p: p.write_bytes(outcome.image_png))
            for artifact, data in outcome.artifacts.items():
                write_atomic(path.with_suffix(f".{artifact}.png"), lambda p, data=data: p.write_bytes(data))
            record.output_path = str(path.relative_to(self.run_dir))
        self._add_labels(outcome.labels)
        self._add_info_items("warnings", outcome.warnings)
        self.store.commit_cell(record)


def per_worker_summary(stats: list[dict]) -> str:
    """One line per worker: its cells and the seconds it spent on them."""
    return "\n".join(f"{s['worker']}: {s['cells']} cells in {s['seconds']:.1f} s" for s in stats)


def starting_manifest(config: RunConfig) -> dict:
    """What a run's manifest holds before its backbone is loaded: enough to resume it."""
    manifest = {
        "editbench": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "config": config.resolved,
    }
    if config.dataset_path_given is not None:  # the config's dataset.path holds the absolute one
        manifest["dataset_path_given"] = config.dataset_path_given
    return manifest


def new_run_dir(config: RunConfig, out: str | None) -> Path:
    root = Path(out or config.output)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"output folder {str(root)!r} is a file; give a folder (--out or the config's 'output')")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    digest = hashlib.sha256(json.dumps(config.resolved, sort_keys=True).encode()).hexdigest()[:6]
    run_dir = root / f"{stamp}-{digest}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = root / f"{stamp}-{digest}-{suffix}"
    try:
        run_dir.mkdir(parents=True)
    except (FileExistsError, NotADirectoryError) as exc:  # a parent of the output folder is a file
        raise ConfigError(f"output folder {str(root)!r} cannot be created: {exc.strerror} ({exc.filename})") from exc
    return run_dir


def start_run(config: RunConfig, out: str | None = None, progress: bool = True, announce=None) -> tuple[Path, dict]:
    """Create a run folder for ``config``, run it, and return the folder and the cell counts.

    The folder's manifest is written first, so a run killed at any later moment can be resumed;
    ``announce(run_dir)`` is called once the folder is set up, before the first cell."""
    run_dir = new_run_dir(config, out)
    started = starting_manifest(config)
    write_manifest_file(run_dir, started)
    with run_lock(run_dir):
        try:
            runner = Runner(config, run_dir, progress=progress)
        except BaseException:
            shutil.rmtree(run_dir)  # nothing ran: leave no empty run folder behind
            raise
        runner.write_manifest(started)
        if announce is not None:
            announce(run_dir)
        return run_dir, runner.run()


def resume_run(run_dir: str | Path, progress: bool = True, executor: ExecutorSpec | None = None,
               retry_failed: bool = False) -> tuple[Path, dict]:  # fmt: skip
    """Finish an interrupted run: same config and backbone, only the missing cells (on
    ``executor``, by default the run's own); ``retry_failed``: the failed cells too (a remote API's
    errors), which replace their failed rows."""
    run_dir = Path(run_dir)
    with locked_run(run_dir) as manifest:
        try:
            config = config_from_resolved(manifest["config"])
        except ConfigError as exc:
            raise ConfigError(f"run {run_dir}: cannot resume: {exc}") from exc
        from bench.execution.plan import missing_work  # imports this module

        if retry_failed and config.dataset.turns == "iterative":
            raise ConfigError("--retry-failed does not apply to iterative chains (a failed turn's later turns "
                              "were skipped); start the run again")  # fmt: skip
        total, missing = missing_work(run_dir, config, retry_failed)
        if not missing:  # a finished run: say so before loading the backbone and extractors
            return run_dir, {"already done": total}
        runner = Runner(config, run_dir, progress=progress, executor=executor)
        if "backbone" in manifest:
            runner.check_fingerprint(manifest)
        else:  # killed while its backbone was loading: the first resume records it
            runner.write_manifest(manifest)
        return run_dir, runner.run(retry_failed)
