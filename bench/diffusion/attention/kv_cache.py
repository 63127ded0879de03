"""KV-Edit's attention (Zhu et al., "KV-Edit: Training-Free Image Editing for Precise Background
Preservation", 2025) on FLUX.1: background image tokens' keys and values cached during the inversion
and reused while the edit denoises, in every double- and single-stream block.

During the inversion every block's image-token keys and values (the outputs of ``attn.to_k`` and
``attn.to_v``: image stream of a double-stream block; the image rows, after the text, of a
single-stream block) are recorded per step (``KVCache.recording``). While editing, each row's
background tokens (``background``, (B, N) bool) take their source's recorded keys and values at the
same step, and the attention logits of every query get ``+ scale`` on the background keys
(``KVCache.injecting``; the authors' ``attn_scale``, an additive mask of the attention). Their
``attn_mask`` option separates the two regions while recording: foreground and background image
tokens attend only to the text and to their own region, the text to everything
(``KVCache.recording(..., separate=background)``).

Where this follows the authors' code (``flux/modules/layers.py``: ``DoubleStreamBlock_kv``,
``SingleStreamBlock_kv``): they store the keys after the QK norm and replace them before RoPE; the
norm acts token by token, so replacing the projections before it is the same. They run only the
foreground tokens (and the text) through the transformer while editing; here every image token is
run and the background rows' keys and values are replaced in every block: a background token's
own output never reaches a foreground or text token except through its keys and values, which are
the cached ones, so the foreground's velocity is the same (and the background's is discarded by the
caller, as theirs is never computed). Records are kept on the CPU, as theirs, and moved to the
device at each use.

The processor goes in through diffusers' attention-processor API (``hooks.hooked``) and runs the
block's own ``FluxAttnProcessor``, with forward hooks on ``attn.to_k``/``attn.to_v`` for that call
only and the bias as its ``attention_mask``; an evaluation with nothing to do is the original
computation, bit for bit.
"""

from contextlib import contextmanager

import torch

from bench.diffusion.attention.hooks import hooked


def flux_attention_names(transformer) -> list[str]:
    """The processors of every double-stream, then every single-stream block."""
    return [f"{stack}.{i}.attn.processor" for stack in ("transformer_blocks", "single_transformer_blocks")
            for i in range(len(getattr(transformer, stack)))]  # fmt: skip


class KVCache:
    """What the processors do at the current evaluation (``at``: a step key; None: nothing).

    ``banks``: one per row, (step, layer) -> (keys, values), each (image tokens, inner) on the CPU;
    recording fills ``banks[0]`` from the last row of the batch (the conditional branch of a CFG batch).
    ``background``: (B, N) bool, the image tokens taken from the banks; ``scale``: the logit bias on them."""

    def __init__(self, banks: list[dict], record: bool, image_tokens: int, background=None, scale: float = 0.0):
        self.banks, self.record, self.image_tokens = banks, record, image_tokens
        self.background, self.scale, self.at = background, scale, None

    @classmethod
    def recording(cls, image_tokens: int, separate: torch.Tensor | None = None) -> "KVCache":
        """``separate``: (1, N) background tokens whose region the attention keeps apart from the foreground's."""
        return cls([{}], record=True, image_tokens=image_tokens, background=separate)

    @classmethod
    def injecting(cls, banks: list[dict], background: torch.Tensor, scale: float) -> "KVCache":
        return cls(banks, record=False, image_tokens=background.shape[1], background=background, scale=scale)

    def stored(self, layer: str, batch: int, which: int) -> torch.Tensor:
        """(batch, N, inner) keys (``which`` 0) or values (1) of every row's bank; a CFG batch repeats the rows."""
        return _whole_branches(torch.stack([bank[(self.at, layer)][which] for bank in self.banks]), batch)

    def replaced(self, batch: int) -> torch.Tensor:
        return _whole_branches(self.background, batch)[..., None]

    def separation(self, text_tokens: int, device) -> torch.Tensor | None:
        """(1, 1, S, S) bool, True where a query may attend: the text to all, an image token to the text and to
        its own region (the authors' ``create_attention_mask``); None without ``separate``."""
        if self.background is None:
            return None
        text = torch.zeros(1, text_tokens, dtype=torch.bool)
        is_text = torch.cat([~text, torch.zeros_like(self.background)], dim=1)[0]
        region = torch.cat([text, self.background], dim=1)[0]
        allowed = is_text[:, None] | is_text[None, :] | (region[:, None] == region[None, :])
        return allowed[None, None].to(device)

    def bias(self, text_tokens: int, batch: int, dtype, device) -> torch.Tensor | None:
        """(batch, 1, 1, text + N) additive logits: ``scale`` on background keys, 0 elsewhere; None at scale 0."""
        if self.scale == 0:
            return None
        background = _whole_branches(self.background, batch).to(device=device, dtype=dtype)
        text = torch.zeros(batch, text_tokens, device=device, dtype=dtype)
        return (torch.cat([text, background], dim=1) * self.scale)[:, None, None, :]


def _whole_branches(rows: torch.Tensor, batch: int) -> torch.Tensor:
    if batch % len(rows):
        raise RuntimeError(f"KV cache: a batch of {batch} rows is not whole branches of {len(rows)} rows")
    return rows.repeat(batch // len(rows), *([1] * (rows.dim() - 1)))


class CachedKVAttention:
    """Runs a FLUX block's original attention processor, recording or replacing its background keys and values."""

    def __init__(self, original, layer: str, cache: KVCache):
        self.original, self.layer, self.cache = original, layer, cache

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        cache = self.cache
        if cache.at is None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        first = hidden_states.shape[1] - cache.image_tokens  # single-stream blocks: the text comes first
        batch, calls = hidden_states.shape[0], []

        def hook(which: int):
            def record(module, inputs, output):
                calls.append(output[-1, first:].detach().to("cpu", copy=True))

            def inject(module, inputs, output):
                calls.append(which)
                stored = cache.stored(self.layer, batch, which).to(output)
                image = torch.where(cache.replaced(batch).to(output.device), stored, output[:, first:])
                return torch.cat([output[:, :first], image], dim=1)

            return record if cache.record else inject

        handles = [attn.to_k.register_forward_hook(hook(0)), attn.to_v.register_forward_hook(hook(1))]
        text = first + (0 if encoder_hidden_states is None else encoder_hidden_states.shape[1])
        if cache.record:
            attention_mask = cache.separation(text, hidden_states.device)
        else:
            attention_mask = cache.bias(text, batch, hidden_states.dtype, hidden_states.device)
        try:
            out = self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        finally:
            for handle in handles:
                handle.remove()
        if len(calls) != 2:
            raise RuntimeError(
                f"KV cache: {self.layer}'s processor {type(self.original).__name__} did not call attn.to_k and "
                "attn.to_v once each (a fused processor?); use diffusers' FluxAttnProcessor"
            )
        if cache.record:
            cache.banks[0][(cache.at, self.layer)] = tuple(calls)
        return out


@contextmanager
def caching_kv(transformer, cache: KVCache):
    """Install ``CachedKVAttention`` on every FLUX block; the original processors come back on exit."""
    originals = transformer.attn_processors
    names = flux_attention_names(transformer)
    with hooked(transformer, {name: CachedKVAttention(originals[name], name, cache) for name in names}):
        yield cache
