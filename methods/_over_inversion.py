"""The base of editors that run over a chosen inversion (``masactrl``, ``pnp``, ``pix2pix_zero``).

The inversion is prepared exactly as ``p2p`` prepares it, from the spec
``bench.diffusion.inversion.ddim.inversion_spec`` gives, through the disk cache, so one inversion per
image (and steps, inversion kind and parameters) is shared by every editor of a run.
"""

from dataclasses import replace

from bench.diffusion.inversion.ddim import KINDS, inversion_spec
from bench.method import Method, cfg_evaluations
from bench.params import Param
from methods.ddim_inversion import INVERSION_W, STEPS
from methods.null_text_inversion import NULL_TEXT_PARAMS, check_null_text, null_text_params


SOURCE_PROMPT = Param(
    "source_prompt", str, "sample",
    "prompt of the source branch (masactrl: and of the inversion): 'sample' (the sample's source prompt, as the "
    "authors' repositories do) or any literal text; '' is the empty prompt PnPInversion's MasaCtrl and PnP scripts use",
)  # fmt: skip


def with_source_prompt(sample, setting):
    """``sample`` with the source prompt ``setting['source_prompt']`` selects (itself for 'sample' or no such parameter)."""
    prompt = setting.get("source_prompt", "sample")
    return sample if prompt == "sample" else replace(sample, source_prompt=prompt)


def chosen_inversion(setting, source_prompt: str | None = None):
    """The spec of the inversion ``setting['inversion']`` chooses (one of ``KINDS``), of
    ``source_prompt`` instead of the sample's when given."""
    return inversion_spec(
        setting["inversion"], setting["steps"], setting["inversion_w"], null_text_params(setting), source_prompt
    )


def inversion_params(default: str) -> tuple[Param, ...]:
    """``steps``, ``inversion`` (one of ``bench.diffusion.inversion.ddim.KINDS``), ``inversion_w`` and null-text's settings."""
    return (
        STEPS,
        Param("inversion", str, default, "inversion giving z_T and the null embeddings", choices=KINDS),
        INVERSION_W,
        *NULL_TEXT_PARAMS,
    )


class OverInversion(Method):
    """A method whose preparation is the sample's ``inversion``; subclasses write ``edit``."""

    needs = frozenset({"target_prompt"})
    source_prompt_inverts = True  # a ``source_prompt`` parameter also sets the inversion's prompt

    @classmethod
    def check(cls, setting):
        if setting["inversion"] == "null_text":
            check_null_text(cls.name, setting)

    @classmethod
    def estimate_nfe(cls, setting):
        """Source and target branches denoise together, each under CFG ``w``."""
        return 2 * cls.schedule(setting)[1] * cfg_evaluations(setting["w"]), cls.preparation_nfe(setting)

    @classmethod
    def preparation(cls, setting):
        """The chosen inversion, of a literal ``source_prompt`` when the method inverts with it."""
        prompt = setting.get("source_prompt", "sample") if cls.source_prompt_inverts else "sample"
        return chosen_inversion(setting, None if prompt == "sample" else prompt)

    @staticmethod
    def uncond(backbone, sample, inversion):
        """The inversion's null embedding of each step, as a function of the step index."""
        return lambda index: inversion.uncond(backbone, sample.source_prompt, index)

    @staticmethod
    def trajectory(inversion, setting):
        """The path the source branch is put back on after every step (``direct`` only), or None."""
        return inversion if setting["inversion"] == "direct" else None
