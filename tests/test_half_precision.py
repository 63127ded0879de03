"""Every method over every inversion runs on a half-precision backbone (fp16, bf16) on the CPU.

One cell (2 steps, one sample) per method x inversion on the tiny backbone of the method's family
(``tiny``; ``tiny-sd3`` for a method that runs on SD3 only): the output is finite
and close to the fp32 backbone's. Bound: the mean absolute difference on [0, 1] pixels is at most
0.05 in fp16 and 0.15 in bf16 (measured worst cells on the untrained tiny network: fp16 0.02
(edict), bf16 0.12 (sdedit and blended_latent, whose fresh noise is drawn in the backbone's
dtype)); untrained weights amplify rounding, so these are loose smoke bounds, not accuracy claims.
The default run keeps a representative subset (the ``p2p`` over ``ddpm`` cell that used to fail
with "mat1 and mat2 must have the same dtype", and a two-branch editor); the full matrix is ``slow``.
"""

import pytest
import torch

from bench.data import DatasetSpec, load_dataset
from bench.diffusion.backbone import Backbone, BackboneSpec
from bench.method import EditRow, Preparation
from bench.registry import all_methods, get_method

MEAN_BOUND = {"fp16": 0.05, "bf16": 0.15}
TINY = {"sd": "tiny", "sd3": "tiny-sd3"}
FAST = {("p2p", "ddpm"), ("masactrl", "direct")}


def cells():
    for cls in all_methods():
        params = {p.name: p for p in cls.params}
        for inversion in params["inversion"].choices if "inversion" in params else (None,):
            fast = (cls.name, inversion) in FAST
            yield pytest.param(cls.name, inversion, id=f"{cls.name}-{inversion}",
                               marks=() if fast else pytest.mark.slow)  # fmt: skip


@pytest.fixture(scope="module")
def backbones(backbone):
    """``(family, dtype) -> `` the tiny backbone of that family and dtype, built on first use."""
    built = {("sd", "fp32"): backbone}

    def get(family: str, dtype: str) -> Backbone:
        if (family, dtype) not in built:
            built[family, dtype] = Backbone(BackboneSpec(name=TINY[family], dtype=dtype, device="cpu"))
        return built[family, dtype]

    return get


@pytest.fixture(scope="module")
def sample(backbone):
    return load_dataset(DatasetSpec(name="sample"))[1].load(backbone.resolution)  # chelsea: cat -> dog


def one_cell(backbone, name, inversion, sample):
    cls = get_method(name)
    params = {p.name for p in cls.params}
    given = {"steps": 2} if "steps" in params else {}
    given.update({"inversion": inversion} if inversion else {})
    given.update({"inner_steps": 1} if "inner_steps" in params else {})
    given.update({"skip": 1} if name == "ddpm_inversion" else {})
    given.update({"start_step": 0, "start_layer": 2} if name == "masactrl" else {})
    given.update({"untrained": True} if "untrained" in params else {})
    given.update({"n_max": 2} if name == "flowedit" else {})
    method, setting = cls(), cls.resolve(given)
    cls.check_backbone(setting, backbone)
    prep = method.prepare(backbone, sample, setting)
    prep = prep.value if isinstance(prep, Preparation) else prep
    return method.edit_batch(backbone, [EditRow(sample, prep, torch.Generator().manual_seed(0))], setting)[0].image


@pytest.mark.parametrize("name, inversion", list(cells()))
def test_half_precision_cell_is_finite_and_close_to_fp32(backbones, sample, name, inversion):
    families = get_method(name).families
    family = "sd" if "sd" in families else families[0]
    reference = one_cell(backbones(family, "fp32"), name, inversion, sample).float()
    for dtype, bound in MEAN_BOUND.items():
        image = one_cell(backbones(family, dtype), name, inversion, sample).float()
        assert torch.isfinite(image).all(), dtype
        assert (image - reference).abs().mean().item() <= bound, dtype
