"""PIE-Bench structure distance (Ju et al. 2024, after Tumanyan et al.'s Splice loss), and the
DINO network (``dino_network``) that the ground-truth similarities run too.

DINO ViT-B/8 (``metric_options.dino_model``): the keys of the last layer's self-attention
(all heads concatenated, CLS token included), their cosine self-similarity matrix for the
source and for the edited image, and the MSE between the two matrices. Preprocessing as in
PIE-Bench's evaluation code: resize the shorter side to 224 (longer side at most 480),
ImageNet normalisation applied to pixel values in [0, 255] (PIE-Bench does not divide by
255 first; we follow it so numbers compare with its tables, which report x10^3).

The resize is bilinear **without antialiasing**: PIE-Bench resized tensors with torchvision
before 0.17, whose tensor resize did not antialias; torchvision's default became antialiased in
0.17. Downsampling a 512-px image to 224 changes the distance markedly between the two (up to
+46% measured on one edit), so editbench keeps the published environment's resize.
"""

import torch

from bench.errors import ConfigError
from bench.metrics.base import ImageMetric
from bench.metrics.extractors import network
from bench.metrics.offline import UNTRAINED_FLAG, local_or_cached, ready, seeded
from bench.metrics.options import Option
from bench.params import LOCAL_OR_HUB

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DINO_MODEL = Option("dino_model", str, "facebook/dino-vitb8", "DINO ViT of structure_distance: a hub id (read "
                    "from the Hugging Face cache) or a local folder", path=LOCAL_OR_HUB)  # fmt: skip
# DINO ViT-B/8 and ViT-S/16 (Caron et al. 2021) as transformers' ViTModel.
DINO_ARCHITECTURES = {
    "facebook/dino-vitb8": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                            "intermediate_size": 3072, "patch_size": 8, "image_size": 224, "qkv_bias": True,
                            "layer_norm_eps": 1e-6},
    "facebook/dino-vits16": {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6,
                             "intermediate_size": 1536, "patch_size": 16, "image_size": 224, "qkv_bias": True,
                             "layer_norm_eps": 1e-6},
}  # fmt: skip


def load_dino(name: str, untrained: bool, seed: int):
    """A transformers ``ViTModel`` (DINO); untrained: the same architecture, seeded."""
    from transformers import ViTConfig, ViTModel

    if not untrained:

        def load(source, **kwargs):
            return ViTModel.from_pretrained(source, add_pooling_layer=False, **kwargs)

        return local_or_cached(name, load, f"DINO {name}", f"ViT model {name!r}")
    if name not in DINO_ARCHITECTURES:
        raise ConfigError(
            f"metric_options.dino_model {name!r}: {UNTRAINED_FLAG} can rebuild only {', '.join(DINO_ARCHITECTURES)}"
        )
    config = ViTConfig(**DINO_ARCHITECTURES[name])
    return seeded(seed, lambda: ViTModel(config, add_pooling_layer=False))


@network(label=lambda name: f"DINO {name}")
def dino_network(name: str, *, untrained: bool, seed: int, device):
    """The DINO ViT ``name`` (see ``load_dino``); the ground-truth similarities run it too."""
    return ready(load_dino(name, untrained, seed), device)


def last_key_projection(model: torch.nn.Module) -> torch.nn.Module:
    """The key projection of a transformers ViT's last layer (naming differs across versions)."""
    layers = model.layers if hasattr(model, "layers") else model.encoder.layer
    attention = layers[-1].attention
    return attention.k_proj if hasattr(attention, "k_proj") else attention.attention.key


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> PIE-Bench's DINO input (see the module docstring)."""
    from torchvision.transforms import functional as TF

    x = TF.resize(images * 255, 224, max_size=480, antialias=False)
    return TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)


def key_self_similarity(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, T, T) cosine similarities between the last layer's keys of every token pair."""
    captured = []
    handle = last_key_projection(model).register_forward_hook(lambda m, i, out: captured.append(out))
    try:
        model(pixel_values=preprocess(images), interpolate_pos_encoding=True)
    finally:
        handle.remove()
    keys = captured[0]
    norms = keys.norm(dim=-1, keepdim=True)
    return keys @ keys.transpose(1, 2) / (norms @ norms.transpose(1, 2)).clamp_min(1e-8)


class StructureDistance(ImageMetric):
    name = "structure_distance"
    higher_is_better = False
    needs = frozenset({"pretrained weights"})
    options = (DINO_MODEL,)
    description = (
        "PIE-Bench structure distance: MSE of DINO ViT-B/8 last-layer key self-similarity, input resized to 224 "
        "without antialiasing as in PIE-Bench (tables show x10^3)"
    )

    def load(self, extractors):
        super().load(extractors)
        self.model = extractors.get(dino_network, extractors.options.dino_model, metric=self.name)

    def compute(self, edited, source, samples):
        sims = key_self_similarity(self.model, torch.cat([edited, source]))
        n = edited.shape[0]
        return (sims[:n] - sims[n:]).pow(2).mean(dim=(1, 2))


METRICS = (StructureDistance,)
