"""``pix2pix_zero``: pix2pix-zero (Parmar et al., SIGGRAPH 2023), over a chosen inversion.

1. **Edit direction**: the mean text embedding (the whole (77, D) sequence, as the authors) of
   target-side sentences minus that of source-side sentences. The authors generate ~1000
   sentences per word with a language model; here the sentences are fixed templates
   (``TEMPLATES``) filled with the sample's edit words, plus the sample's own prompt on each
   side. A sample without edit words uses its two prompts alone.
2. **Reference pass**: from the inversion's ``z_T``, denoise with the source prompt under CFG
   ``w`` (with ``inversion = direct``, put back on the inversion trajectory after every step),
   recording at each step the conditional branch's cross-attention maps in every
   cross-attention layer, at every resolution the UNet has.
3. **Edit pass**: from the same ``z_T``, with the source prompt's embedding plus
   ``direction_scale`` x the direction. At each step, before denoising, one gradient step on
   the latent: ``z <- z - xa_guidance * grad ||M(z, c_edit) - M_ref||^2``, where ``M`` are the
   conditional branch's maps (loss per layer: squared error summed over queries and tokens,
   averaged over heads; summed over layers, as the authors). Then the CFG step from the moved
   latent. (At ``w = 0`` no conditional branch runs, so the unconditional maps are matched.)

Costs: the reference pass is part of the cell (its NFE counted); each gradient step is one
NFE and one gradient evaluation (``grad_evals``). ``xa_guidance = 0`` takes no gradient step.

Sources and choices: editbench takes the gradient of the conditional branch's maps only. The
authors' pipeline as PnPInversion copies it (``models/pix2pix_zero/edit_pipeline.py``, the code
behind PIE-Bench's table), like diffusers' (deprecated) pipeline, applies the loss to the whole
CFG batch (mean over both halves x heads) and steps from the unconditional half's moved latent;
PnPInversion's script also uses the unedited source prompt as the negative prompt
(``negative_prompt: source``), guidance 7.5, and the direction emb(target prompt) - emb(source
prompt) alone (``direction: prompts``). ``loss_halves: both`` is that pipeline's form: the guidance
forward runs the whole CFG batch (two copies of the latent, the null and the edit embedding),
the loss compares all 2 x heads maps with the reference pass's (both halves of its CFG batch),
each copy takes its own gradient step, the CFG noise is predicted from the two moved copies and
the DDIM step starts from the unconditional copy (2 NFE for the guidance forward, not 1); at
``w`` 0 or 1 there is no CFG batch and both forms are the same.
``offset_edit``: with ``inversion = direct`` the pipeline also adds each step's offset (the
inversion latent minus the reference pass's step) to the edit latent, not only to the reference.
The authors'
inversion (and PnPInversion's copy) encodes a sample of the VAE posterior, regularises the noise
maps (auto-correlation with random shifts, KL) and steps t -> t + 1000/steps with the noise
predicted at t (levels ``alphas_cumprod[t - 1]``), with a BLIP caption as prompt; here any
``bench.diffusion.inversion.ddim`` kind is used instead, with the source prompt. Defaults
``xa_guidance = 0.1`` and ``w = 5`` are the authors' (``--xa_guidance``, ``--negative_guidance_scale``).
On SDXL (no authors' code) the direction is taken over the packed conditioning
(``bench.diffusion.families.sdxl``), so it moves the pooled projection too, and the maps are
matched in every cross-attention layer, as on SD.
"""

from dataclasses import dataclass, field

import torch

from bench.diffusion.attention.hooks import cross_attention_layers, hooked, hooked_layers
from bench.diffusion.families import UNET_FAMILIES
from bench.diffusion.sampling import guided_eps
from bench.method import Conformance, EditResult, Identity, cfg_evaluations
from bench.params import Param, guidance_param
from bench.registry import register
from methods._over_inversion import OverInversion, inversion_params
from methods.null_text_inversion import EXACT_NULL_TEXT

#: Sentences of the edit direction; ``{}`` is an edit word.
TEMPLATES = (
    "a photo of a {}",
    "a picture of a {}",
    "an image of a {}",
    "a close-up photo of a {}",
    "a photo of the {}",
    "a painting of a {}",
    "a {} in the scene",
    "a good photo of a {}",
)


def direction_sentences(prompt: str, word: str | None) -> list[str]:
    """One side's sentences: the sample's prompt, and the templates filled with its edit word."""
    return [prompt] + ([t.format(word) for t in TEMPLATES] if word else [])


def edit_direction(backbone, sample, sentences: str = "templates") -> torch.Tensor:
    """Mean embedding of the target-side sentences minus that of the source side, (1, L, D).

    ``sentences = prompts``: the two prompts alone, emb(target) - emb(source) (PnPInversion's script)."""
    words = sample.edit_words if sample.edit_words and sentences == "templates" else (None, None)
    sides = []
    for prompt, word in zip((sample.source_prompt, sample.target_prompt), words):
        embeddings = [backbone.encode_text(s) for s in direction_sentences(prompt, word)]
        sides.append(torch.cat(embeddings).mean(0, keepdim=True))
    return sides[1] - sides[0]


@dataclass
class CrossAttentionRecorder:
    """Keeps the last row's (the conditional branch's) cross-attention probabilities of each
    layer, (heads, queries, tokens), or with ``all_rows`` every row's, while ``on``; with
    gradients when the UNet runs under grad."""

    on: bool = False
    maps: dict[str, torch.Tensor] = field(default_factory=dict)

    def active(self, name: str) -> bool:
        return self.on

    all_rows: bool = False  # keep every row's maps (both CFG halves), not only the last row's

    def attend(self, name, attn, query, key, value, attention_mask):
        probs = attn.get_attention_scores(query, key, attention_mask)
        self.maps[name] = probs if self.all_rows else probs[-attn.heads :]
        return torch.bmm(probs, value)


def attention_loss(maps: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over layers of the squared map error summed over queries and tokens, averaged over heads."""
    return sum(((maps[name].float() - ref.float()) ** 2).sum((1, 2)).mean(0) for name, ref in reference.items())


@register
class Pix2PixZero(OverInversion):
    name = "pix2pix_zero"
    families = UNET_FAMILIES
    description = "pix2pix-zero: a text-embedding edit direction, guided to the reconstruction's cross-attention maps."
    stochastic = False
    conformance = Conformance(
        settings=(
            {"steps": 2},
            {"steps": 2, "inversion": "null_text", **EXACT_NULL_TEXT},
            {"steps": 2, "inversion": "negative_prompt", "loss_halves": "both"},
            {"steps": 2, "inversion": "direct", "direction": "prompts", "offset_edit": True},
            {"steps": 2, "loss_halves": "both", "w": 1.0, "negative_prompt": "source"},
        ),
        identities=(  # no guidance and no direction: the source's regeneration
            Identity({"steps": 2, "xa_guidance": 0.0, "direction_scale": 0.0}, "ddim_inversion", {"steps": 2, "w": 5.0},
                     target_is_source=True),
        ),
    )
    params = (
        *inversion_params("ddim"),
        guidance_param(5.0),
        Param("xa_guidance", float, 0.1, "step size of the cross-attention guidance on the latent", low=0),
        Param("direction_scale", float, 1.0, "multiple of the edit direction added to the source embedding"),
        Param("direction", str, "templates", "sentences of the edit direction: templates (filled with the edit "
              "words, plus the prompts) or prompts (the two prompts alone, as PnPInversion's script)",
              choices=("templates", "prompts")),
        Param("negative_prompt", str, "null", "unconditional embedding of both passes: null (the inversion's) or "
              "source (the source prompt, as PnPInversion's script: the reference pass is then conditional only)",
              choices=("null", "source")),
        Param("loss_halves", str, "conditional", "maps the guidance loss compares: conditional (the paper) or both "
              "CFG halves, the step taken from the unconditional half (the authors' pipeline, PnPInversion's script)",
              choices=("conditional", "both")),
        Param("offset_edit", bool, False, "with inversion = direct, add each step's offset to the edit latent too "
              "(PnPInversion's script), not only to the reference pass"),
    )

    @classmethod
    def estimate_nfe(cls, setting):
        """A step: the reference pass under CFG, the guidance forward (1 row; 2 with both halves),
        the edit under CFG (always 2 rows with both halves)."""
        cfg = cfg_evaluations(setting["w"])
        both = setting["loss_halves"] == "both" and cfg == 2
        guide = (2 if both else 1) if setting["xa_guidance"] else 0
        per_step = cfg + guide + (2 if both else cfg)
        return setting["steps"] * per_step, cls.preparation_nfe(setting)

    def edit(self, backbone, sample, prep, setting, generator):
        latent, grad_evals = pix2pix_zero_latent(backbone, sample, prep, setting)
        with torch.no_grad():
            return EditResult(backbone.decode(latent).float(), grad_evals=grad_evals)


def pix2pix_zero_latent(backbone, sample, inversion, setting, on_step=None) -> tuple[torch.Tensor, int]:
    """The edited latent (1, C, h, w) of one pix2pix-zero cell and its number of gradient steps.

    ``on_step(index, reference_maps, edit_maps)`` sees each step's maps (the edit's are those of
    the gradient step, empty without one)."""
    unet, w, scale = backbone.unet, setting["w"], setting["xa_guidance"]
    scheduler = backbone.new_scheduler(setting["steps"])
    source = backbone.encode_text(sample.source_prompt)
    edited = source
    if setting["direction_scale"]:
        edited = source + setting["direction_scale"] * edit_direction(backbone, sample, setting["direction"])
    uncond = OverInversion.uncond(backbone, sample, inversion)
    if setting["negative_prompt"] == "source":
        def uncond(index):
            return source

    trajectory = OverInversion.trajectory(inversion, setting)
    both = setting["loss_halves"] == "both" and cfg_evaluations(w) == 2  # w 0 or 1: no CFG batch, one form
    recorder = CrossAttentionRecorder(all_rows=both)
    reference = latent = inversion.z_T
    grad_evals = 0
    with hooked(unet, hooked_layers(unet, cross_attention_layers(unet), recorder)):
        for index, t in enumerate(scheduler.timesteps):
            null = uncond(index)
            with torch.no_grad():
                recorder.on, recorder.maps = True, {}
                reference_eps = guided_eps(backbone, reference, t, source, null, w)
                reference_maps = {name: m.detach() for name, m in recorder.maps.items()}
            recorder.maps = {}
            # ``latent``: (1, ...) or, with both halves, the (unconditional, conditional) copies
            latent = latent[:1].expand(2, -1, -1, -1) if both else latent
            text = torch.cat([null, edited]) if both else edited
            if scale:
                latent = _guide(backbone, latent, t, text, reference_maps, scale, recorder)
                grad_evals += 1
            if on_step is not None:
                on_step(index, reference_maps, recorder.maps)
            recorder.on = False
            with torch.no_grad():
                if both:
                    eps_uncond, eps_cond = backbone.eps(latent, t, text).chunk(2)
                    eps, latent = eps_uncond + w * (eps_cond - eps_uncond), latent[:1]
                else:
                    eps = guided_eps(backbone, latent, t, edited, null, w)
                stepped = scheduler.step(reference_eps, t, reference, eta=0.0).prev_sample
                latent = scheduler.step(eps, t, latent, eta=0.0).prev_sample
            reference = stepped
            if trajectory is not None:
                reference = trajectory.pivot(index).to(reference.dtype)
                if setting["offset_edit"]:
                    latent = latent + (reference - stepped)
    return latent, grad_evals


def _guide(backbone, latent, t, text, reference_maps, scale, recorder) -> torch.Tensor:
    """One cross-attention guidance step on each row of ``latent``, conditioned on its row of
    ``text`` (the UNet's graph is freed by the backward)."""
    moved = latent.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        backbone.eps(moved, t, text)
        loss = attention_loss(recorder.maps, reference_maps)
        (grad,) = torch.autograd.grad(loss, moved)
    recorder.maps = {name: m.detach() for name, m in recorder.maps.items()}
    return (latent - scale * grad.to(latent.dtype)).detach()
