"""Benchmarks declared as cards, end to end: ImgEdit-Bench Basic from a local copy in its published
schema (``basic_edit.json`` + images), external outputs scored by its judge protocol (a rule judge
through the endpoint backend, and the tiny seeded judge with ``--untrained-extractors``), and
``report --table imgedit_basic`` printing the benchmark's own view."""

import json
import math

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from bench.data import DatasetSpec, load_dataset
from bench.execution.config import build_config
from bench.execution.runner import start_run
from run_bench import main
from tests.chat_server import ChatServer
from tests.helpers import read_cells

ITEMS = {  # key -> the published item schema {id, prompt, edit_type}
    "1082": {"id": "animal/000342021.jpg", "prompt": "Change the tortoise's shell texture to a smooth surface.",
             "edit_type": "adjust"},
    "673": {"id": "style/000278574.jpg", "prompt": "Transfer the image into a watercolor style.", "edit_type": "style"},
    "12": {"id": "for_add/000000012.jpg", "prompt": "Add a red kite in the sky.", "edit_type": "add"},
    "13": {"id": "for_add/000000013.jpg", "prompt": "Add a dog on the grass.", "edit_type": "add"},
}  # fmt: skip
#: The rule judge's answers by the first word of the edit instruction's line: (three criteria scores).
SCORES = {"Change": (4, 3, 3), "Transfer": (5, 4, 2), "Add": (2, 2, 1)}


def write_imgedit(folder):
    """A local copy of ImgEdit-Bench Basic: basic_edit.json and the images under the paths its ids name."""
    rng = np.random.default_rng(0)
    for item in ITEMS.values():
        path = folder / item["id"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    (folder / "basic_edit.json").write_text(json.dumps(ITEMS, indent=4))
    return folder


def outputs(folder):
    """Edits made elsewhere, one PNG per item key (``external``)."""
    rng = np.random.default_rng(1)
    folder.mkdir()
    for key in ITEMS:
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"{key}.png")
    return folder


def rule_judge(images, text, body):
    """ImgEdit's answer form: a reasoning line, then one 'Criterion: n' line per criterion of the prompt."""
    criteria = [line.split(":")[0] for line in text.splitlines() if line.endswith(": A number from 1 to 5.")]
    instruction = text.split("editing instruction is : ")[1]
    scores = SCORES[instruction.split()[0]]
    return "Brief reasoning: rule.\n" + "\n".join(f"{c}: {s}" for c, s in zip(criteria, scores))


def config(tmp_path, **more):
    raw = {"dataset": {"name": "imgedit_basic", "path": str(write_imgedit(tmp_path / "imgedit"))},
           "methods": {"external": {"folder": str(outputs(tmp_path / "outside"))}}, "metrics": ["imgedit_score"],
           "output": str(tmp_path / "runs"), "backbone": {"resolution": 64}, **more}  # fmt: skip
    return raw


def test_the_published_schema_loads_through_the_card(tmp_path):
    refs = load_dataset(DatasetSpec(name="imgedit_basic", path=str(write_imgedit(tmp_path / "imgedit"))))
    assert [(r.id, r.edit_type) for r in refs] == [(k, v["edit_type"]) for k, v in ITEMS.items()]
    sample = refs[0].load(64)
    assert sample.instruction == ITEMS["1082"]["prompt"] and sample.source_size == (64, 64)
    with pytest.raises(Exception, match="basic_edit.json"):
        load_dataset(DatasetSpec(name="imgedit_basic", path=str(tmp_path)))


def test_external_outputs_scored_by_the_imgedit_protocol_and_its_table(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITBENCH_CACHE", str(tmp_path / "cache"))
    with ChatServer(rule_judge) as server:
        raw = config(tmp_path, metric_options={"judge": {"backend": "endpoint", "url": server.url, "model": "rule",
                                                         "request": "imgedit_gpt4o"}})  # fmt: skip
        run_dir, counts = start_run(build_config(raw), progress=False)
        body = server.requests[0]
    assert counts["ok"] == 4
    content = body["messages"][0]["content"]
    assert [p["type"] for p in content] == ["text", "image_url", "image_url"] and "temperature" not in body
    values = read_cells(run_dir).set_index("sample_id")["metric.imgedit_score"]
    assert values["1082"] == pytest.approx(10 / 3) and values["673"] == pytest.approx(11 / 3)
    assert values["12"] == pytest.approx(5 / 3) and values["13"] == pytest.approx(5 / 3)
    table = CliRunner().invoke(main, ["report", str(run_dir), "--table", "imgedit_basic"]).output
    assert "# ImgEdit-Bench (Basic) table" in table and "| edit type | n | Score" in table
    assert "| external | — | add | 2 | 1.67 |" in table and "| external | — | style | 1 | 3.67 |" in table
    overall = np.mean([10 / 3, 11 / 3, 5 / 3, 5 / 3])  # the mean over items (lmms-eval's), not of the type means
    assert f"| external | — | Overall | 4 (3/9 edit types) | {overall:.2f} |" in table
    assert "Judge: rule@unknown (endpoint) via endpoint, imgedit_gpt4o request, template imgedit-basic/1" in table


def test_the_tiny_judge_scores_end_to_end_with_untrained_extractors(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITBENCH_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "imgedit.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path)))
    run = CliRunner().invoke(main, ["run", str(path), "--untrained-extractors"])
    assert run.exit_code == 0, run.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    cells = read_cells(run_dir)
    assert len(cells) == 4 and (cells["status"] == "ok").all()
    values = cells["metric.imgedit_score"].astype(float)
    assert all(math.isnan(v) or 1 <= v <= 5 for v in values)  # the random judge's answers: noise, NaN when unreadable
    table = CliRunner().invoke(main, ["report", str(run_dir), "--table", "imgedit_basic"])
    assert table.exit_code == 0 and "| Overall |" in table.output and "imgedit-basic/1" in table.output


@pytest.mark.parametrize("answer, scores", [
    ("Brief reasoning: ok.\nPrompt Compliance: 4\nVisual Naturalness: 3\nPhysical & Detail Coherence: 2", (4, 3, 2)),
    ("**Prompt Compliance**: 4\n**Visual Naturalness**: 3\n**Physical & Detail Coherence**: 2", (4, 3, 2)),
    ("Note: 5\nPrompt Compliance: 4\nVisual Naturalness: 3\nPhysical & Detail Coherence: 2\nOverall: 5", (4, 3, 2)),
    ("Prompt Compliance: 7\nVisual Naturalness: 3\nPhysical & Detail Coherence: 2", None),  # ImgEdit's reader takes 7
    ("Prompt Compliance: 4\nVisual Naturalness: 3", None),  # ImgEdit's reader averages the two it finds
    ("Prompt Compliance: 4.\nVisual Naturalness: 3.\nPhysical & Detail Coherence: 2.", None),  # neither reads "4."
])  # fmt: skip
def test_named_line_answers_are_read_by_their_criteria(answer, scores):
    from bench.metrics.judge_answers import read_named_scores

    criteria = ("Prompt Compliance", "Visual Naturalness", "Physical & Detail Coherence")
    reading = read_named_scores(answer, criteria, (1, 5))
    assert reading.scores == scores
