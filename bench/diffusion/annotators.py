"""Condition maps made by a model: ``depth``, ``segmentation`` and ``pose``.

Each condition's model is a method parameter (``depth_model``, ``segmentation_model``,
``pose_model``): a local folder or a hub id read from the Hugging Face cache, safetensors only,
never downloaded, with its ``preprocessor_config.json`` (``bench.diffusion.extra_networks``, which also
fingerprints it into the run's manifest and builds a tiny seeded random one for
``untrained: true``). The model runs once per sample (the map is the method's preparation), in
fp32 on the backbone's device. Its input is the source image as 8-bit RGB through the
checkpoint's own image processor, transformers' PIL backend (``backend="pil"``, the backend
that reproduces the preprocessing the checkpoints were published with); its output is read by
that processor's own post-processing, then turned into the picture a ControlNet or T2I-Adapter
of that condition was trained on:

- ``depth``: the predicted depth at the image's size, min-max normalised to [0, 1] (a constant
  prediction gives 0). MiDaS/DPT and Depth Anything predict relative inverse depth, so near is
  bright, as in the MiDaS maps the depth ControlNets and adapters were trained on.
- ``segmentation``: the per-pixel argmax class at the image's size, each class painted in its
  ADE20K colour (``ade20k_palette.txt``); the model must predict ADE20K's 150 classes, as the
  segmentation ControlNet knows only their colours.
- ``pose``: ViTPose's 17 COCO keypoints of each person, converted to OpenPose's 18-point body
  (the neck is the mid-shoulder point) and drawn as ControlNet 1.1's OpenPose annotator draws
  bodies: on black, body after body, each limb a filled ellipse 4 px thick in 60 % of its
  colour, then each joint a 4 px radius disc in its full colour. Keypoints scoring below
  ``pose_threshold`` are left out, with their limbs. ViTPose is top-down: it needs each
  person's box. With a ``pose_detector`` (an object detection model, e.g. RT-DETR) the boxes
  are its "person" detections scoring at least ``person_threshold`` (none found: a black map);
  without one, the whole image is one person's box.
"""

from functools import cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from bench.diffusion.extra_networks import KINDS, ExtraNetwork, network_of
from bench.errors import ConfigError
from bench.params import Param
from bench.params import LOCAL_OR_HUB

MODEL_CONDITIONS = ("depth", "segmentation", "pose")
PERSON = "person"
DEFAULT_MODELS = {
    "depth": "Intel/dpt-hybrid-midas",
    "segmentation": "openmmlab/upernet-convnext-small",
    "pose": "usyd-community/vitpose-base-simple",
}
ADE20K_CLASSES = 150

# OpenPose's body: COCO keypoint index of each of its 18 points (None: the neck, computed),
# the limbs as pairs of those points, and one colour per point (limb i takes colour i).
OPENPOSE_FROM_COCO = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
COCO_SHOULDERS = (5, 6)
OPENPOSE_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
                  (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))  # fmt: skip
OPENPOSE_COLOURS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
                    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
                    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))  # fmt: skip
LIMB_HALF_WIDTH = 4
JOINT_RADIUS = 4
LIMB_INTENSITY = 0.6


def annotator_params() -> tuple[Param, ...]:
    """The parameters naming each condition's model (its ``untrained`` is the method's own)."""
    source = "local folder or hub id (Hugging Face cache, safetensors + preprocessor_config.json)"
    return (
        Param("depth_model", str, DEFAULT_MODELS["depth"], f"depth condition: depth estimation model, {source}",
              path=LOCAL_OR_HUB),
        Param("segmentation_model", str, DEFAULT_MODELS["segmentation"],
              f"segmentation condition: ADE20K semantic segmentation model, {source}", path=LOCAL_OR_HUB),
        Param("pose_model", str, DEFAULT_MODELS["pose"], f"pose condition: ViTPose keypoint model, {source}",
              path=LOCAL_OR_HUB),
        Param("pose_threshold", float, 0.3, "pose condition: keypoints scoring below it are not drawn", low=0, high=1),
        Param("pose_detector", str, "", "pose condition: object detection model finding the people, e.g. "
              f"PekingU/rtdetr_r50vd_coco_o365, {source} ('': the whole image is one person; with untrained, "
              "any other value: a random tiny detector)", path=LOCAL_OR_HUB),
        Param("person_threshold", float, 0.5, "pose condition: the detector's least score for a person", low=0, high=1),
    )  # fmt: skip


def annotators_of(backbone, setting: dict) -> list[ExtraNetwork]:
    """The models the setting's condition needs, loaded: none for the low-level maps, the
    condition's model, and for ``pose`` the person detector when one is named. Refuses a
    segmentation model that does not predict ADE20K's classes and a detector without a person class."""
    condition = setting["condition"]
    if condition not in MODEL_CONDITIONS:
        return []
    network = network_of(backbone, condition, setting)
    if condition == "segmentation" and (classes := network.model.config.num_labels) != ADE20K_CLASSES:
        raise ConfigError(
            f"{KINDS[condition].label} {setting[KINDS[condition].param]!r} predicts {classes} classes; segmentation "
            f"condition maps paint ADE20K's {ADE20K_CLASSES} classes in their colours, so it needs an ADE20K model"
        )
    if condition == "pose" and setting["pose_detector"]:
        detector = network_of(backbone, "person_detector", setting)
        person_class(detector)
        return [detector, network]
    return [network]


def person_class(detector: ExtraNetwork) -> int:
    """The detector's class id named "person" (COCO's name), or a ``ConfigError``."""
    names = {str(name).lower(): int(i) for i, name in detector.model.config.id2label.items()}
    if PERSON not in names:
        raise ConfigError(
            f"person detector {detector.fingerprint['source']!r} has no {PERSON!r} class among its "
            f"{len(names)} labels; give a detector trained on COCO-style labels, or no pose_detector"
        )
    return names[PERSON]


@torch.no_grad()
def annotated_map(backbone, image: torch.Tensor, setting: dict) -> torch.Tensor:
    """The setting's model-made condition map of a (3, H, W) image in [0, 1], as (C, H, W) in
    [0, 1] on the CPU: 1 channel for depth, 3 for segmentation and pose."""
    *detector, network = annotators_of(backbone, setting)
    height, width = image.shape[-2:]
    picture = Image.fromarray((image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())
    condition, processor, model = setting["condition"], network.processor, network.model
    if condition == "pose":
        boxes = person_boxes(detector[0], picture, setting["person_threshold"]) if detector else [[0, 0, width, height]]
        return draw_openpose(body_keypoints(network, picture, boxes), height, width, setting["pose_threshold"])
    outputs = model(**processor(images=picture, return_tensors="pt").to(network.device))
    if condition == "depth":
        depth = processor.post_process_depth_estimation(outputs, target_sizes=[(height, width)])[0]["predicted_depth"]
        return normalised(depth.float().cpu())[None]
    classes = processor.post_process_semantic_segmentation(outputs, target_sizes=[(height, width)])[0]
    return ade20k_palette()[classes.cpu()].permute(2, 0, 1)


@torch.no_grad()
def person_boxes(detector: ExtraNetwork, picture: Image.Image, threshold: float) -> list[list[float]]:
    """COCO ``[x, y, width, height]`` boxes of the detector's "person" detections scoring at
    least ``threshold`` in ``picture``, by its processor's own post-processing."""
    inputs = detector.processor(images=picture, return_tensors="pt").to(detector.device)
    found = detector.processor.post_process_object_detection(
        detector.model(**inputs), threshold=threshold, target_sizes=[(picture.height, picture.width)]
    )[0]
    people = found["boxes"][found["labels"] == person_class(detector)].float().cpu()
    return [[x0, y0, x1 - x0, y1 - y0] for x0, y0, x1, y1 in people.tolist()]


@torch.no_grad()
def body_keypoints(pose: ExtraNetwork, picture: Image.Image, boxes: list) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The pose model's COCO keypoints (17, 2) and their scores (17,) for each person's box."""
    if not boxes:
        return []
    inputs = pose.processor(images=picture, boxes=[boxes], return_tensors="pt").to(pose.device)
    people = pose.processor.post_process_pose_estimation(pose.model(**inputs), boxes=[boxes])[0]
    return [(person["keypoints"].float().cpu(), person["scores"].float().cpu()) for person in people]


def normalised(values: torch.Tensor) -> torch.Tensor:
    """``values`` min-max scaled to [0, 1]; all zeros when they are constant."""
    low, high = values.min(), values.max()
    return (values - low) / (high - low) if high > low else torch.zeros_like(values)


@cache
def ade20k_palette() -> torch.Tensor:
    """(150, 3) float32 colours in [0, 1], row k painting ADE20K class k."""
    lines = (Path(__file__).with_name("ade20k_palette.txt")).read_text().splitlines()
    rows = [[int(v) for v in line.split()] for line in lines if line and not line.startswith("#")]
    return torch.tensor(rows, dtype=torch.float32) / 255


def openpose_points(keypoints: torch.Tensor, scores: torch.Tensor, threshold: float) -> list:
    """OpenPose's 18 body points from COCO's 17 keypoints, each ``(x, y)`` or ``None`` when its
    score is below ``threshold`` (the neck: when either shoulder is)."""
    points = []
    for coco in OPENPOSE_FROM_COCO:
        if coco is None:
            left, right = COCO_SHOULDERS
            seen = min(scores[left], scores[right]) >= threshold
            points.append(tuple(((keypoints[left] + keypoints[right]) / 2).tolist()) if seen else None)
        else:
            points.append(tuple(keypoints[coco].tolist()) if scores[coco] >= threshold else None)
    return points


def draw_openpose(bodies: list[tuple[torch.Tensor, torch.Tensor]], height: int, width: int, threshold: float):
    """A (3, H, W) picture in [0, 1] of the skeletons of ``bodies``, each its COCO keypoints
    (17, 2) and their scores (17,) (see the module doc)."""
    canvas = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(canvas)
    for keypoints, scores in bodies:
        points = openpose_points(keypoints, scores, threshold)
        for (a, b), colour in zip(OPENPOSE_LIMBS, OPENPOSE_COLOURS):
            if points[a] is not None and points[b] is not None:
                dim = tuple(int(c * LIMB_INTENSITY) for c in colour)
                draw.polygon(limb_outline(points[a], points[b]), fill=dim)
        for point, colour in zip(points, OPENPOSE_COLOURS):
            if point is not None:
                x, y = point
                draw.ellipse((x - JOINT_RADIUS, y - JOINT_RADIUS, x + JOINT_RADIUS, y + JOINT_RADIUS), fill=colour)
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255).permute(2, 0, 1).contiguous()


def limb_outline(a: tuple, b: tuple) -> list[tuple[float, float]]:
    """Outline of the ellipse joining two points: its long axis from ``a`` to ``b``, its short
    half-axis ``LIMB_HALF_WIDTH`` (one point a degree, as OpenCV's ``ellipse2Poly``)."""
    (xa, ya), (xb, yb) = a, b
    centre_x, centre_y = (xa + xb) / 2, (ya + yb) / 2
    half_length, angle = np.hypot(xb - xa, yb - ya) / 2, np.arctan2(yb - ya, xb - xa)
    turn = np.radians(np.arange(360))
    x, y = half_length * np.cos(turn), LIMB_HALF_WIDTH * np.sin(turn)
    xs = centre_x + x * np.cos(angle) - y * np.sin(angle)
    ys = centre_y + x * np.sin(angle) + y * np.cos(angle)
    return list(zip(xs.tolist(), ys.tolist()))
