"""The HTML report as a person sees it, in headless Chromium. Slow and needs Debian's
``chromium``: ``python -m pytest -m slow tests/test_report_render.py``."""

import base64
import importlib.util
import io
from pathlib import Path

import pytest
from PIL import Image

from bench.reporting.html_report import write_html
from bench.reporting.report import build_report
from tests.test_report import EVIL_PROMPT, evil_run  # noqa: F401  (fixture)

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "check_report_render.py"
spec = importlib.util.spec_from_file_location("check_report_render", SCRIPT)
checker = importlib.util.module_from_spec(spec)
spec.loader.exec_module(checker)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(checker.find_browser() is None, reason="needs chromium (apt-get install chromium)"),
]


def test_report_renders_with_tables_images_and_prompts_as_text(evil_run, tmp_path):
    page = write_html(build_report(evil_run, n_grid=2), tmp_path / "report.html")
    expected = [EVIL_PROMPT, "Smoke numbers — untrained backbone"]
    seen = checker.render(page, expected, screenshot=tmp_path / "shot.png")
    assert checker.problems(seen, expected) == []
    assert seen["tables"] == 4 and seen["images"] == seen["images_decoded"] == 5 and seen["scripts"] == 0
    assert seen["wide_images"] == [] and seen["cut_tables"] == []
    assert (tmp_path / "shot.png").stat().st_size > 10_000


def test_the_checker_catches_a_script_and_a_broken_image(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><body><table><tbody><tr><td>x</td></tr></tbody></table>"
        '<img src="data:image/png;base64,AAAA"><script>document.title = "ran"</script></body></html>'
    )
    seen = checker.render(bad, ["not on the page"])
    wrong = checker.problems(seen, ["not on the page"])
    assert any("1 of 1 images" in w or "0 of 1 images" in w for w in wrong)
    assert any("script element" in w for w in wrong) and any("text not shown" in w for w in wrong)


def _png_data(width: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (width, 40), "gray").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def test_the_checker_catches_a_figure_wider_than_the_page_and_a_cut_table(tmp_path):
    row = "<tr>" + "".join(f"<td>column {i} value</td>" for i in range(60)) + "</tr>"
    table = f"<table><tbody>{row}</tbody></table>"
    page = tmp_path / "wide.html"
    page.write_text(
        "<!DOCTYPE html><html><head><style>img { max-width: 100%; }</style></head><body>"
        f'{table}<img src="data:image/png;base64,{_png_data(3000)}">'
        f'<div style="overflow-x: auto">{table}</div><img src="data:image/png;base64,{_png_data(600)}"></body></html>'
    )
    seen = checker.render(page)
    wrong = checker.problems(seen)
    assert [w.split(" is ")[0] for w in wrong] == ["figure 1", "table 1"], wrong  # not table 2 (it scrolls), not figure 2
    assert "3000 px wide" in wrong[0] and "no box around it scrolls" in wrong[1]


def test_a_table_only_page_passes_and_a_page_missing_a_declared_figure_fails(evil_run, tmp_path):
    from bench.reporting.piebench_table import write_piebench

    write_piebench(evil_run, html_path=tmp_path / "pie.html")
    assert checker.problems(checker.render(tmp_path / "pie.html")) == []  # no images, by design: it says 0
    page = write_html(build_report(evil_run, n_grid=1), tmp_path / "report.html")
    text = page.read_text()
    first = text.index("<figure>")
    page.write_text(text[:first] + text[text.index("</figure>", first) + len("</figure>"):])
    wrong = checker.problems(checker.render(page))
    assert any("which declares" in w for w in wrong), wrong
