"""One conditioning tensor per prompt: a family's pooled text vector packed as one extra token.

SDXL and SD3 condition on a token sequence and a pooled vector. Packing the pooled vector
(zero-padded to the token width) as one token after the sequence keeps a conditioning one
(1, L + 1, D) tensor that caches, batches, expands and concatenates like SD's; the family's
``predict`` unpacks it before calling the denoiser.
"""

import torch
import torch.nn.functional as F


def pack_pooled(states: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """(B, L, D) token states and (B, P) pooled vectors (P <= D) -> (B, L + 1, D)."""
    width = states.shape[-1]
    if pooled.shape[-1] > width:
        raise ValueError(f"a pooled vector of width {pooled.shape[-1]} cannot be packed beside tokens of width {width}")
    return torch.cat([states, F.pad(pooled, (0, width - pooled.shape[-1]))[:, None]], dim=1)


def unpack_pooled(text: torch.Tensor, pooled_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (B, L, D) token states and (B, pooled_dim) pooled vectors of a packed conditioning."""
    return text[:, :-1], text[:, -1, :pooled_dim]
