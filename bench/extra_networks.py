"""Networks beside the backbone (ControlNet, T2I-Adapter, InstructPix2Pix's UNet), loaded offline.

A method names its network by a local folder or a hub id. Weights are safetensors only and
are never downloaded at run time: a hub id is read from the local Hugging Face cache
(``local_files_only``, so ``HF_HUB_OFFLINE`` changes nothing). ``load_network`` loads a network
once per backbone (so once per run), moves it to the backbone's device and dtype, freezes it,
and fingerprints it (sha256 of its weights); the fingerprints join the backbone's in the
run's manifest (``Backbone.describe``), and a resumed run refuses changed ones. Missing
weights raise ``ConfigError`` naming the file looked for and where, before any cell runs
(methods load their network in ``check_backbone``).

``untrained=True`` builds a seeded random network of the right architecture for the loaded
backbone (sized from its UNet, so tiny for the tiny backbone), writes it with
``save_pretrained`` and loads it back through ``from_pretrained``, like the tiny backbone.
Every number from it is labelled "untrained <network>".
"""

import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .backbone import WEIGHT_FILES, Backbone, BackboneSpec, _file_digest
from .errors import ConfigError
from .params import Param
from .paths import cache_dir

WEIGHTS = "diffusion_pytorch_model.safetensors"
UNTRAINED_SEED = 0
# Bump when an untrained architecture or its seeding changes: it names the cache folders.
UNTRAINED_VERSION = 1


@dataclass(frozen=True)
class Kind:
    """One kind of extra network: the method parameter naming it, its diffusers class and, for
    pipeline repos, the subfolder. ``denoiser``: it replaces the backbone's UNet, so its
    evaluations count as NFE."""

    name: str
    param: str
    label: str
    class_name: str
    subfolder: str = ""
    denoiser: bool = False

    def model_class(self):
        import diffusers

        return getattr(diffusers, self.class_name)


KINDS = {
    k.name: k
    for k in (
        Kind("controlnet", "controlnet", "ControlNet", "ControlNetModel"),
        Kind("t2i_adapter", "t2i_adapter", "T2I-Adapter", "T2IAdapter"),
        Kind("instruct_pix2pix", "model", "InstructPix2Pix UNet", "UNet2DConditionModel", "unet", denoiser=True),
    )
}


@dataclass
class ExtraNetwork:
    """A loaded network: the module, where its weights came from, and its fingerprint.

    ``components``: for InstructPix2Pix, a ``Backbone`` over the checkpoint's own pipeline
    (VAE, text encoder, tokenizer, scheduler) when the backbone's do not fit its UNet; else ``None``.
    """

    model: torch.nn.Module
    folder: Path
    fingerprint: dict
    labels: list[str]
    components: Any = None


def network_params(kind: str, default: str) -> tuple[Param, Param]:
    """The two parameters naming a method's extra network: the source and ``untrained``."""
    spec = KINDS[kind]
    return (
        Param(spec.param, str, default,
              f"{spec.label}: local folder or hub id (read from the Hugging Face cache, safetensors only)"),
        Param("untrained", bool, False, f"seeded random {spec.label} of the backbone's architecture (smoke numbers)"),
    )


def network_of(backbone, kind: str, setting: dict) -> ExtraNetwork:
    """The ``kind`` network a method's ``setting`` names (see ``network_params``), loaded."""
    return load_network(backbone, kind, setting[KINDS[kind].param], setting["untrained"])


def untrained_label(kind: str) -> str:
    return f"untrained {KINDS[kind].label} (smoke numbers)"


def load_network(backbone, kind: str, source: str, untrained: bool = False) -> ExtraNetwork:
    """The ``kind`` network from ``source`` (or untrained), on the backbone's device and dtype.

    Loaded once per backbone; loaded again only when its weights file changed on disk.
    """
    spec = KINDS[kind]
    folder = untrained_folder(backbone, kind) if untrained else locate(spec, source)
    weights = folder / WEIGHTS
    stat = weights.stat()
    memo_key = (kind, source, untrained)
    stamp = (str(weights.resolve()), stat.st_size, stat.st_mtime_ns)
    loaded = backbone.extra_networks.get(memo_key)
    if loaded is not None and loaded[0] == stamp:
        return loaded[1]
    components = own_components(backbone, spec, folder)
    if components is not None:
        model = components.unet  # loaded with the rest of its pipeline
    else:
        model = spec.model_class().from_pretrained(folder, use_safetensors=True, torch_dtype=backbone.dtype)
        model.to(backbone.device).eval().requires_grad_(False)
    if spec.denoiser:
        backbone.nfe.watch(model)
    fields = {
        "kind": kind,
        "source": f"untrained (seed {UNTRAINED_SEED})" if untrained else source,
        "dtype": backbone.spec.dtype,
        "weights_sha256": _file_digest(weights),
    }
    if components is not None:
        fields["own_components_sha256"] = components.fingerprint["weights_sha256"]
    fields["id"] = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    network = ExtraNetwork(model, folder, fields, [untrained_label(kind)] if untrained else [], components)
    backbone.extra_networks[memo_key] = (stamp, network)
    return network


def own_components(backbone, spec: Kind, folder: Path):
    """A ``Backbone`` over the pipeline holding a denoiser (InstructPix2Pix) when the backbone's
    text encoder or VAE do not fit that UNet and the pipeline ships its own; else ``None``."""
    if not spec.denoiser:
        return None
    config = json.loads((folder / "config.json").read_text())
    fits = (config.get("cross_attention_dim") == backbone.unet.config.cross_attention_dim
            and config.get("in_channels") == 2 * backbone.vae.config.latent_channels)  # fmt: skip
    pipeline = folder.parent
    has_own = (pipeline / "model_index.json").is_file() and all(
        (pipeline / sub / weights).is_file() for sub, weights in WEIGHT_FILES.items()
    )
    if fits or not has_own:
        return None
    return Backbone(BackboneSpec(str(pipeline), device=str(backbone.device), dtype=backbone.spec.dtype,
                                 resolution=backbone.resolution))  # fmt: skip


def changed_networks(recorded: dict[str, dict], backbone) -> list[str]:
    """The networks of ``recorded`` (a manifest's ``backbone.extra_networks``) whose weights now
    differ from those loaded beside ``backbone``, each as ``kind:source (old id -> new id)``.

    A run's methods load their networks before any cell (``check_backbone``), so a recorded
    network that is not loaded now is not one this run uses: a backbone object reused within one
    process (tests, library use) records every network it ever loaded."""
    current = backbone.extra_fingerprints()
    changed = []
    for key, fingerprint in recorded.items():
        if key in current and current[key]["id"] != fingerprint["id"]:
            changed.append(f"{key} ({fingerprint['id']} -> {current[key]['id']})")
    return changed


def check_compatible(backbone, network: ExtraNetwork) -> None:
    """Refuse a network built for another backbone architecture (e.g. an SD 1.5 ControlNet
    beside an SD 2 backbone), naming the first mismatching config field."""
    kind, config = network.fingerprint["kind"], network.model.config
    backbone = network.components or backbone
    unet = backbone.unet.config
    expected = {
        "controlnet": {"cross_attention_dim": unet.cross_attention_dim, "block_out_channels": unet.block_out_channels},
        "t2i_adapter": {"channels": unet.block_out_channels},
        "instruct_pix2pix": {"cross_attention_dim": unet.cross_attention_dim,
                             "in_channels": 2 * backbone.vae.config.latent_channels},
    }[kind]  # fmt: skip
    for field, want in expected.items():
        have = getattr(config, field, None)
        if _plain(have) != _plain(want):
            raise ConfigError(
                f"{KINDS[kind].label} {network.fingerprint['source']!r} ({network.folder}) does not fit the backbone "
                f"{backbone.spec.name!r}: its {field} is {have}, the backbone needs {want}"
            )


def _plain(value):
    """Config values compared as plain data (a tuple and a list of the same numbers are equal)."""
    return list(value) if isinstance(value, (list, tuple)) else value


def locate(spec: Kind, source: str) -> Path:
    """The folder holding ``source``'s config and safetensors weights, or a ``ConfigError``."""
    sub = f"{spec.subfolder}/" if spec.subfolder else ""
    wanted = f"{sub}config.json and {sub}{WEIGHTS}"
    local = Path(source).expanduser()
    if local.is_dir():
        folder = local / spec.subfolder if (local / spec.subfolder / "config.json").is_file() else local
        where = f"local folder {local}"
    else:
        from huggingface_hub import constants, snapshot_download

        where = f"the Hugging Face cache {constants.HF_HUB_CACHE} (hub id {source!r}; nothing is downloaded)"
        try:
            patterns = [f"{sub}config.json", f"{sub}{WEIGHTS}"]
            snapshot = snapshot_download(source, allow_patterns=patterns, local_files_only=True)
        except Exception:  # not cached, not a valid repo id...
            snapshot = None
        folder = Path(snapshot) / spec.subfolder if snapshot else None
    if folder is None or not (folder / "config.json").is_file() or not (folder / WEIGHTS).is_file():
        raise ConfigError(
            f"{spec.label} {source!r}: looked for {wanted} in {where} and did not find them. Download it once "
            f"online (huggingface-cli download {source} --include '{sub}config.json' '{sub}{WEIGHTS}'), give a "
            "local folder, or set untrained: true for seeded random weights (smoke numbers only)."
        )
    return folder


# -- untrained networks -------------------------------------------------------------------------
def untrained_folder(backbone, kind: str) -> Path:
    """Folder of the seeded random ``kind`` network for ``backbone``'s UNet, built on first use."""
    arch = json.dumps([_unet_config(backbone), backbone.vae_factor], sort_keys=True, default=str)
    folder = cache_dir() / "untrained" / f"{kind}-v{UNTRAINED_VERSION}-{hashlib.sha256(arch.encode()).hexdigest()[:12]}"
    if not (folder / WEIGHTS).is_file():
        save_atomic(build_untrained(backbone, kind, UNTRAINED_SEED), folder)
    return folder


def build_untrained(backbone, kind: str, seed: int) -> torch.nn.Module:
    """A ``kind`` network of the architecture ``backbone`` needs, randomly initialised from ``seed``
    (on the CPU, in fp32, without touching the caller's random state)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BUILDERS[kind](_unet_config(backbone), backbone.vae_factor)


def _unet_config(backbone) -> dict:
    return {k: v for k, v in dict(backbone.unet.config).items() if not k.startswith("_")}


def save_atomic(model, folder: Path) -> None:
    """``model.save_pretrained(folder)`` (safetensors) written beside ``folder`` and renamed into place."""
    tmp = folder.with_name(f"{folder.name}.building-{os.getpid()}")
    model.save_pretrained(tmp, safe_serialization=True)
    if folder.exists():  # another process finished first
        shutil.rmtree(tmp)
    else:
        tmp.rename(folder)


def _controlnet(unet_config: dict, vae_factor: int):
    """A ControlNet matching the UNet's encoder. Its zero convolutions get random weights too:
    zero-initialised, an untrained ControlNet would change nothing and test nothing."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    depth = int(math.log2(vae_factor)) + 1  # the condition embedding halves the size depth - 1 times
    controlnet = ControlNetModel.from_unet(
        UNet2DConditionModel.from_config(unet_config),
        conditioning_embedding_out_channels=(16,) * depth,
        load_weights_from_unet=False,
    )
    zero_convs = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block,
                  controlnet.controlnet_cond_embedding.conv_out]  # fmt: skip
    for conv in zero_convs:
        conv.reset_parameters()
    return controlnet


def _t2i_adapter(unet_config: dict, vae_factor: int):
    """A full T2I-Adapter: one feature map per UNet down block, with its channels and size."""
    from diffusers import T2IAdapter

    channels = list(unet_config["block_out_channels"])
    return T2IAdapter(in_channels=3, channels=channels, num_res_blocks=1, downscale_factor=vae_factor)


def _instruct_pix2pix_unet(unet_config: dict, vae_factor: int):
    """The backbone's UNet architecture with 8 input channels (noisy latent + source latent)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_config({**unet_config, "in_channels": 2 * unet_config["out_channels"]})


BUILDERS = {"controlnet": _controlnet, "t2i_adapter": _t2i_adapter, "instruct_pix2pix": _instruct_pix2pix_unet}
