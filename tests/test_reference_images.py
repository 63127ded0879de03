"""Reference images carried by samples (issue 35): further input images of the editors that take
several (Qwen-Image-Edit-2509's "Picture 2", FLUX.2's references). They are read from JSONL manifests
and hub columns, prepared at their own aspect ratio without cropping, part of every key on a
sample's inputs, passed after the source by the methods that read them, and a method that does not
read them is warned about, once per method."""

import hashlib
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data import DatasetSpec, load_dataset
from bench.errors import SampleError
from bench.method import EditRow, Method
from bench.registry import get_method
from bench.samples import Frame, Sample, image_tensor, prepare_image
from tests.helpers import hub_fixture, read_cells, write_dataset

TOLERANCE = 1e-4


def _photo(width: int, height: int, seed: int) -> Image.Image:
    """A smooth picture (random 4x4 colours, bicubic), so a VAE sees structure."""
    small = np.random.default_rng(seed).integers(0, 255, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.BICUBIC)


def _with_references(folder, extra=()) -> str:
    """A manifest of two photos (img0, img1) and ``ref`` (img0's photo with a tall and a wide reference)."""
    data = write_dataset(folder, n=2, extra=[
        {"id": "ref", "image": "img0.png", "source_prompt": "a cat", "instruction": "put the hat on the cat",
         "reference_images": ["tall.png", "wide.png"]}, *extra,
    ])  # fmt: skip
    _photo(48, 112, 1).save(folder / "tall.png")
    _photo(160, 80, 2).save(folder / "wide.png")
    return data


def test_a_manifest_line_carries_its_references_each_at_its_own_aspect_ratio_uncropped(tmp_path):
    refs = {r.id: r for r in load_dataset(DatasetSpec(path=_with_references(tmp_path / "data")))}
    assert refs["ref"].references == 2 and refs["img0"].references == 0  # known before loading
    for frame in (Frame("square", side=64), Frame("keep_aspect", side=64, area=64 * 64, multiple=16)):
        sample = refs["ref"].load(frame)
        tall, wide = sample.reference_images
        assert tall.shape == (3, 96, 48) and wide.shape == (3, 48, 96)  # 64² px area, sides of 16, nothing cropped
        whole = image_tensor(Image.open(tmp_path / "data" / "wide.png").resize((96, 48), Image.BICUBIC))
        assert torch.equal(wide, whole)
        assert torch.equal(sample.image, refs["img0"].load(frame).image)  # the source is prepared as before
    assert refs["img0"].load(64).reference_images == ()
    rule = Frame("square", side=64).to_dict()
    assert rule["reference_rule"] == ("reference images: keep_aspect: the input's aspect ratio at 4096 px area, sides "
                                      "rounded (nearest) to multiples of 16, bicubic resize, nothing cropped")  # fmt: skip
    assert Frame.from_dict(rule) == Frame("square", side=64)


def test_references_are_part_of_the_image_hash_and_the_cache_keys():
    from bench.diffusion.inversion.spec import cache_fields

    source, one, other = (image_tensor(_photo(64, 48, seed)) for seed in (0, 1, 2))
    plain = Sample("a", source, "a cat")
    data = (source * 255).round().to(torch.uint8).contiguous().numpy().tobytes()
    assert plain.image_hash == hashlib.sha256(data + str((3, 48, 64)).encode()).hexdigest()  # as before references
    variants = [(), (one,), (other,), (one, other)]
    hashes = {Sample("a", source, "a cat", reference_images=refs).image_hash for refs in variants}
    assert len(hashes) == 4
    backbone = SimpleNamespace(fingerprint_id="tiny")
    samples = [Sample("a", source, "a cat", reference_images=(r,)) for r in (one, other)]
    keys = [cache_fields(backbone, sample, 10, "ddim", {}) for sample in samples]
    assert keys[0] != keys[1]


def test_a_missing_or_mistyped_reference_fails_its_sample_naming_the_file_and_what_is_allowed(tmp_path):
    folder = tmp_path / "data"
    data = _with_references(folder, extra=[
        {"id": "gone", "image": "img1.png", "source_prompt": "a cat", "reference_images": ["wide.png", "gone.png"]},
        {"id": "typed", "image": "img1.png", "source_prompt": "a cat", "reference_images": "wide.png"},
        {"id": "broken", "image": "img1.png", "source_prompt": "a cat", "reference_images": ["manifest.jsonl"]},
    ])  # fmt: skip
    refs = {r.id: r for r in load_dataset(DatasetSpec(path=data))}
    allowed = "reference_images lists image files PIL can read, by paths relative to the manifest"
    with pytest.raises(SampleError) as missing:
        refs["gone"].load(64)
    assert str(missing.value) == f"sample 'gone': reference image 2 file not found: {folder / 'gone.png'}; {allowed}"
    with pytest.raises(SampleError) as broken:
        refs["broken"].load(64)
    assert str(broken.value).startswith(f"sample 'broken': cannot read reference image 1 {folder / 'manifest.jsonl'}: ")
    assert str(broken.value).endswith(f"; {allowed}")
    with pytest.raises(SampleError) as typed:
        refs["typed"].load(64)
    assert str(typed.value) == ("sample 'typed': field 'reference_images' is \"wide.png\" (string); expected a list of "
                                "paths relative to the manifest (non-empty strings): further input images, e.g. "
                                "Qwen-Image-Edit-2509's Picture 2, FLUX.2's references (manifest.jsonl line 5)")  # fmt: skip


def test_a_run_fails_only_the_bad_samples_and_warns_once_per_method_that_ignores_references(tmp_path, backbone):
    from bench.execution.config import build_config
    from bench.execution.plan import dry_run_text
    from bench.execution.runner import Runner
    from bench.store import Store

    data = _with_references(tmp_path / "data", extra=[
        {"id": "gone", "image": "img1.png", "source_prompt": "a cat", "reference_images": ["gone.png"]},
    ])  # fmt: skip
    warning = ("reconstruct: 2 of the 4 samples carry reference images, which reconstruct does not read; it edits "
               "them from their source alone")  # fmt: skip
    both = {"reconstruct": {}, "flux2": {"backbone": "tiny-flux2-klein"}}  # flux2 reads them: no warning
    listing = dry_run_text(build_config({"dataset": {"path": data}, "methods": both}))
    assert listing.count("warning: ") == 1 and f"warning: {warning}" in listing
    config = build_config({"dataset": {"path": data}, "methods": {"reconstruct": {}}, "metrics": []})
    (tmp_path / "run").mkdir()
    for _ in range(2):  # a resume records the warning once
        Runner(config, tmp_path / "run", backbone=backbone, progress=False).run()
    store = Store(tmp_path / "run")
    assert [w for w in store.info("warnings") if "reference" in w] == [warning]
    store.close()
    cells = read_cells(tmp_path / "run").set_index("sample_id")
    assert (cells.status == "ok").sum() == 3
    assert cells.loc["gone", "error"].startswith("SampleError: sample 'gone': reference image 1 file not found: ")


def test_a_method_needing_references_lacks_them_on_a_sample_without(tmp_path):
    needing = type("Needing", (Method,), {"name": "needing", "needs": frozenset({"reference_images"})})
    source = image_tensor(_photo(64, 48, 0))
    assert needing.missing(Sample("a", source, "a cat"), {}) == ["reference_images"]
    assert needing.missing(Sample("a", source, "a cat", reference_images=(source,)), {}) == []
    assert get_method("qwen_image_edit_plus").reads_references and get_method("flux2").reads_references
    assert not get_method("qwen_image_edit").reads_references and not get_method("sdedit").reads_references


def test_every_turn_of_a_chain_keeps_its_samples_references(tmp_path):
    from bench.execution.chains import input_image
    from bench.execution.plan import Cell
    from bench.execution.worker import CellWorker

    folder = tmp_path / "data"
    data = _with_references(folder, extra=[{"id": "chain", "image": "img1.png", "source_prompt": "a cat",
                                            "instructions": ["add a hat", "make it red"],
                                            "reference_images": ["wide.png"]}])  # fmt: skip
    turns = [r for r in load_dataset(DatasetSpec(path=data, turns="iterative")) if r.chain == "chain"]
    assert [(t.id, t.references) for t in turns] == [("chain_1", 1), ("chain_2", 1)]
    second = turns[1].load(64)
    previous = _png(_photo(64, 64, 9))
    cell = Cell("k2", "flux2", {}, turns[1], 0, input_key="k1", input_png=previous)
    chained = CellWorker._chained(cell, second, {})
    assert torch.equal(chained.image, input_image(previous)) and chained.image_hash != second.image_hash
    assert len(chained.reference_images) == 1 and torch.equal(chained.reference_images[0], second.reference_images[0])


def _png(img: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def _hub_card(column_kind: str) -> dict:
    return {"name": "refs", "format": "hub", "hub": "x/refs", "split": "test", "id": ["key"],
            "fields": {"image": "input_image", "instruction": "instruction", "reference_images": column_kind}}  # fmt: skip


def test_a_hub_column_holds_one_reference_image_or_a_list_of_them(tmp_path):
    import datasets

    from bench.hub_data import card_summary, load_hub_benchmark

    n = 3
    rows = {"key": [f"k{i}" for i in range(n)], "input_image": [_photo(80, 64, i) for i in range(n)],
            "instruction": ["add it"] * n, "refs": [[_photo(40, 80, 10), _photo(80, 40, 11)], [], None],
            "ref": [_photo(40, 80, 10), None, None]}  # fmt: skip
    features = datasets.Features({"key": datasets.Value("string"), "input_image": datasets.Image(),
                                  "instruction": datasets.Value("string"), "refs": datasets.List(datasets.Image()),
                                  "ref": datasets.Image()})  # fmt: skip
    (tmp_path / "hub" / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "hub" / "data" / "test-0.parquet"))
    spec = SimpleNamespace(path=str(tmp_path / "hub"), split=None, hub=None, revision=None, allow_download=False,
                           turns="first")  # fmt: skip
    listed = load_hub_benchmark(_hub_card("refs"), spec)
    assert [r.references for r in listed] == [2, 0, 0]
    tall, wide = listed[0].load(64).reference_images
    assert tall.shape == (3, 96, 48) and wide.shape == (3, 48, 96)
    assert torch.equal(tall, prepare_image(_photo(40, 80, 10), Frame("square", side=64).reference_frame()))
    assert listed[1].load(64).reference_images == listed[2].load(64).reference_images == ()
    single = load_hub_benchmark(_hub_card("ref"), spec)
    assert [r.references for r in single] == [1, 0, 0] and torch.equal(single[0].load(64).reference_images[0], tall)
    assert "refs (reference_images: image | list of image | null)" in card_summary(_hub_card("refs"))[0]


def test_a_hub_reference_column_of_another_type_is_refused_before_any_work(tmp_path):
    from bench.errors import ConfigError
    from bench.hub_data import load_hub_benchmark

    table = hub_fixture("gedit_bench", 2)
    folder = tmp_path / "hub"
    (folder / "data").mkdir(parents=True)
    table.to_parquet(str(folder / "data" / "test-0.parquet"))
    spec = SimpleNamespace(path=str(folder), split=None, hub=None, revision=None, allow_download=False, turns="first")
    card = {**_hub_card("instruction_language"), "fields": {"image": "input_image", "reference_images": "task_type"}}
    with pytest.raises(ConfigError) as refused:
        load_hub_benchmark(card, spec)
    assert str(refused.value) == (f"dataset {folder}: column 'task_type' holds string; card 'refs' reads it as "
                                  "reference_images, which needs image or list of image")  # fmt: skip


def _sample_with_reference(reference: Image.Image | None) -> Sample:
    references = () if reference is None else (image_tensor(reference),)
    return Sample("wide", image_tensor(_photo(144, 112, 0)), "a photo", instruction="put the hat on it",
                  reference_images=references)  # fmt: skip


def _edit(method, backbone, sample, setting, seed):
    row = EditRow(sample, None, torch.Generator().manual_seed(seed))
    return method.edit_batch(backbone, [row], setting)[0].image


@pytest.mark.slow  # ~35 s on 2 shared cores: the pipeline encodes every input image at ~1024² px
def test_qwen_image_edit_plus_passes_the_source_then_the_references(qwen_image_plus):
    from diffusers import QwenImageEditPlusPipeline

    from methods.kontext import pil_image

    method = get_method("qwen_image_edit_plus")()
    setting = method.resolve({"steps": 2, "true_cfg": 1.0}, "qwen_image_plus")
    sample = _sample_with_reference(_photo(96, 160, 5))
    image = _edit(method, qwen_image_plus, sample, setting, 8)
    pipe = QwenImageEditPlusPipeline.from_pretrained(qwen_image_plus.folder)
    pipe.set_progress_bar_config(disable=True)
    direct = pipe(image=[pil_image(sample.image), pil_image(sample.reference_images[0])], prompt=sample.instruction,
                  true_cfg_scale=1.0, num_inference_steps=2, height=112, width=144,
                  generator=torch.Generator().manual_seed(8), output_type="pt").images  # fmt: skip
    assert image.shape == (1, 3, 112, 144) and (image - direct).abs().max() <= TOLERANCE
    without = _edit(method, qwen_image_plus, _sample_with_reference(None), setting, 8)
    assert (image - without).abs().max() > 10 * TOLERANCE


def test_flux2_passes_the_source_then_the_references(flux2):
    from diffusers import Flux2KleinPipeline

    from methods.kontext import pil_image

    method = get_method("flux2")()
    setting = method.resolve({"steps": 2}, "flux2")
    sample = _sample_with_reference(_photo(96, 160, 5))
    image = _edit(method, flux2, sample, setting, 6)
    pipe = Flux2KleinPipeline.from_pretrained(flux2.folder)
    pipe.set_progress_bar_config(disable=True)
    direct = pipe(image=[pil_image(sample.image), pil_image(sample.reference_images[0])], prompt=sample.instruction,
                  guidance_scale=4.0, num_inference_steps=2, height=112, width=144,
                  generator=torch.Generator().manual_seed(6), output_type="pt").images  # fmt: skip
    assert image.shape == (1, 3, 112, 144) and (image - direct).abs().max() <= TOLERANCE
    without = _edit(method, flux2, _sample_with_reference(None), setting, 6)
    assert (image - without).abs().max() > 10 * TOLERANCE


def test_kris_benchs_ori_img_list_is_the_source_then_its_references(tmp_path, monkeypatch):
    import bench.data
    from bench.data import dataset_cards, load_json_map
    from bench.hub_data import card_summary

    folder = tmp_path / "KRIS_Bench"
    items = {  # the published schema of multi-element_composition and of a single-image category
        "multi-element_composition": {"33": {
            "ori_img": ["33-1.JPG", "33-2.jpg"], "gt_img": "", "explain_en": "",
            "ins_en": "Place the glasses from the first image to the left of the cup in the second image."}},
        "color_change": {"1": {"ori_img": "1.jpg", "gt_img": "", "ins_en": "Make the car red.", "explain_en": ""}},
    }  # fmt: skip
    for seed, (category, annotation) in enumerate(items.items()):
        (folder / category).mkdir(parents=True)
        (folder / category / "annotation.json").write_text(json.dumps(annotation))
        for item in annotation.values():
            for n, name in enumerate([item["ori_img"]] if isinstance(item["ori_img"], str) else item["ori_img"]):
                _photo(64 + 32 * n, 48, seed + n).save(folder / category / name)
    card = {**dataset_cards()["kris_bench"], "edit_types": list(items)}  # the bundled card's fields, two categories
    known = bench.data.known_edit_types()
    monkeypatch.setattr(bench.data, "known_edit_types", lambda: (*known, "multi-element_composition"))
    refs = {r.id: r for r in load_json_map(card, folder)}
    assert refs["multi-element_composition/33"].references == 1 and refs["color_change/1"].references == 0
    sample = refs["multi-element_composition/33"].load(64)
    assert torch.equal(sample.image, prepare_image(Image.open(folder / "multi-element_composition" / "33-1.JPG"), 64))
    (second,) = sample.reference_images
    assert second.shape == (3, 48, 96)  # the 96x48 file at 64² px area and its own aspect ratio, sides of 16
    assert refs["color_change/1"].load(64).reference_images == ()
    assert ("ori_img (image: a path under the folder, or a list of them: the source, then its reference images)"
            in card_summary(dataset_cards()["kris_bench"])[0])  # fmt: skip
