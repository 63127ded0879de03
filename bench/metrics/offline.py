"""Where the metrics' pretrained weights come from: local places only, never the network.

A path given in ``metric_options``, the torch hub cache (``$TORCH_HOME/hub/checkpoints``), the
Hugging Face cache, or clean-fid's download folder. When weights are missing,
``ExtractorMissing`` names them, where they were looked for, and ``--untrained-extractors``;
with that flag each network is the same architecture with seeded random weights (``seeded``).
The loaders of every metric's networks (``bench.metrics.extractors.network``) and the judge's
local backend use these helpers.
"""

from pathlib import Path

import torch

from bench.errors import ConfigError
from bench.weights import only_bin_weights

UNTRAINED_FLAG = "--untrained-extractors"


class ExtractorMissing(ConfigError):
    """Pretrained weights of feature extractors are not available locally."""

    def __init__(self, what: str, weights: str, looked: list[str], hint: str = ""):
        self.items = [
            f"{what}: pretrained weights {weights} not found (looked in: {'; '.join(looked)}). {hint}".strip()
        ]
        super().__init__(self._message())

    def _message(self) -> str:
        return (
            "\n".join(self.items) + f"\nPut them there, or pass {UNTRAINED_FLAG} for seeded random weights of the "
            "same architecture (smoke numbers only, labelled untrained)."
        )

    @classmethod
    def merge(cls, errors: list["ExtractorMissing"]) -> "ExtractorMissing":
        """One error naming every missing extractor (each once)."""
        merged = errors[0]
        merged.items = list(dict.fromkeys(item for e in errors for item in e.items))
        merged.args = (merged._message(),)
        return merged


def torch_hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def seeded(seed: int, build):
    """``build()`` under a fixed seed, without touching the caller's random state."""
    with torch.random.fork_rng(devices=[]):  # modules are built on the CPU
        torch.random.default_generator.manual_seed(seed)
        return build()


def ready(module: torch.nn.Module, device) -> torch.nn.Module:
    """``module`` on ``device``, in eval mode, without gradients: how every metric runs a network."""
    return module.to(device).eval().requires_grad_(False)


def local_or_cached(name: str, load, what: str, weights: str):
    """``load(source, local_files_only=True)`` from a folder or the Hugging Face cache."""
    import transformers.utils.logging

    transformers.utils.logging.disable_progress_bar()  # editbench shows its own progress
    folder = Path(name).expanduser()
    source = str(folder) if folder.is_dir() else name
    problem = only_bin_weights(folder) if folder.is_dir() else None
    if problem:
        raise ExtractorMissing(what, weights, [str(folder)], problem)
    try:
        return load(source, local_files_only=True)
    except (OSError, ValueError) as exc:
        looked = (
            [str(folder)] if folder.is_dir() else [f"a local folder named {name!r}", f"Hugging Face cache {hf_cache()}"]
        )
        raise ExtractorMissing(
            what, weights, looked, f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}) "
        ) from exc


def local_or_hub_file(spec: str, what: str, weights: str, hint: str) -> Path:
    """A local file, or ``<hub repo>/<file>`` in the Hugging Face cache; ``ExtractorMissing`` otherwise."""
    path = Path(spec).expanduser()
    looked = [str(path)]
    if not path.is_file() and spec.count("/") >= 2:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = spec.rsplit("/", 1)
        cached = try_to_load_from_cache(repo, filename)
        looked = [f"a local file {spec!r}", f"Hugging Face cache {hf_cache()} ({repo}, {filename})"]
        path = Path(cached) if isinstance(cached, str) else path
    if not path.is_file():
        raise ExtractorMissing(what, weights, looked, hint)
    return path
