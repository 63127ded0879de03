"""DreamSim through the dreamsim package on a checkpoint folder of the released layout
(seeded random OpenCLIP ViT-B/32 and a perturbed LoRA): the batched metric against the
package's model and preprocessing called pair by pair on PIL images."""

import pytest
import torch

from bench.data import Sample
from bench.metrics import get_metric
from bench.metrics import MetricOptions
from bench.metrics.extractors import Extractors
from bench.metrics.offline import ExtractorMissing


@pytest.fixture(scope="module")
def dreamsim_folder(tmp_path_factory):
    """The released folder layout, LoRA weights moved off their zero init so the adapter matters."""
    from safetensors.torch import load_file, save_file

    from bench.metrics import dreamsim_distance as ds

    folder = ds.write_untrained_folder(tmp_path_factory.mktemp("dreamsim"), seed=4)
    adapter = folder / f"{ds.DREAMSIM_TYPE}_single_lora" / "adapter_model.safetensors"
    g = torch.Generator().manual_seed(5)
    weights = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in load_file(adapter).items()}
    assert weights and all("lora_" in k for k in weights)
    save_file(weights, adapter)
    return folder


def test_dreamsim_equals_the_packages_distance_pair_by_pair(dreamsim_folder):
    from PIL import Image

    metric = get_metric("dreamsim")()
    metric.load(Extractors(MetricOptions(dreamsim_dir=str(dreamsim_folder))))
    g = torch.Generator().manual_seed(0)
    pixels = (torch.rand(2, 2, 3, 40, 48, generator=g) * 255).round().to(torch.uint8)
    samples = [Sample(f"s{i}", torch.zeros(3, 40, 48), "a", "b") for i in range(2)]
    ours = metric(pixels[0].float() / 255, pixels[1].float() / 255, samples)

    def picture(x):  # the package's README usage: preprocess(Image.open(path))
        return metric.preprocess(Image.fromarray(x.permute(1, 2, 0).numpy()))

    with torch.no_grad():
        expected = torch.cat([metric.model(picture(a), picture(b)) for a, b in zip(pixels[0], pixels[1])])
    torch.testing.assert_close(ours, expected.double(), atol=1e-5, rtol=1e-5)
    assert (ours > 0).all()
    same = metric(pixels[0].float() / 255, pixels[0].float() / 255, samples)
    torch.testing.assert_close(same, torch.zeros_like(same), atol=1e-5, rtol=0)
    lora = sum(p.abs().sum() for n, p in metric.model.named_parameters() if "lora_B" in n)
    assert lora > 0  # the perturbed adapter was loaded, not a fresh one


def test_dreamsim_missing_folder_names_the_files(tmp_path):
    metric = get_metric("dreamsim")()
    with pytest.raises(ExtractorMissing, match="(?s)open_clip_vitb32_pretrain.pth.tar.*dreamsim_dir"):
        metric.load(Extractors(MetricOptions(dreamsim_dir=str(tmp_path))))


@pytest.mark.slow
def test_untrained_dreamsim_is_built_by_the_package_and_labelled():
    extractors = Extractors(MetricOptions(untrained_extractors=True))
    metric = get_metric("dreamsim")()
    metric.load(extractors)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    values = metric(images, images.flip(0), [Sample(f"s{i}", images[i], "a", "b") for i in range(2)])
    assert torch.isfinite(values).all() and (values > 0).all()
    assert any("DreamSim" in label for label in extractors.labels())
