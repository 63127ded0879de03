"""Condition maps made by a model: ``depth``, ``segmentation`` and ``pose``.

Each condition's model is a method parameter (``depth_model``, ``segmentation_model``,
``pose_model``): a local folder or a hub id read from the Hugging Face cache, safetensors only,
never downloaded, with its ``preprocessor_config.json`` (``bench.extra_networks``, which also
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
- ``pose``: ViTPose's 17 COCO keypoints of one person whose box is the whole image (a top-down
  model needs a box; there is no person detector here), converted to OpenPose's 18-point body
  (the neck is the mid-shoulder point) and drawn as ControlNet 1.1's OpenPose annotator draws a
  body: on black, each limb a filled ellipse 4 px thick in 60 % of its colour, then each joint a
  4 px radius disc in its full colour. Keypoints scoring below ``pose_threshold`` are left out,
  with their limbs.
"""

from functools import cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .errors import ConfigError
from .extra_networks import KINDS, ExtraNetwork, network_of
from .params import Param

MODEL_CONDITIONS = ("depth", "segmentation", "pose")
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
        Param("depth_model", str, DEFAULT_MODELS["depth"], f"depth condition: depth estimation model, {source}"),
        Param("segmentation_model", str, DEFAULT_MODELS["segmentation"],
              f"segmentation condition: ADE20K semantic segmentation model, {source}"),
        Param("pose_model", str, DEFAULT_MODELS["pose"], f"pose condition: ViTPose keypoint model, {source}"),
        Param("pose_threshold", float, 0.3, "pose condition: keypoints scoring below it are not drawn", low=0, high=1),
    )  # fmt: skip


def annotator_of(backbone, setting: dict) -> ExtraNetwork | None:
    """The model the setting's condition needs, loaded (``None`` for the low-level maps).
    Refuses a segmentation model that does not predict ADE20K's classes."""
    condition = setting["condition"]
    if condition not in MODEL_CONDITIONS:
        return None
    network = network_of(backbone, condition, setting)
    labels = getattr(network.model.config, "num_labels", None)
    if condition == "segmentation" and labels != ADE20K_CLASSES:
        raise ConfigError(
            f"{KINDS[condition].label} {setting[KINDS[condition].param]!r} predicts {labels} classes; segmentation "
            f"condition maps paint ADE20K's {ADE20K_CLASSES} classes in their colours, so it needs an ADE20K model"
        )
    return network


@torch.no_grad()
def annotated_map(backbone, image: torch.Tensor, setting: dict) -> torch.Tensor:
    """The setting's model-made condition map of a (3, H, W) image in [0, 1], as (C, H, W) in
    [0, 1] on the CPU: 1 channel for depth, 3 for segmentation and pose."""
    network = annotator_of(backbone, setting)
    height, width = image.shape[-2:]
    picture = Image.fromarray((image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())
    condition, processor, model = setting["condition"], network.processor, network.model
    device = next(model.parameters()).device
    if condition == "pose":
        boxes = [[[0.0, 0.0, float(width), float(height)]]]  # COCO (x, y, w, h): the whole image
        inputs = processor(images=picture, boxes=boxes, return_tensors="pt").to(device)
        person = processor.post_process_pose_estimation(model(**inputs), boxes=boxes)[0][0]
        keypoints, scores = person["keypoints"].float().cpu(), person["scores"].float().cpu()
        return draw_openpose(keypoints, scores, height, width, setting["pose_threshold"])
    outputs = model(**processor(images=picture, return_tensors="pt").to(device))
    if condition == "depth":
        depth = processor.post_process_depth_estimation(outputs, target_sizes=[(height, width)])[0]["predicted_depth"]
        return normalised(depth.float().cpu())[None]
    classes = processor.post_process_semantic_segmentation(outputs, target_sizes=[(height, width)])[0]
    return ade20k_palette()[classes.cpu()].permute(2, 0, 1)


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


def draw_openpose(keypoints: torch.Tensor, scores: torch.Tensor, height: int, width: int, threshold: float):
    """A (3, H, W) picture in [0, 1] of one body's skeleton (see the module doc)."""
    canvas = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(canvas)
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
