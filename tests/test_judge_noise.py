"""Judge noise: k answers per item (``judge.samples``), each seeded and cached, their mean as the
item's score, the judge's spread and an interval that includes it; and the expected score from
a local judge's token probabilities."""

import json
import math

import numpy as np
import pytest
import torch

from bench.metrics import MetricOptions, get_metric
from bench.metrics.extractors import Extractors
from bench.metrics.judge_expected import ExpectedAnswer, expected_scores, extended_inputs
from bench.reporting.aggregate import bootstrap_ci, describe, format_stat, nested_bootstrap_ci, with_judge_noise
from tests.chat_server import ChatServer
from tests.test_judge import images, samples


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITBENCH_CACHE", str(tmp_path / "cache"))


def seeded(images_, text, body):
    """SC [8, 2 + seed], PQ [9, 4 + seed]: the answer moves with the request's seed."""
    seed = body.get("seed", 0)
    return json.dumps({"score": [8, 2 + seed] if len(images_) == 2 else [9, 4 + seed]})


def judged(server, names, **judge):
    options = MetricOptions(judge={"backend": "endpoint", "url": server.url, "model": "noisy", "backoff_s": 0.01, **judge})
    extractors = Extractors(options)
    out = {}
    for name in names:
        metric = get_metric(name)()
        metric.load(extractors)
        edited, source = images(2)
        out[name] = (metric(edited, source, samples(2)), metric.notes, metric.judge.identity)
    return out


def test_k_answers_each_seeded_their_mean_is_the_score_and_all_are_kept():
    with ChatServer(seeded) as server:
        out = judged(server, ("vie_pq", "vie_o"), samples=3, temperature=0.7)
        assert out["vie_pq"][0].tolist() == [5.0, 5.0]  # mean of 4, 5, 6
        o_each = [math.sqrt(min(8, 2 + j) * min(9, 4 + j)) for j in range(3)]
        assert out["vie_o"][0].tolist() == pytest.approx([sum(o_each) / 3] * 2)  # mean of each answer's O
        note = json.loads(out["vie_o"][1][0])
        assert note["pq"]["scores"] == [4, 5, 6] and len(note["pq"]["answers"]) == 3
        assert note["samples"] == pytest.approx(o_each)
        assert sorted(r["seed"] for r in server.requests) == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
        assert {r["temperature"] for r in server.requests} == {0.7}
        identity = out["vie_pq"][2]
        assert identity["samples"] == 3 and identity["decoding"] == "sampled at temperature 0.7, seed per answer"
        asked = len(server.requests)
        judged(server, ("vie_pq",), samples=3, temperature=0.7)  # every answer cached, per seed
        assert len(server.requests) == asked


def test_one_failed_answer_of_k_fails_the_item():
    def flaky(images_, text, body):
        return "no idea" if body.get("seed") == 1 else seeded(images_, text, body)

    with ChatServer(flaky) as server:
        values, notes, _ = judged(server, ("vie_pq",), samples=3, temperature=1.0)["vie_pq"]
        assert torch.isnan(values).all() and json.loads(notes[0])["pq"]["class"] == "unreadable"


def test_the_interval_includes_the_judges_own_noise():
    rng = np.random.default_rng(0)
    answers = 5 + rng.normal(0, 2, size=(40, 5))
    answers -= answers.mean(axis=1, keepdims=True) - 5  # every item's mean is 5: the items alone show no spread
    low, high = bootstrap_ci(answers.mean(axis=1))
    assert high - low < 1e-9
    nested = nested_bootstrap_ci(answers)
    assert nested[1] - nested[0] > 0.3 and nested[0] < 5 < nested[1]
    stat = with_judge_noise(describe(answers.mean(axis=1)), answers.tolist())
    assert stat.judge_k == 5 and stat.judge_sd == pytest.approx(answers.std(axis=1, ddof=1).mean())
    assert (stat.low, stat.high) == nested and "(judge sd 1." in format_stat(stat) and "k=5)" in format_stat(stat)
    assert with_judge_noise(describe([1.0, 2.0]), [None, None]) == describe([1.0, 2.0])  # k = 1: unchanged


def test_the_samples_option_is_checked():
    from bench.errors import ConfigError

    with pytest.raises(ConfigError, match="samples = 0"):
        MetricOptions(judge={"samples": 0})
    with pytest.raises(ConfigError, match="expected_score needs the local backend"):
        MetricOptions(judge={"backend": "endpoint", "url": "http://x", "expected_score": True})


# -- the expected score ------------------------------------------------------------------------
def test_expected_score_weighs_each_value_by_its_tokens_probability(tmp_path):
    from bench.metrics.tiny_vlm import qwen_byte_tokenizer

    tokenizer = qwen_byte_tokenizer()
    answer = '{"score": [7, 10]}'
    ids = torch.tensor(tokenizer.encode(answer, add_special_tokens=False))
    vocab = len(tokenizer)
    logits = [torch.full((1, vocab), -1e4) for _ in ids]
    for at, token in enumerate(ids):
        logits[at][0, token] = 0.0  # the greedy token, certain unless set below
    tok = {c: tokenizer.convert_tokens_to_ids(c) for c in "01789]"}
    seven = answer.index("7")
    logits[seven][0, [tok["7"], tok["8"]]] = 0.0  # "7" or "8", even odds: 7.5
    one = answer.index("10")
    logits[one + 1][0, [tok["0"], tok["]"]]] = 0.0  # after "1": "0" (10) or the list ends (1), even odds: 5.5
    got = expected_scores(None, tokenizer, {}, ids, tuple(logits), answer)
    assert isinstance(got, ExpectedAnswer) and got == answer
    assert got.expected == pytest.approx((7.5, 5.5), abs=1e-3)
    assert not isinstance(expected_scores(None, tokenizer, {}, ids, tuple(logits), "no list"), ExpectedAnswer)


def test_local_judge_with_expected_score_runs_and_is_named(tmp_path):
    from bench.metrics.judge import load_judge
    from bench.metrics.judge_backends import JudgeOptions
    from bench.metrics.tiny_vlm import write_tiny_qwen25_vl

    folder = write_tiny_qwen25_vl(tmp_path / "tiny")
    judge = load_judge(JudgeOptions(model=str(folder), expected_score=True), "cpu", False, 0)
    assert judge.identity["decoding"] == "greedy, expected score from token probabilities"
    edited, source = images(1)
    (answer,) = judge.answers("pq", edited, source, samples(1))
    assert answer.text is not None  # the random model's answer: scored when its list is found, else NaN


def test_expected_score_asks_the_model_about_a_prefix_the_answer_did_not_write(tmp_path):
    from bench.metrics.judge import to_pil
    from bench.metrics.judge_backends import JudgeOptions, LocalVLM
    from bench.metrics.tiny_vlm import write_tiny_qwen25_vl

    backend = LocalVLM(JudgeOptions(model=str(write_tiny_qwen25_vl(tmp_path / "tiny"))), "cpu")
    chat = backend.processor.apply_chat_template([{"role": "user", "content": [{"type": "image"},
                                                  {"type": "text", "text": "Rate it."}]}], tokenize=False,
                                                 add_generation_prompt=True)  # fmt: skip
    inputs = backend.processor(text=[chat], images=[to_pil(images(1)[0][0])], return_tensors="pt")
    answer = '{"score": [7, 4]}'  # teacher-forced: the random model's logits at each of its tokens
    new = torch.tensor(backend.processor.tokenizer.encode(answer, add_special_tokens=False))
    with torch.no_grad():
        out = backend.model(**extended_inputs(inputs, new))
    start = inputs["input_ids"].shape[1] - 1
    logits = tuple(out.logits[0, start + t][None] for t in range(len(new)))
    got = expected_scores(backend.model, backend.processor.tokenizer, inputs, new, logits, answer)
    assert len(got.expected) == 2 and all(0 < e < 10 for e in got.expected)  # every value has some probability
    again = expected_scores(backend.model, backend.processor.tokenizer, inputs, new, logits, answer)
    assert again.expected == got.expected  # deterministic


# -- sampling is what the options say -----------------------------------------------------------
def test_local_sampling_ignores_the_models_generation_config_top_k_1(tmp_path):
    """Qwen-VL checkpoints ship top_k 1 / top_p 0.001; ``generate`` fills unset arguments from
    them, which made temperature 0.7 greedy: k identical answers, a spread of 0 that proves nothing."""
    from bench.metrics.judge import to_pil
    from bench.metrics.judge_backends import Chat, JudgeOptions, LocalVLM
    from bench.metrics.tiny_vlm import QWEN_VL_GENERATION_DEFAULTS, write_tiny_qwen25_vl

    folder = write_tiny_qwen25_vl(tmp_path / "tiny", generation_defaults=QWEN_VL_GENERATION_DEFAULTS)
    assert json.loads((folder / "generation_config.json").read_text())["top_k"] == 1
    request = Chat((to_pil(images(1)[0][0]), "Rate it."))
    backend = LocalVLM(JudgeOptions(model=str(folder), temperature=0.7), "cpu")
    answers = backend.answer_many([request] * 5, 12, seeds=list(range(5)))
    assert len(set(answers)) > 1  # the old code: 1 distinct answer of 5
    assert backend.identity["decoding"] == ("sampled at temperature 0.7, top_p 1 (off), top_k 0 (off), "
                                            "repetition_penalty 1.05 (the model's generation_config), seed per answer")
    nucleus = LocalVLM(JudgeOptions(model=str(folder), temperature=0.7, top_p=0.9), "cpu")
    assert len(set(nucleus.answer_many([request] * 5, 12, seeds=list(range(5))))) > 1  # top_k 1 not filled in
    assert nucleus.identity["decoding"].startswith("sampled at temperature 0.7, top_p 0.9, top_k 0 (off), ")
    greedy = LocalVLM(JudgeOptions(model=str(folder)), "cpu")
    assert len(set(greedy.answer_many([request] * 3, 12, seeds=[0, 1, 2]))) == 1
    assert greedy.identity["decoding"] == "greedy"


def test_the_table_says_when_the_samples_never_differed():
    never = with_judge_noise(describe([5.0, 6.0]), [[5.0, 5.0, 5.0], [6.0, 6.0, 6.0]])
    assert never.judge_sd == 0 and format_stat(never).endswith("(judge sd 0, k=3: the samples never differed)")
    some = with_judge_noise(describe([5.0, 6.0]), [[5.0, 5.0, 5.0], [6.0, 6.0, 7.0]])
    assert "never differed" not in format_stat(some)
