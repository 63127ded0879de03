"""EditScore through the judge machinery: its template (0-25, scaled to 0-10, images labelled
<img1>/<img2>), its sampling (temperature, top_p, top_k) in the request, its score rule on a
loopback endpoint, and its LoRA merged into a local model by peft."""

import math

import pytest
import torch

from bench.data import Sample
from bench.errors import ConfigError
from bench.metrics import MetricOptions, get_metric
from bench.metrics.extractors import Extractors
from bench.metrics.judge import judge_network, load_judge, load_template
from bench.metrics.judge_backends import JudgeOptions, LocalVLM
from tests.chat_server import ChatServer


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITBENCH_CACHE", str(tmp_path / "cache"))


def test_the_editscore_template_is_viescore_on_0_to_25_reasoning_first():
    t = load_template("editscore_v1")
    assert t.score_range == (0, 25) and t.scale == 0.4 and t.max_new_tokens == 512
    sc, pq = t.parts["sc"], t.parts["pq"]
    assert sc.labels == ("<img1>: ", "<img2>: ") and pq.labels == ("<img1>: ",) and pq.images == ("edited",)
    viescore = load_template("viescore_tie_0shot_v1").parts
    for part, rules in ((sc, viescore["sc"]), (pq, viescore["pq"])):
        assert part.prompt.startswith("You are a professional digital artist.")
        assert 'IMPORTANT: You will have to give your output in this way' in part.prompt
        assert part.prompt.index('"reasoning"') < part.prompt.index('"score"')  # reasoning first
        assert "From scale 0 to 25" in part.prompt and "10" not in part.prompt.split("RULES:", 1)[1]
        body = rules.prompt.split("RULES:", 1)[1].replace("10", "25")
        assert part.prompt.split("RULES:", 1)[1] == body  # VIEScore's rules, every 10 a 25


def editscore_rule(images, text, body):
    """SC: [25, 20] (editing success, over-editing); PQ: [20, 15]."""
    return '{"reasoning": "fine", "score": [25, 20]}' if len(images) == 2 else '{"reasoning": "ok", "score": [20, 15]}'


def test_editscore_on_an_endpoint_asks_its_layout_and_scales_its_scores():
    with ChatServer(editscore_rule) as server:
        judge = {"backend": "endpoint", "url": server.url, "model": "EditScore-7B", "template": "editscore_v1",
                 "temperature": 0.7, "top_p": 0.9, "top_k": 20, "samples": 2}  # fmt: skip
        extractors = Extractors(MetricOptions(judge=judge))
        metric = get_metric("vie_o")()
        metric.load(extractors)
        g = torch.Generator().manual_seed(0)
        edited, source = torch.rand(1, 3, 32, 32, generator=g), torch.rand(1, 3, 32, 32, generator=g)
        value = float(metric(edited, source, [Sample("s", source[0], "", instruction="add a hat")])[0])
    assert value == pytest.approx(math.sqrt(min(25, 20) / 2.5 * min(20, 15) / 2.5))  # sqrt(8 * 6), as EditScore
    sc = next(r for r in server.requests if sum(p["type"] == "image_url" for p in r["messages"][-1]["content"]) == 2)
    kinds = [p["type"] if p["type"] == "image_url" else p["text"][:8] for p in sc["messages"][-1]["content"]]
    assert kinds == ["<img1>: ", "image_url", "<img2>: ", "image_url", "You are "]
    assert (sc["temperature"], sc["top_p"], sc["top_k"]) == (0.7, 0.9, 20)
    assert len(server.requests) == 4 and sorted(r["seed"] for r in server.requests) == [0, 0, 1, 1]  # 2 passes each
    assert "temperature 0.7, top_p 0.9, top_k 20" in extractors.loaded(judge_network)[0].describe()


def test_sampling_settings_need_a_temperature_and_an_adapter_a_local_model():
    with pytest.raises(ConfigError, match="top_p and top_k shape sampling"):
        JudgeOptions(top_k=20)
    with pytest.raises(ConfigError, match="top_p = 2"):
        JudgeOptions(temperature=0.7, top_p=2)
    with pytest.raises(ConfigError, match="adapter is for the local backend"):
        JudgeOptions(backend="endpoint", url="http://127.0.0.1:1/v1", adapter="EditScore/EditScore-7B")
    with pytest.raises(ConfigError, match="expected_score reads scores of 0-10"):
        load_judge(JudgeOptions(template="editscore_v1", expected_score=True), "cpu", True, 0)


def test_a_lora_adapter_is_merged_into_the_local_model(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from bench.metrics.tiny_vlm import write_tiny_qwen25_vl

    base = write_tiny_qwen25_vl(tmp_path / "base")
    model = AutoModelForImageTextToText.from_pretrained(base)
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    lora = get_peft_model(model, config)
    lora.save_pretrained(tmp_path / "adapter")  # adapter_model.safetensors, as EditScore publishes its LoRA
    plain = LocalVLM(JudgeOptions(model=str(base)), "cpu")
    merged = LocalVLM(JudgeOptions(model=str(base), adapter=str(tmp_path / "adapter")), "cpu")
    name = "model.language_model.layers.0.self_attn.q_proj.weight"
    expected = lora.merge_and_unload().state_dict()[name]
    assert torch.equal(merged.model.state_dict()[name], expected)
    assert not torch.equal(plain.model.state_dict()[name], expected)
    assert merged.identity["adapter"] == str(tmp_path / "adapter") and "adapter" not in plain.identity
    with pytest.raises(ConfigError, match="adapter_model.safetensors"):
        LocalVLM(JudgeOptions(model=str(base), adapter=str(tmp_path / "absent")), "cpu")
