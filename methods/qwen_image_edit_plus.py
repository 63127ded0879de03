"""``qwen_image_edit_plus``: Qwen-Image-Edit-2509/2511 (Qwen team, 2025), several input images.

Runs diffusers' ``QwenImageEditPlusPipeline`` (0.42) over the backbone's networks (a ``qwen_image``
backbone of family ``qwen_image_plus``, e.g. ``Qwen/Qwen-Image-Edit-2509``;
``tiny-qwen-image-edit-plus`` for tests), as ``qwen_image_edit`` runs the first model: the same
defaults (``steps`` 50, ``true_cfg`` 4 with the negative prompt ``" "``: the pipeline's and the
docs' example), one call per cell. The images are ``[source, *references]`` (the sample's reference
images, ``Sample.reference_images``, in order; none: ``[source]``): the pipeline prefixes each with
"Picture i:" in the Qwen2.5-VL prompt, resizes each to 384² px for the encoder and 1024² px for
the VAE, and makes the output at the size editbench passes (the source's).
"""

from bench.registry import register
from methods.kontext import row_images
from methods.qwen_image_edit import NEGATIVE_PROMPT, QwenImageEdit


@register
class QwenImageEditPlus(QwenImageEdit):
    name = "qwen_image_edit_plus"
    description = ("Qwen-Image-Edit-2509/2511: edit by the sample's instruction with diffusers' "
                   "QwenImageEditPlusPipeline.")
    families = ("qwen_image_plus",)
    reads_references = True

    def _call(self, pipe, row, setting):
        height, width = row.sample.image.shape[1:]
        return pipe(
            image=row_images(row), prompt=row.sample.instruction,
            negative_prompt=NEGATIVE_PROMPT if setting["true_cfg"] > 1 else None, true_cfg_scale=setting["true_cfg"],
            num_inference_steps=setting["steps"], height=height, width=width, generator=row.generator, output_type="pt",
        ).images  # fmt: skip
