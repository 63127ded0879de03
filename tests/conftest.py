"""Shared fixtures. Every test session gets its own cache folder, so the tiny backbone is
built from scratch through the same path a first-time user takes. The backbone fixtures follow
``$EDITBENCH_TEST_DEVICE`` / ``$EDITBENCH_TEST_DTYPE`` (``tests/helpers.py: tiny_backbone_spec``), and
every test taking one is marked ``backbone``: the subset the GPU suite runs on CUDA."""

import os
import tempfile

os.environ.setdefault("EDITBENCH_CACHE", tempfile.mkdtemp(prefix="editbench-test-cache-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="editbench-test-datasets-"))

import pytest  # noqa: E402
import torch  # noqa: E402


#: Fixtures that hold a tiny backbone; a test using one is marked ``backbone``.
BACKBONE_FIXTURES = {"backbone", "sd3", "sdxl", "flux", "backbones",
                     "kontext", "qwen_image", "qwen_image_plus", "longcat", "flux2", "flux2_dev"}


def pytest_configure(config):
    config.addinivalue_line("markers", "backbone: uses a tiny backbone fixture (the GPU suite's CUDA subset)")


def pytest_collection_modifyitems(items):
    for item in items:
        if BACKBONE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.backbone)


@pytest.fixture(scope="session")
def backbone():
    from bench.diffusion.backbone import Backbone

    from tests.helpers import tiny_backbone_spec

    return Backbone(tiny_backbone_spec(device="auto"))


@pytest.fixture(scope="session")
def sd3():
    """The embedded SD3 backbone, on the CPU (or the test device)."""
    from bench.diffusion.backbone import Backbone

    from tests.helpers import tiny_backbone_spec

    return Backbone(tiny_backbone_spec("tiny-sd3"))


@pytest.fixture(scope="session")
def flux():
    """The embedded FLUX.1 backbone, on the CPU (or the test device)."""
    from bench.diffusion.backbone import Backbone

    from tests.helpers import tiny_backbone_spec

    return Backbone(tiny_backbone_spec("tiny-flux"))


@pytest.fixture(scope="session")
def kontext():
    """The embedded FLUX.1 Kontext backbone, on the CPU (or the test device)."""
    from bench.diffusion.backbone import Backbone

    from tests.helpers import tiny_backbone_spec

    return Backbone(tiny_backbone_spec("tiny-kontext"))


@pytest.fixture(scope="session")
def qwen_image():
    """The embedded Qwen-Image-Edit backbone, on the CPU (or the test device)."""
    from bench.diffusion.backbone import Backbone

    from tests.helpers import tiny_backbone_spec

    return Backbone(tiny_backbone_spec("tiny-qwen-image-edit"))


@pytest.fixture(scope="session")
def qwen_image_plus():
    """The embedded Qwen-Image-Edit-2509/2511 (Plus pipeline) backbone, on the CPU (or the test device)."""
    from bench.diffusion.backbone import Backbone

    from tests.helpers import tiny_backbone_spec

    return Backbone(tiny_backbone_spec("tiny-qwen-image-edit-plus"))


@pytest.fixture(scope="session")
def longcat():
    """The embedded LongCat-Image-Edit backbone, on the CPU (or the test device)."""
    from bench.diffusion.backbone import Backbone

    from tests.helpers import tiny_backbone_spec

    return Backbone(tiny_backbone_spec("tiny-longcat"))


@pytest.fixture(scope="session")
def flux2():
    """The embedded FLUX.2 [klein] backbone, on the CPU (or the test device)."""
    from bench.diffusion.backbone import Backbone

    from tests.helpers import tiny_backbone_spec

    return Backbone(tiny_backbone_spec("tiny-flux2-klein"))


@pytest.fixture(scope="session")
def flux2_dev():
    """The embedded FLUX.2 [dev] backbone, on the CPU (or the test device)."""
    from bench.diffusion.backbone import Backbone

    from tests.helpers import tiny_backbone_spec

    return Backbone(tiny_backbone_spec("tiny-flux2-dev"))


@pytest.fixture(scope="session")
def sdxl():
    """The embedded SDXL backbone, on the CPU (or the test device)."""
    from bench.diffusion.backbone import Backbone

    from tests.helpers import tiny_backbone_spec

    return Backbone(tiny_backbone_spec("tiny-sdxl"))


@pytest.fixture
def image():
    """A smooth random (3, 128, 128) image in [0, 1]."""
    g = torch.Generator().manual_seed(0)
    low = torch.rand(1, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(low, size=128, mode="bilinear", align_corners=False)[0]
