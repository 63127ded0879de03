"""LPIPS (Zhang et al. 2018) with the ``lpips`` package: AlexNet by default, VGG or SqueezeNet
selectable (``metric_options.lpips_net``)."""

from bench.metrics import ImageMetric


def lpips_distance(net, edited, source):
    """LPIPS of images in [0, 1]: mapped to the [-1, 1] that ``lpips`` expects here, once.
    Returns (B,) for a plain network, (B, 1, H, W) for a ``spatial=True`` one."""
    out = net(edited * 2 - 1, source * 2 - 1)
    return out if getattr(net, "spatial", False) else out.flatten()


class LPIPS(ImageMetric):
    name = "lpips"
    higher_is_better = False
    needs = frozenset({"pretrained weights"})
    description = "LPIPS distance of edited vs source (lpips package; net from metric_options.lpips_net, default alex)"

    def load(self, extractors):
        super().load(extractors)
        self.net = extractors.lpips(extractors.options.lpips_net, self.name)

    def compute(self, edited, source, samples):
        return lpips_distance(self.net, edited, source)


METRICS = (LPIPS,)
