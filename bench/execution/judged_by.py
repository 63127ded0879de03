"""Which judge gave each judged metric's values in a run, so one metric's values never come
from two judges.

The store records, per judge metric, the line of the judge that made its values (run info
``judged_by``): a VLM judge's ``Judge.describe`` (model, revision, request form, template
version, decoding) or a reward model's (EditReward: its weights, trained or the untrained tiny
one, dtype). A run that starts, resumes or is scored again claims its metrics' judges before it
computes anything: a metric that already holds values of another judge stops the command with
one line naming the metric, both judges and the ways on, unless the command re-judges it
(``editbench score --rescore``), which drops its old values and records the new judge in one
transaction.
"""

from pathlib import Path

from bench.errors import ConfigError
from bench.metrics.judge import metric_judges

#: The run info key of the per-metric judge lines.
JUDGED_BY = "judged_by"


def recorded_judges(store, manifest: dict, current: dict[str, dict]) -> dict[str, str]:
    """The judge line that made each metric's stored values. A run from before per-metric
    records names one judge in its manifest: it stands for the metrics of ``current`` (name ->
    identity) without a record that are judged with a template of its template's name (the part
    before ``/``)."""
    old = manifest.get("judge") or {}
    family = str(old.get("template", "")).split("/")[0]
    legacy = {name: old["line"] for name, identity in current.items()
              if family and str(identity.get("template", "")).split("/")[0] == family}  # fmt: skip
    return {**legacy, **store.info(JUDGED_BY, {})}


def claim_judges(store, manifest: dict, metrics: list, run_dir: Path, rescore: tuple[str, ...] = ()) -> None:
    """Check that every loaded judge metric of ``metrics`` holds no values of another judge
    (``ConfigError`` naming the first that does), then record their judges; the metrics in
    ``rescore`` lose their stored values instead of being checked."""
    judges = metric_judges(metrics)
    current = {name: identity["line"] for name, identity in judges.items()}
    recorded = recorded_judges(store, manifest, judges)
    stored = store.metric_names()
    for name, line in current.items():
        old = recorded.get(name)
        if old and old != line and name in stored and name not in rescore:
            raise ConfigError(
                f"run {run_dir}: the judge changed since metric {name!r} was judged ({old} -> {line}); results "
                f"would mix. Re-judge its values (editbench score {run_dir} --rescore {name}), go back to the judge "
                "that made them (its template version, model and request form), or start a new run."
            )
    store.replace_metric_values(list(rescore), {JUDGED_BY: {**recorded, **current}})
