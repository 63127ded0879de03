"""RISEBench as a card: a local copy in its published schema (``data_total.json``, a list of items
with ``index``, ``category``, ``instruction``, ``image``, ``reference`` / ``reference_txt`` /
``reference_img`` and the flags ``reasoning_img`` and ``consistency_free``) loaded through the
card, external outputs in its results layout (``images/<category>/<index>.png``) judged with its
own prompt per category and flag (a rule judge through the endpoint backend, and the tiny judge
with ``--untrained-extractors``), and ``report --table rise_bench`` drawing accuracy and the
weighted score per category and overall as gpt_eval.py computes them."""

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
from bench.metrics.judge import load_template
from bench.metrics.rise import weighted_score
from run_bench import main
from tests.chat_server import ChatServer
from tests.helpers import read_cells

ITEMS = [  # data_total.json's schema; the flags as RISEBench-360 carries them
    {"index": "temporal_reasoning_1", "category": "temporal_reasoning", "instruction": "Show it a year later.",
     "image": "temporal_reasoning_images/1.png", "reference": "Rotten, blackened banana.",
     "subtask": "Life Progression"},
    {"index": "temporal_reasoning_2", "category": "temporal_reasoning", "instruction": "Show the tree ten years later.",
     "image": "temporal_reasoning_images/2.png", "reference": "Mature tree.", "reasoning_img": True},
    {"index": "causal_reasoning_1", "category": "causal_reasoning", "instruction": "Drop the glass.",
     "image": "causal_reasoning_images/1.png", "reference": "Shattered glass.", "consistency_free": True},
    {"index": "spatial_reasoning_1", "category": "spatial_reasoning", "instruction": "Assemble the parts.",
     "image": "spatial_reasoning_images/1.png", "reference_img": "spatial_reasoning_images/1_ref.png"},
    {"index": "logical_reasoning_1", "category": "logical_reasoning", "instruction": "Draw the shortest path in red.",
     "image": "logical_reasoning_images/1.png", "reference_txt": "From node 1 to 2, then to 4."},
    {"index": "logical_reasoning_2", "category": "logical_reasoning", "instruction": "Solve the maze in blue.",
     "image": "logical_reasoning_images/2.png", "reference_img": "logical_reasoning_images/2_ref.png"},
]  # fmt: skip
EDIT_COLOURS = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0), (0, 250, 250), (250, 0, 250)]
REFERENCE_COLOURS = {"spatial_reasoning_1": (128, 64, 0), "logical_reasoning_2": (0, 64, 128)}
# (item, template part) -> the judge's score; logical answers are 0/1 (read as 4 * min(s, 1) + 1)
ANSWERS = {
    ("temporal_reasoning_1", "consistency"): 5, ("temporal_reasoning_1", "reasoning"): 5,
    ("temporal_reasoning_1", "quality"): 5,
    ("temporal_reasoning_2", "consistency"): 3, ("temporal_reasoning_2", "reasoning_with_input"): 1,
    ("temporal_reasoning_2", "quality"): 3,
    ("causal_reasoning_1", "reasoning"): 5, ("causal_reasoning_1", "quality"): 4,
    ("spatial_reasoning_1", "spatial_consistency_reference_image"): 5,
    ("spatial_reasoning_1", "spatial_reasoning_reference_image"): 1, ("spatial_reasoning_1", "spatial_quality"): 5,
    ("logical_reasoning_1", "logical_consistency_answer"): 1, ("logical_reasoning_1", "logical_reasoning_answer"): 1,
    ("logical_reasoning_2", "logical_consistency"): 1, ("logical_reasoning_2", "logical_reasoning"): 0,
}  # fmt: skip
# per item: (consistency, reasoning, plausibility, score, accuracy), by hand from gpt_eval.py's rules
EXPECTED = {
    "temporal_reasoning_1": (5, 5, 5, 5.0, 100),
    "temporal_reasoning_2": (3, 1, 3, 1.0, 0),  # 0.3*3 + 0.5*1 + 0.2*3 = 2.0, halved: 1.0 (the floor)
    "causal_reasoning_1": (None, 5, 4, 4.8, 0),  # consistency-free: 0.2*4 + 0.8*5
    "spatial_reasoning_1": (5, 1, 5, 1.5, 0),  # 0.3*5 + 0.5*1 + 0.2*5 = 3.0, halved
    "logical_reasoning_1": (5, 5, None, 5.0, 100),
    "logical_reasoning_2": (5, 1, None, 1.1, 0),  # 0.3*5 + 0.7*1 = 2.2, halved
}
METRICS = ["rise_consistency", "rise_reasoning", "rise_plausibility", "rise_score", "rise_accuracy"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITBENCH_CACHE", str(tmp_path / "cache"))


def solid(colour):
    return Image.new("RGB", (64, 48), colour)


def write_rise(folder):
    """RISEBench's data folder: data_total.json and the images it names."""
    rng = np.random.default_rng(0)
    for item in ITEMS:
        (folder / item["image"]).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / item["image"])
        if "reference_img" in item:
            solid(REFERENCE_COLOURS[item["index"]]).save(folder / item["reference_img"])
    (folder / "data_total.json").write_text(json.dumps(ITEMS, indent=1))
    return folder


def outputs(folder):
    """Edits made elsewhere in RISEBench's results layout: outputs/<model>/images/<category>/<index>.png."""
    for item, colour in zip(ITEMS, EDIT_COLOURS):
        (folder / item["category"]).mkdir(parents=True, exist_ok=True)
        solid(colour).save(folder / item["category"] / f"{item['index']}.png")
    return folder


def nearest(image, colours) -> int:
    mean = np.asarray(image, dtype=float).reshape(-1, 3).mean(0)
    return int(np.argmin([np.abs(mean - np.array(c)).sum() for c in colours]))


def rule_judge(images, text, body):
    """The score ANSWERS gives the item (its edit's colour, always the last image) and the part
    (the prompt, filled with the item's instruction and reference as gpt_eval.py fills it)."""
    item = ITEMS[nearest(images[-1], EDIT_COLOURS)]
    template = load_template("rise_bench_v1")
    reference = item.get("reference") or item.get("reference_txt")
    (part,) = [p for p, spec in template.parts.items()
               if (item["index"], p) in ANSWERS and spec.text(item["instruction"], reference) == text]
    shown = template.parts[part].images
    assert len(images) == len(shown)
    if shown[0] == "reference":  # reference_img is shown instead of the input
        assert nearest(images[0], [*EDIT_COLOURS, REFERENCE_COLOURS[item["index"]]]) == len(EDIT_COLOURS)
    return f"Reasoning about the edit.\n**Final Score:** **{ANSWERS[item['index'], part]}**"


def config(tmp_path, **more):
    return {"dataset": {"name": "rise_bench", "path": str(write_rise(tmp_path / "data"))},
            "methods": {"external": {"folder": str(outputs(tmp_path / "outputs" / "model" / "images"))}},
            "metrics": METRICS, "output": str(tmp_path / "runs"), "backbone": {"resolution": 64}, **more}  # fmt: skip


def test_the_published_schema_loads_through_the_card(tmp_path):
    refs = load_dataset(DatasetSpec(name="rise_bench", path=str(write_rise(tmp_path / "data"))))
    assert [r.id for r in refs] == [f"{i['category']}/{i['index']}" for i in ITEMS]
    samples = {r.id.split("/")[1]: r.load(64) for r in refs}
    assert samples["temporal_reasoning_1"].explanation == "Rotten, blackened banana."
    assert samples["logical_reasoning_1"].explanation == "From node 1 to 2, then to 4."  # reference_txt
    assert samples["temporal_reasoning_2"].groups == {"reasoning_img": "true"}
    assert samples["causal_reasoning_1"].groups == {"consistency_free": "true"}
    assert samples["temporal_reasoning_1"].groups == {} and samples["temporal_reasoning_1"].target_image is None
    reference = samples["logical_reasoning_2"].target_image
    assert reference.shape == samples["logical_reasoning_2"].image.shape
    assert np.allclose(reference.mean((1, 2)).numpy() * 255, REFERENCE_COLOURS["logical_reasoning_2"], atol=1)


def test_external_outputs_scored_by_the_rise_protocol_and_its_table(tmp_path):
    with ChatServer(rule_judge) as server:
        raw = config(tmp_path, metric_options={"judge": {"backend": "endpoint", "url": server.url, "model": "rule",
                                                         "request": "rise_gpt41"}})  # fmt: skip
        run_dir, counts = start_run(build_config(raw), progress=False)
        bodies = server.requests
    assert counts["ok"] == 6
    assert len(bodies) == len(ANSWERS)  # each prompt once (the consistency-free item: no consistency prompt)
    content = bodies[0]["messages"][0]["content"]
    assert [p["type"] for p in content][0] == "text" and {p["type"] for p in content[1:]} == {"image_url"}
    assert content[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert bodies[0]["max_tokens"] == 4096 and bodies[0]["temperature"] == 0
    cells = read_cells(run_dir).set_index("sample_id")
    for item in ITEMS:
        got = cells.loc[f"{item['category']}/{item['index']}", [f"metric.{m}" for m in METRICS]].tolist()
        want = [math.nan if v is None else v for v in EXPECTED[item["index"]]]
        assert np.allclose(got, want, equal_nan=True), (item["index"], got)
    table = CliRunner().invoke(main, ["report", str(run_dir), "--table", "rise_bench"]).output
    assert "| category | n | Accuracy (%) ↑ | Score ↑ | Consistency ↑ | Reasoning ↑ | Plausibility ↑ |" in table
    assert "| temporal_reasoning | 2 | 50.00 | 3.00 | 4.00 | 3.00 | 4.00 |" in table
    assert "| causal_reasoning | 1 | 0.00 | 4.80 | — (1 NaN) | 5.00 | 4.00 |" in table
    assert "| spatial_reasoning | 1 | 0.00 | 1.50 | 5.00 | 1.00 | 5.00 |" in table
    assert "| logical_reasoning | 2 | 50.00 | 3.05 | 5.00 | 3.00 | — (2 NaN) |" in table
    # (5 + 1 + 4.8 + 1.5 + 5 + 1.1) / 6 = 3.0667; 2 of 6 complete
    assert "| Overall | 6 (4/4 categories) | 33.33 | 3.07 | 4.60 (1 NaN) | 3.00 | 4.25 (2 NaN) |" in table


@pytest.mark.slow  # ~75 s on 2 cores: fifteen prompts, each answered up to the template's 4096 tokens
def test_the_tiny_judge_scores_end_to_end_with_untrained_extractors(tmp_path):
    path = tmp_path / "rise.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path)))
    run = CliRunner().invoke(main, ["run", str(path), "--untrained-extractors"])
    assert run.exit_code == 0, run.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (read_cells(run_dir)["status"] == "ok").all()
    table = CliRunner().invoke(main, ["report", str(run_dir), "--table", "rise_bench"])
    assert table.exit_code == 0 and "| Overall |" in table.output and "rise-bench/1" in table.output


@pytest.mark.parametrize("category, free, dims, score", [
    ("temporal_reasoning", False, {"consistency": 4, "reasoning": 3, "plausibility": 5}, 0.3 * 4 + 0.5 * 3 + 0.2 * 5),
    ("spatial_reasoning", True, {"reasoning": 2, "plausibility": 5}, 0.8 * 2 + 0.2 * 5),
    ("logical_reasoning", False, {"consistency": 5, "reasoning": 5}, 5.0),
    ("causal_reasoning", False, {"consistency": 5, "reasoning": 1, "plausibility": 5}, 1.5),  # halved
    ("causal_reasoning", False, {"consistency": 1, "reasoning": 1, "plausibility": 1}, 1.0),  # halved, floor 1
])  # fmt: skip
def test_the_weighted_score_is_calculate_scores(category, free, dims, score):
    assert weighted_score(category, free, dims) == pytest.approx(score)


def test_datasets_names_the_columns_a_local_copy_needs():
    listing = CliRunner().invoke(main, ["datasets"]).output
    (line,) = [x for x in listing.splitlines() if "a local copy is a folder with data_total.json" in x]
    for column in ["image (image: a path under the folder)", "instruction (instruction)", "category (edit_type)",
                   "reference or reference_txt (explanation)", "reference_img (target_image: a path under the folder)",
                   "item flags (set: not null): reasoning_img, consistency_free, reasoning_wo_ins"]:  # fmt: skip
        assert column in line
    assert "--table rise_bench (Accuracy (%), Score, Consistency, Reasoning, Plausibility per category" in listing


@pytest.mark.parametrize("answer, score", [  # gpt_eval.py's extract gives the same where a score is read here
    ("reasoning\n**Final Score:** **4**", 4),
    ("**Final Score**: **0**", 0),
    ("final score:\n\n5", 5),
    ("Final Score: x\nFinal Score: 3", 3),  # the first "Final Score" followed by digits
    ("Final Scores: 2", 2),
    ("Final Score: 4/5", 4),
    ("Final Score: 4, 5", None),  # extract gives [4, 5], which shifts gpt_eval.py's columns
    ("Final Score: 7", None),  # extract keeps 7
    ("The edit looks right: 5", None),  # extract: None, the item 'failed'
])  # fmt: skip
def test_answers_are_read_from_the_final_score_line(answer, score):
    from bench.metrics.judge_answers import read_final_score

    reading = read_final_score(answer, ("reasoning",), (0, 5))
    assert (reading.scores[0] if reading.ok else None) == score
