"""Write the GEdit-schema smoke fixture, ``datasets/gedit_bench/smoke_fixture/data/train-00000-of-00001.parquet``.

It is NOT GEdit-Bench: four of the bundled photos (scikit-image's and matplotlib's, as the ``sample``
set reads them) cropped to four aspect ratios, each with a hand-written instruction in English and
Chinese, laid out exactly as stepfun-ai/GEdit-Bench publishes its rows (columns task_type, key,
instruction, instruction_language, input_image, input_image_raw, Intersection_exist; images as
embedded JPEG bytes). ``configs/instruction_editors.yaml`` runs on it offline, through the code path
a local copy of GEdit-Bench takes (``dataset: {name: gedit_bench, path: ...}``, ``bench/hub_data.py``).

Deterministic: the same packages give the same bytes (``tests/test_gedit_fixture.py`` checks that the
committed file holds what this script makes). Run from the repository root:
``python scripts/make_gedit_fixture.py`` (``--out FOLDER`` writes elsewhere).
"""

import argparse
import io
from pathlib import Path

from PIL import Image

from bench.data import package_image

FIXTURE = Path("datasets/gedit_bench/smoke_fixture")
PARQUET = "data/train-00000-of-00001.parquet"

#: (key, bundled photo, crop box as fractions (left, top, right, bottom), aspect ratio (w, h), task type,
#: English and Chinese instruction, Intersection_exist). Four aspect ratios, none square.
ITEMS = [
    ("cat_3x2", "skimage:chelsea", (0.0, 0.0, 1.0, 1.0), (3, 2), "color_alter",
     "make the cat's fur black", "把猫的毛变成黑色", True),
    ("cup_16x9", "skimage:coffee", (0.0, 0.1, 1.0, 0.95), (16, 9), "material_alter",
     "make the cup glass", "把杯子变成玻璃的", False),
    ("portrait_3x4", "matplotlib:grace_hopper.jpg", (0.0, 0.0, 1.0, 1.0), (3, 4), "style_change",
     "turn the portrait into a pencil sketch", "把这张肖像变成铅笔素描", True),
    ("rocket_2x3", "skimage:rocket", (0.0, 0.0, 1.0, 1.0), (2, 3), "background_change",
     "replace the sky with a starry night sky", "把天空换成繁星点点的夜空", False),
]  # fmt: skip

#: Long side of ``input_image`` (what GEdit-Bench's scorer judges and models edit) and of ``input_image_raw``.
INPUT_SIDE, RAW_SIDE = 128, 192
JPEG_QUALITY = 85


def _crop(img: Image.Image, box: tuple, aspect: tuple[int, int]) -> Image.Image:
    """The fractional ``box`` of ``img``, then the largest centred part of it at ``aspect``."""
    w, h = img.size
    img = img.crop((round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h)))
    w, h = img.size
    cw, ch = min(w, h * aspect[0] // aspect[1]), min(h, w * aspect[1] // aspect[0])
    left, top = (w - cw) // 2, (h - ch) // 2
    return img.crop((left, top, left + cw, top + ch))


def _jpeg(img: Image.Image, long_side: int, aspect: tuple[int, int]) -> dict:
    """``img`` resized to ``long_side`` at exactly ``aspect`` (rounded), as a ``{bytes, path}`` image cell."""
    a, b = aspect
    size = (long_side, round(long_side * b / a)) if a >= b else (round(long_side * a / b), long_side)
    buffer = io.BytesIO()
    img.convert("RGB").resize(size, Image.BICUBIC).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return {"bytes": buffer.getvalue(), "path": None}


def fixture_rows() -> dict[str, list]:
    """The fixture's columns: every item once in English and once in Chinese (as GEdit-Bench pairs its keys)."""
    rows = {c: [] for c in ("task_type", "key", "instruction", "instruction_language", "input_image",
                            "input_image_raw", "Intersection_exist")}  # fmt: skip
    for language in ("en", "cn"):
        for key, ref, box, aspect, task, english, chinese, intersection in ITEMS:
            photo = _crop(package_image(key, ref), box, aspect)
            rows["task_type"].append(task)
            rows["key"].append(key)
            rows["instruction"].append(english if language == "en" else chinese)
            rows["instruction_language"].append(language)
            rows["input_image"].append(_jpeg(photo, INPUT_SIDE, aspect))
            rows["input_image_raw"].append(_jpeg(photo, RAW_SIDE, aspect))
            rows["Intersection_exist"].append(intersection)
    return rows


def write_fixture(folder: Path) -> Path:
    """Write the fixture's parquet under ``folder`` (GEdit-Bench's features); returns its path."""
    import datasets

    features = datasets.Features({
        "task_type": datasets.Value("string"), "key": datasets.Value("string"),
        "instruction": datasets.Value("string"), "instruction_language": datasets.Value("string"),
        "input_image": datasets.Image(), "input_image_raw": datasets.Image(),
        "Intersection_exist": datasets.Value("bool"),
    })  # fmt: skip
    path = Path(folder) / PARQUET
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.disable_progress_bars()
    datasets.Dataset.from_dict(fixture_rows(), features=features).to_parquet(str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIXTURE, help=f"folder to write (default {FIXTURE})")
    path = write_fixture(parser.parse_args().out)
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
