"""Feature extractors behind the metrics, loaded once per run, offline.

Pretrained weights come only from local places: a path given in ``metric_options``, the
torch hub cache (``$TORCH_HOME/hub/checkpoints``), the Hugging Face cache, or clean-fid's
download folder. Nothing is downloaded. When weights are missing, ``ExtractorMissing``
names them, where they were looked for, and ``--untrained-extractors``; with that flag each
extractor is the same architecture with seeded random weights, and ``Extractors.untrained``
records which, so every number computed with it can be labelled.
"""

import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.errors import ConfigError, unknown
from bench.metrics.judge_backends import JudgeOptions
from bench.paths import cache_dir
from bench.weights import file_digest, only_bin_weights

UNTRAINED_FLAG = "--untrained-extractors"
LPIPS_NETS = ("alex", "vgg", "squeeze")
INCEPTION_TORCHSCRIPT = "inception-2015-12-05.pt"  # clean-fid's extractor (NVIDIA's port of TF Inception)
INCEPTION_FID_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid's port of the same weights
INCEPTION_DIM = 2048

# Architectures of the CLIP checkpoints we can rebuild untrained without network.
CLIP_ARCHITECTURES = {
    # (hidden size, layers, heads, MLP size) of each tower, patch size, projection size
    "openai/clip-vit-large-patch14": {
        "text": (768, 12, 12, 3072),
        "vision": (1024, 24, 16, 4096),
        "patch": 14,
        "proj": 768,
    },
    "openai/clip-vit-base-patch32": {
        "text": (512, 12, 8, 2048),
        "vision": (768, 12, 12, 3072),
        "patch": 32,
        "proj": 512,
    },
    "openai/clip-vit-base-patch16": {
        "text": (512, 12, 8, 2048),
        "vision": (768, 12, 12, 3072),
        "patch": 16,
        "proj": 512,
    },
    # PickScore: LAION's OpenCLIP ViT-H/14 fine-tuned on Pick-a-Pic (GELU, not OpenAI's quick GELU)
    "yuvalkirstain/PickScore_v1": {
        "text": (1024, 24, 16, 4096),
        "vision": (1280, 32, 16, 5120),
        "patch": 14,
        "proj": 1024,
        "act": "gelu",
    },
}
# DINO ViT-B/8 and ViT-S/16 (Caron et al. 2021) as transformers' ViTModel.
DINO_ARCHITECTURES = {
    "facebook/dino-vitb8": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                            "intermediate_size": 3072, "patch_size": 8, "image_size": 224, "qkv_bias": True,
                            "layer_norm_eps": 1e-6},
    "facebook/dino-vits16": {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6,
                             "intermediate_size": 1536, "patch_size": 16, "image_size": 224, "qkv_bias": True,
                             "layer_norm_eps": 1e-6},
}  # fmt: skip


@dataclass(frozen=True)
class MetricOptions:
    """The ``metric_options`` block of a config.

    ``clip_model``, ``dino_model``, ``pickscore_model`` and ``pickscore_processor`` (PickScore's
    authors load the processor of the CLIP-H it was fine-tuned from) are hub ids (looked up in
    the Hugging Face cache) or local folders; ``hps_checkpoint`` is a local file or
    ``<hub repo>/<file>`` in the Hugging Face cache, the weights of the OpenCLIP architecture
    ``hps_architecture``; ``image_reward_model`` a folder or hub repo holding the authors'
    ``ImageReward.pt`` and ``med_config.json``, with BLIP's tokenizer ``image_reward_tokenizer``
    (hub id or folder); ``dreamsim_dir`` the folder of DreamSim's unzipped ``open_clip_vitb32``
    checkpoint (the package's own default ``./models``); ``inception_weights`` a local file
    (clean-fid's TorchScript Inception or pytorch-fid's ``pt_inception`` state dict).
    ``lpips_bg_net`` is the LPIPS network of the PIE-Bench background metric (PIE-Bench's
    evaluation code uses SqueezeNet). ``judge``: the VLM judge of the VIEScore metrics
    (``JudgeOptions``; a mapping in the config).
    ``similarity_clip_model`` and ``similarity_dino_model`` are the models of the image-similarity
    metrics of ground-truth benchmarks (``bench.metrics.ground_truth``): MagicBrush's evaluation
    code uses CLIP ViT-B/32 and DINO ViT-S/16.
    """

    clip_model: str = "openai/clip-vit-large-patch14"
    dino_model: str = "facebook/dino-vitb8"
    similarity_clip_model: str = "openai/clip-vit-base-patch32"
    similarity_dino_model: str = "facebook/dino-vits16"
    lpips_net: str = "alex"
    lpips_bg_net: str = "squeeze"
    pickscore_model: str = "yuvalkirstain/PickScore_v1"
    pickscore_processor: str = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
    hps_architecture: str = "ViT-H-14"
    hps_checkpoint: str = "xswu/HPSv2/HPS_v2.1_compressed.pt"
    image_reward_model: str = "THUDM/ImageReward"
    image_reward_tokenizer: str = "bert-base-uncased"
    dreamsim_dir: str = "./models"
    inception_weights: str | None = None
    untrained_extractors: bool = False
    seed: int = 0
    batch_size: int = 16
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    judge: JudgeOptions = field(default_factory=JudgeOptions)

    def __post_init__(self):
        if isinstance(self.judge, dict):
            names = list(JudgeOptions.__dataclass_fields__)
            for key in self.judge:
                if key not in names:
                    raise ConfigError(f"metric_options.judge: {unknown('key', key, names)}")
            object.__setattr__(self, "judge", JudgeOptions(**self.judge))
        elif not isinstance(self.judge, JudgeOptions):
            raise ConfigError(f"metric_options.judge = {self.judge!r}; expected a mapping, e.g. {{backend: local}}")
        for key in ("lpips_net", "lpips_bg_net"):
            if getattr(self, key) not in LPIPS_NETS:
                raise ConfigError(f"metric_options.{key}: {unknown('LPIPS network', getattr(self, key), LPIPS_NETS)}")
        if not isinstance(self.untrained_extractors, bool):
            raise ConfigError(
                f"metric_options.untrained_extractors = {self.untrained_extractors!r}; expected true or false"
            )
        for key in ("batch_size", "kid_subsets", "kid_subset_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"metric_options.{key} = {value!r}; expected a positive integer")


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


def _seeded(seed: int, build):
    """``build()`` under a fixed seed, without touching the caller's random state."""
    with torch.random.fork_rng(devices=[]):  # modules are built on the CPU
        torch.random.default_generator.manual_seed(seed)
        return build()


def _ready(module: torch.nn.Module, device) -> torch.nn.Module:
    return module.to(device).eval().requires_grad_(False)


# -- the individual extractors ----------------------------------------------------------------
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

        return _seeded(seed, build) if untrained else build()


def _local_or_cached(name: str, load, what: str, weights: str):
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


def load_clip(name: str, untrained: bool, seed: int, processor_name: str | None = None):
    """(CLIPModel, CLIPProcessor) for ``name`` (the processor of ``processor_name`` when given);
    untrained: the same architecture, seeded, with CLIP's processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    if not untrained:
        model = _local_or_cached(name, CLIPModel.from_pretrained, f"CLIP {name}", f"CLIP model {name!r}")
        processor_name = processor_name or name
        return model, _local_or_cached(processor_name, CLIPProcessor.from_pretrained, f"CLIP {name}",
                                       f"CLIP processor {processor_name!r}")  # fmt: skip
    if name not in CLIP_ARCHITECTURES:
        raise ConfigError(
            f"metric_options.clip_model {name!r}: {UNTRAINED_FLAG} can rebuild only "
            f"{', '.join(CLIP_ARCHITECTURES)} offline; choose one of those"
        )
    arch = CLIP_ARCHITECTURES[name]

    def tower(dims):
        hidden, layers, heads, inner = dims
        return {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
                "intermediate_size": inner, "projection_dim": arch["proj"],
                "hidden_act": arch.get("act", "quick_gelu")}  # fmt: skip

    vision = {**tower(arch["vision"]), "patch_size": arch["patch"], "image_size": 224}
    config = CLIPConfig(text_config=tower(arch["text"]), vision_config=vision, projection_dim=arch["proj"])
    model = _seeded(seed, lambda: CLIPModel(config))
    from bench.tokenizer import write_clip_tokenizer_files

    folder = cache_dir() / "clip_tokenizer"
    if not (folder / "merges.txt").is_file():
        try:
            write_clip_tokenizer_files(Path(tempfile.mkdtemp(dir=cache_dir()))).rename(folder)
        except OSError:  # another process wrote it first
            if not (folder / "merges.txt").is_file():
                raise
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=CLIPTokenizer.from_pretrained(folder))
    return model, processor


def _local_or_hub_file(spec: str, what: str, weights: str, hint: str) -> Path:
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


def load_hps(architecture: str, checkpoint: str, untrained: bool, seed: int):
    """(OpenCLIP model, tokenizer) of HPS v2.x: the architecture built by open_clip, its weights
    from the authors' checkpoint (``{"state_dict": ...}``, read with ``weights_only``: tensors
    only, no code; the authors publish no safetensors); untrained: the architecture, seeded."""
    import open_clip

    tokenizer = open_clip.get_tokenizer(architecture)
    model = _seeded(seed, lambda: open_clip.create_model(architecture, pretrained=None))
    if untrained:
        return model, tokenizer
    path = _local_or_hub_file(checkpoint, f"HPS {architecture}", f"checkpoint {checkpoint!r}",
                              "metric_options.hps_checkpoint may name the file. ")  # fmt: skip
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state.get("state_dict", state))  # strict: all weights or an error
    return model, tokenizer


def load_image_reward(model: str, tokenizer: str, untrained: bool, seed: int):
    """(ImageRewardModel, BLIP tokenizer): the authors' ``ImageReward.pt`` (read with
    ``weights_only``; they publish no safetensors) and ``med_config.json`` from the folder or
    hub repo ``model``; untrained: ImageReward's ViT-L and BERT-base, seeded."""
    import json

    from bench.metrics import image_reward as blip

    what, hint = f"ImageReward {model}", "metric_options.image_reward_model may name a folder holding both. "
    bert = _local_or_cached(tokenizer, blip.load_tokenizer, what, f"BERT tokenizer {tokenizer!r}")
    if untrained:
        return _seeded(seed, lambda: blip.ImageRewardModel(blip.VIT_LARGE, blip.MED_CONFIG)), bert
    folder = Path(model).expanduser()
    files = {name: str(folder / name) if folder.is_dir() else f"{model}/{name}"
             for name in ("ImageReward.pt", "med_config.json")}  # fmt: skip
    paths = {name: _local_or_hub_file(spec, what, f"{name} of {model!r}", hint) for name, spec in files.items()}
    state = torch.load(paths["ImageReward.pt"], map_location="cpu", weights_only=True)
    med_config = json.loads(paths["med_config.json"].read_text())
    try:
        reward = blip.ImageRewardModel(blip.vision_architecture(state), blip.text_architecture(med_config))
        reward.load_state_dict(blip.authors_keys(state))  # strict: all weights or an error
    except (KeyError, RuntimeError) as exc:
        raise ConfigError(f"{paths['ImageReward.pt']}: not an ImageReward checkpoint for its med_config.json "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from exc  # fmt: skip
    return reward, bert


def load_dino(name: str, untrained: bool, seed: int):
    """A transformers ``ViTModel`` (DINO); untrained: the same architecture, seeded."""
    from transformers import ViTConfig, ViTModel

    if not untrained:

        def load(source, **kwargs):
            return ViTModel.from_pretrained(source, add_pooling_layer=False, **kwargs)

        return _local_or_cached(name, load, f"DINO {name}", f"ViT model {name!r}")
    if name not in DINO_ARCHITECTURES:
        raise ConfigError(
            f"metric_options.dino_model {name!r}: {UNTRAINED_FLAG} can rebuild only {', '.join(DINO_ARCHITECTURES)}"
        )
    config = ViTConfig(**DINO_ARCHITECTURES[name])
    return _seeded(seed, lambda: ViTModel(config, add_pooling_layer=False))


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
        return InceptionFeatures(_seeded(seed, _untrained_inception), False), f"untrained-fid-inception-seed{seed}"
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


class Extractors:
    """Every extractor a run's metrics need, loaded once, on ``device``, eval mode, no grad."""

    def __init__(self, options: MetricOptions = MetricOptions(), device: torch.device | str = "cpu"):
        self.options = options
        self.device = torch.device(device)
        self._loaded: dict[tuple, object] = {}
        self.untrained: dict[str, list[str]] = {}  # extractor description -> metrics using it

    def _get(self, key: tuple, metric: str, describe: str, load):
        if key not in self._loaded:
            self._loaded[key] = load()
        if self.options.untrained_extractors:
            users = self.untrained.setdefault(describe, [])
            if metric not in users:
                users.append(metric)
        return self._loaded[key]

    def lpips(self, net: str, metric: str, spatial: bool = False):
        o = self.options
        return self._get(("lpips", net, spatial), metric, f"LPIPS {net} backbone",
                         lambda: _ready(load_lpips(net, o.untrained_extractors, o.seed, spatial), self.device))  # fmt: skip

    def clip(self, metric: str, name: str | None = None):
        """(model, processor) of CLIP ``name`` (default ``metric_options.clip_model``)."""
        o = self.options
        name = name or o.clip_model

        def load():
            model, processor = load_clip(name, o.untrained_extractors, o.seed)
            return _ready(model, self.device), processor

        return self._get(("clip", name), metric, f"CLIP {name}", load)

    def pickscore(self, metric: str):
        """PickScore's CLIP-H (model, processor)."""
        o = self.options

        def load():
            model, processor = load_clip(o.pickscore_model, o.untrained_extractors, o.seed, o.pickscore_processor)
            return _ready(model, self.device), processor

        return self._get(("pickscore", o.pickscore_model), metric, f"PickScore {o.pickscore_model}", load)

    def hps(self, metric: str):
        """HPS v2.1's OpenCLIP (model, tokenizer)."""
        o = self.options

        def load():
            model, tokenizer = load_hps(o.hps_architecture, o.hps_checkpoint, o.untrained_extractors, o.seed)
            return _ready(model, self.device), tokenizer

        return self._get(("hps", o.hps_architecture, o.hps_checkpoint), metric, f"HPS {o.hps_architecture}", load)

    def image_reward(self, metric: str):
        """ImageReward's BLIP (model, tokenizer)."""
        o = self.options

        def load():
            model, tokenizer = load_image_reward(o.image_reward_model, o.image_reward_tokenizer,
                                                 o.untrained_extractors, o.seed)  # fmt: skip
            return _ready(model, self.device), tokenizer

        return self._get(("image_reward", o.image_reward_model), metric, f"ImageReward {o.image_reward_model}", load)

    def dreamsim(self, metric: str):
        """DreamSim's ``open_clip_vitb32`` (model, preprocessing), built by the ``dreamsim`` package offline."""
        o = self.options

        def load():
            from bench.metrics import dreamsim_distance as ds

            folder = Path(o.dreamsim_dir).expanduser()
            if o.untrained_extractors:
                folder = cache_dir() / f"dreamsim_untrained_seed{o.seed}"
                if not (folder / ds.DREAMSIM_FILES[1]).is_file():  # written last
                    try:
                        ds.write_untrained_folder(Path(tempfile.mkdtemp(dir=cache_dir())), o.seed).rename(folder)
                    except OSError:  # another process wrote it first
                        if not (folder / ds.DREAMSIM_FILES[1]).is_file():
                            raise
            missing = [name for name in ds.DREAMSIM_FILES if not (folder / name).is_file()]
            if missing:
                raise ExtractorMissing(f"DreamSim {ds.DREAMSIM_TYPE}", " and ".join(missing), [str(folder)],
                                       "Unzip dreamsim_open_clip_vitb32_checkpoint.zip (the dreamsim release) "
                                       "there or name its folder in metric_options.dreamsim_dir. ")  # fmt: skip
            model, preprocess = ds.load_dreamsim(folder, self.device)
            return _ready(model, self.device), preprocess

        return self._get(("dreamsim", o.dreamsim_dir), metric, "DreamSim open_clip_vitb32", load)

    def dino(self, metric: str, name: str | None = None):
        """The DINO ViT ``name`` (default ``metric_options.dino_model``)."""
        o = self.options
        name = name or o.dino_model
        return self._get(("dino", name), metric, f"DINO {name}",
                         lambda: _ready(load_dino(name, o.untrained_extractors, o.seed), self.device))  # fmt: skip

    def inception(self, metric: str) -> tuple[InceptionFeatures, str]:
        o = self.options

        def load():
            features, identity = load_inception(o.inception_weights, o.untrained_extractors, o.seed)
            return _ready(features, self.device), identity

        return self._get(("inception",), metric, "Inception-V3", load)

    def judge(self, metric: str):
        """The VLM judge (``bench.metrics.judge.Judge``); untrained only for a local backend."""
        from bench.metrics.judge import load_judge

        o = self.options
        untrained = o.untrained_extractors and o.judge.backend == "local"

        def load():
            return load_judge(o.judge, self.device, untrained, o.seed)

        if untrained:  # labelled like every untrained extractor
            return self._get(("judge",), metric, "judge Qwen2.5-VL (tiny)", load)
        if ("judge",) not in self._loaded:  # a trained or served judge: no label
            self._loaded[("judge",)] = load()
        return self._loaded[("judge",)]

    def judge_identity(self) -> dict | None:
        """What answered the judge metrics (model, revision, template, decoding), or None."""
        judge = self._loaded.get(("judge",))
        return None if judge is None else {**judge.identity, "line": judge.describe()}

    def labels(self) -> list[str]:
        """One run label per untrained extractor, naming the metrics whose numbers it made."""
        return [
            f"untrained extractor {what} (seeded random weights) behind {', '.join(users)}"
            for what, users in self.untrained.items()
        ]
