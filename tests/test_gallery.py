"""The gallery (``report RUN --gallery PATH``): every sample and cell in its data, run strings only
as text, sources beside the page and edits linked from the run folder. How it looks and works in
a browser: tests/test_gallery_render.py."""

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from bench.reporting.gallery import outline, script_json, write_gallery
from run_bench import main
from tests.helpers import write_dataset
from tests.test_aggregate import cell, make_run
from tests.test_report import EVIL_ID, EVIL_PROMPT


@pytest.fixture
def gallery_run(tmp_path):
    """Three samples (one with a prompt full of markup, one of another edit type) whose psnr differs
    per sample (one infinite), and a failed cell."""
    data = write_dataset(tmp_path / "data", n=2, extra=[{
        "id": EVIL_ID, "image": "img0.png", "source_prompt": EVIL_PROMPT, "target_prompt": "a <i>dog</i> | pipe",
        "edit_type": "add_object", "mask_shapes": [{"shape": "box", "box": [0.0, 0.0, 0.5, 1.0]}]}])  # fmt: skip
    levels = [("reconstruct", {}, 30.0, 0.9), ("sdedit", {"t0": 0.3, "w": 7.5}, 20.0, 0.6),
              ("sdedit", {"t0": 0.7, "w": 7.5}, 15.0, 0.4)]  # fmt: skip
    samples = [(EVIL_ID, "add_object", 2.0), ("img0", "change_object", 0.0)]
    cells = [cell(m, s, sid, {"psnr": p + k, "ssim": q}, edit_type=kind) for sid, kind, k in samples for m, s, p, q in levels]
    cells[0]["metrics"]["psnr"] = float("inf")  # reconstruct of the first sample: an identical image
    cells.append(cell("sdedit", {"t0": 0.7, "w": 7.5}, "img1", status="failed"))
    return make_run(tmp_path, "evil", cells, dataset=data)


def page_data(page) -> dict:
    text = page.read_text()
    found = re.search(r'<script type="application/json" id="gallery-data">(.*?)</script>', text, re.S)
    return json.loads(found.group(1))


def test_the_gallery_holds_every_sample_and_cell(gallery_run, tmp_path):
    page = write_gallery(gallery_run, tmp_path / "out" / "gallery.html")
    data = page_data(page)
    assert [r["name"] for r in data["rows"]] == ["reconstruct", "sdedit t0=0.3", "sdedit t0=0.7"]
    assert data["rows"][0]["reference"] and [m["name"] for m in data["metrics"]] == ["psnr", "ssim"]
    assert [(s["id"], s["seed"]) for s in data["samples"]] == [(EVIL_ID, 0), ("img0", 0), ("img1", 0)]
    evil = data["samples"][0]
    assert evil["prompts"] == {"source prompt": EVIL_PROMPT, "target prompt": "a <i>dog</i> | pipe"}
    assert evil["edit_type"] == "add_object" and "untrained backbone" in data["caveat"]
    assert [c["values"] for c in evil["cells"]] == [["inf", 0.9], [22.0, 0.6], [17.0, 0.4]]
    for c in evil["cells"]:  # edits: the run folder's own PNGs, found from the page's folder
        assert (page.parent / c["image"]).resolve().is_file() and c["image"].startswith("../evil/images/")
    failed = data["samples"][2]["cells"]
    assert failed[:2] == [None, None] and failed[2]["status"] == "failed" and "boom" in failed[2]["error"]
    assert failed[2]["image"] is None and failed[2]["values"] == [None, None]
    sources = [page.parent / s["source"] for s in data["samples"]]
    assert all(p.is_file() and p.parent.name == "gallery_files" for p in sources)


def test_run_strings_stay_text_in_the_page(gallery_run, tmp_path):
    text = write_gallery(gallery_run, tmp_path / "gallery.html").read_text()
    assert text.count("<script") == 2  # its data and its code; a prompt's "<script>" is escaped in the JSON
    assert "<img src=q" not in text and "<b>bold" not in text and "\\u003cscript>" in text
    assert "innerHTML" not in text and "insertAdjacentHTML" not in text and "document.write" not in text
    assert script_json({"a": "</script>\u2028"}) == '{"a": "\\u003c/script>\\u2028"}'
    assert json.loads(script_json({"a": "</script>\u2028"})) == {"a": "</script>\u2028"}


def test_the_source_shows_its_mask_outline(gallery_run, tmp_path):
    page = write_gallery(gallery_run, tmp_path / "gallery.html")
    source = np.asarray(Image.open(page.parent / page_data(page)["samples"][0]["source"]))
    red = (source == [255, 0, 0]).all(axis=-1)
    assert red[:, 0].all() and red.sum() < red.size / 4  # the box's edge on the left border, not its inside
    mask = np.zeros((6, 6), bool)
    mask[1:5, 1:5] = True
    assert outline(mask).sum() == 12 and not outline(mask)[2:4, 2:4].any()


def test_report_gallery_from_the_command_line(gallery_run, tmp_path):
    result = CliRunner().invoke(main, ["report", str(gallery_run), "--gallery", str(tmp_path / "g" / "gallery.html")])
    assert result.exit_code == 0, result.output
    assert "gallery -> " in result.output and "| method |" not in result.output  # no tables printed besides
    assert len(page_data(tmp_path / "g" / "gallery.html")["samples"]) == 3
