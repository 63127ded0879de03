"""Logging a finished run to an experiment tracker: MLflow or Weights & Biases (``--log``).

What is logged (``bench.reporting.tracker_payload``): per method and setting its parameters,
metrics (mean, interval, n) and cost; the run's provenance; the report and a few image grids.
Names and tags follow the run folder. Both trackers are optional extras (``pip install "editbench[mlflow]"``,
``"editbench[wandb]"``) and work offline: MLflow writes a local SQLite store unless given a
tracking URI, W&B runs offline unless the user is logged in (``bench.reporting.tracker_backends``).

Logging never fails the run: ``log_run`` turns any error into a warning, and the run folder is
complete whatever the tracker did.
"""

import importlib.util
import tempfile
from pathlib import Path

from bench.errors import ConfigError
from bench.reporting import tracker_backends
from bench.reporting.tracker_payload import logged_run

BACKENDS = {"mlflow": tracker_backends.log_mlflow, "wandb": tracker_backends.log_wandb}
TRACKERS = tuple(BACKENDS)


def check_tracker(name: str) -> None:
    """Raise ``ConfigError`` when ``name`` is no tracker or its package is not installed (said
    before a run starts, so a long run does not end unlogged for a missing extra)."""
    if name not in TRACKERS:
        raise ConfigError(f"--log {name!r}: trackers are {', '.join(TRACKERS)}")
    if importlib.util.find_spec(name) is None:
        raise ConfigError(f"--log {name}: the {name} package is not installed; pip install \"editbench[{name}]\"")


def log_run(run_dir, tracker: str, uri: str | None = None, project: str = "editbench") -> tuple[bool, str]:
    """Log the run folder to ``tracker``; returns whether it was logged and a sentence saying
    where (or why not). Never raises: a tracker that fails leaves a warning and a complete run folder.

    ``uri``: MLflow's tracking URI (default: ``MLFLOW_TRACKING_URI``, else a SQLite store in
    ``mlflow/`` beside the run folder); for W&B, the folder its files go to (default:
    ``WANDB_DIR``, else beside the run folder). ``project``: the MLflow experiment or W&B project."""
    try:
        check_tracker(tracker)
        with tempfile.TemporaryDirectory(prefix="editbench-log-") as tmp:
            logged = logged_run(run_dir, Path(tmp))
            where = BACKENDS[tracker](logged, uri, project)
    except Exception as exc:  # noqa: BLE001  (any tracker error becomes a warning, by design)
        failure = f"{type(exc).__name__}: {exc}"
        return False, f"--log {tracker}: logging failed ({failure}); the run folder {run_dir} is complete"
    return True, f"--log {tracker}: {where}"


