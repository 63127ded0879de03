"""``masactrl``: MasaCtrl, mutual self-attention control (Cao et al., ICCV 2023), over a chosen inversion.

A source branch (source prompt) and a target branch (target prompt) are denoised together from
the inversion's ``z_T`` under CFG ``w``. From denoising step ``start_step`` on, in the
self-attention layers from ``start_layer`` on, each target row's queries attend to its source
row's keys and values (unconditional and conditional halves alike); the source branch keeps
its own. With ``inversion = direct`` the source branch is put back on the inversion trajectory
after every step. The authors' real-image notebook (TencentARC/MasaCtrl ``playground_real.ipynb``)
runs the source branch freely from ``z_T``, as ``inversion = ddim`` does here: its call with the
stored inversion latents (``ref_intermediate_latents``) is commented out, noted as possibly better.
Which prompt the inversion and source branch use is ``source_prompt``: the authors' notebook and
editbench's default take the sample's source prompt; PnPInversion's script (PIE-Bench's table)
takes the empty prompt ``""``.

Sources and choices:

- Layers are counted over **all** self-attention layers of the UNet in forward order (down,
  mid, up), as the authors' code does (``cur_att_layer // 2`` over 16 layers in SD 1.x); their
  default ``start_layer = 10`` therefore lands in the decoder (its 4th self-attention layer
  on). The paper's text only says "decoder". The tiny test UNet has 4 self-attention layers,
  decoder from index 2; ``start_layer`` must be below the UNet's count (checked before any cell).
- ``start_step = 4`` and ``start_layer = 10`` are the authors' defaults (for 50 steps).
- SDXL: the same count over SDXL's 70 self-attention layers (its transformer blocks hold 2 or 10
  layers each), as the authors' SDXL code (``MutualSelfAttentionControl(model_type="SDXL")``,
  70 layers; ``run_synthesis_sdxl.py`` runs ``start_layer`` 44, 54 and 64, "may be not
  optimal"). Their class default 10 is kept, which on SDXL lands in the encoder: set
  ``start_layer`` (e.g. 44: the decoder's second 32x32 block on) for SDXL runs.
- ``mask_guided`` (the authors' ``MutualSelfAttentionControlMaskAuto``): the source and target
  edit words' cross-attention maps, averaged over steps so far and layers at the resolution
  nearest latent/4 (16x16 at 512 px, the authors' choice), min-max normalised and thresholded
  at 0.1, give a foreground mask per branch. Target foreground queries attend only to source
  foreground keys, background queries only to source background keys. The authors take the
  maps of the current step's earlier layers; this takes the steps before (no mask on the first
  controlled step if it is step 0: plain mutual attention then).
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from bench.diffusion.attention.control import AttentionController, grid_shape, word_positions
from bench.diffusion.attention.hooks import (
    attend,
    by_row,
    cross_attention_layers,
    from_source,
    hooked,
    hooked_layers,
    self_attention_layers,
    two_branch_latents,
    word_mask,
)
from bench.diffusion.families import UNET_FAMILIES
from bench.errors import ConfigError, SampleError
from bench.method import Conformance, EditResult, Identity
from bench.params import Param, guidance_param
from bench.registry import register
from methods._over_inversion import SOURCE_PROMPT, OverInversion, inversion_params, with_source_prompt
from methods.null_text_inversion import EXACT_NULL_TEXT

MASK_THRESHOLD = 0.1


@dataclass
class MutualSelfAttention:
    """The control of MasaCtrl's self-attention layers ``layers`` from step ``start_step`` on.

    ``masks``: None, or (source, target) foreground masks (1, 1, h, w) in latent cells, set
    before each step when the variant is mask-guided.
    """

    layers: frozenset[str]
    start_step: int
    step: int = 0
    masks: tuple[torch.Tensor, torch.Tensor] | None = None

    def active(self, name: str) -> bool:
        return self.step >= self.start_step and name in self.layers

    def attend(self, name, attn, query, key, value, attention_mask):
        key, value = from_source(key, attn.heads), from_source(value, attn.heads)
        if self.masks is None:
            return attend(attn, query, key, value, attention_mask)
        heads, queries = attn.heads, query.shape[1]
        grid = grid_shape(queries, tuple(self.masks[0].shape[2:]))  # the layer's (h, w), the masks' aspect
        source_fg, target_fg = (F.interpolate(m, size=grid, mode="nearest").flatten() for m in self.masks)
        scores = by_row(torch.bmm(query, key.transpose(1, 2)) * attn.scale, heads)
        lowest = torch.finfo(scores.dtype).min
        fg = scores.masked_fill(source_fg.to(scores.device)[None, None, None] == 0, lowest).softmax(-1)
        bg = scores.masked_fill(source_fg.to(scores.device)[None, None, None] == 1, lowest).softmax(-1)
        own = scores.softmax(-1)
        values = by_row(value, heads)
        keep = target_fg.to(scores)[:, None]
        mixed = (fg @ values) * keep + (bg @ values) * (1 - keep)
        out = own @ values
        out[1::2] = mixed[1::2]  # source rows attend as usual
        return out.reshape(query.shape[0], queries, -1).to(query.dtype)


@dataclass
class CrossObserver:
    """Watches every cross-attention layer, feeding an ``AttentionController`` (no edit) that
    keeps the two branches' maps at every resolution the UNet has."""

    maps: AttentionController = field(default_factory=AttentionController)

    def active(self, name: str) -> bool:
        return True

    def attend(self, name, attn, query, key, value, attention_mask):
        probs = attn.get_attention_scores(query, key, attention_mask)
        return torch.bmm(self.maps(probs, attn.heads, True, name), value)


@register
class MasaCtrl(OverInversion):
    name = "masactrl"
    families = UNET_FAMILIES
    description = "MasaCtrl: the target's queries read the source branch's self-attention keys and values."
    stochastic = False
    conformance = Conformance(
        settings=(
            {"steps": 2, "inversion": "direct", "start_step": 0, "start_layer": 2},
            {"steps": 2, "inversion": "ddim", "start_step": 1, "start_layer": 0, "mask_guided": True},
            {"steps": 2, "inversion": "null_text", "start_step": 0, "start_layer": 2, **EXACT_NULL_TEXT},
            {"steps": 2, "inversion": "negative_prompt", "start_step": 0, "start_layer": 2},
        ),
        family_settings={"sdxl": {"start_layer": 4}},  # the tiny SDXL UNet numbers its self-attention layers otherwise
        identities=(  # never active: the plain regeneration; target = source: the reconstruction
            Identity({"steps": 2, "inversion": "ddim", "start_step": 2, "start_layer": 0}, "ddim_inversion",
                     {"steps": 2}),
            Identity({"steps": 2, "inversion": "ddim", "start_step": 0, "start_layer": 0}, "ddim_inversion",
                     {"steps": 2}, target_is_source=True),
        ),
    )
    params = (
        *inversion_params("direct"),
        SOURCE_PROMPT,
        guidance_param(),
        Param("start_step", int, 4, "first denoising step with mutual self-attention", low=0),
        Param("start_layer", int, 10, "first controlled self-attention layer (UNet-wide, forward order)", low=0),
        Param("mask_guided", bool, False, "restrict mutual attention to the edit words' foreground / background"),
    )

    @classmethod
    def check(cls, setting):
        super().check(setting)
        if setting["start_step"] > setting["steps"]:
            raise ConfigError(
                f"method 'masactrl': start_step = {setting['start_step']} is beyond steps = {setting['steps']}; "
                "need start_step <= steps (= steps: never active)"
            )

    @classmethod
    def check_backbone(cls, setting, backbone):
        count = len(self_attention_layers(backbone.unet))
        if setting["start_layer"] >= count:
            raise ConfigError(
                f"method 'masactrl': start_layer = {setting['start_layer']} is not allowed; this UNet has {count} "
                f"self-attention layers, so expected 0..{count - 1}"
            )

    @classmethod
    def missing(cls, sample, setting):
        extra = ["edit_words"] if setting["mask_guided"] and sample.edit_words is None else []
        return super().missing(sample, setting) + extra

    @torch.no_grad()
    def edit(self, backbone, sample, prep, setting, generator):
        latents = masactrl_latents(backbone, sample, prep, setting)
        return EditResult(backbone.decode(latents[1:]).float())


def masactrl_latents(backbone, sample, inversion, setting, on_step=None) -> torch.Tensor:
    """Source and target latents (2, C, h, w) of one MasaCtrl cell."""
    sample = with_source_prompt(sample, setting)
    unet = backbone.unet
    layers = frozenset(self_attention_layers(unet)[setting["start_layer"] :])
    control = MutualSelfAttention(layers, setting["start_step"])
    latent_hw = tuple(side // backbone.vae_factor for side in sample.image.shape[1:])
    observer = CrossObserver(AttentionController(latent_hw=latent_hw))
    columns = _edit_word_columns(backbone.tokenizer, sample) if setting["mask_guided"] else None

    def on_eps(index):
        control.step = observer.maps.step = index
        if columns is not None and observer.maps.steps_done:
            control.masks = _foreground(observer.maps, columns, latent_hw)

    def after(step, latents):
        observer.maps.end_step()
        if on_step is not None:
            on_step(step, latents)

    processors = {
        **hooked_layers(unet, control.layers, control),
        **hooked_layers(unet, cross_attention_layers(unet) if columns is not None else (), observer),
    }
    cond = torch.cat([backbone.encode_text(sample.source_prompt), backbone.encode_text(sample.target_prompt)])
    with hooked(unet, processors):
        return two_branch_latents(
            backbone, inversion.z_T, cond, OverInversion.uncond(backbone, sample, inversion), setting["w"],
            setting["steps"], on_eps, OverInversion.trajectory(inversion, setting), after,
        )  # fmt: skip


def _edit_word_columns(tokenizer, sample) -> tuple[list[int], list[int]]:
    columns = []
    for prompt, words in zip((sample.source_prompt, sample.target_prompt), sample.edit_words):
        found = word_positions(tokenizer, prompt, words)
        if not found:
            raise SampleError(
                sample.id, f"masactrl mask_guided: edit word {words!r} does not occur in the prompt {prompt!r}"
            )
        columns.append(found)
    return tuple(columns)


def _foreground(maps: AttentionController, columns, latent_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(source, target) foreground masks over the latent of ``latent_hw`` from the edit words' maps so far."""
    queries = min(maps.resolutions(), key=lambda q: (abs(q**0.5 - (latent_hw[0] * latent_hw[1]) ** 0.5 / 4), -q))
    branches = maps.average(queries)  # (2, h, w, L)
    return tuple(word_mask(branches[b], columns[b], latent_hw, MASK_THRESHOLD) for b in range(2))
