"""Reports: Markdown and HTML contents, labels everywhere, escaping, figures, history, export."""

import base64
import io
import json
import re

import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from bench.errors import ConfigError
from bench.reporting import plots
from bench.reporting.history import history, history_markdown
from bench.reporting.html_report import SMOKE_NOTE, render_html
from bench.reporting.report import build_report, report_markdown, summary_markdown
from run_bench import main
from tests.helpers import write_dataset
from tests.test_aggregate import cell, fake_metrics, make_run, sweep_cells  # noqa: F401  (fixture)

EVIL_PROMPT = '<script>document.title="pwned"</script> a <b>bold</b> cat'
EVIL_ID = "x<img src=q onerror=alert(1)>&'\""
CAVEAT = "Smoke numbers — untrained backbone"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def evil_run(tmp_path):
    data = write_dataset(tmp_path / "data", n=2, extra=[{
        "id": EVIL_ID, "image": "img0.png", "source_prompt": EVIL_PROMPT, "target_prompt": "a <i>dog</i> | pipe",
        "edit_type": "change_object", "mask_shapes": [{"shape": "box", "box": [0.0, 0.0, 0.5, 1.0]}]}])  # fmt: skip
    levels = [("reconstruct", {}, 30.0, 0.9), ("sdedit", {"t0": 0.3, "w": 7.5}, 20.0, 0.6),
              ("sdedit", {"t0": 0.7, "w": 7.5}, 15.0, 0.4)]
    cells = [cell(m, s, sid, {"psnr": p, "ssim": q}) for sid in (EVIL_ID, "img0") for m, s, p, q in levels]
    cells.append(cell("sdedit", {"t0": 0.7, "w": 7.5}, "img1", status="failed"))
    return make_run(tmp_path, "evil", cells, dataset=data)


def test_summary_markdown_heads_with_labels_and_marks_best(tmp_path, fake_metrics):
    cells = sweep_cells({0.3: 20.0, 0.7: 15.0})
    cells[3]["metrics"]["bgfake"] = float("nan")
    text = summary_markdown(make_run(tmp_path, "r", cells, metrics=("psnr", "ssim", "bgfake")))
    assert text.splitlines()[0].startswith(f"**{CAVEAT}")
    assert "| method | setting | n | failed | skipped | psnr ↑ | ssim ↑ | bgfake ↑ | s/image | NFE |" in text
    assert "| reconstruct (reference) | — | 3 | 0 | 0 | 31 [30, 32] |" in text  # never marked best
    assert "| sdedit | t0=0.3 | 3 | 0 | 0 | **20 [19.9, 20.1]** |" in text
    assert "| sdedit | t0=0.7 | 3 | 0 | 0 | 15 [14.9, 15.1] |" in text
    assert "Fixed parameters: sdedit: w=7.5." in text
    assert "bgfake was NaN for 1 of 9 values (sdedit t0=0.3: 1) — NaN when the mask covers the whole image" in text
    assert "(1 NaN, 2 missing)" in text


def test_full_markdown_has_every_section_with_labels(evil_run):
    report = build_report(evil_run, figures=True, n_grid=2)
    text = report_markdown(report, assets="files")
    for heading in ("Provenance", "Results", "By edit type", "Cost", "Trade-offs", "Metrics along each sweep",
                    "Cost plot", "Samples"):
        assert f"\n## {heading}\n" in text, heading
    lines = text.splitlines()
    tables = [i for i, line in enumerate(lines) if line.startswith(("| method", "| edit type"))]
    # what is untrained is said once per page (issue 39 item 12); each table and figure carries the short note
    assert text.count(CAVEAT) == 1 and all(lines[i - 2] == f"*{SMOKE_NOTE}*" for i in tables)
    notes = ("**", f"*{SMOKE_NOTE}*")
    figure_captions = [line for line in lines if line.startswith("*") and not line.startswith(notes)]
    assert len(figure_captions) == 1 + 1 + 1 + 2 and all(SMOKE_NOTE in c for c in figure_captions)
    assert "Grids for 2 of 3 (sample, seed) pairs; for all: editbench report" in text and "--grid 3" in text
    assert "<script>" not in text and "&lt;script&gt;" in text and "a &lt;i&gt;dog&lt;/i&gt; \\| pipe" in text
    assert "backbone fingerprint: fp-a" in text and "1 failed cell(s)" in text


def test_html_escapes_every_dataset_string(evil_run):
    page = render_html(build_report(evil_run, n_grid=2))
    assert "<script" not in page.lower() and "<b>bold" not in page and "<i>dog" not in page
    assert "&lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt; a &lt;b&gt;bold&lt;/b&gt; cat" in page
    assert "x&lt;img src=q onerror=alert(1)&gt;&amp;&#x27;&quot;" in page
    assert "<img src=q" not in page


def test_html_has_provenance_tables_and_decodable_figures(evil_run):
    report = build_report(evil_run, n_grid=2)
    page = render_html(report)
    assert page.count(CAVEAT) == 1  # the full label list once, at the top; short notes elsewhere
    assert page.count('<p class="caveat">') == 4  # header, results, by edit type, cost
    assert page.count('<div class="scroll"><table>') == page.count("<table>") == 4  # + fixed parameters
    assert "<td>sdedit</td>" not in page and '<td class="text">w</td><td class="text">7.5</td>' in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(report.tradeoffs) + len(report.sweeps) + 1 + len(report.grids) == 1 + 1 + 1 + 2
    for data in images:
        assert Image.open(io.BytesIO(base64.b64decode(data))).format == "PNG"
    assert page.count(f"<em>{SMOKE_NOTE}") == len(images)
    for field in ("backbone fingerprint", "packages", "commit", "device", "abc1234", "torch 2.0"):
        assert field in page, field
    assert 'class="best"' in page and 'class="reference"' in page


def test_grid_survives_a_missing_source_and_failed_cells(evil_run, tmp_path):
    run = build_report(evil_run, figures=False).run
    run.manifest["config"]["dataset"]["path"] = str(tmp_path / "gone.jsonl")
    sources = plots.load_sources(run, ["img0"])
    assert "dataset unavailable" in sources["img0"]
    png = plots.png(plots.image_grid(run, "img1", 0, sources["img0"]))
    assert Image.open(io.BytesIO(png)).size[0] > 100


def test_default_and_requested_tradeoff_planes():
    assert plots.tradeoff_planes(["psnr", "ssim"]) == [("psnr", "ssim")]
    planes = plots.tradeoff_planes(["psnr", "clip_score", "lpips_bg", "fid"])
    assert planes == [("clip_score", "lpips_bg"), ("clip_score", "fid")]
    assert plots.tradeoff_planes(["psnr", "time_s"]) == []  # cost has its own plot
    assert plots.tradeoff_planes(["psnr", "ssim"], ["ssim:psnr"]) == [("ssim", "psnr")]
    with pytest.raises(ConfigError, match="no metric 'clip_score'; it has psnr, ssim"):
        plots.tradeoff_planes(["psnr", "ssim"], ["clip_score:psnr"])
    with pytest.raises(ConfigError, match="expected two different metrics"):
        plots.tradeoff_planes(["psnr", "ssim"], ["psnr"])


def test_cli_report_writes_html_and_markdown(evil_run, tmp_path):
    result = invoke("report", evil_run, "--html", tmp_path / "r.html", "--md", tmp_path / "out/r.md", "--grid", 1)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    md = (tmp_path / "out/r.md").read_text()
    linked = re.findall(r"\]\((r_files/[^)]+)\)", md)
    assert len(linked) == 4 and all((tmp_path / "out" / p).is_file() for p in linked)
    plain = invoke("report", evil_run)
    assert plain.exit_code == 0 and "## Results" in plain.output and "![" not in plain.output
    assert "no metric 'lpips'" in invoke("report", evil_run, "--md", tmp_path / "x.md", "--plane", "lpips:psnr").output


def test_export_parquet_round_trips(evil_run, tmp_path):
    result = invoke("export", evil_run, "--parquet", tmp_path / "c.parquet")
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(tmp_path / "c.parquet")
    assert len(table) == 7 and set(table["method"]) == {"reconstruct", "sdedit"}
    assert EVIL_ID in set(table["sample_id"]) and (table["labels"] == "untrained backbone").all()
    assert "give --csv PATH and/or --parquet PATH" in invoke("export", evil_run).output


def test_history_orders_runs_by_time_and_tracks_each_setting(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "b", sweep_cells({0.3: 18.0}), created="2026-02-01T00:00:00+00:00", commit="bbbbbbbb")
    make_run(runs, "a", sweep_cells({0.3: 20.0}), created="2026-01-01T00:00:00+00:00", commit="aaaaaaaa")
    h = history([runs], "psnr")
    assert [r.run_dir.name for r in h.runs] == ["a", "b"]
    assert [s.mean for _, s in h.series["sdedit"]] == [20.0, 18.0]
    text = history_markdown(h)
    assert CAVEAT in text and "| 2026-01-01 00:00:00 aaaaaaa | fp-a | a | 6 | 31 [30, 32] n=3 | 20 [19.9, 20.1] n=3 |" in text
    result = invoke("history", runs / "a", runs / "b", "--metric", "psnr", "--method", "sdedit",
                    "--plot", tmp_path / "h.png")
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "h.png").format == "PNG" and "reconstruct" not in result.output
    from bench.reporting.plots import history_figure

    figure = history_figure(h.series, [r.run_dir.name for r in h.runs], h.metric, h.labels)
    assert [t.get_text().splitlines()[-1] for t in figure.axes[0].get_xticklabels()] == ["n=3", "n=3"]
    assert "no run has metric 'lpips'" in invoke("history", runs, "--metric", "lpips").output
    assert "neither a run folder" in invoke("history", tmp_path / "runs/a/images").output


def test_report_of_the_real_quickstart_shape(tmp_path, backbone):
    """A run the runner wrote (tiny backbone) goes through the whole report path."""
    from bench.execution.config import build_config
    from bench.execution.runner import Runner

    raw = {"dataset": {"name": None, "path": write_dataset(tmp_path / "data", n=2)},
           "methods": {"reconstruct": {}, "sdedit": {"t0": [0.5, 1.0], "steps": 2}}}  # fmt: skip
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    runner = Runner(build_config(raw), run_dir, backbone=backbone, progress=False)
    runner.write_manifest()
    runner.run()
    report = build_report(run_dir)
    rows = [(r.method, r.label, r.ok) for r in report.rows]
    assert rows == [("reconstruct", "—", 2), ("sdedit", "t0=0.5", 2), ("sdedit", "t0=1.0", 2)]
    page = render_html(report)
    assert "untrained backbone" in page and len(report.grids) == 2 and report.tradeoffs
    assert json.loads(json.dumps(report.run.manifest))["backbone"]["fingerprint"]["id"] in page


def test_incomplete_runs_say_so_at_the_top_of_report_compare_and_history(tmp_path):
    from bench.reporting.compare import compare_runs, comparison_markdown

    full = make_run(tmp_path, "full", sweep_cells({0.3: 20.0, 0.7: 15.0}))
    partial = make_run(tmp_path, "partial", sweep_cells({0.3: 20.0, 0.7: 15.0})[:-2], created="2026-01-02T00:00:00+00:00")
    note = f"incomplete: 7 of 9 cells in partial; finish it with editbench run --resume {partial}"
    assert summary_markdown(partial).startswith(f"**{note}**")
    assert "incomplete" not in summary_markdown(full)
    assert report_markdown(build_report(partial, figures=False)).splitlines()[2] == f"**{note}**"
    assert note in render_html(build_report(partial, figures=False))
    compared = comparison_markdown(compare_runs(full, partial))
    assert compared.index("new run " + note) < compared.index("regression")
    text = history_markdown(history([full, partial], "psnr"))
    assert text.splitlines()[2] == "**incomplete: 1 of 2 runs (partial)**"
    assert "| 9 | " in text and "| 7 of 9 (incomplete) | " in text and " n=3 |" in text and " n=1 |" in text


def test_cost_shows_the_spread_of_time_and_prep_cost_per_computed_preparation(tmp_path):
    from bench.reporting.aggregate import load_run, summarize
    from bench.reporting.report import COST_HEADER, cost_cells

    costs = [dict(time_s=1.0, prep_cached=False, prep_nfe=10, prep_time_s=2.0),
             dict(time_s=2.0, prep_cached=True, prep_nfe=0, prep_time_s=0.0),  # reused: not a preparation's cost
             dict(time_s=10.0, prep_cached=False, prep_nfe=20, prep_time_s=4.0)]  # fmt: skip
    cells = [cell("ddim_inversion", {"w": 7.5}, f"img{i}", {"psnr": 20.0}, **c) for i, c in enumerate(costs)]
    (row,) = cost_cells(summarize(load_run(make_run(tmp_path, "r", cells))))
    by_header = dict(zip(["method", "setting", "n"] + COST_HEADER, row))
    assert by_header["s/image (mean)"] == "4.333" and by_header["s/image median [IQR]"] == "2 [1.5, 6]"
    assert by_header["preparations computed"] == "2" and by_header["prep NFE each"] == "15"
    assert by_header["prep s each"] == "3" and by_header["prep reused/cached"] == "1/3"

