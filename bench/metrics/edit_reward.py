"""``edit_reward``: EditReward's score of an edit (TIGER-Lab's VLM reward model; the model, its
inputs and weights: ``bench.metrics.edit_reward_model``), one value per (source, edited image,
instruction), higher is better; unbounded (a Bradley-Terry-style reward, meaningful in comparison).

Weights are read offline: the authors' ``model.safetensors`` from ``metric_options.edit_reward_model``
(a folder, or a hub repo in the Hugging Face cache) on the config and processor of
``metric_options.edit_reward_base``. Untrained (``--untrained-extractors``) it is a seeded random
tiny counterpart written in that same layout and loaded by the same code (smoke numbers).
"""

import torch

from bench.metrics.base import ImageMetric
from bench.metrics.extractors import network
from bench.metrics.judge import to_pil
from bench.metrics.offline import local_or_cached
from bench.metrics.options import Option
from bench.paths import cache_dir

EDIT_REWARD_MODEL = Option("edit_reward_model", str, "TIGER-Lab/EditReward-Qwen2.5-VL-7B", "EditReward's checkpoint: "
                           "a folder or hub repo holding the authors' model.safetensors")  # fmt: skip
EDIT_REWARD_BASE = Option("edit_reward_base", str, "Qwen/Qwen2.5-VL-7B-Instruct", "the Qwen2.5-VL whose config and "
                          "processor EditReward's checkpoint was trained on: a hub id or a local folder")  # fmt: skip


@network(label=lambda model, base: f"EditReward {model} (tiny Qwen2.5-VL)")
def edit_reward_network(model: str, base: str, *, untrained: bool, seed: int, device):
    """EditReward on ``device`` (bf16 on CUDA as the authors, else fp32); untrained: the tiny one."""
    from bench.metrics.edit_reward_model import WEIGHTS_FILE, load_edit_reward, write_tiny_edit_reward

    device = torch.device(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if untrained:
        folder = cache_dir() / f"tiny_edit_reward_seed{seed}"
        if not (folder / "reward" / WEIGHTS_FILE).is_file():
            write_tiny_edit_reward(folder, seed)
        model, base = str(folder / "reward"), str(folder / "base")
    reward = local_or_cached(model, lambda source, **kw: load_edit_reward(source, base, dtype, **kw),
                             f"EditReward {model}", f"{model}/model.safetensors on the config of {base}")  # fmt: skip
    reward.to(device).eval().requires_grad_(False)
    reward.rm_heads.float()  # the heads run in float32, as the authors'
    name = "(untrained tiny)" if untrained else model
    reward.identity = {"backend": "local", "model": f"EditReward {name}",
                       "line": f"EditReward {name} on {base}, {str(dtype).removeprefix('torch.')}"}  # fmt: skip
    return reward


class EditReward(ImageMetric):
    name = "edit_reward"
    higher_is_better = True
    value_range = (float("-inf"), float("inf"))
    needs = frozenset({"instruction", "pretrained weights"})
    nan_reason = "the sample has no instruction"
    options = (EDIT_REWARD_MODEL, EDIT_REWARD_BASE)
    description = ("EditReward of the edit (source, edited image, instruction): the mean of its instruction-following "
                   "and visual-quality heads, TIGER-Lab's Qwen2.5-VL reward model (metric_options.edit_reward_model)")

    def load(self, extractors):
        super().load(extractors)
        o = extractors.options
        self.model = extractors.get(edit_reward_network, o.edit_reward_model, o.edit_reward_base, metric=self.name)
        self.identity = self.model.identity

    def compute(self, edited, source, samples):
        values = torch.full((len(samples),), float("nan"), dtype=torch.float64)
        rows = [i for i, s in enumerate(samples) if s.instruction]
        if rows:
            pictures = [(to_pil(source[i]), to_pil(edited[i]), samples[i].instruction) for i in rows]
            rewards = self.model(*map(list, zip(*pictures)))
            values[rows] = rewards[:, 0].double().cpu()
        return values


METRICS = (EditReward,)
