"""Stable Diffusion 3 / 3.5 (Esser et al., ICML 2024): an MMDiT transformer trained with rectified flow.

Formulas (docs/REFERENCE.md, "Rectified-flow backbones (SD3 / SD3.5)"):

- latent ``z0 = (E(x) - shift_factor) * scaling_factor`` (16 channels, both factors from the VAE config);
- forward process ``z_s = (1 - s) z0 + s n`` with ``s`` (sigma) in [0, 1] and timestep ``1000 s``
  (``FlowMatchSchedule.add_noise``, diffusers' ``scale_noise``);
- the transformer predicts the velocity ``v ~ n - z0``; CFG on velocities ``v_u + w (v_c - v_u)``
  (``guided_velocity``);
- the Euler step ``z_{i+1} = z_i + (s_{i+1} - s_i) v(z_i, s_i)`` over the scheduler's shifted
  sigmas ``s' = shift s / (1 + (shift - 1) s)`` (``euler_step``, ``FlowMatchSchedule.sigmas``);
- a start level ``t0`` (img2img ``strength``) runs ``img2img_steps``: diffusers' flow img2img rule,
  one step more than SD's ``int(steps * t0)`` when ``steps * t0`` is not whole (``step_rules``);
- text: CLIP-L and CLIP-G penultimate hidden states concatenated on channels, zero-padded to T5's
  width, then T5's states appended along the sequence (zeros without ``text_encoder_3``); the
  pooled projection is both CLIP pooled outputs concatenated. ``encode_text`` packs the pooled
  vector as one extra (zero-padded) token after the sequence, so a conditioning stays one tensor
  that batches, expands and concatenates like SD's; ``predict`` unpacks it.

The flow editors reuse ``guided_velocity``, ``euler_step``, ``FlowMatchSchedule`` and
``velocity_fn``. T5-XXL overflows in fp16 (inf/NaN activations); bf16 is the safe half dtype.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.diffusion.families import files
from bench.diffusion.families.packing import pack_pooled, unpack_pooled
from bench.method import StepRules

DENOISER = "transformer"
#: T5 tokens per prompt, diffusers' ``max_sequence_length`` default for SD3.
T5_MAX_LENGTH = 256
CLIP_MAX_LENGTH = 77
COMPONENT_WEIGHTS = {
    "transformer": "diffusion_pytorch_model",
    "vae": "diffusion_pytorch_model",
    "text_encoder": "model",
    "text_encoder_2": "model",
    "text_encoder_3": "model",
}


def _weights(spec) -> dict[str, str]:
    """The weight-holding sub-folders loaded (``text_encoder_3: none`` drops T5) and their file stems."""
    dropped = {"text_encoder_3"} if spec.text_encoder_3 == "none" else set()
    return {c: stem for c, stem in COMPONENT_WEIGHTS.items() if c not in dropped}


def weight_files(spec) -> dict[str, str]:
    return files.weight_files(_weights(spec))


def hub_patterns(spec) -> list[str]:
    tokenizers = ("tokenizer", "tokenizer_2") + (() if spec.text_encoder_3 == "none" else ("tokenizer_3",))
    return files.hub_patterns(_weights(spec), tokenizers)


def scheduler_class(spec):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler


def scheduler_name(spec) -> str:
    return "flow_match_euler"


def img2img_steps(steps: int, strength: float) -> int:
    """The steps diffusers' flow img2img pipelines run at ``strength`` (``get_timesteps`` of
    ``StableDiffusion3Img2ImgPipeline`` and ``FluxImg2ImgPipeline``, diffusers 0.42):
    ``steps - int(max(steps - min(steps * strength, steps), 0))``; the product is not floored first,
    so a fractional ``steps * strength`` runs one step more than SD's ``int(steps * strength)``."""
    return steps - int(max(steps - min(steps * strength, steps), 0))


def step_rules(spec) -> StepRules:
    """Classifier-free guidance as SD's; a start level runs ``img2img_steps``."""
    return StepRules(start_steps=img2img_steps)


def load(backbone, common: dict) -> None:
    """Set ``transformer``, ``vae``, the three text encoders and tokenizers, and the scheduler config."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

    folder = backbone.folder
    backbone.transformer = SD3Transformer2DModel.from_pretrained(folder, subfolder="transformer", **common)
    backbone.vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **common)
    backbone.text_encoder = CLIPTextModelWithProjection.from_pretrained(folder, subfolder="text_encoder", **common)
    backbone.text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(folder, subfolder="text_encoder_2", **common)
    backbone.tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    backbone.tokenizer_2 = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer_2")
    backbone.text_encoder_3 = backbone.tokenizer_3 = None
    if backbone.spec.text_encoder_3 != "none":
        backbone.text_encoder_3 = T5EncoderModel.from_pretrained(folder, subfolder="text_encoder_3", **common)
        backbone.tokenizer_3 = T5TokenizerFast.from_pretrained(folder, subfolder="tokenizer_3")
    backbone.denoiser = backbone.transformer
    encoders = [backbone.text_encoder, backbone.text_encoder_2, backbone.text_encoder_3]
    backbone.networks = (backbone.transformer, backbone.vae, *[e for e in encoders if e is not None])
    backbone.scheduler_config = FlowMatchEulerDiscreteScheduler.load_config(folder, subfolder="scheduler")
    backbone._scheduler_cls = FlowMatchEulerDiscreteScheduler
    pooled, width = backbone.transformer.config.pooled_projection_dim, backbone.transformer.config.joint_attention_dim
    if pooled > width:
        raise ValueError(f"SD3 transformer: pooled_projection_dim {pooled} > joint_attention_dim {width} cannot be packed")


def _clip_embeds(tokenizer, encoder, prompt: str, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(penultimate hidden states, pooled projection) of one CLIP encoder, as diffusers' SD3 pipeline."""
    ids = tokenizer(prompt, padding="max_length", max_length=CLIP_MAX_LENGTH, truncation=True, return_tensors="pt")
    out = encoder(ids.input_ids.to(device), output_hidden_states=True)
    return out.hidden_states[-2], out[0]


def encode_text(backbone, prompt: str) -> torch.Tensor:
    """(1, 77 + 256 + 1, D): CLIP-L|CLIP-G states padded to T5's width D, T5's states, and the packed pooled token."""
    width = backbone.transformer.config.joint_attention_dim
    (h1, p1), (h2, p2) = (
        _clip_embeds(tok, enc, prompt, backbone.device)
        for tok, enc in ((backbone.tokenizer, backbone.text_encoder), (backbone.tokenizer_2, backbone.text_encoder_2))
    )
    clip = torch.cat([h1, h2], dim=-1).to(backbone.dtype)
    if backbone.text_encoder_3 is None:
        t5 = torch.zeros(1, T5_MAX_LENGTH, width, device=backbone.device, dtype=backbone.dtype)
    else:
        ids = backbone.tokenizer_3(
            prompt, padding="max_length", max_length=T5_MAX_LENGTH, truncation=True, add_special_tokens=True,
            return_tensors="pt",
        ).input_ids  # fmt: skip
        t5 = backbone.text_encoder_3(ids.to(backbone.device))[0].to(backbone.dtype)
    clip = F.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
    return pack_pooled(torch.cat([clip, t5], dim=1), torch.cat([p1, p2], dim=-1).to(backbone.dtype))


def unpack_text(backbone, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt_embeds, pooled_projections) of a packed conditioning (``encode_text``)."""
    return unpack_pooled(text, backbone.transformer.config.pooled_projection_dim)


def encode_image(backbone, image: torch.Tensor) -> torch.Tensor:
    """``(E(x) - shift) * scale`` of the VAE posterior mean."""
    config = backbone.vae.config
    x = image.to(backbone.device, backbone.dtype) * 2 - 1
    return (backbone.vae.encode(x).latent_dist.mean - config.shift_factor) * config.scaling_factor


def decode(backbone, latent: torch.Tensor) -> torch.Tensor:
    config = backbone.vae.config
    x = backbone.vae.decode(latent.to(backbone.dtype) / config.scaling_factor + config.shift_factor).sample
    return (x / 2 + 0.5).clamp(0, 1)


def predict(backbone, latent: torch.Tensor, t, text: torch.Tensor) -> torch.Tensor:
    """The transformer's velocity ``v(z_s, s, c)`` at timestep ``t = 1000 s``."""
    embeds, pooled = unpack_text(backbone, text)
    timestep = torch.as_tensor(t, device=latent.device).reshape(-1).expand(latent.shape[0])
    return backbone.transformer(
        hidden_states=latent, timestep=timestep, encoder_hidden_states=embeds, pooled_projections=pooled,
        return_dict=False,
    )[0]  # fmt: skip


def euler_step(latent: torch.Tensor, velocity: torch.Tensor, sigma, sigma_next) -> torch.Tensor:
    """``z + (s_next - s) v`` in fp32, cast back (diffusers' ``FlowMatchEulerDiscreteScheduler.step``).
    With ``s_next > s`` the same formula is the inversion step towards noise."""
    return (latent.float() + (sigma_next - sigma) * velocity.float()).to(latent.dtype)


def guided_velocity(backbone, latent: torch.Tensor, t, cond: torch.Tensor, uncond: torch.Tensor, w: float) -> torch.Tensor:
    """``v_u + w (v_c - v_u)`` for a batch of rows (``cond``/``uncond``: one row or one per latent)."""
    from bench.diffusion.sampling import guided_eps

    return guided_eps(backbone, latent, t, cond, uncond, w)


def velocity_fn(backbone, prompts: list[str], w: float):
    """``(latent, t, index) -> velocity``: each row's prompt under CFG ``w`` (the empty prompt unconditional)."""
    from bench.diffusion.sampling import text_guided_eps

    return text_guided_eps(backbone, prompts, w)


@dataclass
class StepOutput:
    prev_sample: torch.Tensor


class FlowMatchSchedule:
    """A fresh ``FlowMatchEulerDiscreteScheduler`` with ``steps`` timesteps behind the interface the
    shared loop uses (``timesteps``, ``order``, ``init_noise_sigma``, ``add_noise``, ``step``).

    ``sigmas`` has ``steps + 1`` entries, from 1 (pure noise) down to 0 (clean); timestep
    ``i`` is ``1000 * sigmas[i]``. ``step`` finds the timestep's index, so it holds no state and
    any suffix of the timesteps (SDEdit's last ``start_steps(steps, t0)``) runs as diffusers runs it.
    """

    order = 1
    init_noise_sigma = 1.0

    def __init__(self, scheduler, steps: int, device):
        scheduler.set_timesteps(steps, device=device)
        self.scheduler, self.config, self.num_inference_steps = scheduler, scheduler.config, steps
        self.timesteps, self.sigmas = scheduler.timesteps, scheduler.sigmas

    @staticmethod
    def start_steps(steps: int, t0: float) -> int:
        """The steps a start level ``t0`` runs (``bench.diffusion.sampling.partial_timesteps``)."""
        return img2img_steps(steps, t0)

    def index_of(self, t) -> int:
        return int((self.timesteps == torch.as_tensor(t, device=self.timesteps.device)).nonzero()[0])

    def timestep_at(self, sigma) -> torch.Tensor:
        """The transformer's timestep at noise level ``sigma``."""
        return sigma * self.config.num_train_timesteps

    def add_noise(self, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``(1 - s) z0 + s n`` at the sigma of ``timesteps`` (diffusers' ``scale_noise``)."""
        return self.scheduler.scale_noise(clean, timesteps, noise)

    def prev_timestep(self, t) -> int | torch.Tensor:
        """The timestep an Euler step from ``t`` lands on (-1 past the end: the clean latent)."""
        i = self.index_of(t) + 1
        return self.timesteps[i] if i < len(self.timesteps) else -1

    def noise_to(self, clean: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        """``(1 - s) z0 + s n`` at timestep ``t`` of the schedule (``t < 0``: the clean latent itself)."""
        if isinstance(t, int) and t < 0:
            return clean
        return self.add_noise(clean, noise, torch.as_tensor(t).reshape(1))

    def step(self, velocity: torch.Tensor, t, latent: torch.Tensor, eta: float = 0.0, generator=None) -> StepOutput:
        """One Euler step from timestep ``t`` to the next sigma (deterministic: ``eta`` must be 0)."""
        if eta != 0:
            raise ValueError("the flow-matching Euler sampler is deterministic; stochastic (eta > 0) steps are not defined")
        i = self.index_of(t)
        return StepOutput(euler_step(latent, velocity, self.sigmas[i], self.sigmas[i + 1]))


def new_scheduler(backbone, steps: int, latent_hw: tuple[int, int] | None = None) -> FlowMatchSchedule:
    """The flow-matching schedule at ``steps`` timesteps (SD3's shift does not depend on ``latent_hw``)."""
    return FlowMatchSchedule(backbone._scheduler_cls.from_config(backbone.scheduler_config), steps, backbone.device)
