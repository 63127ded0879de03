"""Learned preference metrics reported beside the judges.

- ``pickscore`` (Kirstain et al., "Pick-a-Pic", NeurIPS 2023): the CLIP-H that its authors
  fine-tuned on human preferences (``metric_options.pickscore_model``, default
  ``yuvalkirstain/PickScore_v1``, with the processor of the CLIP-H it started from,
  ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``, as the authors' inference code loads it), scored as
  their code does: ``exp(logit_scale) * cos(E_img(edited), E_txt(target prompt))``. The model
  loads through transformers from the local cache; nothing is downloaded.
- ``hps_v21`` (Wu et al., "Human Preference Score v2", 2023; v2.1 checkpoint): OpenCLIP ViT-H/14
  with the authors' fine-tuned weights (``metric_options.hps_checkpoint``, default
  ``xswu/HPSv2/HPS_v2.1_compressed.pt`` from the Hugging Face cache), scored as the ``hpsv2``
  package does: the cosine of the normalised image and text features. The package is not
  used: it downloads the LAION CLIP-H weights and its checkpoint at first use and pins
  ``pytest==7.2.0`` and ``protobuf<4``. Its evaluation transform is reproduced: the image's
  longer side resized to 224 (bicubic, on the float tensor, without antialiasing as
  torchvision < 0.17 did then), zero-padded to a square, OpenAI CLIP's mean and std.
- ``image_reward`` (Xu et al., "ImageReward", NeurIPS 2023): the authors' BLIP reward model
  (``metric_options.image_reward_model``, default ``THUDM/ImageReward``: ``ImageReward.pt`` and
  ``med_config.json`` from the Hugging Face cache, with BLIP's ``bert-base-uncased`` tokenizer),
  rebuilt on transformers' BLIP (``bench.metrics.image_reward`` says why the package is not
  used), scored as the package's ``ImageReward.score``: the edited image's uint8 pixels through
  its PIL transform (bicubic resize of the shorter side, centre crop, OpenAI CLIP's mean and
  std), the prompt padded to 35 tokens, the reward normalised by the published mean and std.
"""

from pathlib import Path

import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF

from bench.errors import ConfigError
from bench.metrics.base import ImageMetric
from bench.metrics.clip import _Clip, image_embeddings, load_clip
from bench.metrics.extractors import network
from bench.metrics.offline import local_or_cached, local_or_hub_file, ready, seeded
from bench.metrics.options import Option
from bench.params import LOCAL_OR_HUB

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

PICKSCORE_MODEL = Option("pickscore_model", str, "yuvalkirstain/PickScore_v1", "PickScore's CLIP-H: a hub id (read "
                         "from the Hugging Face cache) or a local folder", path=LOCAL_OR_HUB)  # fmt: skip
PICKSCORE_PROCESSOR = Option("pickscore_processor", str, "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "the processor "
                             "PickScore's authors load: that of the CLIP-H it was fine-tuned from",
                             path=LOCAL_OR_HUB)  # fmt: skip
HPS_ARCHITECTURE = Option("hps_architecture", str, "ViT-H-14", "the OpenCLIP architecture of hps_checkpoint")
HPS_CHECKPOINT = Option("hps_checkpoint", str, "xswu/HPSv2/HPS_v2.1_compressed.pt", "HPS v2.1's weights: a local "
                        "file or <hub repo>/<file> in the Hugging Face cache", path=LOCAL_OR_HUB)  # fmt: skip
IMAGE_REWARD_MODEL = Option("image_reward_model", str, "THUDM/ImageReward", "a folder or hub repo holding the "
                            "authors' ImageReward.pt and med_config.json", path=LOCAL_OR_HUB)  # fmt: skip
IMAGE_REWARD_TOKENIZER = Option("image_reward_tokenizer", str, "bert-base-uncased", "ImageReward's BLIP tokenizer: "
                                "a hub id or a local folder", path=LOCAL_OR_HUB)  # fmt: skip


@network(label=lambda model, processor: f"PickScore {model}")
def pickscore_network(model: str, processor: str, *, untrained: bool, seed: int, device):
    """PickScore's CLIP-H (model, processor of ``processor``)."""
    clip, processor = load_clip(model, untrained, seed, processor)
    return ready(clip, device), processor


def load_hps(architecture: str, checkpoint: str, untrained: bool, seed: int):
    """(OpenCLIP model, tokenizer) of HPS v2.x: the architecture built by open_clip, its weights
    from the authors' checkpoint (``{"state_dict": ...}``, read with ``weights_only``: tensors
    only, no code; the authors publish no safetensors); untrained: the architecture, seeded."""
    import open_clip

    tokenizer = open_clip.get_tokenizer(architecture)
    model = seeded(seed, lambda: open_clip.create_model(architecture, pretrained=None))
    if untrained:
        return model, tokenizer
    path = local_or_hub_file(checkpoint, f"HPS {architecture}", f"checkpoint {checkpoint!r}",
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
    bert = local_or_cached(tokenizer, blip.load_tokenizer, what, f"BERT tokenizer {tokenizer!r}")
    if untrained:
        return seeded(seed, lambda: blip.ImageRewardModel(blip.VIT_LARGE, blip.MED_CONFIG)), bert
    folder = Path(model).expanduser()
    files = {name: str(folder / name) if folder.is_dir() else f"{model}/{name}"
             for name in ("ImageReward.pt", "med_config.json")}  # fmt: skip
    paths = {name: local_or_hub_file(spec, what, f"{name} of {model!r}", hint) for name, spec in files.items()}
    state = torch.load(paths["ImageReward.pt"], map_location="cpu", weights_only=True)
    med_config = json.loads(paths["med_config.json"].read_text())
    try:
        reward = blip.ImageRewardModel(blip.vision_architecture(state), blip.text_architecture(med_config))
        reward.load_state_dict(blip.authors_keys(state))  # strict: all weights or an error
    except (KeyError, RuntimeError) as exc:
        raise ConfigError(f"{paths['ImageReward.pt']}: not an ImageReward checkpoint for its med_config.json "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from exc  # fmt: skip
    return reward, bert


@network(label=lambda architecture, checkpoint: f"HPS {architecture}")
def hps_network(architecture: str, checkpoint: str, *, untrained: bool, seed: int, device):
    """HPS v2.1's OpenCLIP (model, tokenizer) (see ``load_hps``)."""
    model, tokenizer = load_hps(architecture, checkpoint, untrained, seed)
    return ready(model, device), tokenizer


@network(label=lambda model, tokenizer: f"ImageReward {model}")
def image_reward_network(model: str, tokenizer: str, *, untrained: bool, seed: int, device):
    """ImageReward's BLIP (model, tokenizer) (see ``load_image_reward``)."""
    reward, bert = load_image_reward(model, tokenizer, untrained, seed)
    return ready(reward, device), bert


class PickScore(_Clip):
    name = "pickscore"
    higher_is_better = True
    value_range = (-100.0, 100.0)  # CLIP's logit scale is capped at 100
    nan_reason = "the sample has no target prompt"
    options = (PICKSCORE_MODEL, PICKSCORE_PROCESSOR)
    description = ("PickScore of the edited image against the target prompt: exp(logit_scale) * cos of "
                   "PickScore_v1's CLIP-H embeddings (metric_options.pickscore_model)")  # fmt: skip

    def load(self, extractors):
        self.device = extractors.device
        o = extractors.options
        self.model, self.processor = extractors.get(pickscore_network, o.pickscore_model, o.pickscore_processor,
                                                    metric=self.name)  # fmt: skip

    def compute(self, edited, source, samples):
        images = image_embeddings(self.model, self.processor, edited)
        texts = self._texts([s.target_prompt for s in samples])
        return self.model.logit_scale.exp() * (images * texts).sum(-1)


def hps_transform(images: torch.Tensor, size: int) -> torch.Tensor:
    """HPS v2's evaluation transform of (B, 3, H, W) images in [0, 1] (see the module doc)."""
    height, width = images.shape[-2:]
    scale = size / max(height, width)
    if scale != 1.0:
        new = (round(height * scale), round(width * scale))
        images = TF.resize(images, list(new), TF.InterpolationMode.BICUBIC, antialias=False)
        pad_h, pad_w = size - new[0], size - new[1]
        images = TF.pad(images, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)
    return TF.normalize(images, OPENAI_MEAN, OPENAI_STD)


class HPSv21(ImageMetric):
    name = "hps_v21"
    higher_is_better = True
    value_range = (-1.0, 1.0)
    needs = frozenset({"target_prompt", "pretrained weights"})
    nan_reason = "the sample has no target prompt"
    options = (HPS_ARCHITECTURE, HPS_CHECKPOINT)
    description = ("HPS v2.1 of the edited image against the target prompt: cos of the HPS-tuned OpenCLIP "
                   "ViT-H/14 image and text features (metric_options.hps_checkpoint)")  # fmt: skip

    def load(self, extractors):
        self.device = extractors.device
        o = extractors.options
        self.model, self.tokenizer = extractors.get(hps_network, o.hps_architecture, o.hps_checkpoint, metric=self.name)

    def compute(self, edited, source, samples):
        size = self.model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        image = self.model.encode_image(hps_transform(edited, size), normalize=True)
        prompts = [s.target_prompt or "" for s in samples]
        text = self.model.encode_text(self.tokenizer(prompts).to(self.device), normalize=True)
        scores = (image * text).sum(-1)
        missing = torch.tensor([not s.target_prompt for s in samples], device=scores.device)
        return torch.where(missing, torch.full_like(scores, float("nan")), scores)


def image_reward_transform(images: torch.Tensor, size: int) -> torch.Tensor:
    """ImageReward's preprocessing of (B, 3, H, W) images in [0, 1]: as PIL images (the saved
    PNG's pixels), resized so the shorter side is ``size`` (bicubic), centre-cropped, normalised."""
    from PIL import Image

    transform = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                           T.ToTensor(), T.Normalize(OPENAI_MEAN, OPENAI_STD)])  # fmt: skip
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return torch.stack([transform(Image.fromarray(p)) for p in pixels])


class ImageReward(ImageMetric):
    name = "image_reward"
    higher_is_better = True
    value_range = (float("-inf"), float("inf"))  # a normalised regression output (z-score of the training rewards)
    needs = frozenset({"target_prompt", "pretrained weights"})
    nan_reason = "the sample has no target prompt"
    options = (IMAGE_REWARD_MODEL, IMAGE_REWARD_TOKENIZER)
    description = ("ImageReward of the edited image against the target prompt: THUDM's BLIP reward model, "
                   "normalised by its published mean and std (metric_options.image_reward_model)")  # fmt: skip

    def load(self, extractors):
        self.device = extractors.device
        o = extractors.options
        self.model, self.tokenizer = extractors.get(image_reward_network, o.image_reward_model,
                                                    o.image_reward_tokenizer, metric=self.name)  # fmt: skip

    def compute(self, edited, source, samples):
        from bench.metrics.image_reward import PROMPT_TOKENS

        pixels = image_reward_transform(edited, self.model.image_size).to(self.device)
        prompts = [s.target_prompt or "" for s in samples]
        text = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=PROMPT_TOKENS,
                              return_tensors="pt").to(self.device)  # fmt: skip
        scores = self.model(pixels, text.input_ids, text.attention_mask)
        missing = torch.tensor([not s.target_prompt for s in samples], device=scores.device)
        return torch.where(missing, torch.full_like(scores, float("nan")), scores)


METRICS = (PickScore, HPSv21, ImageReward)
