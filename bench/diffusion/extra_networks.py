"""Networks beside the backbone (ControlNet, T2I-Adapter, InstructPix2Pix's UNet, and the
transformers models that make depth, segmentation and pose condition maps), loaded offline.

A method names its network by a local folder or a hub id. Weights are safetensors only and
are never downloaded at run time: a hub id is read from the local Hugging Face cache
(``local_files_only``, so ``HF_HUB_OFFLINE`` changes nothing). ``load_network`` loads a network
once per backbone (so once per run), moves it to the backbone's device and dtype, freezes it,
and fingerprints it (sha256 of its weights); the fingerprints join the backbone's in the
run's manifest (``Backbone.describe``), and a resumed run refuses changed ones. Missing
weights raise ``ConfigError`` naming the file looked for and where, before any cell runs
(methods load their network in ``check_backbone``).

``untrained=True`` builds a seeded random network of the right architecture for the loaded
backbone (sized from its UNet, so tiny for the tiny backbone; the condition models at a fixed
tiny size, with an image processor), writes it with ``save_pretrained`` and loads it back
through ``from_pretrained``, like the tiny backbone. Every number from it is labelled
"untrained <network>".
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

from bench.diffusion.backbone import Backbone, BackboneSpec
from bench.diffusion.families.sd import WEIGHT_FILES
from bench.errors import ConfigError
from bench.params import Param
from bench.paths import cache_dir
from bench.weights import file_digest

WEIGHTS = "diffusion_pytorch_model.safetensors"
TRANSFORMERS_WEIGHTS = "model.safetensors"
PROCESSOR_CONFIG = "preprocessor_config.json"
UNTRAINED_SEED = 0
# Bump when an untrained architecture or its seeding changes: it names the cache folders.
UNTRAINED_VERSION = 1


@dataclass(frozen=True)
class Kind:
    """One kind of extra network: the method parameter naming it, its class in ``library`` and,
    for pipeline repos, the subfolder. ``denoiser``: it replaces the backbone's UNet, so its
    evaluations count as NFE. A ``transformers`` network (a condition model) comes with its
    image processor and runs in fp32 whatever the backbone's dtype: it runs once per sample,
    and its maps (argmax classes, thresholded keypoints) should not depend on the backbone's precision."""

    name: str
    param: str
    label: str
    class_name: str
    subfolder: str = ""
    denoiser: bool = False
    library: str = "diffusers"

    @property
    def weights(self) -> str:
        return TRANSFORMERS_WEIGHTS if self.library == "transformers" else WEIGHTS

    @property
    def files(self) -> tuple[str, ...]:
        """The files a folder of this kind must hold."""
        processor = (PROCESSOR_CONFIG,) if self.library == "transformers" else ()
        return ("config.json", self.weights, *processor)

    def model_class(self):
        import diffusers
        import transformers

        return getattr(diffusers if self.library == "diffusers" else transformers, self.class_name)


KINDS = {
    k.name: k
    for k in (
        Kind("controlnet", "controlnet", "ControlNet", "ControlNetModel"),
        Kind("t2i_adapter", "t2i_adapter", "T2I-Adapter", "T2IAdapter"),
        Kind("instruct_pix2pix", "model", "InstructPix2Pix UNet", "UNet2DConditionModel", "unet", denoiser=True),
        Kind("depth", "depth_model", "depth model", "AutoModelForDepthEstimation", library="transformers"),
        Kind("segmentation", "segmentation_model", "segmentation model", "AutoModelForSemanticSegmentation",
             library="transformers"),
        Kind("pose", "pose_model", "pose model", "VitPoseForPoseEstimation", library="transformers"),
        Kind("person_detector", "pose_detector", "person detector", "AutoModelForObjectDetection",
             library="transformers"),
    )
}


@dataclass
class ExtraNetwork:
    """A loaded network: the module, where its weights came from, and its fingerprint.

    ``components``: for InstructPix2Pix, a ``Backbone`` over the checkpoint's own pipeline
    (VAE, text encoder, tokenizer, scheduler) when the backbone's do not fit its UNet; else ``None``.
    ``processor``: a condition model's image processor (transformers' PIL backend); else ``None``.
    """

    model: torch.nn.Module
    folder: Path
    fingerprint: dict
    labels: list[str]
    components: Any = None
    processor: Any = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def network_params(kind: str, default: str, untrained_too: str = "") -> tuple[Param, Param]:
    """The two parameters naming a method's extra network: the source and ``untrained``
    (which also makes ``untrained_too``, e.g. the method's condition model, seeded random)."""
    spec = KINDS[kind]
    return (
        Param(spec.param, str, default,
              f"{spec.label}: local folder or hub id (read from the Hugging Face cache, safetensors only)"),
        Param("untrained", bool, False,
              f"seeded random {spec.label} of the backbone's architecture{untrained_too} (smoke numbers)"),
    )  # fmt: skip


def network_of(backbone, kind: str, setting: dict) -> ExtraNetwork:
    """The ``kind`` network a method's ``setting`` names (see ``network_params``), loaded."""
    return load_network(backbone, kind, setting[KINDS[kind].param], setting["untrained"])


def untrained_label(kind: str) -> str:
    return f"untrained {KINDS[kind].label} (smoke numbers)"


def load_network(backbone, kind: str, source: str, untrained: bool = False) -> ExtraNetwork:
    """The ``kind`` network from ``source`` (or untrained), on the backbone's device and dtype
    (a condition model: in fp32).

    Loaded once per backbone; loaded again only when its weights file changed on disk.
    """
    spec = KINDS[kind]
    folder = untrained_folder(backbone, kind) if untrained else locate(spec, source)
    weights = folder / spec.weights
    stat = weights.stat()
    memo_key = (kind, source, untrained)
    stamp = (str(weights.resolve()), stat.st_size, stat.st_mtime_ns)
    loaded = backbone.extra_networks.get(memo_key)
    if loaded is not None and loaded[0] == stamp:
        return loaded[1]
    components, processor = own_components(backbone, spec, folder), None
    fields = {
        "kind": kind,
        "source": f"untrained (seed {UNTRAINED_SEED})" if untrained else source,
        "dtype": backbone.dtype_name,
        "weights_sha256": file_digest(weights),
    }
    if components is not None:
        model = components.unet  # loaded with the rest of its pipeline
        fields["own_components_sha256"] = components.fingerprint["weights_sha256"]
    elif spec.library == "transformers":
        from transformers import AutoImageProcessor

        model = spec.model_class().from_pretrained(folder, use_safetensors=True, dtype=torch.float32)
        processor = AutoImageProcessor.from_pretrained(folder, backend="pil")
        fields["dtype"] = "fp32"
        fields["processor_sha256"] = file_digest(folder / PROCESSOR_CONFIG)
    else:
        model = spec.model_class().from_pretrained(folder, use_safetensors=True, torch_dtype=backbone.dtype)
    if components is None:
        model.to(backbone.device).eval().requires_grad_(False)
    if spec.denoiser:
        backbone.nfe.watch(model)
    fields["id"] = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    labels = [untrained_label(kind)] if untrained else []
    network = ExtraNetwork(model, folder, fields, labels, components, processor)
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
    return Backbone(BackboneSpec(str(pipeline), device=str(backbone.device), dtype=backbone.dtype_name,
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
    """The folder holding ``source``'s config and safetensors weights (and a condition model's
    image processor config), or a ``ConfigError``."""
    sub = f"{spec.subfolder}/" if spec.subfolder else ""
    patterns = [f"{sub}{name}" for name in spec.files]
    wanted = f"{', '.join(patterns[:-1])} and {patterns[-1]}"
    local = Path(source).expanduser()
    if local.is_dir():
        folder = local / spec.subfolder if (local / spec.subfolder / "config.json").is_file() else local
        where = f"local folder {local}"
    else:
        from huggingface_hub import constants, snapshot_download

        where = f"the Hugging Face cache {constants.HF_HUB_CACHE} (hub id {source!r}; nothing is downloaded)"
        try:
            snapshot = snapshot_download(source, allow_patterns=patterns, local_files_only=True)
        except Exception:  # not cached, not a valid repo id...
            snapshot = None
        folder = Path(snapshot) / spec.subfolder if snapshot else None
    if folder is None or not all((folder / name).is_file() for name in spec.files):
        files = " ".join(patterns)
        raise ConfigError(
            f"{spec.label} {source!r}: looked for {wanted} in {where} and did not find them. Download it once "
            f"online (hf download {source} {files}), give a "
            "local folder, or set untrained: true for seeded random weights (smoke numbers only)."
        )
    return folder


# -- untrained networks -------------------------------------------------------------------------
def untrained_folder(backbone, kind: str) -> Path:
    """Folder of the seeded random ``kind`` network for ``backbone``'s UNet, built on first use."""
    arch = json.dumps(_architecture(backbone, kind), sort_keys=True, default=str)
    folder = cache_dir() / "untrained" / f"{kind}-v{UNTRAINED_VERSION}-{hashlib.sha256(arch.encode()).hexdigest()[:12]}"
    if not (folder / KINDS[kind].weights).is_file():
        save_untrained(backbone, kind, UNTRAINED_SEED, folder)
    return folder


def build_untrained(backbone, kind: str, seed: int) -> list:
    """A ``kind`` network of the architecture ``backbone`` needs, randomly initialised from ``seed``
    (on the CPU, in fp32, without touching the caller's random state), followed by the image
    processor a condition model needs: the parts ``save_pretrained`` writes into one folder."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BUILDERS[kind](*_architecture(backbone, kind))


def _architecture(backbone, kind: str) -> tuple:
    """What an untrained ``kind`` network is built from: the backbone's UNet config and VAE
    factor for the networks joined to its UNet; nothing for condition models (one tiny size)."""
    if KINDS[kind].library == "transformers":
        return ()
    return {k: v for k, v in dict(backbone.unet.config).items() if not k.startswith("_")}, backbone.vae_factor


def save_untrained(backbone, kind: str, seed: int, folder: Path) -> None:
    """``build_untrained``'s parts saved with ``save_pretrained`` (safetensors) beside ``folder``
    and renamed into place, so a half-written folder is never loaded."""
    tmp = folder.with_name(f"{folder.name}.building-{os.getpid()}")
    for part in build_untrained(backbone, kind, seed):
        part.save_pretrained(tmp)
    if folder.exists():  # another process finished first
        shutil.rmtree(tmp)
    else:
        tmp.rename(folder)


def _controlnet(unet_config: dict, vae_factor: int) -> list:
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
    return [controlnet]


def _t2i_adapter(unet_config: dict, vae_factor: int) -> list:
    """A full T2I-Adapter: one feature map per UNet down block, with its channels and size."""
    from diffusers import T2IAdapter

    channels = list(unet_config["block_out_channels"])
    return [T2IAdapter(in_channels=3, channels=channels, num_res_blocks=1, downscale_factor=vae_factor)]


def _instruct_pix2pix_unet(unet_config: dict, vae_factor: int) -> list:
    """The backbone's UNet architecture with 8 input channels (noisy latent + source latent)."""
    from diffusers import UNet2DConditionModel

    return [UNet2DConditionModel.from_config({**unet_config, "in_channels": 2 * unet_config["out_channels"]})]


# Condition models at one tiny size (64 px inputs, 2-4 layers): architectures of the checkpoints
# named by default (DPT, UperNet over ConvNeXt, ViTPose) and a person detector (YOLOS), each
# with the image processor it uses.
def _depth_model() -> list:
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    config = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37,
                       image_size=64, patch_size=8, backbone_out_indices=[0, 1, 2, 3],
                       neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=16)  # fmt: skip
    processor = DPTImageProcessor(size={"height": 64, "width": 64}, keep_aspect_ratio=False,
                                  image_mean=[0.5] * 3, image_std=[0.5] * 3)  # fmt: skip
    return [DPTForDepthEstimation(config), processor]


def _segmentation_model() -> list:
    from transformers import ConvNextConfig, SegformerImageProcessor, UperNetConfig, UperNetForSemanticSegmentation

    backbone = ConvNextConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 32, 64],
                              out_features=["stage1", "stage2", "stage3", "stage4"])  # fmt: skip
    config = UperNetConfig(backbone_config=backbone, hidden_size=16, use_auxiliary_head=False, num_labels=150)
    return [UperNetForSemanticSegmentation(config), SegformerImageProcessor(size={"height": 64, "width": 64})]


def _pose_model() -> list:
    from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation, VitPoseImageProcessor

    backbone = VitPoseBackboneConfig(image_size=[64, 48], patch_size=[8, 8], hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=37, out_indices=[2])  # fmt: skip
    config = VitPoseConfig(backbone_config=backbone, num_labels=17)
    return [VitPoseForPoseEstimation(config), VitPoseImageProcessor(size={"height": 64, "width": 48})]


def _person_detector() -> list:
    """A YOLOS detector of one class, "person". Its detection tokens get random values
    (they start equal, which would make every detection the same box)."""
    from transformers import YolosConfig, YolosForObjectDetection, YolosImageProcessor

    config = YolosConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                         image_size=[64, 64], patch_size=8, num_detection_tokens=5,
                         id2label={0: "person"})  # fmt: skip
    detector = YolosForObjectDetection(config)
    torch.nn.init.normal_(detector.vit.embeddings.detection_tokens)
    return [detector, YolosImageProcessor(size={"shortest_edge": 64, "longest_edge": 64})]


BUILDERS = {
    "controlnet": _controlnet,
    "t2i_adapter": _t2i_adapter,
    "instruct_pix2pix": _instruct_pix2pix_unet,
    "depth": _depth_model,
    "segmentation": _segmentation_model,
    "pose": _pose_model,
    "person_detector": _person_detector,
}
