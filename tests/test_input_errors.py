"""Mistakes in datasets, outside images and run comparisons, tried through the command line as a new user
would (issue 39): a config mistake is one line naming the file, column or parameter and what is allowed,
given before any run folder is made; a bad sample fails its own cells with a plain message."""

import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image

from bench.data import DatasetSpec, load_dataset, prepare_image
from run_bench import main
from tests.helpers import hub_fixture, read_cells, write_dataset, write_hub_fixture


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def write_config(tmp_path, dataset: dict, methods=None) -> str:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"dataset": dataset, "methods": methods or {"reconstruct": {}}, "metrics": ["psnr"]}))
    return str(config)


def run_fails(config, *args, runs) -> str:
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


def test_allow_download_with_a_local_copy_is_refused(tmp_path):
    folder = write_hub_fixture(tmp_path / "mb", "magicbrush", "dev", n=2)
    config = write_config(tmp_path, {"name": "magicbrush", "path": folder, "allow_download": True})
    error = run_fails(config, runs=tmp_path / "runs")
    assert error.startswith("dataset.allow_download fetches the hub repository") and folder in error


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


def write_parquet(folder, table) -> str:
    """A pandas DataFrame written as the hub lays out MagicBrush's dev split, by pandas (no feature metadata)."""
    (folder / "data").mkdir(parents=True)
    table.to_parquet(folder / "data" / "dev-00000-of-00001.parquet")
    return str(folder)


@pytest.mark.parametrize("column, value, found, needs", [
    ("instruction", 7, "int64", "reads it as instruction, which needs string"),
    ("turn_index", "1", "string", "reads it as the turn (first turn 1), which needs integer"),
])  # fmt: skip
def test_hub_columns_of_the_wrong_type_name_column_expected_and_found(tmp_path, column, value, found, needs):
    table = hub_fixture("magicbrush", 2).to_pandas()
    table[column] = value
    folder = write_parquet(tmp_path / "mb", table)
    error = run_fails(write_config(tmp_path, {"name": "magicbrush", "path": folder}), runs=tmp_path / "runs")
    assert error == f"dataset {folder}: column {column!r} holds {found}; card 'magicbrush' {needs}"


def test_a_parquet_written_by_pandas_reads_image_cells_as_datasets_does(tmp_path):
    folder = write_parquet(tmp_path / "mb", hub_fixture("magicbrush", 2).to_pandas())
    sample = load_dataset(DatasetSpec(name="magicbrush", path=folder))[0].load(64)
    row = hub_fixture("magicbrush", 2)[0]
    assert torch.equal(sample.image, prepare_image(row["source_img"], 64))
    assert torch.equal(sample.target_image, prepare_image(row["target_img"], 64)) and sample.mask is not None


def test_an_undecodable_image_cell_fails_its_sample_with_a_plain_message(tmp_path):
    table = hub_fixture("magicbrush", 2).to_pandas()
    table.at[0, "source_img"] = {"bytes": b"not an image", "path": None}
    folder = write_parquet(tmp_path / "mb", table)
    config = write_config(tmp_path, {"name": "magicbrush", "path": folder})
    result = invoke("run", config, "--out", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    expected = "sample '1000_1': column 'source_img': cannot decode its image (UnidentifiedImageError: cannot identify image file)"
    assert expected in result.stderr and " object at 0x" not in result.stderr
    report = invoke("report", result.stdout.strip().splitlines()[-1]).output
    (line,) = [line for line in report.splitlines() if line.startswith("- 1 x ")]
    assert expected in line and "0x" not in line and "&" not in line


def test_a_duplicate_sample_id_names_the_local_copy_that_was_read(tmp_path):
    table = hub_fixture("magicbrush", 2).to_pandas()
    table["img_id"] = "1000"
    folder = write_parquet(tmp_path / "mb", table)
    error = run_fails(write_config(tmp_path, {"name": "magicbrush", "path": folder}), runs=tmp_path / "runs")
    assert error == f"dataset {folder}: sample id '1000_1' (columns img_id, turn_index) appears more than once"


def test_a_first_turn_no_row_has_is_named(tmp_path):
    table = hub_fixture("magicbrush", 2).to_pandas()
    table["turn_index"] = 2
    folder = write_parquet(tmp_path / "mb", table)
    error = run_fails(write_config(tmp_path, {"name": "magicbrush", "path": folder}), runs=tmp_path / "runs")
    assert error == (f"dataset.turns = first keeps the rows whose 'turn_index' is 1; none of the 4 rows of {folder} "
                     "has it; values present: 2")  # fmt: skip


def test_errors_show_verbatim_in_the_markdown_report(tmp_path):
    data = write_dataset(tmp_path / "data", n=0, extra=[{"id": "a<b&c", "image": "gone.png", "source_prompt": "a cat"}])
    result = invoke("run", write_config(tmp_path, {"path": data}), "--out", tmp_path / "runs", "--quiet")
    report = invoke("report", result.stdout.strip().splitlines()[-1]).output
    (line,) = [line for line in report.splitlines() if line.startswith("- 1 x ")]
    assert line == f"- 1 x `SampleError: sample 'a<b&c': image file not found: {tmp_path / 'data' / 'gone.png'}`"


def test_a_tiny_source_is_upscaled_with_a_warning_and_blank_texts_are_no_texts(tmp_path):
    (tmp_path / "data").mkdir()
    Image.new("RGB", (1, 1), (200, 10, 10)).save(tmp_path / "data" / "dot.png")
    entry = {"id": "dot", "image": "dot.png", "source_prompt": "a red dot", "target_prompt": "  ", "instruction": " \t"}
    data = write_dataset(tmp_path / "data", n=1, extra=[entry])
    sample = load_dataset(DatasetSpec(path=data))[1].load(64)
    assert sample.target_prompt is None and sample.instruction is None  # as "" would be
    config = write_config(tmp_path, {"path": data}, {"reconstruct": {}, "sdedit": {"steps": 2}})
    result = invoke("run", config, "--out", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0 and "3 ok, 1 skipped" in result.stderr, result.output
    warning = "warning: sample 'dot': its source image is 1x1, upscaled 128x to 128x128"
    assert warning in result.stderr and "sample 'img0'" not in result.stderr  # 96x128 at 128 px: no warning


def test_a_blank_hub_instruction_is_no_instruction(tmp_path):
    table = hub_fixture("magicbrush", 2).to_pandas()
    table["instruction"] = "   "
    sample = load_dataset(DatasetSpec(name="magicbrush", path=write_parquet(tmp_path / "mb", table)))[0].load(64)
    assert sample.instruction is None and sample.target_prompt is None


@pytest.mark.parametrize("line, problem", [
    ("not json", "not JSON (Expecting value: line 1 column 1 (char 0))"),
    ('{"id": "img0", "image": 123}', '"image" is 123; expected a path (a string)'),
    ('{"id": [1], "image": "a.png"}', '"id" is [1]; expected a string or an integer'),
])  # fmt: skip
def test_a_malformed_external_manifest_is_refused_before_any_run_folder(tmp_path, line, problem):
    data = write_dataset(tmp_path / "data", n=1)
    manifest = tmp_path / "outputs.jsonl"
    manifest.write_text('{"id": "img0", "image": "img0.png"}\n' + line + "\n")
    config = write_config(tmp_path, {"path": data}, {"external": {"manifest": str(manifest)}})
    assert run_fails(config, runs=tmp_path / "runs") == f"external manifest {manifest} line 2: {problem}"


def test_external_folder_reads_the_file_it_found_and_refuses_ids_leaving_the_folder(tmp_path):
    data = write_dataset(tmp_path / "data", n=0, extra=[
        {"id": sample_id, "image": "photo.png", "source_prompt": "a cat"} for sample_id in ("sub/dir", "../escape")
    ])  # fmt: skip
    Image.new("RGB", (64, 64), (10, 200, 10)).save(tmp_path / "data" / "photo.png")
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    Image.new("RGB", (128, 128), (250, 0, 0)).save(out / "sub" / "dir.png")  # the image of sample "sub/dir"
    Image.new("RGB", (128, 128), (0, 0, 250)).save(out / "dir.png")  # what the basename would read
    Image.new("RGB", (128, 128), (0, 250, 0)).save(tmp_path / "escape.png")  # outside the folder
    config = write_config(tmp_path, {"path": data}, {"external": {"folder": str(out)}})
    result = invoke("run", config, "--out", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0 and "1 ok, 1 failed" in result.stderr, result.output
    cells = read_cells(result.stdout.strip().splitlines()[-1]).set_index("sample_id")
    run_dir = result.stdout.strip().splitlines()[-1]
    assert Image.open(f"{run_dir}/{cells.loc['sub/dir', 'output_path']}").getpixel((5, 5)) == (250, 0, 0)
    assert cells.loc["../escape", "error"] == (
        f"SampleError: sample '../escape': output image path '../escape.png' escapes the folder {out}"
    )
