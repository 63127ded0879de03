"""The gallery as a person uses it, in headless Chromium: sorting and filtering change what is
shown, in the right order. Slow and needs Debian's ``chromium``:
``python -m pytest -m slow tests/test_gallery_render.py``."""

import pytest
import yaml
from click.testing import CliRunner

from bench.reporting.gallery import write_gallery
from run_bench import main
from tests.helpers import write_dataset
from tests.test_gallery import gallery_run  # noqa: F401  (fixture)
from tests.test_report import EVIL_PROMPT
from tests.test_report_render import checker

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(checker.find_browser() is None, reason="needs chromium (apt-get install chromium)"),
]


def test_the_gallery_sorts_filters_and_shows_prompts_as_text(gallery_run, tmp_path):
    page = write_gallery(gallery_run, tmp_path / "gallery.html")
    seen = checker.render(page, [EVIL_PROMPT], screenshot=tmp_path / "shot.png", probe=checker.GALLERY_PROBE)
    assert checker.gallery_problems(seen, [EVIL_PROMPT]) == []
    assert seen["metric"] == "psnr" and seen["ascending"]["sort_values"] == [20, 22, None]  # no value: last
    assert seen["descending"]["sort_values"] == [22, 20, None]
    assert seen["start"]["methods"] == ["reconstruct", "sdedit"] and seen["by_method"]["methods"] == ["sdedit"]
    assert seen["start"]["edit_types"] == ["add_object", "change_object"]
    assert seen["edit_type"] == "change_object" and seen["by_edit_type"]["cards"] == 2
    assert seen["first_card_images"] == seen["first_card_decoded"] == 4  # the source and three edits
    assert seen["title"] == "editbench gallery: evil" and seen["injected"] == 0
    assert (tmp_path / "shot.png").stat().st_size > 10_000


def test_an_infinite_value_sorts_first_descending(gallery_run, tmp_path):
    page = write_gallery(gallery_run, tmp_path / "gallery.html")
    text = page.read_text()  # sort the reference row (psnr inf, 30, none) instead of the first edit
    assert "sortRow.value = String(firstEdit);" in text
    page.write_text(text.replace("sortRow.value = String(firstEdit);", "sortRow.value = '0';"))
    seen = checker.render(page, probe=checker.GALLERY_PROBE)
    assert checker.gallery_problems(seen) == []
    assert seen["descending"]["sort_values"] == [1e308, 30, None] and seen["ascending"]["sort_values"] == [30, 1e308, None]


def test_the_checker_catches_a_gallery_that_does_not_sort_or_filter(gallery_run, tmp_path):
    page = write_gallery(gallery_run, tmp_path / "gallery.html")
    text = page.read_text()
    breaks = {'const sign = order.value === "asc" ? 1 : -1;': "const sign = 1;",  # descending sorts ascending
              ".filter((i) => method.value === ANY || DATA.rows[i].method === method.value)": ""}  # no method filter
    for works, broken in breaks.items():
        assert works in text
        text = text.replace(works, broken)
    page.write_text(text)
    wrong = checker.gallery_problems(checker.render(page, probe=checker.GALLERY_PROBE))
    assert any("descending shows" in w for w in wrong), wrong
    assert any("filtering by method sdedit shows tiles of ['reconstruct', 'sdedit']" in w for w in wrong), wrong


def test_the_quickstart_gallery_sorts_by_a_metric_and_filters_by_method(tmp_path):
    """The quickstart (3 samples, 4 steps) from the command line, its gallery checked in the browser."""
    from bench.paths import repo_root

    quickstart = yaml.safe_load((repo_root() / "configs" / "quickstart.yaml").read_text())
    quickstart["dataset"] = {"path": write_dataset(tmp_path / "data", n=3)}
    quickstart["methods"]["sdedit"]["steps"] = 4  # the fewest that run a step at t0 = 0.3
    (tmp_path / "q.yaml").write_text(yaml.safe_dump(quickstart))
    result = CliRunner().invoke(main, ["run", str(tmp_path / "q.yaml"), "--out", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 0, result.output
    run_dir = result.stdout.strip().splitlines()[-1]
    assert CliRunner().invoke(main, ["report", run_dir, "--gallery", str(tmp_path / "g.html")]).exit_code == 0
    seen = checker.render(tmp_path / "g.html", probe=checker.GALLERY_PROBE)
    assert checker.gallery_problems(seen) == []
    assert seen["start"]["cards"] == 3 and len(seen["ascending"]["sort_values"]) == 3
    assert seen["method"] == "sdedit" and seen["by_method"]["methods"] == ["sdedit"]
