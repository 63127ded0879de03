"""FLUX.1 Kontext [dev] (Black Forest Labs, 2025): FLUX.1's transformer trained to edit, reading the
reference image's latent tokens beside the noisy ones (diffusers' ``FluxKontextPipeline``).

Its components, files, VAE and scheduler are FLUX.1's (``bench.diffusion.families.flux``); it is
a family of its own because its checkpoint is an instruction editor, run whole by the ``kontext``
method through diffusers' pipeline (``pipeline``), not a text-to-image model for the training-free
editors. ``SIZE_RULE`` is the pipeline's own resolution rule (``_auto_resize``): the preferred
resolution of closest aspect ratio (``PREFERRED_KONTEXT_RESOLUTIONS``, the same 17 sizes as
black-forest-labs' ``sampling.py``), which the ``model`` resolution policy applies.
"""

from bench.diffusion.families.flux import (  # noqa: F401  (the family interface, shared with FLUX.1)
    CUDA_DTYPE,
    DENOISER,
    decode,
    encode_image,
    encode_text,
    hub_patterns,
    load,
    native_resolution,
    new_scheduler,
    scheduler_class,
    scheduler_name,
    step_rules,
    weight_files,
)

#: diffusers 0.42 ``pipeline_flux_kontext.PREFERRED_KONTEXT_RESOLUTIONS`` ((W, H), ~1 MP each).
PREFERRED_RESOLUTIONS = (
    (672, 1568), (688, 1504), (720, 1456), (752, 1392), (800, 1328), (832, 1248), (880, 1184), (944, 1104),
    (1024, 1024), (1104, 944), (1184, 880), (1248, 832), (1328, 800), (1392, 752), (1456, 720), (1504, 688),
    (1568, 672),
)  # fmt: skip
SIZE_RULE = {"choices": PREFERRED_RESOLUTIONS, "multiple": 16, "rounding": "floor"}
PIPELINE = "FluxKontextPipeline"


def pipeline(backbone, scheduler):
    """diffusers' ``FluxKontextPipeline`` over the backbone's own networks and ``scheduler``."""
    from diffusers import FluxKontextPipeline

    pipe = FluxKontextPipeline(
        transformer=backbone.transformer, scheduler=scheduler, vae=backbone.vae, text_encoder=backbone.text_encoder,
        tokenizer=backbone.tokenizer, text_encoder_2=backbone.text_encoder_2, tokenizer_2=backbone.tokenizer_2,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe
