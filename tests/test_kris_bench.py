"""KRIS-Bench as a card: a local copy in its published schema (``<category>/annotation.json``
with ``ori_img``, ``ins_en``, ``explain_en``) loaded through the card, external outputs in its
results layout scored by its four judge metrics (a rule judge through the endpoint backend, and
the tiny judge with ``--untrained-extractors``), and ``report --table kris_bench`` drawing its
view: 0-100 scores per category, task type and knowledge type, AVG and Overall as its
``summarize.py`` pools them."""

import base64
import hashlib
import io
import json

import numpy as np
import pytest
import torch
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
    assert table.exit_code == 0 and "| Overall |" in table.output and "kris-bench/2" in table.output


#: sha256 of each prompt as KRIS-Bench's scripts send it: the authors' utils/prompts.py text after
#: the scripts' str.format ({{ }} -> { }, the {instruct} and {explanation} placeholders kept;
#: prompt_quality unformatted), computed from the two public copies of that file, which agree
#: byte for byte (ByteDance-Seed/Bagel eval/gen/kris/prompts.py @f8819fc, nameoffly/Kris_Bench_output
#: utils/prompts.py @75e89ed; see the template's header).
AUTHORS_PROMPTS = {
    "consistency": "429e737ed7cd4a257772e49acf00958c2209d60991975dfa533cd9fbcd715c67",  # prompt_consist
    "quality": "e4dd2bffe1e0db4489faeab14dbfd9df9779dbbfb10f4f26f899a55a3b225cac",  # prompt_quality
    "instruction": "99f1842b97a7a4474298cadf992982409f2422a0bba44dcdff4420d16b67e87d",  # prompt_instruction_following
    "dual": "a8da669f64e57fc44ad40f904306c6fa5bd305fcebf476f67beb27cfeb4e9491",  # prompt_dual_evaluation
    "quality_alone": "e4dd2bffe1e0db4489faeab14dbfd9df9779dbbfb10f4f26f899a55a3b225cac",  # prompt_quality
    "consistency_multi": "1d92e363d79f3e7689a7cc48811ddccac4baa5184479062ea715bd384830b2a2",
    "instruction_multi": "dfe0588c75ae2381750f9a2f490bd1fabbd86997318b873b5b3cb701fbb3ce2d",
    "consistency_temporal": "a7b9a28d8237677c8062a1d0bae0c0abe088854f7a03e7b11c3c74f9599dc922",
    "instruction_temporal": "8c7b982d992681bce63013b2f710f0804d6c933f26d43ea004f0a644bfaa6b46",
    "instruction_view": "b5e6133354aa8c445a0d158dacd72b1b3eab6143445aaf8c7ab4a7ed3492a2a6",  # view_instruction_following
}


def test_every_prompt_is_the_authors_text_as_their_scripts_send_it():
    from bench.metrics.judge import load_template
    from bench.metrics.kris import TEMPLATE

    template = load_template(TEMPLATE)
    assert template.version == "kris-bench/2" and set(template.parts) == set(AUTHORS_PROMPTS)
    sent = {part: hashlib.sha256(spec.prompt.encode()).hexdigest() for part, spec in template.parts.items()}
    assert sent == AUTHORS_PROMPTS


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


def multi_image_config(tmp_path, **more):
    """The three multi-image categories, every picture a solid grey (``LEVELS``), their edits too."""
    folder = write_kris(tmp_path / "KRIS_Bench", MULTI_IMAGE)
    results = tmp_path / "results" / "model"
    for category, levels in LEVELS.items():
        for name, level in levels.items():
            Image.new("RGB", (64, 48), (level,) * 3).save(f"{folder}/{category}/{name}")
        (results / category).mkdir(parents=True)
        for key in MULTI_IMAGE[category]:
            Image.new("RGB", (64, 48), (EDIT_LEVELS[category],) * 3).save(results / category / f"{key}.jpg")
    return {"dataset": {"name": "kris_bench", "path": folder}, "methods": {"external": {"folder": str(results)}},
            "metrics": ["kris_vc", "kris_vq", "kris_if", "kris_kp"], "output": str(tmp_path / "runs"),
            "backbone": {"resolution": 64}, **more}  # fmt: skip


def multi_image_judge(images, text, body):
    """Multi-element VC 2, IF 4; temporal VC 5, IF 2; viewpoint VC 4 (the common prompt), IF 1; VQ 3."""
    if "quality_score" in text:
        return '{\n"reasoning": fine,\n"quality_score": 3,\n}'
    consistency = "consistency_score" in text
    if "Composite Image" in text:
        return '{"consistency_score": 2}' if consistency else '{"instruction_score": 4}'
    if "Reference Frames" in text:
        return '{"consistency_score": 5}' if consistency else '{"instruction_score": 2}'
    return '{"consistency_score": 4}' if consistency else '{"instruction_score": 1}'


def shown(body) -> list[tuple[str, int]]:
    """A request's (label, grey level) pairs, in the order sent."""
    content = body["messages"][0]["content"]
    assert content[0]["type"] == "text" and all(p["type"] == "text" for p in content[1::2])
    levels = []
    for part in content[2::2]:
        data = part["image_url"]["url"].split(",", 1)[1]
        levels.append(round(np.asarray(Image.open(io.BytesIO(base64.b64decode(data)))).mean()))
    return list(zip([p["text"] for p in content[1::2]], levels))


def test_multi_image_categories_are_asked_with_the_authors_images_labels_and_prompts(tmp_path):
    with ChatServer(multi_image_judge) as server:
        judge = {"backend": "endpoint", "url": server.url, "model": "rule", "request": "kris_gpt4o"}
        raw = multi_image_config(tmp_path, metric_options={"judge": judge})
        run_dir, counts = start_run(build_config(raw), progress=False)
        bodies = server.requests
    assert counts["ok"] == 3 and len(bodies) == 9  # VC, VQ, IF each; no KP
    asked = {}
    for body in bodies:
        prompt = body["messages"][0]["content"][0]["text"]
        kind = ("quality" if "quality_score" in prompt else "consistency" if "consistency_score" in prompt
                else "instruction")  # fmt: skip
        asked[kind, tuple(shown(body))] = prompt
    multi = [("Reference Image 1:", 50), ("Reference Image 2:", 60), ("Reference Image 3:", 70),
             ("Predicted Image:", 210)]
    frames = [("Frame 1 (Reference):", 10), ("Frame 2 (Generated):", 200), ("Frame 3 (Reference):", 30),
              ("Frame 4 (Reference):", 40)]  # the edit at the missing frame's place; the ground truth (20) not shown
    view = [("This is the original image:", 90), ("This is the edited image:", 220)]
    assert set(asked) == {
        ("consistency", tuple(multi)), ("instruction", tuple(multi)),
        ("quality", (("This is the image to evaluate:", 210),)),
        ("consistency", tuple(frames)), ("instruction", tuple(frames)),
        ("quality", (("This is the image to evaluate:", 200),)),
        ("consistency", tuple(view)), ("instruction", (*view, ("This is the ground truth image:", 120))),
        ("quality", (("This is the edited image:", 220),)),
    }  # fmt: skip
    multi_prompt = asked["consistency", tuple(multi)]
    assert "**Composite Image**" in multi_prompt and "chosen **background source**" in multi_prompt
    assert "**Modification Instruction**: Put the cat of image 2 and the hat of image 3 into image 1." in multi_prompt
    assert '{\n  "consistency_score": X,' in multi_prompt  # str.format's {{ }} undone, as the scripts send it
    assert "predict what the image of Frame 2" in asked["instruction", tuple(frames)]
    assert "**Ground-Truth Image**" in asked["instruction", (*view, ("This is the ground truth image:", 120))]
    assert "Image B**: an edited version of Image A" in asked["consistency", tuple(view)]  # the common prompt
    cells = read_cells(run_dir).set_index("sample_id")
    metrics = ["metric.kris_vc", "metric.kris_vq", "metric.kris_if"]
    assert cells.loc["multi-element_composition/1", metrics].tolist() == [2, 3, 4]
    assert cells.loc["temporal_prediction/16", metrics].tolist() == [5, 3, 2]
    assert cells.loc["viewpoint_change/1", metrics].tolist() == [4, 3, 1]
    assert cells["metric.kris_kp"].isna().all()
    table = CliRunner().invoke(main, ["report", str(run_dir), "--table", "kris_bench"]).output
    for row in ["| viewpoint_change | 1 | 75.00 | 50.00 | 0.00 | — (1 NaN) | 41.67 |",
                "| temporal_prediction | 1 | 100.00 | 50.00 | 25.00 | — (1 NaN) | 58.33 |",
                "| multi-element_composition | 1 | 25.00 | 50.00 | 75.00 | — (1 NaN) | 50.00 |",
                "| Spatial Perception | 1 | 75.00 | 50.00 | 0.00 | — (1 NaN) | 41.67 |",
                "| Temporal Prediction | 1 | 100.00 | 50.00 | 25.00 | — (1 NaN) | 58.33 |",
                "| Instruction Decomposition | 1 | 25.00 | 50.00 | 75.00 | — (1 NaN) | 50.00 |",
                "| Factual Knowledge | 2 | 87.50 | 50.00 | 12.50 | — (2 NaN) | 50.00 |",
                "| Procedural Knowledge | 1 | 25.00 | 50.00 | 75.00 | — (1 NaN) | 50.00 |",
                "| Overall | 3 (3/20 categories) | 66.67 | 50.00 | 33.33 | — (3 NaN) | 50.00 |"]:  # fmt: skip
        assert row in table, table


def test_a_temporal_item_without_frame_numbers_is_nan_with_the_reason(tmp_path):
    from bench.metrics.kris import temporal_frames
    from bench.samples import Sample

    def frames(names):
        return temporal_frames(Sample("t", torch.zeros(3, 8, 8), "", groups={"ori_img": names}))

    assert frames("16-1.jpg 16-3.jpg 16-4.jpg") == ((1, 3, 4), 2)
    assert frames("40-1.jpg 40-2.jpg 40-3.jpg") == ((1, 2, 3), 4)
    assert frames("7-2.png 7-3.png 7-5.png") == ((2, 3, 5), 6)  # no single missing frame: the last plus one
    assert frames("first.jpg second.jpg") is None and frames("") is None


@pytest.mark.slow  # about 30 s: the tiny judge reads three to five pictures per request
def test_the_tiny_judge_scores_the_multi_image_categories(tmp_path):
    path = tmp_path / "kris.yaml"
    path.write_text(yaml.safe_dump(multi_image_config(tmp_path)))
    run = CliRunner().invoke(main, ["run", str(path), "--untrained-extractors"])
    assert run.exit_code == 0, run.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    cells = read_cells(run_dir)
    assert (cells["status"] == "ok").all() and len(cells) == 3
    for note in cells[["note.kris_vc", "note.kris_vq", "note.kris_if"]].to_numpy().ravel():
        assert json.loads(note)["answer"] is not None  # every multi-image request reached the judge (its text unread)
