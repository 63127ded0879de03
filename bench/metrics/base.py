"""The metric interface: what every metric declares (name, direction, ranges, needs, options)
and the three kinds, per image (``ImageMetric``), per set (``SetMetric``) and cost (``CostMetric``).

A metric declares its ``name``, its ``direction`` (higher is better or not), the value
range of the images it takes, what it needs from a sample, and the ``metric_options`` it reads
(``bench.metrics.options.Option``). Per-image metrics score an edited image against its source;
set-level metrics stream over every cell of one method and setting and are computed once at the
end (torchmetrics-style update/compute). The registry of every metric is ``bench.metrics``.
"""

from typing import ClassVar

import torch

from bench.metrics.options import Option


def check_range(images: torch.Tensor, low: float, high: float, what: str) -> None:
    """Refuse images outside ``[low, high]`` (or not finite) instead of scoring them silently."""
    if not torch.isfinite(images).all():
        raise ValueError(f"{what}: images contain NaN or Inf")
    lo, hi = float(images.min()), float(images.max())
    if lo < low - 1e-4 or hi > high + 1e-4:
        raise ValueError(f"{what}: images must lie in [{low:g}, {high:g}], got values in [{lo:.3g}, {hi:.3g}]")


NEEDS = ("mask", "source_prompt", "target_prompt", "instruction", "target_image", "output_caption", "pretrained weights")


class Metric:
    """Common declarations of every metric.

    ``input_range``: the images it takes (always [0, 1]; metrics that need another range,
    like LPIPS's [-1, 1], convert inside). ``value_range``: the values it gives.
    ``nan_reason``: when the metric is undefined for an input it gives NaN, never drops it,
    and this says why (the aggregator reports it). ``options``: the ``metric_options`` keys it
    reads besides the global ones (``bench.metrics.options.GLOBAL_OPTIONS``); declaring them here
    is what makes them valid config keys and lists them in ``editbench metrics``.
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool]
    input_range: ClassVar[tuple[float, float]] = (0.0, 1.0)
    value_range: ClassVar[tuple[float, float]] = (0.0, float("inf"))
    needs: ClassVar[frozenset[str]] = frozenset()
    description: ClassVar[str] = ""
    nan_reason: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()
    device: torch.device = torch.device("cpu")

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    def load(self, extractors) -> None:
        """Take what the metric needs from ``bench.metrics.extractors.Extractors`` (once per run):
        its networks, ``extractors.get(network, *arguments, metric=self.name)``, and its options,
        ``extractors.options.<name>``."""
        self.device = extractors.device


class ImageMetric(Metric):
    """Scores a batch of edited images against their sources: one value per image (NaN
    where undefined), on the extractors' device, without autograd.

    ``notes``: after a call, None, or one text per image that the store keeps beside the value
    (a judge's raw answer and why it gave NaN), for audit."""

    notes: list[str] | None = None
    #: Whether a judge (a VLM or reward model) gives the values: tables then count its answers by
    #: class (``bench.metrics.judge_failures``) from the notes, read by ``failure``.
    is_judge: ClassVar[bool] = False

    @classmethod
    def failure(cls, note: str | None):
        """Why a value with this ``note`` is NaN, when the note says: a
        ``bench.metrics.judge_failures.Failure`` (class and specific reason); None otherwise (the
        declared ``nan_reason`` holds). Metrics whose notes record failures override it."""
        return None

    @classmethod
    def judge_samples(cls, note: str | None) -> list[float] | None:
        """The value under each of a judge's k answers when the note records them (a judge
        metric with ``judge.samples`` > 1), else None: tables then show the judge's spread."""
        return None

    def __call__(self, edited: torch.Tensor, source: torch.Tensor, samples: list) -> torch.Tensor:
        if edited.shape != source.shape or edited.ndim != 4 or len(samples) != edited.shape[0]:
            raise ValueError(
                f"metric {self.name!r}: expected edited and source images of one shape (B, 3, H, W) and B samples, "
                f"got {tuple(edited.shape)}, {tuple(source.shape)} and {len(samples)} samples"
            )
        for images, what in ((edited, "edited"), (source, "source")):
            if images.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
                raise ValueError(
                    f"metric {self.name!r}, {what} images: expected floats in [0, 1], got dtype {images.dtype}"
                )
            check_range(images, *self.input_range, f"metric {self.name!r}, {what} images")
        self.notes = None
        with torch.no_grad():
            values = self.compute(edited.float().to(self.device), source.float().to(self.device), samples)
        return values.detach().double().cpu()

    def compute(self, edited: torch.Tensor, source: torch.Tensor, samples: list) -> torch.Tensor:
        raise NotImplementedError


class SetMetric(Metric):
    """One value per method and setting: a distribution distance between features of its
    edited images and of the dataset's source images (torchmetrics states, streaming).

    ``load`` sets ``features`` (a module: images in [0, 1] -> (B, D) features, with
    ``num_features``) and ``extractor_id`` (names it in the source-feature cache); set metrics
    that share one ``features`` module see each image once."""

    features: torch.nn.Module
    extractor_id: str

    def start(self, real: torch.Tensor) -> None:
        """A fresh state whose real side holds the source features ``real`` (N, D)."""
        raise NotImplementedError

    def update(self, fake: torch.Tensor) -> None:
        """Add features (B, D) of edited images."""
        raise NotImplementedError

    def compute(self) -> float:
        raise NotImplementedError


class CostMetric(Metric):
    """A cost the runner measures for every cell (a column of the store), under the metric interface."""

    column: ClassVar[str]

    def value(self, cell) -> float:
        """The cost of one cell (a ``CellRecord`` or a row with the same fields); NaN if not measured."""
        value = getattr(cell, self.column, None) if not isinstance(cell, dict) else cell.get(self.column)
        return float("nan") if value is None else float(value)


def needs_text(cls: type[Metric]) -> str:
    return ", ".join(n for n in NEEDS if n in cls.needs) or "nothing"
