"""Scoring outside the per-cell loop: set-level metrics at the end of a run, and
``editbench score``, which adds metrics to a finished run from its saved images."""

import hashlib
import itertools
import math
import warnings
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.errors import ConfigError, SampleError
from bench.execution.judged_by import claim_judges
from bench.metrics import ImageMetric, SetMetric, get_metric, load_metrics
from bench.metrics.image_scores import score_images
from bench.metrics.judge_failures import REQUEST_FAILURES
from bench.paths import cache_dir, write_atomic
from bench.samples import Frame, as_frame, cell_frame, run_frames


def read_png(path: Path) -> torch.Tensor:
    """(3, H, W) float in [0, 1] from a saved cell image."""
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)


def _batched(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _features(extractor, images: list[torch.Tensor], batch_size: int) -> torch.Tensor:
    """Features of ``images`` in their order, in batches of one size (``keep_aspect`` images differ)."""
    order = sorted(range(len(images)), key=lambda i: tuple(images[i].shape))
    batches = [b for _, group in itertools.groupby(order, key=lambda i: tuple(images[i].shape))
               for b in _batched(list(group), batch_size)]  # fmt: skip
    with torch.no_grad():
        feats = torch.cat([extractor(torch.stack([images[i] for i in b])).float().cpu() for b in batches])
    return feats[torch.argsort(torch.tensor([i for b in batches for i in b]))]


def source_features(extractor, extractor_id: str, refs: list, frame: "Frame | int", batch_size: int) -> torch.Tensor:
    """Features of the dataset's source images (the samples that load), cached on disk per
    dataset content, size rule (an int: the square rule at that side) and extractor."""
    frame = as_frame(frame)
    images = []
    for ref in refs:
        try:
            images.append(ref.load(frame).image)
        except SampleError:  # a broken sample has failed cells of its own; it is no source image either
            continue
    size_key = frame.side if frame.mode == "square" else frame.describe()  # square keys as before policies existed
    digest = hashlib.sha256(f"{extractor_id}\0{size_key}".encode())
    for image in images:
        digest.update((image * 255).round().to(torch.uint8).numpy().tobytes())
    path = cache_dir() / "source_features" / f"{digest.hexdigest()[:24]}.pt"
    if path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except Exception as exc:  # unreadable: recomputed and overwritten
            warnings.warn(f"source feature cache {path} is unreadable ({type(exc).__name__}); recomputing it")
    feats = _features(extractor, images, batch_size) if images else torch.zeros(0, extractor.num_features)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda p: torch.save(feats, p))
    return feats


def score_sets(store, run_dir: Path, metrics: list, refs: list, frames: "dict | int", batch_size: int) -> list[tuple]:
    """Every set metric for every (method, setting) over its ok cells' saved images, against the
    sources at its backbone's size (``frames``: ``run_frames``); the rows ``(method, setting,
    name, value, n)`` are written to the store and returned. A chain's turns edited from the
    previous output (``turns: iterative``) are left out, as from the report's rows that show
    these values."""
    set_metrics = [m for m in metrics if isinstance(m, SetMetric)]
    if not set_metrics:
        return []
    cells = store.cells_frame()
    ok = cells[(cells["status"] == "ok") & cells["output_path"].notna() & cells["input_key"].isna()]
    by_extractor = defaultdict(list)
    for m in set_metrics:
        by_extractor[id(m.features)].append(m)
    rows = []
    for group in by_extractor.values():
        extractor = group[0].features
        reals = {}
        for (method, setting), of in ok.groupby(["method", "setting"], sort=False):
            frame = cell_frame(frames, of["backbone"].iloc[0])
            if frame not in reals:
                reals[frame] = source_features(extractor, group[0].extractor_id, refs, frame, batch_size)
            real = reals[frame]
            for m in group:
                m.start(real)
            for paths in _batched(list(of["output_path"]), batch_size):
                fake = _features(extractor, [read_png(Path(run_dir) / p) for p in paths], batch_size)
                for m in group:
                    m.update(fake)
            rows += [(method, setting, m.name, m.compute(), len(of)) for m in group]
    store.commit_set_metrics(rows, n_source=len(real))
    return rows


def score_missing(store, run_dir: Path, metrics: list, refs: list, frames: dict, batch_size: int,
                  progress: bool = True, retry_failed: bool = False) -> int:  # fmt: skip
    """Compute, from the saved images, every per-image value of ``metrics`` that an ok cell lacks
    (metrics added to the run after the cell finished, or a ``score`` that was killed); values
    already stored are left as they are, except, with ``retry_failed``, a judge metric's NaN
    whose note says the judge gave no answer (``REQUEST_FAILURES``: refused, filtered, transport
    error, timeout), which is computed again (the judge asks only the requests it has no cached
    answer for). The images are scored by ``score_images``, the worker's path; a metric that
    fails on an image stops the command with its error. Returns how many cells gained values."""
    from bench.execution.progress import progress_bar

    image_metrics = [m for m in metrics if isinstance(m, ImageMetric)]
    if not image_metrics:
        return 0
    stored = store.stored_metrics()
    cells = store.cells_frame()
    ok = cells[(cells["status"] == "ok") & cells["output_path"].notna()]
    lacking = defaultdict(list)  # (sample id, backbone) -> [(cell, metrics it lacks)]
    retry = failed_requests(ok, image_metrics) if retry_failed else set()
    for cell in ok.itertuples():
        missing = [m for m in image_metrics if (cell.key, m.name) not in stored or (cell.key, m.name) in retry]
        if missing:
            lacking[cell.sample_id, cell.backbone].append((cell, missing))
    refs_by_id = {r.id: r for r in refs}
    outputs = dict(zip(cells["key"], cells["output_path"]))
    bar = progress_bar(len(lacking), unit="sample", enabled=progress)
    for (sample_id, backbone), todo in lacking.items():
        sample = refs_by_id[sample_id].load(cell_frame(frames, backbone))
        for metric in image_metrics:
            for batch in _batched([cell for cell, missing in todo if metric in missing], batch_size):
                edited = [read_png(Path(run_dir) / c.output_path) for c in batch]
                sources = [_turn_input(c, sample, outputs, run_dir) for c in batch]
                turns = [replace(sample, image=s) for s in sources]
                scores = score_images([metric], edited, sources, turns, batch_size)
                for cell, score in zip(batch, scores):
                    if score.error is not None:
                        raise score.error
                    kept = {"notes": score.notes} if score.notes else {}
                    store.add_cell_metrics(cell.key, score.values, **kept)
        bar.update(1)
    bar.close()
    return sum(len(todo) for todo in lacking.values())


def _turn_input(cell, sample, outputs: dict, run_dir: Path) -> torch.Tensor:
    """The image a cell edited: a chain's previous output (``input_key``), else the sample's source."""
    input_key = getattr(cell, "input_key", None)
    if isinstance(input_key, str):
        return read_png(Path(run_dir) / outputs[input_key])
    return sample.image


def failed_requests(cells, metrics: list) -> set[tuple[str, str]]:
    """(cell key, metric) of the judge values that are NaN because the judge gave no answer."""
    found = set()
    for m in metrics:
        column = f"note.{m.name}"
        if not m.is_judge or column not in cells.columns:
            continue
        for key, value, note in zip(cells["key"], cells[f"metric.{m.name}"], cells[column]):
            failure = m.failure(note) if isinstance(note, str) and math.isnan(value) else None
            if failure is not None and failure.kind in REQUEST_FAILURES:
                found.add((key, m.name))
    return found


def score_run(run_dir: str | Path, names: list[str], untrained: bool = False, progress: bool = True,
              retry_failed: bool = False, rescore: tuple[str, ...] = ()) -> dict:  # fmt: skip
    """Add metrics ``names`` to a finished run without re-running methods; returns counts.
    ``retry_failed``: also ask the judge again the requests that failed (``score_missing``);
    ``rescore``: metrics whose stored values are dropped and computed again (e.g. of another
    judge, which ``claim_judges`` otherwise refuses to mix with this one's).

    The metrics are recorded in the run's manifest before any is computed, so a ``score`` that
    is killed is finished by running it again or by ``run --resume``: either computes exactly
    the values still missing."""
    from bench.execution.runlock import locked_run

    run_dir = Path(run_dir)
    with locked_run(run_dir) as manifest:
        return _score_locked(run_dir, manifest, list(dict.fromkeys([*names, *rescore])), untrained, progress,
                             retry_failed, tuple(rescore))  # fmt: skip


def _score_locked(run_dir: Path, manifest: dict, names: list[str], untrained: bool, progress: bool,
                  retry_failed: bool, rescore: tuple[str, ...]) -> dict:  # fmt: skip
    from bench.data import load_dataset
    from bench.devices import resolve_device
    from bench.execution.config import config_from_resolved
    from bench.metrics.extractors import Extractors
    from bench.metrics.judge import judge_identity
    from bench.store import Store

    config = config_from_resolved(manifest["config"])
    options = replace(config.metric_options, untrained_extractors=untrained)  # this command's flag decides
    metrics = [get_metric(n)() for n in names]
    extractors = Extractors(options, resolve_device(config.backbone.device))
    load_metrics(metrics, extractors)
    if "backbone" not in manifest:
        raise ConfigError(f"run {run_dir} was stopped before its backbone loaded; finish it with run --resume first")
    frames = run_frames(manifest)
    refs = load_dataset(config.dataset)
    store = Store(run_dir)
    try:
        claim_judges(store, manifest, metrics, run_dir, rescore)
        labels = store.info("labels", [])
        store.set_info("labels", labels + [label for label in extractors.labels() if label not in labels])
        judge = judge_identity(extractors)
        if judge:
            manifest["judge"] = judge
        _add_to_manifest(store, manifest, names, untrained)
        scored = score_missing(store, run_dir, metrics, refs, frames, options.batch_size, progress, retry_failed)
        sets = score_sets(store, run_dir, metrics, refs, frames, options.batch_size)
    finally:
        store.close()
    return {"cells scored": scored, "set values": len(sets), "NaN set values": sum(math.isnan(r[3]) for r in sets)}


def _add_to_manifest(store, manifest: dict, names: list[str], untrained: bool) -> None:
    """Record scored metrics in the run's config, so that ``--resume`` computes them for new cells."""
    config = manifest["config"]
    config["metrics"] = list(dict.fromkeys([*config["metrics"], *names]))
    if untrained:
        config["metric_options"]["untrained_extractors"] = True
    store.save_manifest(manifest)
