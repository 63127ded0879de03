"""``classifier_guidance``: classifier guidance (Dhariwal & Nichol, 2021) in its "universal" form.

An ordinary image classifier scores the decoded prediction ``D(z0_hat(z_t))``; its
log-probability of the label is differentiated through the decoder and the UNet into ``z_t``:
``eps_hat = eps - s * sqrt(1 - abar_t) * grad log p(y | D(z0_hat))``. The classifier is a
torchvision ImageNet model by name (pretrained weights from the torch hub cache; none are
downloaded) or ``package.module:factory``; ``untrained: true`` asks for random weights and
labels the run's numbers as smoke numbers. The label is an ImageNet index or class name,
or empty for each sample's ``class_label``.
"""

from bench.diffusion.families import UNET_FAMILIES
from bench.diffusion.guidance import (
    ClassifierGuide,
    LabelParam,
    check_classifier,
    guided_sample,
    load_classifier,
    sampler_params,
    scale_param,
)
from bench.method import Conformance, Identity, Method
from bench.params import Param, check_start_level
from bench.registry import register


@register
class ClassifierGuidance(Method):
    name = "classifier_guidance"
    families = UNET_FAMILIES
    description = "Gradients of an image classifier's log p(label) through decoder and UNet steer each DDIM step."
    stochastic = True
    conformance = Conformance(
        settings=({"steps": 2, "untrained": True, "classifier": "resnet18", "scale": 10.0},),
        identities=(  # no guidance: unconditional CFG
            Identity({"steps": 2, "untrained": True, "classifier": "resnet18", "scale": 0.0}, "cfg",
                     {"steps": 2, "w": 0.0}),
        ),
    )
    params = (
        scale_param(10.0),
        LabelParam("label", str, "", "ImageNet class index or name; empty = the sample's class_label"),
        Param("classifier", str, "resnet50", "torchvision classification model name, or package.module:factory"),
        Param("untrained", bool, False, "use random weights / declare the factory's model untrained (smoke numbers)"),
        *sampler_params(w=0.0),
    )

    @classmethod
    def check(cls, setting):
        check_start_level(cls.name, setting)
        check_classifier(setting["classifier"], setting["untrained"])

    @classmethod
    def check_backbone(cls, setting, backbone):
        load_classifier(setting["classifier"], setting["untrained"], backbone.device)

    @classmethod
    def missing(cls, sample, setting):
        """Without a label for the whole config, each sample must bring its own."""
        return ["class_label"] if not setting["label"] and sample.class_label is None else []

    def edit(self, backbone, sample, prep, setting, generator):
        model = load_classifier(setting["classifier"], setting["untrained"], backbone.device)
        guide = ClassifierGuide(model, setting["label"], setting["untrained"])
        return guided_sample(backbone, sample, setting, generator, guide)
