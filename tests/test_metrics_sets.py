"""FID and KID equal torchmetrics (and FID equals clean-fid's ``fid_from_feats``) with the
same feature extractor; the Inception input is resized exactly as clean-fid resizes."""

import numpy as np
import pytest
import torch

from bench.metrics import get_metric
from bench.metrics import MetricOptions
from bench.metrics.distribution import clean_resize, inception_network
from bench.metrics.extractors import Extractors


class SmallFeatures(torch.nn.Module):
    """A fixed random feature extractor small enough for full-rank covariances at n = 40."""

    num_features = 6

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(48, self.num_features)
        torch.nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, images):
        return self.proj(torch.nn.functional.adaptive_avg_pool2d(images, 4).flatten(1))


def image_set(seed: int, n: int = 40, noise: float = 0.0, base_seed: int = 0) -> torch.Tensor:
    base = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(base_seed))
    g = torch.Generator().manual_seed(seed)
    return (base + noise * torch.randn(base.shape, generator=g)).clamp(0, 1)


EXTRACTORS = Extractors(MetricOptions(untrained_extractors=True))  # loads its Inception once, on first use


def ours(name: str, extractor, real: torch.Tensor, fake: torch.Tensor, **kid) -> float:
    """Our metric over ``extractor``'s features; ``kid`` overrides KID's subsets/subset_size/seed."""
    m = get_metric(name)()
    m.load(EXTRACTORS)
    for key, value in kid.items():
        setattr(m, key, value)
    with torch.no_grad():
        m.start(extractor(real))
        for half in fake.chunk(2):  # streamed in batches
            m.update(extractor(half))
    return m.compute()


def test_fid_equals_torchmetrics_and_clean_fid():
    from cleanfid.fid import fid_from_feats
    from torchmetrics.image.fid import FrechetInceptionDistance

    extractor = SmallFeatures()
    real, fake = image_set(1), image_set(2, noise=0.3, base_seed=5)
    value = ours("fid", extractor, real, fake)
    reference = FrechetInceptionDistance(feature=extractor, normalize=True)
    reference.update(real, real=True)
    reference.update(fake, real=False)
    assert value == pytest.approx(reference.compute().item(), rel=1e-5)
    with torch.no_grad():
        clean = fid_from_feats(extractor(real).double().numpy(), extractor(fake).double().numpy())
    assert value == pytest.approx(clean, rel=1e-4)
    assert value > 0.01  # two different sets: far from 0


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_perturbation():
    extractor = SmallFeatures()
    real = image_set(1)
    assert abs(ours("fid", extractor, real, real)) < 1e-4
    values = [ours("fid", extractor, real, image_set(2, noise=s)) for s in (0.05, 0.2, 0.5)]
    assert 1e-4 < values[0] < values[1] < values[2]
    assert np.isnan(ours("fid", extractor, real, real[:1])), "one edited image: NaN, not a number from nothing"


def test_kid_equals_torchmetrics_and_is_seeded():
    from torchmetrics.image.kid import KernelInceptionDistance

    extractor = SmallFeatures()
    real, fake = image_set(1), image_set(2, noise=0.3, base_seed=5)
    options = {"subsets": 20, "subset_size": 15, "seed": 4}
    value = ours("kid", extractor, real, fake, **options)
    reference = KernelInceptionDistance(feature=extractor, subsets=20, subset_size=15, normalize=True)
    reference.update(real, real=True)
    reference.update(fake, real=False)
    torch.manual_seed(4)
    assert value == pytest.approx(reference.compute()[0].item(), rel=1e-5)
    assert value == ours("kid", extractor, real, fake, **options), "same seed, same KID"
    assert value != ours("kid", extractor, real, fake, **{**options, "seed": 5})
    assert ours("kid", extractor, real, fake[:5], **options) == pytest.approx(
        ours("kid", extractor, real, fake[:5], **{**options, "subset_size": 5})
    ), "subset size is capped at the number of images"


def test_inception_input_is_resized_as_clean_fid_does():
    from cleanfid.resize import make_resizer

    images = image_set(3, n=2)
    images = torch.nn.functional.interpolate(images, size=(40, 56))  # not square
    ours_ = clean_resize(images)
    resize = make_resizer("PIL", False, "bicubic", (299, 299))
    for i in range(2):
        pixels = (images[i] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(ours_[i].permute(1, 2, 0).numpy(), resize(pixels))
    features, identity = EXTRACTORS.get(inception_network, None, metric="fid")
    with torch.no_grad():
        out = features(images)
    assert out.shape == (2, 2048) and torch.isfinite(out).all() and out.std(0).mean() > 0
    assert identity.startswith("untrained")
