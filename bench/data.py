"""The dataset loaders: PIE-Bench, JSONL manifests, the bundled ``sample`` set, and (through
``bench.hub_data``) benchmarks on the Hugging Face hub; the dataset spec and its filters.

Samples and the preparation rule of their images (the dataset's resolution policy: by default
shorter side to the backbone resolution, centre crop) are ``bench.samples``; ``Sample``,
``SampleRef`` and the preparation functions are importable from here too, as the loaders use them.

Loaders return ``SampleRef``s: metadata that filtering needs, and a ``load`` that reads the
image and mask. A problem with one sample raises ``SampleError`` naming it when that sample
is loaded, so the runner records its cells as failed and goes on with the others.
"""

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw

from bench.errors import ConfigError, SampleError, unknown
from bench.fields import JSONL_FIELDS, PIE_FIELDS, field_error
from bench.paths import repo_root
from bench.samples import (ResolutionPolicy, Sample, SampleRef, prepare_image, prepare_mask, prepare_reference,
                           to_eight_bit)  # fmt: skip

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
#: The only package images a dataset may use, and only a bundled one (``datasets/<name>/card.yaml``):
#: ``skimage:<function of skimage.data>`` or ``matplotlib:<file in its sample data>``.
PACKAGE_IMAGES = frozenset({
    "skimage:astronaut", "skimage:chelsea", "skimage:coffee", "skimage:rocket", "skimage:stereo_motorcycle",
    "matplotlib:grace_hopper.jpg",
})  # fmt: skip
PACKAGE_PREFIXES = ("skimage:", "matplotlib:")


#: ``dataset.turns``: which turns of a multi-turn benchmark run, and what each edits (``DatasetSpec``).
TURNS = ("first", "independent", "iterative")
TURN_ALIASES = {"all": "independent"}  # the name ``independent`` had before chains existed
#: ``dataset.target_prompt_from``: the sample texts a missing target prompt may be taken from.
TARGET_PROMPT_SOURCES = ("instruction", "output_caption")


@dataclass(frozen=True)
class DatasetSpec:
    """Which dataset.

    - ``name``: a bundled card (``datasets/<name>/card.yaml``): the ``sample`` set, or a benchmark
      published on the Hugging Face hub (``bench.hub_data``), read from ``path`` when given (a local
      copy) or else from the Hugging Face cache;
    - ``hub``: a hub dataset id with a bundled card (the card is found by its id); ``split`` and
      ``revision`` override the card's; ``allow_download``: fetch it when it is not cached (never by default);
    - ``path`` alone: a PIE-Bench folder with ``mapping_file.json``, or a ``.jsonl`` manifest.

    Giving nothing means the bundled ``sample`` set. Filters, in this order: ``turns`` (multi-turn
    benchmarks: ``first`` turn only, the single-turn protocol; ``independent`` (alias ``all``):
    every turn, each edited from its recorded source; ``iterative``: every turn, and each chain
    also edited turn after turn from the method's own previous output, see
    ``bench.execution.chains``), ``where`` (a group's allowed values, e.g. ``{language: en}``),
    ``edit_types``, then ``limit`` (whole chains when ``iterative``). ``resolution_policy`` (``square``,
    ``keep_aspect`` or ``model``, or a mapping; ``bench.samples.ResolutionPolicy``) sets the size
    its images are prepared at; default the card's ``resolution_policy``, else ``square``.
    ``target_prompt_from`` (``instruction`` or ``output_caption``): a sample without a target prompt
    takes that text as its target prompt, so that text-guided editors (sdedit, p2p, flowedit) run
    on benchmarks that give only instructions (GEdit-Bench); its source prompt stays as the benchmark
    gives it (none: empty).
    """

    name: str | None = None
    path: str | None = None
    hub: str | None = None
    split: str | None = None
    revision: str | None = None
    allow_download: bool = False
    turns: str = "first"
    where: dict | None = None
    limit: int | None = None
    edit_types: tuple[str, ...] | None = None
    resolution_policy: str | dict | None = None
    target_prompt_from: str | None = None

    def __post_init__(self):
        card = self.card()
        self.policy()  # validates it
        if card is None and self.name is not None and self.path is not None:
            raise ConfigError(
                f"dataset: give 'name' (a bundled dataset) or 'path', not both; got name {self.name!r} and path "
                f"{self.path!r} (to swap a config's name for a path: --set dataset.name= --set dataset.path=...)"
            )
        if card is None and (self.split or self.revision or self.allow_download or self.where):
            raise ConfigError("dataset: split, revision, allow_download and where apply to hub benchmarks only "
                              "(give 'hub: ID' or the name of a hub card)")  # fmt: skip
        if self.revision is not None and self.path is not None:
            raise ConfigError(f"dataset.revision {self.revision!r} picks a version of the hub repository in the Hugging "
                              f"Face cache; dataset.path {self.path!r} is a local copy, read as it is: give one of them")  # fmt: skip
        if self.allow_download and self.path is not None:
            raise ConfigError(f"dataset.allow_download fetches the hub repository when it is not cached; dataset.path "
                              f"{self.path!r} is a local copy, never fetched: give one of them")  # fmt: skip
        if self.name is None and self.path is None and self.hub is None:
            object.__setattr__(self, "name", DEFAULT_DATASET)
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise ConfigError(f"dataset.limit = {self.limit!r} is not allowed; expected a positive integer")
        if not isinstance(self.allow_download, bool):
            raise ConfigError(f"dataset.allow_download = {self.allow_download!r}; expected true or false")
        if self.target_prompt_from not in (None, *TARGET_PROMPT_SOURCES):
            problem = unknown("text", self.target_prompt_from, TARGET_PROMPT_SOURCES)
            raise ConfigError(f"dataset.target_prompt_from: {problem}")
        object.__setattr__(self, "turns", TURN_ALIASES.get(self.turns, self.turns))
        if self.turns not in TURNS:
            raise ConfigError(f"dataset.turns: {unknown('turn rule', self.turns, TURNS)}")
        allowed = tuple(card.get("edit_types") or ()) if card else known_edit_types()  # a card without a list: any
        for t in self.edit_types or ():
            if allowed and t not in allowed:
                raise ConfigError(unknown("dataset edit type", t, allowed))
        if self.where is not None:
            groups = (card or {}).get("groups") or {}
            if not isinstance(self.where, dict):
                raise ConfigError(f"dataset.where = {self.where!r}; expected a mapping of group to value(s)")
            for group in self.where:
                if group not in groups:
                    raise ConfigError(f"dataset.where: {unknown('group', group, groups)}")

    def policy(self) -> ResolutionPolicy:
        """The resolution policy: this spec's, else its card's, else ``square``."""
        card = self.card() or dataset_cards().get(self.name) or {}
        value = self.resolution_policy if self.resolution_policy is not None else card.get("resolution_policy")
        return ResolutionPolicy.parse(value)

    def card(self) -> dict | None:
        """The bundled card of a hub benchmark this spec names (by ``name`` or ``hub``), else ``None``."""
        cards = dataset_cards()
        if self.hub is not None:
            found = [c for c in cards.values() if c.get("hub") == self.hub and c.get("format") == "hub"]
            if not found:
                hubs = [c["hub"] for c in cards.values() if c.get("format") == "hub"]
                raise ConfigError(f"dataset.hub {self.hub!r} has no bundled card; cards exist for {', '.join(hubs)}")
            return found[0]
        card = cards.get(self.name) if self.name is not None else None
        return card if card and card.get("format") in ("hub", "json_map") else None


def open_image(sample_id: str, path: Path, what: str = "image", allowed: str = "") -> Image.Image:
    """The decoded image at ``path``; ``SampleError`` naming ``what`` and the file when it is missing or
    unreadable (PIL's decompression-bomb limit included), followed by ``allowed`` when given."""
    allowed = f"; {allowed}" if allowed else ""
    if not path.is_file():
        raise SampleError(sample_id, f"{what} file not found: {path}{allowed}")
    try:
        img = Image.open(path)
        img.load()
    except Exception as exc:
        raise SampleError(sample_id, f"cannot read {what} {path}: {exc}{allowed}") from exc
    return img


def package_image(sample_id: str, ref: str) -> Image.Image:
    """An allow-listed image that an installed package ships (``PACKAGE_IMAGES``)."""
    if ref not in PACKAGE_IMAGES:
        raise SampleError(sample_id, f"package image {ref!r} is not allowed; allowed: {', '.join(sorted(PACKAGE_IMAGES))}")
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


def inside_folder(sample_id: str, root: Path, relative: str, what: str, kind: str = "dataset folder") -> Path:
    """``root / relative`` resolved (links followed); ``SampleError`` when it lies outside ``root``."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise SampleError(sample_id, f"{what} path {relative!r} escapes the {kind} {root}")
    return path


def _rasterise_shapes(sample_id: str, shapes: list, size: tuple[int, int]) -> np.ndarray:
    """Mask from shapes in fractions of the image's width and height (see the sample card)."""
    w, h = size
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for shape in shapes:  # types checked when the manifest was read (bench.fields)
        box = shape["box"]
        xy = [box[0] * w, box[1] * h, box[2] * w, box[3] * h]
        try:
            (draw.rectangle if shape["shape"] == "box" else draw.ellipse)(xy, fill=1)
        except ValueError as exc:  # e.g. x1 < x0
            raise SampleError(sample_id, f"mask shape {shape!r}: {exc}") from exc
    return np.asarray(canvas)


def _edit_words(value) -> tuple[str, str] | None:
    """(source word, target word) from a checked field: a list of two words or ``"source target"``."""
    words = value.split() if isinstance(value, str) else list(value or ())
    return (words[0], words[1]) if words else None


@functools.cache
def known_edit_types() -> tuple[str, ...]:
    """The edit types a manifest may name: PIE-Bench's, then those of each bundled card that
    says ``manifest_edit_types: true`` (GEdit-Bench's task types)."""
    cards = [t for card in dataset_cards().values() if card.get("manifest_edit_types") for t in card["edit_types"]]
    return tuple(dict.fromkeys([*EDIT_TYPES, *cards]))


def _check_edit_type(sample_id: str, edit_type):
    if edit_type is not None and edit_type not in known_edit_types():
        raise SampleError(sample_id, unknown("edit type", edit_type, known_edit_types()))
    return edit_type


# -- JSONL manifests (and the bundled set) ----------------------------------------------
def load_jsonl(path: Path, package_images: bool = False) -> list[SampleRef]:
    """One JSON object per line: ``id``, ``image`` (path relative to the manifest),
    ``source_prompt``, optional ``target_prompt``, ``mask`` (image path) or ``mask_shapes``,
    ``edit_words``, ``edit_type``, ``class_label``, ``instruction``, ``groups``, ``reference_images``
    (image paths). Every field's type is checked here; a bad
    line fails its own sample. ``package_images``: bundled cards only, allow ``PACKAGE_IMAGES``.

    A multi-turn line gives ``instructions`` (one per turn) and optionally ``target_prompts`` (as
    many): it becomes one sample per turn, ``<id>_<turn>`` of chain ``<id>``, each with its turn's
    instruction and target prompt; every turn's recorded source is the line's image, and every
    turn carries the line's reference images."""
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
        error = field_error(entry, JSONL_FIELDS)
        sample_id = str(entry["id"]) if JSONL_FIELDS["id"].check(entry.get("id")) else f"{path.name}:{lineno}"
        edit_type = entry.get("edit_type") if isinstance(entry.get("edit_type"), str) else None
        if error:
            refs.append(_broken_ref(sample_id, f"{error} ({path.name} line {lineno})", edit_type))
        elif "instructions" in entry:
            refs += _turn_refs(sample_id, entry, root, package_images, edit_type)
        else:
            groups = entry.get("groups") or {}
            load = _jsonl_loader(sample_id, entry, root, package_images)
            references = len(entry.get("reference_images", []))
            refs.append(SampleRef(sample_id, edit_type, load, groups, references=references))
    return _unique(refs, path)


def _turn_refs(chain: str, entry: dict, root: Path, package_images: bool, edit_type) -> list[SampleRef]:
    """The turns of a multi-turn line (``instructions``, optional ``target_prompts``), one sample each."""
    prompts = entry.get("target_prompts") or [entry.get("target_prompt")] * len(entry["instructions"])
    if len(prompts) != len(entry["instructions"]):
        n = len(entry["instructions"])
        return [_broken_ref(chain, f"target_prompts has {len(prompts)} entries for {n} instructions")]
    refs = []
    for turn, (instruction, prompt) in enumerate(zip(entry["instructions"], prompts), 1):
        sample_id = f"{chain}_{turn}"
        one = {k: v for k, v in entry.items() if k not in ("instructions", "target_prompts")}
        one.update(id=sample_id, instruction=instruction, target_prompt=prompt)
        load = _jsonl_loader(sample_id, one, root, package_images)
        refs.append(SampleRef(sample_id, edit_type, load, entry.get("groups") or {}, chain=chain, turn=turn,
                              references=len(entry.get("reference_images", []))))
    return refs


def _jsonl_loader(sample_id: str, entry: dict, root: Path, package_images: bool) -> Callable[[int], Sample]:
    def load(size: int) -> Sample:
        ref = entry["image"]
        if ref.startswith(PACKAGE_PREFIXES) and not package_images:
            raise SampleError(
                sample_id, f"image {ref!r}: package images are allowed only in bundled datasets; give a path inside {root}"
            )
        if ref.startswith(PACKAGE_PREFIXES):
            img = package_image(sample_id, ref)
        else:
            img = open_image(sample_id, inside_folder(sample_id, root, ref, "image"))
        img = to_eight_bit(sample_id, img, f"image {ref!r}")
        mask = None
        if "mask" in entry:
            mask_img = open_image(sample_id, inside_folder(sample_id, root, entry["mask"], "mask"))
            if mask_img.size != img.size:
                raise SampleError(sample_id, f"mask size {mask_img.size} differs from image size {img.size}")
            mask = np.asarray(mask_img.convert("L"))
        elif "mask_shapes" in entry:
            mask = _rasterise_shapes(sample_id, entry["mask_shapes"], img.size)
        target = entry.get("target_prompt")
        return Sample(
            id=sample_id,
            image=prepare_image(img, size),
            source_size=img.size,
            source_prompt=entry["source_prompt"],
            target_prompt=target if target else None,
            mask=None if mask is None else prepare_mask(mask, size),
            edit_words=_edit_words(entry.get("edit_words")),
            edit_type=_check_edit_type(sample_id, entry.get("edit_type")),
            class_label=entry.get("class_label"),
            instruction=entry.get("instruction") or None,
            explanation=entry.get("explanation") or None,
            target_image=_target_image(sample_id, root, entry.get("target_image"), size, img.size),
            groups=entry.get("groups") or {},
            reference_images=_reference_images(sample_id, root, entry.get("reference_images", []), size),
        )

    return load


def _target_image(sample_id: str, root: Path, ref: str | None, frame, source_size: tuple[int, int]):
    """A manifest line's ``target_image`` (a ground-truth or reference image) as a tensor brought to
    the source's frame, or None."""
    if ref is None:
        return None
    img = open_image(sample_id, inside_folder(sample_id, root, ref, "target_image"))
    return prepare_image(to_eight_bit(sample_id, img, f"target_image {ref!r}"), frame, like=source_size)


#: What a manifest's ``reference_images`` may hold, said when one of them cannot be read.
REFERENCES_ALLOWED = "reference_images lists image files PIL can read, by paths relative to the manifest"


def _reference_images(sample_id: str, root: Path, paths: list[str], frame) -> tuple:
    """A manifest line's ``reference_images`` as tensors, each at its own aspect ratio by the frame's
    reference rule (``bench.samples.Frame.reference_frame``); ``SampleError`` naming the file otherwise."""
    images = []
    for n, ref in enumerate(paths, 1):
        what = f"reference image {n}"
        img = open_image(sample_id, inside_folder(sample_id, root, ref, what), what, REFERENCES_ALLOWED)
        images.append(prepare_reference(to_eight_bit(sample_id, img, f"{what} {ref!r}"), frame))
    return tuple(images)


#: A JSON-map item's fields: a manifest line's, without the source prompt such benchmarks lack.
ITEM_FIELDS = {name: f for name, f in JSONL_FIELDS.items() if name != "source_prompt"}


def _manifest_items(card: dict, path: Path) -> list[tuple[str, object]]:
    """(key, item) of a card's manifest: a JSON object's entries, or, for a ``.jsonl`` file or a
    JSON list, each record keyed by its ``id`` column (the card's ``id: [column]``)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        records = json.loads(text)
        if isinstance(records, dict):
            return list(records.items())
    (column,) = card["id"]
    return [(str(r.get(column)) if isinstance(r, dict) else f"line {i + 1}", r) for i, r in enumerate(records)]


def _item_entry(card: dict, item: dict) -> dict:
    """A manifest line's fields from a JSON-map item: each card ``fields`` entry's item key (a list
    of keys: the first the item has, as RISEBench's ``reference`` or ``reference_txt``), and
    ``groups`` ``{flag: "true"}`` for each of the card's ``flags`` the item sets (present, not null
    or NaN, as RISEBench's ``pd.isna`` checks them) and each card ``groups`` entry ``{name: item key}``
    the item has (a list of names joined by spaces: KRIS-Bench's ``ori_img`` file names, which its
    temporal scorer reads the frame numbers from). A card mapping ``image`` and ``reference_images``
    to one key reads it as KRIS-Bench's ``ori_img``: one path (the source, no references) or a list
    of paths (the source first, then its reference images)."""
    entry = {}
    for field, columns in card["fields"].items():
        present = [c for c in ([columns] if isinstance(columns, str) else columns) if item.get(c) is not None]
        if present:
            entry[field] = item[present[0]]
    if entry.get("target_image") == "":  # KRIS-Bench's gt_img on the items without a ground truth
        del entry["target_image"]
    if card["fields"].get("reference_images") == card["fields"]["image"]:
        images = entry.pop("reference_images", None)
        if isinstance(images, list) and images:
            entry["image"], entry["reference_images"] = images[0], images[1:]
    groups = {flag: "true" for flag in card.get("flags", []) if _is_set(item.get(flag))}
    for name, key in (card.get("groups") or {}).items():
        value = item.get(key)
        if _is_set(value):
            groups[name] = " ".join(map(str, value)) if isinstance(value, list) else str(value)
    return entry | ({"groups": groups} if groups else {})


def _is_set(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def load_json_map(card: dict, folder) -> list[SampleRef]:
    """A benchmark published as JSON manifests of items, from its local copy ``folder``: the
    card's ``manifest`` file there (one JSON object ``{key: item}``, as ImgEdit-Bench's
    ``basic_edit.json``; or records keyed by the card's ``id`` column, a JSON list or ``.jsonl``,
    as GEditBench v2's ``metadata.jsonl``), images under ``folder`` by the path the card's
    ``image`` field names. A ``manifest`` naming ``{edit_type}`` is one file per edit type of the
    card (KRIS-Bench's ``<category>/annotation.json``): its items get that edit type, the id
    ``<edit type>/<key>`` and images under that file's folder. The card's ``fields`` map sample
    fields to item keys; each item is checked and loaded as a JSONL manifest line (no source prompt).
    ``id_with_edit_type``: ids ``<edit type>/<key>`` for one manifest too (RISEBench's results
    layout ``images/<category>/<index>.png``); ``flags``: see ``_item_entry``."""
    if folder is None:
        raise ConfigError(f"dataset {card['name']}: give its local copy as dataset.path, a folder with "
                          f"{card['manifest']} and the images it names")  # fmt: skip
    per_type = "{edit_type}" in card["manifest"]
    refs = []
    for edit_type in card["edit_types"] if per_type else [None]:
        path = Path(folder).expanduser() / card["manifest"].replace("{edit_type}", edit_type or "")
        if not path.is_file():
            raise ConfigError(f"dataset path {str(folder)!r}: no {path.relative_to(Path(folder).expanduser())} "
                              f"(the {card['name']} card's manifest)")  # fmt: skip
        for key, item in _manifest_items(card, path):
            entry = {"source_prompt": "", **(_item_entry(card, item) if isinstance(item, dict) else {}),
                     **({"edit_type": edit_type} if per_type else {})}  # fmt: skip
            kind = entry.get("edit_type") if isinstance(entry.get("edit_type"), str) else None
            prefixed = per_type or (card.get("id_with_edit_type") and kind)
            sample_id = entry["id"] = f"{kind}/{key}" if prefixed else str(key)
            error = field_error(entry, ITEM_FIELDS) if isinstance(item, dict) else "the item is not a JSON object"
            if error:
                refs.append(_broken_ref(sample_id, f"{error} ({path.name} item {key!r})", kind))
            else:
                load = _jsonl_loader(sample_id, entry, path.parent, False)
                references = len(entry.get("reference_images", []))
                refs.append(SampleRef(sample_id, kind, load, entry.get("groups") or {}, references=references))
    return _unique(refs, Path(folder).expanduser() / card["manifest"])


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
        flat[start : start + length] = 1  # a run past the end is clipped, as PIE-Bench's decoder does
    mask = flat.reshape(size, size)
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = 1
    return mask


def pie_mask_overflow(encoded: list[int], size: int = PIE_MASK_SIZE) -> int:
    """How many pixels the runs of a PIE-Bench mask reach past the end of the ``size x size`` image."""
    return sum(max(0, start + length - size * size) for start, length in zip(encoded[0::2], encoded[1::2]))


def load_pie_bench(folder: Path) -> list[SampleRef]:
    """PIE-Bench layout: ``mapping_file.json`` + ``annotation_images/`` (docs/REFERENCE.md, "PIE-Bench folder").
    Every entry's field types are checked here; a bad entry fails its own sample."""
    mapping = json.loads((folder / "mapping_file.json").read_text())
    images = folder / "annotation_images"
    refs = []
    for sample_id, entry in mapping.items():
        error = field_error(entry, PIE_FIELDS) if isinstance(entry, dict) else f"entry is not a JSON object: {entry!r:.60}"
        if error:
            refs.append(_broken_ref(sample_id, f"{error} (mapping_file.json)"))
            continue
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
        img = open_image(sample_id, inside_folder(sample_id, images, entry["image_path"], "image"))
        if img.size != (PIE_MASK_SIZE, PIE_MASK_SIZE):
            raise SampleError(sample_id, f"image is {img.size[0]}x{img.size[1]}; PIE-Bench masks need 512x512")
        img = to_eight_bit(sample_id, img, f"image {entry['image_path']!r}")
        encoded = entry.get("mask") or []
        mask = decode_pie_mask(encoded, sample_id)
        overflow = pie_mask_overflow(encoded)
        return Sample(
            id=sample_id,
            image=prepare_image(img, size),
            source_size=img.size,
            source_prompt=_without_brackets(entry["original_prompt"]),
            target_prompt=_without_brackets(entry["editing_prompt"]),
            mask=prepare_mask(mask, size),
            edit_words=_edit_words(entry.get("blended_word")),
            edit_type=edit_type,
            instruction=entry.get("editing_instruction") or None,
            warnings=(
                f"sample {sample_id!r}: its run-length mask reaches {overflow} pixels past the end of the "
                f"{PIE_MASK_SIZE}x{PIE_MASK_SIZE} image; clipped, as PIE-Bench's decoder does",
            ) if overflow else (),
        )

    return load


# -- dispatch ----------------------------------------------------------------------------------
def _broken_ref(sample_id: str, message: str, edit_type: str | None = None) -> SampleRef:
    def fail(size: int) -> Sample:
        raise SampleError(sample_id, message)

    return SampleRef(sample_id, edit_type, fail)


def _unique(refs: list[SampleRef], where: Path) -> list[SampleRef]:
    seen = set()
    for ref in refs:
        if ref.id in seen:
            raise ConfigError(f"dataset {where}: sample id {ref.id!r} appears more than once")
        seen.add(ref.id)
    return refs


def chains(refs: list[SampleRef]) -> list[list[SampleRef]]:
    """The samples grouped into chains (a sample without one is a chain of its own), each in turn
    order, the chains in the order of their first sample."""
    grouped: dict[str, list[SampleRef]] = {}
    for ref in refs:
        grouped.setdefault(ref.chain or ref.id, []).append(ref)
    return [sorted(chain, key=lambda r: r.turn or 0) for chain in grouped.values()]


def chained_turns(refs: list[SampleRef], turns: str) -> list[SampleRef]:
    """The samples that ``turns: iterative`` also edits from the method's previous output: every
    turn of a chain after its first (none for other rules)."""
    return [ref for chain in chains(refs) for ref in chain[1:]] if turns == "iterative" else []


def dataset_cards() -> dict[str, dict]:
    """Bundled dataset cards, ``datasets/<name>/card.yaml``, by name."""
    cards = {}
    for card in sorted((repo_root() / "datasets").glob("*/card.yaml")):
        info = yaml.safe_load(card.read_text()) or {}
        info["folder"] = str(card.parent)
        cards[card.parent.name] = info
    return cards


def load_dataset(spec: DatasetSpec) -> list[SampleRef]:
    """The spec's samples, filtered (turns, groups, edit type), then cut to ``limit`` (samples, or
    whole chains when ``turns: iterative``)."""
    card = spec.card()
    if card is not None and card["format"] == "json_map":
        refs = load_json_map(card, spec.path)
    elif card is not None:
        from bench.hub_data import load_hub_benchmark

        refs = load_hub_benchmark(card, spec)
    elif spec.name is not None:
        cards = dataset_cards()
        if spec.name not in cards:
            raise ConfigError(unknown("dataset", spec.name, cards))
        card = cards[spec.name]
        if card.get("format") == "preferences":
            raise ConfigError(f"dataset {spec.name!r} is a human-preference set, not samples to edit; score a judge "
                              f"on it with editbench judge-agreement --set {spec.name}")  # fmt: skip
        refs = load_jsonl(Path(card["folder"]) / card["manifest"], package_images=True)
    else:
        path = Path(spec.path).expanduser()
        if not path.exists():
            raise ConfigError(f"dataset path {str(path)!r}: not found")
        if path.is_dir() and (path / "mapping_file.json").is_file():
            refs = load_pie_bench(path)
        elif path.is_file() and path.suffix == ".jsonl":
            refs = load_jsonl(path)
        else:
            raise ConfigError(
                f"dataset path {str(path)!r}: expected a PIE-Bench folder (with mapping_file.json) or a .jsonl manifest"
                " (a local copy of a hub benchmark goes with its card: dataset: {name: CARD, path: ...})"
            )
    if spec.target_prompt_from:
        refs = [target_prompt_from(r, spec.target_prompt_from) for r in refs]
    if spec.turns == "first":
        refs = [r for r in refs if r.turn in (None, 1)]
    for group, allowed in (spec.where or {}).items():
        values = {str(v).lower() if isinstance(v, bool) else str(v) for v in (allowed if isinstance(allowed, list) else [allowed])}
        refs = _kept(refs, lambda r: r.groups.get(group) in values, f"dataset.where.{group}", values,
                     lambda r: r.groups.get(group))  # fmt: skip
    if spec.edit_types:
        refs = _kept(refs, lambda r: r.edit_type in spec.edit_types, "dataset.edit_types", spec.edit_types,
                     lambda r: r.edit_type)  # fmt: skip
    if spec.limit and spec.turns == "iterative":
        kept = set(list(dict.fromkeys(r.chain or r.id for r in refs))[: spec.limit])
        return [r for r in refs if (r.chain or r.id) in kept]
    return refs[: spec.limit] if spec.limit else refs


def target_prompt_from(ref: SampleRef, field: str) -> SampleRef:
    """``ref`` whose sample, when it has no target prompt, takes its ``field`` text as one."""
    load = ref._load

    def with_target(frame) -> Sample:
        sample = load(frame)
        if sample.target_prompt is None:
            sample.target_prompt = getattr(sample, field)
        return sample

    return replace(ref, _load=with_target)


def _kept(refs: list[SampleRef], keep: Callable, name: str, wanted, value_of: Callable) -> list[SampleRef]:
    """The refs a filter keeps; a ``ConfigError`` naming the filter and the values present when it keeps none."""
    kept = [r for r in refs if keep(r)]
    if refs and not kept:
        present = sorted({str(v) for r in refs if (v := value_of(r)) is not None})
        raise ConfigError(f"{name} = {', '.join(sorted(map(str, wanted)))} selects no samples: it matches none of "
                          f"the {len(refs)}; values present: {', '.join(present) or 'none'}")  # fmt: skip
    return kept
