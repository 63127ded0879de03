"""EditReward as a metric: the tiny random counterpart saved in the authors' layout (base config and
processor, one model.safetensors) loads through the real loader; its score is deterministic,
depends on the image, is checked key by key; judge-agreement ranks both preference sets with it."""

import math

import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file, save_file

from bench.errors import ConfigError
from bench.metrics import MetricOptions, get_metric
from bench.metrics.edit_reward_model import WEIGHTS_FILE, load_edit_reward, smart_size, write_tiny_edit_reward
from bench.metrics.extractors import Extractors
from bench.metrics.offline import ExtractorMissing
from bench.samples import Sample
from run_bench import main
from tests.preference_fixtures import write_editreward_bench, write_vcreward_bench


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITBENCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(base folder, reward folder) of the tiny EditReward."""
    return write_tiny_edit_reward(tmp_path_factory.mktemp("edit_reward"), seed=0)


def picture(seed: int, size=(40, 48)) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray((torch.rand(*size, 3, generator=g) * 255).to(torch.uint8).numpy())


def test_images_are_sized_as_qwen_smart_resize_with_the_authors_pixels():
    assert smart_size(512, 512, 256 * 28 * 28) == (448, 448)
    assert smart_size(480, 640, 256 * 28 * 28) == (364, 504)  # as their utils.smart_resize (checked on 870 sizes)
    assert smart_size(40, 48, 56 * 56) == (56, 84)  # ceil may overshoot min_pixels, as theirs


def test_the_tiny_edit_reward_loads_and_scores_deterministically(tiny):
    base, reward = tiny
    model = load_edit_reward(str(reward), str(base), torch.float32)
    source, edit, other = picture(0), picture(1), picture(2)
    with torch.no_grad():
        first = model([source], [edit], ["make the sky red"])
        again = load_edit_reward(str(reward), str(base), torch.float32)([source], [edit], ["make the sky red"])
        changed = model([source], [other], ["make the sky red"])
        both = model([source, source], [edit, other], ["make the sky red"] * 2)
    assert first.shape == (1, 2)
    assert torch.equal(first, again)  # the same weights, read from disk twice
    assert abs(float(first[0, 0] - changed[0, 0])) > 1e-6  # the score sees the edited image
    torch.testing.assert_close(both, torch.cat([first, changed]), rtol=1e-5, atol=1e-5)  # padding changes nothing


def test_a_checkpoint_without_the_heads_is_refused(tiny, tmp_path):
    base, reward = tiny
    state = {k: v for k, v in load_file(str(reward / WEIGHTS_FILE)).items() if not k.startswith("rm_heads.head_1.")}
    (tmp_path / "cut").mkdir()
    save_file(state, str(tmp_path / "cut" / WEIGHTS_FILE), metadata={"format": "pt"})
    with pytest.raises(ConfigError, match="not an EditReward checkpoint.*rm_heads.head_1|missing.*head_1"):
        load_edit_reward(str(tmp_path / "cut"), str(base), torch.float32)


def test_missing_weights_name_the_checkpoint_and_the_flag(tmp_path):
    options = MetricOptions(edit_reward_model=str(tmp_path / "absent"), edit_reward_base=str(tmp_path / "absent"))
    with pytest.raises(ExtractorMissing, match="(?s)EditReward .*absent.*--untrained-extractors"):
        get_metric("edit_reward")().load(Extractors(options))


def test_the_metric_scores_per_instruction_and_is_nan_without_one():
    metric = get_metric("edit_reward")()
    metric.load(Extractors(MetricOptions(untrained_extractors=True)))
    g = torch.Generator().manual_seed(0)
    edited, source = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    samples = [Sample("a", source[0], "", instruction="add a hat"), Sample("b", source[1], "")]
    values = metric(edited, source, samples)
    assert math.isfinite(values[0]) and math.isnan(values[1])
    assert metric.identity["line"].startswith("EditReward (untrained tiny) on ")


@pytest.mark.parametrize("name, write", [("editreward_bench", write_editreward_bench),
                                         ("vcreward_bench", write_vcreward_bench)])  # fmt: skip
def test_judge_agreement_ranks_both_sets_with_the_tiny_reward_model(tmp_path, name, write):
    folder = write(tmp_path / name)
    command = ["judge-agreement", "--set", name, "--path", folder, "--metric", "edit_reward", "--resolution", "32",
               "--untrained-extractors"]  # fmt: skip
    result = CliRunner().invoke(main, command, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "EditReward (untrained tiny)" in result.output and "untrained: smoke numbers" in result.output
    accuracies = [line for line in result.output.splitlines() if line.startswith("| pairwise accuracy")]
    assert accuracies and all("nan" not in line.split("|")[2] for line in accuracies)  # every pair was ranked


def test_judge_agreement_reads_reward_weights_named_in_a_judge_file(tmp_path, tiny):
    """No --untrained-extractors: the checkpoint and base named in metric_options are loaded as real weights."""
    base, reward = tiny
    judge = tmp_path / "reward.yaml"
    judge.write_text(yaml.safe_dump({"metric_options": {"edit_reward_model": str(reward), "edit_reward_base": str(base)}}))
    folder = write_vcreward_bench(tmp_path / "vc")
    command = ["judge-agreement", "--set", "vcreward_bench", "--path", folder, "--metric", "edit_reward",
               "--judge", str(judge), "--resolution", "32"]  # fmt: skip
    result = CliRunner().invoke(main, command, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"Judge: EditReward {reward} on {base}, float32" in result.output and "untrained" not in result.output
