"""LPIPS (Zhang et al. 2018) with the ``lpips`` package: AlexNet by default, VGG or SqueezeNet
selectable (``metric_options.lpips_net``). The LPIPS network is declared here; the background
metrics (``bench.metrics.background``) run it too."""

import warnings
from pathlib import Path

import torch

from bench.metrics.base import ImageMetric
from bench.metrics.extractors import network
from bench.metrics.offline import ExtractorMissing, seeded, ready, torch_hub_checkpoints
from bench.metrics.options import Option, one_of

LPIPS_NETS = ("alex", "vgg", "squeeze")
LPIPS_NET = Option("lpips_net", str, "alex", "LPIPS network of lpips and lpips_bg_masked: alex, vgg or squeeze",
                   one_of(LPIPS_NETS, "LPIPS network"))  # fmt: skip


def lpips_weights_file(net: str) -> Path:
    """Where torchvision keeps the ImageNet backbone that LPIPS ``net`` loads."""
    import torchvision.models as tvm

    weights = {"alex": tvm.AlexNet_Weights, "vgg": tvm.VGG16_Weights, "squeeze": tvm.SqueezeNet1_1_Weights}[net]
    return torch_hub_checkpoints() / Path(weights.IMAGENET1K_V1.url).name


def load_lpips(net: str, untrained: bool, seed: int, spatial: bool = False):
    """``lpips.LPIPS`` with its shipped linear heads; the backbone pretrained or seeded random."""
    import lpips

    if not untrained:
        path = lpips_weights_file(net)
        if not path.is_file():
            raise ExtractorMissing(
                f"LPIPS ({net})", f"{path.name} (torchvision's ImageNet {net} backbone)", [str(path.parent)]
            )
    with warnings.catch_warnings():  # lpips still passes torchvision's deprecated ``pretrained=``
        warnings.simplefilter("ignore", UserWarning)

        def build():
            return lpips.LPIPS(net=net, pnet_rand=untrained, spatial=spatial, verbose=False)

        return seeded(seed, build) if untrained else build()


@network(label=lambda net, spatial: f"LPIPS {net} backbone")
def lpips_network(net: str, spatial: bool, *, untrained: bool, seed: int, device) -> torch.nn.Module:
    """LPIPS ``net``; ``spatial``: its per-pixel distance map instead of the mean."""
    return ready(load_lpips(net, untrained, seed, spatial), device)


def lpips_distance(net, edited, source):
    """LPIPS of images in [0, 1]: mapped to the [-1, 1] that ``lpips`` expects here, once.
    Returns (B,) for a plain network, (B, 1, H, W) for a ``spatial=True`` one."""
    out = net(edited * 2 - 1, source * 2 - 1)
    return out if getattr(net, "spatial", False) else out.flatten()


class LPIPS(ImageMetric):
    name = "lpips"
    higher_is_better = False
    needs = frozenset({"pretrained weights"})
    options = (LPIPS_NET,)
    description = "LPIPS distance of edited vs source (lpips package; net from metric_options.lpips_net, default alex)"

    def load(self, extractors):
        super().load(extractors)
        self.net = extractors.get(lpips_network, extractors.options.lpips_net, False, metric=self.name)

    def compute(self, edited, source, samples):
        return lpips_distance(self.net, edited, source)


METRICS = (LPIPS,)
