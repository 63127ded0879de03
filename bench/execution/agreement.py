"""Scoring a human-preference set with a judge: every candidate of every group gets the judge
metric's value (``editbench judge-agreement``; the agreement itself: ``bench.reporting.agreement``).

The judge is any per-image metric (``vie_o`` by default, or a reward model), configured by a YAML
file: ``judge:`` (``JudgeOptions`` keys), or a whole ``metric_options`` block. Images are brought
to ``resolution`` by the samples' rule (shorter side, centre crop); a pointwise judge sees the
source, the candidate and the instruction, as in a run.
"""

from dataclasses import dataclass
from pathlib import Path

from bench.errors import ConfigError
from bench.metrics import ImageMetric, MetricOptions, get_metric, load_metrics
from bench.metrics.extractors import Extractors
from bench.metrics.image_scores import score_images
from bench.preferences import PreferenceGroup
from bench.samples import Sample, prepare_image
from bench.yaml_file import read_yaml


@dataclass
class JudgedGroup:
    """A preference group with the judge's value per candidate (NaN: the judge failed) and the
    failure class of each NaN (``bench.metrics.judge_failures``; None when it has none)."""

    group: PreferenceGroup
    values: list[float]
    failures: list[str | None]


def judge_options(path: str | None, untrained: bool) -> MetricOptions:
    """The ``metric_options`` a judge config file gives (``judge:`` alone, or ``metric_options:``)."""
    data = read_yaml(Path(path), "judge config") if path else {}
    if not isinstance(data, dict):
        raise ConfigError(f"--judge {path}: expected a mapping with judge: or metric_options:")
    block = data.get("metric_options", {"judge": data["judge"]} if "judge" in data else {})
    try:
        return MetricOptions(**block, untrained_extractors=untrained)
    except TypeError as exc:
        raise ConfigError(f"--judge {path}: {exc}") from None


def score_groups(groups: list[PreferenceGroup], metric_name: str, options: MetricOptions, resolution: int,
                 device: str = "cpu") -> tuple[list[JudgedGroup], dict | None]:  # fmt: skip
    """The metric's value for every candidate, and the identity of the judge or reward model that gave them."""
    from bench.metrics.judge import judge_identity

    metric = get_metric(metric_name)()
    if not isinstance(metric, ImageMetric):
        raise ConfigError(f"--metric {metric_name}: judge-agreement needs a per-image metric (a judge or reward model)")
    extractors = Extractors(options, device)
    load_metrics([metric], extractors)
    judged = []
    for group in groups:
        source = prepare_image(group.source, resolution)
        sample = Sample(group.id, source, "", instruction=group.instruction)
        edited = [prepare_image(c, resolution) for c in group.candidates]
        scores = score_images([metric], edited, [source] * len(edited), [sample] * len(edited), options.batch_size)
        for score in scores:
            if score.error is not None:
                raise score.error
        values = [s.values[metric_name] for s in scores]
        failures = [_failure(metric, s.notes.get(metric_name)) for s in scores]
        judged.append(JudgedGroup(group, values, failures))
    return judged, judge_identity(extractors) or getattr(metric, "identity", None)  # a judge or a reward model


def _failure(metric: ImageMetric, note: str | None) -> str | None:
    failure = metric.failure(note) if note else None
    return failure.kind if failure else None
