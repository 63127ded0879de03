"""Samples and the dataset loaders: PIE-Bench, JSONL manifests, and the bundled ``sample`` set.

Preprocessing rule (images and masks alike): resize so the shorter side equals the backbone
resolution, then centre-crop to a square. Images use bicubic resampling with antialiasing
(PIL), masks nearest-neighbour, so a mask stays binary and aligned with its image.

Loaders return ``SampleRef``s: metadata that filtering needs, and a ``load`` that reads the
image and mask. A problem with one sample raises ``SampleError`` naming it when that sample
is loaded, so the runner records its cells as failed and goes on with the others.
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image, ImageDraw

from .errors import ConfigError, SampleError, unknown
from .paths import repo_root

EDIT_TYPES = (
    "random",
    "change_object",
    "add_object",
    "delete_object",
    "change_content",
    "change_pose",
    "change_color",
    "change_material",
    "change_background",
    "change_style",
)
PIE_MASK_SIZE = 512
DEFAULT_DATASET = "sample"


@dataclass
class Sample:
    """One editing sample at backbone resolution.

    ``image`` is (3, H, W) float in [0, 1]; ``mask`` is (1, H, W) in {0, 1} with 1 = region
    to edit; ``edit_words`` is (source word, target word) for attention blending.
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

    @property
    def image_hash(self) -> str:
        """sha256 of the image exactly as fed to the backbone (part of cache keys)."""
        data = (self.image * 255).round().to(torch.uint8).contiguous().numpy().tobytes()
        return hashlib.sha256(data + str(tuple(self.image.shape)).encode()).hexdigest()


@dataclass
class SampleRef:
    """A sample not yet loaded: its id and edit type (for filtering) and how to load it."""

    id: str
    edit_type: str | None
    _load: Callable[[int], Sample]

    def load(self, resolution: int) -> Sample:
        return self._load(resolution)


@dataclass(frozen=True)
class DatasetSpec:
    """Which dataset: a bundled ``name`` (``datasets/<name>/card.yaml``) or a ``path``
    (a PIE-Bench folder with ``mapping_file.json``, or a ``.jsonl`` manifest). Giving neither
    means the bundled ``sample`` set; giving both is an error."""

    name: str | None = None
    path: str | None = None
    limit: int | None = None
    edit_types: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.name is not None and self.path is not None:
            raise ConfigError(
                f"dataset: give 'name' (a bundled dataset) or 'path', not both; got name {self.name!r} and path "
                f"{self.path!r} (to swap a config's name for a path: --set dataset.name= --set dataset.path=...)"
            )
        if self.name is None and self.path is None:
            object.__setattr__(self, "name", DEFAULT_DATASET)
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise ConfigError(f"dataset.limit = {self.limit!r} is not allowed; expected a positive integer")
        for t in self.edit_types or ():
            if t not in EDIT_TYPES:
                raise ConfigError(unknown("dataset edit type", t, EDIT_TYPES))


# -- image preparation --------------------------------------------------------------------
def _resize_crop(img: Image.Image, size: int, resample) -> Image.Image:
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), resample=resample)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def prepare_image(img: Image.Image, size: int) -> torch.Tensor:
    """(3, size, size) float in [0, 1] by the documented resize-shorter-side + centre-crop rule."""
    img = _resize_crop(img.convert("RGB"), size, Image.BICUBIC)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def prepare_mask(mask: np.ndarray, size: int) -> torch.Tensor:
    """(1, size, size) {0, 1} float from a 2-D array (nonzero = edit region), same geometry as images."""
    img = Image.fromarray((mask > 0).astype(np.uint8) * 255)
    img = _resize_crop(img, size, Image.NEAREST)
    return torch.from_numpy((np.asarray(img) > 127).astype(np.float32))[None]


def _open_image(sample_id: str, path: Path) -> Image.Image:
    if not path.is_file():
        raise SampleError(sample_id, f"image file not found: {path}")
    try:
        img = Image.open(path)
        img.load()
    except Exception as exc:
        raise SampleError(sample_id, f"cannot read image {path}: {exc}") from exc
    return img


def _package_image(sample_id: str, ref: str) -> Image.Image:
    """Images that installed packages ship: ``skimage:<name>`` or ``matplotlib:<file>``."""
    package, _, name = ref.partition(":")
    try:
        if package == "skimage":
            import skimage.data

            array = getattr(skimage.data, name)()
            if isinstance(array, tuple):  # e.g. stereo_motorcycle: (left, right, disparity)
                array = array[0]
            return Image.fromarray(np.asarray(array))
        if package == "matplotlib":
            from matplotlib import cbook

            with cbook.get_sample_data(name) as f:
                img = Image.open(f)
                img.load()
            return img
    except Exception as exc:
        raise SampleError(sample_id, f"cannot load package image {ref!r}: {exc}") from exc
    raise SampleError(sample_id, f"unknown package image {ref!r}; expected skimage:<name> or matplotlib:<file>")


def _inside(sample_id: str, root: Path, relative: str, what: str) -> Path:
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise SampleError(sample_id, f"{what} path {relative!r} escapes the dataset folder {root}")
    return path


def _rasterise_shapes(sample_id: str, shapes: list, size: tuple[int, int]) -> np.ndarray:
    """Mask from shapes in fractions of the image's width and height (see the sample card)."""
    w, h = size
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for shape in shapes:
        kind, box = shape.get("shape"), shape.get("box")
        if kind not in ("box", "ellipse") or not (isinstance(box, list) and len(box) == 4):
            raise SampleError(sample_id, f"bad mask shape {shape!r}; expected {{shape: box|ellipse, box: [x0, y0, x1, y1]}}")
        xy = [box[0] * w, box[1] * h, box[2] * w, box[3] * h]
        (draw.rectangle if kind == "box" else draw.ellipse)(xy, fill=1)
    return np.asarray(canvas)


def _edit_words(sample_id: str, value) -> tuple[str, str] | None:
    if value in (None, "", []):
        return None
    words = value.split() if isinstance(value, str) else list(value)
    if len(words) != 2:
        raise SampleError(sample_id, f"edit words {value!r}: expected a source word and a target word")
    return (str(words[0]), str(words[1]))


def _check_edit_type(sample_id: str, edit_type):
    if edit_type is not None and edit_type not in EDIT_TYPES:
        raise SampleError(sample_id, unknown("edit type", edit_type, EDIT_TYPES))
    return edit_type


def _require_prompt(sample_id: str, entry: dict, key: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise SampleError(sample_id, f"missing required prompt {key!r}")
    return value


# -- JSONL manifests (and the bundled set) ----------------------------------------------
def load_jsonl(path: Path) -> list[SampleRef]:
    """One JSON object per line: ``id``, ``image`` (path relative to the manifest, or a
    package image), ``source_prompt``, optional ``target_prompt``, ``mask`` (image path) or
    ``mask_shapes``, ``edit_words``, ``edit_type``, ``class_label``, ``instruction``."""
    root = path.parent
    refs = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            refs.append(_broken_ref(f"{path.name}:{lineno}", f"line {lineno} of {path} is not a JSON object: {exc}"))
            continue
        sample_id = str(entry.get("id", f"{path.name}:{lineno}"))
        refs.append(SampleRef(sample_id, entry.get("edit_type"), _jsonl_loader(sample_id, entry, root)))
    return _unique(refs, path)


def _jsonl_loader(sample_id: str, entry: dict, root: Path) -> Callable[[int], Sample]:
    def load(size: int) -> Sample:
        source_prompt = _require_prompt(sample_id, entry, "source_prompt")
        if "image" not in entry:
            raise SampleError(sample_id, "missing required field 'image'")
        ref = str(entry["image"])
        if ref.startswith(("skimage:", "matplotlib:")):
            img = _package_image(sample_id, ref)
        else:
            img = _open_image(sample_id, _inside(sample_id, root, ref, "image"))
        mask = None
        if "mask" in entry:
            mask_img = _open_image(sample_id, _inside(sample_id, root, str(entry["mask"]), "mask"))
            if mask_img.size != img.size:
                raise SampleError(sample_id, f"mask size {mask_img.size} differs from image size {img.size}")
            mask = np.asarray(mask_img.convert("L"))
        elif "mask_shapes" in entry:
            mask = _rasterise_shapes(sample_id, entry["mask_shapes"], img.size)
        target = entry.get("target_prompt")
        return Sample(
            id=sample_id,
            image=prepare_image(img, size),
            source_prompt=source_prompt,
            target_prompt=target if target else None,
            mask=None if mask is None else prepare_mask(mask, size),
            edit_words=_edit_words(sample_id, entry.get("edit_words")),
            edit_type=_check_edit_type(sample_id, entry.get("edit_type")),
            class_label=entry.get("class_label"),
            instruction=entry.get("instruction") or None,
        )

    return load


# -- PIE-Bench -------------------------------------------------------------------------------
def decode_pie_mask(encoded: list[int], sample_id: str = "?", size: int = PIE_MASK_SIZE) -> np.ndarray:
    """PIE-Bench's run-length mask: ``[start, length, ...]`` over the row-major flattened
    ``size x size`` image, 1 = edit region. Like PIE-Bench's own decoder, the 1-pixel image
    border is set to 1 (kept for comparability with published numbers)."""
    if len(encoded) % 2:
        raise SampleError(sample_id, f"run-length mask has an odd number of entries ({len(encoded)})")
    flat = np.zeros(size * size, dtype=np.uint8)
    for start, length in zip(encoded[0::2], encoded[1::2]):
        if start < 0 or length < 0 or start >= size * size:
            raise SampleError(sample_id, f"run-length mask run ({start}, {length}) lies outside a {size}x{size} image")
        flat[start : start + length] = 1
    mask = flat.reshape(size, size)
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = 1
    return mask


def load_pie_bench(folder: Path) -> list[SampleRef]:
    """PIE-Bench layout: ``mapping_file.json`` + ``annotation_images/`` (see REFERENCE.md)."""
    mapping = json.loads((folder / "mapping_file.json").read_text())
    images = folder / "annotation_images"
    refs = []
    for sample_id, entry in mapping.items():
        type_id = entry.get("editing_type_id")
        try:
            edit_type = EDIT_TYPES[int(type_id)]
        except (TypeError, ValueError, IndexError):
            edit_type = None
        refs.append(SampleRef(sample_id, edit_type, _pie_loader(sample_id, entry, images, edit_type)))
    return refs


def _without_brackets(prompt: str) -> str:
    """PIE-Bench marks the words that differ between its prompts with ``[ ]``; its evaluation
    removes them from both prompts before use, and so do we."""
    return prompt.replace("[", "").replace("]", "")


def _pie_loader(sample_id: str, entry: dict, images: Path, edit_type) -> Callable[[int], Sample]:
    def load(size: int) -> Sample:
        if edit_type is None:
            raise SampleError(sample_id, f"editing_type_id {entry.get('editing_type_id')!r} is not one of 0..9")
        source_prompt = _without_brackets(_require_prompt(sample_id, entry, "original_prompt"))
        target_prompt = _without_brackets(_require_prompt(sample_id, entry, "editing_prompt"))
        img = _open_image(sample_id, _inside(sample_id, images, str(entry.get("image_path", "")), "image"))
        if img.size != (PIE_MASK_SIZE, PIE_MASK_SIZE):
            raise SampleError(sample_id, f"image is {img.size[0]}x{img.size[1]}; PIE-Bench masks need 512x512")
        mask = decode_pie_mask(entry.get("mask") or [], sample_id)
        return Sample(
            id=sample_id,
            image=prepare_image(img, size),
            source_prompt=source_prompt,
            target_prompt=target_prompt,
            mask=prepare_mask(mask, size),
            edit_words=_edit_words(sample_id, entry.get("blended_word")),
            edit_type=edit_type,
            instruction=entry.get("editing_instruction") or None,
        )

    return load


# -- dispatch ----------------------------------------------------------------------------------
def _broken_ref(sample_id: str, message: str) -> SampleRef:
    def fail(size: int) -> Sample:
        raise SampleError(sample_id, message)

    return SampleRef(sample_id, None, fail)


def _unique(refs: list[SampleRef], where: Path) -> list[SampleRef]:
    seen = set()
    for ref in refs:
        if ref.id in seen:
            raise ConfigError(f"dataset {where}: sample id {ref.id!r} appears more than once")
        seen.add(ref.id)
    return refs


def dataset_cards() -> dict[str, dict]:
    """Bundled dataset cards, ``datasets/<name>/card.yaml``, by name."""
    cards = {}
    for card in sorted((repo_root() / "datasets").glob("*/card.yaml")):
        info = yaml.safe_load(card.read_text()) or {}
        info["folder"] = str(card.parent)
        cards[card.parent.name] = info
    return cards


def load_dataset(spec: DatasetSpec) -> list[SampleRef]:
    """The spec's samples, filtered by edit type, then cut to ``limit``."""
    if spec.name is not None:
        cards = dataset_cards()
        if spec.name not in cards:
            raise ConfigError(unknown("dataset", spec.name, cards))
        card = cards[spec.name]
        refs = load_jsonl(Path(card["folder"]) / card["manifest"])
    else:
        path = Path(spec.path).expanduser()
        if path.is_dir() and (path / "mapping_file.json").is_file():
            refs = load_pie_bench(path)
        elif path.is_file() and path.suffix == ".jsonl":
            refs = load_jsonl(path)
        else:
            raise ConfigError(
                f"dataset path {str(path)!r}: expected a PIE-Bench folder (with mapping_file.json) or a .jsonl manifest"
            )
    if spec.edit_types:
        refs = [r for r in refs if r.edit_type in spec.edit_types]
    return refs[: spec.limit] if spec.limit else refs
