"""ImageReward (Xu et al., "ImageReward: Learning and Evaluating Human Preferences for
Text-to-Image Generation", NeurIPS 2023) rebuilt on transformers' BLIP components.

The authors' ``image-reward`` package is not used: it pins ``timm==0.6.13`` (open-clip-torch, behind
HPS v2.1, needs timm>=1.0.17) and its BLIP code no longer runs with transformers 5 (it imports
helpers that transformers removed). Its model is BLIP's ViT (the image tokens) cross-attended
by BLIP's BERT text encoder; the text's ``[CLS]`` state goes through a five-layer linear head
and the reward is normalised by the published mean and std. The same forward pass here is
transformers' ``BlipVisionModel`` and ``BlipTextModel`` (the ports of BLIP's ViT and BERT),
with the authors' checkpoint ``ImageReward.pt`` mapped onto them key by key (``authors_keys``).
"""

import re
from pathlib import Path

import torch
from torch import nn

REWARD_MEAN = 0.16717362830052426  # ImageReward.mean / .std in the authors' code
REWARD_STD = 1.0333394966054072
PROMPT_TOKENS = 35  # the authors' tokenizer call: padding="max_length", truncation, max_length=35
HEAD_WIDTH = 64  # BLIP's ViT-B (768 / 12 heads) and ViT-L (1024 / 16): heads = width / 64
# The ViT-L/16 at 224 px that ImageReward's BLIP builds (``create_vit("large", 224)``).
VIT_LARGE = {"hidden_size": 1024, "num_hidden_layers": 24, "patch_size": 16, "image_size": 224}
# The published med_config.json (BERT-base with cross-attention), for the untrained build.
MED_CONFIG = {"vocab_size": 30524, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
              "intermediate_size": 3072, "max_position_embeddings": 512, "layer_norm_eps": 1e-12,
              "hidden_act": "gelu", "pad_token_id": 0}  # fmt: skip

_VISION_KEYS = [  # BLIP ViT -> BlipVisionModel
    (r"cls_token", "embeddings.class_embedding"),
    (r"pos_embed", "embeddings.position_embedding"),
    (r"patch_embed\.proj\.", "embeddings.patch_embedding."),
    (r"blocks\.(\d+)\.norm1\.", r"encoder.layers.\1.layer_norm1."),
    (r"blocks\.(\d+)\.norm2\.", r"encoder.layers.\1.layer_norm2."),
    (r"blocks\.(\d+)\.attn\.qkv\.", r"encoder.layers.\1.self_attn.qkv."),
    (r"blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.projection."),
    (r"blocks\.(\d+)\.mlp\.", r"encoder.layers.\1.mlp."),
    (r"norm\.", "post_layernorm."),
]
# In the checkpoint but not in the reward's forward pass (BLIP's contrastive projections, a buffer).
_UNUSED = re.compile(r"blip\.(vision_proj|text_proj)\.|blip\.text_encoder\.embeddings\.position_ids$")


class ImageRewardModel(nn.Module):
    """BLIP ViT + cross-attending BERT + the reward head; ``forward`` gives normalised rewards."""

    def __init__(self, vision: dict, text: dict):
        from transformers import BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

        super().__init__()
        width = vision["hidden_size"]
        vision_config = BlipVisionConfig(**vision, num_attention_heads=width // HEAD_WIDTH, intermediate_size=4 * width,
                                         layer_norm_eps=1e-6, hidden_act="gelu")  # fmt: skip
        text_config = BlipTextConfig(**text, encoder_hidden_size=width, is_decoder=True)  # is_decoder: cross-attention
        self.vision = BlipVisionModel(vision_config)
        self.text = BlipTextModel(text_config, add_pooling_layer=False)
        hidden = text_config.hidden_size
        self.mlp = nn.Sequential(nn.Linear(hidden, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                                 nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))  # fmt: skip

    @property
    def image_size(self) -> int:
        return self.vision.config.image_size

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        image = self.vision(pixel_values=pixels).last_hidden_state
        image_mask = torch.ones(image.shape[:2], dtype=torch.long, device=image.device)
        text = self.text(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image,
                         encoder_attention_mask=image_mask, is_decoder=False)  # fmt: skip
        rewards = self.mlp(text.last_hidden_state[:, 0].float()).squeeze(-1)
        return (rewards - REWARD_MEAN) / REWARD_STD


def vision_architecture(state: dict) -> dict:
    """The ViT's size read off the authors' checkpoint (BLIP builds it from ``vit="large"``, not a config)."""
    position = state["blip.visual_encoder.pos_embed"]
    patch = state["blip.visual_encoder.patch_embed.proj.weight"].shape[-1]
    layers = {int(k.split(".")[3]) for k in state if k.startswith("blip.visual_encoder.blocks.")}
    side = round((position.shape[1] - 1) ** 0.5)
    return {"hidden_size": position.shape[-1], "num_hidden_layers": len(layers), "patch_size": patch,
            "image_size": side * patch}  # fmt: skip


def authors_keys(state: dict) -> dict:
    """The authors' ``ImageReward`` state dict renamed to ``ImageRewardModel``'s keys."""
    mapped = {}
    for key, value in state.items():
        if _UNUSED.match(key):
            continue
        if key.startswith("blip.visual_encoder."):
            name = key.removeprefix("blip.visual_encoder.")
            for pattern, replacement in _VISION_KEYS:
                name, count = re.subn(f"^{pattern}", replacement, name)
                if count:
                    break
            mapped[f"vision.{name}"] = value
        elif key.startswith("blip.text_encoder."):
            mapped[f"text.{key.removeprefix('blip.text_encoder.')}"] = value
        elif key.startswith("mlp.layers."):
            mapped[f"mlp.{key.removeprefix('mlp.layers.')}"] = value
        else:
            mapped[key] = value  # unknown: the strict load names it
    return mapped


VOCABULARY_FILES = ("vocab.txt", "tokenizer.json")


def _has_vocabulary(source: str) -> bool:
    folder = Path(source).expanduser()
    if folder.is_dir():
        return any((folder / name).is_file() for name in VOCABULARY_FILES)
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(source, name), str) for name in VOCABULARY_FILES)


def load_tokenizer(source: str, **kwargs):
    """BLIP's ``init_tokenizer``: bert-base-uncased with ``[DEC]`` and ``[ENC]`` added."""
    from transformers import BertTokenizer

    if not _has_vocabulary(source):  # transformers 5 would build a 5-token vocabulary without a word
        raise OSError(f"no {' or '.join(VOCABULARY_FILES)} for {source!r}")
    tokenizer = BertTokenizer.from_pretrained(source, **kwargs)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


def text_architecture(med_config: dict) -> dict:
    """The BlipTextConfig arguments of a med_config.json."""
    return {key: med_config[key] for key in MED_CONFIG if key in med_config}
