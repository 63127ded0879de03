"""Set-level distances between edited images and the dataset's source images: FID (Heusel
et al. 2017) and KID (Binkowski et al. 2018), torchmetrics' implementations over Inception-V3
pool features of images resized the way clean-fid does (``clean_resize``). The Inception
network (``inception_network``: clean-fid's TorchScript file or pytorch-fid's weights,
``metric_options.inception_weights``) and the set metrics' options are declared here.

The feature extractor runs once per image (shared by FID and KID); the metrics get the
features. FID's state is three running sums (streaming, constant memory); KID keeps the
features themselves, which its subset sampling needs (8 KB per image). FID is strongly
biased at a few hundred images: always read it with its n.
"""

import tempfile
import warnings
from pathlib import Path

import torch

from bench.metrics.base import SetMetric
from bench.metrics.extractors import network
from bench.metrics.offline import ExtractorMissing, ready, seeded, torch_hub_checkpoints
from bench.metrics.options import Option, positive_int
from bench.weights import file_digest
from bench.params import LOCAL

NAN_REASON = "fewer than 2 edited or fewer than 2 source images"
INCEPTION_TORCHSCRIPT = "inception-2015-12-05.pt"  # clean-fid's extractor (NVIDIA's port of TF Inception)
INCEPTION_FID_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid's port of the same weights
INCEPTION_DIM = 2048
INCEPTION_WEIGHTS = Option("inception_weights", str | None, None, "FID/KID's Inception-V3: a local file "
                           f"({INCEPTION_TORCHSCRIPT} or {INCEPTION_FID_WEIGHTS}); null: looked for in the torch hub "
                           "cache and clean-fid's download folder", path=LOCAL)  # fmt: skip
KID_SUBSETS = Option("kid_subsets", int, 100, "how many random subsets KID averages over", positive_int)
KID_SUBSET_SIZE = Option("kid_subset_size", int, 1000, "images per KID subset (at most the n of the set)",
                         positive_int)  # fmt: skip


def fid_inception() -> torch.nn.Module:
    """The FID Inception-V3 architecture (TF's graph: pytorch-fid/clean-fid's blocks), PyTorch's default init."""
    import torchvision
    from cleanfid import inception_pytorch as blocks

    net = torchvision.models.inception_v3(weights=None, num_classes=1008, aux_logits=False, init_weights=False)
    for name, block in {
        "Mixed_5b": blocks.FIDInceptionA(192, pool_features=32), "Mixed_5c": blocks.FIDInceptionA(256, pool_features=64),
        "Mixed_5d": blocks.FIDInceptionA(288, pool_features=64), "Mixed_6b": blocks.FIDInceptionC(768, channels_7x7=128),
        "Mixed_6c": blocks.FIDInceptionC(768, channels_7x7=160), "Mixed_6d": blocks.FIDInceptionC(768, channels_7x7=160),
        "Mixed_6e": blocks.FIDInceptionC(768, channels_7x7=192), "Mixed_7b": blocks.FIDInceptionE_1(1280),
        "Mixed_7c": blocks.FIDInceptionE_2(2048),
    }.items():  # fmt: skip
        setattr(net, name, block)
    net.fc = torch.nn.Identity()  # the 2048-d pool features
    return net


def _untrained_inception() -> torch.nn.Module:
    # torchvision's init (truncated normal, std 0.1) shrinks activations through the depth to
    # near-constant features; He init keeps their variance, so smoke FIDs still respond to images
    net = fid_inception()
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return net


def clean_resize(images: torch.Tensor) -> torch.Tensor:
    """clean-fid's "clean" resize: each channel of the uint8 image resized to 299x299 by PIL
    bicubic in float mode, clipped to [0, 255]. ``images`` (B, 3, H, W) in [0, 1]."""
    import numpy as np
    from cleanfid.resize import build_resizer

    resize = build_resizer("clean")
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = np.stack([resize(p) for p in pixels])
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


class InceptionFeatures(torch.nn.Module):
    """Images in [0, 1], any size -> (B, 2048) Inception pool features, after clean-fid's resize."""

    num_features = INCEPTION_DIM

    def __init__(self, net: torch.nn.Module, torchscript: bool):
        super().__init__()
        self.net, self.torchscript = net, torchscript

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        device = next(self.net.parameters()).device
        x = clean_resize(images).to(device)  # [0, 255]
        if self.torchscript:  # clean-fid's InceptionV3W: (x - 128) / 128 into the TF graph's layers
            return self.net.layers.forward((x - 128) / 128).view(x.shape[0], INCEPTION_DIM)
        return self.net(x / 255 * 2 - 1)


def load_inception(weights: str | None, untrained: bool, seed: int):
    """(InceptionFeatures, identity string for caches)."""
    if untrained:
        return InceptionFeatures(seeded(seed, _untrained_inception), False), f"untrained-fid-inception-seed{seed}"
    candidates = [Path(weights).expanduser()] if weights else []
    candidates += [torch_hub_checkpoints() / INCEPTION_TORCHSCRIPT, Path(tempfile.gettempdir()) / INCEPTION_TORCHSCRIPT,
                   torch_hub_checkpoints() / INCEPTION_FID_WEIGHTS]  # fmt: skip
    for path in candidates:
        if not path.is_file():
            continue
        identity = f"{path.name}:{file_digest(path)[:16]}"
        try:
            return InceptionFeatures(torch.jit.load(str(path), map_location="cpu").eval(), True), identity
        except RuntimeError:  # not TorchScript: a pytorch-fid state dict
            net = fid_inception()
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})  # strict: all or error
            return InceptionFeatures(net, False), identity
    raise ExtractorMissing(
        "FID/KID Inception-V3", f"{INCEPTION_TORCHSCRIPT} (clean-fid) or {INCEPTION_FID_WEIGHTS} (pytorch-fid)",
        [str(p) for p in candidates], "metric_options.inception_weights may name the file. ",
    )  # fmt: skip


@network(label=lambda weights: "Inception-V3")
def inception_network(weights: str | None, *, untrained: bool, seed: int, device):
    """(InceptionFeatures, its identity for caches) (see ``load_inception``)."""
    features, identity = load_inception(weights, untrained, seed)
    return ready(features, device), identity


class _InceptionDistance(SetMetric):
    """A distance between Inception features; FID and KID share one network."""

    options = (INCEPTION_WEIGHTS,)

    def load(self, extractors):
        super().load(extractors)
        self.features, self.extractor_id = extractors.get(inception_network, extractors.options.inception_weights,
                                                          metric=self.name)  # fmt: skip


class GivenFeatures(torch.nn.Identity):
    """Lets torchmetrics' FID/KID take features computed elsewhere (shared by both)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features


class FID(_InceptionDistance):
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


class KID(_InceptionDistance):
    name = "kid"
    higher_is_better = False
    value_range = (float("-inf"), float("inf"))  # the unbiased estimate can dip below 0
    needs = frozenset({"pretrained weights"})
    nan_reason = NAN_REASON
    options = (INCEPTION_WEIGHTS, KID_SUBSETS, KID_SUBSET_SIZE)
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
