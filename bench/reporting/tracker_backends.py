"""The two trackers ``--log`` writes to, each behind one function that takes a ``LoggedRun``
(``bench.reporting.tracker_payload``) and returns where the run went. Each imports its package only
when called: both are optional extras.

MLflow: one parent run named after the run folder (provenance and resolved config as
parameters, the report and grids as artifacts) and one nested run per method x setting (its
parameters, and its metrics and cost as metrics). Without a tracking URI it writes a SQLite
store, ``mlflow/mlflow.db`` with artifacts in ``mlflow/artifacts/``, in the folder that holds the
run folder (MLflow's plain-folder store is deprecated and refuses to start by default).

W&B: one run named after the run folder: provenance and config as its config, every row's numbers
in its summary as ``<row>/<metric>.mean`` and as one table ``results``, the grids as images and the
report files as an artifact. Offline unless ``WANDB_MODE`` says otherwise or the user is logged in
(``WANDB_API_KEY``, or W&B's entry in ``~/.netrc``); an offline run is uploaded later with
``wandb sync``.
"""

import json
import netrc
import os
import re
from pathlib import Path
from urllib.parse import urlparse

from bench.reporting.tracker_payload import LoggedRun

MLFLOW_PARAM_CHARS = 6000  # MLflow's limit on a parameter value
MLFLOW_BATCH = 100  # parameters per log_batch call (MLflow's limit)
WANDB_TAG_CHARS = 64  # W&B's limit on a tag
WANDB_HOST = "https://api.wandb.ai"


# -- MLflow ------------------------------------------------------------------------------------------
def mlflow_store(run_dir: Path, uri: str | None) -> tuple[str, str | None]:
    """The tracking URI and, for a local SQLite store, the artifact folder (a file URI) beside it."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        folder = run_dir.resolve().parent / "mlflow"
        folder.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{folder / 'mlflow.db'}"
    if uri.startswith("sqlite:///"):
        return uri, (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return uri, None


def log_mlflow(logged: LoggedRun, uri: str | None, project: str) -> str:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    uri, artifacts = mlflow_store(logged.run_dir, uri)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(project)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(project, artifacts)

    def log_params(run_id: str, params: dict[str, str]) -> None:
        items = [Param(k, str(v)[:MLFLOW_PARAM_CHARS]) for k, v in params.items()]
        for i in range(0, len(items), MLFLOW_BATCH):
            client.log_batch(run_id, params=items[i : i + MLFLOW_BATCH])

    parent = client.create_run(experiment_id, run_name=logged.name, tags=logged.tags).info.run_id
    status = "FAILED"
    try:
        log_params(parent, {**logged.params, **flat("config", logged.config)})
        client.log_artifacts(parent, str(logged.report), "report")
        for path in logged.grids:
            client.log_artifact(parent, str(path), "grids")
        for row in logged.rows:
            tags = {**logged.tags, "mlflow.parentRunId": parent, "editbench.row": row.name}
            child = client.create_run(experiment_id, run_name=row.name, tags=tags).info.run_id
            log_params(child, row.params)
            client.log_batch(child, metrics=[Metric(k, v, 0, 0) for k, v in row.metrics.items()])
            client.set_terminated(child)
        status = "FINISHED"
    finally:
        client.set_terminated(parent, status)
    return (f"logged to MLflow at {uri}, experiment {project!r}, run {logged.name} ({parent}); "
            f"look with: mlflow ui --backend-store-uri {uri}")  # fmt: skip


def flat(prefix: str, value) -> dict[str, str]:
    """A nested config as ``prefix.key.sub`` -> text (lists stay whole, as JSON)."""
    if isinstance(value, dict) and value:
        return {k: v for key, sub in value.items() for k, v in flat(f"{prefix}.{key}", sub).items()}
    return {prefix: value if isinstance(value, str) else _json(value)}


def _json(value) -> str:
    return json.dumps(value, default=str)


# -- Weights & Biases ------------------------------------------------------------------------------
def wandb_logged_in() -> bool:
    """Whether W&B has credentials here: ``WANDB_API_KEY``, or a ``~/.netrc`` entry for its host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or WANDB_HOST).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def log_wandb(logged: LoggedRun, directory: str | None, project: str) -> str:
    import wandb

    folder = Path(directory or os.environ.get("WANDB_DIR") or logged.run_dir.resolve().parent)
    folder.mkdir(parents=True, exist_ok=True)
    mode = os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")
    settings = wandb.Settings(console="off", silent=True, save_code=False)
    tags = ["editbench", *(label[:WANDB_TAG_CHARS] for label in logged.tags["editbench.labels"].split("; "))]
    config = {"editbench": logged.tags, "provenance": logged.params, "config": logged.config}
    run = wandb.init(project=project, name=logged.name, dir=str(folder), mode=mode, tags=tags, config=config,
                     settings=settings, reinit="create_new")  # fmt: skip
    exit_code = 1
    try:
        columns = list(dict.fromkeys(k for row in logged.rows for k in row.metrics))
        table = wandb.Table(columns=["row", "params", *columns])
        for row in logged.rows:
            run.summary.update({f"{row.name}/{k}": v for k, v in row.metrics.items()})
            table.add_data(row.name, _json(row.params), *(row.metrics.get(k) for k in columns))
        run.log({"results": table})
        if logged.grids:
            run.log({"grids": [wandb.Image(str(p), caption=p.stem) for p in logged.grids]})
        report = wandb.Artifact(f"report-{re.sub(r'[^A-Za-z0-9._-]', '-', logged.name)}", type="report")
        report.add_dir(str(logged.report))
        run.log_artifact(report)
        exit_code = 0
    finally:
        run.finish(exit_code=exit_code)
    upload = f"; upload it with: wandb sync {run.settings.sync_dir}" if mode == "offline" else ""
    return f"logged to W&B ({mode}), project {project!r}, run {logged.name} in {run.settings.sync_dir}{upload}"
