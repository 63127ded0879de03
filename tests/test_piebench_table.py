"""PIE-Bench's published table view (``report --table piebench``) and published references beside a run."""

import math
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from bench.errors import ConfigError
from bench.paths import repo_root
from bench.reporting.piebench_table import COLUMNS, build_piebench, load_references, piebench_html, piebench_markdown
from run_bench import main
from tests.helpers import write_dataset
from tests.test_aggregate import cell, make_run
from tests.test_metrics_reference import tiny_clip, tiny_vit  # noqa: F401  (fixtures)

EXAMPLE = repo_root() / "references" / "piebench_table1.yaml"
HEADERS = ["Structure distance ×10³ ↓", "PSNR ↑", "LPIPS ×10³ ↓", "MSE ×10⁴ ↓", "SSIM ×10² ↑", "CLIP whole ↑",
           "CLIP edited ↑"]  # fmt: skip


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def table_rows(text: str, first: str) -> list[list[str]]:
    """Cells of the Markdown table rows of ``text`` whose first cell is ``first``."""
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]
    return [r for r in rows if r[0] == first]


# -- on a synthetic run: units, NaN accounting, edit-type order, intervals -----------------------------
VALUES = {"structure_distance": 0.0123, "psnr_bg": 25.0, "lpips_bg": 0.061, "mse_bg": 0.0036, "ssim_bg": 0.84,
          "clip_score": 24.0, "clip_score_edited": 21.0}  # fmt: skip


@pytest.fixture
def synthetic_run(tmp_path):
    cells = []
    for i, edit_type in enumerate(["change_color", "random", "change_object"]):  # not in PIE-Bench's order
        values = {m: v * (1 + 0.1 * i) for m, v in VALUES.items()}
        cells.append(cell("p2p", {"inversion": "ddim"}, f"img{i}", values, edit_type=edit_type))
        cells.append(cell("p2p", {"inversion": "direct"}, f"img{i}", {**values, "psnr_bg": math.nan},
                          edit_type=edit_type))  # fmt: skip
    return make_run(tmp_path, "r", cells, metrics=tuple(VALUES))


def test_columns_are_pie_benchs_seven_in_published_units(synthetic_run):
    assert [c.header for c in COLUMNS] == HEADERS
    text = piebench_markdown(build_piebench(synthetic_run))
    assert "| method | setting | n | " + " | ".join(HEADERS) + " |" in text
    (ddim,) = table_rows(text, "p2p")[:1]
    for column, shown in zip(COLUMNS, ddim[3:]):
        expected = np.mean([VALUES[column.metric] * (1 + 0.1 * i) for i in range(3)]) * column.scale
        assert shown == f"{expected:.2f}", column.metric
    assert "Smoke numbers — untrained backbone" in text.splitlines()[2]


def test_nan_cells_are_left_out_of_means_and_counted(synthetic_run):
    text = piebench_markdown(build_piebench(synthetic_run))
    direct = table_rows(text, "p2p")[1]
    assert direct[1] == "inversion=direct" and direct[4] == "— (3 NaN)"
    by_type = [r for r in table_rows(text, "change_object") if r[2] == "inversion=direct"]
    assert by_type[0][5] == "— (1 NaN)"
    assert "psnr_bg was NaN for" in text and "p2p inversion=direct: 3" in text  # one note per reason, counts per group


def test_edit_types_follow_pie_benchs_order_and_intervals_are_available(synthetic_run):
    view = build_piebench(synthetic_run)
    assert [r.edit_type for r in view.by_type][::2] == ["random", "change_object", "change_color"]
    plain, with_ci = piebench_markdown(view), piebench_markdown(build_piebench(synthetic_run, ci=True))
    ddim = table_rows(with_ci, "p2p")[0]
    stat = view.rows[0].metrics["psnr_bg"]
    assert ddim[4] == f"{stat.mean:.2f} [{stat.low:.2f}, {stat.high:.2f}]" and stat.low < stat.mean < stat.high
    assert "[" not in table_rows(plain, "p2p")[0][4]


def test_reference_rows_show_run_published_and_difference(synthetic_run):
    references = {r.label: r for r in load_references(EXAMPLE)}
    assert set(references) == {"DDIM+P2P", "NTI+P2P", "DirectInversion+P2P"}
    assert all("PIE-Bench" in r.source and set(r.values) == {c.metric for c in COLUMNS} for r in references.values())
    text = piebench_markdown(build_piebench(synthetic_run, EXAMPLE))
    run_row, published, difference = table_rows(text, "p2p inversion=ddim")
    assert published[1] == "DDIM+P2P (published)" and difference[1] == "run − published"
    for i, column in enumerate(COLUMNS):
        ours, theirs = float(run_row[2 + i]), references["DDIM+P2P"].values[column.metric]
        assert float(published[2 + i]) == pytest.approx(theirs)
        assert float(difference[2 + i]) == pytest.approx(ours - theirs, abs=0.011)
    assert table_rows(text, "p2p inversion=direct")[1][1] == "DirectInversion+P2P (published)"
    assert "NTI+P2P: no row of this run has method p2p with inversion=null_text" in text


@pytest.mark.parametrize("content, message", [
    ("references: []", "non-empty list"),
    ("references: [{label: A, values: {psnr_bg: 1}}]", "entry 1: 'source' must be a non-empty string"),
    ("references: [{label: A, source: S, values: {psnr: 1}}]", "unknown column 'psnr'; allowed: structure_distance"),
    ("references: [{label: A, source: S, values: {psnr_bg: high}}]", "psnr_bg = 'high' is not a number"),
    ("references: [{label: A, source: S, params: {w: 1}, values: {psnr_bg: 1}}]", "'params' needs 'method'"),
    ("references: [{label: A, source: S, value: {psnr_bg: 1}}]", "unknown keys ['value']"),
    ("references: [{label: A, source: S, method: p2q, values: {psnr_bg: 1}}]", "unknown method 'p2q' (did you mean"),
    ("references: [{label: A, source: S, method: p2p, params: {inverson: ddim}, values: {psnr_bg: 1}}]",
     "unknown parameter of p2p 'inverson' (did you mean 'inversion'?)"),
])  # fmt: skip
def test_bad_reference_files_name_the_entry_and_what_is_allowed(tmp_path, content, message):
    path = tmp_path / "ref.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_references(path)
    with pytest.raises(ConfigError, match="reference file not found"):
        load_references(tmp_path / "nope.yaml")


# -- on a tiny-backbone run, through the command line ---------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_clip, tiny_vit):  # noqa: F811
    """P2P over DDIM inversion (2 steps) on two samples, scored with all seven columns'
    metrics (tiny random CLIP and DINO-shaped ViT, a random SqueezeNet in a temporary torch hub
    cache for LPIPS); one sample's mask covers the whole image, so its background metrics are NaN."""
    import torchvision

    from bench.metrics.perceptual import lpips_weights_file

    root = tmp_path_factory.mktemp("pie")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(root / "torch"))
        weights = lpips_weights_file("squeeze")
        weights.parent.mkdir(parents=True)
        torch.manual_seed(0)
        torch.save(torchvision.models.squeezenet1_1().state_dict(), weights)
        return _run_all_columns(root, tiny_clip, tiny_vit)


def _run_all_columns(root: Path, clip_model: str, dino_model: str) -> Path:
    whole = {"id": "whole", "image": "img0.png", "source_prompt": "a photo of a cat",
             "target_prompt": "a photo of a dog", "edit_type": "change_color",
             "mask_shapes": [{"shape": "box", "box": [0, 0, 1, 1]}]}  # fmt: skip
    config = root / "c.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": {"path": write_dataset(root / "data", n=1, extra=[whole])},
        "methods": {"p2p": {"inversion": "ddim", "steps": 2}},
        "metrics": [c.metric for c in COLUMNS],
        "metric_options": {"clip_model": clip_model, "dino_model": dino_model},
    }))  # fmt: skip
    result = invoke("run", config, "--out", root / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip().splitlines()[-1])


def stored_means(run_dir: Path) -> dict[str, float]:
    """Per metric, the mean over the run's ok cells, NaN left out (read from the store)."""
    db = sqlite3.connect(run_dir / "results.sqlite")
    query = "SELECT m.name, m.value FROM metrics m JOIN cells c ON c.key = m.key WHERE c.status = 'ok'"
    values = {}
    for name, value in db.execute(query):
        values.setdefault(name, []).append(math.nan if value is None else value)
    return {name: float(np.nanmean(v)) for name, v in values.items()}


def test_report_table_piebench_on_a_tiny_backbone_run(tiny_run, tmp_path):
    result = invoke("report", tiny_run, "--table", "piebench")
    assert result.exit_code == 0, result.output
    text = result.output
    assert "| method | setting | n | " + " | ".join(HEADERS) + " |" in text and "untrained backbone" in text
    means = stored_means(tiny_run)
    (p2p,) = table_rows(text, "p2p")
    assert p2p[2] == "2"
    for column, shown in zip(COLUMNS, p2p[3:]):
        assert shown.split(" (")[0] == f"{means[column.metric] * column.scale:.2f}", column.metric
    assert "(1 NaN)" in p2p[4] and "(1 NaN)" not in p2p[8], "whole-image mask: background NaN, CLIP defined"
    assert table_rows(text, "change_object") and table_rows(text, "change_color")

    md, page = tmp_path / "pie.md", tmp_path / "pie.html"
    written = invoke("report", tiny_run, "--table", "piebench", "--md", md, "--html", page)
    assert written.exit_code == 0, written.output
    assert md.read_text() == text.rstrip("\n") + "\n"
    html_text = page.read_text()
    assert all(f"<th>{h}</th>" in html_text for h in HEADERS) and "untrained backbone" in html_text
    assert f"<td>{p2p[3]}</td>" in html_text


def test_report_reference_prints_differences_from_the_example_file(tiny_run):
    result = invoke("report", tiny_run, "--reference", EXAMPLE)  # implies --table piebench
    assert result.exit_code == 0, result.output
    references = {r.label: r for r in load_references(EXAMPLE)}
    means = stored_means(tiny_run)
    *_, published, difference = table_rows(result.output, "p2p")  # the main table's row, then the comparison
    for i, column in enumerate(COLUMNS):
        expected = means[column.metric] * column.scale - references["DDIM+P2P"].values[column.metric]
        assert float(difference[2 + i]) == pytest.approx(expected, abs=0.006), column.metric
    assert published[1] == "DDIM+P2P (published)" and "DDIM+P2P: PIE-Bench paper" in result.output
    assert "NTI+P2P: no row of this run has" in result.output
    view = build_piebench(tiny_run, EXAMPLE)
    assert "DDIM+P2P (published)" in piebench_html(view)
    bad = invoke("report", tiny_run, "--reference", tiny_run / "nope.yaml")
    assert bad.exit_code == 1 and "reference file not found" in bad.output
    assert "--ci adds intervals to --table piebench" in invoke("report", tiny_run, "--ci").output
