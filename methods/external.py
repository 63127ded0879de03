"""external: images made elsewhere (closed APIs, large instruction editors, other repositories), scored as cells.

Where the images come from (one of them per setting; a list sweeps, e.g. one folder per model):

- ``folder``: ``<folder>/<sample id>.<png|jpg|jpeg|webp>``;
- ``manifest``: a JSONL file of ``{"id": ..., "image": PATH}`` lines, paths relative to the
  manifest; an optional ``"setting"`` label per line picks one model's lines (``setting:``);
- ``hub``: a dataset of edited images (a local copy folder, or a hub id read from the Hugging
  Face cache), e.g. ``facebook/emu_edit_test_set_generations``: ``image_column`` holds the images,
  ``id_column`` the sample id, and ``setting_column`` (with ``setting:``) picks one model's rows.

Paths stay inside their folder (links are followed, then checked), as dataset images do. A sample
without an image is a skipped cell naming the file looked for; an unreadable, too large or
wrong-size image is a failed cell with the reason.

Size rule (recorded as a run label): an image of the source's prepared size (the run's resolution
squared, or the ``keep_aspect`` size) is used as is (it is already in editbench's frame); an image
with the source file's aspect ratio goes through the run's rule, as the source did (square:
shorter side to the resolution, bicubic, centre crop; keep_aspect: bicubic resize), so its pixels
line up with the source's; any other size fails the cell. Nothing is generated, so the cost
columns (time, GPU time, memory, NFE) are not measured: empty, never 0.
"""

import functools
import json
from pathlib import Path

import torch
from PIL import Image

from bench import Conformance, EditResult, Method, Param, register
from bench.data import inside_folder, open_image, prepare_image, to_eight_bit
from bench.samples import image_tensor
from bench.diffusion.families import TEXT_TO_IMAGE_FAMILIES
from bench.errors import ConfigError, SampleError
from bench.hub_data import image_cell
from bench.params import LOCAL, LOCAL_OR_HUB

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
MAX_PIXELS = 8192 * 8192  # larger files fail their cell before decoding (a decompression bomb)
SIZE_RULE = ("external images: an image of the source's prepared size is used as is; one with the source's aspect ratio "
             "is resized like the source (square: shorter side to the resolution, bicubic, centre crop; keep_aspect: "
             "bicubic resize); any other size fails its cell")  # fmt: skip
COST_LABEL = "external images: made elsewhere, so their time, GPU time, memory and NFE are not measured"
ASPECT_TOLERANCE = 0.01
SOURCES = ("folder", "manifest", "hub")
#: Each parameter and the sources it applies to.
OPTION_SOURCES = {"folder": ("folder",), "manifest": ("manifest",), "hub": ("hub",), "split": ("hub",),
                  "image_column": ("hub",), "id_column": ("hub",), "setting_column": ("hub",),
                  "setting": ("manifest", "hub")}  # fmt: skip


@functools.lru_cache(maxsize=16)
def _manifest_index(manifest: str, setting: str) -> dict[str, str]:
    """sample id -> image path (relative to the manifest) of the lines whose setting label is ``setting``."""
    path = Path(manifest).expanduser()
    index = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"external manifest {path} line {lineno}: not JSON ({exc})") from exc
        where = f"external manifest {path} line {lineno}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected an object {{\"id\": ..., \"image\": PATH}}, got {entry!r:.60}")
        if not isinstance(entry.get("id"), (str, int)) or isinstance(entry.get("id"), bool):
            raise ConfigError(f"{where}: \"id\" is {entry.get('id')!r:.60}; expected a string or an integer")
        if not isinstance(entry.get("image"), str):
            raise ConfigError(f"{where}: \"image\" is {entry.get('image')!r:.60}; expected a path (a string)")
        if str(entry.get("setting", "")) == setting:
            index[str(entry["id"])] = entry["image"]
    return index


@functools.lru_cache(maxsize=4)
def _hub_index(source: str, split: str, image_column: str, id_column: str, setting_column: str, setting: str):
    """(dataset, sample id -> row) of a dataset of edited images."""
    from bench.hub_data import open_split, undecoded

    dataset = open_split(source, split)
    wanted = [id_column] + [setting_column] * bool(setting)
    missing = [c for c in wanted + [image_column] if c not in dataset.column_names]
    if missing:
        raise ConfigError(f"external hub {source!r}: no column(s) {', '.join(missing)}; it has {', '.join(dataset.column_names)}")
    dataset = undecoded(dataset, [image_column])
    meta = dataset.select_columns(wanted).to_dict()
    rows = {}
    for row, value in enumerate(meta[id_column]):
        if not setting or str(meta[setting_column][row]) == setting:
            rows[str(value)] = row
    return dataset, rows


@register
class External(Method):
    name = "external"
    description = "images made elsewhere, read by sample id from a folder, a JSONL manifest or a dataset column"
    stochastic = False  # it reads the same file for every seed
    conformance = Conformance(
        exempt="it reads images made elsewhere and computes nothing: batching, NFE, determinism and precision are "
        "properties of the files, not of the method (tests/test_external.py checks reading them)"
    )
    measures_cost = False
    families = TEXT_TO_IMAGE_FAMILIES  # it only reads images at the backbone's resolution, whatever the family
    params = (
        Param("folder", str, "", "folder of <sample id>.png|.jpg|.jpeg|.webp images", path=LOCAL),
        Param("manifest", str, "", "JSONL of {id, image[, setting]} lines, image paths relative to the manifest",
              path=LOCAL),
        Param("hub", str, "", "a dataset of edited images: a local copy folder or a cached hub id", path=LOCAL_OR_HUB),
        Param("split", str, "test", "with hub: the split"),
        Param("image_column", str, "edited_image", "with hub: the column of edited images"),
        Param("id_column", str, "idx", "with hub: the column holding the sample id"),
        Param("setting_column", str, "model", "with hub: the column the setting label is matched against"),
        Param("setting", str, "", "with manifest or hub: only the images of this label (e.g. a model name)"),
    )

    @classmethod
    def check(cls, setting):
        given = [k for k in SOURCES if setting[k]]
        if len(given) != 1:
            raise ConfigError(f"method 'external': give exactly one of folder, manifest or hub; got {given or 'none'}")
        if setting["folder"] and not Path(setting["folder"]).expanduser().is_dir():
            raise ConfigError(f"method 'external': folder {setting['folder']!r} does not exist")
        if setting["manifest"] and not Path(setting["manifest"]).expanduser().is_file():
            raise ConfigError(f"method 'external': manifest {setting['manifest']!r} does not exist")
        if setting["manifest"]:  # a malformed line is a config error, before any run folder is made
            _manifest_index(setting["manifest"], setting["setting"])
        if setting["folder"] and setting["setting"]:
            raise ConfigError("method 'external': 'setting' picks lines of a manifest or hub; a folder holds one model")

    @classmethod
    def unused_params(cls, setting):
        """Only the options of the source the setting reads apply (``setting`` with a manifest or hub)."""
        source = next(k for k in SOURCES if setting[k])
        return frozenset(name for name, sources in OPTION_SOURCES.items() if source not in sources)

    @classmethod
    def missing(cls, sample, setting) -> list[str]:
        if setting["folder"]:
            folder = Path(setting["folder"]).expanduser()
            try:
                found = _folder_file(sample.id, folder)
            except SampleError:
                return []  # edit() fails the cell, saying the id escapes the folder
            if found is None:
                names = ", ".join(f"{sample.id}{ext}" for ext in EXTENSIONS)
                return [f"an output image (looked for {names} in {folder})"]
        elif setting["manifest"]:
            relative = _manifest_index(setting["manifest"], setting["setting"]).get(sample.id)
            if relative is None:
                label = f" with setting {setting['setting']!r}" if setting["setting"] else ""
                return [f"an output image (no line with id {sample.id!r}{label} in {setting['manifest']})"]
            path = Path(setting["manifest"]).expanduser().parent / relative
            if not path.exists():
                return [f"an output image ({path} does not exist)"]
        elif sample.id not in _hub_index(*cls._hub_key(setting))[1]:
            label = f" and {setting['setting_column']} {setting['setting']!r}" if setting["setting"] else ""
            return [f"an output image (no row with {setting['id_column']} {sample.id!r}{label} in {setting['hub']})"]
        return []

    @staticmethod
    def _hub_key(setting) -> tuple:
        return (setting["hub"], setting["split"], setting["image_column"], setting["id_column"], setting["setting_column"],
                setting["setting"])  # fmt: skip

    def edit(self, backbone, sample, prep, setting, generator):
        image = _fit(sample, self._read(sample.id, setting))
        return EditResult(image[None], labels=[SIZE_RULE, COST_LABEL])

    def _read(self, sample_id: str, setting) -> Image.Image:
        if setting["hub"]:
            dataset, rows = _hub_index(*self._hub_key(setting))
            return image_cell(sample_id, dataset[rows[sample_id]][setting["image_column"]], setting["image_column"])
        if setting["folder"]:
            path = _folder_file(sample_id, Path(setting["folder"]).expanduser())
        else:
            manifest = Path(setting["manifest"]).expanduser()
            relative = _manifest_index(setting["manifest"], setting["setting"])[sample_id]
            path = inside_folder(sample_id, manifest.parent, relative, "output image", "manifest's folder")
        try:  # the size from the header first, so an oversized file is never decoded
            with Image.open(path) as probe:
                width, height = probe.size
        except Exception as exc:
            raise SampleError(sample_id, f"cannot read output image {path}: {exc}") from exc
        if width * height > MAX_PIXELS:
            raise SampleError(sample_id, f"output image {path} is {width}x{height}, above {MAX_PIXELS} pixels")
        return to_eight_bit(sample_id, open_image(sample_id, path), f"output image {path}")


def _folder_file(sample_id: str, folder: Path) -> Path | None:
    """``<folder>/<sample id>.<ext>`` of the first extension present (links followed): the one path both
    looked for and read; ``SampleError`` when the id leads outside the folder (``../x``)."""
    for ext in EXTENSIONS:
        candidate = inside_folder(sample_id, folder, f"{sample_id}{ext}", "output image", "folder")
        if candidate.is_file():
            return candidate
    return None


def _fit(sample, img: Image.Image) -> torch.Tensor:
    """The outside image in the run's frame (the source's prepared size), by the size rule (module docstring)."""
    height, width = sample.image.shape[1:]
    if img.size == (width, height):
        return image_tensor(img.convert("RGB"))  # same size: no resampling
    source_w, source_h = sample.source_size or (width, height)
    if abs(img.size[0] / img.size[1] - source_w / source_h) > ASPECT_TOLERANCE * source_w / source_h:
        raise SampleError(sample.id, f"output image is {img.size[0]}x{img.size[1]}; expected {width}x{height} "
                                     f"or the source's aspect ratio ({source_w}x{source_h})")  # fmt: skip
    keep_aspect = width != height or abs(width / height - source_w / source_h) <= ASPECT_TOLERANCE * source_w / source_h
    if keep_aspect:  # no crop (a small keep_aspect frame's rounding to multiples may change the aspect ratio a lot)
        return image_tensor(img.convert("RGB").resize((width, height), Image.BICUBIC))
    return prepare_image(img, width)  # the square rule: shorter side, centre crop
