"""Qwen-Image-Edit-2509/2511 (diffusers' ``QwenImageEditPlusPipeline``): Qwen-Image-Edit's networks
and files (``bench.diffusion.families.qwen_image``) behind the pipeline that takes several input
images; a family of its own so that each method runs on the pipeline it was written for."""

from bench.diffusion.families.qwen_image import (  # noqa: F401  (the family interface, shared with Qwen-Image-Edit)
    CUDA_DTYPE,
    DENOISER,
    SIZE_RULE,
    VAE_FACTOR,
    hub_patterns,
    load,
    native_resolution,
    pipeline,
    scheduler_class,
    scheduler_name,
    weight_files,
)
