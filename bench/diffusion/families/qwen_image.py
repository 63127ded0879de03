"""Qwen-Image-Edit (Qwen team, 2025): a 20B MMDiT over a Qwen-Image VAE's 2x2-packed latents,
conditioned on a 7B Qwen2.5-VL's reading of the instruction and the source image (diffusers'
``QwenImageEditPipeline``; ``QwenImageEditPlusPipeline`` for -2509/-2511, several input images).

An instruction editor's family: the ``qwen_image_edit`` method runs the whole pipeline over the
backbone's networks (``pipeline``). The VAE is a video VAE (``AutoencoderKLQwenImage``, 8x
spatial factor, per-channel latent mean and std); its config has no ``sample_size``, so the
native size is the pipeline's ~1024² px (a tiny checkpoint states its own ``sample_size``).
``SIZE_RULE``: the pipeline's ``calculate_dimensions`` (1024² px area at the input's aspect
ratio, sides rounded to multiples of 32), which the ``model`` resolution policy applies.
"""

from bench.diffusion.families import files
from bench.diffusion.families.sd3 import scheduler_class, scheduler_name  # noqa: F401  (flow-matching Euler, as SD3)

DENOISER = "transformer"
CUDA_DTYPE = "bf16"
VAE_FACTOR = 8
NATIVE_RESOLUTION = 1024
SIZE_RULE = {"multiple": 32}
COMPONENT_WEIGHTS = {
    "transformer": "diffusion_pytorch_model",
    "vae": "diffusion_pytorch_model",
    "text_encoder": "model",
}
PIPELINES = {"QwenImageEditPipeline": "QwenImageEditPipeline", "QwenImageEditPlusPipeline": "QwenImageEditPlusPipeline"}


def weight_files(spec) -> dict[str, str]:
    return files.weight_files(COMPONENT_WEIGHTS)


def hub_patterns(spec) -> list[str]:
    return files.hub_patterns(COMPONENT_WEIGHTS, ("tokenizer", "processor"))


def native_resolution(denoiser_config: dict, vae_config: dict) -> int:
    """~1024² px, the pipeline's working area; a tiny checkpoint's VAE config states a smaller ``sample_size``."""
    return vae_config.get("sample_size") or NATIVE_RESOLUTION


def load(backbone, common: dict) -> None:
    """Set ``transformer``, ``vae``, the Qwen2.5-VL ``text_encoder`` with its ``tokenizer`` and
    ``processor``, the scheduler config and ``pipeline_class`` (from ``model_index.json``)."""
    import json

    import diffusers
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer, Qwen2VLProcessor

    folder = backbone.folder
    backbone.transformer = QwenImageTransformer2DModel.from_pretrained(folder, subfolder="transformer", **common)
    backbone.vae = AutoencoderKLQwenImage.from_pretrained(folder, subfolder="vae", **common)
    backbone.text_encoder = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        folder, subfolder="text_encoder", **common
    )
    backbone.tokenizer = Qwen2Tokenizer.from_pretrained(folder, subfolder="tokenizer")
    backbone.processor = Qwen2VLProcessor.from_pretrained(folder, subfolder="processor")
    backbone.denoiser = backbone.transformer
    backbone.networks = (backbone.transformer, backbone.vae, backbone.text_encoder)
    backbone.scheduler_config = FlowMatchEulerDiscreteScheduler.load_config(folder, subfolder="scheduler")
    backbone._scheduler_cls = FlowMatchEulerDiscreteScheduler
    class_name = json.loads((folder / "model_index.json").read_text())["_class_name"]
    backbone.pipeline_class = getattr(diffusers, PIPELINES[class_name])


def pipeline(backbone, scheduler):
    """The checkpoint's diffusers pipeline (Edit or Edit-Plus) over the backbone's networks and ``scheduler``."""
    pipe = backbone.pipeline_class(
        scheduler=scheduler, vae=backbone.vae, text_encoder=backbone.text_encoder, tokenizer=backbone.tokenizer,
        processor=backbone.processor, transformer=backbone.transformer,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe
