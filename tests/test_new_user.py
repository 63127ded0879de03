"""What a new user meets first (issue 28): one-line errors for config and file mistakes, and
paths that mean the same thing from any working folder."""

import json

import pytest
import yaml
from click.testing import CliRunner

from bench.execution.config import build_config, load_config
from run_bench import main
from tests.helpers import write_dataset


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result) -> str:
    """The single error line of a failed command (no traceback)."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.mark.parametrize("override", ["sdedit=5", "sdedit=[0.3]"])
def test_a_method_set_to_a_value_is_one_line_asking_for_a_mapping(override):
    result = invoke("run", "configs/quickstart.yaml", "--dry-run", "--set", override)
    assert "method 'sdedit': expected a mapping of parameters" in one_line_error(result)


def test_a_method_block_that_is_not_a_mapping_names_the_method(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("methods: {sdedit: 5}\n")
    assert "method 'sdedit': expected a mapping of parameters" in one_line_error(invoke("run", config, "--dry-run"))
    config.write_text("methods: [sdedit]\n")
    assert "'methods' must be a mapping" in one_line_error(invoke("run", config, "--dry-run"))


def test_invalid_yaml_is_one_line_with_file_line_and_column(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("methods:\n  sdedit: {t0: [0.3}\n")
    line = one_line_error(invoke("run", config, "--dry-run"))
    assert str(config) in line and "line 2, column 20" in line


def test_missing_files_say_not_found(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"dataset": {"path": "does_not_exist.jsonl"}, "methods": {"reconstruct": {}}}))
    line = one_line_error(invoke("run", config, "--dry-run"))
    assert "not found" in line and str(tmp_path / "does_not_exist.jsonl") in line
    line = one_line_error(invoke("run", "configs/quickstart.yaml", "--dry-run", "--include", tmp_path / "nothere.py"))
    assert "file not found" in line and "nothere.py" in line


def test_a_manifest_line_without_id_fails_its_sample_saying_so(tmp_path):
    from bench.data import DatasetSpec, load_dataset
    from bench.errors import SampleError

    path = write_dataset(tmp_path, n=1, extra=[{"image": "img0.png", "source_prompt": "a cat"}])
    refs = load_dataset(DatasetSpec(path=path))
    assert [r.id for r in refs] == ["img0", "manifest.jsonl:2"]
    with pytest.raises(SampleError, match="missing required field 'id'"):
        refs[1].load(64)


def test_a_relative_dataset_path_starts_from_the_config_folder(tmp_path, monkeypatch):
    write_dataset(tmp_path / "project" / "data", n=1)
    config = tmp_path / "project" / "c.yaml"
    config.write_text(yaml.safe_dump({"dataset": {"path": "data/manifest.jsonl"}, "methods": {"reconstruct": {}}}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = load_config(config)
    assert loaded.dataset.path == str(tmp_path / "project" / "data" / "manifest.jsonl")
    assert loaded.dataset_path_given == "data/manifest.jsonl"
    # --set gives a path from the working folder, as --include does
    write_dataset(elsewhere / "mine", n=1)
    overridden = load_config(config, ["dataset.path=mine/manifest.jsonl"])
    assert overridden.dataset.path == str(elsewhere / "mine" / "manifest.jsonl")
    # a config built in memory has no file: its relative path starts from the working folder
    built = build_config({"dataset": {"path": "mine/manifest.jsonl"}, "methods": {"reconstruct": {}}})
    assert built.dataset.path == overridden.dataset.path


def test_readme_commands_from_another_folder_give_the_same_results(tmp_path, monkeypatch):
    """The quickstart (1 sample, 2 steps), run from the repository root and from another folder,
    with a relative dataset path in a config outside both: same cells, same numbers; resume and
    report work from a third folder."""
    from bench.paths import repo_root

    project = tmp_path / "project"
    write_dataset(project / "data", n=1)
    quickstart = yaml.safe_load((repo_root() / "configs" / "quickstart.yaml").read_text())
    quickstart["dataset"] = {"path": "data/manifest.jsonl"}
    quickstart["methods"] = {"reconstruct": {}, "sdedit": {"t0": 0.5, "steps": 2}}
    config = project / "quickstart.yaml"
    config.write_text(yaml.safe_dump(quickstart))
    outputs = {}
    for folder in (repo_root(), tmp_path / "elsewhere"):
        folder.mkdir(exist_ok=True)
        monkeypatch.chdir(folder)
        result = invoke("run", config, "--out", tmp_path / "runs" / folder.name, "--quiet")
        assert result.exit_code == 0, result.output
        run_dir = result.stdout.strip().splitlines()[-1]
        exported = tmp_path / f"{folder.name}.csv"
        assert invoke("export", run_dir, "--csv", exported).exit_code == 0
        outputs[folder.name] = (run_dir, [_without_run_specifics(r) for r in _rows(exported)])
    (first_dir, first), (second_dir, second) = outputs.values()
    assert first == second and {r["status"] for r in first} == {"ok"}
    third = tmp_path / "third"
    third.mkdir()
    monkeypatch.chdir(third)
    assert "already done" in invoke("run", "--resume", second_dir, "--quiet").output
    html = invoke("report", second_dir, "--html", third / "r.html")
    assert html.exit_code == 0, html.output
    assert "source unavailable" not in (third / "r.html").read_text()
    manifest = json.loads((tmp_path / "runs" / "elsewhere" / second_dir.split("/")[-1] / "manifest.json").read_text())
    assert manifest["dataset_path_given"] == "data/manifest.jsonl"


def _rows(path):
    import csv

    return list(csv.DictReader(open(path)))


def _without_run_specifics(row: dict) -> dict:
    """A cell's row without what differs between two runs of the same cells (timings, workers)."""
    varying = ("time_s", "gpu_time_s", "peak_mem_mb", "prep_time_s", "worker", "batch_id")
    return {k: v for k, v in row.items() if not (k in varying or k.endswith("_time_s"))}


def test_a_run_where_every_cell_failed_exits_3_naming_the_most_common_error(tmp_path):
    missing = [{"id": f"gone{i}", "image": f"gone{i}.png", "source_prompt": "a cat", "target_prompt": "a dog"}
               for i in range(2)]  # fmt: skip
    data = write_dataset(tmp_path / "data", n=0, extra=missing)
    config = tmp_path / "c.yaml"
    # sdedit draws noise, so both seeds are cells (a deterministic method runs one seed per sample)
    config.write_text(yaml.safe_dump({"dataset": {"path": data}, "methods": {"sdedit": {}}, "seeds": [0, 1]}))
    result = invoke("run", config, "--out", tmp_path / "runs", "--quiet")
    assert result.exit_code == 3, result.output
    run_dir = result.stdout.strip().splitlines()[-1]  # the run folder is still printed
    assert "4 failed" in result.stderr
    assert "most common error (2 of 4 failed cells): " in result.stderr and "image file not found" in result.stderr
    assert "1 other distinct errors" in result.stderr
    report = invoke("report", run_dir).output
    assert "4 failed cell(s); errors (cells each, most common first):" in report
    listed = [line for line in report.splitlines() if line.startswith("- 2 x ")]
    assert len(listed) == 2 and all("image file not found" in line for line in listed)
    assert {"gone0.png" in listed[0], "gone1.png" in listed[1]} == {True}  # sorted, one line per distinct error


def test_a_run_with_some_ok_cells_exits_0_and_still_names_its_errors(tmp_path):
    data = write_dataset(tmp_path / "data", n=1, extra=[{"id": "gone", "image": "gone.png", "source_prompt": "a cat"}])
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"dataset": {"path": data}, "methods": {"reconstruct": {}}}))
    result = invoke("run", config, "--out", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    assert "most common error (1 of 1 failed cells): " in result.stderr


def test_every_output_option_creates_its_missing_folders(tmp_path):
    from tests.test_aggregate import cell, make_run

    cells = [cell("reconstruct", {}, s, {"psnr": 30.0, "ssim": 0.9}) for s in ("img0", "img1")]
    run_dir = make_run(tmp_path, "run", cells)
    out = tmp_path / "missing" / "dir"
    commands = {
        "export --csv": (["export", run_dir, "--csv", out / "a" / "x.csv"], out / "a" / "x.csv"),
        "export --parquet": (["export", run_dir, "--parquet", out / "b" / "x.parquet"], out / "b" / "x.parquet"),
        "report --md": (["report", run_dir, "--md", out / "c" / "r.md", "--grid", 0], out / "c" / "r.md"),
        "report --html": (["report", run_dir, "--html", out / "d" / "r.html", "--grid", 0], out / "d" / "r.html"),
        "history --plot": (["history", run_dir, "--plot", out / "e" / "h.png"], out / "e" / "h.png"),
        "history --md": (["history", run_dir, "--md", out / "f" / "h.md"], out / "f" / "h.md"),
        "compare --md": (["compare", run_dir, run_dir, "--md", out / "g" / "c.md"], out / "g" / "c.md"),
    }
    for name, (args, written) in commands.items():
        result = invoke(*args)
        assert result.exit_code == 0 and written.is_file(), f"{name}: {result.output}"
    (tmp_path / "a_file").write_text("")
    line = one_line_error(invoke("export", run_dir, "--csv", tmp_path / "a_file" / "x.csv"))
    assert "cannot be created" in line and "a_file" in line


def test_an_unfinished_run_shows_settings_without_a_finished_cell_with_0(tmp_path):
    from bench.reporting.compare import compare_runs
    from bench.reporting.html_report import render_html
    from bench.reporting.report import build_report, summary_markdown
    from tests.test_aggregate import make_run, sweep_cells

    run_dir = make_run(tmp_path, "partial", sweep_cells({0.3: 20.0}))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["config"]["methods"]["sdedit"].append({"t0": 0.7, "w": 7.5})  # planned, never reached
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    text = summary_markdown(run_dir)
    assert "| sdedit | t0=0.7 | 0 | 0 | 0 |" in text and "| sdedit | t0=0.3 | 3 | 0 | 0 |" in text
    assert "t0=0.7" in render_html(build_report(run_dir, figures=True))
    # compare still reports the unreached setting as missing, not as compared
    full = make_run(tmp_path, "full", sweep_cells({0.3: 20.0, 0.7: 15.0}))
    assert compare_runs(full, run_dir).regressions == ["sdedit t0=0.7: in base, missing in new"]


def test_history_says_when_runs_cover_different_datasets(tmp_path):
    from bench.reporting.history import history, history_markdown
    from tests.test_aggregate import make_run, sweep_cells

    a = make_run(tmp_path, "a", sweep_cells({0.3: 20.0}))
    b = make_run(tmp_path, "b", sweep_cells({0.3: 21.0}), created="2026-01-02T00:00:00+00:00")
    other = write_dataset(tmp_path / "other", n=3)
    c = make_run(tmp_path, "c", sweep_cells({0.3: 25.0}), dataset=other, created="2026-01-03T00:00:00+00:00")
    same = history_markdown(history([a, b], "psnr"))
    assert "different datasets" not in same and "| samples |" not in same
    mixed = history_markdown(history([a, b, c], "psnr"))
    assert "**The runs cover 2 different datasets or sample sets (column 'samples')" in mixed
    rows = [line for line in mixed.splitlines() if line.startswith("| 2026")]
    assert len(rows) == 3 and other in rows[2] and other not in rows[0]


def test_the_reference_page_exists_names_every_method_and_metric_and_its_pointers_resolve():
    import re

    from bench.metrics import METRICS
    from bench.paths import repo_root
    from bench.registry import all_methods

    root = repo_root()
    page = (root / "docs" / "REFERENCE.md").read_text()
    headings = {line.lstrip("#").strip() for line in page.splitlines() if line.startswith("#")}
    built_in = [cls.name for cls in all_methods() if cls.__module__.startswith("methods.")]  # not other tests' plug-ins
    metrics = [name for name, cls in METRICS.items() if cls.__module__.startswith("bench.metrics")]
    assert len(built_in) >= 19 and "structure_distance" in metrics
    for name in [*built_in, *metrics]:
        assert f"`{name}`" in page, f"docs/REFERENCE.md does not define {name}"
    files = [*root.glob("bench/**/*.py"), *root.glob("methods/*.py"), *root.glob("references/*.yaml"), root / "README.md"]
    pointers = 0
    for path in files:
        text = path.read_text()
        assert not re.search(r"(?<![/\w])REFERENCE\.md", text), f"{path} points to a REFERENCE.md outside docs/"
        for section in re.findall(r'docs/REFERENCE\.md(?:,\s*|\s*\(|\s+)"([^"\n]+)"', text):
            pointers += 1
            assert section in headings, f"{path}: section {section!r} is not in docs/REFERENCE.md"
    assert pointers >= 5


def test_the_piebench_table_says_above_it_which_command_fills_its_empty_columns(tmp_path):
    from bench.reporting.piebench_table import build_piebench, piebench_html, piebench_markdown
    from tests.test_aggregate import cell, make_run

    cells = [cell("p2p", {"inversion": "ddim"}, s, {"psnr_bg": 20.0, "mse_bg": 0.01}) for s in ("img0", "img1")]
    view = build_piebench(make_run(tmp_path, "run", cells, metrics=("psnr_bg", "mse_bg")))
    text = piebench_markdown(view)
    line = next(line for line in text.splitlines() if "columns are empty" in line)
    assert text.index(line) < text.index("## All samples")
    assert line.startswith("**5 of 7 columns are empty: this run did not compute structure_distance, lpips_bg, ssim_bg,")
    assert f"editbench score {view.run.run_dir} --metrics structure_distance,lpips_bg,ssim_bg,clip_score,clip_score_edited" in line
    assert "one pass of facebook/dino-vitb8, LPIPS squeeze, openai/clip-vit-large-patch14 over the run's 2 saved images" in line
    assert "--untrained-extractors" in line and "columns are empty" in piebench_html(view)
