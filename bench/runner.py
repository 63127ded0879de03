"""The runner: every cell (method, setting, sample, seed) of a config, committed as it finishes.

Order is sample-major: for each sample, each method's preparation is computed once per
distinct value of its ``prep_params`` and reused by all of that method's settings and seeds.
Each cell has its own generator, seeded from (sample id, seed) alone, so every method and
setting sees the same noise for the same sample and seed.
"""

import hashlib
import json
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from . import __version__
from .backbone import Backbone, resolve_device
from .config import RunConfig, config_from_resolved
from .data import Sample, SampleRef, load_dataset
from .errors import ConfigError
from .method import Preparation
from .extractors import Extractors
from .metrics import ImageMetric, get_metric, load_metrics
from .metrics.scoring import score_missing, score_sets
from .paths import output_stem, repo_root, write_atomic
from .registry import get_method
from .runlock import locked_run, run_lock
from .store import CellRecord, Store, setting_json, write_manifest_file
from .timing import CellTimer

PACKAGES = ("editbench", "torch", "diffusers", "transformers", "torchmetrics", "lpips", "clean-fid", "numpy", "pillow")


def cell_key(method: str, setting: dict, sample_id: str, seed: int) -> str:
    text = json.dumps([method, setting_json(setting), sample_id, seed])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cell_seed(sample_id: str, seed: int) -> int:
    """The generator seed of every cell of (sample, seed), whatever the method."""
    return int(hashlib.sha256(f"{sample_id}\0{seed}".encode()).hexdigest()[:15], 16)


def setting_slug(setting: dict) -> str:
    """A readable folder name for a setting, with a short hash so it is unique."""
    if not setting:
        return "default"
    text = "_".join(f"{k}={v}" for k, v in setting.items())
    text = re.sub(r"[^A-Za-z0-9.=_-]", "-", text)[:80]
    return f"{text}_{hashlib.sha256(setting_json(setting).encode()).hexdigest()[:6]}"


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] -> (H, W, 3) uint8, rounding as image writers do."""
    return (image[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


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


@dataclass
class _Prepared:
    value: object
    nfe: int
    time_s: float
    cache_hit: bool
    grad_evals: int
    used: bool = False


class Runner:
    """Runs (or resumes) one run folder."""

    def __init__(self, config: RunConfig, run_dir: Path, backbone: Backbone | None = None, progress: bool = True):
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.methods = {name: get_method(name)() for name in config.settings}
        self.metrics = [get_metric(name)() for name in config.metrics]
        self.extractors = Extractors(config.metric_options, resolve_device(config.backbone.device))
        load_metrics(self.metrics, self.extractors)  # before the backbone and any method: missing weights fail fast
        self.refs = load_dataset(config.dataset)
        if not self.refs:
            raise ConfigError(f"dataset {config.resolved['dataset']} selects no samples")
        self.backbone = backbone or Backbone(config.backbone)
        for name, settings in config.settings.items():
            for setting in settings:
                self.methods[name].check_backbone(setting, self.backbone)
        self.store = Store(self.run_dir)

    # -- manifest ------------------------------------------------------------------------------
    def write_manifest(self, started: dict | None = None) -> dict:
        """The full manifest; ``started``: the one written when the run folder was created
        (``starting_manifest``), whose creation time and command it keeps."""
        manifest = {
            **(started or starting_manifest(self.config)),
            "backbone": self.backbone.describe(),
            "packages": _package_versions(),
            "git": _git_state(),
            "device": _device_info(self.backbone.device),
            "labels": list(self.backbone.labels) + self.extractors.labels(),
        }
        self.store.save_manifest(manifest)
        self.store.set_info("labels", manifest["labels"])
        return manifest

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
        before = manifest["backbone"]["fingerprint"]["id"]
        if before != self.backbone.fingerprint_id:
            raise ConfigError(
                f"run {self.run_dir}: backbone fingerprint changed since it started ({before} -> "
                f"{self.backbone.fingerprint_id}); results would mix. Start a new run instead of resuming."
            )

    # -- the loop ------------------------------------------------------------------------------
    def total_cells(self) -> int:
        return len(self.refs) * self.config.n_settings * len(self.config.seeds)

    def run(self) -> dict:
        """Run every cell not yet in the store; returns counts of ok/failed/skipped cells."""
        self._add_labels(self.extractors.labels())
        done = self.store.finished_keys()
        counts = {"ok": 0, "failed": 0, "skipped": 0, "already done": 0}
        bar = tqdm(total=self.total_cells(), unit="cell", disable=not self.progress, dynamic_ncols=True)
        try:
            for ref in self.refs:
                self._run_sample(ref, done, counts, bar)
        finally:
            bar.close()
        batch_size = self.config.metric_options.batch_size
        score_missing(self.store, self.run_dir, self.metrics, self.refs, self.backbone.resolution, batch_size, progress=False)
        score_sets(self.store, self.run_dir, self.metrics, self.refs, self.backbone.resolution, batch_size)
        return counts

    def _pending(self, ref: SampleRef, done: set[str]):
        for name, settings in self.config.settings.items():
            for setting in settings:
                for seed in self.config.seeds:
                    key = cell_key(name, setting, ref.id, seed)
                    if key not in done:
                        yield name, setting, seed, key

    def _finish(self, cell: CellRecord, counts: dict, bar) -> None:
        self.store.commit_cell(cell)
        counts[cell.status] += 1
        bar.update(1)
        bar.set_postfix(failed=counts["failed"], skipped=counts["skipped"], refresh=False)

    def _run_sample(self, ref: SampleRef, done: set[str], counts: dict, bar) -> None:
        pending = list(self._pending(ref, done))
        already = self.config.n_settings * len(self.config.seeds) - len(pending)
        counts["already done"] += already
        bar.update(already)
        if not pending:
            return
        bar.set_description(ref.id[:24])
        try:
            sample = ref.load(self.backbone.resolution)
        except Exception as exc:  # a bad sample fails its own cells, never the run
            error = f"{type(exc).__name__}: {exc}"
            for name, setting, seed, key in pending:
                self._finish(CellRecord(key, name, setting, ref.id, seed, "failed", ref.edit_type, error), counts, bar)
            return
        self._add_info_items("warnings", sample.warnings)
        prepared: dict[tuple, _Prepared | Exception] = {}
        for name, setting, seed, key in pending:
            self._finish(self._run_cell(sample, name, setting, seed, key, prepared), counts, bar)

    def _prepare(self, sample: Sample, name: str, setting: dict, prepared: dict) -> _Prepared:
        method = self.methods[name]
        key = (name, method.prep_key(setting))
        if key not in prepared:
            nfe_before = self.backbone.nfe.count
            try:
                with CellTimer(self.backbone.device) as timer:
                    value = method.prepare(self.backbone, sample, setting)
                if not isinstance(value, Preparation):
                    value = Preparation(value)
                nfe = self.backbone.nfe.count - nfe_before
                prepared[key] = _Prepared(value.value, nfe, timer.wall_s, value.cache_hit, value.grad_evals)
            except Exception as exc:
                prepared[key] = exc
        result = prepared[key]
        if isinstance(result, Exception):
            raise RuntimeError(f"preparation failed: {type(result).__name__}: {result}") from result
        return result

    def _run_cell(self, sample: Sample, name: str, setting: dict, seed: int, key: str, prepared: dict) -> CellRecord:
        method = self.methods[name]
        cell = CellRecord(key, name, setting, sample.id, seed, "ok", sample.edit_type)
        missing = method.missing(sample, setting)
        if missing:
            cell.status, cell.error = "skipped", f"sample lacks {', '.join(missing)}, which {name!r} needs"
            return cell
        try:
            prep = self._prepare(sample, name, setting, prepared)
            cell.prep_cached = prep.used or prep.cache_hit
            cell.prep_nfe, cell.prep_time_s, cell.prep_grad_evals = (
                (0, 0.0, 0) if prep.used else (prep.nfe, prep.time_s, prep.grad_evals)
            )
            prep.used = True
            generator = torch.Generator("cpu").manual_seed(cell_seed(sample.id, seed))
            nfe_before = self.backbone.nfe.count
            with CellTimer(self.backbone.device) as timer:
                result = method.edit(self.backbone, sample, prep.value, setting, generator)
            cell.nfe = self.backbone.nfe.count - nfe_before
            cell.time_s, cell.gpu_time_s, cell.peak_mem_mb = timer.wall_s, timer.gpu_s, timer.peak_mem_mb
            cell.grad_evals = result.grad_evals
            if not torch.isfinite(result.image).all():
                raise FloatingPointError("the edited image contains NaN or Inf")
            pixels = to_uint8(result.image)
            path = self.run_dir / "images" / name / setting_slug(setting) / f"{output_stem(sample.id)}_seed{seed}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, lambda p: Image.fromarray(pixels).save(p, format="PNG"))
            cell.output_path = str(path.relative_to(self.run_dir))
            for artifact, picture in result.artifacts.items():
                write_atomic(path.with_suffix(f".{artifact}.png"), lambda p: picture.save(p, format="PNG"))
            self._add_labels(result.labels)
            edited = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
            for metric in self.metrics:
                if isinstance(metric, ImageMetric):
                    cell.metrics[metric.name] = float(metric(edited, sample.image[None], [sample])[0])
        except Exception as exc:  # NaN output, out of memory, a bug in one method: the run goes on
            cell.status, cell.error = "failed", f"{type(exc).__name__}: {exc}"
            if isinstance(exc, torch.OutOfMemoryError):
                torch.cuda.empty_cache()
        return cell


def starting_manifest(config: RunConfig) -> dict:
    """What a run's manifest holds before its backbone is loaded: enough to resume it."""
    return {
        "editbench": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "config": config.resolved,
    }


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


def start_run(config: RunConfig, out: str | None = None, progress: bool = True) -> tuple[Path, dict]:
    """Create a run folder for ``config``, run it, and return the folder and the cell counts.

    The folder's manifest is written first, so a run killed at any later moment can be resumed."""
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
        return run_dir, runner.run()


def resume_run(run_dir: str | Path, progress: bool = True) -> tuple[Path, dict]:
    """Finish an interrupted run: same config and backbone, only the missing cells."""
    run_dir = Path(run_dir)
    with locked_run(run_dir) as manifest:
        runner = Runner(config_from_resolved(manifest["config"]), run_dir, progress=progress)
        if "backbone" in manifest:
            runner.check_fingerprint(manifest)
        else:  # killed while its backbone was loading: the first resume records it
            runner.write_manifest(manifest)
        return run_dir, runner.run()
