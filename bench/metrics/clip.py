"""CLIP metrics (model ``metric_options.clip_model``, default openai/clip-vit-large-patch14),
and the CLIP network (``clip_network``) that PickScore and the ground-truth similarities run too.

- ``clip_score`` (Hessel et al. 2021): ``100 * max(cos(E_img(edited), E_txt(target)), 0)``,
  computed as torchmetrics' ``CLIPScore`` does (images go to the CLIP processor as uint8).
- ``clip_score_edited``: PIE-Bench's "CLIP edited", the same with ``edited * mask``.
- ``clip_direction``: ``cos(E_img(edited) - E_img(source), E_txt(target) - E_txt(source))``
  on L2-normalised embeddings (as in InstructPix2Pix's evaluation).
Prompts longer than CLIP's context are truncated by the tokenizer (keeping the end token).
"""

import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.errors import ConfigError
from bench.metrics.base import ImageMetric
from bench.metrics.extractors import network
from bench.metrics.offline import UNTRAINED_FLAG, local_or_cached, ready, seeded
from bench.metrics.options import Option
from bench.paths import cache_dir
from bench.params import LOCAL_OR_HUB

NAN = float("nan")
ZERO_DIRECTION = 1e-5
CLIP_MODEL = Option("clip_model", str, "openai/clip-vit-large-patch14", "CLIP of clip_score, clip_score_edited "
                    "and clip_direction: a hub id (read from the Hugging Face cache) or a local folder",
                    path=LOCAL_OR_HUB)  # fmt: skip

# Architectures of the CLIP checkpoints we can rebuild untrained without network.
CLIP_ARCHITECTURES = {
    # (hidden size, layers, heads, MLP size) of each tower, patch size, projection size
    "openai/clip-vit-large-patch14": {
        "text": (768, 12, 12, 3072),
        "vision": (1024, 24, 16, 4096),
        "patch": 14,
        "proj": 768,
    },
    "openai/clip-vit-base-patch32": {
        "text": (512, 12, 8, 2048),
        "vision": (768, 12, 12, 3072),
        "patch": 32,
        "proj": 512,
    },
    "openai/clip-vit-base-patch16": {
        "text": (512, 12, 8, 2048),
        "vision": (768, 12, 12, 3072),
        "patch": 16,
        "proj": 512,
    },
    # PickScore: LAION's OpenCLIP ViT-H/14 fine-tuned on Pick-a-Pic (GELU, not OpenAI's quick GELU)
    "yuvalkirstain/PickScore_v1": {
        "text": (1024, 24, 16, 4096),
        "vision": (1280, 32, 16, 5120),
        "patch": 14,
        "proj": 1024,
        "act": "gelu",
    },
}


def load_clip(name: str, untrained: bool, seed: int, processor_name: str | None = None):
    """(CLIPModel, CLIPProcessor) for ``name`` (the processor of ``processor_name`` when given);
    untrained: the same architecture, seeded, with CLIP's processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    if not untrained:
        model = local_or_cached(name, CLIPModel.from_pretrained, f"CLIP {name}", f"CLIP model {name!r}")
        processor_name = processor_name or name
        return model, local_or_cached(processor_name, CLIPProcessor.from_pretrained, f"CLIP {name}",
                                      f"CLIP processor {processor_name!r}")  # fmt: skip
    if name not in CLIP_ARCHITECTURES:
        raise ConfigError(
            f"metric_options.clip_model {name!r}: {UNTRAINED_FLAG} can rebuild only "
            f"{', '.join(CLIP_ARCHITECTURES)} offline; choose one of those"
        )
    arch = CLIP_ARCHITECTURES[name]

    def tower(dims):
        hidden, layers, heads, inner = dims
        return {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
                "intermediate_size": inner, "projection_dim": arch["proj"],
                "hidden_act": arch.get("act", "quick_gelu")}  # fmt: skip

    vision = {**tower(arch["vision"]), "patch_size": arch["patch"], "image_size": 224}
    config = CLIPConfig(text_config=tower(arch["text"]), vision_config=vision, projection_dim=arch["proj"])
    model = seeded(seed, lambda: CLIPModel(config))
    from bench.tokenizer import write_clip_tokenizer_files

    folder = cache_dir() / "clip_tokenizer"
    if not (folder / "merges.txt").is_file():
        try:
            write_clip_tokenizer_files(Path(tempfile.mkdtemp(dir=cache_dir()))).rename(folder)
        except OSError:  # another process wrote it first
            if not (folder / "merges.txt").is_file():
                raise
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=CLIPTokenizer.from_pretrained(folder))
    return model, processor


@network(label=lambda name, processor_name: f"CLIP {name}")
def clip_network(name: str, processor_name: str | None, *, untrained: bool, seed: int, device):
    """(CLIPModel, CLIPProcessor) of ``name``, with the processor of ``processor_name`` when given
    (see ``load_clip``)."""
    model, processor = load_clip(name, untrained, seed, processor_name)
    return ready(model, device), processor


def projected_features(out) -> torch.Tensor:
    """The projected embedding of ``get_*_features``: a tensor, or (transformers 5) an output
    whose ``pooler_output`` holds it."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def image_embeddings(model, processor, images: torch.Tensor) -> torch.Tensor:
    """L2-normalised CLIP embeddings (B, D) of images in [0, 1]."""
    pixels = [(im.clamp(0, 1) * 255).round().to(torch.uint8).cpu() for im in images]
    inputs = processor(images=pixels, return_tensors="pt")
    device = next(model.parameters()).device
    out = model.get_image_features(pixel_values=inputs["pixel_values"].to(device))
    return F.normalize(projected_features(out), dim=-1)


def text_embeddings(model, processor, prompts: list[str]) -> torch.Tensor:
    """L2-normalised CLIP embeddings (B, D) of prompts."""
    limit = model.config.text_config.max_position_embeddings
    inputs = processor(text=prompts, return_tensors="pt", padding=True, truncation=True, max_length=limit)
    device = next(model.parameters()).device
    out = model.get_text_features(
        input_ids=inputs["input_ids"].to(device), attention_mask=inputs["attention_mask"].to(device)
    )
    return F.normalize(projected_features(out), dim=-1)


class _Clip(ImageMetric):
    needs = frozenset({"target_prompt", "pretrained weights"})
    options = (CLIP_MODEL,)

    def load(self, extractors):
        super().load(extractors)
        self.model, self.processor = extractors.get(clip_network, extractors.options.clip_model, None, metric=self.name)

    def _texts(self, prompts: list[str | None]) -> torch.Tensor:
        """Embeddings of the prompts, one row per entry; rows of missing prompts are NaN."""
        present = sorted({p for p in prompts if p})
        dim = self.model.config.projection_dim
        out = torch.full((len(prompts), dim), NAN, device=self.device)
        if present:
            emb = text_embeddings(self.model, self.processor, present)
            for i, p in enumerate(prompts):
                if p:
                    out[i] = emb[present.index(p)]
        return out


def clip_score(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """``100 * max(cos, 0)`` of normalised embeddings; NaN rows stay NaN."""
    score = 100 * (image_emb * text_emb).sum(-1)
    return torch.where(torch.isnan(score), score, score.clamp_min(0))


class ClipScore(_Clip):
    name = "clip_score"
    higher_is_better = True
    value_range = (0.0, 100.0)
    nan_reason = "the sample has no target prompt"
    description = "CLIP score of the edited image against the target prompt: 100 * max(cos, 0)"

    def compute(self, edited, source, samples):
        return clip_score(
            image_embeddings(self.model, self.processor, edited), self._texts([s.target_prompt for s in samples])
        )


class ClipScoreEdited(_Clip):
    name = "clip_score_edited"
    higher_is_better = True
    value_range = (0.0, 100.0)
    needs = frozenset({"mask", "target_prompt", "pretrained weights"})
    nan_reason = "the sample has no target prompt or no edit mask"
    description = "PIE-Bench 'CLIP edited': CLIP score of edited image * mask against the target prompt"

    def compute(self, edited, source, samples):
        masks = torch.stack([
            s.mask.to(self.device) if s.mask is not None else torch.full_like(edited[0, :1], NAN) for s in samples
        ])  # fmt: skip
        defined = ~torch.isnan(masks.flatten(1)).any(1)
        images = edited * torch.nan_to_num(masks)
        scores = clip_score(
            image_embeddings(self.model, self.processor, images), self._texts([s.target_prompt for s in samples])
        )
        return torch.where(defined, scores, torch.full_like(scores, NAN))


class ClipDirection(_Clip):
    name = "clip_direction"
    higher_is_better = True
    value_range = (-1.0, 1.0)
    needs = frozenset({"source_prompt", "target_prompt", "pretrained weights"})
    nan_reason = "the sample lacks a source or target prompt, or a direction is zero (edited image equals source, or equal prompts)"
    description = "CLIP directional similarity: cos(E_img(edited) - E_img(source), E_txt(target) - E_txt(source))"

    def compute(self, edited, source, samples):
        images = image_embeddings(self.model, self.processor, torch.cat([edited, source]))
        texts = self._texts([s.target_prompt for s in samples] + [s.source_prompt for s in samples])
        n = len(samples)
        d_img, d_txt = images[:n] - images[n:], texts[:n] - texts[n:]
        img_norm, txt_norm = d_img.norm(dim=-1), d_txt.norm(dim=-1)
        cos = (d_img * d_txt).sum(-1) / (img_norm * txt_norm)
        # unit embeddings: a difference below float noise is no direction (batching alone gives ~1e-7)
        defined = (img_norm > ZERO_DIRECTION) & (txt_norm > ZERO_DIRECTION)
        return torch.where(defined, cos, torch.full_like(cos, NAN))


METRICS = (ClipScore, ClipScoreEdited, ClipDirection)
