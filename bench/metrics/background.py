"""Background preservation: how much of the region outside the edit mask survived.

Two forms, named apart so that nobody mixes them up:

- ``*_bg`` is PIE-Bench's "unedit part": both images are multiplied by ``1 - mask`` and the
  metric runs over the whole image, so the zeroed edit region counts (it agrees perfectly
  and inflates the score). Use it to compare with PIE-Bench's published tables; like
  PIE-Bench's evaluation code, ``lpips_bg`` uses SqueezeNet (``metric_options.lpips_bg_net``).
- ``*_bg_masked`` averages over the unmasked pixels only: MSE and PSNR from the squared
  error there, SSIM and LPIPS from their per-pixel maps (SSIM's map where its window fits,
  i.e. without the 5-pixel border, like ``ssim``; LPIPS with ``spatial=True``, net
  ``metric_options.lpips_net``).

Both give NaN when the sample has no mask or its mask covers the whole image
(``ssim_bg_masked`` also when it keeps only pixels of that border).
"""

import torch

from bench.metrics.base import ImageMetric
from bench.metrics.options import Option, one_of
from bench.metrics.perceptual import LPIPS_NET, LPIPS_NETS, lpips_distance, lpips_network
from bench.metrics.pixel import SSIM_BORDER, mse, psnr, ssim, ssim_map

NAN_REASON = "the sample has no edit mask, or its edit mask covers the whole image"
LPIPS_BG_NET = Option("lpips_bg_net", str, "squeeze", "LPIPS network of lpips_bg (PIE-Bench's evaluation uses "
                      "SqueezeNet): alex, vgg or squeeze", one_of(LPIPS_NETS, "LPIPS network"))  # fmt: skip


def keep_weights(samples: list, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1, H, W) weights ``1 - mask`` and a (B,) bool: whether any pixel is kept."""
    keep = torch.zeros(like.shape[0], 1, *like.shape[2:], device=like.device)
    for i, sample in enumerate(samples):
        if sample.mask is not None:
            if tuple(sample.mask.shape[-2:]) != tuple(like.shape[2:]):
                raise ValueError(
                    f"sample {sample.id!r}: mask is {tuple(sample.mask.shape[-2:])}, image {tuple(like.shape[2:])}"
                )
            keep[i] = 1 - sample.mask.to(like.device)
    return keep, keep.flatten(1).sum(1) > 0


class _Background(ImageMetric):
    needs = frozenset({"mask"})
    nan_reason = NAN_REASON

    def compute(self, edited, source, samples):
        keep, defined = keep_weights(samples, edited)
        values = self.score(edited, source, keep)
        return torch.where(defined, values, torch.full_like(values, float("nan")))

    def score(self, edited, source, keep) -> torch.Tensor:
        raise NotImplementedError


class PSNRBackground(_Background):
    name = "psnr_bg"
    higher_is_better = True
    description = "PIE-Bench background PSNR: both images times (1 - mask), PSNR over the whole image"

    def score(self, edited, source, keep):
        return psnr(edited * keep, source * keep)


class MSEBackground(_Background):
    name = "mse_bg"
    higher_is_better = False
    value_range = (0.0, 1.0)
    description = "PIE-Bench background MSE: both images times (1 - mask), MSE over the whole image"

    def score(self, edited, source, keep):
        return mse(edited * keep, source * keep)


class SSIMBackground(_Background):
    name = "ssim_bg"
    higher_is_better = True
    value_range = (-1.0, 1.0)
    description = "PIE-Bench background SSIM: both images times (1 - mask), SSIM over the whole image"

    def score(self, edited, source, keep):
        return ssim(edited * keep, source * keep)


class LPIPSBackground(_Background):
    name = "lpips_bg"
    higher_is_better = False
    needs = frozenset({"mask", "pretrained weights"})
    options = (LPIPS_BG_NET,)
    description = "PIE-Bench background LPIPS: both images times (1 - mask), LPIPS (net lpips_bg_net, default squeeze)"

    def load(self, extractors):
        super().load(extractors)
        self.net = extractors.get(lpips_network, extractors.options.lpips_bg_net, False, metric=self.name)

    def score(self, edited, source, keep):
        return lpips_distance(self.net, edited * keep, source * keep)


def masked_mean(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of a (B, C, H, W) map over the kept pixels (all channels), (B,)."""
    weights = keep.expand_as(values)
    return (values * weights).flatten(1).sum(1) / weights.flatten(1).sum(1).clamp_min(1e-12)


class MSEMasked(_Background):
    name = "mse_bg_masked"
    higher_is_better = False
    value_range = (0.0, 1.0)
    description = "MSE of edited vs source over the unmasked pixels only"

    def score(self, edited, source, keep):
        return masked_mean((edited - source).pow(2), keep)


class PSNRMasked(_Background):
    name = "psnr_bg_masked"
    higher_is_better = True
    description = "PSNR (dB) of edited vs source over the unmasked pixels only"

    def score(self, edited, source, keep):
        return -10 * torch.log10(masked_mean((edited - source).pow(2), keep))


class SSIMMasked(_Background):
    name = "ssim_bg_masked"
    higher_is_better = True
    value_range = (-1.0, 1.0)
    description = "SSIM of edited vs source: the SSIM map (no border, as in ssim) averaged over the unmasked pixels"

    def score(self, edited, source, keep):
        inner = keep[..., SSIM_BORDER:-SSIM_BORDER, SSIM_BORDER:-SSIM_BORDER]  # where the SSIM map is defined
        values = masked_mean(ssim_map(edited, source), inner)
        return torch.where(inner.flatten(1).sum(1) > 0, values, torch.full_like(values, float("nan")))


class LPIPSMasked(_Background):
    name = "lpips_bg_masked"
    higher_is_better = False
    needs = frozenset({"mask", "pretrained weights"})
    options = (LPIPS_NET,)
    description = (
        "LPIPS of edited vs source: the spatial LPIPS map (net lpips_net) averaged over the unmasked pixels only"
    )

    def load(self, extractors):
        super().load(extractors)
        self.net = extractors.get(lpips_network, extractors.options.lpips_net, True, metric=self.name)

    def score(self, edited, source, keep):
        return masked_mean(lpips_distance(self.net, edited, source), keep)


METRICS = (PSNRBackground, LPIPSBackground, MSEBackground, SSIMBackground,
           PSNRMasked, LPIPSMasked, MSEMasked, SSIMMasked)  # fmt: skip
