"""Metrics own their options and networks: ``metric_options`` is what the registered metrics
declare (``Metric.options``) plus the global options, and ``Extractors`` is a generic cache of
the networks their modules declare with ``@network``."""

import dataclasses

import pytest
from click.testing import CliRunner

from bench.errors import ConfigError
from bench.metrics import METRICS, OPTIONS, MetricOptions, get_metric
from bench.metrics.extractors import Extractors, network
from bench.metrics.judge_backends import JudgeOptions
from bench.metrics.options import GLOBAL_OPTIONS, Option, collect
from run_bench import main

#: The metric_options keys and defaults before the options were declared by their metrics.
DEFAULTS = {
    "clip_model": "openai/clip-vit-large-patch14", "dino_model": "facebook/dino-vitb8",
    "similarity_clip_model": "openai/clip-vit-base-patch32", "similarity_dino_model": "facebook/dino-vits16",
    "lpips_net": "alex", "lpips_bg_net": "squeeze", "pickscore_model": "yuvalkirstain/PickScore_v1",
    "pickscore_processor": "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "hps_architecture": "ViT-H-14",
    "hps_checkpoint": "xswu/HPSv2/HPS_v2.1_compressed.pt", "image_reward_model": "THUDM/ImageReward",
    "image_reward_tokenizer": "bert-base-uncased", "dreamsim_dir": "./models", "inception_weights": None,
    "edit_reward_model": "TIGER-Lab/EditReward-Qwen2.5-VL-7B", "edit_reward_base": "Qwen/Qwen2.5-VL-7B-Instruct",
    "untrained_extractors": False, "seed": 0, "batch_size": 16, "kid_subsets": 100, "kid_subset_size": 1000,
    "judge": dataclasses.asdict(JudgeOptions()),
}  # fmt: skip


def test_the_declared_options_are_the_config_keys_with_their_defaults():
    assert dataclasses.asdict(MetricOptions()) == DEFAULTS
    assert [f.name for f in dataclasses.fields(MetricOptions)] == list(OPTIONS)
    declared = {o.name for cls in METRICS.values() for o in cls.options} | {o.name for o in GLOBAL_OPTIONS}
    assert declared == set(OPTIONS)
    assert {o.name for o in get_metric("kid").options} == {"inception_weights", "kid_subsets", "kid_subset_size"}
    assert dataclasses.replace(MetricOptions(), seed=3).seed == 3


def test_an_option_declared_twice_differently_is_refused():
    first, again = Option("clip_model", str, "a", "one"), Option("clip_model", str, "b", "another")
    assert list(collect([first, first])) == ["clip_model"]  # one declaration listed by two metrics
    with pytest.raises(TypeError, match="'clip_model' is declared twice"):
        collect([first, again])


def test_values_are_checked_by_their_declaration():
    with pytest.raises(ConfigError, match="metric_options.lpips_bg_net: unknown LPIPS network 'squeezenet'"):
        MetricOptions(lpips_bg_net="squeezenet")
    with pytest.raises(ConfigError, match="metric_options.batch_size = 0; expected a positive integer"):
        MetricOptions(batch_size=0)
    assert MetricOptions(judge={"backend": "local"}).judge == JudgeOptions()


def test_the_metrics_command_lists_each_metrics_options_from_the_declarations():
    out = CliRunner().invoke(main, ["metrics"]).output
    for cls in METRICS.values():
        block = ("\n" + out).split(f"\n{cls.name} ", 1)[1].split("\n")[:3]
        listed = next((line for line in block if line.startswith("    options: ")), "")
        assert all(o.name in listed for o in cls.options), (cls.name, listed)
    assert '    options: pickscore_model = "yuvalkirstain/PickScore_v1", pickscore_processor = ' in out
    for option in OPTIONS.values():
        assert f"\n  {option.name}: {option.type_name()} = {option.default_text()}  {option.doc}" in out


def test_extractors_cache_a_network_per_arguments_and_label_it_when_untrained():
    calls = []

    @network(label=lambda size: f"toy {size}")
    def toy(size, *, untrained, seed, device):
        calls.append((size, untrained, seed))
        return f"toy{size}"

    ex = Extractors(MetricOptions(untrained_extractors=True, seed=4))
    assert ex.get(toy, 1, metric="a") == ex.get(toy, 1, metric="b") == "toy1" and ex.get(toy, 2, metric="a") == "toy2"
    assert calls == [(1, True, 4), (2, True, 4)] and ex.loaded(toy) == ["toy1", "toy2"]
    assert ex.labels() == ["untrained extractor toy 1 (seeded random weights) behind a, b",
                           "untrained extractor toy 2 (seeded random weights) behind a"]  # fmt: skip
    trained = Extractors(MetricOptions())
    trained.get(toy, 1, metric="a")
    assert trained.labels() == []
