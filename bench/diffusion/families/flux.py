"""FLUX.1 (Black Forest Labs, 2024): a rectified-flow transformer with double- and single-stream
blocks over 2x2-packed latent tokens, conditioned on T5's token sequence and CLIP's pooled vector.

As diffusers' ``FluxPipeline`` (0.42) computes it (docs/REFERENCE.md, "FLUX.1"):

- latent ``z0 = (E(x) - shift_factor) * scaling_factor`` (16 channels); methods see it unpacked,
  (B, 16, h, w), so masks, blends and noise work as on SD3; ``predict`` packs each 2x2 patch into
  one 64-channel token (``pack_latents``) with position ids (0, row, column) per token and zeros
  per text token, and unpacks the velocity;
- text: T5's last hidden states padded to ``max_sequence_length`` tokens (512, diffusers' default;
  256 for a model without guidance embedding, [schnell], as black-forest-labs' code and diffusers'
  docs set it) and CLIP's pooled output, packed as one conditioning tensor
  (``bench.diffusion.families.packing``);
- guidance: a guidance-distilled model ([dev]: ``guidance_embeds``) takes the guidance value as
  an input, so a guided step is one evaluation at guidance ``w``; [schnell] ignores ``w``. True
  classifier-free guidance is the backbone option ``true_cfg_scale`` (> 1: ``v_neg + s (v - v_neg)``
  with the unconditional prompt as the negative, both at guidance ``w``, two evaluations);
- sampler: flow-matching Euler over ``sigmas = linspace(1, 1/N, N)`` shifted by
  ``mu = calculate_shift(image tokens)`` from the scheduler config's base/max sequence lengths
  and shifts (``FluxSchedule``).

Attention runs through diffusers' ``FluxAttnProcessor``s of ``transformer_blocks`` (double-stream)
and ``single_transformer_blocks`` (single-stream), where attention control installs its own.
"""

import numpy as np
import torch

from bench.diffusion.families import files, sd3
from bench.diffusion.families.packing import pack_pooled, unpack_pooled
from bench.method import StepRules

DENOISER = "transformer"
#: What ``dtype: auto`` loads on CUDA: FLUX.1 [dev] is 12B parameters plus T5-XXL (fp32 would need
#: ~95 GB); T5 overflows in fp16, as on SD3.
CUDA_DTYPE = "bf16"
CLIP_MAX_LENGTH = 77
#: diffusers' ``FluxPipeline`` default ``max_sequence_length``; models without guidance embedding
#: ([schnell]) take at most 256 (``SCHNELL_T5_MAX_LENGTH``).
T5_MAX_LENGTH = 512
SCHNELL_T5_MAX_LENGTH = 256
#: diffusers' ``FluxPipeline.default_sample_size`` (latent pixels per side; x8 = 1024 px).
DEFAULT_SAMPLE_SIZE = 128
COMPONENT_WEIGHTS = {
    "transformer": "diffusion_pytorch_model",
    "vae": "diffusion_pytorch_model",
    "text_encoder": "model",
    "text_encoder_2": "model",
}


#: The VAE's normalisation is SD3's: ``(E(x) - shift_factor) * scaling_factor``.
encode_image, decode = sd3.encode_image, sd3.decode
#: Flow-matching Euler, as SD3; img2img keeps the same start steps (``FluxImg2ImgPipeline``).
scheduler_class, scheduler_name, img2img_steps = sd3.scheduler_class, sd3.scheduler_name, sd3.img2img_steps


def weight_files(spec) -> dict[str, str]:
    return files.weight_files(COMPONENT_WEIGHTS)


def hub_patterns(spec) -> list[str]:
    return files.hub_patterns(COMPONENT_WEIGHTS, ("tokenizer", "tokenizer_2"))


def native_resolution(denoiser_config: dict, vae_config: dict) -> int:
    """The pixel size the pipeline generates by default: the VAE's ``sample_size`` (1024 for FLUX.1),
    else diffusers' ``default_sample_size`` x the VAE factor (FluxTransformer2DModel has no sample size)."""
    factor = 2 ** (len(vae_config["block_out_channels"]) - 1)
    return vae_config.get("sample_size") or DEFAULT_SAMPLE_SIZE * factor


def load(backbone, common: dict) -> None:
    """Set ``transformer``, ``vae``, CLIP (``text_encoder``) and T5 (``text_encoder_2``) with their
    tokenizers, and the scheduler config."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

    folder = backbone.folder
    backbone.transformer = FluxTransformer2DModel.from_pretrained(folder, subfolder="transformer", **common)
    backbone.vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **common)
    backbone.text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", **common)
    backbone.text_encoder_2 = T5EncoderModel.from_pretrained(folder, subfolder="text_encoder_2", **common)
    backbone.tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    backbone.tokenizer_2 = T5TokenizerFast.from_pretrained(folder, subfolder="tokenizer_2")
    backbone.denoiser = backbone.transformer
    backbone.networks = (backbone.transformer, backbone.vae, backbone.text_encoder, backbone.text_encoder_2)
    backbone.scheduler_config = FlowMatchEulerDiscreteScheduler.load_config(folder, subfolder="scheduler")
    backbone._scheduler_cls = FlowMatchEulerDiscreteScheduler
    pooled, width = backbone.transformer.config.pooled_projection_dim, backbone.transformer.config.joint_attention_dim
    if pooled > width:
        raise ValueError(f"FLUX transformer: pooled_projection_dim {pooled} > joint_attention_dim {width} cannot be packed")


def distilled(backbone) -> bool:
    """Whether the transformer takes the guidance value as an input (FLUX.1 [dev]; not [schnell])."""
    return bool(backbone.transformer.config.guidance_embeds)


def max_sequence_length(backbone) -> int:
    return T5_MAX_LENGTH if distilled(backbone) else SCHNELL_T5_MAX_LENGTH


def encode_text(backbone, prompt: str) -> torch.Tensor:
    """(1, L + 1, D): T5's L = ``max_sequence_length`` hidden states and CLIP's packed pooled output."""
    clip_length = getattr(backbone.tokenizer, "model_max_length", CLIP_MAX_LENGTH)
    ids = backbone.tokenizer(prompt, padding="max_length", max_length=clip_length, truncation=True, return_tensors="pt")
    pooled = backbone.text_encoder(ids.input_ids.to(backbone.device), output_hidden_states=False).pooler_output
    ids = backbone.tokenizer_2(
        prompt, padding="max_length", max_length=max_sequence_length(backbone), truncation=True, return_tensors="pt"
    ).input_ids
    t5 = backbone.text_encoder_2(ids.to(backbone.device), output_hidden_states=False)[0]
    return pack_pooled(t5.to(backbone.dtype), pooled.to(backbone.dtype))


def unpack_text(backbone, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(T5 states, CLIP pooled) of a packed conditioning (``encode_text``)."""
    return unpack_pooled(text, backbone.transformer.config.pooled_projection_dim)


def pack_latents(latent: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h/2 * w/2, 4C): each 2x2 patch one token (diffusers' ``_pack_latents``)."""
    b, c, h, w = latent.shape
    patches = latent.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The inverse of ``pack_latents`` for a latent of h x w (diffusers' ``_unpack_latents``)."""
    b, _, channels = tokens.shape
    patches = tokens.view(b, h // 2, w // 2, channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(b, channels // 4, h, w)


def latent_ids(h: int, w: int, device, dtype) -> torch.Tensor:
    """(h/2 * w/2, 3) position ids of the packed tokens: (0, row, column) (``_prepare_latent_image_ids``)."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] += torch.arange(h // 2)[:, None]
    ids[..., 2] += torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


def predict(backbone, latent: torch.Tensor, t, text: torch.Tensor, guidance=None) -> torch.Tensor:
    """The transformer's velocity at timestep ``t = 1000 s`` for (B, C, h, w) latents; ``guidance``
    (a number or one per row) feeds the guidance embedding of a distilled model (None: 1.0)."""
    embeds, pooled = unpack_text(backbone, text)
    b, _, h, w = latent.shape
    timestep = torch.as_tensor(t, device=latent.device).reshape(-1).expand(b).to(latent.dtype)
    if distilled(backbone):
        value = 1.0 if guidance is None else guidance
        guidance = torch.as_tensor(value, device=latent.device, dtype=torch.float32).reshape(-1).expand(b)
    else:
        guidance = None
    velocity = backbone.transformer(
        hidden_states=pack_latents(latent), timestep=timestep / 1000, guidance=guidance, pooled_projections=pooled,
        encoder_hidden_states=embeds, txt_ids=torch.zeros(embeds.shape[1], 3, device=latent.device, dtype=embeds.dtype),
        img_ids=latent_ids(h, w, latent.device, embeds.dtype), return_dict=False,
    )[0]  # fmt: skip
    return unpack_latents(velocity, h, w)


def guided_prediction(backbone, latent: torch.Tensor, t, cond: torch.Tensor, uncond: torch.Tensor, w) -> torch.Tensor:
    """A guided velocity at guidance ``w``: the distilled guidance input (one evaluation), or with the
    backbone's ``true_cfg_scale`` s > 1 ``v(uncond) + s (v(cond) - v(uncond))``, both at guidance ``w``
    (``FluxPipeline``'s true CFG with the unconditional prompt as its negative prompt). At ``w = 0``
    the prompt is the unconditional one, as ``w = 0`` means on every family (RF-Inversion's FLUX
    inversion: the empty prompt at guidance 0). ``w``: a number, or one per row."""
    n = latent.shape[0]
    if isinstance(w, torch.Tensor):
        w = w.to(latent.device, torch.float32).reshape(-1).expand(n)
        cond = torch.where((w == 0)[:, None, None], uncond.expand(n, -1, -1), cond.expand(n, -1, -1))
    elif w == 0:
        cond = uncond
    scale = backbone.spec.true_cfg_scale
    if scale == 1:
        return predict(backbone, latent, t, cond.expand(n, -1, -1), guidance=w)
    guidance = w.repeat(2) if isinstance(w, torch.Tensor) else w
    text = torch.cat([uncond.expand(n, -1, -1), cond.expand(n, -1, -1)])
    v_uncond, v_cond = predict(backbone, torch.cat([latent, latent]), t, text, guidance=guidance).chunk(2)
    return v_uncond + scale * (v_cond - v_uncond)


def step_rules(spec) -> StepRules:
    """One guided step costs 1 evaluation (the distilled guidance input), 2 with true CFG; a start
    level runs ``img2img_steps`` (``FluxImg2ImgPipeline``'s rule, SD3's)."""
    evaluations = 2 if spec.true_cfg_scale > 1 else 1
    return StepRules(guided_evaluations=lambda w: evaluations, start_steps=img2img_steps)


def calculate_shift(image_seq_len: int, config) -> float:
    """diffusers' ``calculate_shift``: ``mu`` linear in the image tokens between the scheduler
    config's (base_image_seq_len, base_shift) and (max_image_seq_len, max_shift)."""
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    m = (max_shift - base_shift) / (max_len - base_len)
    return image_seq_len * m + base_shift - m * base_len


class FluxSchedule(sd3.FlowMatchSchedule):
    """``FlowMatchSchedule`` with FluxPipeline's timesteps: ``sigmas = linspace(1, 1/N, N)`` and the
    resolution-dependent shift ``mu`` of ``image_seq_len`` packed tokens."""

    def __init__(self, scheduler, steps: int, device, image_seq_len: int):
        sigmas = None if scheduler.config.get("use_flow_sigmas") else np.linspace(1.0, 1 / steps, steps)
        scheduler.set_timesteps(steps if sigmas is None else None, device=device, sigmas=sigmas,
                                mu=calculate_shift(image_seq_len, scheduler.config))  # fmt: skip
        self.scheduler, self.config, self.num_inference_steps = scheduler, scheduler.config, steps
        self.timesteps, self.sigmas = scheduler.timesteps, scheduler.sigmas


def new_scheduler(backbone, steps: int, latent_hw: tuple[int, int] | None = None) -> FluxSchedule:
    """FluxPipeline's schedule for latents of ``latent_hw`` (default the backbone's square latent):
    the shift reads their packed token count, as the pipeline's ``image_seq_len``, so a
    ``keep_aspect`` frame of another shape gets its own shift."""
    height, width = latent_hw or (backbone.latent_size, backbone.latent_size)
    scheduler = backbone._scheduler_cls.from_config(backbone.scheduler_config)
    return FluxSchedule(scheduler, steps, backbone.device, (height // 2) * (width // 2))
