"""``qwen_image_edit``: Qwen-Image-Edit (Qwen team, 2025), an instruction editor.

Runs diffusers' ``QwenImageEditPipeline`` (0.42) over the backbone's own networks (a
``qwen_image`` backbone, e.g. ``Qwen/Qwen-Image-Edit``; ``tiny-qwen-image-edit`` for tests) with
the sample's instruction as the prompt and its source image, which the pipeline reads twice: the
Qwen2.5-VL encoder sees it beside the instruction (the pipeline's system template, its first 64
tokens dropped) and the VAE encodes it as reference tokens after the noisy ones. The pipeline
always resizes the reference to ~1024² px at the input's aspect ratio (multiples of 32); the
output comes at the sample's size, which the run's resolution policy gave it (``model``: the same
1024² px rule). Classifier-free guidance is the pipeline's true CFG with the negative prompt
``" "`` and renormalisation (``||cond|| / ||comb||``), two transformer evaluations per step.

Defaults and their sources: ``steps`` 50 and ``true_cfg`` 4 (``QwenImageEditPipeline``'s
``num_inference_steps`` and ``true_cfg_scale``, and the model card's example); the negative
prompt ``" "`` (diffusers' docs: CFG needs a negative prompt, "even an empty one"). diffusers'
pipeline handles one prompt and one image per call here, so a batch runs as consecutive single
calls, each with its cell's own generator: batched cells equal single ones exactly.
"""

import torch

from bench.method import Conformance, EditResult, Method
from bench.params import Param, steps_param
from bench.registry import register
from methods.kontext import pil_image, true_cfg_nfe

NEGATIVE_PROMPT = " "


@register
class QwenImageEdit(Method):
    name = "qwen_image_edit"
    description = "Qwen-Image-Edit: edit by the sample's instruction with diffusers' QwenImageEditPipeline (true CFG)."
    families = ("qwen_image",)
    needs = frozenset({"instruction"})
    stochastic = True  # the pipeline draws its starting noise from the cell's seed
    conformance = Conformance(settings=({"steps": 2}, {"steps": 2, "true_cfg": 1.0}))
    params = (
        steps_param(50),
        Param("true_cfg", float, 4.0, "true classifier-free guidance scale with the negative prompt ' ' "
              "(QwenImageEditPipeline's true_cfg_scale; 1 = off, one evaluation per step)", low=1, high=50),  # fmt: skip
    )

    @classmethod
    def estimate_nfe(cls, setting):
        return true_cfg_nfe(setting["steps"], setting["true_cfg"])

    @torch.no_grad()
    def edit_batch(self, backbone, rows, setting):
        pipe = backbone.new_pipeline()
        return [EditResult(self._call(pipe, row, setting).float().cpu()) for row in rows]

    def _call(self, pipe, row, setting) -> torch.Tensor:
        """One cell's pipeline call: (1, 3, H, W) in [0, 1] at the sample's size."""
        height, width = row.sample.image.shape[1:]
        return pipe(
            image=pil_image(row.sample.image), prompt=row.sample.instruction,
            negative_prompt=NEGATIVE_PROMPT if setting["true_cfg"] > 1 else None,
            true_cfg_scale=setting["true_cfg"], num_inference_steps=setting["steps"], height=height, width=width,
            generator=row.generator, output_type="pt",
        ).images  # fmt: skip
