"""The resolution policy (issue 35 item 3): ``square`` stays today's rule, ``keep_aspect`` crops
nothing and sizes by area and multiple, ``model`` follows the pipelines' own rules; a run under
``keep_aspect`` makes, scores and records images at their own aspect ratio in batches of one size."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from bench.errors import ConfigError
from bench.execution.runner import start_run
from bench.method import EditResult, Method
from bench.registry import register
from bench.samples import Frame, ResolutionPolicy, prepare_image, prepare_mask, run_frames
from tests.helpers import read_cells, run_config


@register
class _StackedSources(Method):
    """Returns each source, through one stacked tensor: a batch of mixed sizes would fail."""

    name = "test_stacked_sources"

    def edit_batch(self, backbone, rows, setting):
        return [EditResult(image[None]) for image in torch.stack([row.sample.image for row in rows])]


def _photo(width, height):
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8))


def test_square_is_the_default_and_the_old_rule():
    img = _photo(96, 64)
    assert ResolutionPolicy.parse(None).frame(64) == Frame("square", side=64)
    assert prepare_image(img, 64).equal(prepare_image(img, ResolutionPolicy().frame(64)))
    assert tuple(prepare_image(img, 64).shape) == (3, 64, 64)


def test_keep_aspect_resizes_to_the_area_and_multiple_without_cropping():
    frame = ResolutionPolicy("keep_aspect", area=64 * 64, multiple=16).frame(512)
    img = _photo(300, 200)
    assert frame.size_for(300, 200) == (80, 48)  # sqrt(4096 * 1.5) = 78.4 -> 80, 52.3 -> 48
    out = prepare_image(img, frame)
    assert tuple(out.shape) == (3, 48, 80)
    whole = np.asarray(img.resize((80, 48), Image.BICUBIC), dtype=np.float32) / 255  # the whole picture, resized
    assert np.array_equal(out.permute(1, 2, 0).numpy(), whole)
    mask = np.zeros((200, 300), bool)
    mask[:, :10] = True  # a strip at the left edge survives: nothing is cropped away
    assert prepare_mask(mask, frame)[0, :, 0].all()


def test_keep_aspect_defaults_to_the_backbone_area_and_16():
    frame = ResolutionPolicy("keep_aspect").frame(64)
    assert (frame.area, frame.multiple) == (64 * 64, 16)


def test_a_ground_truth_image_is_brought_to_its_sources_size():
    frame = ResolutionPolicy("keep_aspect", area=64 * 64).frame(64)
    assert tuple(prepare_image(_photo(100, 100), frame, like=(300, 200)).shape) == (3, 48, 80)


def test_model_rules_match_the_pipelines():
    from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS
    from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import calculate_dimensions

    qwen = ResolutionPolicy("model").frame(1024, {"multiple": 32})
    for w, h in [(300, 200), (640, 480), (1000, 1333), (512, 512)]:
        assert qwen.size_for(w, h) == calculate_dimensions(1024 * 1024, w / h)[:2]
    kontext = ResolutionPolicy("model").frame(1024, {"choices": tuple(PREFERRED_KONTEXT_RESOLUTIONS)})
    for w, h in [(300, 200), (640, 480), (1000, 1333)]:
        ratio = w / h
        expected = min((abs(ratio - cw / ch), cw, ch) for cw, ch in PREFERRED_KONTEXT_RESOLUTIONS)[1:]
        assert kontext.size_for(w, h) == expected
    assert ResolutionPolicy("model").frame(64, {"multiple": 32}).area == 64 * 64  # scaled to the backbone's size


def test_bad_policies_are_config_errors():
    for value in ["portrait", {"mode": "keep_aspect", "multiple": 12}, {"mode": "square", "area": 4096},
                  {"mode": "keep_aspect", "size": 3}, 5]:  # fmt: skip
        with pytest.raises(ConfigError):
            ResolutionPolicy.parse(value)


def test_the_manifest_records_the_rule_and_reads_back():
    frame = ResolutionPolicy("keep_aspect", area=4096, multiple=32).frame(64)
    assert run_frames({"images": json.loads(json.dumps(frame.to_dict()))})[None] == frame
    assert run_frames({"backbone": {"resolution": 64}})[None] == Frame("square", side=64)  # runs from before policies
    assert "nothing cropped" in frame.describe()


def test_a_keep_aspect_run_keeps_each_images_aspect_in_batches_of_one_size(tmp_path):
    extra = [{"id": "tall", "image": "img0.png", "source_prompt": "a cat", "target_prompt": "a dog"}]
    config = run_config(tmp_path, {"test_stacked_sources": {}}, n=2, extra=extra, batch_size=3)
    config = replace(config, dataset=replace(config.dataset, resolution_policy={"mode": "keep_aspect", "area": 64 * 64}))
    tall = tmp_path / "data" / "img0.png"
    _photo(96, 128).save(tall)  # img0 (and "tall") portrait, img1 landscape 128x96
    run_dir, counts = start_run(config, progress=False)
    assert counts["ok"] == 3
    cells = read_cells(run_dir)
    sizes = {row.sample_id: Image.open(run_dir / row.output_path).size for row in cells.itertuples()}
    assert sizes == {"img0": (48, 80), "tall": (48, 80), "img1": (80, 48)}  # 4:3 at 64² px, sides of 16
    assert cells["metric.psnr"].eq(float("inf")).all()  # the edit is the source: compared at one size
    assert cells.groupby("batch_id")["sample_id"].apply(lambda s: len({sizes[i] for i in s})).eq(1).all()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["images"]["mode"] == "keep_aspect" and "nothing cropped" in manifest["images"]["rule"]


def test_methods_that_draw_noise_or_read_attention_maps_keep_the_samples_aspect(tmp_path):
    """Noise from scratch (cfg at t0 = 1), Prompt-to-Prompt's local blend and MasaCtrl's masks at a
    non-square latent (128x96 -> 80x48 px at 64² px area: latent 10x6, odd below it)."""
    methods = {"cfg": {"t0": 1.0, "steps": 2}, "p2p": {"steps": 2, "inversion": "ddim"},
               "masactrl": {"steps": 2, "start_step": 0, "start_layer": 0, "mask_guided": True}}  # fmt: skip
    config = run_config(tmp_path, methods, n=1)
    config = replace(config, dataset=replace(config.dataset, resolution_policy={"mode": "keep_aspect", "area": 64 * 64}))
    run_dir, counts = start_run(config, progress=False)
    cells = read_cells(run_dir)
    assert counts["ok"] == 3, list(cells["error"])
    assert {Image.open(run_dir / p).size for p in cells["output_path"]} == {(80, 48)}
