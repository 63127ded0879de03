"""Per-image metrics over many images, in batches: the one scoring path of the worker (the cells
of one edited batch) and of ``editbench score`` (the values a finished run lacks).

Each metric sees the images in chunks of at most ``batch_size`` (images of one size together),
so a network (CLIP, a judge) gets a batch per call. A metric call that raises on a chunk is
repeated one image at a time, so only the image it fails on carries the error; that image is
scored by no further metric (its cell fails with the first error, as if scored alone).
"""

from collections import defaultdict
from dataclasses import dataclass, field

import torch

from bench.metrics.base import ImageMetric


@dataclass
class ImageScore:
    """One image's scores: a value per metric, the notes metrics left (a judge's answers, NaN
    reasons), and the error scoring it ended with (None when every metric gave a value)."""

    values: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    error: Exception | None = None


def _chunks(indices: list[int], edited: list, sources: list, batch_size: int) -> list[list[int]]:
    """``indices`` in chunks of at most ``batch_size``, each of images of one size."""
    by_shape = defaultdict(list)
    for i in indices:
        by_shape[(tuple(edited[i].shape), tuple(sources[i].shape))].append(i)
    return [group[at : at + batch_size] for group in by_shape.values() for at in range(0, len(group), batch_size)]


def _score_chunk(metric: ImageMetric, chunk: list[int], edited, sources, samples, scores: list[ImageScore]) -> None:
    try:
        values = metric(torch.stack([edited[i] for i in chunk]), torch.stack([sources[i] for i in chunk]),
                        [samples[i] for i in chunk])  # fmt: skip
    except Exception as exc:  # a bad image or a bug in one metric: isolate the image it fails on
        if len(chunk) == 1:
            scores[chunk[0]].error = exc
        else:
            for i in chunk:
                _score_chunk(metric, [i], edited, sources, samples, scores)
        return
    notes = metric.notes or [None] * len(chunk)
    for i, value, note in zip(chunk, values, notes):
        scores[i].values[metric.name] = float(value)
        if note:
            scores[i].notes[metric.name] = note


def score_images(metrics: list, edited: list[torch.Tensor], sources: list[torch.Tensor], samples: list,
                 batch_size: int) -> list[ImageScore]:  # fmt: skip
    """Score ``edited[i]`` against ``sources[i]`` and ``samples[i]`` ((3, H, W) images in [0, 1])
    with every per-image metric of ``metrics`` (set and cost metrics are left out), in batches of
    at most ``batch_size``; one ``ImageScore`` per image, in order."""
    if not len(edited) == len(sources) == len(samples):
        raise ValueError(f"{len(edited)} edited images, {len(sources)} sources and {len(samples)} samples")
    scores = [ImageScore() for _ in edited]
    for metric in metrics:
        if not isinstance(metric, ImageMetric):
            continue
        alive = [i for i, score in enumerate(scores) if score.error is None]
        for chunk in _chunks(alive, edited, sources, batch_size):
            _score_chunk(metric, chunk, edited, sources, samples, scores)
    return scores
