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
  1.5) conditions its source row on ``""``: set ``source_prompt: ""``.
- ``source_row``: ``guided`` (above) or ``stored``, PnPInversion's form: one unguided source
  row (``source_prompt``'s embedding in both CFG halves, so both target halves take the same
  features) whose latent is not denoised but read, at every step, from stored latents: with
  ``inversion = direct`` the inversion's latent at the step's level; with ``ddim`` the unguided
  DDIM reconstruction from ``z_T`` under the sample's source prompt, one step ahead (step ``i``
  evaluates the reconstruction's latent after step ``i + 1`` at step ``i``'s timestep), and the
  target starts from the reconstruction's first step instead of ``z_T``. The reconstruction
  costs ``steps`` more NFE; the source row is still evaluated in both CFG halves (2 NFE a step).
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
from bench.diffusion.sampling import denoise, text_guided_eps
from bench.errors import ConfigError
from bench.method import Conformance, EditResult, Identity
from bench.params import Param, guidance_param
from bench.registry import register
from methods._over_inversion import SOURCE_PROMPT, OverInversion, inversion_params, with_source_prompt
from methods.null_text_inversion import EXACT_NULL_TEXT

FEATURE_BLOCK = (1, 1)  # up_blocks[1].resnets[1]
SOURCE_ROWS = ("guided", "stored")
STORED_PATHS = ("ddim", "direct")  # the inversions PnPInversion's script reads its source row from


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
    stochastic = False
    conformance = Conformance(
        settings=(
            {"steps": 2},
            {"steps": 2, "inversion": "ddim", "source_row": "stored"},
            {"steps": 2, "inversion": "null_text", **EXACT_NULL_TEXT},
            {"steps": 2, "inversion": "negative_prompt"},
            {"steps": 2, "source_row": "stored", "w": 1.0},
        ),
        identities=(  # no injection: the plain regeneration
            Identity({"steps": 2, "inversion": "ddim", "feature_injection": 0.0, "attention_injection": 0.0},
                     "ddim_inversion", {"steps": 2}),
        ),
    )
    params = (
        *inversion_params("direct"),
        SOURCE_PROMPT,
        guidance_param(),
        Param("feature_injection", float, 0.8, "fraction of steps with injected residual features", low=0, high=1),
        Param("attention_injection", float, 0.5, "fraction of steps with injected queries and keys", low=0, high=1),
        Param("negative_prompt", str, "", "the target's negative prompt (empty: the inversion's null embedding)"),
        Param("source_row", str, "guided", "the source branch: 'guided' (under CFG w, the authors' repositories) or "
              "'stored' (one unguided row read from stored latents, PnPInversion's script)", choices=SOURCE_ROWS),
    )

    @classmethod
    def check(cls, setting):
        super().check(setting)
        if setting["source_row"] == "stored" and setting["inversion"] not in STORED_PATHS:
            raise ConfigError(
                f"method 'pnp': source_row = 'stored' needs inversion {' or '.join(map(repr, STORED_PATHS))} "
                f"(got {setting['inversion']!r})"
            )

    @classmethod
    def estimate_nfe(cls, setting):
        """Both branches under CFG; ``source_row: stored`` over ``ddim`` adds the reconstruction (1 a step)."""
        edit, prep = super().estimate_nfe(setting)
        stored_ddim = setting["source_row"] == "stored" and setting["inversion"] == "ddim"
        return edit + (setting["steps"] if stored_ddim else 0), prep

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

    source = backbone.encode_text(branch.source_prompt)
    cond = torch.cat([source, backbone.encode_text(sample.target_prompt)])
    z_T, trajectory = inversion.z_T, OverInversion.trajectory(inversion, setting)
    if setting["source_row"] == "stored":
        target_uncond = uncond

        def uncond(index):  # the source row unguided: its own embedding in both CFG halves
            return torch.cat([source, target_uncond(index)[-1:]])

        if setting["inversion"] == "ddim":
            trajectory = StoredPath(reconstruction(backbone, inversion.z_T, sample.source_prompt, steps))
            z_T = trajectory.start
        else:
            trajectory = inversion
    hooks = [(feature_block(unet).conv2, control.inject_features)]
    with hooked(unet, hooked_layers(unet, control.attention_layers, control), hooks):
        return two_branch_latents(backbone, z_T, cond, uncond, setting["w"], steps, on_eps, trajectory, on_step)


@torch.no_grad()
def reconstruction(backbone, z_T: torch.Tensor, prompt: str, steps: int) -> torch.Tensor:
    """The unguided DDIM path from ``z_T`` under ``prompt``: (steps, C, h, w), row ``k`` the latent after ``k + 1`` steps."""
    scheduler, path = backbone.new_scheduler(steps), []

    def keep(step, latent):
        path.append(latent)
        return latent

    denoise(scheduler, z_T, scheduler.timesteps, text_guided_eps(backbone, prompt, 1.0), after_step=keep)
    return torch.cat(path)


@dataclass
class StoredPath:
    """A source row read from a DDIM reconstruction one step ahead, as PnPInversion's DDIM + PnP
    does: step ``i`` sees the latent after ``i + 1`` reconstruction steps (``pivot(i - 1)``)."""

    latents: torch.Tensor  # (steps, C, h, w), ``reconstruction``'s

    @property
    def start(self) -> torch.Tensor:
        return self.latents[:1]

    def pivot(self, index: int) -> torch.Tensor:
        return self.latents[min(index + 2, len(self.latents)) - 1][None]
