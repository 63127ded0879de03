"""KRIS-Bench as a card: a local copy in its published schema (``<category>/annotation.json``
with ``ori_img``, ``ins_en``, ``explain_en``) loaded through the card, external outputs in its
results layout scored by its four judge metrics (a rule judge through the endpoint backend, and
the tiny judge with ``--untrained-extractors``), and ``report --table kris_bench`` drawing its
view: 0-100 scores per category, task type and knowledge type, AVG and Overall as its
``summarize.py`` pools them."""

import json

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
from tests.helpers import read_cells, write_kris

ANNOTATIONS = {  # category -> the published annotation.json
    "color_change": {"1": {"ori_img": "1.jpg", "ins_en": "Make the apple blue.", "explain_en": ""},
                     "2": {"ori_img": "2.png", "ins_en": "Make the sky green.", "explain_en": ""}},
    "physics": {"1": {"ori_img": "1.jpg", "ins_en": "Show the ice after an hour in the sun.",
                      "explain_en": "The ice melts into a puddle of water."}},
}  # fmt: skip
MULTI_IMAGE = {  # the categories judged with more images, in the published schema
    "multi-element_composition": {"1": {"ori_img": ["1-1.jpg", "1-2.jpg", "1-3.jpg"], "gt_img": "", "explain_en": "",
                                        "ins_en": "Put the cat of image 2 and the hat of image 3 into image 1."}},
    "temporal_prediction": {"16": {"ori_img": ["16-1.jpg", "16-3.jpg", "16-4.jpg"], "gt_img": "16-2.jpg",
                                   "ins_en": "Based on the images from Frame 1, Frame 3, and Frame 4, predict what "
                                             "the image of Frame 2 in the sequence should look like.",
                                   "explain_en": ""}},
    "viewpoint_change": {"1": {"ori_img": "1.jpg", "gt_img": "1-gt.jpg", "ins_en": "Show the car from above.",
                               "explain_en": ""}},
}  # fmt: skip
#: Each multi-image item's pictures as solid grey levels (the edit: ``EDIT_LEVELS``), to find them in the requests.
LEVELS = {"multi-element_composition": {"1-1.jpg": 50, "1-2.jpg": 60, "1-3.jpg": 70},
          "temporal_prediction": {"16-1.jpg": 10, "16-3.jpg": 30, "16-4.jpg": 40, "16-2.jpg": 20},
          "viewpoint_change": {"1.jpg": 90, "1-gt.jpg": 120}}  # fmt: skip
EDIT_LEVELS = {"multi-element_composition": 210, "temporal_prediction": 200, "viewpoint_change": 220}


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITBENCH_CACHE", str(tmp_path / "cache"))


def outputs(folder):
    """Edits made elsewhere in KRIS-Bench's results layout: <model>/<category>/<id>.jpg."""
    rng = np.random.default_rng(1)
    for category, items in ANNOTATIONS.items():
        (folder / category).mkdir(parents=True)
        for key in items:
            Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / category / f"{key}.jpg")
    return folder


def rule_judge(images, text, body):
    """KRIS-Bench's answer forms (the reasoning unquoted, as GPT-4o writes it): consistency 4,
    quality 3, instruction 5; the dual prompt: instruction 2, knowledge 1."""
    if "knowledge_score" in text:
        assert "The ice melts into a puddle of water." in text  # the annotation's explanation is in the prompt
        return '{\n  "instruction_score": 2,\n  "instruction_reasoning": 1. no ice\n  "knowledge_score": 1,\n}'
    if "consistency_score" in text:
        return 'Background: unchanged.\n{\n"reasoning": **Compared to original image**, all kept.\n"consistency_score": 4\n}'
    if "quality_score" in text:
        return '{\n"reasoning": fine,\n"quality_score": 3,\n}'
    return '{\n"instruction_score": 5,\n"reasoning": 1. done\n}'


def config(tmp_path, **more):
    return {"dataset": {"name": "kris_bench", "path": write_kris(tmp_path / "KRIS_Bench", ANNOTATIONS)},
            "methods": {"external": {"folder": str(outputs(tmp_path / "results" / "model"))}},
            "metrics": ["kris_vc", "kris_vq", "kris_if", "kris_kp"], "output": str(tmp_path / "runs"),
            "backbone": {"resolution": 64}, **more}  # fmt: skip


def test_the_published_schema_loads_through_the_card(tmp_path):
    refs = load_dataset(DatasetSpec(name="kris_bench", path=write_kris(tmp_path / "KRIS_Bench", ANNOTATIONS)))
    assert [(r.id, r.edit_type) for r in refs] == [("color_change/1", "color_change"), ("color_change/2", "color_change"),
                                                   ("physics/1", "physics")]  # fmt: skip
    sample = refs[2].load(64)
    assert sample.instruction == "Show the ice after an hour in the sun."
    assert sample.explanation == "The ice melts into a puddle of water." and refs[0].load(64).explanation is None


def test_external_outputs_scored_by_the_kris_protocol_and_its_table(tmp_path):
    with ChatServer(rule_judge) as server:
        raw = config(tmp_path, metric_options={"judge": {"backend": "endpoint", "url": server.url, "model": "rule",
                                                         "request": "kris_gpt4o"}})  # fmt: skip
        run_dir, counts = start_run(build_config(raw), progress=False)
        bodies = server.requests
    assert counts["ok"] == 3
    assert len(bodies) == 3 + 3 + 2 + 1  # consistency, quality, instruction (2 common), one dual for IF and KP
    content = bodies[0]["messages"][0]["content"]
    assert [p["type"] for p in content] == ["text", "text", "image_url", "text", "image_url"]
    assert content[1]["text"] == "This is the original image:" and content[3]["text"] == "This is the edited image:"
    assert content[2]["image_url"]["url"].startswith("data:image/jpeg;base64,") and bodies[0]["max_tokens"] == 1000
    cells = read_cells(run_dir).set_index("sample_id")
    assert cells.loc["physics/1", ["metric.kris_vc", "metric.kris_vq", "metric.kris_if", "metric.kris_kp"]].tolist() == [
        4, 3, 2, 1]  # fmt: skip
    assert cells.loc["color_change/1", "metric.kris_if"] == 5 and np.isnan(cells.loc["color_change/1", "metric.kris_kp"])
    table = CliRunner().invoke(main, ["report", str(run_dir), "--table", "kris_bench"]).output
    assert "| category | n | VC ↑ | VQ ↑ | IF ↑ | KP ↑ | AVG |" in table
    assert "| color_change | 2 | 75.00 | 50.00 | 100.00 | — (2 NaN) | 75.00 |" in table
    assert "| physics | 1 | 75.00 | 50.00 | 25.00 | 0.00 | 37.50 |" in table
    assert "| Attribute Perception | 2 | 75.00 | 50.00 | 100.00 | — (2 NaN) | 75.00 |" in table
    assert "| Conceptual Knowledge | 1 | 75.00 | 50.00 | 25.00 | 0.00 | 37.50 |" in table
    assert "| Overall | 3 (2/20 categories) | 75.00 | 50.00 | 75.00 | 0.00 (2 NaN) | 60.00 |" in table


def test_the_tiny_judge_scores_end_to_end_with_untrained_extractors(tmp_path):
    path = tmp_path / "kris.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path)))
    run = CliRunner().invoke(main, ["run", str(path), "--untrained-extractors"])
    assert run.exit_code == 0, run.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (read_cells(run_dir)["status"] == "ok").all()
    table = CliRunner().invoke(main, ["report", str(run_dir), "--table", "kris_bench"])
    assert table.exit_code == 0 and "| Overall |" in table.output and "kris-bench/1" in table.output


@pytest.mark.parametrize("answer, score", [
    ('{"reasoning": "ok", "consistency_score": 4}', 4),
    ('text {\n"reasoning": **Compared**, x\n"consistency_score": 3\n}', 3),  # not JSON: KRIS-Bench's regex reads it too
    ("consistency score: 2", 2),
    ("I would rate it 4/5.", None),  # KRIS-Bench guesses 4
    ("Step 1 looks fine. Step 2 is wrong.", None),  # KRIS-Bench guesses 1, the first lone digit
    ('{"consistency_score": 7}', None),  # KRIS-Bench keeps 7
    ("consistency_score: 4 ... final consistency_score: 2", None),  # KRIS-Bench takes the first
])  # fmt: skip
def test_answers_are_read_by_their_key_as_compared_with_kris_benchs_parser(answer, score):
    from bench.metrics.judge_answers import read_json_keys

    reading = read_json_keys(answer, ("consistency_score",), (1, 5))
    assert (reading.scores[0] if reading.ok else None) == score
