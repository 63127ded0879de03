"""Prompt-to-Prompt attention control through diffusers attention processors.

Hertz et al. (ICLR 2023), as docs/REFERENCE.md ("Attention and feature control") states it. The
source and target prompts are denoised as one batch; ``AttentionController`` edits the
attention probabilities of the target branch from the source branch's, and keeps the
cross-attention maps (averaged over heads, layers and steps) at every resolution the UNet
has, for local blending and for attention-map pictures.

Hooking is only ever done with ``unet.set_attn_processor``: ``controlled(unet, controller)``
installs one ``P2PAttnProcessor`` per attention layer and puts the original processors back
when the block ends, whatever happens inside it.

Details kept from the reference implementation (google/prompt-to-prompt), so numbers compare:
only the conditional half of a CFG batch is edited; self-attention is replaced only in
layers with at most ``(latent_size / 2)^2`` queries (32x32 and below at 512 px); local
blend max-pools the word maps (3x3) before resizing them to the latent. The rules are by
resolution, so they carry over to SDXL unchanged (google/prompt-to-prompt has no SDXL code): at
1024 px (latent 128) every SDXL attention layer (64x64 and 32x32) is within the self-attention
limit, and local blend reads the 32x32 maps.
"""

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image

from bench.diffusion.attention.figure import attention_figure, figure_image
from bench.diffusion.attention.hooks import project

N_BRANCHES = 2  # source, target


# -- tokens -------------------------------------------------------------------------------------
def prompt_tokens(tokenizer, prompt: str) -> list[int]:
    """Token ids of ``prompt`` with start and end tokens, unpadded (position i = column i of a map)."""
    ids = tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids
    return list(ids)


def word_positions(tokenizer, prompt: str, word: str) -> list[int]:
    """Map columns of every occurrence of ``word`` (one or more words) in ``prompt``; [] if absent."""
    seq = prompt_tokens(tokenizer, prompt)
    sub = tokenizer(word, add_special_tokens=False).input_ids
    if not sub:
        return []
    found = []
    for start in range(len(seq) - len(sub) + 1):
        if seq[start : start + len(sub)] == sub:
            found += range(start, start + len(sub))
    return found


def align_tokens(source: list[int], target: list[int], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Refinement mapping by global (Needleman-Wunsch) alignment of two token sequences.

    The definition of google/prompt-to-prompt's ``seq_aligner`` (which PnPInversion's scripts
    use unchanged): match +1, mismatch -1, gap 0; where several moves give a cell's best score
    the trace prefers a target-only token ("left"), then a source-only token ("up"), then the
    diagonal. So a swapped word is never aligned with the word it replaces: "a photo of a cat"
    -> "a photo of a dog" leaves "dog" unaligned (it keeps its own map), exactly as in the
    reference. Returns ``mapper`` (length,): the source column each target column reads from
    (0 for an unaligned column, whose value is never read), and ``aligned`` (length,): 1 where
    the target token is aligned with a source token, 0 for tokens only the target has. Padding
    columns after the target's end read the same column of the source (j -> j).
    """
    n, m = len(source), len(target)
    score = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            diag = score[i - 1][j - 1] + (1 if source[i - 1] == target[j - 1] else -1)
            score[i][j] = max(diag, score[i - 1][j], score[i][j - 1])
    mapper = torch.arange(length)
    aligned = torch.ones(length)
    i, j = n, m
    while j > 0:
        if i == 0 or score[i][j] == score[i][j - 1]:  # target-only token (the reference's first choice)
            mapper[j - 1], aligned[j - 1] = 0, 0.0
            j -= 1
        elif score[i][j] == score[i - 1][j]:  # source-only token
            i -= 1
        else:
            mapper[j - 1] = i - 1
            i, j = i - 1, j - 1
    return mapper, aligned


# -- the controller -----------------------------------------------------------------------------
@dataclass
class CrossEdit:
    """How the target's cross-attention is built from the source's at each step.

    ``alpha``: (steps, length) 1 where column j of the target is taken from the source at step
    i (``cross_replace_steps``, per word). ``mapper``/``aligned``: refinement alignment (None
    for a word swap, where column j reads column j). ``equalizer``: (length,) reweighting
    factors (None: no reweighting).
    """

    alpha: torch.Tensor
    mapper: torch.Tensor | None = None
    aligned: torch.Tensor | None = None
    equalizer: torch.Tensor | None = None

    def apply(self, source: torch.Tensor, target: torch.Tensor, step: int) -> torch.Tensor:
        """New target maps (heads, queries, length) from the source and target ones."""
        alpha = self.alpha[step].to(target)
        if not alpha.any():
            return target
        base = source
        if self.mapper is not None:
            aligned = self.aligned.to(target)
            base = source[..., self.mapper.to(source.device)] * aligned + target * (1 - aligned)
        if self.equalizer is not None:
            base = base * self.equalizer.to(target)
        return base * alpha + target * (1 - alpha)


@dataclass
class AttentionController:
    """State shared by every hooked layer during one P2P denoising run.

    ``cross``: the cross-attention edit (None: leave cross-attention alone, only observe).
    ``self_until``: steps ``< self_until`` copy the source's self-attention into the target in
    layers with at most ``self_max_queries`` queries. ``record``: keep every edited map (for
    tests; memory grows with steps x layers). The loop sets ``step`` before each UNet call and
    calls ``end_step`` after it. ``latent_hw``: the latent's (height, width), which lays a layer's
    queries out as a grid (``grid_shape``; None: square).
    """

    cross: CrossEdit | None = None
    self_until: int = 0
    self_max_queries: int = 0
    record: bool = False
    latent_hw: tuple[int, int] | None = None
    step: int = 0
    sums: dict[int, torch.Tensor] = field(default_factory=dict)  # queries -> (2, Q, L) summed over steps
    layers: dict[int, int] = field(default_factory=dict)  # queries -> layers per step
    steps_done: int = 0
    recorded: list = field(default_factory=list)  # (step, layer name, is_cross, (2, heads, Q, L))
    _step_sums: dict[int, torch.Tensor] = field(default_factory=dict)
    _step_layers: dict[int, int] = field(default_factory=dict)

    def edits_self(self, queries: int) -> bool:
        return self.step < self.self_until and queries <= self.self_max_queries

    def __call__(self, probs: torch.Tensor, heads: int, is_cross: bool, name: str) -> torch.Tensor:
        """Edit (batch*heads, Q, K) probabilities; the last two batch rows are source, target."""
        batch = probs.shape[0] // heads
        probs = probs.view(batch, heads, *probs.shape[1:])
        source, target = probs[-2], probs[-1]
        if is_cross:
            if self.cross is not None:
                target = self.cross.apply(source, target, self.step)
        elif self.edits_self(probs.shape[2]):
            target = source
        probs = torch.cat([probs[:-1], target[None]])
        branches = probs[-N_BRANCHES:]
        if is_cross:
            q = branches.shape[2]
            mean = branches.float().mean(1)
            self._step_sums[q] = self._step_sums.get(q, 0) + mean
            self._step_layers[q] = self._step_layers.get(q, 0) + 1
        if self.record:
            self.recorded.append((self.step, name, is_cross, branches.detach().float().cpu()))
        return probs.reshape(batch * heads, *probs.shape[2:])

    def end_step(self) -> None:
        """Fold this step's layer-averaged cross maps into the running sums."""
        for q, total in self._step_sums.items():
            self.sums[q] = self.sums.get(q, 0) + total / self._step_layers[q]
            self.layers[q] = self._step_layers[q]
        self._step_sums, self._step_layers = {}, {}
        self.steps_done += 1

    def average(self, queries: int) -> torch.Tensor:
        """(2, h, w, L) cross maps at the resolution with ``queries = h*w``, averaged over layers and steps so far."""
        maps = self.sums[queries] / self.steps_done
        return maps.view(N_BRANCHES, *grid_shape(queries, self.latent_hw), maps.shape[-1])

    def resolutions(self) -> list[int]:
        """Query counts of the cross-attention layers seen so far, largest first."""
        return sorted(self.sums, reverse=True)


def grid_shape(queries: int, latent_hw: tuple[int, int] | None) -> tuple[int, int]:
    """(h, w) of a UNet layer's ``queries`` for a latent of ``latent_hw``: the latent halved (rounding
    up, as the UNet's strided convolutions do) until it has that many positions; square without one."""
    if latent_hw is not None:
        h, w = latent_hw
        for _ in range(8):
            if h * w == queries:
                return h, w
            h, w = -(-h // 2), -(-w // 2)
    r = int(round(queries**0.5))
    return r, r


class BatchController:
    """The controllers of a batch of P2P cells, as one controller the processors can call.

    A batch of ``n`` cells denoises ``2n`` latents, cell ``i`` as rows ``2i`` (source) and
    ``2i + 1`` (target); under CFG the UNet batch is ``[unconditional 2n, conditional 2n]``.
    The edited rows (the last ``2n``, as for one cell) are cut into pairs and each pair goes to
    its own cell's controller, so edits, recorded maps and local blends stay per cell and a
    cell's result does not depend on its batch. Every cell of a batch has the same setting,
    hence the same steps and self-attention rule.
    """

    def __init__(self, controllers: list[AttentionController]):
        self.controllers = controllers

    @property
    def record(self) -> bool:
        return any(c.record for c in self.controllers)

    def set_step(self, step: int) -> None:
        for controller in self.controllers:
            controller.step = step

    def end_step(self) -> None:
        for controller in self.controllers:
            controller.end_step()

    def edits_self(self, queries: int) -> bool:
        return any(c.edits_self(queries) for c in self.controllers)

    def __call__(self, probs: torch.Tensor, heads: int, is_cross: bool, name: str) -> torch.Tensor:
        rows = probs.shape[0] // heads
        probs = probs.view(rows, heads, *probs.shape[1:])
        first = rows - N_BRANCHES * len(self.controllers)
        parts = [probs[:first]]
        for i, controller in enumerate(self.controllers):
            pair = probs[first + N_BRANCHES * i : first + N_BRANCHES * (i + 1)].reshape(-1, *probs.shape[2:])
            parts.append(controller(pair, heads, is_cross, name).view(N_BRANCHES, heads, *probs.shape[2:]))
        return torch.cat(parts).reshape(rows * heads, *probs.shape[2:])


# -- the processor ------------------------------------------------------------------------------
class P2PAttnProcessor:
    """A diffusers attention processor that computes attention probabilities explicitly so the
    controller can edit them. Self-attention the controller leaves alone goes through the
    layer's original processor (memory-efficient attention where the original has it)."""

    def __init__(self, controller: AttentionController | BatchController, original, name: str):
        self.controller = controller
        self.original = original
        self.name = name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        is_cross = encoder_hidden_states is not None
        queries = hidden_states.shape[2] * hidden_states.shape[3] if hidden_states.ndim == 4 else hidden_states.shape[1]
        if not is_cross and not self.controller.edits_self(queries) and not self.controller.record:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        query, key, value, attention_mask, restore = project(
            attn, hidden_states, encoder_hidden_states, attention_mask, temb
        )
        probs = attn.get_attention_scores(query, key, attention_mask)
        probs = self.controller(probs, attn.heads, is_cross, self.name)
        return restore(torch.bmm(probs, value))


@contextmanager
def controlled(unet, controller: AttentionController | BatchController):
    """Hook every attention layer of ``unet`` to ``controller``; restore the originals on exit."""
    originals = unet.attn_processors
    hooked = {name: P2PAttnProcessor(controller, proc, name) for name, proc in originals.items()}
    unet.set_attn_processor(hooked)
    try:
        yield controller
    finally:
        unet.set_attn_processor(dict(originals))  # set_attn_processor consumes the dict it is given


# -- local blend ----------------------------------------------------------------------------------
@dataclass
class LocalBlend:
    """Keep the target equal to the source outside the blend words' attention mask.

    ``words``: (2, L) 1 at the columns of the source words (row 0) and target words (row 1).
    After step index ``start`` and every later one, the mask is the union over both branches of
    the words' cross maps at the stored resolution nearest to latent size / 4 (16x16 at 512 px,
    the reference's choice), averaged over layers and steps so far, 3x3 max-pooled, resized to
    the latent, divided by its maximum, above ``threshold``.
    """

    words: torch.Tensor
    threshold: float = 0.3
    start: int = 0
    last_mask: torch.Tensor | None = None

    def mask(self, controller: AttentionController, size: tuple[int, int]) -> torch.Tensor:
        queries = min(controller.resolutions(), key=lambda q: (abs(q**0.5 - (size[0] * size[1]) ** 0.5 / 4), -q))
        maps = controller.average(queries)  # (2, h, w, L)
        maps = (maps * self.words.to(maps)[:, None, None, :]).sum(-1)[:, None]
        maps = F.max_pool2d(maps, 3, stride=1, padding=1)
        maps = F.interpolate(maps, size=size)
        maps = maps / maps.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
        return (maps > self.threshold).any(dim=0, keepdim=True)

    def __call__(self, latents: torch.Tensor, controller: AttentionController, index: int) -> torch.Tensor:
        if index < self.start:
            return latents
        self.last_mask = self.mask(controller, tuple(latents.shape[2:]))
        keep = self.last_mask.to(latents.dtype)
        source = latents[:1]
        return torch.cat([source, source + keep * (latents[1:] - source)])


# -- pictures -------------------------------------------------------------------------------------
def attention_picture(controller: AttentionController, tokenizer, prompts: tuple[str, str]) -> Image.Image:
    """Each token's cross-attention map averaged over steps and over every layer (maps of all
    resolutions resized to the largest), drawn by ``bench.diffusion.attention.figure``: one block of
    rows per prompt, full token labels, a colour bar."""
    sizes = controller.resolutions()
    top = grid_shape(sizes[0], controller.latent_hw)
    total, count = 0, 0
    for q in sizes:
        maps = controller.average(q).permute(0, 3, 1, 2)
        resized = F.interpolate(maps, size=top, mode="bilinear", align_corners=False)
        total = total + resized * controller.layers[q]
        count += controller.layers[q]
    maps = total / count  # (2, L, top, top)
    tokens = [[t.replace("</w>", "") for t in tokenizer.convert_ids_to_tokens(prompt_tokens(tokenizer, p))]
              for p in prompts]  # fmt: skip
    return figure_image(attention_figure(maps.float().cpu().numpy(), tokens))
