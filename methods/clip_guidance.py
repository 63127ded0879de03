"""``clip_guidance``: CLIP guidance (Semantic Diffusion Guidance, Liu et al., WACV 2023; GLIDE).

Classifier guidance with ``log p(y | x)`` replaced by the cosine similarity of CLIP's embedding
of the decoded prediction ``D(z0_hat(z_t))`` with the sample's target prompt (text guidance)
or with a reference image (image guidance), averaged over the whole image and ``cutouts``
random crops. ``clip_model`` is a hub id (from the local Hugging Face cache; nothing is
downloaded) or a local CLIPModel folder; ``untrained: true`` asks for the named architecture
with seeded random weights and labels the run's numbers as smoke numbers.
"""

from pathlib import Path

from bench.diffusion.families import UNET_FAMILIES
from bench.diffusion.guidance import ClipGuide, guided_sample, load_clip, load_reference, sampler_params, scale_param
from bench.errors import ConfigError
from bench.method import Conformance, Identity, Method
from bench.params import Param, check_start_level
from bench.registry import register
from bench.params import LOCAL, LOCAL_OR_HUB


@register
class ClipGuidance(Method):
    name = "clip_guidance"
    families = UNET_FAMILIES
    description = "Gradients of CLIP similarity to the target prompt or a reference image steer each DDIM step."
    stochastic = True
    conformance = Conformance(
        settings=({"steps": 1, "untrained": True, "cutouts": 1},),  # CLIP ViT-B/32 backward passes: the slowest case
        identities=(  # no guidance: unconditional CFG
            Identity({"steps": 2, "untrained": True, "cutouts": 1, "scale": 0.0}, "cfg", {"steps": 2, "w": 0.0}),
        ),
    )
    params = (
        scale_param(100.0),
        Param("clip_model", str, "openai/clip-vit-base-patch32", "CLIPModel hub id (local cache) or local folder",
              path=LOCAL_OR_HUB),
        Param("untrained", bool, False, "seeded random weights of clip_model's architecture (smoke numbers)"),
        Param("reference", str, "", "reference image path for image guidance; empty = the sample's target prompt",
              path=LOCAL),
        Param("cutouts", int, 4, "random crops averaged with the whole image for the gradient", low=0, high=64),
        *sampler_params(w=0.0),
    )

    @classmethod
    def check(cls, setting):
        check_start_level(cls.name, setting)
        if setting["reference"] and not Path(setting["reference"]).expanduser().is_file():
            raise ConfigError(f"method 'clip_guidance': reference image {setting['reference']!r} is not a file")

    @classmethod
    def check_backbone(cls, setting, backbone):
        load_clip(setting["clip_model"], setting["untrained"], backbone.device)

    def edit(self, backbone, sample, prep, setting, generator):
        reference = load_reference(setting["reference"], backbone.resolution) if setting["reference"] else None
        clip = load_clip(setting["clip_model"], setting["untrained"], backbone.device)
        return guided_sample(backbone, sample, setting, generator, ClipGuide(clip, setting["cutouts"], reference))
