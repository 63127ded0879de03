"""``flux2``: FLUX.2 [klein] (Black Forest Labs, 2025), an instruction editor with reference images.

Runs diffusers' ``Flux2KleinPipeline`` (0.42) over the backbone's own networks (a ``flux2``
backbone, e.g. ``black-forest-labs/FLUX.2-klein-base-9B``; ``tiny-flux2-klein`` for tests) with
the sample's instruction as the prompt, its source image and then its reference images, which the pipeline
encodes itself (VAE latents, batch-normalised and packed, position ids with time offset 10). The
output comes at the sample's size, which the run's resolution policy gave it (``model``: the
pipeline's own rule, ~1024² px at most, sides of 16). Guidance is real CFG with the empty negative
prompt, two transformer evaluations per step, and only on base models: a step-distilled
checkpoint (``is_distilled``) ignores it, so ``guidance`` must be 1 there (checked before any cell).

Defaults and their sources: ``steps`` 50 and ``guidance`` 4 (``Flux2KleinPipeline``'s
``num_inference_steps`` and ``guidance_scale``). The pipeline reads a list of images as several
references for every prompt, so a batch runs as consecutive single calls, each with its cell's
generator: batched cells equal single ones exactly.
"""

import torch

from bench.errors import ConfigError
from bench.method import Conformance, EditResult, Method
from bench.params import Param, steps_param
from bench.registry import register
from methods.kontext import row_images


@register
class Flux2(Method):
    name = "flux2"
    description = "FLUX.2 [klein]: edit by the sample's instruction with diffusers' Flux2KleinPipeline (reference image)."
    families = ("flux2",)
    reads_references = True  # the source, then the sample's reference images (``row_images``)
    needs = frozenset({"instruction"})
    stochastic = True  # the pipeline draws its starting noise from the cell's seed
    conformance = Conformance(settings=({"steps": 2}, {"steps": 2, "guidance": 1.0}))
    params = (
        steps_param(50),
        Param("guidance", float, 4.0, "classifier-free guidance scale with the empty negative prompt "
              "(Flux2KleinPipeline's guidance_scale; 1 = off; step-distilled models: 1)", low=1, high=50),  # fmt: skip
    )

    @classmethod
    def check_backbone(cls, setting, backbone):
        if backbone.is_distilled and setting["guidance"] > 1:
            raise ConfigError(f"method 'flux2': {backbone.spec.name!r} is step-distilled and ignores guidance; "
                              "set flux2.guidance=1")  # fmt: skip

    @classmethod
    def estimate_nfe(cls, setting):
        """Two transformer evaluations per step with CFG (conditional, negative), one without."""
        return setting["steps"] * (2 if setting["guidance"] > 1 else 1), 0

    @torch.no_grad()
    def edit_batch(self, backbone, rows, setting):
        scheduler = backbone._scheduler_cls.from_config(backbone.scheduler_config)
        pipe = backbone.family.pipeline(backbone, scheduler)
        results = []
        for row in rows:
            height, width = row.sample.image.shape[1:]
            image = pipe(
                image=row_images(row), prompt=row.sample.instruction, guidance_scale=setting["guidance"],
                num_inference_steps=setting["steps"], height=height, width=width, generator=row.generator,
                output_type="pt",
            ).images  # fmt: skip
            results.append(EditResult(image.float().cpu()))
        return results
