"""``longcat_edit``: LongCat-Image-Edit (Meituan, 2025), an instruction editor.

Runs diffusers' ``LongCatImageEditPipeline`` (0.42) over the backbone's own networks (a
``longcat`` backbone, e.g. ``meituan-longcat/LongCat-Image-Edit``; ``tiny-longcat`` for tests)
with the sample's instruction as the prompt and its source image, which the Qwen2.5-VL encoder
reads at half size beside the instruction and the VAE encodes as reference tokens. Guidance is
real CFG with the empty negative prompt, two transformer evaluations per step.

The pipeline has no height or width: it always makes ~1024² px at the input's aspect ratio
(sides rounded up to 16; the ``model`` resolution policy gives samples exactly that size). When
the sample's size differs (another policy, or a tiny checkpoint), the output is resized to it
(bicubic), so the edit and its source are compared at one size; the cell says so in a label.

Defaults and their sources: ``steps`` 50, ``guidance`` 4.5 (``LongCatImageEditPipeline``'s
``num_inference_steps`` and ``guidance_scale``). One image per call in the pipeline, so a batch
runs as consecutive single calls, each with its cell's generator.
"""

import torch
import torch.nn.functional as F

from bench.method import Conformance, EditResult, Method
from bench.params import Param, steps_param
from bench.registry import register
from methods.kontext import pil_image, true_cfg_nfe

RESIZED_LABEL = ("longcat_edit: LongCat-Image-Edit makes ~1024² px at the input's aspect ratio (no height/width "
                 "arguments); outputs of another size were resized (bicubic) to the sample's size")  # fmt: skip


@register
class LongCatEdit(Method):
    name = "longcat_edit"
    description = "LongCat-Image-Edit: edit by the sample's instruction with diffusers' LongCatImageEditPipeline."
    families = ("longcat",)
    needs = frozenset({"instruction"})
    stochastic = True  # the pipeline draws its starting noise from the cell's seed
    conformance = Conformance(settings=({"steps": 2}, {"steps": 2, "guidance": 1.0}))
    params = (
        steps_param(50),
        Param("guidance", float, 4.5, "classifier-free guidance scale with the empty negative prompt "
              "(LongCatImageEditPipeline's guidance_scale; 1 = off)", low=1, high=50),  # fmt: skip
    )

    @classmethod
    def estimate_nfe(cls, setting):
        """Its ``guidance`` is true CFG (the pipeline's ``guidance_scale``)."""
        return true_cfg_nfe(setting["steps"], setting["guidance"])

    @torch.no_grad()
    def edit_batch(self, backbone, rows, setting):
        pipe = backbone.new_pipeline()
        results = []
        for row in rows:
            image = pipe(image=pil_image(row.sample.image), prompt=row.sample.instruction,
                         guidance_scale=setting["guidance"], num_inference_steps=setting["steps"],
                         generator=row.generator, output_type="pt").images.float().cpu()  # fmt: skip
            size = tuple(row.sample.image.shape[1:])
            if tuple(image.shape[2:]) == size:
                results.append(EditResult(image))
                continue
            resized = F.interpolate(image, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
            results.append(EditResult(resized, labels=[RESIZED_LABEL]))
        return results
