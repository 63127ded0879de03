"""``kontext``: FLUX.1 Kontext [dev] (Black Forest Labs, 2025), an instruction editor.

Runs diffusers' ``FluxKontextPipeline`` (0.42) over the backbone's own networks (a ``kontext``
backbone, e.g. ``black-forest-labs/FLUX.1-Kontext-dev``; ``tiny-kontext`` for tests) with the
sample's instruction as the prompt and its source image as the reference, which the pipeline
encodes itself (VAE latents packed beside the noisy tokens, position ids with first axis 1). The
image comes out at the sample's size, the one the run's resolution policy gave it: editbench
passes ``height``, ``width`` and ``max_area = height x width`` and turns the pipeline's
``_auto_resize`` off, because diffusers otherwise makes 1024x1024 whatever the input's shape
(diffusers issue 11886) while black-forest-labs' own code keeps the input's size. The ``model``
resolution policy applies Kontext's own rule (its preferred resolutions; family ``kontext``).

Defaults and their sources: ``steps`` 28 (diffusers' ``num_inference_steps``; black-forest-labs'
``cli_kontext.py`` uses 30), ``guidance`` 2.5 (the distilled guidance of the diffusers docs'
example and of ``cli_kontext.py``; the pipeline's signature default is 3.5), ``true_cfg`` 1
(diffusers' ``true_cfg_scale``: above 1, real CFG with the empty negative prompt, twice the NFE).
Each cell has its own generator (a batch passes one per image, which diffusers draws each
image's noise from), so a batch equals its cells run alone; NFE is counted from the
transformer's calls.
"""

import torch
from PIL import Image

from bench.method import Conformance, EditResult, Method
from bench.params import Param, steps_param
from bench.registry import register


def pil_image(image: torch.Tensor) -> Image.Image:
    """A sample's (3, H, W) image in [0, 1] as the 8-bit PIL image it was loaded from."""
    return Image.fromarray((image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())


def row_images(row) -> list[Image.Image]:
    """A cell's input images for an editor that takes several: its source, then its sample's
    reference images in order (``Sample.reference_images``), as 8-bit PIL images."""
    return [pil_image(image) for image in (row.sample.image, *row.sample.reference_images)]


def true_cfg_nfe(steps: int, scale: float) -> tuple[int, int]:
    """``estimate_nfe`` of an instruction editor's pipeline with true CFG: one transformer evaluation per step,
    two (conditional and negative) with a ``scale`` above 1; nothing prepared."""
    return steps * (2 if scale > 1 else 1), 0


@register
class Kontext(Method):
    name = "kontext"
    description = "FLUX.1 Kontext [dev]: edit by the sample's instruction with diffusers' FluxKontextPipeline."
    families = ("kontext",)
    needs = frozenset({"instruction"})
    stochastic = True  # the pipeline draws its starting noise from the cell's seed
    conformance = Conformance(settings=({"steps": 2}, {"steps": 2, "true_cfg": 2.0}))
    params = (
        steps_param(28),
        Param("guidance", float, 2.5, "distilled guidance (diffusers docs and black-forest-labs' cli_kontext.py: 2.5; "
              "pipeline default 3.5)", low=0, high=50),  # fmt: skip
        Param("true_cfg", float, 1.0, "true classifier-free guidance scale with the empty negative prompt "
              "(diffusers' true_cfg_scale; 1 = off, above 1 doubles the NFE)", low=1, high=50),  # fmt: skip
    )

    @classmethod
    def estimate_nfe(cls, setting):
        return true_cfg_nfe(setting["steps"], setting["true_cfg"])

    @torch.no_grad()
    def edit_batch(self, backbone, rows, setting):
        height, width = rows[0].sample.image.shape[1:]  # the worker batches cells of one size
        pipe = backbone.new_pipeline()
        true_cfg = setting["true_cfg"] > 1
        images = pipe(
            image=[pil_image(row.sample.image) for row in rows],
            prompt=[row.sample.instruction for row in rows],
            negative_prompt=[""] * len(rows) if true_cfg else None,
            true_cfg_scale=setting["true_cfg"],
            guidance_scale=setting["guidance"],
            num_inference_steps=setting["steps"],
            height=height, width=width, max_area=height * width, _auto_resize=False,
            generator=[row.generator for row in rows],
            output_type="pt",
        ).images  # fmt: skip
        return [EditResult(image[None].float().cpu()) for image in images]
