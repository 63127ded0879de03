"""``pnp``: Plug-and-Play diffusion features (Tumanyan et al., CVPR 2023), over a chosen inversion.

A source branch (source prompt) and a target branch (target prompt) are denoised together from
the inversion's ``z_T`` under CFG ``w``. For the first ``int(feature_injection * steps)`` steps
the target's residual-block features of the decoder's fourth block (0-based: diffusers'
``up_blocks[1].resnets[1]``, LDM's ``output_blocks[4]``) are replaced by the source's; for the
first ``int(attention_injection * steps)`` steps the target's self-attention queries and keys
in the decoder's self-attention layers are replaced by the source's (the values stay the
target's). Each target row takes the features of its own source row (unconditional from
unconditional, conditional from conditional).

Sources and choices:

- The injected feature is the residual branch's output before the skip connection is added
  (the output of the block's ``conv2``, hooked with a forward hook), as in the authors' code
  (plug-and-play and pnp-diffusers); the paper says "the output of the residual block".
- Attention layers: every decoder self-attention layer except the first (pnp-diffusers:
  "blocks 4 - 11 of the decoder, not the first block of the lowest resolution"). The paper
  names layers 4-11 of the decoder; both pick the same layers in SD 1.x.
- SDXL: the authors publish no SDXL code; the same structural choices are kept (the residual
  block ``up_blocks[1].resnets[1]``, LDM's ``output_blocks[4]``, is the second decoder block's
  middle block there too, at 64x64 latent cells for 1024 px; every decoder self-attention layer
  but the first, 35 of SDXL's 36). They are untested against trained SDXL results.
- Defaults ``feature_injection = 0.8``, ``attention_injection = 0.5``, 50 steps, ``w = 7.5``
  are the authors'.
- Source branch: the authors' source branch reads their stored inversion latents and is
  conditioned on the empty prompt without guidance; here it is the source prompt under the
  same CFG ``w`` as the target, on the trajectory with ``inversion = direct`` (the default). So
  with the target prompt equal to the source prompt both branches are identical and the edit
  is the reconstruction.
- ``source_prompt``: the source branch's prompt only (the inversion always uses the sample's
  source prompt, as PnPInversion's script does). PnPInversion's script (PIE-Bench's table, SD
  1.5) conditions its source row on ``""``: set ``source_prompt: ""``. Its source row is
  moreover one unguided row shared by both CFG halves of the target, read at the stored
  reconstruction latents; that form is not implemented here (the source row runs under CFG
  ``w`` from ``z_T``).
- ``negative_prompt`` (pnp-diffusers offers one): the target branch's unconditional
  embedding; empty means the inversion's own null embedding. PnPInversion's script uses
  "ugly, blurry, black, low res, unrealistic".
"""

from dataclasses import dataclass

import torch

from bench.diffusion.attention.hooks import (
    attend,
    from_source,
    hooked,
    hooked_layers,
    is_decoder,
    self_attention_layers,
    two_branch_latents,
)
from bench.diffusion.families import UNET_FAMILIES
from bench.errors import ConfigError
from bench.method import EditResult
from bench.params import Param, guidance_param
from bench.registry import register
from methods._over_inversion import SOURCE_PROMPT, OverInversion, inversion_params, with_source_prompt

FEATURE_BLOCK = (1, 1)  # up_blocks[1].resnets[1]


def feature_block(unet):
    """The residual block whose features are injected (``up_blocks[1].resnets[1]``), or None if the UNet lacks it."""
    level, index = FEATURE_BLOCK
    if len(unet.up_blocks) <= level or len(unet.up_blocks[level].resnets) <= index:
        return None
    return unet.up_blocks[level].resnets[index]


def injected_attention_layers(unet) -> list[str]:
    """The decoder's self-attention layers but its first, in forward order."""
    return [name for name in self_attention_layers(unet) if is_decoder(name)][1:]


@dataclass
class PlugAndPlay:
    """The control of one PnP cell: which layers and until which step the target takes the source's features."""

    attention_layers: frozenset[str]
    attention_until: int
    feature_until: int
    step: int = 0

    def active(self, name: str) -> bool:
        return self.step < self.attention_until and name in self.attention_layers

    def attend(self, name, attn, query, key, value, attention_mask):
        return attend(attn, from_source(query, attn.heads), from_source(key, attn.heads), value, attention_mask)

    def inject_features(self, module, args, output):
        """Forward hook on the feature block's ``conv2``: the target rows get the source rows' output."""
        if self.step >= self.feature_until:
            return None
        return from_source(output, 1)


@register
class PlugAndPlayDiffusion(OverInversion):
    name = "pnp"
    families = UNET_FAMILIES
    source_prompt_inverts = False
    description = "Plug-and-Play: the target takes the source's decoder features and self-attention queries and keys."
    params = (
        *inversion_params("direct"),
        SOURCE_PROMPT,
        guidance_param(),
        Param("feature_injection", float, 0.8, "fraction of steps with injected residual features", low=0, high=1),
        Param("attention_injection", float, 0.5, "fraction of steps with injected queries and keys", low=0, high=1),
        Param("negative_prompt", str, "", "the target's negative prompt (empty: the inversion's null embedding)"),
    )

    @classmethod
    def check_backbone(cls, setting, backbone):
        if feature_block(backbone.unet) is None:
            raise ConfigError(
                "method 'pnp': this UNet has no up_blocks[1].resnets[1], the block whose features PnP injects"
            )

    @torch.no_grad()
    def edit(self, backbone, sample, prep, setting, generator):
        return EditResult(backbone.decode(pnp_latents(backbone, sample, prep, setting)[1:]).float())


def pnp_latents(backbone, sample, inversion, setting, on_step=None) -> torch.Tensor:
    """Source and target latents (2, C, h, w) of one PnP cell."""
    branch = with_source_prompt(sample, setting)
    unet, steps = backbone.unet, setting["steps"]
    control = PlugAndPlay(
        frozenset(injected_attention_layers(unet)),
        attention_until=int(setting["attention_injection"] * steps),
        feature_until=int(setting["feature_injection"] * steps),
    )
    null = OverInversion.uncond(backbone, sample, inversion)
    uncond = null
    if setting["negative_prompt"]:
        negative = backbone.encode_text(setting["negative_prompt"])

        def uncond(index):
            return torch.cat([null(index), negative])

    def on_eps(index):
        control.step = index

    cond = torch.cat([backbone.encode_text(branch.source_prompt), backbone.encode_text(sample.target_prompt)])
    hooks = [(feature_block(unet).conv2, control.inject_features)]
    with hooked(unet, hooked_layers(unet, control.attention_layers, control), hooks):
        return two_branch_latents(
            backbone, inversion.z_T, cond, uncond, setting["w"], steps, on_eps,
            OverInversion.trajectory(inversion, setting), on_step,
        )  # fmt: skip
