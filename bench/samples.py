"""A sample and the preparation rule of its images: what every dataset loader produces.

Preprocessing rule (images and masks alike), set by the run's resolution policy
(``ResolutionPolicy``, resolved for a backbone into a ``Frame``):

- ``square`` (the default): resize so the shorter side equals the backbone resolution, then
  centre-crop to a square;
- ``keep_aspect``: resize, without cropping anything, to the size of the target area (default:
  the backbone resolution squared) at the image's aspect ratio, each side rounded to a multiple
  (default 16);
- ``model``: the backbone family's own rule (e.g. Qwen-Image-Edit: ~1024² area, multiples of 32;
  FLUX.1 Kontext: the preferred size of closest aspect ratio), or ``keep_aspect``'s defaults for a
  family without one.

Images use bicubic resampling with antialiasing (PIL), masks nearest-neighbour, so a mask stays
binary and aligned with its image; a ground-truth image is brought to its source's size, so an
edit, its source and its reference are compared at one size. Images of more than 8 bits per
channel are converted by their real range (``to_eight_bit``).

Reference images (``Sample.reference_images``: further input images of an editor that takes
several, e.g. Qwen-Image-Edit-2509's "Picture 2", FLUX.2's references) are conditioning images the
pipelines resize themselves, so nothing of them is ever cropped away: under every policy each is
resized to the frame's area (``square``: the side squared) at its own aspect ratio, sides rounded
to the frame's multiple (``Frame.reference_frame``; the manifest records the rule beside the
source's, ``Frame.to_dict``'s ``reference_rule``).

The loaders (``bench.data``: the bundled set, JSONL manifests, PIE-Bench; ``bench.hub_data``:
benchmarks on the Hugging Face hub) return ``SampleRef``s whose ``load`` gives a ``Sample``.
"""

import hashlib
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from PIL import Image

from bench.errors import ConfigError, SampleError, unknown


@dataclass
class Sample:
    """One editing sample at the size its run's ``Frame`` gives.

    ``image`` is (3, H, W) float in [0, 1]; ``mask`` is (1, H, W) in {0, 1} with 1 = region
    to edit; ``edit_words`` is (source word, target word) for attention blending;
    ``warnings`` are problems that loading worked around (the runner records them in the run), e.g. a
    source upscaled more than ``MAX_UPSCALE`` times; a blank (whitespace-only) text is no text, as ``""`` is;
    ``groups`` names the subsets the sample belongs to (GEdit-Bench: ``language`` en/cn,
    ``intersection`` true/false), kept per cell in the store for group-wise tables;
    ``reference_images`` are further input images, each (3, H, W) in [0, 1] at its own aspect ratio
    (the module doc's rule), read only by the methods that declare ``reads_references``.
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
    explanation: str | None = None  # what the right result is and why (KRIS-Bench's explain), for a judge prompt
    groups: dict[str, str] = field(default_factory=dict)  # further category columns, e.g. {"language": "en"}
    source_size: tuple[int, int] | None = None  # (width, height) of the source file before resizing
    warnings: tuple[str, ...] = ()
    reference_images: tuple[torch.Tensor, ...] = ()

    def __post_init__(self):
        for name in ("target_prompt", "instruction", "output_caption", "explanation"):  # a blank text is no text
            value = getattr(self, name)
            if isinstance(value, str) and not value.strip():
                setattr(self, name, None)
        if isinstance(self.source_prompt, str) and not self.source_prompt.strip():
            self.source_prompt = ""
        prepared = (self.image.shape[-1], self.image.shape[-2])
        warning = self.source_size and upscale_warning(self.id, self.source_size, prepared)
        if warning and warning not in self.warnings:
            self.warnings = (*self.warnings, warning)

    @property
    def image_hash(self) -> str:
        """sha256 of the images exactly as fed to the backbone (part of cache keys): the source, then
        each reference image, so samples that differ only in a reference never share a cache entry.
        Without references it is the source's alone, the key of every entry written before them."""
        data = b"".join(_image_bytes(image) for image in (self.image, *self.reference_images))
        return hashlib.sha256(data).hexdigest()


def _image_bytes(image: torch.Tensor) -> bytes:
    """An image's 8-bit pixels and its shape, as ``Sample.image_hash`` hashes them."""
    return (image * 255).round().to(torch.uint8).contiguous().numpy().tobytes() + str(tuple(image.shape)).encode()


@dataclass
class SampleRef:
    """A sample not yet loaded: its id, edit type and groups (for filtering and reports) and how to load it.

    A turn of a multi-turn benchmark also names its ``chain`` (the samples of one image edited
    turn after turn, e.g. MagicBrush's ``img_id``) and its ``turn`` (1 for the first).
    ``references``: how many reference images the sample carries, known before it is loaded (a run
    warns about the methods that would ignore them)."""

    id: str
    edit_type: str | None
    _load: Callable[[int], Sample]
    groups: dict[str, str] = field(default_factory=dict)
    chain: str | None = None
    turn: int | None = None
    references: int = 0

    def load(self, frame: "int | Frame") -> Sample:
        """The sample with its images prepared by ``frame`` (an int: the square rule at that side)."""
        return self._load(as_frame(frame))


RESOLUTION_MODES = ("square", "keep_aspect", "model")
ROUNDINGS = ("nearest", "floor", "ceil")
#: ``keep_aspect``'s default: each side a multiple of 16 (8x VAE x 2x2 patches of the FLUX and SD3 families).
DEFAULT_MULTIPLE = 16


@dataclass(frozen=True)
class Frame:
    """The size rule a sample's images are prepared by, resolved for one backbone (see the module doc).

    ``square``: shorter side to ``side``, centre crop. ``keep_aspect``: the size of ``area`` pixels
    at the image's aspect ratio, sides rounded (``rounding``) to multiples of ``multiple``; with
    ``grow`` false an image already smaller than ``area`` is only rounded, never enlarged; with
    ``choices`` ((W, H) sizes stated for ``choices_side``², e.g. FLUX.1 Kontext's preferred
    resolutions), the choice of closest aspect ratio, scaled to ``area``, is used instead.
    """

    mode: str = "square"
    side: int = 512
    area: int | None = None
    multiple: int = DEFAULT_MULTIPLE
    rounding: str = "nearest"
    grow: bool = True
    choices: tuple[tuple[int, int], ...] = ()
    choices_side: int = 1024

    def size_for(self, width: int, height: int) -> tuple[int, int]:
        """(W, H) of an image of ``width`` x ``height`` under this rule."""
        if self.mode == "square":
            return self.side, self.side
        area = self.pixels
        if self.choices:
            width, height = min(self.choices, key=lambda c: abs(c[0] / c[1] - width / height))
            scale = math.sqrt(area) / self.choices_side
        else:
            scale = math.sqrt(area / (width * height))
            if not self.grow:
                scale = min(scale, 1.0)
        return self._round(width * scale), self._round(height * scale)

    def _round(self, x: float) -> int:
        step = {"nearest": round, "floor": math.floor, "ceil": math.ceil}[self.rounding]
        return max(self.multiple, int(step(x / self.multiple)) * self.multiple)

    def describe(self) -> str:
        """The rule in words, for the manifest and reports."""
        if self.mode == "square":
            return f"square: shorter side to {self.side} px (bicubic), centre crop"
        area = self.pixels
        what = (f"the preferred size of closest aspect ratio ({len(self.choices)} stated at {self.choices_side}² px)"
                if self.choices else "the input's aspect ratio")  # fmt: skip
        grow = "" if self.grow or self.choices else ", smaller images not enlarged"
        return (f"keep_aspect: {what} at {area} px area{grow}, sides rounded ({self.rounding}) to multiples of "
                f"{self.multiple}, bicubic resize, nothing cropped")  # fmt: skip

    @property
    def pixels(self) -> int:
        """The pixel count this rule works at: its area, or its square's."""
        return self.area or self.side**2

    def reference_frame(self) -> "Frame":
        """The rule of a sample's reference images: this frame's area at each image's own aspect
        ratio, sides rounded to its multiple, nothing cropped (the pipelines resize them themselves)."""
        return replace(self, mode="keep_aspect", area=self.pixels, choices=())

    def to_dict(self) -> dict:
        """The rule as the manifest records it (``from_dict`` reads it back) with ``describe``'s text,
        and the reference images' rule (``reference_frame``) in words."""
        return {**asdict(self), "choices": [list(c) for c in self.choices], "rule": self.describe(),
                "reference_rule": f"reference images: {self.reference_frame().describe()}"}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict) -> "Frame":
        fields = {k: v for k, v in data.items() if k not in ("rule", "reference_rule")}
        return cls(**{**fields, "choices": tuple(tuple(c) for c in fields.get("choices", ()))})


def as_frame(size: "int | Frame") -> Frame:
    """A ``Frame``; an int is a square side (the rule before resolution policies existed)."""
    return size if isinstance(size, Frame) else Frame("square", side=int(size))


@dataclass(frozen=True)
class ResolutionPolicy:
    """The resolution policy of a run's dataset (``dataset.resolution_policy``): ``square`` (the
    default), ``keep_aspect`` (optional ``area`` in pixels, default the backbone resolution
    squared, and ``multiple``, default 16) or ``model`` (the backbone family's own rule). YAML
    takes the mode alone or a mapping, e.g. ``{mode: keep_aspect, area: 1048576, multiple: 32}``."""

    mode: str = "square"
    area: int | None = None
    multiple: int | None = None

    def __post_init__(self):
        if self.mode not in RESOLUTION_MODES:
            raise ConfigError(unknown("resolution policy", self.mode, RESOLUTION_MODES))
        if self.area is not None and (not isinstance(self.area, int) or self.area < 64 * 64):
            raise ConfigError(f"resolution_policy.area = {self.area!r}; expected pixels, an integer >= 4096")
        if self.multiple is not None and (not isinstance(self.multiple, int) or self.multiple < 8 or self.multiple % 8):
            raise ConfigError(f"resolution_policy.multiple = {self.multiple!r}; expected a multiple of 8 (16 or 32)")
        if self.mode != "keep_aspect" and (self.area or self.multiple):
            raise ConfigError(f"resolution_policy: area and multiple apply to keep_aspect only, not {self.mode!r}")

    @classmethod
    def parse(cls, value) -> "ResolutionPolicy":
        """From YAML: ``None`` (square), a mode name, a mapping or a ``ResolutionPolicy``."""
        if value is None or isinstance(value, cls):
            return value or cls()
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, dict):
            extra = set(value) - {"mode", "area", "multiple"}
            if extra:
                raise ConfigError(f"resolution_policy: unknown key(s) {', '.join(sorted(extra))}; expected mode, area, multiple")
            return cls(**value)
        raise ConfigError(f"resolution_policy = {value!r}; expected square, keep_aspect, model or a mapping")

    def frame(self, resolution: int, model_rule: dict | None = None) -> Frame:
        """The rule for a backbone of ``resolution`` whose family states ``model_rule`` (``Frame``
        fields; ``area`` and ``choices`` meant at ``resolution`` 1024, scaled to it)."""
        if self.mode == "square":
            return Frame("square", side=resolution)
        if self.mode == "keep_aspect":
            return Frame("keep_aspect", side=resolution, area=self.area or resolution**2,
                         multiple=self.multiple or DEFAULT_MULTIPLE)  # fmt: skip
        rule = dict(model_rule or {})
        area = rule.pop("area", 1024**2) * resolution**2 // 1024**2
        return Frame("keep_aspect", side=resolution, area=area, **rule)


def run_frames(manifest: dict) -> dict[str | None, Frame]:
    """The rule of each backbone of a run by its label (the store's ``backbone`` column), and
    under ``None`` the run's first backbone's (cells stored without a label): its manifest's
    ``images`` record, else (runs from before resolution policies) the square rule at its
    backbone's resolution."""
    frames = {label: Frame.from_dict(info["images"]) for label, info in manifest.get("backbones", {}).items()}
    first = (Frame.from_dict(manifest["images"]) if "images" in manifest
             else Frame("square", side=int(manifest["backbone"]["resolution"])))  # fmt: skip
    return {**frames, None: first}


def cell_frame(frames: "dict | Frame | int", backbone) -> Frame:
    """The size rule a cell's images were prepared by, from its ``backbone`` label (``frames``:
    ``run_frames``; a label missing or unknown: the run's first backbone's), or the one rule
    ``frames`` gives every cell (an int: the square rule at that side)."""
    if not isinstance(frames, dict):
        return as_frame(frames)
    return frames.get(backbone if isinstance(backbone, str) else None) or frames[None]


def _fit(img: Image.Image, frame: Frame, resample, like: tuple[int, int] | None = None) -> Image.Image:
    """``img`` under ``frame``: square resize + centre crop, or a plain resize to the size the rule
    gives ``like`` (the source's size; default the image's own)."""
    w, h = img.size
    if frame.mode != "square":
        return img.resize(frame.size_for(*(like or img.size)), resample=resample)
    size = frame.side
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), resample=resample)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


#: A source upscaled more than this many times (along either side) to the size it is worked at is warned about.
MAX_UPSCALE = 2


def upscale_warning(sample_id: str, source_size: tuple[int, int], prepared_size: tuple[int, int]) -> str | None:
    """A warning when the resolution policy blows a small source (e.g. 1x1) up to ``prepared_size``
    (width, height), else None."""
    (width, height), (out_width, out_height) = source_size, prepared_size
    factor = max(out_width / width, out_height / height)
    if factor <= MAX_UPSCALE:
        return None
    return (f"sample {sample_id!r}: its source image is {width}x{height}, upscaled {factor:.3g}x "
            f"to {out_width}x{out_height}; its edits and scores reflect the upscaling more than the method")


def image_tensor(img: Image.Image) -> torch.Tensor:
    """(3, H, W) float in [0, 1] of an 8-bit image as it is (torchvision's ``ToTensor`` of its RGB)."""
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def prepare_image(img: Image.Image, size: "int | Frame", like: tuple[int, int] | None = None) -> torch.Tensor:
    """(3, H, W) float in [0, 1] by the frame's rule (an int: the square rule at that side);
    ``like``: the source's (width, height), which a ground-truth image is brought to."""
    return image_tensor(_fit(img.convert("RGB"), as_frame(size), Image.BICUBIC, like))


def prepare_reference(img: Image.Image, size: "int | Frame") -> torch.Tensor:
    """A reference image, (3, H, W) float in [0, 1], by the frame's reference rule (``Frame.reference_frame``)."""
    return prepare_image(img, as_frame(size).reference_frame())


def prepare_mask(mask: np.ndarray, size: "int | Frame") -> torch.Tensor:
    """(1, H, W) {0, 1} float from a 2-D array (nonzero = edit region), same geometry as images."""
    img = Image.fromarray((mask > 0).astype(np.uint8) * 255)
    img = _fit(img, as_frame(size), Image.NEAREST)
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
