"""FLUX.2 (Black Forest Labs, 2025): a flow transformer over 2x2-patchified 32-channel VAE latents,
editing from reference images, in two variants that share the transformer and VAE classes:

- **[dev]** (diffusers' ``Flux2Pipeline``, e.g. ``black-forest-labs/FLUX.2-dev``): a 32B
  transformer with a guidance embedding, conditioned on a 24B Mistral Small 3
  (``Mistral3ForConditionalGeneration`` with its ``PixtralProcessor``, hidden layers 10, 20, 30);
  guidance is embedded (an input of the transformer): one transformer evaluation per step.
- **[klein]** (``Flux2KleinPipeline``, e.g. ``black-forest-labs/FLUX.2-klein-base-9B``):
  conditioned on a Qwen3 (hidden layers 9, 18, 27); real CFG on base models, none on
  step-distilled ones (``is_distilled`` in the checkpoint's pipeline config).

The variant is the checkpoint's ``model_index.json`` ``_class_name`` (``variant``). An instruction
editor's family: the ``flux2`` method runs the whole pipeline over the backbone's networks
(``pipeline``); ``step_rules`` gives the NFE of a guided step per variant. ``SIZE_RULE``: both
pipelines' reference rule (downscaled to 1024² px only when larger, sides floored to multiples of
16), which the ``model`` resolution policy applies.
"""

import json
from pathlib import Path

from bench.diffusion.families import files
from bench.diffusion.families.sd3 import scheduler_class, scheduler_name  # noqa: F401  (flow-matching Euler, as SD3)
from bench.method import StepRules

DENOISER = "transformer"
CUDA_DTYPE = "bf16"
SIZE_RULE = {"multiple": 16, "rounding": "floor", "grow": False}
COMPONENT_WEIGHTS = {
    "transformer": "diffusion_pytorch_model",
    "vae": "diffusion_pytorch_model",
    "text_encoder": "model",
}
#: ``model_index.json``'s pipeline class -> the variant it is.
VARIANTS = {"Flux2Pipeline": "dev", "Flux2KleinPipeline": "klein"}
#: Each variant's diffusers pipeline, text encoder and tokenizer classes (as its ``model_index.json`` names them).
CLASSES = {"dev": ("Flux2Pipeline", "Mistral3ForConditionalGeneration", "PixtralProcessor"),
           "klein": ("Flux2KleinPipeline", "Qwen3ForCausalLM", "AutoTokenizer")}  # fmt: skip


def weight_files(spec) -> dict[str, str]:
    return files.weight_files(COMPONENT_WEIGHTS)


def hub_patterns(spec) -> list[str]:
    """The diffusers layout's files (FLUX.2-dev's transformer and Mistral encoder are sharded), BFL's own
    single-file weights at the repository's top level left out."""
    return files.hub_patterns(COMPONENT_WEIGHTS, ("tokenizer",))


def native_resolution(denoiser_config: dict, vae_config: dict) -> int:
    """The VAE's ``sample_size`` (1024 for FLUX.2)."""
    return vae_config.get("sample_size") or 1024


def variant(folder: Path) -> str:
    """``dev`` or ``klein``: the pipeline class of the folder's ``model_index.json``."""
    return VARIANTS[json.loads((Path(folder) / "model_index.json").read_text())["_class_name"]]


def step_rules(spec) -> StepRules:
    """[dev]: one evaluation per step whatever the guidance (embedded); [klein]: CFG's two above
    guidance 1. The variant is known from the configs, or from the id of an official checkpoint
    not yet downloaded (``bench.diffusion.families.OFFICIAL_HUB_IDS``); another uncached hub id counts as [klein]."""
    from bench.diffusion.backbone import known_pipeline_class

    if VARIANTS.get(known_pipeline_class(spec)) == "dev":
        return StepRules(guided_evaluations=lambda w: 1)
    return StepRules()


def load(backbone, common: dict) -> None:
    """Set ``variant``, ``transformer``, ``vae``, the variant's ``text_encoder`` and ``tokenizer``
    (a ``PixtralProcessor`` for [dev]), the scheduler config and ``is_distilled`` ([klein]'s
    ``model_index.json`` flag; False for [dev], which is guidance-distilled, not step-distilled)."""
    import transformers
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel

    folder = backbone.folder
    backbone.variant = variant(folder)
    _, encoder_class, tokenizer_class = CLASSES[backbone.variant]
    backbone.transformer = Flux2Transformer2DModel.from_pretrained(folder, subfolder="transformer", **common)
    backbone.vae = AutoencoderKLFlux2.from_pretrained(folder, subfolder="vae", **common)
    encoder = getattr(transformers, encoder_class)
    backbone.text_encoder = encoder.from_pretrained(folder, subfolder="text_encoder", **common)
    backbone.tokenizer = getattr(transformers, tokenizer_class).from_pretrained(folder / "tokenizer")
    backbone.denoiser = backbone.transformer
    backbone.networks = (backbone.transformer, backbone.vae, backbone.text_encoder)
    backbone.scheduler_config = FlowMatchEulerDiscreteScheduler.load_config(folder, subfolder="scheduler")
    backbone._scheduler_cls = FlowMatchEulerDiscreteScheduler
    backbone.is_distilled = bool(json.loads((folder / "model_index.json").read_text()).get("is_distilled", False))


def pipeline(backbone, scheduler):
    """The variant's diffusers pipeline (``Flux2Pipeline`` or ``Flux2KleinPipeline``) over the
    backbone's networks and ``scheduler``."""
    import diffusers

    networks = dict(scheduler=scheduler, vae=backbone.vae, text_encoder=backbone.text_encoder,
                    tokenizer=backbone.tokenizer, transformer=backbone.transformer)  # fmt: skip
    if backbone.variant == "klein":
        networks["is_distilled"] = backbone.is_distilled
    pipe = getattr(diffusers, CLASSES[backbone.variant][0])(**networks)
    pipe.set_progress_bar_config(disable=True)
    return pipe
