"""``flux2``: FLUX.2 (Black Forest Labs, 2025), an instruction editor with reference images, in
both variants of the ``flux2`` family: [dev] and [klein].

Runs the backbone's diffusers pipeline (0.42) over its own networks: ``Flux2Pipeline`` on a [dev]
checkpoint (e.g. ``black-forest-labs/FLUX.2-dev``; ``tiny-flux2-dev`` for tests),
``Flux2KleinPipeline`` on a [klein] one (e.g. ``black-forest-labs/FLUX.2-klein-base-9B``;
``tiny-flux2-klein``), with the sample's instruction as the prompt, its source image and then its
reference images (``row_images``), which the pipeline encodes itself (VAE latents,
batch-normalised and packed, position ids with time offset 10). The output comes at the sample's
size, which the run's resolution policy gave it (``model``: the pipeline's own rule, ~1024² px at
most, sides of 16).

``guidance`` is the pipeline's ``guidance_scale``, which means one thing per variant:
- [dev]: embedded guidance, an input of the guidance-distilled transformer: one transformer
  evaluation per step, no negative prompt (``Flux2Pipeline.__call__`` builds the ``guidance``
  tensor from it; its docstring's "defaults to 1.0" is wrong, the signature's 4.0 is what runs);
- [klein]: real CFG with the empty negative prompt, two evaluations per step, and only on base
  models: a step-distilled checkpoint (``is_distilled``) ignores it, so ``guidance`` must be 1
  there (checked before any cell).
The family's ``step_rules`` give the NFE of a step per variant, which ``estimate_nfe`` reads.

Defaults and their sources: ``steps`` 50 and ``guidance`` 4, the ``num_inference_steps`` and
``guidance_scale`` of both ``Flux2Pipeline.__call__`` and ``Flux2KleinPipeline.__call__``. Left at
the pipelines' defaults too: no prompt upsampling ([dev]'s ``caption_upsample_temperature`` None;
its docstring recommends 0.15 when it is used), ``max_sequence_length`` 512, the text encoder's hidden layers
((10, 20, 30) [dev], (9, 18, 27) [klein]) and [dev]'s system message (``SYSTEM_MESSAGE`` of
diffusers' ``flux2/system_messages.py``, copied from black-forest-labs/flux2). The pipeline reads
a list of images as several references for every prompt, so a batch runs as consecutive single
calls, each with its cell's generator: batched cells equal single ones exactly.
"""

import torch

from bench.errors import ConfigError
from bench.method import Conformance, EditResult, Method, cfg_evaluations
from bench.params import Param, steps_param
from bench.registry import register
from methods.kontext import row_images


@register
class Flux2(Method):
    name = "flux2"
    description = ("FLUX.2 [dev] or [klein]: edit by the sample's instruction with diffusers' Flux2Pipeline or "
                   "Flux2KleinPipeline (reference image).")  # fmt: skip
    families = ("flux2",)
    reads_references = True  # the source, then the sample's reference images (``row_images``)
    needs = frozenset({"instruction"})
    stochastic = True  # the pipeline draws its starting noise from the cell's seed
    conformance = Conformance(settings=({"steps": 2}, {"steps": 2, "guidance": 1.0}))
    params = (
        steps_param(50),
        Param("guidance", float, 4.0, "the pipeline's guidance_scale: [dev] embedded guidance, one evaluation a "
              "step; [klein] classifier-free guidance with the empty negative prompt (1 = off; step-distilled "
              "models: 1). Default: both pipelines' guidance_scale", low=1, high=50),  # fmt: skip
    )

    @classmethod
    def check_backbone(cls, setting, backbone):
        if backbone.is_distilled and setting["guidance"] > 1:
            raise ConfigError(f"method 'flux2': {backbone.spec.name!r} is step-distilled and ignores guidance; "
                              "set flux2.guidance=1")  # fmt: skip

    @classmethod
    def estimate_nfe(cls, setting):
        """A transformer evaluation per step, or two ([klein] with CFG), by the backbone's step rules."""
        return setting["steps"] * cfg_evaluations(setting["guidance"]), 0

    @torch.no_grad()
    def edit_batch(self, backbone, rows, setting):
        pipe = backbone.new_pipeline()
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
