"""editbench judge-agreement: the preference sets' fixtures (published schemas, hub layouts) read
through their cards, scored by a rule judge behind a loopback endpoint with known agreement, and
by the tiny local judge (smoke); the agreement statistics against hand counts."""

import math

import pytest
import yaml
from click.testing import CliRunner

from bench.errors import ConfigError
from bench.preferences import FIRST, SECOND, TIE, load_preferences, verdict
from bench.reporting.agreement import accuracy_with_ties, accuracy_without_ties
from run_bench import main
from tests.chat_server import ChatServer
from tests.preference_fixtures import brightness_score, write_editreward_bench, write_vcreward_bench


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITBENCH_CACHE", str(tmp_path / "cache"))


def test_accuracy_with_ties_picks_the_threshold_as_deutsch_et_al():
    # margins 0.1 (human tie), 2 (agree), -3 (disagree), 0.05 (agree, small): at eps 0.1 the tie is
    # right and the small agreement becomes a model tie: (1 + 1) / 4; at eps 0: 2 / 4
    human, margin = [0, 1, 1, 1], [0.1, 2.0, -3.0, 0.05]
    assert accuracy_with_ties(human, margin) == (0.5, 0.0)
    assert accuracy_with_ties([0, 1, 0], [0.1, 2.0, 0.2]) == (1.0, 0.2)
    assert accuracy_without_ties(human, margin) == pytest.approx(2 / 3)
    assert accuracy_without_ties([1, -1], [0.0, -1.0]) == 0.5  # a zero margin is discordant, as in EditReward's code


def test_labels_of_both_sets_read():
    assert [verdict(x) for x in ("A>B", "B>A", "A=B=Good", "A=B=Bad", "Image A", "Image B", "Tie")] == [
        FIRST, SECOND, TIE, TIE, FIRST, SECOND, TIE]  # fmt: skip
    with pytest.raises(ConfigError, match="none of"):
        verdict("maybe")


def test_groups_are_rebuilt_from_pairs(tmp_path):
    groups = load_preferences("editreward_bench", write_editreward_bench(tmp_path / "er"))
    sizes = [(g.subset, len(g.candidates), len(g.pairs)) for g in groups]
    assert sizes == [("2pair", 2, 1)] * 4 + [("3pair", 3, 3)] * 2 + [("4pair", 4, 6)]
    assert groups[4].scores == [25.0, 15.0, 5.0]
    vc = load_preferences("vcreward_bench", write_vcreward_bench(tmp_path / "vc"))
    assert [(g.task, g.pairs) for g in vc][:2] == [("subject_add", [(0, 1, FIRST)]), ("subject_add", [(0, 1, SECOND)])]


def brightness_judge(images, text, body):
    """SC: [10, brightness of the edit]; PQ: [10, 10]."""
    return f'{{"score": [10, {brightness_score(images[-1])}]}}' if len(images) == 2 else '{"score": [10, 10]}'


def agreement_text(tmp_path, args, judge_options=None) -> str:
    command = ["judge-agreement", "--resolution", "32", *args]
    if judge_options is not None:
        path = tmp_path / "judge.yaml"
        path.write_text(yaml.safe_dump({"judge": judge_options}))
        command += ["--judge", str(path)]
    result = CliRunner().invoke(main, command, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_editreward_bench_agreement_with_a_rule_judge(tmp_path):
    folder = write_editreward_bench(tmp_path / "er")
    with ChatServer(brightness_judge) as server:
        text = agreement_text(tmp_path, ["--set", "editreward_bench", "--path", folder, "--metric", "vie_sc"],
                              {"backend": "endpoint", "url": server.url, "model": "brightness"})  # fmt: skip
    sections = {s.split("\n", 1)[0]: s for s in text.split("## ")[1:]}
    # 2pair: right, right, tie (equal scores) right at threshold 0, wrong: 3 of 4 with ties, 3 of 4 groups
    assert "| pairwise accuracy with ties | 0.7500 [" in sections["subset 2pair"]
    assert "tie threshold 0" in sections["subset 2pair"] and "| group accuracy | 0.7500 [" in sections["subset 2pair"]
    # 3pair: one pair of six wrong; one group of two has it
    assert "| pairwise accuracy without ties | 0.8333 [" in sections["subset 3pair"]
    assert "| group accuracy | 0.5000 [" in sections["subset 3pair"]
    assert "| pairwise accuracy without ties | 1.0000" in sections["subset 4pair"]
    assert "| pairwise accuracy with ties | 0.8750 [" in sections["overall"]  # (13 + 1) / 16
    assert "Spearman" in sections["overall"] and "Judge: brightness@unknown (endpoint)" in text


def test_vcreward_bench_accuracy_per_task_with_a_rule_judge(tmp_path):
    folder = write_vcreward_bench(tmp_path / "vc")
    with ChatServer(brightness_judge) as server:
        text = agreement_text(tmp_path, ["--set", "vcreward_bench", "--path", folder, "--metric", "vie_sc"],
                              {"backend": "endpoint", "url": server.url, "model": "brightness"})  # fmt: skip
    sections = {s.split("\n", 1)[0]: s for s in text.split("## ")[1:]}
    assert "| pairwise accuracy without ties | 0.7500 [" in sections["subset data"]
    assert "| pairwise accuracy without ties | 1.0000" in sections["task subject_add"]
    assert "| pairwise accuracy without ties | 0.5000" in sections["task color_alter"]


@pytest.mark.parametrize("name, write", [("editreward_bench", write_editreward_bench),
                                         ("vcreward_bench", write_vcreward_bench)])  # fmt: skip
def test_the_tiny_judge_gives_smoke_numbers_on_both_sets(tmp_path, name, write):
    folder = write(tmp_path / name)
    text = agreement_text(tmp_path, ["--set", name, "--path", folder, "--limit", "1", "--untrained-extractors"])
    assert "untrained: smoke numbers" in text and "Judgments that failed" in text


def test_a_preference_set_is_not_a_dataset_to_edit():
    from bench.data import DatasetSpec, load_dataset

    with pytest.raises(ConfigError, match="judge-agreement --set editreward_bench"):
        load_dataset(DatasetSpec(name="editreward_bench"))
    assert math.isnan(accuracy_with_ties([], [])[0])
