"""One Stable Diffusion backbone shared by every method.

``Backbone`` loads the components of a diffusers pipeline of one family (SD 1.x/2.x, SDXL or
SD3/3.5 or FLUX.1: ``bench.diffusion.families``, read from ``model_index.json``) with ``from_pretrained``
from a local folder or a hub id (safetensors only; ``HF_HUB_OFFLINE=1`` is honoured by
huggingface_hub), and offers what methods share: cached text conditionings, image
encode/decode, the denoiser's prediction (``eps``: noise for UNets, velocity for SD3), a fresh
scheduler per cell, an NFE counter on the denoiser, and a fingerprint (family included) that
every cache key includes.
"""

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from bench.devices import resolve_device
from bench.diffusion.families import PIPELINE_FAMILIES, family_of_folder, get_family, official_pipeline_class
from bench.diffusion.offload import model_cpu_offload, offload_encoders
from bench.errors import ConfigError, did_you_mean, unknown
from bench.method import StepRules
from bench.samples import Frame, ResolutionPolicy
from bench.weights import file_digest, only_bin_weights

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
UNTRAINED_LABEL = "untrained backbone"
#: What a hub model id looks like (``owner/name``); any other name that is neither embedded nor a folder is refused
#: before any hub lookup (which would retry for half a minute offline).
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def scheduler_classes() -> dict:
    from diffusers import DDIMScheduler

    return {"ddim": DDIMScheduler}


@dataclass(frozen=True)
class BackboneSpec:
    """Which backbone to load and how.

    ``name`` is ``tiny`` (the embedded untrained default), a local pipeline folder, or a hub id.
    ``dtype``: ``auto`` (fp32, except the family's ``CUDA_DTYPE`` on CUDA: bf16 for FLUX.1, whose
    12B transformer and T5-XXL do not fit fp32 on one GPU), or ``fp32``/``fp16``/``bf16``.
    ``resolution`` defaults to the denoiser's native size (``sample_size`` x VAE factor).
    ``text_encoder_3``: ``auto`` (load T5 when the pipeline has it) or ``none`` (SD3: T5's part of
    the conditioning is zeros, as diffusers allows). ``offload_text_encoders``: keep the text (and
    vision-language) encoders on the CPU and move each to the device only for its forward call,
    the denoiser and VAE staying resident (``bench.diffusion.offload``; every family, instruction
    editors included; the backbone encodes each prompt once and caches it). ``true_cfg_scale``
    (FLUX only): above 1, every guided step adds classifier-free guidance on top of the distilled
    guidance, with the unconditional prompt as the negative (diffusers'
    ``FluxPipeline(true_cfg_scale=..., negative_prompt="")``; twice the NFE).
    ``cpu_offload``: diffusers' model CPU offload (``enable_model_cpu_offload``): every network stays
    on the CPU and moves to the device only while it runs, one at a time (text encoders, denoiser,
    VAE): the peak GPU memory is the largest network's, at the cost of a transfer per call.
    """

    name: str = "tiny"
    revision: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    resolution: int | None = None
    scheduler: str = "ddim"
    text_encoder_3: str = "auto"
    offload_text_encoders: bool = False
    true_cfg_scale: float = 1.0
    cpu_offload: bool = False

    def __post_init__(self):
        if self.text_encoder_3 not in ("auto", "none"):
            raise ConfigError(f"backbone text_encoder_3 {self.text_encoder_3!r} is not allowed; expected auto or none")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ConfigError(unknown("backbone dtype", self.dtype, DTYPES))
        if self.scheduler not in scheduler_classes():
            raise ConfigError(unknown("backbone scheduler", self.scheduler, scheduler_classes()))
        if self.device not in ("auto", "cpu", "mps") and not self.device.startswith("cuda"):
            raise ConfigError(f"backbone device {self.device!r} is not allowed; expected auto, cpu, mps, cuda or cuda:N")
        if self.cpu_offload and self.offload_text_encoders:
            raise ConfigError("backbone cpu_offload already offloads the text encoders; drop offload_text_encoders")
        if self.true_cfg_scale < 1:
            raise ConfigError(f"backbone true_cfg_scale {self.true_cfg_scale} is not allowed; expected >= 1 (1: off)")
        if self.resolution is not None and (self.resolution < 64 or self.resolution % 64):
            raise ConfigError(f"backbone resolution {self.resolution} is not allowed; expected a multiple of 64")
        if not (self.is_tiny or _looks_like_path(self.name) or HUB_ID.fullmatch(self.name)
                or Path(self.name).expanduser().is_dir()):  # fmt: skip
            raise ConfigError(_unknown_name_message(self.name))

    @property
    def is_tiny(self) -> bool:
        from bench.diffusion.tiny import TINY_BACKBONES

        return self.name in TINY_BACKBONES


def _pipeline_folder(spec: BackboneSpec) -> Path:
    """A local folder holding the pipeline's files: built, given, or fetched/cached from the hub."""
    if spec.is_tiny:
        from bench.diffusion.tiny import tiny_backbone_dir

        return tiny_backbone_dir(spec.name)
    local = Path(spec.name).expanduser()
    if local.is_dir():
        if not _is_pipeline_folder(local):
            raise ConfigError(f"backbone folder {spec.name!r} is not a diffusers pipeline folder (no unet/ or transformer/ config.json)")
        return local
    if _looks_like_path(spec.name):
        raise ConfigError(_missing_folder_message(spec.name))
    from huggingface_hub import hf_hub_download, snapshot_download

    try:
        family = get_family(family_of_folder(Path(hf_hub_download(spec.name, "model_index.json", revision=spec.revision)).parent))
        return Path(snapshot_download(spec.name, revision=spec.revision, allow_patterns=family.hub_patterns(spec)))
    except Exception as exc:  # offline without a cached copy, unknown repo, no network...
        from bench.diffusion.tiny import TINY_BACKBONES

        raise ConfigError(
            f"backbone {spec.name!r}: not a local folder, and the hub snapshot could not be loaded "
            f"({type(exc).__name__}: {exc}). Use a local pipeline folder, or an embedded untrained backbone "
            f"({', '.join(sorted(TINY_BACKBONES))})."
        ) from exc


def _is_pipeline_folder(folder: Path) -> bool:
    return any((folder / sub / "config.json").is_file() for sub in ("unet", "transformer"))


def _looks_like_path(name: str) -> bool:
    """A name a hub id can never be (hub ids are ``repo`` or ``namespace/repo``)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _unknown_name_message(name: str) -> str:
    """What a backbone name that is no embedded name, folder or hub id could have meant."""
    from bench.diffusion.tiny import TINY_BACKBONES

    embedded = sorted(TINY_BACKBONES)
    return (f"backbone {name!r} is not an embedded backbone, a folder or a hub id (owner/name)"
            f"{did_you_mean(name, embedded)}; embedded: {', '.join(embedded)}")  # fmt: skip


def _missing_folder_message(name: str) -> str:
    """What is wrong with a backbone folder that does not exist, and which pipeline folders are nearby."""
    parent = Path(name).expanduser().parent
    nearby = sorted(p.name for p in parent.iterdir() if _is_pipeline_folder(p)) if parent.is_dir() else []
    hint = did_you_mean(Path(name).name, nearby)
    where = f"pipeline folders in {parent}: {', '.join(nearby)}" if nearby else f"no pipeline folder in {parent}"
    return f"backbone folder {name!r} does not exist{hint}; {where}; or use 'tiny' or a hub id"


def _weights_digest(path: Path) -> str:
    """sha256 of a weights file; of a sharded one (``<name>.safetensors.index.json``), its shards' digests."""
    index = path.with_name(path.name + ".index.json")
    if path.is_file() or not index.is_file():
        return file_digest(path)
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    return hashlib.sha256(" ".join(file_digest(path.parent / s) for s in shards).encode()).hexdigest()


def dtype_name(spec: BackboneSpec, family_name: str, device: torch.device) -> str:
    """The dtype a backbone loads in: ``spec.dtype``, or for ``auto`` the family's ``CUDA_DTYPE`` on CUDA, else fp32."""
    if spec.dtype != "auto":
        return spec.dtype
    return getattr(get_family(family_name), "CUDA_DTYPE", "fp32") if device.type == "cuda" else "fp32"


def pipeline_fingerprint(
    spec: BackboneSpec, folder: Path, scheduler_config: dict, family_name: str = "sd", dtype: str | None = None
) -> dict:
    """The backbone's identity (every cache key includes its ``id``): family, source, dtype,
    scheduler, the text-encoder options and the weights' sha256; computed from the pipeline
    folder's files, no weights loaded."""
    family = get_family(family_name)
    dtype = dtype or dtype_name(spec, family_name, resolve_device(spec.device))
    weights = {sub: _weights_digest(folder / sub / f) for sub, f in family.weight_files(spec).items()}
    scheduler = {k: v for k, v in dict(scheduler_config).items() if not k.startswith("_")}
    fields = {
        "source": spec.name,
        "revision": spec.revision,
        "dtype": dtype,  # resolved: an ``auto`` that loads fp32 keeps the ids of runs that said fp32
        "scheduler": family.scheduler_name(spec),
        "scheduler_config": scheduler,
        "weights_sha256": weights,
    }
    if family_name != "sd":  # SD 1.x/2.x ids stay as before families existed, so their caches and runs stay valid
        fields.update(family=family_name, text_encoder_3=spec.text_encoder_3,
                      offload_text_encoders=spec.offload_text_encoders)
        if hasattr(family, "pipeline_options"):  # model_index.json settings that change results (SDXL)
            fields.update(family.pipeline_options(folder))
        if family_name == "flux":
            fields.update(true_cfg_scale=spec.true_cfg_scale)
    fields["id"] = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return fields


@dataclass(frozen=True)
class BackboneIdentity:
    """What disk-cache keys need of a backbone, known without loading it."""

    fingerprint_id: str
    resolution: int
    size_rule: dict | None = None  # the family's own resolution rule (``SIZE_RULE``), for ``ResolutionPolicy.frame``

    def frame(self, policy: ResolutionPolicy) -> Frame:
        """The size rule its samples are prepared by under ``policy``."""
        return policy.frame(self.resolution, self.size_rule)


def identity_on_disk(spec: BackboneSpec) -> BackboneIdentity | None:
    """The fingerprint and resolution of a tiny or local-folder backbone from its files alone;
    None when its folder is not on disk yet (or it is a hub id, which is not looked up)."""
    folder = folder_on_disk(spec)
    if folder is None:
        return None
    family_name = family_of_folder(folder)
    family = get_family(family_name)
    scheduler_config = family.scheduler_class(spec).load_config(folder, subfolder="scheduler")
    denoiser, vae = (json.loads((folder / sub / "config.json").read_text()) for sub in (family.DENOISER, "vae"))
    resolution = spec.resolution or native_resolution(family, denoiser, vae)
    return BackboneIdentity(pipeline_fingerprint(spec, folder, scheduler_config, family_name)["id"], resolution,
                            getattr(family, "SIZE_RULE", None))


def native_resolution(family, denoiser_config: dict, vae_config: dict) -> int:
    """The pixel size a family's pipeline makes by default: the denoiser's ``sample_size`` x the VAE
    factor, unless the family says otherwise (FLUX's transformer has no sample size)."""
    if hasattr(family, "native_resolution"):
        return family.native_resolution(denoiser_config, vae_config)
    return denoiser_config["sample_size"] * 2 ** (len(vae_config["block_out_channels"]) - 1)


def step_rules(spec: BackboneSpec, family=None) -> StepRules:
    """The backbone's ``StepRules`` (NFE per guided step, steps of a start level): its family's, known
    without loading it; SD's for a hub id of unknown family (``known_family``)."""
    if family is None:
        name = known_family(spec)
        family = None if name is None else get_family(name)
    return family.step_rules(spec) if hasattr(family, "step_rules") else StepRules()


def known_family(spec: BackboneSpec) -> str | None:
    """The family of a backbone known without loading it or the network: tiny names, local folders,
    hub ids whose ``model_index.json`` is in the hub cache, official hub ids (``OFFICIAL_HUB_IDS``); None otherwise."""
    return family_on_disk(spec) or _cached_hub_family(spec) or PIPELINE_FAMILIES.get(known_pipeline_class(spec))


def known_pipeline_class(spec: BackboneSpec) -> str | None:
    """The pipeline class (``model_index.json``'s ``_class_name``) of a backbone, known without loading it or
    the network: from its config folder (``config_folder``), else for an official hub id from
    ``OFFICIAL_HUB_IDS``; None otherwise."""
    folder = config_folder(spec)
    if folder is not None:
        index = folder / "model_index.json"
        return json.loads(index.read_text()).get("_class_name") if index.is_file() else None
    return None if spec.is_tiny or Path(spec.name).expanduser().is_dir() else official_pipeline_class(spec.name)


def _cached_hub_family(spec: BackboneSpec) -> str | None:
    """The family of a hub id from the hub cache's ``model_index.json`` (no network); None when absent."""
    folder = hub_config_folder(spec)
    return None if folder is None else family_of_folder(folder)


def hub_config_folder(spec: BackboneSpec) -> Path | None:
    """The hub cache's snapshot folder of a hub id whose ``model_index.json`` is cached (its configs
    may be there without its weights); None otherwise. No network."""
    from huggingface_hub import try_to_load_from_cache

    try:
        index = try_to_load_from_cache(spec.name, "model_index.json", revision=spec.revision)
    except Exception:  # not a valid repo id
        return None
    return Path(index).parent if isinstance(index, str) else None


def folder_on_disk(spec: BackboneSpec) -> Path | None:
    """The pipeline folder of a tiny or local-folder backbone when it is on disk, else None."""
    if spec.is_tiny:
        from bench.diffusion.tiny import tiny_folder

        folder = tiny_folder(spec.name)
    else:
        folder = Path(spec.name).expanduser()
    return folder if (folder / "model_index.json").is_file() else None


def config_folder(spec: BackboneSpec) -> Path | None:
    """A folder holding the backbone's configs, without loading weights or the network: a tiny one
    (built on first use), a local pipeline folder, or a hub id's snapshot in the hub cache; else None."""
    if spec.is_tiny:
        from bench.diffusion.tiny import tiny_backbone_dir

        return tiny_backbone_dir(spec.name)
    return folder_on_disk(spec) or hub_config_folder(spec)


def family_on_disk(spec: BackboneSpec) -> str | None:
    """The family of a backbone known without loading it (tiny names, local folders); None for a hub id."""
    from bench.diffusion.tiny import TINY_BACKBONES

    if spec.is_tiny:
        return TINY_BACKBONES[spec.name]
    folder = folder_on_disk(spec)
    return None if folder is None else family_of_folder(folder)


class NFECounter:
    """Counts denoiser (UNet or transformer) evaluations, one per latent in the batch (a CFG step of batch 1 is 2 NFE)."""

    def __init__(self, unet: torch.nn.Module):
        self.count = 0
        self.watch(unet)

    def watch(self, unet: torch.nn.Module) -> None:
        """Count ``unet``'s evaluations too (a method's own UNet beside the backbone's)."""
        unet.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        self.count += int(sample.shape[0])


class Backbone:
    """The loaded components plus the shared services methods use."""

    def __init__(self, spec: BackboneSpec = BackboneSpec()):
        import diffusers.utils.logging
        import transformers.utils.logging

        # editbench shows its own progress; the libraries' per-file loading bars are noise here
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
        self.spec = spec
        self.device = resolve_device(spec.device)
        self.folder = _pipeline_folder(spec)
        self.family_name = family_of_folder(self.folder)
        self.family = get_family(self.family_name)
        self.dtype_name = dtype_name(spec, self.family_name, self.device)
        self.dtype = DTYPES[self.dtype_name]
        if spec.text_encoder_3 != "auto" and self.family_name != "sd3":
            raise ConfigError(f"backbone text_encoder_3 applies to SD3/3.5 only; {spec.name!r} is {self.family_name}")
        if spec.true_cfg_scale != 1 and self.family_name != "flux":
            raise ConfigError(f"backbone true_cfg_scale applies to FLUX.1 only; {spec.name!r} is {self.family_name}")
        for sub in self.family.weight_files(spec):
            problem = only_bin_weights(self.folder / sub)
            if problem:
                raise ConfigError(f"backbone {spec.name!r}: sub-folder {sub!r} cannot be loaded: {problem}")
        self.family.load(self, dict(use_safetensors=True, torch_dtype=self.dtype))
        self.text_encoders = [m for m in self.networks if m is not self.denoiser and m is not self.vae]
        for module in self.networks:
            module.eval().requires_grad_(False)
        if spec.cpu_offload:
            model_cpu_offload([*self.text_encoders, self.denoiser, self.vae], self.device)
        elif spec.offload_text_encoders:
            self.denoiser.to(self.device)
            self.vae.to(self.device)
            offload_encoders(self.text_encoders, self.device)
        else:
            for module in self.networks:
                module.to(self.device)
        self.vae_factor = getattr(self.family, "VAE_FACTOR", None) or 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.resolution = spec.resolution or native_resolution(self.family, dict(self.denoiser.config), dict(self.vae.config))
        if self.resolution % (8 * self.vae_factor):
            raise ConfigError(f"backbone resolution {self.resolution} must be a multiple of {8 * self.vae_factor}")
        self.latent_size = self.resolution // self.vae_factor
        self.nfe = NFECounter(self.denoiser)
        self.step_rules = step_rules(spec, self.family)
        self._text_cache: dict[str, torch.Tensor] = {}
        self.labels = [UNTRAINED_LABEL] if spec.is_tiny else []
        self.fingerprint = pipeline_fingerprint(spec, self.folder, self.scheduler_config, self.family_name, self.dtype_name)
        # networks beside the backbone, loaded once by bench.diffusion.extra_networks.load_network
        self.extra_networks: dict[tuple, tuple] = {}

    # -- identity ---------------------------------------------------------------------------
    @property
    def fingerprint_id(self) -> str:
        return self.fingerprint["id"]

    # -- services ---------------------------------------------------------------------------
    @property
    def latent_channels(self) -> int:
        """Channels of a latent as methods see it (the VAE's; FLUX's transformer takes them 2x2-packed)."""
        return self.vae.config.latent_channels

    def new_scheduler(self, steps: int, latent_hw: tuple[int, int] | None = None):
        """A fresh scheduler with ``steps`` inference timesteps (never shared between cells).
        ``latent_hw``: (h, w) of the latents it denoises, default the backbone's square latent; a
        family whose timesteps depend on the image size (FLUX.1's shift) reads it."""
        return self.family.new_scheduler(self, steps, latent_hw)

    def new_pipeline(self):
        """An instruction editor family's diffusers pipeline over this backbone's networks, with a
        fresh scheduler of the checkpoint's config (never shared between batches)."""
        return self.family.pipeline(self, self._scheduler_cls.from_config(self.scheduler_config))

    def latent_hw(self, image: torch.Tensor) -> tuple[int, int]:
        """(h, w) of the latent of an image (..., 3, H, W) (under ``keep_aspect`` not square)."""
        return image.shape[-2] // self.vae_factor, image.shape[-1] // self.vae_factor

    @torch.no_grad()
    def encode_text(self, prompt: str) -> torch.Tensor:
        """The conditioning of ``prompt`` as the family's pipeline computes it, one (1, L, D)
        tensor (SD: 77 CLIP hidden states; SDXL, SD3: see ``families.sdxl/sd3.encode_text``); cached."""
        if prompt not in self._text_cache:
            self._text_cache[prompt] = self.family.encode_text(self, prompt)
        return self._text_cache[prompt]

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Latent ``z0`` of (B, 3, H, W) images in [0, 1] (SD: ``E(x) * scaling_factor``; SD3 also
        subtracts the VAE's ``shift_factor`` first).

        Uses the posterior mean, so a sample's source latent is deterministic and shared by
        every method and seed (diffusers' img2img samples the posterior instead).
        """
        return self.family.encode_image(self, image)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [0, 1] from latents (differentiable; wrap in no_grad if unneeded)."""
        return self.family.decode(self, latent)

    def eps(self, latent: torch.Tensor, t, text: torch.Tensor, **unet_kwargs) -> torch.Tensor:
        """The denoiser's prediction for a batch of latents and matching conditionings: the
        UNet's noise for SD, the transformer's velocity for SD3."""
        return self.family.predict(self, latent, t, text, **unet_kwargs)

    def frame(self, policy: ResolutionPolicy) -> Frame:
        """The size rule samples are prepared by for this backbone under ``policy`` (its family's
        ``SIZE_RULE`` is the ``model`` policy's rule)."""
        return policy.frame(self.resolution, getattr(self.family, "SIZE_RULE", None))

    def describe(self) -> dict:
        return {
            "spec": asdict(self.spec),
            "family": self.family_name,
            "dtype": self.dtype_name,
            "scheduler": self.family.scheduler_name(self.spec),
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
