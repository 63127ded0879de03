"""``--log mlflow|wandb``: a run logged offline into a temporary folder and read back through each
library's own reader (MLflow's client, W&B's ``wandb leet inspect``); a failing tracker is a
warning and never a failed run. Needs the extras ``editbench[mlflow]`` / ``editbench[wandb]``: the
tests of a missing one are skipped."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.errors import ConfigError
from bench.reporting.aggregate import load_run, summarize
from bench.reporting.tracker_backends import flat, wandb_logged_in
from bench.reporting.tracking import check_tracker, log_run
from run_bench import main
from tests.test_aggregate import cell, make_run


@pytest.fixture
def run_dir(tmp_path):
    levels = [("reconstruct", {}, 30.0), ("sdedit", {"t0": 0.3, "w": 7.5}, 20.0), ("sdedit", {"t0": 0.7, "w": 7.5}, 15.0)]
    cells = [cell(m, s, f"img{i}", {"psnr": p + i, "ssim": 0.5 + i / 10}, peak_mem_mb=100.0)
             for i in range(3) for m, s, p in levels]  # fmt: skip
    return make_run(tmp_path, "20260101-000000-abcdef", cells)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No tracker credentials or settings from the environment: W&B offline, MLflow local."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR", "WANDB_BASE_URL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))


def expected_means(run_dir) -> dict[str, float]:
    return {r.label: r.metrics["psnr"].mean for r in summarize(load_run(run_dir))}


def test_mlflow_logs_rows_provenance_and_artifacts(run_dir, tmp_path, offline):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    logged, message = log_run(run_dir, "mlflow", uri, "bench-test")
    assert logged, message
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("bench-test")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {run_dir.name, "reconstruct", "sdedit t0=0.3", "sdedit t0=0.7"}
    parent = runs[run_dir.name]
    assert parent.info.status == "FINISHED" and parent.data.tags["editbench.run"] == run_dir.name
    assert parent.data.tags["editbench.fingerprint"] == "fp-a" and parent.data.tags["editbench.commit"] == "abc1234"
    assert parent.data.params["commit"] == "abc1234" and "torch 2.0" in parent.data.params["packages"]
    assert json.loads(parent.data.params["config.seeds"]) == [0]
    child = runs["sdedit t0=0.3"]
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.params == {"method": "sdedit", "t0": "0.3", "w": "7.5"}
    assert child.data.metrics["psnr.mean"] == pytest.approx(expected_means(run_dir)["t0=0.3"]) == 21.0
    assert child.data.metrics["psnr.n"] == 3 and child.data.metrics["psnr.ci_low"] < 21 < child.data.metrics["psnr.ci_high"]
    assert child.data.metrics["cost.nfe"] == 4 and child.data.metrics["cost.peak_mem_mb"] == 100
    assert child.data.metrics["ok"] == 3 and child.data.metrics["failed"] == 0
    files = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert files == {"report/report.md", "report/report.html", "report/report_files"}
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "report/report_files")}
    assert "report/report_files/grid_0.png" in figures and "report/report_files/cost.png" in figures
    grids = {a.path for a in client.list_artifacts(parent.info.run_id, "grids")}
    assert grids == {"grids/grid_0.png", "grids/grid_1.png", "grids/grid_2.png"}
    report = Path(client.download_artifacts(parent.info.run_id, "report/report.md", str(tmp_path / "down")))
    assert "| sdedit | t0=0.3 | 3 |" in report.read_text()


def test_mlflow_defaults_to_a_local_store_beside_the_run_folder(run_dir, offline):
    mlflow = pytest.importorskip("mlflow")
    logged, message = log_run(run_dir, "mlflow")
    assert logged, message
    uri = f"sqlite:///{run_dir.resolve().parent / 'mlflow' / 'mlflow.db'}"
    assert uri in message
    runs = mlflow.MlflowClient(tracking_uri=uri).search_runs(
        [mlflow.MlflowClient(tracking_uri=uri).get_experiment_by_name("editbench").experiment_id])
    assert len(runs) == 4 and (run_dir.parent / "mlflow" / "artifacts").is_dir()


def wandb_inspect(run_folder: Path) -> dict:
    """The run as W&B's own reader of its offline log sees it."""
    wandb_cli = Path(sys.executable).with_name("wandb")
    done = subprocess.run([str(wandb_cli), "leet", "inspect", str(run_folder), "--summary", "--json"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_wandb_logs_offline_without_credentials(run_dir, tmp_path, offline):
    pytest.importorskip("wandb")
    assert not wandb_logged_in()
    logged, message = log_run(run_dir, "wandb", str(tmp_path / "wb"), "bench-test")
    assert logged, message
    assert "(offline)" in message and "wandb sync" in message
    [folder] = (tmp_path / "wb" / "wandb").glob("offline-run-*")
    seen = wandb_inspect(folder)
    assert seen["name"] == run_dir.name and seen["project"] == "bench-test" and seen["state"] == "finished"
    assert "untrained backbone" in seen["tags"]
    assert seen["config"]["editbench"]["editbench.fingerprint"] == "fp-a"
    assert seen["config"]["provenance"]["commit"] == "abc1234"
    summary = seen["summary"]
    assert summary["sdedit t0=0.3/psnr.mean"] == pytest.approx(21.0) and summary["sdedit t0=0.3/psnr.n"] == 3
    assert summary["reconstruct/cost.nfe"] == 4
    assert summary["results"]["nrows"] == 3 and summary["grids"]["count"] == 3
    table = json.loads((folder / "files" / summary["results"]["path"]).read_text())
    assert table["columns"][:2] == ["row", "params"] and [r[0] for r in table["data"]][1] == "sdedit t0=0.3"
    records = subprocess.run([str(Path(sys.executable).with_name("wandb")), "leet", "inspect", str(folder), "--json"],
                             capture_output=True, text=True, timeout=120).stdout  # fmt: skip
    artifacts = [json.loads(line)["artifact"] for line in records.splitlines() if '"type":"artifact"' in line]
    report = [a for a in artifacts if a["type"] == "report"]
    assert report and {"report.md", "report.html", "report_files/grid_0.png"} <= {
        e["path"] for e in report[0]["manifest"]["contents"]}  # fmt: skip


def test_a_failing_tracker_is_a_warning_and_the_run_stays_complete(run_dir, tmp_path, offline):
    pytest.importorskip("mlflow")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the store's folder should be")
    before = sorted(p.name for p in run_dir.rglob("*"))
    logged, message = log_run(run_dir, "mlflow", f"sqlite:///{blocked / 'sub' / 'mlflow.db'}")
    assert not logged and "logging failed" in message and f"the run folder {run_dir} is complete" in message
    assert sorted(p.name for p in run_dir.rglob("*")) == before
    result = CliRunner().invoke(main, ["report", str(run_dir), "--log", "mlflow", "--log-uri",
                                       f"sqlite:///{blocked / 'sub' / 'mlflow.db'}"])  # fmt: skip
    assert result.exit_code == 0 and "warning: --log mlflow: logging failed" in result.output


def test_a_missing_extra_is_said_before_a_run_starts(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r'pip install "editbench\[wandb\]"'):
        check_tracker("wandb")
    result = CliRunner().invoke(main, ["run", "configs/quickstart.yaml", "--log", "wandb", "--dry-run"])
    assert result.exit_code != 0 and "editbench[wandb]" in result.output


def test_flat_config_keys():
    assert flat("config", {"a": {"b": 1, "c": [1, 2]}, "d": "x", "e": {}}) == {
        "config.a.b": "1", "config.a.c": "[1, 2]", "config.d": "x", "config.e": "{}"}  # fmt: skip


@pytest.mark.slow
def test_the_quickstart_logs_to_mlflow_and_wandb_from_the_command_line(tmp_path, offline):
    """``editbench run --log mlflow`` on the quickstart (1 sample, 2 steps), then ``report --log wandb``:
    its metrics and report read back from both."""
    mlflow = pytest.importorskip("mlflow")
    import yaml

    from bench.paths import repo_root
    from tests.helpers import write_dataset

    quickstart = yaml.safe_load((repo_root() / "configs" / "quickstart.yaml").read_text())
    quickstart["dataset"] = {"path": write_dataset(tmp_path / "data", n=1)}
    quickstart["methods"] = {"reconstruct": {}, "sdedit": {"t0": 0.5, "steps": 2}}
    (tmp_path / "q.yaml").write_text(yaml.safe_dump(quickstart))
    result = CliRunner().invoke(main, ["run", str(tmp_path / "q.yaml"), "--out", str(tmp_path / "runs"), "--quiet",
                                       "--log", "mlflow"])  # fmt: skip
    assert result.exit_code == 0, result.output
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert "--log mlflow: logged to MLflow" in result.output
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow' / 'mlflow.db'}")
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("editbench").experiment_id])}
    means = {r.method: r.metrics for r in summarize(load_run(run_dir))}
    assert set(runs) == {run_dir.name, "reconstruct", "sdedit"}
    for method in ("reconstruct", "sdedit"):
        for metric in ("psnr", "ssim"):
            assert runs[method].data.metrics[f"{metric}.mean"] == pytest.approx(means[method][metric].mean)
    assert {a.path for a in client.list_artifacts(runs[run_dir.name].info.run_id, "report")} == {
        "report/report.md", "report/report.html", "report/report_files"}  # fmt: skip
    if importlib.util.find_spec("wandb") is None:
        return
    logged = CliRunner().invoke(main, ["report", str(run_dir), "--log", "wandb", "--log-uri", str(tmp_path / "wb")])
    assert logged.exit_code == 0 and "logged to W&B (offline)" in logged.output, logged.output
    [folder] = (tmp_path / "wb" / "wandb").glob("offline-run-*")
    summary = wandb_inspect(folder)["summary"]
    for method in ("reconstruct", "sdedit"):
        for metric in ("psnr", "ssim"):
            assert summary[f"{method}/{metric}.mean"] == pytest.approx(means[method][metric].mean)
