"""Guided sampling (docs/REFERENCE.md, "Guidance by gradients"): classifier-free guidance, and gradient guidance
by a differentiable score of the decoded image (a classifier's log-probability, a CLIP similarity).

One loop serves the three guidance methods. A cell starts from pure noise (``t0 = 1``,
generation) or from the source latent noised to ``t0 * T`` (SDEdit-style editing), and runs
DDIM with the UNet's prediction under CFG weight ``w`` (``w = 0``: the empty prompt,
unconditional; otherwise the sample's target prompt).

Gradient guidance plugs in through one interface, ``Guide.score(images, sample, generator)``:
a differentiable score, per image, of decoded images in [0, 1]. ``GuidedEps.gradient`` turns
it into guided-diffusion's ``cond_fn`` for latent diffusion: the gradient with respect to
``z_t`` of ``score(D(z0_hat(z_t)))``, through the VAE decoder and the UNet ("universal
guidance"; no noise-aware classifier exists for SD latents). The guided noise is
``eps_hat = eps - scale * sqrt(1 - abar_t) * grad``. Each step builds its graph on a fresh
leaf and returns detached tensors, so no autograd graph outlives a step.
"""

import functools
import importlib
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.data import Sample, prepare_image
from bench.diffusion.sampling import (
    alpha_bar,
    decode_rows,
    denoise,
    fresh_noise,
    generators,
    partial_timesteps,
    source_latents,
    split_rows,
    text_guided_eps,
)
from bench.errors import ConfigError, SampleError, did_you_mean, unknown
from bench.method import EditResult, EditRow
from bench.params import Param, guidance_param, start_level_param, steps_param

UNTRAINED_CLASSIFIER = "untrained classifier (smoke numbers)"
UNTRAINED_CLIP = "untrained CLIP guide (smoke numbers)"


# -- parameters every guidance method shares ------------------------------------------------
def sampler_params(w: float) -> tuple[Param, ...]:
    """``w`` (CFG weight of the UNet's prompt), ``steps``, and ``t0`` (1 = generation, the default)."""
    return (guidance_param(w), steps_param(), start_level_param(1.0))


def scale_param(default: float) -> Param:
    return Param("scale", float, default, "gradient guidance scale s (0 = unguided)", low=0)


# -- the loop ----------------------------------------------------------------------------------
def start_latents(backbone, scheduler, rows, timesteps: torch.Tensor, t0: float) -> torch.Tensor:
    """Pure noise for ``t0 = 1`` (as ``StableDiffusionPipeline``), else each row's source noised
    to the first timestep; each row's noise from its own generator."""
    if t0 == 1:
        height, width = backbone.latent_hw(rows[0].sample.image)  # the rows' size
        shape = (len(rows), backbone.latent_channels, height, width)
        like = torch.empty(shape, device=backbone.device, dtype=backbone.dtype)
        return fresh_noise(like, generators(rows)) * scheduler.init_noise_sigma
    source = source_latents(backbone, rows)
    return scheduler.add_noise(source, fresh_noise(source, generators(rows)), timesteps[:1])


def unet_eps(backbone, samples: list[Sample], w: float, unet_at=None):
    """The UNet's prediction: each sample's target prompt under CFG ``w``; ``w = 0`` needs no prompt.
    ``unet_at``: per-step UNet calls (see ``sampling.text_guided_eps``)."""
    for sample in samples:
        if w != 0 and not sample.target_prompt:
            raise SampleError(sample.id, f"CFG weight w = {w} needs a target prompt; use w = 0 for unconditional sampling")
    return text_guided_eps(backbone, [sample.target_prompt or "" for sample in samples], w, unet_at)


class Guide:
    """What gradient guidance ascends: a differentiable score of decoded images.

    ``score`` takes (B, 3, H, W) images in [0, 1] and returns (B,) scores (higher = more
    wanted); ``generator`` serves random augmentations. ``labels`` are caveats every number
    guided by it carries (an untrained network).
    """

    labels: tuple[str, ...] = ()

    def check(self, sample: Sample) -> None:
        """Raise ``SampleError`` when the guide cannot score ``sample`` (e.g. it has no label)."""

    def score(self, images: torch.Tensor, sample: Sample, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class GuidedEps:
    """``eps_hat = eps - scale * sqrt(1 - abar_t) * grad_{z_t} score(D(z0_hat(z_t)))``, an ``EpsFn``.

    Counts ``grad_evals``: one per guided step (decoder and guide forward and backward; the
    UNet forward is counted as NFE as usual, and its prediction is reused for the step).
    """

    def __init__(self, backbone, scheduler, eps_fn, guide: Guide, sample: Sample, scale: float, generator):
        self.backbone, self.scheduler, self.eps_fn = backbone, scheduler, eps_fn
        self.guide, self.sample, self.scale, self.generator = guide, sample, scale, generator
        self.grad_evals = 0

    def gradient(self, latent: torch.Tensor, t, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """guided-diffusion's ``cond_fn``: the score's gradient with respect to ``z_t``, and ``eps(z_t)``."""
        abar = alpha_bar(self.scheduler, int(t)).to(latent.device, latent.dtype)
        with torch.enable_grad():
            z = latent.detach().requires_grad_(True)
            eps = self.eps_fn(z, t, index)
            clean = (z - (1 - abar).sqrt() * eps) / abar.sqrt()
            images = self.backbone.decode(clean)
            images = images.to(torch.promote_types(images.dtype, torch.float32))  # fp16 backbones: fp32 guides
            score = self.guide.score(images, self.sample, self.generator)
            (grad,) = torch.autograd.grad(score.sum(), z)
        self.grad_evals += 1
        return grad.detach(), eps.detach()

    def __call__(self, latent: torch.Tensor, t, index: int) -> torch.Tensor:
        grad, eps = self.gradient(latent, t, index)
        abar = alpha_bar(self.scheduler, int(t)).to(latent.device, latent.dtype)
        return eps - self.scale * (1 - abar).sqrt() * grad


@torch.no_grad()
def guided_batch(
    backbone, rows: list[EditRow], setting: dict, guide: Guide | None = None, unet_at=None
) -> list[EditResult]:
    """Guidance cells at one ``setting`` (``w``, ``steps``, ``t0`` and, with a guide, ``scale``).

    Without a guide (plain CFG) the rows run as one batch; gradient guidance follows one
    sample's score, so it takes a single row. ``unet_at(index)``: the UNet call of each step,
    when not the backbone's own (spatial control).
    """
    if guide is not None and len(rows) != 1:
        raise ValueError(f"gradient guidance runs one cell at a time, got {len(rows)}")
    scheduler = backbone.new_scheduler(setting["steps"], backbone.latent_hw(rows[0].sample.image))
    timesteps = partial_timesteps(scheduler, setting["steps"], setting["t0"])
    latent = start_latents(backbone, scheduler, rows, timesteps, setting["t0"])
    eps = unet_eps(backbone, [row.sample for row in rows], setting["w"], unet_at)
    if guide is not None:
        guide.check(rows[0].sample)  # at every scale, so a sweep fails or succeeds as a whole
    if guide is not None and setting["scale"] != 0:
        eps = GuidedEps(backbone, scheduler, eps, guide, rows[0].sample, setting["scale"], rows[0].generator)
    latent = denoise(scheduler, latent, timesteps, eps, generators(rows))
    results = split_rows(decode_rows(backbone, latent))
    if guide is not None:
        results[0].grad_evals, results[0].labels = getattr(eps, "grad_evals", 0), list(guide.labels)
    return results


def guided_sample(
    backbone, sample: Sample, setting: dict, generator, guide: Guide | None = None, unet_at=None
) -> EditResult:
    """One guidance cell (see ``guided_batch``)."""
    return guided_batch(backbone, [EditRow(sample, None, generator)], setting, guide, unet_at)[0]


def resize_crop(images: torch.Tensor, resize: int, crop: int) -> torch.Tensor:
    """Differentiable resize of the shorter side (bilinear, antialiased) and centre crop."""
    h, w = images.shape[-2:]
    scale = resize / min(h, w)
    size = (max(resize, round(h * scale)), max(resize, round(w * scale)))
    images = F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - crop) // 2, (size[1] - crop) // 2
    return images[..., top : top + crop, left : left + crop]


def _normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    mean = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    std = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - mean) / std


# -- classifier guidance -----------------------------------------------------------------------
class LabelParam(Param):
    """A class label: an ImageNet index (int or digits) or a class name; ``""`` = the sample's own."""

    def allowed(self) -> str:
        return "an ImageNet class index (int) or class name"

    def validate(self, value, where):
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        return super().validate(value, where)


class ImageNetClassifier(torch.nn.Module):
    """A torchvision classifier with its evaluation preprocessing, made differentiable:
    resize the shorter side, centre crop, normalise; input (B, 3, H, W) in [0, 1]."""

    def __init__(self, model: torch.nn.Module, transforms, categories: list[str]):
        super().__init__()
        self.model, self.categories = model, categories
        self.resize, self.crop = transforms.resize_size[0], transforms.crop_size[0]
        self.mean, self.std = transforms.mean, transforms.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(_normalise(resize_crop(images, self.resize, self.crop), self.mean, self.std))


def torchvision_classifiers() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def _weights(name: str):
    from torchvision.models import get_model_weights

    return get_model_weights(name).DEFAULT


def weights_file(name: str) -> Path:
    """Where torch hub keeps the pretrained weights of torchvision model ``name``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(_weights(name).url).name


def check_classifier(spec: str, untrained: bool) -> None:
    """Refuse an unknown classifier, an unimportable factory, or missing pretrained weights."""
    if ":" in spec:
        _factory(spec)
        return
    names = torchvision_classifiers()
    if spec not in names:
        raise ConfigError(
            unknown("classifier", spec, names) + "; or a factory given as 'package.module:function'"
        )
    if not untrained and not weights_file(spec).is_file():
        raise ConfigError(
            f"classifier {spec!r}: pretrained weights {weights_file(spec)} are not on disk and editbench "
            f"does not download them. Fetch them once online (torchvision.models.get_model({spec!r}, "
            f"weights='DEFAULT')), or set untrained: true for a randomly initialised classifier (smoke numbers only)."
        )


def _factory(spec: str):
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"classifier {spec!r}: cannot import {attr!r} from module {module_name!r}: {exc}") from exc
    if not callable(factory):
        raise ConfigError(f"classifier {spec!r}: {attr!r} is not callable")
    return factory


@functools.lru_cache(maxsize=4)
def load_classifier(spec: str, untrained: bool, device: torch.device) -> torch.nn.Module:
    """A frozen classifier mapping (B, 3, H, W) images in [0, 1] to logits.

    ``spec`` is a torchvision classification model name (pretrained weights from the torch
    hub cache; ``untrained``: seeded random weights) or ``package.module:factory``, a function
    of no arguments returning such a module (a ``categories`` attribute lists class names).
    """
    check_classifier(spec, untrained)
    if ":" in spec:
        model = _factory(spec)()
    else:
        from torchvision.models import get_model

        weights = _weights(spec)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = get_model(spec, weights=None)
        if not untrained:
            net.load_state_dict(weights.get_state_dict(progress=False, check_hash=True))
        model = ImageNetClassifier(net, weights.transforms(), list(weights.meta["categories"]))
    return model.to(device).eval().requires_grad_(False)


def class_index(label, categories: list[str] | None, n_classes: int | None, where: str) -> int:
    """A label as a class index: an index (int or digits) below ``n_classes`` (when known), or a category name."""
    text = str(label).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if index < 0 or (n_classes is not None and index >= n_classes):
            raise ValueError(f"{where}: class index {index} is out of range; the classifier has {n_classes} classes")
        return index
    if not categories:
        raise ValueError(f"{where}: class name {text!r} given, but the classifier lists no class names; give an index")
    lowered = [c.lower() for c in categories]
    if text.lower() not in lowered:
        raise ValueError(f"{where}: unknown class name {text!r}{did_you_mean(text, categories)}")
    return lowered.index(text.lower())


class ClassifierGuide(Guide):
    """Score: ``log p(label | image)`` of a classifier; the label from the setting or the sample."""

    def __init__(self, model: torch.nn.Module, label: str, untrained: bool):
        self.model, self.label = model, label
        self.categories = getattr(model, "categories", None)
        self.labels = (UNTRAINED_CLASSIFIER,) if untrained else ()

    def target(self, sample: Sample, n_classes: int | None) -> int:
        label = self.label or sample.class_label
        if label in (None, ""):
            raise SampleError(sample.id, "has no class_label; give classifier_guidance a label for the whole config")
        try:
            return class_index(label, self.categories, n_classes, "classifier_guidance label")
        except ValueError as exc:
            raise SampleError(sample.id, str(exc)) from exc

    def check(self, sample):
        self.target(sample, len(self.categories) if self.categories else None)

    def score(self, images, sample, generator):
        log_p = self.model(images).log_softmax(-1)
        return log_p[:, self.target(sample, log_p.shape[-1])]


# -- CLIP guidance -------------------------------------------------------------------------------
class Clip:
    """A frozen CLIPModel (``bench.metrics.clip.load_clip``: a local folder or the Hugging Face
    cache, nothing downloaded; ``untrained``: the named architecture with seeded random weights)
    and its image statistics. Embeddings are unit vectors."""

    def __init__(self, name: str, untrained: bool, device: torch.device):
        from bench.metrics.clip import CLIP_ARCHITECTURES
        from bench.metrics.clip import load_clip as load_clip_model
        from bench.metrics.offline import ExtractorMissing

        if untrained and name not in CLIP_ARCHITECTURES:
            raise ConfigError(
                f"clip_guidance clip_model {name!r}: untrained: true rebuilds only {', '.join(CLIP_ARCHITECTURES)}"
            )
        try:
            model, self.processor = load_clip_model(name, untrained, 0)
        except ExtractorMissing as exc:
            raise ConfigError(
                f"clip_guidance clip_model {name!r}: no local weights ({exc}). For guidance, give a local CLIPModel "
                "folder, or set untrained: true for seeded random weights (smoke numbers only)."
            ) from exc
        self.model = model.to(device).eval().requires_grad_(False)
        images = self.processor.image_processor
        self.size, self.mean, self.std = images.crop_size["height"], images.image_mean, images.image_std
        self.untrained, self.device = untrained, device
        self._texts: dict[str, torch.Tensor] = {}

    def text(self, prompt: str) -> torch.Tensor:
        """(1, D) unit embedding of ``prompt``; cached."""
        from bench.metrics.clip import text_embeddings

        if prompt not in self._texts:
            with torch.no_grad():
                self._texts[prompt] = text_embeddings(self.model, self.processor, [prompt]).float()
        return self._texts[prompt]

    def image(self, views: torch.Tensor) -> torch.Tensor:
        """Unit embeddings of (N, 3, s, s) views in [0, 1] at the model's input size (differentiable)."""
        from bench.metrics.clip import projected_features

        out = self.model.get_image_features(pixel_values=_normalise(views, self.mean, self.std))
        return F.normalize(projected_features(out).float(), dim=-1)


@functools.lru_cache(maxsize=2)
def load_clip(name: str, untrained: bool, device: torch.device) -> Clip:
    """A CLIP model for guidance by hub id (from the local cache) or local folder (see ``Clip``)."""
    return Clip(name, untrained, device)


def views(images: torch.Tensor, size: int, cutouts: int, generator: torch.Generator) -> torch.Tensor:
    """The whole image and ``cutouts`` random square crops (side 1/2 to all of the shorter
    side, random position, random horizontal flip), each resized to ``size``: (B*(1+cutouts), 3, s, s)."""
    out = [resize_crop(images, size, size)]
    h, w = images.shape[-2:]
    for _ in range(cutouts):
        r = torch.rand(4, generator=generator).tolist()
        side = int(min(h, w) * (0.5 + 0.5 * r[0]))
        top, left = int(r[1] * (h - side)), int(r[2] * (w - side))
        crop = images[..., top : top + side, left : left + side]
        out.append(resize_crop(crop.flip(-1) if r[3] < 0.5 else crop, size, size))
    return torch.cat(out)


class ClipGuide(Guide):
    """Score: mean cosine similarity, over the views, of CLIP's image embedding and the target's:
    the sample's target prompt (text guidance) or a reference image (image guidance)."""

    def __init__(self, clip: Clip, cutouts: int, reference: torch.Tensor | None = None):
        self.clip, self.cutouts = clip, cutouts
        self.reference = None
        if reference is not None:
            with torch.no_grad():
                self.reference = clip.image(resize_crop(reference.to(clip.device), clip.size, clip.size))
        self.labels = (UNTRAINED_CLIP,) if clip.untrained else ()

    def target(self, sample: Sample) -> torch.Tensor:
        if self.reference is not None:
            return self.reference
        if not sample.target_prompt:
            raise SampleError(sample.id, "CLIP text guidance needs a target prompt; give a reference image instead")
        return self.clip.text(sample.target_prompt)

    def check(self, sample):
        self.target(sample)

    def score(self, images, sample, generator):
        embedded = self.clip.image(views(images, self.clip.size, self.cutouts, generator))
        cosine = embedded @ self.target(sample)[0]
        return cosine.view(1 + self.cutouts, images.shape[0]).mean(0)


def load_reference(path: str, resolution: int) -> torch.Tensor:
    """A reference image as (1, 3, R, R) in [0, 1], by the datasets' resize-and-centre-crop rule."""
    from PIL import Image

    try:
        with Image.open(Path(path).expanduser()) as img:
            return prepare_image(img, resolution)[None]
    except OSError as exc:
        raise ConfigError(f"clip_guidance reference {path!r}: cannot read the image: {exc}") from exc
