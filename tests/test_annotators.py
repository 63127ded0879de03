"""Condition maps made by a model (depth, segmentation, pose): the maps against transformers'
own pipelines over the same (untrained, tiny) models, the OpenPose drawing, offline loading,
fingerprints and the errors for missing or unfit models."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data import Sample
from bench.diffusion.annotators import (
    OPENPOSE_COLOURS,
    OPENPOSE_LIMBS,
    ade20k_palette,
    annotated_map,
    annotators_of,
    draw_openpose,
    openpose_points,
    person_boxes,
    person_class,
)
from bench.diffusion.control import as_picture
from bench.diffusion.extra_networks import changed_networks, load_network, save_untrained
from bench.errors import ConfigError
from bench.execution.runner import Runner, resume_run, start_run
from bench.registry import get_method
from bench.store import Store
from tests.helpers import run_config


def setting(condition, **params):
    return get_method("controlnet").resolve({"untrained": True, "condition": condition, **params})


def pil(image):
    return Image.fromarray((image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())


@pytest.fixture
def photo():
    """A (3, 96, 128) image: not square and not the models' input size, so resizing is exercised."""
    g = torch.Generator().manual_seed(3)
    low = torch.rand(1, 3, 6, 8, generator=g)
    return torch.nn.functional.interpolate(low, size=(96, 128), mode="bilinear", align_corners=False)[0]


def test_depth_map_is_transformers_depth_pipeline_min_max_normalised(backbone, photo):
    from transformers import pipeline

    ours = annotated_map(backbone, photo, setting("depth"))
    network = load_network(backbone, "depth", "", untrained=True)
    estimator = pipeline("depth-estimation", model=network.model, image_processor=network.processor)
    depth = estimator(pil(photo))["predicted_depth"].float()
    reference = (depth - depth.min()) / (depth.max() - depth.min())
    assert ours.shape == (1, 96, 128) and ours.min() == 0 and ours.max() == 1
    assert (ours[0] - reference).abs().max() <= 1e-5


def test_segmentation_map_paints_transformers_segmentation_pipeline_classes_in_ade20k_colours(backbone, photo):
    from transformers import pipeline

    ours = annotated_map(backbone, photo, setting("segmentation"))
    network = load_network(backbone, "segmentation", "", untrained=True)
    segmenter = pipeline("image-segmentation", model=network.model, image_processor=network.processor)
    reference = torch.zeros(3, 96, 128)
    names = network.model.config.id2label
    label_ids = {name: int(i) for i, name in names.items()}
    for segment in segmenter(pil(photo), subtask="semantic"):
        mask = torch.from_numpy(np.asarray(segment["mask"]) > 0)
        reference[:, mask] = ade20k_palette()[label_ids[segment["label"]]][:, None]
    assert ours.shape == (3, 96, 128)
    assert torch.equal(ours, reference)


def test_ade20k_palette_has_one_distinct_colour_per_class_with_the_published_first_entries():
    palette = ade20k_palette()
    assert palette.shape == (150, 3)
    wall_building_sky = [[120, 120, 120], [180, 120, 120], [6, 230, 230]]
    assert (palette[:3] * 255).round().tolist() == wall_building_sky


def test_pose_map_draws_the_pose_models_keypoints_of_the_whole_image(backbone, photo):
    ours = annotated_map(backbone, photo, setting("pose", pose_threshold=0.0))
    network = load_network(backbone, "pose", "", untrained=True)
    boxes = [[[0.0, 0.0, 128.0, 96.0]]]
    inputs = network.processor(images=pil(photo), boxes=boxes, return_tensors="pt")
    with torch.no_grad():
        person = network.processor.post_process_pose_estimation(network.model(**inputs), boxes=boxes)[0][0]
    reference = draw_openpose([(person["keypoints"], person["scores"])], 96, 128, 0.0)
    assert ours.shape == (3, 96, 128) and torch.equal(ours, reference) and ours.sum() > 0


def test_pose_with_a_detector_draws_every_detected_person(backbone, photo):
    cell = setting("pose", pose_detector="any (untrained)", person_threshold=0.0, pose_threshold=0.0)
    ours = annotated_map(backbone, photo, cell)
    detector, network = annotators_of(backbone, cell)
    found = detector.processor.post_process_object_detection(
        detector.model(**detector.processor(images=pil(photo), return_tensors="pt")), threshold=0.0,
        target_sizes=[(96, 128)])[0]  # fmt: skip
    boxes = [[x0, y0, x1 - x0, y1 - y0] for (x0, y0, x1, y1), label in zip(found["boxes"].tolist(), found["labels"])
             if detector.model.config.id2label[int(label)] == "person"]  # fmt: skip
    assert len(boxes) >= 2
    assert torch.allclose(torch.tensor(person_boxes(detector, pil(photo), 0.0)), torch.tensor(boxes))
    inputs = network.processor(images=pil(photo), boxes=[boxes], return_tensors="pt")
    with torch.no_grad():
        people = network.processor.post_process_pose_estimation(network.model(**inputs), boxes=[boxes])[0]
    reference = draw_openpose([(p["keypoints"], p["scores"]) for p in people], 96, 128, 0.0)
    assert torch.equal(ours, reference)
    nobody = annotated_map(backbone, photo, {**cell, "person_threshold": 1.0})
    assert nobody.abs().sum() == 0  # no person found: a black map, as OpenPose gives


def test_a_detector_without_a_person_class_is_refused(backbone, tmp_path):
    from transformers import YolosConfig, YolosForObjectDetection, YolosImageProcessor

    folder = tmp_path / "cars"
    config = YolosConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                         image_size=[64, 64], patch_size=8, num_detection_tokens=2, id2label={0: "car", 1: "truck"})
    YolosForObjectDetection(config).save_pretrained(folder)
    YolosImageProcessor(size={"shortest_edge": 64, "longest_edge": 64}).save_pretrained(folder)
    with pytest.raises(ConfigError, match=r"person detector .*cars' has no 'person' class among its 2 labels"):
        person_class(load_network(backbone, "person_detector", str(folder)))


def body():
    """COCO keypoints of a standing figure in a 200 x 200 picture (joints over 8 px apart), every score 0.9."""
    keypoints = torch.tensor([
        [50, 10], [47, 8], [53, 8], [44, 10], [56, 10],  # nose, eyes, ears
        [38, 25], [62, 25], [34, 40], [66, 40], [32, 55], [68, 55],  # shoulders, elbows, wrists (left, right)
        [44, 60], [56, 60], [44, 75], [56, 75], [44, 92], [56, 92],  # hips, knees, ankles
    ], dtype=torch.float32)  # fmt: skip
    return keypoints * 2, torch.full((17,), 0.9)


def colour_at(picture, x, y):
    return tuple((picture[:, y, x] * 255).round().int().tolist())


def test_openpose_drawing_places_joints_and_limbs_in_openposes_colours():
    keypoints, scores = body()
    picture = draw_openpose([(keypoints, scores)], 200, 200, threshold=0.3)
    points = openpose_points(keypoints, scores, 0.3)
    assert points[1] == (100.0, 50.0)  # the neck: between the shoulders
    assert points[2] == (124.0, 50.0) and points[5] == (76.0, 50.0)  # OpenPose's right shoulder is COCO's index 6
    for index, (x, y) in enumerate(points):
        assert colour_at(picture, int(x), int(y)) == OPENPOSE_COLOURS[index]
    # the middle of the right upper leg (hip 8 to knee 9), away from any joint: that limb's colour at 60 %
    limb = OPENPOSE_LIMBS.index((8, 9))
    assert colour_at(picture, 112, 135) == tuple(int(c * 0.6) for c in OPENPOSE_COLOURS[limb])
    assert colour_at(picture, 10, 190) == (0, 0, 0)


def test_openpose_drawing_leaves_out_unsure_keypoints_and_their_limbs():
    keypoints, scores = body()
    scores[10] = 0.1  # the right wrist (OpenPose point 4)
    picture = draw_openpose([(keypoints, scores)], 200, 200, threshold=0.3)
    assert colour_at(picture, 136, 110) == (0, 0, 0)  # the wrist
    assert colour_at(picture, 134, 95) == (0, 0, 0)  # the forearm leading to it
    assert colour_at(picture, 128, 65) != (0, 0, 0)  # the upper arm is still there
    scores[5] = 0.1  # a shoulder: no neck either
    assert openpose_points(keypoints, scores, 0.3)[1] is None


@pytest.mark.parametrize("name", ["controlnet", "t2i_adapter"])
def test_model_made_conditions_are_saved_beside_the_output_and_label_the_untrained_model(backbone, image, name):
    sample = Sample("x", image, "a photo of a cat", "a photo of a dog")
    method = get_method(name)()
    outputs = {}
    for condition in ("depth", "segmentation", "pose"):
        cell = method.resolve({"untrained": True, "condition": condition, "steps": 3, "pose_threshold": 0.0})
        method.check_backbone(cell, backbone)
        prep = method.prepare(backbone, sample, cell).value
        result = method.edit(backbone, sample, prep, cell, torch.Generator().manual_seed(0))
        assert f"untrained {condition} model (smoke numbers)" in result.labels
        assert np.array_equal(np.asarray(result.artifacts["condition"]), np.asarray(as_picture(prep)))
        outputs[condition] = result.image
    if name == "t2i_adapter":  # the untrained ControlNet barely responds to its map: see test_control's equalities
        for one, other in (("depth", "segmentation"), ("segmentation", "pose"), ("pose", "depth")):
            assert (outputs[one] - outputs[other]).abs().max() > 1e-3


def test_a_missing_condition_model_fails_before_any_cell_naming_its_files(backbone, tmp_path):
    controlnet = tmp_path / "cn"
    save_untrained(backbone, "controlnet", 1, controlnet)
    config = run_config(tmp_path, {"controlnet": {"controlnet": str(controlnet), "condition": "depth",
                                                  "depth_model": "someone/no-such-depth"}})  # fmt: skip
    with pytest.raises(ConfigError, match=r"depth model 'someone/no-such-depth': looked for config.json, "
                       r"model.safetensors and preprocessor_config.json in the Hugging Face cache"):  # fmt: skip
        Runner(config, tmp_path / "run", backbone=backbone, progress=False)


def test_a_segmentation_model_of_other_classes_is_refused(backbone, tmp_path):
    from transformers import ConvNextConfig, SegformerImageProcessor, UperNetConfig, UperNetForSemanticSegmentation

    folder = tmp_path / "cityscapes"
    stages = ConvNextConfig(depths=[1] * 4, hidden_sizes=[8, 16, 32, 64],
                            out_features=[f"stage{i}" for i in range(1, 5)])
    model = UperNetForSemanticSegmentation(UperNetConfig(backbone_config=stages, hidden_size=16, num_labels=19,
                                                         use_auxiliary_head=False))  # fmt: skip
    model.save_pretrained(folder)
    SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    cell = get_method("controlnet").resolve({"condition": "segmentation", "segmentation_model": str(folder)})
    with pytest.raises(ConfigError, match="predicts 19 classes; .* needs an ADE20K model"):
        annotators_of(backbone, cell)


def test_changed_condition_model_weights_change_the_map_fingerprint_and_stop_a_resume(backbone, photo, tmp_path):
    depth = tmp_path / "depth"
    save_untrained(backbone, "depth", 1, depth)
    cell = get_method("controlnet").resolve({"condition": "depth", "depth_model": str(depth)})
    before, [first] = annotated_map(backbone, photo, cell), annotators_of(backbone, cell)
    recorded = backbone.extra_fingerprints()
    shutil.rmtree(depth)
    save_untrained(backbone, "depth", 2, depth)
    after, [second] = annotated_map(backbone, photo, cell), annotators_of(backbone, cell)
    assert second.fingerprint["id"] != first.fingerprint["id"] and (after - before).abs().max() > 1e-3
    assert changed_networks(recorded, backbone) == [f"depth:{depth} ({first.fingerprint['id']} -> "
                                                    f"{second.fingerprint['id']})"]  # fmt: skip


def test_a_run_records_the_condition_model_and_refuses_to_resume_over_changed_weights(tmp_path, backbone):
    depth, adapter = tmp_path / "depth", tmp_path / "adapter"
    save_untrained(backbone, "depth", 1, depth)
    save_untrained(backbone, "t2i_adapter", 1, adapter)
    cell = {"t2i_adapter": str(adapter), "condition": "depth", "depth_model": str(depth), "steps": 1}
    methods = {"t2i_adapter": cell}
    run_dir, counts = start_run(run_config(tmp_path, methods, n=1), progress=False)
    assert counts["ok"] == 1
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["backbone"]["extra_networks"][f"depth:{depth}"]["processor_sha256"]
    shutil.rmtree(depth)
    save_untrained(backbone, "depth", 2, depth)
    store = Store(run_dir)  # an unfinished run: a finished one returns before loading any network
    store.db.execute("DELETE FROM cells")
    store.close()
    with pytest.raises(ConfigError, match=f"extra network weights changed since it started: depth:{depth} "):
        resume_run(run_dir, progress=False)
