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

import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF

from bench.metrics import ImageMetric
from bench.metrics.clip import _Clip, image_embeddings

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class PickScore(_Clip):
    name = "pickscore"
    higher_is_better = True
    value_range = (-100.0, 100.0)  # CLIP's logit scale is capped at 100
    nan_reason = "the sample has no target prompt"
    description = ("PickScore of the edited image against the target prompt: exp(logit_scale) * cos of "
                   "PickScore_v1's CLIP-H embeddings (metric_options.pickscore_model)")  # fmt: skip

    def load(self, extractors):
        self.device = extractors.device
        self.model, self.processor = extractors.pickscore(self.name)

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
    description = ("HPS v2.1 of the edited image against the target prompt: cos of the HPS-tuned OpenCLIP "
                   "ViT-H/14 image and text features (metric_options.hps_checkpoint)")  # fmt: skip

    def load(self, extractors):
        self.device = extractors.device
        self.model, self.tokenizer = extractors.hps(self.name)

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
    description = ("ImageReward of the edited image against the target prompt: THUDM's BLIP reward model, "
                   "normalised by its published mean and std (metric_options.image_reward_model)")  # fmt: skip

    def load(self, extractors):
        self.device = extractors.device
        self.model, self.tokenizer = extractors.image_reward(self.name)

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
