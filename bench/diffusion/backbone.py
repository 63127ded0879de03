"""One Stable Diffusion backbone shared by every method.

``Backbone`` loads the components of a diffusers SD 1.x/2.x pipeline (UNet, VAE, text
encoder, tokenizer, scheduler config) with ``from_pretrained`` from a local folder or a hub
id (safetensors only; ``HF_HUB_OFFLINE=1`` is honoured by huggingface_hub), and offers what
methods share: cached text embeddings, image encode/decode, a fresh scheduler per cell, an
NFE counter on the UNet, and a fingerprint that every cache key includes.
"""

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from bench.devices import resolve_device
from bench.errors import ConfigError, did_you_mean, unknown
from bench.weights import file_digest, only_bin_weights

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
WEIGHT_FILES = {
    "unet": "diffusion_pytorch_model.safetensors",
    "vae": "diffusion_pytorch_model.safetensors",
    "text_encoder": "model.safetensors",
}
UNTRAINED_LABEL = "untrained backbone"


def scheduler_classes() -> dict:
    from diffusers import DDIMScheduler

    return {"ddim": DDIMScheduler}


@dataclass(frozen=True)
class BackboneSpec:
    """Which backbone to load and how.

    ``name`` is ``tiny`` (the embedded untrained default), a local pipeline folder, or a hub id.
    ``resolution`` defaults to the UNet's native size (``sample_size`` x VAE factor).
    """

    name: str = "tiny"
    revision: str | None = None
    device: str = "auto"
    dtype: str = "fp32"
    resolution: int | None = None
    scheduler: str = "ddim"

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ConfigError(unknown("backbone dtype", self.dtype, DTYPES))
        if self.scheduler not in scheduler_classes():
            raise ConfigError(unknown("backbone scheduler", self.scheduler, scheduler_classes()))
        if self.device not in ("auto", "cpu", "mps") and not self.device.startswith("cuda"):
            raise ConfigError(f"backbone device {self.device!r} is not allowed; expected auto, cpu, mps, cuda or cuda:N")
        if self.resolution is not None and (self.resolution < 64 or self.resolution % 64):
            raise ConfigError(f"backbone resolution {self.resolution} is not allowed; expected a multiple of 64")

    @property
    def is_tiny(self) -> bool:
        return self.name == "tiny"


def _pipeline_folder(spec: BackboneSpec) -> Path:
    """A local folder holding the pipeline's files: built, given, or fetched/cached from the hub."""
    if spec.is_tiny:
        from bench.diffusion.tiny import tiny_backbone_dir

        return tiny_backbone_dir()
    local = Path(spec.name).expanduser()
    if local.is_dir():
        if not (local / "unet" / "config.json").is_file():
            raise ConfigError(f"backbone folder {spec.name!r} is not a diffusers pipeline folder (no unet/config.json)")
        return local
    if _looks_like_path(spec.name):
        raise ConfigError(_missing_folder_message(spec.name))
    from huggingface_hub import snapshot_download

    patterns = ["model_index.json", "scheduler/*", "tokenizer/*"]
    for sub, weights in WEIGHT_FILES.items():
        patterns += [f"{sub}/config.json", f"{sub}/{weights}"]
    try:
        return Path(snapshot_download(spec.name, revision=spec.revision, allow_patterns=patterns))
    except Exception as exc:  # offline without a cached copy, unknown repo, no network...
        raise ConfigError(
            f"backbone {spec.name!r}: not a local folder, and the hub snapshot could not be loaded "
            f"({type(exc).__name__}: {exc}). Use a local pipeline folder, or 'tiny' for the embedded untrained backbone."
        ) from exc


def _looks_like_path(name: str) -> bool:
    """A name a hub id can never be (hub ids are ``repo`` or ``namespace/repo``)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _missing_folder_message(name: str) -> str:
    """What is wrong with a backbone folder that does not exist, and which pipeline folders are nearby."""
    parent = Path(name).expanduser().parent
    nearby = sorted(p.name for p in parent.iterdir() if (p / "unet" / "config.json").is_file()) if parent.is_dir() else []
    hint = did_you_mean(Path(name).name, nearby)
    where = f"pipeline folders in {parent}: {', '.join(nearby)}" if nearby else f"no pipeline folder in {parent}"
    return f"backbone folder {name!r} does not exist{hint}; {where}; or use 'tiny' or a hub id"


def pipeline_fingerprint(spec: BackboneSpec, folder: Path, scheduler_config: dict) -> dict:
    """The backbone's identity (every cache key includes its ``id``): source, dtype, scheduler
    and the weights' sha256; computed from the pipeline folder's files, no weights loaded."""
    weights = {sub: file_digest(folder / sub / f) for sub, f in WEIGHT_FILES.items()}
    scheduler = {k: v for k, v in dict(scheduler_config).items() if not k.startswith("_")}
    fields = {
        "source": spec.name,
        "revision": spec.revision,
        "dtype": spec.dtype,
        "scheduler": spec.scheduler,
        "scheduler_config": scheduler,
        "weights_sha256": weights,
    }
    fields["id"] = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return fields


@dataclass(frozen=True)
class BackboneIdentity:
    """What disk-cache keys need of a backbone, known without loading it."""

    fingerprint_id: str
    resolution: int


def identity_on_disk(spec: BackboneSpec) -> BackboneIdentity | None:
    """The fingerprint and resolution of a tiny or local-folder backbone from its files alone;
    None when its folder is not on disk yet (or it is a hub id, which is not looked up)."""
    if spec.is_tiny:
        from bench.diffusion.tiny import tiny_folder

        folder = tiny_folder()
    else:
        folder = Path(spec.name).expanduser()
    if not (folder / "model_index.json").is_file():
        return None
    scheduler_config = scheduler_classes()[spec.scheduler].load_config(folder, subfolder="scheduler")
    unet, vae = (json.loads((folder / sub / "config.json").read_text()) for sub in ("unet", "vae"))
    resolution = spec.resolution or unet["sample_size"] * 2 ** (len(vae["block_out_channels"]) - 1)
    return BackboneIdentity(pipeline_fingerprint(spec, folder, scheduler_config)["id"], resolution)


class NFECounter:
    """Counts UNet evaluations, one per latent in the batch (a CFG step of batch 1 is 2 NFE)."""

    def __init__(self, unet: torch.nn.Module):
        self.count = 0
        self.watch(unet)

    def watch(self, unet: torch.nn.Module) -> None:
        """Count ``unet``'s evaluations too (a method's own UNet beside the backbone's)."""
        unet.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        self.count += int(sample.shape[0])


class Backbone:
    """The loaded components plus the shared services methods use."""

    def __init__(self, spec: BackboneSpec = BackboneSpec()):
        import diffusers.utils.logging
        import transformers.utils.logging
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        # editbench shows its own progress; the libraries' per-file loading bars are noise here
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
        self.spec = spec
        self.device = resolve_device(spec.device)
        self.dtype = DTYPES[spec.dtype]
        self.folder = _pipeline_folder(spec)
        for sub in WEIGHT_FILES:
            problem = only_bin_weights(self.folder / sub)
            if problem:
                raise ConfigError(f"backbone {spec.name!r}: sub-folder {sub!r} cannot be loaded: {problem}")
        common = dict(use_safetensors=True, torch_dtype=self.dtype)
        self.unet = UNet2DConditionModel.from_pretrained(self.folder, subfolder="unet", **common)
        self.vae = AutoencoderKL.from_pretrained(self.folder, subfolder="vae", **common)
        self.text_encoder = CLIPTextModel.from_pretrained(self.folder, subfolder="text_encoder", **common)
        self.tokenizer = CLIPTokenizer.from_pretrained(self.folder, subfolder="tokenizer")
        scheduler_cls = scheduler_classes()[spec.scheduler]
        self.scheduler_config = scheduler_cls.load_config(self.folder, subfolder="scheduler")
        self._scheduler_cls = scheduler_cls
        for module in (self.unet, self.vae, self.text_encoder):
            module.to(self.device).eval().requires_grad_(False)
        self.vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.resolution = spec.resolution or self.unet.config.sample_size * self.vae_factor
        if self.resolution % (8 * self.vae_factor):
            raise ConfigError(f"backbone resolution {self.resolution} must be a multiple of {8 * self.vae_factor}")
        self.latent_size = self.resolution // self.vae_factor
        self.nfe = NFECounter(self.unet)
        self._text_cache: dict[str, torch.Tensor] = {}
        self.labels = [UNTRAINED_LABEL] if spec.is_tiny else []
        self.fingerprint = pipeline_fingerprint(spec, self.folder, self.scheduler_config)
        # networks beside the backbone, loaded once by bench.diffusion.extra_networks.load_network
        self.extra_networks: dict[tuple, tuple] = {}

    # -- identity ---------------------------------------------------------------------------
    @property
    def fingerprint_id(self) -> str:
        return self.fingerprint["id"]

    # -- services ---------------------------------------------------------------------------
    def new_scheduler(self, steps: int):
        """A fresh scheduler with ``steps`` inference timesteps (never shared between cells)."""
        scheduler = self._scheduler_cls.from_config(self.scheduler_config)
        scheduler.set_timesteps(steps, device=self.device)
        return scheduler

    @torch.no_grad()
    def encode_text(self, prompt: str) -> torch.Tensor:
        """(1, 77, D) CLIP hidden states for ``prompt``, as SD pipelines compute them; cached."""
        if prompt not in self._text_cache:
            ids = self.tokenizer(
                prompt,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(self.device)
            self._text_cache[prompt] = self.text_encoder(ids)[0].to(self.dtype)
        return self._text_cache[prompt]

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Latent ``z0 = E(x) * scaling_factor`` of (B, 3, H, W) images in [0, 1].

        Uses the posterior mean, so a sample's source latent is deterministic and shared by
        every method and seed (diffusers' img2img samples the posterior instead).
        """
        x = image.to(self.device, self.dtype) * 2 - 1
        return self.vae.encode(x).latent_dist.mean * self.vae.config.scaling_factor

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [0, 1] from latents (differentiable; wrap in no_grad if unneeded)."""
        x = self.vae.decode(latent.to(self.dtype) / self.vae.config.scaling_factor).sample
        return (x / 2 + 0.5).clamp(0, 1)

    def eps(self, latent: torch.Tensor, t, text: torch.Tensor, **unet_kwargs) -> torch.Tensor:
        """UNet noise prediction for a batch of latents and matching text embeddings."""
        return self.unet(latent, t, encoder_hidden_states=text, **unet_kwargs).sample

    def describe(self) -> dict:
        return {
            "spec": asdict(self.spec),
            "folder": str(self.folder),
            "device": str(self.device),
            "resolution": self.resolution,
            "fingerprint": self.fingerprint,
            "extra_networks": self.extra_fingerprints(),
            "labels": self.labels,
        }

    def extra_fingerprints(self) -> dict[str, dict]:
        """Fingerprints of the extra networks loaded beside the backbone, by ``kind:source``."""
        networks = [network.fingerprint for _, network in self.extra_networks.values()]
        return {f"{fp['kind']}:{fp['source']}": fp for fp in networks}
