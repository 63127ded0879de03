"""Backbone families: what differs between Stable Diffusion 1.x/2.x, SDXL, SD3/3.5 and FLUX.1, one module each.

A family module (``sd``, ``sdxl``, ``sd3``, ``flux``) implements the same functions, which ``bench.diffusion.backbone.Backbone``
calls: ``load`` (the components, from a pipeline folder), ``weight_files`` (what the fingerprint
hashes), ``encode_text`` (one packed conditioning tensor per prompt), ``encode_image``/``decode``
(VAE with the family's scaling and shift), ``predict`` (the denoiser: noise for UNets, velocity for
SD3 and FLUX) and ``new_scheduler`` (a fresh sampler whose ``add_noise`` noises to a level and whose
``step`` takes one step). CFG combines predictions the same way for every family
(``bench.diffusion.sampling.guided_eps``) unless the family defines ``guided_prediction`` (FLUX's
distilled guidance, an input of the transformer) and ``guided_evaluations`` (its cost per step);
``native_resolution``, where defined, replaces the denoiser's ``sample_size`` as the default size;
``SIZE_RULE``, where defined, is the model's own resolution rule (``bench.samples.Frame`` fields), which
the ``model`` resolution policy applies. An instruction editor's family (``kontext``, ...) also gives
``pipeline(backbone, scheduler)``: its diffusers pipeline over the backbone's networks, which its
method calls. The family is read from the pipeline folder's
``model_index.json`` (``_class_name``), or for an official hub id not yet downloaded from ``OFFICIAL_HUB_IDS``;
another flow transformer is one more module here.
"""

import importlib
import json
from pathlib import Path

from bench.errors import ConfigError

#: The diffusers pipeline classes each family loads (``model_index.json``'s ``_class_name``).
PIPELINE_FAMILIES = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionImg2ImgPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusionXLImg2ImgPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3",
    "StableDiffusion3Img2ImgPipeline": "sd3",
    "FluxPipeline": "flux",
    "FluxImg2ImgPipeline": "flux",
    "FluxKontextPipeline": "kontext",
    "QwenImageEditPipeline": "qwen_image",
    "QwenImageEditPlusPipeline": "qwen_image_plus",
    "Flux2Pipeline": "flux2",
    "Flux2KleinPipeline": "flux2",
    "LongCatImageEditPipeline": "longcat",
}
#: Official hub ids (lower-case: the hub matches ids case-insensitively) -> the pipeline class their
#: ``model_index.json`` names. A hub id whose configs are not in the hub cache yet (a dry run, or a config resolved
#: before the first download) gets from here the family, variant and family defaults its checkpoint will load with;
#: any other uncached id stays unknown until it is downloaded (``bench.diffusion.backbone.known_family``).
OFFICIAL_HUB_IDS = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "StableDiffusionPipeline",
    "runwayml/stable-diffusion-v1-5": "StableDiffusionPipeline",
    "compvis/stable-diffusion-v1-4": "StableDiffusionPipeline",
    "stabilityai/stable-diffusion-2-1": "StableDiffusionPipeline",
    "stabilityai/stable-diffusion-2-1-base": "StableDiffusionPipeline",
    "stabilityai/stable-diffusion-xl-base-1.0": "StableDiffusionXLPipeline",
    "stabilityai/stable-diffusion-3-medium-diffusers": "StableDiffusion3Pipeline",
    "stabilityai/stable-diffusion-3.5-medium": "StableDiffusion3Pipeline",
    "stabilityai/stable-diffusion-3.5-large": "StableDiffusion3Pipeline",
    "stabilityai/stable-diffusion-3.5-large-turbo": "StableDiffusion3Pipeline",
    "black-forest-labs/flux.1-dev": "FluxPipeline",
    "black-forest-labs/flux.1-schnell": "FluxPipeline",
    "black-forest-labs/flux.1-krea-dev": "FluxPipeline",
    "black-forest-labs/flux.1-kontext-dev": "FluxKontextPipeline",
    "black-forest-labs/flux.2-dev": "Flux2Pipeline",
    "black-forest-labs/flux.2-klein-4b": "Flux2KleinPipeline",
    "black-forest-labs/flux.2-klein-9b": "Flux2KleinPipeline",
    "black-forest-labs/flux.2-klein-base-4b": "Flux2KleinPipeline",
    "black-forest-labs/flux.2-klein-base-9b": "Flux2KleinPipeline",
    "qwen/qwen-image-edit": "QwenImageEditPipeline",
    "qwen/qwen-image-edit-2509": "QwenImageEditPlusPipeline",
    "qwen/qwen-image-edit-2511": "QwenImageEditPlusPipeline",
    "meituan-longcat/longcat-image-edit": "LongCatImageEditPipeline",
}
#: The text-to-image families, which the training-free editors run on.
TEXT_TO_IMAGE_FAMILIES = ("sd", "sdxl", "sd3", "flux")
#: The instruction editors' families: a checkpoint trained to edit, run whole through its diffusers pipeline.
INSTRUCTION_FAMILIES = ("kontext", "qwen_image", "qwen_image_plus", "flux2", "longcat")
FAMILIES = TEXT_TO_IMAGE_FAMILIES + INSTRUCTION_FAMILIES
FAMILY_TITLES = {"sd": "SD 1.x/2.x", "sdxl": "SDXL", "sd3": "SD3/3.5", "flux": "FLUX.1", "kontext": "FLUX.1 Kontext",
                 "qwen_image": "Qwen-Image-Edit",
                 "qwen_image_plus": "Qwen-Image-Edit-2509/2511", "flux2": "FLUX.2 [dev]/[klein]",
                 "longcat": "LongCat-Image-Edit"}
#: The families with SD's UNet, noise prediction and DDIM math, where every UNet method's mathematics carries over.
UNET_FAMILIES = ("sd", "sdxl")


def family_of_folder(folder: Path) -> str:
    """The family of a pipeline folder, from its ``model_index.json`` (a folder without one is SD 1.x)."""
    index = Path(folder) / "model_index.json"
    if not index.is_file():
        return "sd"
    try:
        info = json.loads(index.read_text())
    except ValueError as exc:
        raise ConfigError(f"backbone folder {str(folder)!r} is not a diffusers pipeline folder: its model_index.json "
                          f"is not JSON ({exc})") from exc  # fmt: skip
    class_name = info.get("_class_name", "") if isinstance(info, dict) else None
    if not isinstance(class_name, str):
        raise ConfigError(f"backbone folder {str(folder)!r} is not a diffusers pipeline folder: its model_index.json "
                          "is not a JSON object with a '_class_name'")  # fmt: skip
    if class_name not in PIPELINE_FAMILIES:
        raise ConfigError(
            f"backbone {folder}: pipeline class {class_name!r} is not supported; "
            f"supported: {', '.join(sorted(PIPELINE_FAMILIES))}"
        )
    return PIPELINE_FAMILIES[class_name]


def official_pipeline_class(hub_id: str) -> str | None:
    """The pipeline class of an official hub id (``OFFICIAL_HUB_IDS``), known without its files; None for another id."""
    return OFFICIAL_HUB_IDS.get(hub_id.lower())


def get_family(name: str):
    """The family module ``name`` (one of ``FAMILIES``)."""
    return importlib.import_module(f"bench.diffusion.families.{name}")


def check_method_family(method_cls, family: str) -> None:
    """A one-line ``ConfigError`` when ``method_cls`` does not run on ``family``."""
    if family not in method_cls.families:
        supported = ", ".join(FAMILY_TITLES.get(f, f) for f in method_cls.families)
        raise ConfigError(
            f"method {method_cls.name!r} does not support the {FAMILY_TITLES.get(family, family)} backbone family "
            f"({family}); it supports: {supported}"
        )
