"""Choosing an executor: the config block, the command line, and Ray missing."""

import sys

import pytest
from click.testing import CliRunner

from bench.errors import ConfigError
from bench.execution.config import ExecutorSpec, build_config
from run_bench import main


def test_executor_block_is_validated_and_resolved():
    config = build_config({"methods": {"reconstruct": {}}, "executor": {"name": "ray", "workers": 2, "address": "auto"}})
    assert config.executor == ExecutorSpec("ray", 2, "auto")
    assert config.resolved["executor"] == {"name": "ray", "workers": 2, "address": "auto"}
    assert build_config({"methods": {"reconstruct": {}}}).executor == ExecutorSpec()
    with pytest.raises(ConfigError, match="unknown executor 'dask'.*allowed: local, ray"):
        build_config({"methods": {"reconstruct": {}}, "executor": {"name": "dask"}})
    with pytest.raises(ConfigError, match="workers = 0"):
        build_config({"methods": {"reconstruct": {}}, "executor": {"workers": 0}})


def test_executor_ray_without_ray_fails_before_any_work_with_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes ``import ray`` raise ImportError
    out = tmp_path / "runs"
    result = CliRunner().invoke(main, ["run", "configs/quickstart.yaml", "--executor", "ray", "--workers", "2", "--out", str(out)])
    assert result.exit_code == 1
    assert 'pip install "editbench[ray]"' in result.output
    assert not out.exists() or not any(out.iterdir())
