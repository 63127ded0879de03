"""Set-level distances between edited images and the dataset's source images: FID (Heusel
et al. 2017) and KID (Binkowski et al. 2018), torchmetrics' implementations over Inception-V3
pool features of images resized the way clean-fid does (``bench.metrics.extractors.clean_resize``).

The feature extractor runs once per image (shared by FID and KID); the metrics get the
features. FID's state is three running sums (streaming, constant memory); KID keeps the
features themselves, which its subset sampling needs (8 KB per image). FID is strongly
biased at a few hundred images: always read it with its n.
"""

import warnings

import torch

from bench.metrics import SetMetric

NAN_REASON = "fewer than 2 edited or fewer than 2 source images"


class GivenFeatures(torch.nn.Identity):
    """Lets torchmetrics' FID/KID take features computed elsewhere (shared by both)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features


class FID(SetMetric):
    name = "fid"
    higher_is_better = False
    needs = frozenset({"pretrained weights"})
    nan_reason = NAN_REASON
    description = "Frechet Inception distance of the edited images to the source images (clean-fid resize)"

    def start(self, real):
        from torchmetrics.image.fid import FrechetInceptionDistance

        self.tm = FrechetInceptionDistance(feature=GivenFeatures(real.shape[1]), reset_real_features=False).to(
            self.device
        )
        self.tm.update(real.to(self.device), real=True)

    def update(self, fake):
        self.tm.update(fake.to(self.device), real=False)

    def compute(self):
        if self.tm.real_features_num_samples < 2 or self.tm.fake_features_num_samples < 2:
            return float("nan")
        return float(self.tm.compute())


class KID(SetMetric):
    name = "kid"
    higher_is_better = False
    value_range = (float("-inf"), float("inf"))  # the unbiased estimate can dip below 0
    needs = frozenset({"pretrained weights"})
    nan_reason = NAN_REASON
    description = "kernel Inception distance (mean over seeded random subsets; subset size min(1000, n))"

    def load(self, extractors):
        super().load(extractors)
        o = extractors.options
        self.subsets, self.subset_size, self.seed = o.kid_subsets, o.kid_subset_size, o.seed

    def start(self, real):
        from torchmetrics.image.kid import KernelInceptionDistance

        with warnings.catch_warnings():  # "will save all extracted features": known, see the module docstring
            warnings.simplefilter("ignore", UserWarning)
            self.tm = KernelInceptionDistance(
                feature=GivenFeatures(real.shape[1]),
                subsets=self.subsets,
                subset_size=self.subset_size,
                reset_real_features=False,
            ).to(self.device)
        self.tm.update(real.to(self.device), real=True)

    def update(self, fake):
        self.tm.update(fake.to(self.device), real=False)

    def compute(self):
        n = min(sum(len(f) for f in self.tm.real_features), sum(len(f) for f in self.tm.fake_features))
        if n < 2:
            return float("nan")
        self.tm.subset_size = min(self.subset_size, n)
        with torch.random.fork_rng(devices=[]):  # torchmetrics draws its subsets with CPU randperm
            torch.random.default_generator.manual_seed(self.seed)
            mean, _ = self.tm.compute()
        return float(mean)


METRICS = (FID, KID)
