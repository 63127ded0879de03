"""LongCat-Image-Edit (Meituan, 2025): a FLUX-style flow transformer over a 16-channel VAE's
2x2-packed latents, conditioned on a Qwen2.5-VL's reading of the instruction and the source image
(diffusers' ``LongCatImageEditPipeline``).

An instruction editor's family: the ``longcat_edit`` method runs the whole pipeline over the
backbone's networks (``pipeline``). The pipeline takes no height or width: it always makes
``calculate_dimensions(1024², W/H)`` (sides rounded up to multiples of 16), which is ``SIZE_RULE``,
the ``model`` resolution policy's rule.
"""

from bench.diffusion.families.flux import decode, encode_image  # noqa: F401  (FLUX's VAE scaling and shift)
from bench.diffusion.families import files
from bench.diffusion.families.qwen_image import (  # noqa: F401  (Qwen-Image-Edit's files and scheduler)
    COMPONENT_WEIGHTS,
    scheduler_class,
    scheduler_name,
    weight_files,
)

DENOISER = "transformer"
CUDA_DTYPE = "bf16"
SIZE_RULE = {"multiple": 16, "rounding": "ceil"}


def hub_patterns(spec) -> list[str]:
    return files.hub_patterns(COMPONENT_WEIGHTS, ("tokenizer", "text_processor"), any_stem=True)


def native_resolution(denoiser_config: dict, vae_config: dict) -> int:
    """The VAE's ``sample_size``, else the pipeline's ~1024² px."""
    return vae_config.get("sample_size") or 1024


def load(backbone, common: dict) -> None:
    """Set ``transformer``, ``vae``, the Qwen2.5-VL ``text_encoder`` with its ``tokenizer`` and
    ``text_processor``, and the scheduler config."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, LongCatImageTransformer2DModel
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer, Qwen2VLProcessor

    folder = backbone.folder
    backbone.transformer = LongCatImageTransformer2DModel.from_pretrained(folder, subfolder="transformer", **common)
    backbone.vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **common)
    backbone.text_encoder = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        folder, subfolder="text_encoder", **common
    )
    backbone.tokenizer = Qwen2Tokenizer.from_pretrained(folder, subfolder="tokenizer")
    backbone.text_processor = Qwen2VLProcessor.from_pretrained(folder, subfolder="text_processor")
    backbone.denoiser = backbone.transformer
    backbone.networks = (backbone.transformer, backbone.vae, backbone.text_encoder)
    backbone.scheduler_config = FlowMatchEulerDiscreteScheduler.load_config(folder, subfolder="scheduler")
    backbone._scheduler_cls = FlowMatchEulerDiscreteScheduler


def pipeline(backbone, scheduler):
    """diffusers' ``LongCatImageEditPipeline`` over the backbone's networks and ``scheduler``."""
    from diffusers import LongCatImageEditPipeline

    pipe = LongCatImageEditPipeline(scheduler=scheduler, vae=backbone.vae, text_encoder=backbone.text_encoder,
                                    tokenizer=backbone.tokenizer, text_processor=backbone.text_processor,
                                    transformer=backbone.transformer)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe
