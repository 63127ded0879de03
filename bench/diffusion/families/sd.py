"""Stable Diffusion 1.x/2.x: UNet noise prediction, one CLIP text encoder, DDIM (docs/REFERENCE.md, "Sampling")."""

import torch

WEIGHT_FILES = {
    "unet": "diffusion_pytorch_model.safetensors",
    "vae": "diffusion_pytorch_model.safetensors",
    "text_encoder": "model.safetensors",
}
DENOISER = "unet"


def weight_files(spec) -> dict[str, str]:
    return dict(WEIGHT_FILES)


def hub_patterns(spec) -> list[str]:
    """The files of a hub snapshot this family reads."""
    patterns = ["model_index.json", "scheduler/*", "tokenizer/*"]
    for sub, weights in WEIGHT_FILES.items():
        patterns += [f"{sub}/config.json", f"{sub}/{weights}"]
    return patterns


def load(backbone, common: dict, vae_dtype: torch.dtype | None = None) -> None:
    """Set the backbone's ``unet``, ``vae`` (in ``vae_dtype`` when given), ``text_encoder``, ``tokenizer`` and scheduler."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = backbone.folder
    backbone.unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **common)
    vae_common = {**common, "torch_dtype": vae_dtype or common["torch_dtype"]}
    backbone.vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **vae_common)
    backbone.text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", **common)
    backbone.tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    backbone.denoiser = backbone.unet
    backbone.networks = (backbone.unet, backbone.vae, backbone.text_encoder)
    scheduler_cls = scheduler_class(backbone.spec)
    backbone.scheduler_config = scheduler_cls.load_config(folder, subfolder="scheduler")
    backbone._scheduler_cls = scheduler_cls


def scheduler_class(spec):
    from bench.diffusion.backbone import scheduler_classes

    return scheduler_classes()[spec.scheduler]


def scheduler_name(spec) -> str:
    return spec.scheduler


def new_scheduler(backbone, steps: int, latent_hw: tuple[int, int] | None = None):
    """The backbone's scheduler at ``steps`` timesteps (they do not depend on ``latent_hw``)."""
    scheduler = backbone._scheduler_cls.from_config(backbone.scheduler_config)
    scheduler.set_timesteps(steps, device=backbone.device)
    return scheduler


def encode_text(backbone, prompt: str) -> torch.Tensor:
    """(1, 77, D) CLIP last hidden states, as SD pipelines compute them."""
    ids = backbone.tokenizer(
        prompt,
        padding="max_length",
        max_length=backbone.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(backbone.device)
    return backbone.text_encoder(ids)[0].to(backbone.dtype)


def encode_image(backbone, image: torch.Tensor) -> torch.Tensor:
    x = image.to(backbone.device, backbone.dtype) * 2 - 1
    return backbone.vae.encode(x).latent_dist.mean * backbone.vae.config.scaling_factor


def decode(backbone, latent: torch.Tensor) -> torch.Tensor:
    x = backbone.vae.decode(latent.to(backbone.dtype) / backbone.vae.config.scaling_factor).sample
    return (x / 2 + 0.5).clamp(0, 1)


def predict(backbone, latent: torch.Tensor, t, text: torch.Tensor, **unet_kwargs) -> torch.Tensor:
    """The UNet's noise prediction."""
    return backbone.unet(latent, t, encoder_hidden_states=text, **unet_kwargs).sample
