"""Stable Diffusion XL (Podell et al., 2023): SD's UNet noise prediction and DDIM, richer conditioning.

Formulas (docs/REFERENCE.md, "Stable Diffusion XL"), as diffusers' ``StableDiffusionXLPipeline``
and ``StableDiffusionXLImg2ImgPipeline`` compute them:

- text: the penultimate hidden states of both CLIP encoders (ViT-L, then OpenCLIP ViT-bigG)
  concatenated on channels (768 + 1280 = 2048 wide), and the pooled projection of the second;
  ``encode_text`` packs the pooled vector as one extra token (``families.packing``), so a
  conditioning is one (1, 77 + 1, D) tensor like SD's;
- the unconditional conditioning (the empty prompt, ``encode_text(backbone, "")``) is zeros,
  pooled vector included, when the pipeline's ``model_index.json`` sets
  ``force_zeros_for_empty_prompt`` (diffusers' default, the base model's setting); otherwise
  the empty prompt encoded like any other. (An empty *target* prompt is then zeros too: editbench
  uses the empty prompt only as the unconditional.)
- six added time ids ``(H, W, 0, 0, H, W)``: original size, crop top-left and target size, all
  from the latent's size times the VAE factor (what both pipelines use when not told
  otherwise), passed with the pooled vector as ``added_cond_kwargs``;
- latents ``z0 = E(x) * scaling_factor`` (0.13025 for SDXL, read from the VAE config; with
  ``latents_mean``/``latents_std`` in the config, ``(E(x) - mean) * scaling_factor / std``);
  a VAE whose config sets ``force_upcast`` stays in fp32 under fp16, as diffusers upcasts it;
- DDIM over the pipeline's scheduler config, exactly as ``sd`` (functions reused from there).

The refiner (``requires_aesthetics_score``, one text encoder) is not supported.
"""

import json

import torch

from bench.diffusion.families import sd
from bench.diffusion.families.packing import pack_pooled, unpack_pooled
from bench.errors import ConfigError

DENOISER = "unet"
WEIGHT_FILES = {**sd.WEIGHT_FILES, "text_encoder_2": "model.safetensors"}

scheduler_class = sd.scheduler_class
scheduler_name = sd.scheduler_name
new_scheduler = sd.new_scheduler


def weight_files(spec) -> dict[str, str]:
    return dict(WEIGHT_FILES)


def hub_patterns(spec) -> list[str]:
    """The files of a hub snapshot this family reads."""
    patterns = ["model_index.json", "scheduler/*", "tokenizer/*", "tokenizer_2/*"]
    for sub, weights in WEIGHT_FILES.items():
        patterns += [f"{sub}/config.json", f"{sub}/{weights}"]
    return patterns


def pipeline_options(folder) -> dict:
    """The pipeline-level settings of ``model_index.json`` that change results (part of the fingerprint)."""
    index = json.loads((folder / "model_index.json").read_text())
    if index.get("requires_aesthetics_score"):
        raise ConfigError(
            f"backbone {folder}: SDXL refiner pipelines (requires_aesthetics_score) are not supported; "
            "use an SDXL base pipeline"
        )
    return {"force_zeros_for_empty_prompt": bool(index.get("force_zeros_for_empty_prompt", True))}


def load(backbone, common: dict) -> None:
    """SD's components (``sd.load``) plus the second CLIP encoder (with projection) and its tokenizer."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    folder = backbone.folder
    vae_config = AutoencoderKL.load_config(folder, subfolder="vae")
    upcast = common["torch_dtype"] == torch.float16 and vae_config.get("force_upcast", True)
    sd.load(backbone, common, vae_dtype=torch.float32 if upcast else None)  # SDXL's VAE overflows in fp16
    backbone.text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(folder, subfolder="text_encoder_2", **common)
    backbone.tokenizer_2 = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer_2")
    backbone.networks = (*backbone.networks, backbone.text_encoder_2)
    backbone.force_zeros_for_empty_prompt = pipeline_options(folder)["force_zeros_for_empty_prompt"]
    config = backbone.unet.config
    pooled = backbone.text_encoder_2.config.projection_dim
    expected = backbone.unet.add_embedding.linear_1.in_features
    if config.addition_embed_type != "text_time" or config.addition_time_embed_dim * 6 + pooled != expected:
        raise ConfigError(
            f"backbone {folder}: the UNet expects added embeddings of width {expected}, not six time ids "
            f"plus a pooled projection of {pooled} (an SDXL base UNet with addition_embed_type text_time is needed)"
        )


def _clip_states(tokenizer, encoder, prompt: str, device):
    ids = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids  # fmt: skip
    return encoder(ids.to(device), output_hidden_states=True)


def encode_text(backbone, prompt: str) -> torch.Tensor:
    """(1, 77 + 1, D): both encoders' penultimate states concatenated, then the packed pooled token."""
    first = _clip_states(backbone.tokenizer, backbone.text_encoder, prompt, backbone.device)
    second = _clip_states(backbone.tokenizer_2, backbone.text_encoder_2, prompt, backbone.device)
    states = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
    text = pack_pooled(states, second.text_embeds).to(backbone.dtype)
    if prompt == "" and backbone.force_zeros_for_empty_prompt:
        return torch.zeros_like(text)
    return text


def time_ids(backbone, latent: torch.Tensor) -> torch.Tensor:
    """(B, 6) added time ids of a latent batch: original size, crop (0, 0), target size, in pixels."""
    height, width = (n * backbone.vae_factor for n in latent.shape[-2:])
    ids = torch.tensor([[height, width, 0, 0, height, width]], device=latent.device, dtype=backbone.dtype)
    return ids.expand(latent.shape[0], -1)


def predict(backbone, latent: torch.Tensor, t, text: torch.Tensor, **unet_kwargs) -> torch.Tensor:
    """The UNet's noise prediction, given the token states and ``added_cond_kwargs`` (pooled vector, time ids)."""
    states, pooled = unpack_pooled(text, backbone.text_encoder_2.config.projection_dim)
    added = {"text_embeds": pooled, "time_ids": time_ids(backbone, latent)}
    return backbone.unet(latent, t, encoder_hidden_states=states, added_cond_kwargs=added, **unet_kwargs).sample


def _latent_stats(backbone, like: torch.Tensor):
    config = backbone.vae.config
    if getattr(config, "latents_mean", None) is None or getattr(config, "latents_std", None) is None:
        return 0.0, 1.0
    shape = (1, -1, 1, 1)
    return tuple(torch.tensor(stat).view(shape).to(like) for stat in (config.latents_mean, config.latents_std))


def encode_image(backbone, image: torch.Tensor) -> torch.Tensor:
    """``(E(x) - mean) * scaling_factor / std`` of the posterior mean (mean 0, std 1 without them in the config)."""
    x = image.to(backbone.device, backbone.vae.dtype) * 2 - 1
    posterior = backbone.vae.encode(x).latent_dist.mean
    mean, std = _latent_stats(backbone, posterior)
    return ((posterior - mean) * backbone.vae.config.scaling_factor / std).to(backbone.dtype)


def decode(backbone, latent: torch.Tensor) -> torch.Tensor:
    latent = latent.to(backbone.vae.dtype)
    mean, std = _latent_stats(backbone, latent)
    x = backbone.vae.decode(latent * std / backbone.vae.config.scaling_factor + mean).sample
    return (x / 2 + 0.5).clamp(0, 1)
