"""One metric's values never come from two judges: the store records, per judge metric, the judge
(model, request form, template version, decoding) that made its values; a resume or ``editbench
score`` under another judge refuses before asking anything, ``score --rescore`` re-judges the
metric, and a report over metrics of different judges names each metric's."""

import dataclasses
import json

import pytest

from bench.errors import ConfigError
from tests.chat_server import ChatServer
from tests.helpers import read_cells, run_config

OLD, NEW = "imgedit-basic/1", "imgedit-basic/2"


def rule(images, text, body):
    """ImgEdit's prompts: 4, 3, 2 (a value of 3); VIEScore's: readable scores."""
    if "data rater" in text:
        return "Prompt Compliance: 4\nVisual Naturalness: 3\nPhysical & Detail Coherence: 2"
    return '{"score": [8, 7], "reasoning": "rule"}'


@pytest.fixture
def two_judge_run(tmp_path, monkeypatch):
    """A finished run of ``vie_sc`` (template viescore) and ``imgedit_score`` (template imgedit-basic/1)."""
    from bench.execution.runner import start_run

    monkeypatch.setenv("EDITBENCH_CACHE", str(tmp_path / "cache"))
    extra = [{"id": f"s{i}", "image": "img0.png", "source_prompt": "a cat", "edit_type": "add",
              "instruction": f"add {i} hats"} for i in range(2)]  # fmt: skip
    with ChatServer(rule) as server:
        config = run_config(tmp_path, {"reconstruct": {}}, extra=extra, n=1, metrics=["vie_sc", "imgedit_score"],
                            metric_options={"judge": {"backend": "endpoint", "url": server.url, "model": "rule-judge"}})  # fmt: skip
        run_dir, _ = start_run(config, progress=False)
        yield run_dir, server


def new_imgedit_version(monkeypatch):
    """The code now ships ImgEdit's template as imgedit-basic/2 (VIEScore's is unchanged)."""
    from bench.metrics import judge

    shipped = judge.load_template

    def load(name):
        template = shipped(name)
        return dataclasses.replace(template, version=NEW) if template.version == OLD else template

    monkeypatch.setattr(judge, "load_template", load)


def drop_cell(run_dir, sample_id: str) -> None:
    from bench.store import Store

    store = Store(run_dir)
    store.db.execute(f"DELETE FROM metrics WHERE key IN (SELECT key FROM cells WHERE sample_id = '{sample_id}')")
    store.db.execute(f"DELETE FROM cells WHERE sample_id = '{sample_id}'")
    store.close()


def judged_by(run_dir) -> dict:
    from bench.store import Store

    store = Store(run_dir)
    try:
        return store.info("judged_by")
    finally:
        store.close()


def test_the_store_names_each_metrics_judge(two_judge_run):
    run_dir, _ = two_judge_run
    recorded = judged_by(run_dir)
    assert "template imgedit-basic/1" in recorded["imgedit_score"] and "rule-judge" in recorded["imgedit_score"]
    assert "template viescore" in recorded["vie_sc"]


def test_resume_refuses_a_metric_whose_template_version_changed_before_asking(two_judge_run, monkeypatch):
    from bench.execution.runner import resume_run

    run_dir, server = two_judge_run
    drop_cell(run_dir, "s1")
    new_imgedit_version(monkeypatch)
    before = len(server.requests)
    with pytest.raises(ConfigError, match=f"'imgedit_score'.*{OLD}.*{NEW}.*--rescore imgedit_score"):
        resume_run(run_dir, progress=False)
    assert len(server.requests) == before and "s1" not in set(read_cells(run_dir)["sample_id"])
    assert OLD in judged_by(run_dir)["imgedit_score"]


def test_score_refuses_a_metric_whose_template_version_changed(two_judge_run, monkeypatch):
    from bench.execution.scoring import score_run
    from bench.store import Store

    run_dir, server = two_judge_run
    store = Store(run_dir)
    store.db.execute("DELETE FROM metrics WHERE name = 'imgedit_score' AND key IN "
                     "(SELECT key FROM cells WHERE sample_id = 's1')")  # as if scoring had been killed  # fmt: skip
    store.close()
    new_imgedit_version(monkeypatch)
    before = len(server.requests)
    with pytest.raises(ConfigError, match=f"the judge changed since metric 'imgedit_score'.*{OLD},.*{NEW},"):
        score_run(run_dir, ["imgedit_score"], progress=False)
    assert len(server.requests) == before
    assert read_cells(run_dir).set_index("sample_id")["metric.imgedit_score"].to_dict() == {
        "img0": pytest.approx(float("nan"), nan_ok=True), "s0": 3.0, "s1": pytest.approx(float("nan"), nan_ok=True)}


def test_rescore_re_judges_the_metric_under_the_new_template(two_judge_run, monkeypatch):
    from click.testing import CliRunner

    from run_bench import main

    run_dir, server = two_judge_run
    new_imgedit_version(monkeypatch)
    before = len(server.requests)
    result = CliRunner().invoke(main, ["score", str(run_dir), "--rescore", "imgedit_score", "--quiet"])
    assert result.exit_code == 0, result.output
    asked = server.requests[before:]
    assert len(asked) == 2 and all("data rater" in json.dumps(r) for r in asked)  # s0's and s1's ImgEdit prompts
    recorded = judged_by(run_dir)
    assert NEW in recorded["imgedit_score"] and "viescore" in recorded["vie_sc"]
    assert read_cells(run_dir).set_index("sample_id")["metric.imgedit_score"].notna().sum() == 2  # s0's, s1's again


def test_a_report_over_metrics_of_two_judges_names_each(two_judge_run):
    from bench.reporting.aggregate import load_run

    run_dir, _ = two_judge_run
    line = load_run(run_dir).judge_line
    assert line.startswith("vie_sc: rule-judge") and "; imgedit_score: rule-judge" in line and OLD in line


def test_score_without_metrics_is_a_one_line_error(two_judge_run):
    from click.testing import CliRunner

    from run_bench import main

    run_dir, _ = two_judge_run
    result = CliRunner().invoke(main, ["score", str(run_dir)])
    assert result.exit_code != 0 and "--rescore" in result.output and "Traceback" not in result.output


class RewardModelMetric:
    """A loaded reward-model metric as ``metric_judges`` sees it (EditReward: ``identity`` with a line)."""

    def __init__(self, line: str):
        self.name, self.identity = "edit_reward", {"backend": "local", "model": "EditReward", "line": line}


def test_a_reward_model_metric_is_held_to_its_model_too(tmp_path):
    from bench.execution.judged_by import claim_judges
    from bench.store import Store

    store = Store(tmp_path)
    claim_judges(store, {}, [RewardModelMetric("EditReward (untrained tiny) on base, float32")], tmp_path)
    store.add_cell_metrics("cell", {"edit_reward": 0.5})
    trained = RewardModelMetric("EditReward TIGER-Lab/EditReward-Qwen2.5-VL-7B on base, bfloat16")
    with pytest.raises(ConfigError, match="'edit_reward'.*untrained tiny.*TIGER-Lab"):
        claim_judges(store, {}, [trained], tmp_path)
    claim_judges(store, {}, [trained], tmp_path, rescore=("edit_reward",))  # its values go, its model is recorded
    assert store.metric_names() == set() and "TIGER-Lab" in store.info("judged_by")["edit_reward"]
    store.close()


def test_compare_warns_when_one_metrics_judge_differs_between_runs(two_judge_run, tmp_path):
    import shutil

    from bench.reporting.compare import compare_runs
    from bench.store import Store

    run_dir, _ = two_judge_run
    other = tmp_path / "rejudged_run"
    shutil.copytree(run_dir, other)
    store = Store(other)
    recorded = store.info("judged_by")
    store.set_info("judged_by", {**recorded, "imgedit_score": recorded["imgedit_score"].replace(OLD, NEW)})
    store.close()
    assert not any("judged by different judges" in w for w in compare_runs(run_dir, run_dir).warnings)
    warned = [w for w in compare_runs(run_dir, other).warnings if "judged by different judges" in w]
    assert len(warned) == 1 and warned[0].startswith("imgedit_score:") and OLD in warned[0] and NEW in warned[0]
