"""The one rule that turns pixel masks into latent masks, shared by every masked method.

A pixel mask (1 = region to edit) becomes a latent mask by max-pooling over each VAE cell
(``vae_factor`` x ``vae_factor`` pixels): a latent cell belongs to the edit region if any of
its pixels does, so the edit region never shrinks. Optional dilation grows it by whole
latent cells.
"""

import torch
import torch.nn.functional as F


def latent_mask(mask: torch.Tensor, vae_factor: int, dilation: int = 0) -> torch.Tensor:
    """(1, 1, H/f, W/f) {0, 1} latent edit mask from a (1, H, W) pixel edit mask."""
    m = F.max_pool2d(mask[None].float(), kernel_size=vae_factor, stride=vae_factor)
    if dilation:
        m = F.max_pool2d(m, kernel_size=2 * dilation + 1, stride=1, padding=dilation)
    return m


def latent_masks(backbone, rows, dilation: int = 0) -> torch.Tensor:
    """(B, 1, h, w) latent edit masks of a batch's rows (``EditRow``s whose samples have masks)."""
    return torch.cat([latent_mask(row.sample.mask, backbone.vae_factor, dilation) for row in rows])
