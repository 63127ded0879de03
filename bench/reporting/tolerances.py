"""How much worse a metric may get before ``compare`` calls it a regression: the threshold type
and the built-in per-metric tolerances.

The built-in values sit just above the noise of the environment, not of the method: the same
config run in bf16 instead of fp32, on another GPU or with another kernel version moves PSNR by
hundredths of a dB and SSIM or LPIPS in the fourth decimal. A threshold only excuses a change;
a change beyond it must still pass the paired test (``bench.reporting.compare``). This module
imports nothing heavy, so ``editbench compare -h`` can state the values.
"""

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Threshold:
    """How much worse a metric may get before it counts: ``max(abs, rel * |base mean|)``."""

    abs: float = 0.0
    rel: float = 0.0

    def allowed(self, base: float) -> float:
        return max(self.abs, self.rel * abs(base)) if math.isfinite(base) else self.abs

    def __str__(self) -> str:
        parts = ([f"{self.abs:g}"] if self.abs or not self.rel else []) + ([f"{self.rel:.0%}"] if self.rel else [])
        return " or ".join(parts)


#: Shared ok cells a setting needs before its time per cell is judged: fewer are timing noise.
MIN_TIMING_PAIRS = 10


def _family(names: tuple[str, ...], threshold: Threshold) -> dict[str, Threshold]:
    return dict.fromkeys(names, threshold)


#: Per metric; ``default`` is every metric not named (relative to the base mean).
DEFAULT_THRESHOLDS: dict[str, Threshold] = {
    **_family(("psnr", "psnr_bg", "psnr_bg_masked"), Threshold(abs=0.1)),  # dB
    **_family(("ssim", "ssim_bg", "ssim_bg_masked"), Threshold(abs=0.002)),
    **_family(("lpips", "lpips_bg", "lpips_bg_masked"), Threshold(abs=0.002)),
    **_family(("mse", "mse_bg", "mse_bg_masked", "structure_distance", "fid"), Threshold(rel=0.02)),
    **_family(("clip_score", "clip_score_edited"), Threshold(abs=0.1)),  # on CLIP score's 0..100 scale
    "clip_direction": Threshold(abs=0.005),
    "kid": Threshold(abs=0.001),
    "default": Threshold(rel=0.01),
}


def thresholds_text() -> str:
    """The built-in thresholds in one line, metrics sharing a value grouped (for ``compare -h``)."""
    groups: dict[str, list[str]] = {}
    for name, threshold in DEFAULT_THRESHOLDS.items():
        groups.setdefault(str(threshold), []).append(name)
    return "; ".join(f"{', '.join(names)}: {value}" for value, names in groups.items())
