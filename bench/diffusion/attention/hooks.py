"""Attention and feature hooks for editors that denoise a source and a target branch together
(MasaCtrl, Plug-and-Play, pix2pix-zero).

Hooks go only through ``unet.set_attn_processor`` and forward hooks, and ``hooked`` puts the
UNet back exactly as it was (processors and hooks) when its block ends, whatever happens.

A ``HookedAttention`` processor hands a layer's query, key and value to a *control* object
with two methods: ``active(name)`` (False: the layer's original processor runs untouched, so a
control that never acts changes nothing, bit for bit) and ``attend(name, attn, query, key,
value, attention_mask)`` returning the attention output ``(batch*heads, queries, dim)``.

Batch rows alternate source, target: ``guided_eps`` on the two-row latent puts
``[uncond source, uncond target, cond source, cond target]`` through the UNet, so even rows
are sources and each odd row is the target of the row before it, with or without CFG.
"""

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from bench.diffusion.sampling import denoise, guided_eps

_SECTIONS = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}


def forward_order(name: str) -> tuple:
    """Sort key putting attention processor names in the order the UNet calls them
    (down blocks, mid block, up blocks; ``unet.attn_processors`` lists the mid block last)."""
    first, *rest = name.split(".")
    return (_SECTIONS.get(first, len(_SECTIONS)), *((0, int(p)) if p.isdigit() else (1, p) for p in rest))


def self_attention_layers(unet) -> list[str]:
    """Processor names of the self-attention layers (``attn1``), in forward order."""
    return sorted((n for n in unet.attn_processors if ".attn1." in n), key=forward_order)


def cross_attention_layers(unet) -> list[str]:
    """Processor names of the cross-attention layers (``attn2``), in forward order."""
    return sorted((n for n in unet.attn_processors if ".attn2." in n), key=forward_order)


def is_decoder(name: str) -> bool:
    return name.startswith("up_blocks.")


def hook_state(unet) -> tuple[dict, dict]:
    """What ``hooked`` must leave unchanged: the attention processors, and every module's
    forward and forward-pre hooks."""
    hooks = {
        name: (dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._forward_hooks_with_kwargs))
        for name, m in unet.named_modules()
    }
    return unet.attn_processors, hooks


@contextmanager
def hooked(unet, processors: dict | None = None, forward_hooks=()):
    """Install ``processors`` (layer name -> processor; other layers keep theirs) and
    ``forward_hooks`` ((module, hook) pairs); remove them all on exit, even after an error."""
    originals = unet.attn_processors
    handles = []
    try:
        unet.set_attn_processor({**originals, **(processors or {})})
        for module, hook in forward_hooks:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
        unet.set_attn_processor(dict(originals))  # set_attn_processor consumes the dict it is given


def hooked_layers(unet, names, control) -> dict:
    """``HookedAttention`` processors handing the layers ``names`` to ``control``."""
    originals = unet.attn_processors
    return {name: HookedAttention(originals[name], name, control) for name in names}


class HookedAttention:
    """A diffusers attention processor that lets a control compute the attention from the
    layer's query, key and value (head-batched, ``(batch*heads, tokens, dim)``)."""

    def __init__(self, original, name: str, control):
        self.original = original
        self.name = name
        self.control = control

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if not self.control.active(self.name):
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        query, key, value, attention_mask, restore = project(
            attn, hidden_states, encoder_hidden_states, attention_mask, temb
        )
        return restore(self.control.attend(self.name, attn, query, key, value, attention_mask))


def project(attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
    """What diffusers' ``AttnProcessor`` does before the attention itself: head-batched query,
    key and value ``(batch*heads, tokens, dim)``, the prepared mask, and ``restore(out)``, which
    does what it does after (output projection, shape, residual, rescaling)."""
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    shape = hidden_states.shape
    if hidden_states.ndim == 4:
        hidden_states = hidden_states.flatten(2).transpose(1, 2)
    is_cross = encoder_hidden_states is not None
    batch, length = (encoder_hidden_states if is_cross else hidden_states).shape[:2]
    attention_mask = attn.prepare_attention_mask(attention_mask, length, batch)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    context = encoder_hidden_states if is_cross else hidden_states
    if is_cross and attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    query = attn.head_to_batch_dim(attn.to_q(hidden_states))
    key = attn.head_to_batch_dim(attn.to_k(context))
    value = attn.head_to_batch_dim(attn.to_v(context))

    def restore(out: torch.Tensor) -> torch.Tensor:
        out = attn.to_out[1](attn.to_out[0](attn.batch_to_head_dim(out)))
        if len(shape) == 4:
            out = out.transpose(1, 2).reshape(shape)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    return query, key, value, attention_mask, restore


def attend(attn, query, key, value, attention_mask=None) -> torch.Tensor:
    """Plain attention ``softmax(q k^T * scale) v`` of head-batched tensors."""
    return torch.bmm(attn.get_attention_scores(query, key, attention_mask), value)


def by_row(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    """(batch*heads, n, d) -> (batch, heads, n, d)."""
    return tensor.view(tensor.shape[0] // heads, heads, *tensor.shape[1:])


def from_source(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    """A copy of a head-batched tensor in which every target row holds its source row's values."""
    rows = by_row(tensor, heads).clone()
    rows[1::2] = rows[0::2]
    return rows.view_as(tensor)


def two_branch_latents(backbone, z_T, cond, uncond, w: float, steps: int, on_eps=None, trajectory=None, on_step=None):
    """Denoise a source (row 0) and a target (row 1) together from ``z_T`` under CFG ``w``; (2, C, h, w).

    ``cond``: (2, L, D), one embedding per row. ``uncond(index)``: the null embedding(s) of
    step ``index``, (1 or 2, L, D). ``on_eps(index)`` runs before each step's UNet evaluation,
    ``on_step(step, latents)`` after each step. ``trajectory``: an ``Inversion`` whose path the
    source row is put back on after every step (direct inversion, as ``methods/p2p.py``).
    """
    scheduler = backbone.new_scheduler(steps)

    def eps(latent, t, index):
        if on_eps is not None:
            on_eps(index)
        return guided_eps(backbone, latent, t, cond, uncond(index), w)

    def after(step, latent):
        if trajectory is not None:
            latent = torch.cat([trajectory.pivot(step.index).to(latent.dtype), latent[1:]])
        if on_step is not None:
            on_step(step, latent)
        return latent

    return denoise(scheduler, z_T.expand(2, -1, -1, -1).clone(), scheduler.timesteps, eps, after_step=after)


def word_mask(maps: torch.Tensor, columns: list[int], size: tuple[int, int], threshold: float) -> torch.Tensor:
    """A binary (1, 1, *size) mask from (r, r, L) cross-attention maps: the maps of ``columns``
    summed, min-max normalised, resized (nearest) and thresholded."""
    word = maps[..., columns].sum(-1)
    word = (word - word.min()) / (word.max() - word.min()).clamp_min(1e-12)
    return (F.interpolate(word[None, None], size=size, mode="nearest") >= threshold).to(maps.dtype)
