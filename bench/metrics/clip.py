"""CLIP metrics (model ``metric_options.clip_model``, default openai/clip-vit-large-patch14).

- ``clip_score`` (Hessel et al. 2021): ``100 * max(cos(E_img(edited), E_txt(target)), 0)``,
  computed as torchmetrics' ``CLIPScore`` does (images go to the CLIP processor as uint8).
- ``clip_score_edited``: PIE-Bench's "CLIP edited", the same with ``edited * mask``.
- ``clip_direction``: ``cos(E_img(edited) - E_img(source), E_txt(target) - E_txt(source))``
  on L2-normalised embeddings (as in InstructPix2Pix's evaluation).
Prompts longer than CLIP's context are truncated by the tokenizer (keeping the end token).
"""

import torch
import torch.nn.functional as F

from bench.metrics import ImageMetric

NAN = float("nan")
ZERO_DIRECTION = 1e-5


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

    def load(self, extractors):
        super().load(extractors)
        self.model, self.processor = extractors.clip(self.name)

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
