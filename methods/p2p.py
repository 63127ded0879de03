"""``p2p``: Prompt-to-Prompt (Hertz et al., ICLR 2023) on top of a chosen inversion.

Source and target prompts are denoised as one batch from the same ``z_T`` (the inversion's,
or fresh noise with ``inversion = none``); ``bench.diffusion.attention.control`` injects the source branch's
attention into the target branch. Edit kinds: ``replace`` (word swap, equal token counts),
``refine`` (words added; edit-distance token alignment), ``reweight`` (a word's attention
scaled by a factor, on top of replace or refine). ``auto`` picks replace when the prompts have
equal token counts, refine otherwise. Local blend uses ``blend_words``, by default the
sample's edit words. With ``inversion = direct`` the source branch is put back on the
inversion trajectory after every step (direct inversion's per-step offset). With
``inversion = ddpm`` (PnPInversion's "edit-friendly inversion + P2P") both rows start from the
edit-friendly inversion's latent ``skip`` steps below ``x_T`` and take DDPM steps with its stored
noise maps; by default both rows run at ``w`` from ``x_T``. PnPInversion's script skips 12 of 50
steps and runs the source row at its inversion's guidance 1 (``skip: 12, source_w: inversion_w``),
with the last noise map zeroed, as the authors' code (``zero_last_noise``).

Where PnPInversion's ``run_editing_*.py`` (which produced PIE-Bench's published table) differ from
the paper and google/prompt-to-prompt, a parameter selects: its P2P rows always run refine plus a
reweight (factor 2) of the target blend word (``edit: refine_reweight, reweight_word: blend``); a
blend word missing from its prompt runs with no columns (``missing_words: ignore``); its DDPM row
picks replace or refine by *word* count (``edit: auto_words``).

A batch of ``n`` cells runs as ``2n`` latents, each cell's (source, target) pair with its
own prompts, null embeddings, controller and local blend (``bench.diffusion.attention.control.BatchController``).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers.utils.torch_utils import randn_tensor

from bench.diffusion.attention.control import (
    N_BRANCHES,
    AttentionController,
    BatchController,
    CrossEdit,
    LocalBlend,
    align_tokens,
    attention_picture,
    controlled,
    prompt_tokens,
    word_positions,
)
from bench.diffusion.families import UNET_FAMILIES
from bench.diffusion.inversion.ddim import KINDS, Inversion
from bench.diffusion.sampling import decode_rows, denoise, encode_prompts, guided_eps, split_rows
from bench.errors import ConfigError, SampleError
from bench.method import Conformance, Identity, Method
from bench.params import Param
from bench.registry import register
from methods._over_inversion import chosen_inversion
from methods.ddim_inversion import INVERSION_W, STEPS, W
from methods.ddpm_inversion import NOISE_SEED, ddpm_inversion_spec
from methods.null_text_inversion import EXACT_NULL_TEXT, NULL_TEXT_PARAMS, check_null_text

EDITS = ("auto", "auto_words", "replace", "refine", "reweight", "refine_reweight")
#: The spec each ``inversion`` choice outside ``KINDS`` prepares (``none``: nothing, z_T is fresh noise).
OTHER_INVERSIONS = {"none": lambda setting: None, "ddpm": ddpm_inversion_spec}
SOURCE_W = ("w", "inversion_w")


def parse_word_fractions(text: str) -> dict[str, float]:
    """``"dog:0.2,red hat:1"`` -> ``{"dog": 0.2, "red hat": 1.0}``; ValueError naming the bad part."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        word, sep, frac = part.rpartition(":")
        try:
            value = float(frac)
        except ValueError:
            value = -1.0
        if not sep or not word.strip() or not 0 <= value <= 1:
            raise ValueError(f"{part!r} is not WORD:FRACTION with a fraction in [0, 1]")
        out[word.strip()] = value
    return out


@dataclass
class P2PCell:
    """What one cell's P2P run needs: its start latent ``z_T`` (1, C, h, w), its (source, target)
    prompts, ``uncond(index)`` (the null embedding of step ``index``, (1, L, D)), its attention
    controller, and optionally the ``Inversion`` whose path its source row is put back on after
    every step (direct inversion), its ``LocalBlend``, and the noise maps (steps, C, h, w) of a
    ``ddpm`` inversion, whose DDPM steps replace the DDIM ones."""

    z_T: torch.Tensor
    prompts: tuple[str, str]
    uncond: Callable[[int], torch.Tensor]
    controller: AttentionController
    trajectory: Inversion | None = None
    blend: LocalBlend | None = None
    noise_maps: torch.Tensor | None = None


def p2p_batch_latents(
    backbone, cells: list[P2PCell], w: float, steps: int, on_step=None, source_w: float | None = None, skip: int = 0
) -> torch.Tensor:
    """Denoise every cell's source and target together (rows ``2i``, ``2i + 1``); (2n, C, h, w).

    ``on_step(step, latents)`` sees the latents after each step's corrections. ``source_w``: the
    source rows' guidance (None: ``w``, like the target rows). ``skip``: the first ``skip`` timesteps
    are not run (each cell's ``z_T`` is then the latent at that level); step indices count from the
    first step run, as PnPInversion's controllers count them.
    """
    scheduler = backbone.new_scheduler(steps)
    cond = torch.cat([encode_prompts(backbone, list(cell.prompts)) for cell in cells])
    controller = BatchController([cell.controller for cell in cells])
    if source_w is not None and source_w != w:
        w = torch.tensor([source_w, w] * len(cells)).view(-1, 1, 1, 1)

    def eps(latent, t, index):
        controller.set_step(index)
        uncond = torch.cat([cell.uncond(index).expand(N_BRANCHES, -1, -1) for cell in cells])
        return guided_eps(backbone, latent, t, cond, uncond, w)

    def after(step, latent):
        controller.end_step()
        pairs = []
        for i, cell in enumerate(cells):
            pair = latent[N_BRANCHES * i : N_BRANCHES * (i + 1)]
            if cell.trajectory is not None:
                # z_src + (z*_s - z_src): the offset direct inversion adds is the gap between z*_s and
                # the source branch's own CFG step from z*_t, which is where the source row stands.
                pair = torch.cat([cell.trajectory.pivot(step.index).to(pair.dtype), pair[1:]])
            if cell.blend is not None:
                pair = cell.blend(pair, cell.controller, step.index)
            pairs.append(pair)
        latent = torch.cat(pairs)
        if on_step is not None:
            on_step(step, latent)
        return latent

    start = torch.cat([cell.z_T.expand(N_BRANCHES, -1, -1, -1) for cell in cells]).to(backbone.dtype)
    noise_maps = _row_noise_maps(cells)
    with controlled(backbone.unet, controller):
        return denoise(scheduler, start, scheduler.timesteps[skip:], eps, after_step=after,
                       noise_maps=None if noise_maps is None else noise_maps[skip:])  # fmt: skip


def edit_noise_maps(inversion: Inversion, setting) -> torch.Tensor:
    """The ddpm inversion's noise maps the edit regenerates with (the last one zeroed with ``zero_last_noise``)."""
    if not setting["zero_last_noise"]:
        return inversion.noise_maps
    maps = inversion.noise_maps.clone()
    maps[-1] = 0
    return maps


def _row_noise_maps(cells: list[P2PCell]) -> torch.Tensor | None:
    """(steps, 2n, C, h, w): each cell's noise maps for both of its rows (None without ``ddpm``)."""
    if cells[0].noise_maps is None:
        return None
    return torch.stack([cell.noise_maps for cell in cells for _ in range(N_BRANCHES)], dim=1)


def p2p_latents(
    backbone, z_T, prompts, w, controller, steps, uncond, trajectory=None, blend=None, on_step=None, noise_maps=None
):
    """``p2p_batch_latents`` of one cell: source and target rows (2, C, h, w)."""
    cell = P2PCell(z_T, tuple(prompts), uncond, controller, trajectory, blend, noise_maps)
    return p2p_batch_latents(backbone, [cell], w, steps, on_step)


@register
class PromptToPrompt(Method):
    name = "p2p"
    families = UNET_FAMILIES
    description = "Prompt-to-Prompt attention injection (replace / refine / reweight, local blend) over an inversion."
    stochastic = True  # from noise only (inversion "none"): is_stochastic
    conformance = Conformance(
        settings=(
            {"steps": 3, "inversion": "ddim", "attention_maps": True},
            {"steps": 3, "inversion": "null_text", "edit": "refine", **EXACT_NULL_TEXT},
            {"steps": 3, "inversion": "negative_prompt", "blend_words": "none", "cross_replace_words": "a:1"},
            {"steps": 3, "inversion": "direct", "attention_maps": True},
            {"steps": 3, "inversion": "none", "self_replace_steps": 1.0},
            {"steps": 3, "inversion": "ddpm", "inversion_w": 3.0, "skip": 1},
        ),
        identities=(  # no injection and no blend: the plain regeneration; target = source: the reconstruction
            Identity({"steps": 3, "inversion": "ddim", "cross_replace_steps": 0.0, "self_replace_steps": 0.0,
                      "blend_words": "none"}, "ddim_inversion", {"steps": 3}),
            Identity({"steps": 3, "inversion": "ddim", "blend_words": "none"}, "ddim_inversion", {"steps": 3},
                     target_is_source=True),
        ),
    )
    needs = frozenset({"target_prompt"})
    params = (
        STEPS,
        W,
        Param("inversion", str, "direct", "inversion giving z_T (none: from noise)", choices=("none", *KINDS, "ddpm")),
        INVERSION_W,
        NOISE_SEED,
        *NULL_TEXT_PARAMS,
        Param("edit", str, "auto", "attention edit (auto: replace if equal token counts, else refine; auto_words: replace "
              "if equal word and token counts, as PnPInversion's DDPM+P2P script; refine_reweight: refine plus "
              "reweight, as PnPInversion's other P2P scripts)", choices=EDITS),
        Param("cross_replace_steps", float, 0.4, "fraction of steps with injected cross-attention", low=0, high=1,
              step_fraction=True),
        Param("cross_replace_words", str, "", "per-word fractions overriding it, e.g. 'dog:0.2,hat:1'"),
        Param("self_replace_steps", float, 0.6, "fraction of steps with injected self-attention", low=0, high=1,
              step_fraction=True),
        Param("reweight_word", str, "", "word of the target prompt whose attention edit=reweight/refine_reweight "
              "scales; 'blend': the target blend word (PnPInversion; none without blend words)"),
        Param("reweight_factor", float, 2.0, "factor of reweight_word's attention", low=0),
        Param("blend_words", str, "auto", "local blend words 'SRC:TGT', 'auto' (the sample's edit words) or 'none'"),
        Param("blend_threshold", float, 0.3, "local blend mask threshold", low=0, high=1),
        Param("blend_start", float, 0.2, "fraction of steps before local blend starts", low=0, high=1,
              step_fraction=True),
        Param("missing_words", str, "error", "a blend/reweight word absent from its prompt: error (the cell fails) "
              "or ignore (no columns, as PnPInversion's scripts run it)", choices=("error", "ignore")),
        Param("skip", int, 0, "inversion=ddpm only: steps skipped at the noisy end (PnPInversion: 12 of 50)", low=0),
        Param("source_w", str, "w", "guidance of the source row: w, or inversion_w (PnPInversion's DDPM+P2P: source "
              "row at its inversion's guidance 1)", choices=SOURCE_W),
        Param("zero_last_noise", bool, False, "inversion=ddpm only: regenerate with the last step's noise map zeroed "
              "(the authors' code and PnPInversion's: the last step is deterministic); editbench keeps it, so the "
              "source row reconstructs exactly"),
        Param("attention_maps", bool, False, "save a picture of each token's cross-attention map"),
    )

    @classmethod
    def is_stochastic(cls, setting):
        """Noise from the cell's generator only when starting from noise; an inversion (DDPM's
        included, seeded by ``noise_seed``) is the same for every seed."""
        return setting["inversion"] == "none"

    @classmethod
    def check(cls, setting):
        if setting["inversion"] == "null_text":
            check_null_text(cls.name, setting)
        try:
            parse_word_fractions(setting["cross_replace_words"])
        except ValueError as exc:
            raise ConfigError(f"method 'p2p': parameter 'cross_replace_words': {exc}") from None
        if setting["edit"] in ("reweight", "refine_reweight") and not setting["reweight_word"].strip():
            raise ConfigError(f"method 'p2p': edit = {setting['edit']!r} needs parameter 'reweight_word'")
        if setting["skip"] and (setting["inversion"] != "ddpm" or setting["skip"] >= setting["steps"]):
            raise ConfigError(
                f"method 'p2p': skip = {setting['skip']} needs inversion = 'ddpm' and skip < steps ({setting['steps']})"
            )
        words = setting["blend_words"]
        if words not in ("auto", "none") and (words.count(":") != 1 or not all(s.strip() for s in words.split(":"))):
            raise ConfigError(
                f"method 'p2p': parameter 'blend_words' = {words!r} is not allowed; expected 'SRC:TGT', 'auto' or 'none'"
            )

    @classmethod
    def schedule(cls, setting):
        """With ``skip`` (edit-friendly DDPM) the first ``skip`` timesteps are not run."""
        return setting["skip"], setting["steps"] - setting["skip"]

    @classmethod
    def estimate_nfe(cls, setting):
        """Source and target rows denoise together: twice a single edit's evaluations."""
        edit, prep = super().estimate_nfe(setting)
        return 2 * edit, prep

    @classmethod
    def preparation(cls, setting):
        return OTHER_INVERSIONS.get(setting["inversion"], chosen_inversion)(setting)

    def cell(self, backbone, row, setting) -> P2PCell:
        """The P2P run of one row: start latent, prompts, null embeddings, controller and blend."""
        sample, prep = row.sample, row.prep
        if prep is None:
            height, width = (side // backbone.vae_factor for side in sample.image.shape[1:])  # the sample's size
            shape = (1, backbone.unet.config.in_channels, height, width)
            z_T = randn_tensor(shape, generator=row.generator, device=backbone.device, dtype=backbone.dtype)
            null = backbone.encode_text("")

            def uncond(index):
                return null
        else:
            z_T = prep.latents[prep.steps - setting["skip"]][None]

            def uncond(index):
                return prep.uncond(backbone, sample.source_prompt, index)

        return P2PCell(
            z_T, (sample.source_prompt, sample.target_prompt), uncond, build_controller(backbone, sample, setting),
            trajectory=prep if setting["inversion"] == "direct" else None,
            blend=build_blend(backbone.tokenizer, sample, setting),
            noise_maps=edit_noise_maps(prep, setting) if setting["inversion"] == "ddpm" else None,
        )  # fmt: skip

    @torch.no_grad()
    def edit_batch(self, backbone, rows, setting):
        cells = [self.cell(backbone, row, setting) for row in rows]
        source_w = setting["inversion_w"] if setting["source_w"] == "inversion_w" else None
        latents = p2p_batch_latents(backbone, cells, setting["w"], setting["steps"], source_w=source_w, skip=setting["skip"])
        results = split_rows(decode_rows(backbone, latents[1::N_BRANCHES]))
        if setting["attention_maps"]:
            for result, cell in zip(results, cells):
                result.artifacts["attention"] = attention_picture(cell.controller, backbone.tokenizer, cell.prompts)
        return results


def _positions(tokenizer, sample, prompt: str, word: str, parameter: str, missing: str = "error") -> list[int]:
    found = word_positions(tokenizer, prompt, word)
    if not found and missing == "error":
        raise SampleError(sample.id, f"p2p {parameter}: word {word!r} does not occur in the prompt {prompt!r}")
    return found


def build_controller(backbone, sample, setting) -> AttentionController:
    """The attention controller of one p2p cell (which edit, which steps, which columns)."""
    tokenizer, steps = backbone.tokenizer, setting["steps"]
    length = tokenizer.model_max_length
    source = prompt_tokens(tokenizer, sample.source_prompt)
    target = prompt_tokens(tokenizer, sample.target_prompt)
    kind = setting["edit"]
    if kind == "auto_words":
        same_words = len(sample.source_prompt.split(" ")) == len(sample.target_prompt.split(" "))
        kind = "replace" if same_words and len(source) == len(target) else "refine"
    if kind == "auto":
        kind = "replace" if len(source) == len(target) else "refine"
    if kind == "replace" and len(source) != len(target):
        raise SampleError(
            sample.id,
            f"p2p edit 'replace' needs prompts of equal token counts (source {len(source)}, target {len(target)}); "
            "use edit 'refine' or 'auto'",
        )
    missing = setting["missing_words"]
    alpha = torch.zeros(steps, length)
    alpha[: int(setting["cross_replace_steps"] * steps)] = 1
    for word, fraction in parse_word_fractions(setting["cross_replace_words"]).items():
        columns = _positions(tokenizer, sample, sample.target_prompt, word, "cross_replace_words", missing)
        alpha[:, columns] = 0
        alpha[: int(fraction * steps), columns] = 1
    edit = CrossEdit(alpha)
    if len(source) != len(target) or kind in ("refine", "refine_reweight"):
        edit.mapper, edit.aligned = align_tokens(source, target, length)
    word = _reweight_word(sample, setting) if kind in ("reweight", "refine_reweight") else None
    if word is not None:
        edit.equalizer = torch.ones(length)
        columns = _positions(tokenizer, sample, sample.target_prompt, word, "reweight_word", missing)
        edit.equalizer[columns] = setting["reweight_factor"]
    h, w = (side // backbone.vae_factor for side in sample.image.shape[1:])
    return AttentionController(
        cross=edit,
        self_until=int(setting["self_replace_steps"] * steps),
        self_max_queries=(h // 2) * (w // 2),
        latent_hw=(h, w),
    )


def _reweight_word(sample, setting) -> str | None:
    """The word whose columns are reweighted: ``reweight_word``, or with ``blend`` the first target
    blend word (None when there is none: PnPInversion then runs without an equalizer)."""
    word = setting["reweight_word"]
    if word != "blend":
        return word
    words = _blend_words(sample, setting)
    return words[1].split()[0] if words else None


def _blend_words(sample, setting) -> tuple[str, str] | None:
    """(source words, target words) of the local blend, or None (``none``, or ``auto`` without edit words)."""
    words = setting["blend_words"]
    if words == "none" or (words == "auto" and not sample.edit_words):
        return None
    return tuple(sample.edit_words) if words == "auto" else tuple(words.split(":"))


def build_blend(tokenizer, sample, setting) -> LocalBlend | None:
    """The local blend of one p2p cell, or None (``blend_words = none``, or ``auto`` without edit words)."""
    words = _blend_words(sample, setting)
    if words is None:
        return None
    columns = torch.zeros(2, tokenizer.model_max_length)
    for row, (prompt, text) in enumerate(zip((sample.source_prompt, sample.target_prompt), words)):
        for word in text.split():
            columns[row, _positions(tokenizer, sample, prompt, word, "blend_words", setting["missing_words"])] = 1
    return LocalBlend(columns, setting["blend_threshold"], int(setting["blend_start"] * setting["steps"]))
