"""A sample and the preparation rule of its images: what every dataset loader produces.

Preprocessing rule (images and masks alike): resize so the shorter side equals the backbone
resolution, then centre-crop to a square. Images use bicubic resampling with antialiasing
(PIL), masks nearest-neighbour, so a mask stays binary and aligned with its image. Images of
more than 8 bits per channel are converted by their real range (``to_eight_bit``).

The loaders (``bench.data``: the bundled set, JSONL manifests, PIE-Bench; ``bench.hub_data``:
benchmarks on the Hugging Face hub) return ``SampleRef``s whose ``load`` gives a ``Sample``.
"""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from bench.errors import SampleError


@dataclass
class Sample:
    """One editing sample at backbone resolution.

    ``image`` is (3, H, W) float in [0, 1]; ``mask`` is (1, H, W) in {0, 1} with 1 = region
    to edit; ``edit_words`` is (source word, target word) for attention blending;
    ``warnings`` are problems that loading worked around (the runner records them in the run), e.g. a
    source upscaled more than ``MAX_UPSCALE`` times; a blank (whitespace-only) text is no text, as ``""`` is;
    ``groups`` names the subsets the sample belongs to (GEdit-Bench: ``language`` en/cn,
    ``intersection`` true/false), kept per cell in the store for group-wise tables.
    """

    id: str
    image: torch.Tensor
    source_prompt: str
    target_prompt: str | None = None
    mask: torch.Tensor | None = None
    edit_words: tuple[str, str] | None = None
    edit_type: str | None = None
    class_label: int | str | None = None
    instruction: str | None = None  # an edit instruction ("make it a watercolor"), for InstructPix2Pix
    target_image: torch.Tensor | None = None  # the benchmark's ground-truth edit, (3, H, W) like ``image``
    target_original: torch.Tensor | None = None  # the same ground truth at its file's own size (MagicBrush's)
    output_caption: str | None = None  # a caption of the wanted result (Emu Edit's output_caption)
    groups: dict[str, str] = field(default_factory=dict)  # further category columns, e.g. {"language": "en"}
    source_size: tuple[int, int] | None = None  # (width, height) of the source file before resizing
    warnings: tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("target_prompt", "instruction", "output_caption"):  # a blank text is no text, as "" is
            value = getattr(self, name)
            if isinstance(value, str) and not value.strip():
                setattr(self, name, None)
        if isinstance(self.source_prompt, str) and not self.source_prompt.strip():
            self.source_prompt = ""
        warning = self.source_size and upscale_warning(self.id, self.source_size, self.image.shape[-1])
        if warning and warning not in self.warnings:
            self.warnings = (*self.warnings, warning)

    @property
    def image_hash(self) -> str:
        """sha256 of the image exactly as fed to the backbone (part of cache keys)."""
        data = (self.image * 255).round().to(torch.uint8).contiguous().numpy().tobytes()
        return hashlib.sha256(data + str(tuple(self.image.shape)).encode()).hexdigest()


@dataclass
class SampleRef:
    """A sample not yet loaded: its id, edit type and groups (for filtering and reports) and how to load it.

    A turn of a multi-turn benchmark also names its ``chain`` (the samples of one image edited
    turn after turn, e.g. MagicBrush's ``img_id``) and its ``turn`` (1 for the first)."""

    id: str
    edit_type: str | None
    _load: Callable[[int], Sample]
    groups: dict[str, str] = field(default_factory=dict)
    chain: str | None = None
    turn: int | None = None

    def load(self, resolution: int) -> Sample:
        return self._load(resolution)


def _resize_crop(img: Image.Image, size: int, resample) -> Image.Image:
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), resample=resample)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


#: A source upscaled more than this many times (shorter side) to the backbone resolution is warned about.
MAX_UPSCALE = 2


def upscale_warning(sample_id: str, source_size: tuple[int, int], size: int) -> str | None:
    """A warning when the preparation rule blows a small source (e.g. 1x1) up to ``size`` pixels, else None."""
    if min(source_size) * MAX_UPSCALE >= size:
        return None
    width, height = source_size
    return (f"sample {sample_id!r}: its source image is {width}x{height}, upscaled {size / min(source_size):.3g}x "
            f"to {size}x{size}; its edits and scores reflect the upscaling more than the method")


def image_tensor(img: Image.Image) -> torch.Tensor:
    """(3, H, W) float in [0, 1] of an 8-bit image as it is (torchvision's ``ToTensor`` of its RGB)."""
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def prepare_image(img: Image.Image, size: int) -> torch.Tensor:
    """(3, size, size) float in [0, 1] by the documented resize-shorter-side + centre-crop rule."""
    return image_tensor(_resize_crop(img.convert("RGB"), size, Image.BICUBIC))


def prepare_mask(mask: np.ndarray, size: int) -> torch.Tensor:
    """(1, size, size) {0, 1} float from a 2-D array (nonzero = edit region), same geometry as images."""
    img = Image.fromarray((mask > 0).astype(np.uint8) * 255)
    img = _resize_crop(img, size, Image.NEAREST)
    return torch.from_numpy((np.asarray(img) > 127).astype(np.float32))[None]


#: PIL modes of 8 bits per channel, which ``convert("RGB")`` turns into RGB faithfully.
EIGHT_BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")
SIXTEEN_BIT_MAX = 65535


def to_eight_bit(sample_id: str, img: Image.Image, where: str) -> Image.Image:
    """``img`` with 8 bits per channel, converted by its real range, never clipped.

    16-bit greyscale (PIL's ``I;16*``, and ``I`` holding values in 0..65535, as some 16-bit
    files open) is scaled by 255/65535 and rounded. Modes whose range cannot be known (32-bit
    float ``F``, ``I`` outside 0..65535, ...) fail the sample instead of being guessed at.
    """
    if img.mode in EIGHT_BIT_MODES:
        return img
    if img.mode.startswith("I;16") or img.mode == "I":
        values = np.asarray(img)
        if values.min() < 0 or values.max() > SIXTEEN_BIT_MAX:
            raise SampleError(sample_id, f"{where}: 32-bit integer values {values.min()}..{values.max()} exceed 16 bits; "
                              "save it as 8- or 16-bit")  # fmt: skip
        return Image.fromarray((values.astype(np.float64) * (255 / SIXTEEN_BIT_MAX)).round().astype(np.uint8), "L")
    raise SampleError(
        sample_id,
        f"{where}: image mode {img.mode!r} cannot be converted to 8-bit faithfully; accepted: 8-bit "
        f"({', '.join(EIGHT_BIT_MODES)}) and 16-bit greyscale",
    )
