"""Pixel fidelity metrics against the source: PSNR, SSIM, MSE, on [0, 1] images.

SSIM is implemented here rather than taken from torchmetrics, because torchmetrics changed its
definition in 1.4.2: up to 1.4.1 the mean skipped the 5-pixel border where the 11-pixel window
does not fit (the definition PIE-Bench's published numbers were computed with, and the one of
Wang et al. 2004 and scikit-image); from 1.4.2 it averages a reflect-padded border too. editbench
keeps the border-cropped definition whatever torchmetrics is installed.
"""

import torch

from bench.metrics.base import ImageMetric

SSIM_WINDOW = 11  # Gaussian window, pixels
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_BORDER = SSIM_WINDOW // 2  # pixels on each side where the window does not fit: left out of the mean


def mse(edited, source):
    """Per-image mean squared error over all pixels and channels, (B,)."""
    return (edited - source).pow(2).mean(dim=(1, 2, 3))


def psnr(edited, source):
    """Per-image PSNR (dB) of [0, 1] images, (B,)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return peak_signal_noise_ratio(edited, source, data_range=1.0, reduction="none", dim=(1, 2, 3))


def _gaussian_blur_valid(images: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter (window 11, sigma 1.5) over positions where the window fits:
    (B, C, H, W) -> (B, C, H - 10, W - 10)."""
    offsets = torch.arange(SSIM_WINDOW, dtype=images.dtype, device=images.device) - SSIM_BORDER
    weights = torch.exp(-(offsets**2) / (2 * SSIM_SIGMA**2))
    weights = weights / weights.sum()
    channels = images.shape[1]
    rows = torch.nn.functional.conv2d(images, weights.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return torch.nn.functional.conv2d(rows, weights.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def ssim_map(edited, source, data_range: float = 1.0):
    """SSIM at every position where the Gaussian window fits, (B, C, H - 10, W - 10).

    Wang et al. 2004 with a Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03 and population
    (not sample) covariances: torchmetrics up to 1.4.1 and scikit-image's
    ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``."""
    if min(edited.shape[-2:]) < SSIM_WINDOW:
        size = tuple(edited.shape[-2:])
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {size}")
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    stacked = torch.cat([edited, source, edited * edited, source * source, edited * source])
    mu_e, mu_s, e2, s2, es = _gaussian_blur_valid(stacked).chunk(5)
    var_e, var_s, cov = e2 - mu_e**2, s2 - mu_s**2, es - mu_e * mu_s
    return ((2 * mu_e * mu_s + c1) * (2 * cov + c2)) / ((mu_e**2 + mu_s**2 + c1) * (var_e + var_s + c2))


def ssim(edited, source):
    """Per-image SSIM of [0, 1] images: the mean of ``ssim_map`` over channels and positions, (B,)."""
    return ssim_map(edited, source).mean(dim=(1, 2, 3))


class PSNR(ImageMetric):
    name = "psnr"
    higher_is_better = True
    value_range = (0.0, float("inf"))
    description = "peak signal-to-noise ratio (dB) of edited vs source, on [0, 1] images (inf when identical)"

    def compute(self, edited, source, samples):
        return psnr(edited, source)


class SSIM(ImageMetric):
    name = "ssim"
    higher_is_better = True
    value_range = (-1.0, 1.0)
    description = (
        "structural similarity of edited vs source (Gaussian window 11, sigma 1.5, 5-pixel border left out "
        "as in torchmetrics <= 1.4.1 and PIE-Bench), on [0, 1] images"
    )

    def compute(self, edited, source, samples):
        return ssim(edited, source)


class MSE(ImageMetric):
    name = "mse"
    higher_is_better = False
    value_range = (0.0, 1.0)
    description = "mean squared error of edited vs source, on [0, 1] images"

    def compute(self, edited, source, samples):
        return mse(edited, source)


METRICS = (PSNR, SSIM, MSE)
