"""FLUX.2 [klein] (Black Forest Labs, 2025): a flow transformer over 2x2-patchified 32-channel VAE
latents, conditioned on a Qwen3's hidden states (layers 9, 18, 27), editing from reference images
(diffusers' ``Flux2KleinPipeline``).

An instruction editor's family: the ``flux2`` method runs the whole pipeline over the backbone's
networks (``pipeline``); ``is_distilled`` (the checkpoint's pipeline config) says whether real CFG
runs (base models) or guidance is ignored (step-distilled ones). ``SIZE_RULE``: the pipeline's
reference rule (downscaled to 1024² px only when larger, sides floored to multiples of 16), which
the ``model`` resolution policy applies. FLUX.2 [dev]'s ``Flux2Pipeline`` (a Mistral encoder,
embedded guidance) is not supported yet.
"""

from bench.diffusion.families.sd3 import scheduler_class, scheduler_name  # noqa: F401  (flow-matching Euler, as SD3)

DENOISER = "transformer"
CUDA_DTYPE = "bf16"
SIZE_RULE = {"multiple": 16, "rounding": "floor", "grow": False}
COMPONENT_WEIGHTS = {"transformer": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model"}


def components(spec) -> list[str]:
    return list(COMPONENT_WEIGHTS)


def weight_files(spec) -> dict[str, str]:
    """Each component's safetensors file (a sharded one is named by its index file)."""
    return {c: f"{COMPONENT_WEIGHTS[c]}.safetensors" for c in components(spec)}


def hub_patterns(spec) -> list[str]:
    patterns = ["model_index.json", "scheduler/*", "tokenizer/*"]
    for c in components(spec):
        patterns += [f"{c}/config.json", f"{c}/{COMPONENT_WEIGHTS[c]}*.safetensors*"]
    return patterns


def native_resolution(denoiser_config: dict, vae_config: dict) -> int:
    """The VAE's ``sample_size`` (1024 for FLUX.2)."""
    return vae_config.get("sample_size") or 1024


def load(backbone, common: dict) -> None:
    """Set ``transformer``, ``vae``, the Qwen3 ``text_encoder`` and its ``tokenizer``, the scheduler
    config and ``is_distilled`` (from ``model_index.json``)."""
    import json

    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    folder = backbone.folder
    backbone.transformer = Flux2Transformer2DModel.from_pretrained(folder, subfolder="transformer", **common)
    backbone.vae = AutoencoderKLFlux2.from_pretrained(folder, subfolder="vae", **common)
    backbone.text_encoder = Qwen3ForCausalLM.from_pretrained(folder, subfolder="text_encoder", **common)
    backbone.tokenizer = AutoTokenizer.from_pretrained(folder, subfolder="tokenizer")
    backbone.denoiser = backbone.transformer
    backbone.networks = (backbone.transformer, backbone.vae, backbone.text_encoder)
    backbone.scheduler_config = FlowMatchEulerDiscreteScheduler.load_config(folder, subfolder="scheduler")
    backbone._scheduler_cls = FlowMatchEulerDiscreteScheduler
    backbone.is_distilled = bool(json.loads((folder / "model_index.json").read_text()).get("is_distilled", False))


def pipeline(backbone, scheduler):
    """diffusers' ``Flux2KleinPipeline`` over the backbone's networks and ``scheduler``."""
    from diffusers import Flux2KleinPipeline

    pipe = Flux2KleinPipeline(scheduler=scheduler, vae=backbone.vae, text_encoder=backbone.text_encoder,
                              tokenizer=backbone.tokenizer, transformer=backbone.transformer,
                              is_distilled=backbone.is_distilled)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe
