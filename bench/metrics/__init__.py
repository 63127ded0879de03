"""The metrics registry: every metric of this package's modules, and the options they declare.

A metric is a class of ``bench.metrics.base`` (its interface) listed in its module's
``METRICS`` tuple; every module of this package is imported once here and its ``METRICS`` are
registered, so a new metric is a new module (or a class added to one) and nothing else. The
``metric_options`` block of a config is ``MetricOptions``: one field per option that a
registered metric declares (``Metric.options``) or that every metric shares
(``bench.metrics.options.GLOBAL_OPTIONS``), all in ``OPTIONS``. A metric with a network declares
its loader beside it with ``bench.metrics.extractors.network``.
"""

import importlib
import pkgutil

from bench.errors import ConfigError, unknown
from bench.metrics.base import CostMetric, ImageMetric, Metric, SetMetric, needs_text
from bench.metrics.offline import ExtractorMissing
from bench.metrics.options import GLOBAL_OPTIONS, Option, collect, options_class

# the registry, and the interface names callers take from here
__all__ = ["METRICS", "OPTIONS", "MetricOptions", "get_metric", "load_metrics",
           "CostMetric", "ImageMetric", "Metric", "SetMetric", "needs_text"]  # fmt: skip


def _all_metrics() -> dict[str, type[Metric]]:
    """Every module's ``METRICS``, modules in name order. They are imported by name, which the import
    graph does not see; none of them imports this registry back (``tests/test_layers.py``)."""
    found: dict[str, type[Metric]] = {}
    for module in sorted(info.name for info in pkgutil.iter_modules(__path__)):
        for cls in getattr(importlib.import_module(f"{__name__}.{module}"), "METRICS", ()):
            if found.setdefault(cls.name, cls) is not cls:
                raise TypeError(f"metric name {cls.name!r} is registered twice ({found[cls.name]} and {cls})")
    return found


METRICS: dict[str, type[Metric]] = _all_metrics()
OPTIONS: dict[str, Option] = collect([*GLOBAL_OPTIONS, *(o for cls in METRICS.values() for o in cls.options)])
MetricOptions = options_class(OPTIONS)


def get_metric(name: str) -> type[Metric]:
    if name not in METRICS:
        raise ConfigError(unknown("metric", name, METRICS))
    return METRICS[name]


def load_metrics(metrics: list[Metric], extractors) -> None:
    """Load every metric's networks; if weights are missing, one error names all of them."""
    missing = []
    for metric in metrics:
        try:
            metric.load(extractors)
        except ExtractorMissing as exc:
            missing.append(exc)
    if missing:
        raise ExtractorMissing.merge(missing)
