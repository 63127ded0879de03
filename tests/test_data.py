import json

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data import (
    EDIT_TYPES,
    DatasetSpec,
    decode_pie_mask,
    load_dataset,
    load_jsonl,
    load_pie_bench,
    prepare_image,
    prepare_mask,
)
from bench.errors import ConfigError, SampleError
from bench.paths import repo_root
from tests.helpers import write_dataset


def rle_encode(mask: np.ndarray) -> list[int]:
    """PIE-Bench's run-length format, written independently: [start, length, ...] of 1-runs."""
    flat = np.concatenate([[0], mask.reshape(-1).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[0::2], edges[1::2]
    return [int(v) for pair in zip(starts, ends - starts) for v in pair]


def random_blob_mask(seed: int, size: int = 512) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), dtype=np.uint8)
    for _ in range(3):
        y, x = rng.integers(0, size - 100, 2)
        h, w = rng.integers(10, 100, 2)
        mask[y : y + h, x : x + w] = 1
    return mask


def save_image(path, size=(512, 512), seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


# -- preprocessing ------------------------------------------------------------------------
def test_resize_shorter_side_then_centre_crop():
    img = np.zeros((100, 200, 3), dtype=np.uint8)
    img[:, 50:150] = 255  # the centre square is white, the sides black
    out = prepare_image(Image.fromarray(img), 64)
    assert out.shape == (3, 64, 64)
    assert out[:, :, 2:-2].min() > 0.99  # only the white centre survives the crop (bicubic blurs the edge)
    mask = np.zeros((100, 200), dtype=np.uint8)
    mask[:, 100:] = 1
    m = prepare_mask(mask, 64)
    assert set(m.unique().tolist()) == {0.0, 1.0}
    assert m[0, :, :32].sum() == 0 and m[0, :, 32:].min() == 1


# -- PIE-Bench ----------------------------------------------------------------------------
def test_pie_mask_decodes_against_an_independent_encoder():
    mask = random_blob_mask(1)
    decoded = decode_pie_mask(rle_encode(mask))
    expected = mask.copy()
    expected[0, :] = expected[-1, :] = expected[:, 0] = expected[:, -1] = 1  # PIE-Bench's border rule
    assert np.array_equal(decoded, expected)
    with pytest.raises(SampleError, match="odd number"):
        decode_pie_mask([0, 5, 7], "s1")


@pytest.fixture
def pie_folder(tmp_path):
    images = tmp_path / "annotation_images" / "0_random_140"
    images.mkdir(parents=True)
    mapping = {}
    for i in range(3):
        save_image(images / f"{i}.jpg", seed=i)
        mapping[f"00000000000{i}"] = {
            "image_path": f"0_random_140/{i}.jpg",
            "original_prompt": "a [cat] sitting on a wall",
            "editing_prompt": "a [dog] sitting on a wall",
            "editing_instruction": "Make the cat a dog",
            "editing_type_id": str(i),
            "blended_word": "cat dog",
            "mask": rle_encode(random_blob_mask(i)),
        }
    (tmp_path / "mapping_file.json").write_text(json.dumps(mapping))
    return tmp_path


def test_pie_bench_loader(pie_folder):
    refs = load_pie_bench(pie_folder)
    assert [r.edit_type for r in refs] == list(EDIT_TYPES[:3])
    sample = refs[1].load(128)
    assert sample.target_prompt == "a dog sitting on a wall"
    assert sample.source_prompt == "a cat sitting on a wall", "PIE-Bench strips brackets from both prompts"
    assert sample.edit_words == ("cat", "dog") and sample.instruction == "Make the cat a dog"
    assert sample.image.shape == (3, 128, 128) and sample.mask.shape == (1, 128, 128)
    full = decode_pie_mask(rle_encode(random_blob_mask(1)))
    assert torch.equal(sample.mask, prepare_mask(full, 128))


def test_pie_bench_bad_samples_name_themselves(pie_folder):
    mapping = json.loads((pie_folder / "mapping_file.json").read_text())
    mapping["000000000000"]["image_path"] = "../../etc/passwd"
    mapping["000000000001"]["original_prompt"] = ""
    mapping["000000000002"]["image_path"] = "0_random_140/missing.jpg"
    (pie_folder / "mapping_file.json").write_text(json.dumps(mapping))
    refs = load_pie_bench(pie_folder)
    with pytest.raises(SampleError, match="sample '000000000000': image path .* escapes the dataset folder"):
        refs[0].load(128)
    with pytest.raises(SampleError, match="sample '000000000001': missing required prompt 'original_prompt'"):
        refs[1].load(128)
    with pytest.raises(SampleError, match="sample '000000000002': image file not found"):
        refs[2].load(128)


# -- JSONL ------------------------------------------------------------------------------------
def write_manifest(folder, entries):
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(e if isinstance(e, str) else json.dumps(e) for e in entries) + "\n")
    return path


def test_jsonl_loader(tmp_path):
    (tmp_path / "img").mkdir()
    save_image(tmp_path / "img" / "a.png", size=(160, 120))
    Image.fromarray(np.full((120, 160), 255, dtype=np.uint8)).save(tmp_path / "img" / "a_mask.png")
    path = write_manifest(
        tmp_path,
        [
            {"id": "a", "image": "img/a.png", "mask": "img/a_mask.png", "source_prompt": "x", "target_prompt": "y",
             "edit_words": ["x", "y"], "edit_type": "change_color", "class_label": 3, "instruction": "make it y"},
            {"id": "b", "image": "img/a.png", "source_prompt": "x",
             "mask_shapes": [{"shape": "box", "box": [0, 0, 0.5, 1]}]},
        ],
    )  # fmt: skip
    a, b = (r.load(64) for r in load_jsonl(path))
    assert a.mask.min() == 1 and a.edit_words == ("x", "y") and a.class_label == 3 and a.instruction == "make it y"
    assert b.target_prompt is None and b.edit_type is None and b.instruction is None
    assert b.mask[0, :, :16].min() == 1 and b.mask[0, :, 48:].max() == 0


def test_jsonl_bad_samples_fail_alone(tmp_path):
    save_image(tmp_path / "a.png", size=(64, 64))
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(tmp_path / "small_mask.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    path = write_manifest(
        tmp_path,
        [
            {"id": "ok", "image": "a.png", "source_prompt": "x"},
            {"id": "escape", "image": "../a.png", "source_prompt": "x"},
            {"id": "unreadable", "image": "broken.png", "source_prompt": "x"},
            {"id": "mask", "image": "a.png", "mask": "small_mask.png", "source_prompt": "x"},
            {"id": "noprompt", "image": "a.png"},
            {"id": "badtype", "image": "a.png", "source_prompt": "x", "edit_type": "change_colour"},
            "{not json",
        ],
    )
    refs = load_jsonl(path)
    assert refs[0].load(64).id == "ok"
    messages = {
        "escape": "escapes the dataset folder",
        "unreadable": "cannot read image",
        "mask": r"mask size \(32, 32\) differs from image size \(64, 64\)",
        "noprompt": "missing required prompt 'source_prompt'",
        "badtype": r"unknown edit type 'change_colour' \(did you mean 'change_color'\?\)",
        "manifest.jsonl:7": "line 7 .* is not a JSON object",
    }
    for ref in refs[1:]:
        with pytest.raises(SampleError, match=rf"sample '{ref.id}': .*{messages[ref.id]}"):
            ref.load(64)


def test_duplicate_ids_are_a_config_error(tmp_path):
    path = write_manifest(tmp_path, [{"id": "a", "image": "a.png", "source_prompt": "x"}] * 2)
    with pytest.raises(ConfigError, match="appears more than once"):
        load_jsonl(path)


# -- the bundled set ----------------------------------------------------------------------
def test_bundled_sample_set_loads_offline():
    refs = load_dataset(DatasetSpec(name="sample"))
    assert len(refs) >= 6
    samples = [r.load(128) for r in refs]
    assert len({s.edit_type for s in samples}) >= 4
    for s in samples:
        assert s.source_prompt and s.target_prompt and s.instruction and s.edit_type in EDIT_TYPES
        assert s.image.shape == (3, 128, 128) and 0 <= s.image.min() and s.image.max() <= 1
        assert s.mask is not None and 0 < s.mask.mean() <= 1
        if s.edit_words:
            assert s.edit_words[0] in s.source_prompt.split() and s.edit_words[1] in s.target_prompt.split()


def test_dataset_filters_and_errors():
    assert len(load_dataset(DatasetSpec(name="sample", limit=2))) == 2
    some_type = load_dataset(DatasetSpec(name="sample"))[0].edit_type
    assert {r.edit_type for r in load_dataset(DatasetSpec(name="sample", edit_types=(some_type,)))} == {some_type}
    with pytest.raises(ConfigError, match=r"unknown dataset 'sampel' \(did you mean 'sample'\?\)"):
        load_dataset(DatasetSpec(name="sampel"))
    with pytest.raises(ConfigError, match="'/nonexistent': not found"):
        load_dataset(DatasetSpec(name=None, path="/nonexistent"))
    with pytest.raises(ConfigError, match="expected a PIE-Bench folder"):  # exists, but is neither
        load_dataset(DatasetSpec(name=None, path=str(repo_root())))


def test_dataset_is_given_by_the_one_key_meant(tmp_path):
    """``path`` alone (no ``name: null`` needed), ``name`` alone, or neither (the bundled set); both is an error."""
    from bench.execution.config import build_config

    data = write_dataset(tmp_path / "data", n=2)
    assert [r.id for r in load_dataset(DatasetSpec(path=data))] == ["img0", "img1"]
    config = build_config({"dataset": {"path": data}, "methods": {"reconstruct": {}}})
    assert config.dataset == DatasetSpec(name=None, path=data)
    assert DatasetSpec().name == "sample" and DatasetSpec(name="sample").path is None
    with pytest.raises(ConfigError, match="give 'name' .* or 'path', not both; got name 'sample' and path"):
        build_config({"dataset": {"name": "sample", "path": data}, "methods": {"reconstruct": {}}})
    swapped = build_config({"dataset": {"name": "sample"}, "methods": {"reconstruct": {}}},
                           ["dataset.name=", f"dataset.path={data}"])  # what the error suggests
    assert swapped.dataset == DatasetSpec(path=data)


# -- hostile input (issue 17) ---------------------------------------------------------------
def test_16_bit_images_are_scaled_by_their_range_and_unconvertible_ones_fail(tmp_path):
    grey = np.linspace(17000, 44000, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    Image.fromarray(grey.astype(np.float32)).save(tmp_path / "float.tif")
    Image.fromarray(grey.astype(np.int32) * 4).save(tmp_path / "i32.tif")
    entries = [{"id": n, "image": f, "source_prompt": "x"} for n, f in
               [("g16", "g16.png"), ("float", "float.tif"), ("i32", "i32.tif")]]  # fmt: skip
    g16, bad_float, bad_int = load_jsonl(write_manifest(tmp_path, entries))
    image = g16.load(64).image
    expected = torch.from_numpy(np.round(grey / 65535 * 255).astype(np.float32) / 255)
    assert image.max() < 0.7 and torch.equal(image, expected.expand(3, -1, -1))
    with pytest.raises(SampleError, match=r"sample 'float': image 'float.tif': image mode 'F' cannot be converted"):
        bad_float.load(64)
    with pytest.raises(SampleError, match="sample 'i32': .* exceed 16 bits"):
        bad_int.load(64)


def test_package_images_only_in_bundled_datasets_and_only_allow_listed(tmp_path, monkeypatch):
    import skimage.data

    called = []
    monkeypatch.setattr(skimage.data, "download_all", lambda *a, **k: called.append(a), raising=False)
    save_image(tmp_path / "a.png", size=(64, 64))
    path = write_manifest(tmp_path, [
        {"id": "sk", "image": "skimage:astronaut", "source_prompt": "x"},
        {"id": "mpl", "image": f"matplotlib:{tmp_path / 'a.png'}", "source_prompt": "x"},
        {"id": "dl", "image": "skimage:download_all", "source_prompt": "x"},
    ])  # fmt: skip
    for ref in load_jsonl(path):
        with pytest.raises(SampleError, match=rf"sample '{ref.id}': image .* allowed only in bundled datasets"):
            ref.load(64)
    for ref in load_jsonl(path, package_images=True)[1:]:  # as if a bundled card listed them
        with pytest.raises(SampleError, match=rf"sample '{ref.id}': package image .* is not allowed; allowed: "):
            ref.load(64)
    assert not called
    assert load_jsonl(path, package_images=True)[0].load(64).image.shape == (3, 64, 64)


def test_manifest_field_types_are_checked_when_read(tmp_path):
    save_image(tmp_path / "a.png", size=(64, 64))
    ok = {"image": "a.png", "source_prompt": "x"}
    bad = {
        "num_prompt": ({"source_prompt": 5}, r"field 'source_prompt' is 5 \(number\); expected a non-empty string"),
        "num_target": ({"target_prompt": 5}, r"field 'target_prompt' is 5 \(number\); expected a string or null"),
        "list_prompt": ({"source_prompt": ["a", "b"]}, r"field 'source_prompt' is \[\"a\", \"b\"\] \(list\)"),
        "num_words": ({"edit_words": 3}, r"field 'edit_words' is 3 \(number\); expected two words"),
        "num_shapes": ({"mask_shapes": 7}, r"field 'mask_shapes' is 7 \(number\); expected a list of \{shape"),
        "str_box": ({"mask_shapes": [{"shape": "box", "box": ["0", 0, 1, 1]}]}, r"field 'mask_shapes' is .* \(list\)"),
        "bool_label": ({"class_label": True}, r"field 'class_label' is true \(boolean\)"),
        "num_image": ({"image": 3}, r"field 'image' is 3 \(number\); expected a path"),
    }
    entries = [{"id": name, **ok, **fields} for name, (fields, _) in bad.items()] + [{"id": ["x"], **ok}]
    refs = load_jsonl(write_manifest(tmp_path, entries))
    for lineno, ref in enumerate(refs[:-1], 1):
        with pytest.raises(SampleError, match=rf"sample '{ref.id}': {bad[ref.id][1]}.*\(manifest.jsonl line {lineno}\)"):
            ref.load(64)
    with pytest.raises(SampleError, match=r"sample 'manifest.jsonl:9': field 'id' is \[\"x\"\] \(list\)"):
        refs[-1].load(64)


def test_pie_bench_field_types_are_checked(pie_folder):
    mapping = json.loads((pie_folder / "mapping_file.json").read_text())
    mapping["000000000000"]["editing_prompt"] = 5
    mapping["000000000001"]["mask"] = "1 2 3"
    (pie_folder / "mapping_file.json").write_text(json.dumps(mapping))
    refs = load_pie_bench(pie_folder)
    with pytest.raises(SampleError, match=r"'000000000000': field 'editing_prompt' is 5 \(number\).*mapping_file.json"):
        refs[0].load(128)
    with pytest.raises(SampleError, match=r"'000000000001': field 'mask' is \"1 2 3\" \(string\); expected a run-length"):
        refs[1].load(128)


def test_a_pie_mask_run_past_the_image_is_clipped_with_a_warning(pie_folder):
    mapping = json.loads((pie_folder / "mapping_file.json").read_text())
    mapping["000000000000"]["mask"] = [512 * 512 - 10, 25]
    (pie_folder / "mapping_file.json").write_text(json.dumps(mapping))
    clipped, fine = (r.load(128) for r in load_pie_bench(pie_folder)[:2])
    assert fine.warnings == ()
    (warning,) = clipped.warnings
    assert "sample '000000000000'" in warning and "15 pixels past the end" in warning and "clipped" in warning
    assert decode_pie_mask([512 * 512 - 10, 25])[-1].all()
