"""DreamSim (Fu et al., "DreamSim: Learning New Dimensions of Human Visual Similarity using
Synthetic Data", NeurIPS 2023): the perceptual distance of the edited image to the source.

Computed by the ``dreamsim`` package itself, in its single-backbone ``open_clip_vitb32``
variant: its default ensemble builds DINO through ``torch.hub.load("facebookresearch/dino:main")``
(GitHub), while this variant builds its OpenCLIP ViT-B/32 from a local file. The package
downloads its checkpoints from GitHub releases when they are missing; we call it only on a
folder that already holds them (``metric_options.dreamsim_dir``: the unzipped
``dreamsim_open_clip_vitb32_checkpoint.zip``, i.e. ``open_clip_vitb32_pretrain.pth.tar`` and
``open_clip_vitb32_single_lora/``), so it never downloads.
"""

import contextlib
import io
import tempfile
from pathlib import Path

import torch

from bench.metrics.base import ImageMetric
from bench.metrics.extractors import network
from bench.metrics.offline import ExtractorMissing, ready
from bench.metrics.options import Option
from bench.paths import cache_dir
from bench.params import LOCAL

DREAMSIM_TYPE = "open_clip_vitb32"
DREAMSIM_FILES = (f"{DREAMSIM_TYPE}_pretrain.pth.tar", f"{DREAMSIM_TYPE}_single_lora/adapter_config.json")
# LoRA of the released single-backbone checkpoints (for the untrained build; B = 0: the identity)
UNTRAINED_LORA = {"r": 16, "lora_alpha": 0.5, "lora_dropout": 0.3, "bias": "none", "target_modules": ["qkv"]}
DREAMSIM_DIR = Option("dreamsim_dir", str, "./models", "the folder of DreamSim's unzipped open_clip_vitb32 "
                      "checkpoint (the package's own default)", path=LOCAL)  # fmt: skip


def write_untrained_folder(folder: Path, seed: int) -> Path:
    """A DreamSim checkpoint folder of the released layout with a seeded random OpenCLIP ViT-B/32
    (in the package's DINO-style layout, as ``load_open_clip_as_dino`` reads it) and a fresh LoRA."""
    from dreamsim.feature_extraction.vision_transformer import vit_base
    from dreamsim.model import PerceptualModel, dreamsim_args
    from peft import LoraConfig, get_peft_model

    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vit = vit_base(patch_size=32)
        vit.pos_drop = torch.nn.LayerNorm(vit.embed_dim)  # OpenCLIP's pre-norm, where the package puts it
        state = {**vit.state_dict(), "proj": torch.randn(vit.embed_dim, 512) / vit.embed_dim**0.5}
        torch.save({"state_dict": state}, folder / DREAMSIM_FILES[0])
        config = dreamsim_args["model_config"][DREAMSIM_TYPE]
        model = PerceptualModel(**config, device="cpu", load_dir=str(folder), normalize_embeds=True)
        get_peft_model(model, LoraConfig(**UNTRAINED_LORA)).save_pretrained(folder / f"{DREAMSIM_TYPE}_single_lora")
    return folder


def load_dreamsim(folder: Path, device):
    """The package's ``dreamsim(pretrained=True)`` on a complete local checkpoint folder: (model,
    its preprocessing of one PIL image: resized to 224x224, bicubic, to a [0, 1] tensor)."""
    from dreamsim import dreamsim

    with contextlib.redirect_stdout(io.StringIO()):  # its "Using cached <folder>" line; editbench reports its own
        return dreamsim(pretrained=True, device=str(device), cache_dir=str(folder), dreamsim_type=DREAMSIM_TYPE)


def untrained_folder(seed: int) -> Path:
    """The cached checkpoint folder of ``write_untrained_folder`` for ``seed`` (written once)."""
    folder = cache_dir() / f"dreamsim_untrained_seed{seed}"
    if not (folder / DREAMSIM_FILES[1]).is_file():  # written last
        try:
            write_untrained_folder(Path(tempfile.mkdtemp(dir=cache_dir())), seed).rename(folder)
        except OSError:  # another process wrote it first
            if not (folder / DREAMSIM_FILES[1]).is_file():
                raise
    return folder


@network(label=lambda folder: f"DreamSim {DREAMSIM_TYPE}")
def dreamsim_network(folder: str, *, untrained: bool, seed: int, device):
    """DreamSim's ``open_clip_vitb32`` (model, preprocessing) from ``folder``, built by the
    ``dreamsim`` package offline; untrained: a seeded folder of the same layout."""
    folder = untrained_folder(seed) if untrained else Path(folder).expanduser()
    missing = [name for name in DREAMSIM_FILES if not (folder / name).is_file()]
    if missing:
        raise ExtractorMissing(f"DreamSim {DREAMSIM_TYPE}", " and ".join(missing), [str(folder)],
                               "Unzip dreamsim_open_clip_vitb32_checkpoint.zip (the dreamsim release) "
                               "there or name its folder in metric_options.dreamsim_dir. ")  # fmt: skip
    model, preprocess = load_dreamsim(folder, device)
    return ready(model, device), preprocess


def as_pictures(images: torch.Tensor) -> list:
    """(B, 3, H, W) images in [0, 1] as PIL images (the saved PNG's pixels)."""
    from PIL import Image

    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(p) for p in pixels]


class DreamSim(ImageMetric):
    name = "dreamsim"
    higher_is_better = False
    value_range = (0.0, 2.0)  # 1 - cosine similarity
    needs = frozenset({"pretrained weights"})
    options = (DREAMSIM_DIR,)
    description = ("DreamSim distance of the edited image to the source: 1 - cos of the DreamSim-tuned "
                   "OpenCLIP ViT-B/32 embeddings (dreamsim package, metric_options.dreamsim_dir)")  # fmt: skip

    def load(self, extractors):
        self.device = extractors.device
        folder = extractors.options.dreamsim_dir
        self.model, self.preprocess = extractors.get(dreamsim_network, folder, metric=self.name)

    def compute(self, edited, source, samples):
        edited, source = ([self.preprocess(p) for p in as_pictures(x)] for x in (edited, source))
        return self.model(torch.cat(edited).to(self.device), torch.cat(source).to(self.device))


METRICS = (DreamSim,)
