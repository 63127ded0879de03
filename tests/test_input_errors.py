"""Mistakes in datasets and outside images, tried through the command line as a new user would:
each is one line naming the sample, file or parameter and what is allowed, given before any run folder."""

import yaml
from click.testing import CliRunner

from run_bench import main
from tests.helpers import write_dataset, write_hub_fixture


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


def test_a_filter_that_matches_nothing_names_itself_and_the_values_present(tmp_path):
    folder = write_hub_fixture(tmp_path / "gedit", "gedit_bench", "train", n=4)
    config = write_config(tmp_path, {"name": "gedit_bench", "path": folder})
    error = run_fails(config, "--set", "dataset.where.language=fr", runs=tmp_path / "runs")
    assert error == "dataset.where.language = fr selects no samples: it matches none of the 4; values present: cn, en"
    error = run_fails(config, "--set", "dataset.where.language=en", "--set", "dataset.edit_types=subject-remove",
                      runs=tmp_path / "runs")  # fmt: skip
    assert error == "dataset.edit_types = subject-remove selects no samples: it matches none of the 2; values present: subject-add"


def test_compare_names_the_dataset_keys_that_differ(tmp_path):
    data = write_dataset(tmp_path / "data", n=2)
    config = write_config(tmp_path, {"path": data})
    runs = [invoke("run", config, "--set", f"dataset.limit={n}", "--out", tmp_path / "runs", "--quiet") for n in (1, 2)]
    assert all(r.exit_code == 0 for r in runs), [r.output for r in runs]
    base, new = (r.stdout.strip().splitlines()[-1] for r in runs)
    result = invoke("compare", base, new)
    assert result.exit_code == 2
    assert "Error: not comparable: dataset differs: limit 1 vs 2 (base vs new); pass --allow-different-samples" in result.output
