"""The metrics of instruction-editing benchmarks, as their authors' evaluation code computes them.

Two references, two sets of names (the same formula against a different image is a different metric):

- **to the ground truth** (MagicBrush, Zhang et al. 2023, ``evaluation/image_eval.py``): ``l1_gt``
  and ``l2_gt`` (mean absolute and mean squared difference of [0, 1] RGB pixels, torch's
  ``L1Loss``/``MSELoss`` over ``ToTensor`` images), ``clip_i_gt`` (cosine of CLIP ViT-B/32 image
  embeddings), ``dino_gt`` (cosine of DINO ViT-S/16 CLS embeddings);
- **to the input** (Emu Edit, Sheynin et al. 2024, which has no ground truth): ``l1_input``,
  ``clip_i_input``, ``dino_input``;
- ``clip_t``: cosine of the edited image's CLIP embedding and the sample's output caption
  (MagicBrush's CLIP-T, Emu Edit's CLIP-out). Not x100 and not clipped at 0, unlike ``clip_score``.

Models: ``metric_options.similarity_clip_model`` (default openai/clip-vit-base-patch32, the
``ViT-B/32`` MagicBrush loads with OpenAI's ``clip``) and ``similarity_dino_model`` (default
facebook/dino-vits16, the ``dino_vits16`` it loads from torch hub). Preprocessing: CLIP's own
(shorter side to 224 bicubic, centre crop 224, CLIP normalisation: transformers'
``CLIPImageProcessor`` does what OpenAI's ``preprocess`` does); DINO as MagicBrush: shorter side
to 256 bicubic (PIL), centre crop 224, ImageNet normalisation.

The images are the 8-bit edited image and, as MagicBrush reads its files, the ground truth at its
own size (``Sample.target_original``, which the hub loader keeps): L1 and L2 resize the edit to the
ground truth's size first (PIL's default filter for ``resize``, bicubic, as ``gen_img.resize(gt_img.size)``),
CLIP-I and DINO embed each image through its own preprocessing. A sample whose loader keeps no
original (only ``target_image``, at the run's resolution) is compared at the run's resolution.
"""

import torch
import torch.nn.functional as F

from bench.metrics.base import ImageMetric
from bench.metrics.clip import clip_network, image_embeddings, text_embeddings
from bench.metrics.options import Option
from bench.metrics.structure import IMAGENET_MEAN, IMAGENET_STD, dino_network
from bench.samples import image_tensor
from bench.params import LOCAL_OR_HUB

NAN = float("nan")
DINO_RESIZE, DINO_CROP = 256, 224
SIMILARITY_CLIP_MODEL = Option("similarity_clip_model", str, "openai/clip-vit-base-patch32",
                               "CLIP of clip_i_gt, clip_i_input and clip_t (MagicBrush's ViT-B/32): a hub id or a folder",
                               path=LOCAL_OR_HUB)
SIMILARITY_DINO_MODEL = Option("similarity_dino_model", str, "facebook/dino-vits16",
                               "DINO of dino_gt and dino_input (MagicBrush's ViT-S/16): a hub id or a local folder",
                               path=LOCAL_OR_HUB)


def _references(metric: ImageMetric, source: torch.Tensor, samples: list) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(reference images, defined rows): the ground truth of each sample at its own size (NaN-free
    zeros where it has none, marked undefined) for ``*_gt`` metrics, else the source."""
    if not metric.to_ground_truth:
        return list(source), torch.ones(len(samples), dtype=torch.bool, device=source.device)
    defined = torch.tensor([s.target_image is not None for s in samples], device=source.device)
    refs = []
    for sample in samples:
        truth = sample.target_original if sample.target_original is not None else sample.target_image
        if truth is None:
            truth = torch.zeros_like(source[0])
        elif truth is sample.target_image and truth.shape != source.shape[1:]:
            raise ValueError(f"metric {metric.name!r}: sample {sample.id!r} has a ground truth of shape "
                             f"{tuple(truth.shape)}, the edit is {tuple(source.shape[1:])}")  # fmt: skip
        refs.append(truth.to(source.device))
    return refs, defined


def resized_to(image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """A [0, 1] 8-bit image resized to ``reference``'s size as MagicBrush does: PIL's ``resize``
    with its default filter (bicubic), then ``ToTensor``."""
    from PIL import Image

    height, width = reference.shape[1:]
    if tuple(image.shape[1:]) == (height, width):
        return image
    pil = Image.fromarray((image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())
    return image_tensor(pil.resize((width, height))).to(image.device)


def _masked(values: torch.Tensor, defined: torch.Tensor) -> torch.Tensor:
    return torch.where(defined, values, torch.full_like(values, NAN))


def dino_preprocess(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> MagicBrush's DINO input: 8-bit PIL, shorter side to 256 bicubic, centre crop 224, ImageNet-normalised."""
    from PIL import Image
    from torchvision.transforms import functional as TF

    out = []
    for image in images:
        pil = Image.fromarray((image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())
        pil = TF.center_crop(TF.resize(pil, DINO_RESIZE, interpolation=TF.InterpolationMode.BICUBIC), DINO_CROP)
        out.append(TF.normalize(TF.to_tensor(pil), IMAGENET_MEAN, IMAGENET_STD))
    return torch.stack(out)


def dino_embeddings(model, images: torch.Tensor) -> torch.Tensor:
    """L2-normalised CLS embeddings (after the final norm, as DINO's ``forward`` returns) of [0, 1] images."""
    device = next(model.parameters()).device
    out = model(pixel_values=dino_preprocess(images).to(device))
    return F.normalize(out.last_hidden_state[:, 0], dim=-1)


class _Distance(ImageMetric):
    higher_is_better = False
    value_range = (0.0, 1.0)
    power: int
    to_ground_truth = True

    def compute(self, edited, source, samples):
        references, defined = _references(self, source, samples)
        distances = [(resized_to(image, ref) - ref).abs().pow(self.power).mean()
                     for image, ref in zip(edited, references)]  # fmt: skip
        return _masked(torch.stack(distances), defined)


class L1GroundTruth(_Distance):
    name, power = "l1_gt", 1
    needs = frozenset({"target_image"})
    nan_reason = "the sample has no ground-truth image"
    description = "MagicBrush L1: mean |edited - ground truth| of [0, 1] RGB pixels"


class L2GroundTruth(_Distance):
    name, power = "l2_gt", 2
    needs = frozenset({"target_image"})
    nan_reason = "the sample has no ground-truth image"
    description = "MagicBrush L2: mean (edited - ground truth)^2 of [0, 1] RGB pixels (torch MSELoss)"


class L1Input(_Distance):
    name, power, to_ground_truth = "l1_input", 1, False
    description = "Emu Edit L1: mean |edited - input| of [0, 1] RGB pixels"


class _Similarity(ImageMetric):
    higher_is_better = True
    value_range = (-1.0, 1.0)
    to_ground_truth = True
    backbone: str  # "clip" or "dino"

    def load(self, extractors):
        super().load(extractors)
        options = extractors.options
        if self.backbone == "clip":
            self.model, self.processor = extractors.get(clip_network, options.similarity_clip_model, None,
                                                        metric=self.name)  # fmt: skip
        else:
            self.model = extractors.get(dino_network, options.similarity_dino_model, metric=self.name)

    def embed(self, images):
        if self.backbone == "clip":
            return image_embeddings(self.model, self.processor, images)
        return dino_embeddings(self.model, images)

    def compute(self, edited, source, samples):
        references, defined = _references(self, source, samples)
        return _masked((self.embed(edited) * self.embed(references)).sum(-1), defined)


CLIP_TEXT = "CLIP (metric_options.similarity_clip_model, default openai/clip-vit-base-patch32; CLIP's preprocessing)"
DINO_TEXT = ("DINO CLS (metric_options.similarity_dino_model, default facebook/dino-vits16; shorter side 256 bicubic, "
             "centre crop 224, ImageNet normalisation)")  # fmt: skip


class ClipImageGroundTruth(_Similarity):
    name, backbone = "clip_i_gt", "clip"
    needs = frozenset({"target_image", "pretrained weights"})
    nan_reason = "the sample has no ground-truth image"
    options = (SIMILARITY_CLIP_MODEL,)
    description = f"MagicBrush CLIP-I: cosine of {CLIP_TEXT} embeddings of edited and ground-truth images"


class DinoGroundTruth(_Similarity):
    name, backbone = "dino_gt", "dino"
    needs = frozenset({"target_image", "pretrained weights"})
    nan_reason = "the sample has no ground-truth image"
    options = (SIMILARITY_DINO_MODEL,)
    description = f"MagicBrush DINO: cosine of {DINO_TEXT} embeddings of edited and ground-truth images"


class ClipImageInput(_Similarity):
    name, backbone, to_ground_truth = "clip_i_input", "clip", False
    needs = frozenset({"pretrained weights"})
    options = (SIMILARITY_CLIP_MODEL,)
    description = f"Emu Edit CLIP-I: cosine of {CLIP_TEXT} embeddings of edited and input images"


class DinoInput(_Similarity):
    name, backbone, to_ground_truth = "dino_input", "dino", False
    needs = frozenset({"pretrained weights"})
    options = (SIMILARITY_DINO_MODEL,)
    description = f"Emu Edit DINO: cosine of {DINO_TEXT} embeddings of edited and input images"


class ClipText(ImageMetric):
    name = "clip_t"
    higher_is_better = True
    value_range = (-1.0, 1.0)
    needs = frozenset({"output_caption", "pretrained weights"})
    nan_reason = "the sample has no output caption"
    options = (SIMILARITY_CLIP_MODEL,)
    description = f"MagicBrush CLIP-T / Emu Edit CLIP-out: cosine of {CLIP_TEXT} embeddings of edited image and output caption"

    def load(self, extractors):
        super().load(extractors)
        self.model, self.processor = extractors.get(clip_network, extractors.options.similarity_clip_model, None,
                                                    metric=self.name)  # fmt: skip

    def compute(self, edited, source, samples):
        captions = [s.output_caption for s in samples]
        defined = torch.tensor([bool(c) for c in captions], device=edited.device)
        if not defined.any():
            return torch.full((len(samples),), NAN, device=edited.device)
        images = image_embeddings(self.model, self.processor, edited)
        texts = text_embeddings(self.model, self.processor, [c or "" for c in captions])
        return _masked((images * texts).sum(-1), defined)


METRICS = (L1GroundTruth, L2GroundTruth, ClipImageGroundTruth, DinoGroundTruth, ClipText, L1Input, ClipImageInput,
           DinoInput)  # fmt: skip
