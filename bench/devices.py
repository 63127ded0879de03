"""Which torch devices this machine has, and the one a ``device`` setting (``auto``, ``cpu``,
``mps``, ``cuda``, ``cuda:N``) resolves to: shared by the backbone, the metric extractors and
everything else that places a network."""

import torch

from bench.errors import ConfigError


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def available_devices() -> list[str]:
    """Devices this machine's torch can use, e.g. ``['cuda:0', 'cpu']``."""
    cuda = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return cuda + ["mps"] * _mps_available() + ["cpu"]


def resolve_device(device: str) -> torch.device:
    """The torch device for a ``backbone.device`` value; ``ConfigError`` naming the available
    devices when the machine has no such device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu")
    resolved = torch.device(device)
    usable = {
        "cuda": torch.cuda.is_available() and (resolved.index or 0) < torch.cuda.device_count(),
        "mps": _mps_available(),
    }.get(resolved.type, True)
    if not usable:
        raise ConfigError(
            f"backbone device {device!r} is not available on this machine; available: "
            f"{', '.join(available_devices())} (or auto)"
        )
    return resolved
