"""EditReward (Wu et al., "EditReward: A Human-Aligned Reward Model for Instruction-Guided Image
Editing", arXiv 2509.26346; github.com/TIGER-AI-Lab/EditReward): Qwen2.5-VL with a reward head,
rebuilt on transformers as the authors' ``EditRewardInferencer`` scores (the published
``EditReward-Qwen2.5-7B-VL.yaml``: ``rm_head_type: ranknet_multi_head``, ``pooling_strategy:
mean``, ``reward_token: special``, ``output_dim: 2``, no ``rm_head_kwargs``).

- **Inputs.** One user message: the source image, the edited image (each resized with PIL's
  bicubic to 256·28·28 pixels in multiples of 28, as their ``fetch_image``), then the head's
  prompt (``templates/editreward_v1.yaml``) with the instruction, ending in the ``<|Reward|>``
  token the authors add to Qwen's tokenizer (the vocabulary grows by one).
- **Positions.** The authors embed the images themselves and call the language model with
  ``input_ids=None``; transformers 4.57 (their pin) then gives every token, image tokens
  included, the sequential text position (``attention_mask.cumsum - 1`` on all three rotary
  axes), not Qwen2.5-VL's 3-D image positions. That is reproduced here explicitly.
- **Heads.** Two heads (``head_0``: instruction following, ``head_1``: visual quality), each
  ``Linear(hidden, 1024) ReLU Dropout Linear(1024, 16) ReLU Linear(16, 2)`` in float32, read at
  the reward token; each head sees its own prompt. The output is the mean of the two heads'
  ``[mean, log sigma]``; the score is its first value (``reward[0]`` in their usage).

Weights: the authors' checkpoint is one state dict (``model.safetensors``, keys of their
``Qwen2_5_VLRewardModelBT_MultiHead``) beside a config taken from the base model
(``Qwen/Qwen2.5-VL-7B-Instruct``), whose processor they load and extend. ``load_edit_reward``
does the same from local folders or the Hugging Face cache, safetensors only;
``write_tiny_edit_reward`` saves a seeded random tiny one in that layout for the tests.
"""

from contextlib import contextmanager
from pathlib import Path

import torch
import yaml
from PIL import Image
from torch import nn

from bench.errors import ConfigError

PIXELS = 256 * 28 * 28  # min_pixels = max_pixels of their prepare_batch
PATCH_FACTOR = 28
HEADS = 2
OUTPUT_DIM = 2  # [mean, log sigma] of their "uncertainty" loss
WEIGHTS_FILE = "model.safetensors"
TEMPLATE = Path(__file__).with_name("templates") / "editreward_v1.yaml"


def reward_head(hidden: int) -> nn.Sequential:
    """The authors' default ``ranknet`` head (their layer indices, so their keys load)."""
    return nn.Sequential(nn.Linear(hidden, 1024), nn.ReLU(), nn.Dropout(0.05), nn.Linear(1024, 16), nn.ReLU(),
                         nn.Linear(16, OUTPUT_DIM))  # fmt: skip


def smart_size(height: int, width: int, pixels: int) -> tuple[int, int]:
    """Qwen-VL's ``smart_resize`` with min_pixels = max_pixels = ``pixels`` (factor 28)."""
    import math

    h_bar, w_bar = (max(PATCH_FACTOR, round(x / PATCH_FACTOR) * PATCH_FACTOR) for x in (height, width))
    if h_bar * w_bar > pixels:
        beta = math.sqrt(height * width / pixels)
        h_bar, w_bar = (math.floor(x / beta / PATCH_FACTOR) * PATCH_FACTOR for x in (height, width))
    elif h_bar * w_bar < pixels:
        beta = math.sqrt(pixels / (height * width))
        h_bar, w_bar = (math.ceil(x * beta / PATCH_FACTOR) * PATCH_FACTOR for x in (height, width))
    return h_bar, w_bar


class EditRewardModel(nn.Module):
    """The Qwen2.5-VL (``vlm``), its processor and the two reward heads (``rm_heads``)."""

    def __init__(self, vlm, processor, template: dict):
        super().__init__()
        self.vlm = vlm
        self.processor = processor
        self.template = template
        self.reward_token_id = processor.tokenizer.convert_tokens_to_ids(template["reward_token"])
        hidden = vlm.config.get_text_config().hidden_size
        self.rm_heads = nn.ModuleDict({f"head_{i}": reward_head(hidden) for i in range(HEADS)}).float()
        # the authors' size, within what the processor keeps (a tiny processor keeps fewer)
        self.pixels = min(PIXELS, processor.image_processor.size.longest_edge or PIXELS)  # its max_pixels

    def _batch(self, prompt: str, sources: list[Image.Image], edited: list[Image.Image], instructions: list[str]):
        text = prompt.replace(self.template["placeholder"], "{}")
        chats, images = [], []
        for source, image, instruction in zip(sources, edited, instructions):
            content = [{"type": "image"}, {"type": "image"},
                       {"type": "text", "text": text.format(instruction) + self.template["suffix"]}]  # fmt: skip
            chats.append(self.processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                            add_generation_prompt=True))  # fmt: skip
            images += [self._resized(source), self._resized(image)]
        return self.processor(text=chats, images=images, padding=True, return_tensors="pt")

    def _resized(self, image: Image.Image) -> Image.Image:
        height, width = smart_size(image.height, image.width, self.pixels)
        return image.convert("RGB").resize((width, height), Image.BICUBIC)

    def forward(self, sources: list[Image.Image], edited: list[Image.Image], instructions: list[str]) -> torch.Tensor:
        """(B, 2): the heads' mean ``[mean, log sigma]`` per (source, edited, instruction)."""
        per_head = []
        for i, prompt in enumerate(self.template["prompts"].values()):
            batch = self._batch(prompt, sources, edited, instructions).to(self.vlm.device)
            mask = batch["attention_mask"]
            positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
            outputs = self.vlm.model(input_ids=batch["input_ids"], attention_mask=mask,
                                     position_ids=positions[None].expand(3, -1, -1), pixel_values=batch["pixel_values"],
                                     image_grid_thw=batch["image_grid_thw"], use_cache=False)  # fmt: skip
            hidden = outputs.last_hidden_state
            logits = self.rm_heads[f"head_{i}"](hidden.float())
            at_token = batch["input_ids"] == self.reward_token_id
            if not bool((at_token.sum(-1) == 1).all()):
                raise ValueError(f"EditReward: every prompt must hold exactly one {self.template['reward_token']}")
            per_head.append(logits[at_token].view(len(edited), -1))
        return torch.stack(per_head).mean(0)


def load_template() -> dict:
    return yaml.safe_load(TEMPLATE.read_text())


def load_processor(base: str, template: dict, **kwargs):
    """The base model's processor, right-padded, with the reward token added (as the authors')."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(base, padding_side="right", **kwargs)
    processor.tokenizer.add_special_tokens({"additional_special_tokens": [template["reward_token"]]})
    return processor


def load_edit_reward(model: str, base: str, dtype: torch.dtype, local_files_only: bool = True) -> EditRewardModel:
    """The authors' checkpoint ``model/model.safetensors`` (a folder or a hub repo in the cache) on
    the config and processor of ``base``, every key loaded (``ConfigError`` names what is not)."""
    from safetensors import safe_open
    from transformers import AutoConfig, GenerationConfig, Qwen2_5_VLForConditionalGeneration

    folder = Path(base).expanduser()
    base = str(folder) if folder.is_dir() else base  # a folder, or a hub id
    template = load_template()
    processor = load_processor(base, template, local_files_only=local_files_only)
    config = AutoConfig.from_pretrained(base, local_files_only=local_files_only)
    config.get_text_config().vocab_size = len(processor.tokenizer)  # their resize_token_embeddings
    with quiet_transformers():  # its load report lists the heads as unexpected: they are loaded below
        vlm, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            model, config=config, dtype=dtype, use_safetensors=True, local_files_only=local_files_only,
            generation_config=GenerationConfig(), output_loading_info=True)  # fmt: skip
    reward = EditRewardModel(vlm, processor, template)
    heads = {}
    with safe_open(weights_file(model, local_files_only), framework="pt") as weights:
        for key in weights.keys():
            if key.startswith("rm_heads."):
                heads[key.removeprefix("rm_heads.")] = weights.get_tensor(key)
    missing = set(info["missing_keys"]) | (set(reward.rm_heads.state_dict()) - set(heads))
    unexpected = {k for k in info["unexpected_keys"] if not k.startswith("rm_heads.")}
    mismatched = list(info.get("mismatched_keys") or [])
    if missing or unexpected or mismatched:
        raise ConfigError(f"{model}: not an EditReward checkpoint for {base} (missing {sorted(missing)[:5]}, "
                          f"unexpected {sorted(unexpected)[:5]}, mismatched {mismatched[:5]})")  # fmt: skip
    reward.rm_heads.load_state_dict(heads)
    return reward.eval()  # the heads' dropout off


@contextmanager
def quiet_transformers():
    """transformers' warnings off while this lasts."""
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)


def weights_file(model: str, local_files_only: bool = True) -> str:
    """``model.safetensors`` of a folder, or of a hub repo in the cache."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        return str(folder / WEIGHTS_FILE)
    from huggingface_hub import hf_hub_download

    return hf_hub_download(model, WEIGHTS_FILE, local_files_only=local_files_only)


def write_tiny_edit_reward(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """A seeded random tiny EditReward (untrained: smoke numbers only) in the authors' layout:
    ``folder/base`` (the tiny Qwen2.5-VL of ``bench.metrics.tiny_vlm``: config, processor) and
    ``folder/reward/model.safetensors`` (the reward model's whole state dict). Returns both."""
    from safetensors.torch import save_file
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

    from bench.metrics.tiny_vlm import write_tiny_qwen25_vl

    base, reward = Path(folder) / "base", Path(folder) / "reward"
    write_tiny_qwen25_vl(base, seed)
    template = load_template()
    processor = load_processor(str(base), template)
    config = AutoConfig.from_pretrained(base)
    config.get_text_config().vocab_size = len(processor.tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = EditRewardModel(Qwen2_5_VLForConditionalGeneration(config), processor, template)
    state = {**model.vlm.state_dict(), **{f"rm_heads.{k}": v for k, v in model.rm_heads.state_dict().items()}}
    reward.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(reward / WEIGHTS_FILE), metadata={"format": "pt"})
    return base, reward
