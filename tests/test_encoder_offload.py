"""``backbone.offload_text_encoders`` (issue 35 item 5): the text/vision encoders wait on the CPU and
are on the compute device only during their own forward call, for the FLUX/SD3 families (the
backbone's ``encode_text``) and for the instruction editors (their diffusers pipeline calls the
encoders), and no pixel changes.

On a CPU-only machine the compute device is injected as ``cpu:0``: moving there is free but the
moves are recorded under a name that differs from the offload device's ``cpu``, so a missing move
either way fails. Under ``$EDITBENCH_TEST_DEVICE=cuda`` the parameters' real device is checked too.
"""

import pytest
import torch

import bench.diffusion.backbone as backbone_module
from bench.diffusion.backbone import Backbone
from bench.method import EditRow
from bench.registry import get_method
from bench.samples import Sample
from tests.helpers import tiny_backbone_spec

#: (tiny backbone, its fixture, method, setting): both ways encoders run, with a negative prompt where it costs an
#: encoder call more (Kontext's true CFG, Qwen-Image-Edit's default)
CASES = [
    ("tiny-kontext", "kontext", "kontext", {"steps": 2, "true_cfg": 2.0}),
    ("tiny-qwen-image-edit", "qwen_image", "qwen_image_edit", {"steps": 2}),
    ("tiny-flux2-klein", "flux2", "flux2", {"steps": 2}),
    ("tiny-flux", "flux", "cfg", {"steps": 2}),
]
OFFLOAD = torch.device("cpu")
#: the tiny backbones are built here, not taken from a fixture: marked so that the GPU suite runs these
pytestmark = pytest.mark.backbone


def _edit(backbone, method_name: str, given: dict, image: torch.Tensor) -> torch.Tensor:
    method = get_method(method_name)()
    sample = Sample("x", image, "a photo of a cat", "a photo of a dog", instruction="make it red")
    row = EditRow(sample, None, torch.Generator().manual_seed(3))
    return method.edit_batch(backbone, [row], method.resolve(given, backbone.family_name))[0].image


def _offloaded(name: str, monkeypatch) -> Backbone:
    spec = tiny_backbone_spec(name, offload_text_encoders=True)
    if spec.device == "cpu":
        monkeypatch.setattr(backbone_module, "resolve_device", lambda _: torch.device("cpu", 0))
    return Backbone(spec)


class Placements:
    """Where each encoder is (the device of its last ``to`` call, and its parameters' device) at
    each of its own forward calls and at each call of the denoiser."""

    def __init__(self, backbone, monkeypatch):
        self.encoders = backbone.text_encoders
        self.moved_to = [next(e.parameters()).device for e in self.encoders]
        self.during_encoding, self.during_denoising = [], []
        for i, encoder in enumerate(self.encoders):
            monkeypatch.setattr(encoder, "to", self._recording_to(i, encoder.to))
            encoder.register_forward_pre_hook(lambda module, args, i=i: self.during_encoding.append(self.where(i)))
        backbone.denoiser.register_forward_pre_hook(
            lambda module, args: self.during_denoising.extend(self.where(i) for i in range(len(self.encoders))))

    def _recording_to(self, i, to):
        def recorded(device, *args, **kwargs):
            self.moved_to[i] = torch.device(device)
            return to(device, *args, **kwargs)

        return recorded

    def where(self, i: int) -> tuple[torch.device, str]:
        return self.moved_to[i], next(self.encoders[i].parameters()).device.type


@pytest.mark.parametrize("name,fixture,method_name,given", CASES)
def test_encoders_are_on_the_device_only_while_they_encode(name, fixture, method_name, given, image, monkeypatch):
    backbone = _offloaded(name, monkeypatch)
    placements = Placements(backbone, monkeypatch)
    _edit(backbone, method_name, given, image)
    assert placements.during_encoding and placements.during_denoising
    assert set(placements.during_encoding) == {(backbone.device, backbone.device.type)}
    assert set(placements.during_denoising) == {(OFFLOAD, "cpu")}
    assert {placements.where(i) for i in range(len(backbone.text_encoders))} == {(OFFLOAD, "cpu")}


@pytest.mark.parametrize("name,fixture,method_name,given", CASES)
def test_offloaded_encoders_change_no_pixel_and_are_recorded(name, fixture, method_name, given, image, request):
    plain = request.getfixturevalue(fixture)
    offloaded = Backbone(tiny_backbone_spec(name, offload_text_encoders=True))
    assert torch.equal(_edit(offloaded, method_name, given, image), _edit(plain, method_name, given, image))
    assert offloaded.describe()["spec"]["offload_text_encoders"] and offloaded.fingerprint["offload_text_encoders"]


def test_an_encoder_call_that_fails_sends_the_encoder_back(monkeypatch):
    backbone = _offloaded("tiny-flux", monkeypatch)
    placements = Placements(backbone, monkeypatch)
    t5 = backbone.text_encoders.index(backbone.text_encoder_2)
    with pytest.raises(RuntimeError):
        backbone.text_encoder_2(torch.zeros(1, 3))  # float token ids: T5's embedding refuses them
    assert placements.during_encoding == [(backbone.device, backbone.device.type)]  # it was moved in for the call
    assert placements.where(t5) == (OFFLOAD, "cpu")  # and back, although the call failed
