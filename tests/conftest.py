"""Shared fixtures. Every test session gets its own cache folder, so the tiny backbone is
built from scratch through the same path a first-time user takes."""

import os
import tempfile

os.environ.setdefault("EDITBENCH_CACHE", tempfile.mkdtemp(prefix="editbench-test-cache-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="editbench-test-datasets-"))

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session")
def backbone():
    from bench.diffusion.backbone import Backbone

    return Backbone()


@pytest.fixture(scope="session")
def sd3():
    """The embedded SD3 backbone, on the CPU."""
    from bench.diffusion.backbone import Backbone, BackboneSpec

    return Backbone(BackboneSpec(name="tiny-sd3", device="cpu"))


@pytest.fixture(scope="session")
def flux():
    """The embedded FLUX.1 backbone, on the CPU."""
    from bench.diffusion.backbone import Backbone, BackboneSpec

    return Backbone(BackboneSpec(name="tiny-flux", device="cpu"))


@pytest.fixture(scope="session")
def sdxl():
    """The embedded SDXL backbone, on the CPU."""
    from bench.diffusion.backbone import Backbone, BackboneSpec

    return Backbone(BackboneSpec(name="tiny-sdxl", device="cpu"))


@pytest.fixture
def image():
    """A smooth random (3, 128, 128) image in [0, 1]."""
    g = torch.Generator().manual_seed(0)
    low = torch.rand(1, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(low, size=128, mode="bilinear", align_corners=False)[0]
