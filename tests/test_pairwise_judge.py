"""The pairwise judges (GEditBench v2's three prompts: PVC-Judge's visual consistency,
instruction following, visual quality): the templates as published, Image A chosen by GEditBench
v2's name order, verdicts read and cached, failures never a winner; ``editbench pairwise`` compares a run's rows cell by
cell through a loopback endpoint with a rule judge, and through the tiny local judge (smoke)."""

import json

import numpy as np
import pytest
from PIL import Image
import yaml
from click.testing import CliRunner

from bench.execution.pairwise import name_order_key
from bench.metrics.judge_backends import JudgeOptions
from bench.metrics.pairwise import load_pairwise_judge, load_pairwise_template, read_verdict
from run_bench import main
from tests.chat_server import ChatServer
from tests.helpers import read_cells, run_config


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITBENCH_CACHE", str(tmp_path / "cache"))


def test_the_template_is_the_published_prompt_as_data():
    template = load_pairwise_template()
    assert template.version == "geditbench-v2-vc-pairwise/1"
    assert [v for kind, v in template.parts if kind == "image"] == ["source", "a", "b"]
    assert template.system.startswith("You are a meticulous Image Integrity Analyst.")
    assert "**Editing Instruction:** {{ instruction }}\nOriginal Image:\n" in template.parts[0][1]


def test_the_instruction_following_and_visual_quality_templates_are_the_published_prompts():
    """GEditBench v2 @82bc00e, src/prompts/assets/vlm/assessment/{instruction_following,
    visual_quality}/pairwise/v1.yaml: compared text for text outside the repository (/work/scratch/gedit2/compare_templates.py)."""
    following = load_pairwise_template("geditbench_v2_if_pairwise_v1")
    assert following.version == "geditbench-v2-if-pairwise/1"
    assert [v for kind, v in following.parts if kind == "image"] == ["source", "a", "b"]
    assert following.system.startswith("You are a meticulous instruction compliance analyst.")
    assert following.parts[0][1].startswith("**Task: Evaluate Instruction Adherence ONLY.**\n\n")
    assert following.parts[0][1].endswith("**Editing Instruction:** {{ instruction }}\n\nOriginal Image:\n")
    quality = load_pairwise_template("geditbench_v2_vq_pairwise_v1")
    assert quality.version == "geditbench-v2-vq-pairwise/1"
    assert [v for kind, v in quality.parts if kind == "image"] == ["a", "b"]  # neither the original nor the instruction
    assert not any(quality.placeholder in v for kind, v in quality.parts if kind == "text")
    assert quality.system.startswith("You are a strict and highly critical image quality comparator. Your sole")
    assert quality.system.endswith("Do not output explanations.\n")  # a folded YAML block there, as here
    assert "• Anatomical abnormalities (extra fingers, distorted limbs, fused body parts)\n" in quality.parts[0][1]
    assert quality.parts[0][1].endswith("```\n\n\n--- Generated Images to Compare ---\nImage A:\n")


@pytest.mark.parametrize("first, second, shown_first", [
    ("model-10", "model-9", "model-9"), ("FLUX2_dev", "FLUX1_Kontext_dev", "FLUX1_Kontext_dev"),
    ("Qwen_Image_Edit_2511", "Qwen_Image_Edit_2509", "Qwen_Image_Edit_2509"), ("bagel", "BAGEL", "BAGEL"),
    ('sdedit {"t0": 0.8}', 'sdedit {"t0": 0.6}', 'sdedit {"t0": 0.6}'),
    ("Step1X_Edit_v1p2", "Seedream4p5", "Seedream4p5"),
    ("x 2", "x y", "x 2"),  # a number meets a word: GEditBench v2's key raises TypeError; here numbers come first
])  # fmt: skip
def test_image_a_is_the_name_geditbench_v2s_canonical_pair_puts_first(first, second, shown_first):
    """Their canonical_pair (common_utils/pairwise.py @82bc00e) gave the first six; it agreed with
    name_order_key on all 1,181,486 pairs of 2,017 names where it is defined (compare_order.py)."""
    assert min(first, second, key=name_order_key) == shown_first


@pytest.mark.parametrize("answer, winner", [('{"winner": "Image A"}', "a"), ('```json\n{"winner": "image b"}\n```', "b"),
                                            ('{"winner": "Tie"}', "tie"), ('{"winner": "both"}', None),
                                            ("A is better", None)])  # fmt: skip
def test_verdicts_are_read_or_unreadable(answer, winner):
    verdict = read_verdict(answer, load_pairwise_template().answers)
    assert verdict.winner == winner and (verdict.kind == "ok") == (winner is not None)


def closer_to_source(images, text, body):
    """The edit whose mean colour is closer to the source's wins; equal distances tie."""
    source, a, b = (np.asarray(i, dtype=float).mean() for i in images)
    da, db = abs(a - source), abs(b - source)
    return json.dumps({"winner": "Tie" if abs(da - db) < 1e-9 else "Image A" if da < db else "Image B"})


def test_pairwise_compares_the_rows_of_a_run_cell_by_cell(tmp_path):
    from bench.execution.runner import start_run

    extra = [{"id": f"p{i}", "image": "img0.png", "source_prompt": "a cat", "target_prompt": "a dog", "instruction": f"edit {i}"}
             for i in range(3)]
    config = run_config(tmp_path, {"reconstruct": {}, "sdedit": {"t0": 0.8, "steps": 2}}, extra=extra, n=1)
    run_dir, _ = start_run(config, progress=False)
    with ChatServer(closer_to_source) as server:
        (tmp_path / "judge.yaml").write_text(yaml.safe_dump({"judge": {"backend": "endpoint", "url": server.url,
                                                                        "model": "closer"}}))  # fmt: skip
        result = CliRunner().invoke(main, ["pairwise", str(run_dir), "--judge", str(tmp_path / "judge.yaml")],
                                    catch_exceptions=False)  # fmt: skip
        assert result.exit_code == 0, result.output
        assert len(server.requests) == 3  # the three samples with an instruction; img0 has none
        assert server.requests[0]["messages"][0]["role"] == "system"
    matches = [json.loads(line) for line in (run_dir / "pairwise.jsonl").read_text().splitlines()]
    assert len(matches) == 4 and sum(m["kind"] == "no_instruction" for m in matches) == 1
    judged = [m for m in matches if m["winner"]]
    cells = read_cells(run_dir).set_index(["method", "sample_id"])
    source = np.asarray(Image.open(tmp_path / "data" / "img0.png").convert("RGB").resize((64, 64)), dtype=float).mean()

    def distance(row, sample_id):  # what the rule judge saw: the saved image's mean against the source's
        path = run_dir / cells.loc[(row.split()[0], sample_id), "output_path"]
        return abs(np.asarray(Image.open(path), dtype=float).mean() - source)

    expected = ["first" if distance(m["first"], m["sample_id"]) < distance(m["second"], m["sample_id"]) else "second"
                for m in judged]  # fmt: skip
    assert [m["winner"] for m in judged] == expected  # mapped back from A/B whichever way each match was shown
    wins = expected.count("first")
    assert f"| {wins} | {3 - wins} | 0 | 1 no_instruction |" in result.output


def test_the_tiny_local_pairwise_judge_answers_something(tmp_path):
    judge = load_pairwise_judge(JudgeOptions(), "cpu", True, 0)
    grey = [Image.new("RGB", (32, 32), (v, v, v)) for v in (100, 110, 200)]
    (verdict,) = judge.verdicts([tuple(grey)], ["make it lighter"])
    assert verdict.text is not None and verdict.kind in ("ok", "unreadable")  # random weights: any answer, classed


def test_the_tiny_local_judge_answers_the_two_image_quality_prompt(tmp_path):
    judge = load_pairwise_judge(JudgeOptions(), "cpu", True, 0, "geditbench_v2_vq_pairwise_v1")
    grey = [Image.new("RGB", (32, 32), (v, v, v)) for v in (100, 110, 200)]
    (verdict,) = judge.verdicts([tuple(grey)], ["make it lighter"])
    assert verdict.text is not None and verdict.kind in ("ok", "unreadable")


class SizeRecordingJudge:
    """A judge that ties every match and records the sizes of the (source, A, B) images it was shown."""

    template = load_pairwise_template()
    shown: list

    def __init__(self):
        self.shown = []

    def describe(self) -> str:
        return "size recorder"

    def verdicts(self, triples, instructions):
        from bench.metrics.pairwise import Verdict

        self.shown += [tuple(image.size for image in triple) for triple in triples]
        return [Verdict("tie", "tie") for _ in triples]


def test_pairwise_shows_the_source_at_the_size_its_cells_saw_it(tmp_path):
    """Two backbones of different sizes: a match between two rows of the second shows the source at
    the second's size (not the run's first backbone's); a match across the two at the larger."""
    from bench.execution.pairwise import judge_run
    from bench.execution.runner import start_run

    extra = [{"id": "p0", "image": "img0.png", "source_prompt": "a cat", "target_prompt": "a dog",
              "instruction": "edit"}]
    big = {"name": "tiny", "resolution": 128}
    config = run_config(tmp_path, {"reconstruct": {}, "sdedit": {"t0": [0.6, 0.8], "steps": 2, "backbone": big}},
                        extra=extra, n=1, backbone={"name": "tiny", "resolution": 64})  # fmt: skip
    run_dir, counts = start_run(config, progress=False)
    assert counts["ok"] == 6
    judge = SizeRecordingJudge()
    matches = [m for m in judge_run(run_dir, judge, None, "instruction") if m.sample_id == "p0"]  # img0: no instruction
    assert len(matches) == len(judge.shown) == 3
    for match, (source, a, b) in zip(matches, judge.shown):
        assert source == max(a, b) == (128, 128), (match.first, match.second, source, a, b)
