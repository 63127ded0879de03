"""Spatial control (ControlNet, T2I-Adapter): condition maps of the source image, and the
sampling loop both methods share.

Condition maps, computed from a sample's source image:

- ``canny``: scikit-image's Canny edge detector on the greyscale image (white edges on
  black), with its Gaussian ``canny_sigma`` and hysteresis thresholds ``canny_low`` and
  ``canny_high`` on the gradient magnitude of the image in [0, 1] (scikit-image's defaults
  for float images are 0.1 and 0.2).
- ``grey``: the greyscale image (scikit-image's ``rgb2gray``, Rec. 709 luma).
- ``blur``: the colour image under a Gaussian blur of ``blur_sigma`` pixels (a colour/tile
  style low-frequency map).
- ``depth``, ``segmentation``, ``pose``: made by a model given by id or folder
  (``bench.diffusion.annotators``).

A map is (C, H, W) in [0, 1], C = 1 for canny, grey and depth, 3 for the others;
``with_channels`` gives it the channel count a network takes.
"""

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from bench.diffusion.annotators import MODEL_CONDITIONS, annotated_map, annotator_params, annotators_of
from bench.diffusion.extra_networks import ExtraNetwork, check_compatible, network_of, network_params
from bench.diffusion.guidance import guided_sample
from bench.errors import ConfigError
from bench.method import EditResult, Method, Preparation, PreparationSpec
from bench.params import Param, check_start_level

CONDITIONS = ("canny", "grey", "blur", *MODEL_CONDITIONS)
#: The parameters a map depends on (its ``ConditionMapSpec``: maps are computed once per sample).
MAP_PARAMS = ("condition", "canny_low", "canny_high", "canny_sigma", "blur_sigma", "depth_model",
              "segmentation_model", "pose_model", "pose_threshold", "pose_detector", "person_threshold",
              "untrained")  # fmt: skip


def control_params(kind: str, network_default: str) -> tuple[Param, ...]:
    """The parameters a spatial control method starts with: its ``kind`` network (whose
    ``untrained`` also makes the condition's models random) and the condition map's."""
    models_too = ", and the depth, segmentation, pose or person detection model its condition uses"
    return (
        *network_params(kind, network_default, models_too),
        Param("condition", str, "canny", "condition map computed from the source image", choices=CONDITIONS),
        Param("canny_low", float, 0.1, "Canny low hysteresis threshold (gradient magnitude, image in [0, 1])", low=0),
        Param("canny_high", float, 0.2, "Canny high hysteresis threshold", low=0),
        Param("canny_sigma", float, 1.0, "Canny Gaussian smoothing, pixels", low=0),
        Param("blur_sigma", float, 4.0, "blur map Gaussian sigma, pixels", low=0),
        *annotator_params(),
    )


def check_condition(method: str, setting: dict) -> None:
    if setting["canny_low"] > setting["canny_high"]:
        raise ConfigError(
            f"method {method!r}: canny_low = {setting['canny_low']} exceeds canny_high = {setting['canny_high']}"
        )


def condition_map(image: torch.Tensor, setting: dict, backbone=None) -> torch.Tensor:
    """The ``setting``'s condition map of a (3, H, W) image in [0, 1], as (C, H, W) float32 in
    [0, 1]; the model-made conditions run their model beside ``backbone``."""
    from skimage.color import rgb2gray
    from skimage.feature import canny
    from skimage.filters import gaussian

    kind = setting["condition"]
    if kind in MODEL_CONDITIONS:
        return annotated_map(backbone, image, setting)
    rgb = image.permute(1, 2, 0).double().numpy()
    if kind == "canny":
        edges = canny(rgb2gray(rgb), sigma=setting["canny_sigma"], low_threshold=setting["canny_low"],
                      high_threshold=setting["canny_high"])  # fmt: skip
        out = edges.astype(np.float32)[None]
    elif kind == "grey":
        out = rgb2gray(rgb).astype(np.float32)[None]
    else:
        out = gaussian(rgb, sigma=setting["blur_sigma"], channel_axis=-1).astype(np.float32).transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(out)).clamp(0, 1)


def with_channels(cond: torch.Tensor, channels: int) -> torch.Tensor:
    """A (C, H, W) map with ``channels`` channels: grey maps repeated to RGB, colour maps to luma."""
    if cond.shape[0] == channels:
        return cond
    if channels == 3:
        return cond.expand(3, -1, -1)
    if channels == 1:
        weights = torch.tensor([0.2125, 0.7154, 0.0721], dtype=cond.dtype).view(3, 1, 1)  # rgb2gray's
        return (cond * weights).sum(0, keepdim=True)
    raise ValueError(f"cannot turn a {cond.shape[0]}-channel condition map into {channels} channels")


def as_picture(cond: torch.Tensor) -> Image.Image:
    """The map as an 8-bit picture (saved beside the output as ``<image>.condition.png``)."""
    pixels = (cond.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))


@torch.no_grad()
def controlled_sample(backbone, sample, setting: dict, generator, cond: torch.Tensor, network, unet_at) -> EditResult:
    """One spatially controlled cell: CFG sampling from noise (``t0 = 1``) or from the source
    noised to ``t0 * T`` (``bench.diffusion.guidance.guided_sample``), with ``unet_at(index)`` giving each
    step's UNet call (``None``: the plain backbone). The condition map ``cond`` is saved beside
    the output, and the labels (untrained) of the network and of the model that made the map
    join the result's."""
    result = guided_sample(backbone, sample, setting, generator, unet_at=unet_at)
    result.artifacts["condition"] = as_picture(cond)
    result.labels += network.labels + [label for model in annotators_of(backbone, setting) for label in model.labels]
    return result


@dataclass(frozen=True)
class ConditionMapSpec(PreparationSpec):
    """The condition map of a sample's source image (``condition_map``) under ``params``, the
    setting's ``MAP_PARAMS`` as (name, value) pairs. Cheap next to an edit, so it is not kept in the
    disk cache; it costs no UNet evaluation."""

    kind: ClassVar[str] = "condition_map"
    params: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, setting: dict) -> "ConditionMapSpec":
        return cls(tuple((name, setting[name]) for name in MAP_PARAMS))

    def prepare(self, backbone, sample) -> Preparation:
        return Preparation(condition_map(sample.image, dict(self.params), backbone))


class SpatialControlMethod(Method):
    """What ``controlnet`` and ``t2i_adapter`` share: the network of ``kind`` their setting names
    and the model making a depth, segmentation or pose map (both loaded and checked before any
    cell), and the condition map of the sample computed once (``ConditionMapSpec``). Subclasses set the
    parameters and ``edit``."""

    kind: ClassVar[str]
    needs = frozenset({"target_prompt"})

    @classmethod
    def check(cls, setting):
        check_start_level(cls.name, setting)
        check_condition(cls.name, setting)

    @classmethod
    def network(cls, backbone, setting) -> ExtraNetwork:
        return network_of(backbone, cls.kind, setting)

    @classmethod
    def check_backbone(cls, setting, backbone):
        check_compatible(backbone, cls.network(backbone, setting))
        annotators_of(backbone, setting)

    @classmethod
    def preparation(cls, setting):
        return ConditionMapSpec.of(setting)
