"""Mistakes in datasets and outside images, tried through the command line as a new user would:
each is one line naming the sample, file or parameter and what is allowed, given before any run folder."""

import yaml
from click.testing import CliRunner

from run_bench import main
from tests.helpers import write_hub_fixture


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def write_config(tmp_path, dataset: dict, methods=None) -> str:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"dataset": dataset, "methods": methods or {"reconstruct": {}}, "metrics": ["psnr"]}))
    return str(config)


def run_fails(config, *args, runs=None) -> str:
    """The one-line error of ``run CONFIG ARGS`` (with --dry-run and for real); no run folder is made."""
    for extra in (["--dry-run"], ["--out", runs, "--quiet"]):
        result = invoke("run", config, *args, *extra)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert not runs.exists() or not any(runs.iterdir())
    return result.output.removeprefix("Error: ").strip()


def test_a_revision_with_a_local_copy_is_refused(tmp_path):
    folder = write_hub_fixture(tmp_path / "mb", "magicbrush", "dev", n=2)
    config = write_config(tmp_path, {"name": "magicbrush", "path": folder})
    error = run_fails(config, "--set", "dataset.revision=abc123", runs=tmp_path / "runs")
    assert error.startswith("dataset.revision 'abc123' picks a version of the hub repository") and folder in error
