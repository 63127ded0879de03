"""The method interface every adapter in ``methods/`` implements.

A method splits its work in two so that the runner can share expensive work across a sweep:

- a **preparation**: work that depends only on the sample and on some of the setting's
  parameters (an inversion, say). A method declares it with one hook, ``preparation(setting)``,
  returning a ``PreparationSpec``: a frozen value holding exactly the parameters the work
  depends on, which knows its cache key, its NFE and how to compute it. Everything else is
  derived from that one object: the plan groups settings by it (``preparation_key``), the
  dry run estimates and looks it up in the disk cache, and ``prepare`` computes it, so the
  estimate and the run cannot drift apart. The runner computes it once per sample and key,
  and hands the result to every ``edit``.
- ``edit(backbone, sample, prep, params, generator)``: one parameter setting, one seed.

A method may also edit a **batch** of cells of one setting at once (``edit_batch``: rows of
different samples, seeds, preparations and generators through one UNet call per step). The
default ``edit_batch`` loops over ``edit``; a batched method implements ``edit_batch`` and
gets ``edit`` as a batch of one, so the single-cell and batched paths are one code path.
"""

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, is_dataclass
from typing import Any, ClassVar

import torch

from bench import cache
from bench.errors import ConfigError, did_you_mean
from bench.params import Param, whole_steps

#: Fields a method may require of a sample (see ``bench.data.Sample``).
SAMPLE_FIELDS = ("target_prompt", "mask", "edit_words", "class_label", "instruction", "target_image", "output_caption",
                 "reference_images")  # fmt: skip


@dataclass
class EditResult:
    """What one edit produced.

    ``image``: (1, 3, H, W) in [0, 1]. ``grad_evals``: gradient evaluations beside NFE.
    ``nfe``: the UNet evaluations of this cell when the method counted them itself (the default
    ``edit_batch`` does); None for a true batch, whose NFE the runner splits evenly.
    ``artifacts``: extra pictures (e.g. attention maps) saved beside the output as
    ``<output>.<name>.png``. ``labels``: caveats every number of the run must carry
    (e.g. "untrained classifier"), added to the run's labels.
    """

    image: torch.Tensor
    grad_evals: int = 0
    artifacts: dict[str, Any] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    nfe: int | None = None


@dataclass
class EditRow:
    """One cell of a batch: its sample, its preparation and its own generator."""

    sample: Any
    prep: Any
    generator: torch.Generator


@dataclass
class Preparation:
    """What computing a preparation gave (``PreparationSpec.prepare``) and how it was obtained.

    ``cache_hit``: loaded from a disk cache rather than computed. ``grad_evals``: backward
    passes spent computing it (e.g. null-text optimisation); the runner records them, like
    the preparation's NFE, on the first cell that uses it.
    """

    value: Any
    cache_hit: bool = False
    grad_evals: int = 0


class PreparationSpec:
    """One preparation a setting needs per sample, described without a backbone or a sample.

    Subclasses are frozen dataclasses holding only the parameters the preparation depends on,
    so two settings share a sample's preparation exactly when their specs are equal (the spec
    is the plan's grouping key, ``Method.preparation_key``). Each names its ``kind`` (a class
    attribute or a field) and implements ``prepare``; one kept in the disk cache sets
    ``cached`` and implements ``cache_key``. The inversions' specs are in
    ``bench.diffusion.inversion`` (base: ``bench.diffusion.inversion.spec.InversionSpec``).
    """

    #: True when ``prepare`` keeps its result in the disk cache under ``cache_key``: the dry run
    #: lists only these, and looks each one up.
    cached: ClassVar[bool] = False

    def prepare(self, backbone, sample) -> Preparation:
        """Compute it for ``sample`` (or load it from the disk cache)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement prepare")

    def nfe(self) -> int:
        """UNet evaluations of computing it (an upper bound where it may stop early); what the dry run estimates."""
        return 0

    def cache_key(self, backbone, sample) -> dict | None:
        """The disk-cache key fields of it for ``sample`` (``backbone`` needs only ``fingerprint_id``);
        None for a preparation not kept on disk."""
        return None

    def cache_entry(self) -> Hashable:
        """What tells its disk-cache entries apart, backbone and sample aside: specs that differ only
        in how editing uses the result share one entry, which the dry run counts once."""
        return self

    def is_cached(self, backbone, sample) -> bool:
        """Whether ``prepare`` would load it whole from the disk cache (False when it is not kept
        there). ``backbone`` needs only ``fingerprint_id`` (a ``BackboneIdentity`` will do)."""
        return self.cached and cache.entry_path(self.cache_key(backbone, sample)).is_file()


@dataclass(frozen=True)
class Identity:
    """A setting at which a method must give the image another method gives: its own edit
    switched off ("no injection equals the plain regeneration"), or the target prompt set to the
    source prompt (``target_is_source``, applied to the sample of both runs)."""

    setting: dict[str, Any]
    equals: str  # the registered method reproduced, e.g. "ddim_inversion"
    equals_setting: dict[str, Any]
    target_is_source: bool = False


@dataclass(frozen=True)
class Conformance:
    """A method's case in the conformance battery (``tests/test_conformance.py``), which checks on the
    tiny backbones that a batch equals its cells run alone, that the counted NFE equals
    ``estimate_nfe``, that two runs give the same PNG bytes and that half precision stays finite and
    close to fp32.

    ``settings``: small settings (a few steps); the first is the fast case of the default test run,
    the others (e.g. one per inversion) run with ``-m slow``. ``family_settings``: values merged over
    every setting on one backbone family (e.g. a layer index that SDXL's UNet numbers otherwise).
    ``identities``: settings that must reproduce another method's image. Whether two seeds must
    differ is the method's own declaration (``Method.stochastic``, ``is_stochastic``), which the
    battery checks at every declared setting. ``exempt``: why the
    battery cannot run the method at all; only a method that makes no image (``measures_cost``
    False) may be exempt.
    """

    settings: tuple[dict[str, Any], ...] = ()
    family_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    identities: tuple[Identity, ...] = ()
    exempt: str = ""

    def setting(self, index: int, family: str) -> dict[str, Any]:
        """The ``index``-th declared setting as given on ``family``'s backbone (unresolved)."""
        return {**self.settings[index], **self.family_settings.get(family, {})}


# -- step rules: what a backbone family changes in a method's bookkeeping ---------------------------
# Known before any cell runs: how many denoiser evaluations one guided step of one latent costs, and
# how many steps a start level ``t0`` runs. The defaults are Stable Diffusion's: classifier-free
# guidance costs 2 evaluations (1 at ``w`` 0 or 1) and ``t0`` runs ``int(steps * t0)`` steps
# (``StableDiffusionImg2ImgPipeline``). A family that differs (FLUX.1: the distilled guidance is an
# input of the transformer, one evaluation; SD3's and its img2img keep ``steps - int(steps - steps * t0)``)
# gives its own ``StepRules``; the dry run, the worker and the conformance battery estimate under the
# backbone's rules (``rules_in_force``), read through ``cfg_evaluations`` and ``Method.schedule``.
def cfg_step_evaluations(w: float) -> int:
    """Classifier-free guidance: the conditional and unconditional predictions, one of them at ``w`` 1 or 0."""
    return 1 if w in (0, 1) else 2


@dataclass(frozen=True)
class StepRules:
    """``guided_evaluations(w)``: evaluations of one guided step of one latent; ``start_steps(steps, t0)``:
    the steps a start level ``t0`` runs, counted from the clean end."""

    guided_evaluations: Callable[[float], int] = cfg_step_evaluations
    start_steps: Callable[[int, float], int] = whole_steps


_CURRENT: ContextVar[StepRules] = ContextVar("step_rules", default=StepRules())


def current_rules() -> StepRules:
    return _CURRENT.get()


@contextmanager
def rules_in_force(rules: StepRules) -> Iterator[None]:
    """Estimate and record under ``rules`` (a backbone's: ``Backbone.step_rules``) inside the block."""
    token = _CURRENT.set(rules)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def cfg_evaluations(w: float) -> int:
    """Denoiser evaluations of one guided step of one latent (``bench.diffusion.sampling.guided_eps``):
    2 for classifier-free guidance, 1 at ``w`` 0 or 1, under the backbone family's rules in force
    (``bench.method.StepRules``: 1 for FLUX.1's distilled guidance)."""
    return current_rules().guided_evaluations(w)


def _lacks(value) -> bool:
    """Whether a sample field holds nothing: None, or an empty tuple (no reference images)."""
    return value is None or (isinstance(value, tuple) and not value)


class Method:
    """Base class of method adapters. Subclasses set the class attributes and ``edit``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    needs: ClassVar[frozenset[str]] = frozenset()
    #: True for a method that passes a sample's reference images (``Sample.reference_images``) to its
    #: model beside the source; a run warns, once per method, when one that does not meets samples
    #: carrying them. A method that cannot run without them also lists ``reference_images`` in ``needs``.
    reads_references: ClassVar[bool] = False
    #: False for a method that makes no image itself (``external``): its cells' cost columns stay empty ("not measured").
    measures_cost: ClassVar[bool] = True
    #: Whether two seeds of one sample can give different images: False for a method deterministic
    #: given the sample (it draws no noise from the cell's generator), which then runs one seed per
    #: sample whatever the config's ``seeds`` (``seeds_to_run``). True (the default) runs every seed.
    #: Override ``is_stochastic`` when it depends on the setting. The conformance battery checks it.
    stochastic: ClassVar[bool] = True
    #: Backbone families the method runs on (``bench.diffusion.families``: ``sd``, ``sdxl``, ``sd3``).
    families: ClassVar[tuple[str, ...]] = ("sd",)
    #: The method's case in the conformance battery; every registered built-in method declares one.
    conformance: ClassVar[Conformance | None] = None

    @classmethod
    def param(cls, name: str) -> Param:
        for p in cls.params:
            if p.name == name:
                return p
        raise KeyError(name)

    @classmethod
    def resolve(cls, given: dict[str, Any], family: str | None = None) -> dict[str, Any]:
        """Fill defaults (``family``'s where a parameter has its own, ``Param.family_defaults``) and
        validate one parameter setting; raise ``ConfigError`` naming the problem."""
        names = [p.name for p in cls.params]
        for key in given:
            if key not in names:
                raise ConfigError(
                    f"method {cls.name!r}: unknown parameter {key!r}{did_you_mean(key, names)}; "
                    f"parameters: {', '.join(names) or 'none'}"
                )
        setting = {p.name: p.validate(given.get(p.name, p.default_for(family)), f"method {cls.name!r}") for p in cls.params}
        cls.check(setting)
        return setting

    @classmethod
    def is_stochastic(cls, setting: dict[str, Any]) -> bool:
        """Whether this setting's two seeds of one sample can differ (``stochastic`` unless overridden,
        e.g. a method that draws noise only when it starts from noise rather than an inversion)."""
        return cls.stochastic

    @classmethod
    def seeds_to_run(cls, setting: dict[str, Any], seeds: list[int]) -> list[int]:
        """The seeds a run computes for this setting: all of ``seeds``, or only the first for a
        setting deterministic given the sample (further seeds would repeat its images, not add evidence)."""
        return list(seeds) if cls.is_stochastic(setting) else list(seeds[:1])

    @classmethod
    def unused_params(cls, setting: dict[str, Any]) -> frozenset[str]:
        """Parameters this setting does not read (e.g. ``external``'s manifest options when it reads a
        folder): reports and image folder names leave them out. None by default."""
        return frozenset()

    @classmethod
    def check(cls, setting: dict[str, Any]) -> None:
        """Cross-parameter validation; override to reject combinations. Raise ``ConfigError``."""

    @classmethod
    def check_backbone(cls, setting: dict[str, Any], backbone) -> None:
        """Validation that needs the loaded backbone (e.g. a factor dividing the latent size).
        The runner calls it for every setting before any cell runs. Raise ``ConfigError``."""

    @classmethod
    def check_ready(cls, setting: dict[str, Any]) -> None:
        """Checks of what a run needs outside editbench (an API key in the environment, a server
        that answers), made for every setting when a run starts or resumes, before anything loads;
        not by a dry run nor by commands that only read a run. Raise ``ConfigError``."""

    @classmethod
    def missing(cls, sample, setting: dict[str, Any]) -> list[str]:
        """What this method, with this setting, needs that ``sample`` lacks (empty when it can run; no
        reference images count as lacking them). Override when a need depends on the setting."""
        return [f for f in sorted(cls.needs) if _lacks(getattr(sample, f, None))]

    @classmethod
    def schedule(cls, setting: dict[str, Any]) -> tuple[int, int] | None:
        """(effective start step, timesteps run) of a setting's denoising schedule: index 0 is
        the noisiest of ``steps`` timesteps, and a ``t0`` start skips the first
        ``steps - int(steps * t0)`` (the family's rule in force: ``bench.method.StepRules``). None for a
        method without a schedule."""
        if "steps" not in setting:
            return None
        steps = setting["steps"]
        run = current_rules().start_steps(steps, setting["t0"]) if "t0" in setting else steps
        return steps - run, run

    @classmethod
    def effective_setting(cls, setting: dict[str, Any]) -> dict[str, Any]:
        """The setting with every step-fraction parameter replaced by the whole steps it amounts
        to: two settings with the same effective setting run the same steps, byte for byte. A start
        level ``t0`` counts its steps by the family's rule in force (``StepRules.start_steps``)."""
        fractions = {p.name for p in cls.params if p.step_fraction}
        rules = {"t0": current_rules().start_steps}
        return {k: rules.get(k, whole_steps)(setting["steps"], v) if k in fractions else v for k, v in setting.items()}

    @classmethod
    def estimate_nfe(cls, setting: dict[str, Any]) -> tuple[int, int]:
        """(NFE of one edit, NFE of its preparation when computed), without a backbone.

        The default fits a CFG sampler over ``schedule``: 2 UNet evaluations per step, 1 at
        ``w`` 0 or 1, and the preparation's own estimate (``preparation_nfe``). Methods whose
        edit costs differ override it; the runner records the real count."""
        plan = cls.schedule(setting)
        edit = 0 if plan is None else plan[1] * cfg_evaluations(setting.get("w", 1.0))
        return edit, cls.preparation_nfe(setting)

    @classmethod
    def preparation(cls, setting: dict[str, Any]) -> PreparationSpec | None:
        """What this setting prepares per sample (an inversion, say), or None when it prepares
        nothing. The one preparation hook a method declares; everything below derives from it."""
        return None

    @classmethod
    def preparation_key(cls, setting: dict[str, Any]) -> PreparationSpec | None:
        """The key under which settings share a sample's preparation: the plan groups a method's
        settings into work units by it, and the worker computes one preparation per sample and
        key. It is the spec itself, so the plan and the run cannot disagree."""
        spec = cls.preparation(setting)
        if spec is not None and not (is_dataclass(spec) and spec.__dataclass_params__.frozen):
            # equal settings must give equal keys: an identity-compared spec would be recomputed per cell
            raise TypeError(f"method {cls.name!r}: {type(spec).__name__} must be a frozen dataclass")
        return spec

    @classmethod
    def preparation_nfe(cls, setting: dict[str, Any]) -> int:
        """The dry-run estimate of the NFE of computing the setting's preparation (0 without one)."""
        spec = cls.preparation(setting)
        return 0 if spec is None else spec.nfe()

    @classmethod
    def prepares(cls) -> bool:
        """Whether the method declares a preparation at all (it overrides ``preparation``)."""
        return cls.preparation.__func__ is not Method.preparation.__func__

    def prepare(self, backbone, sample, setting: dict[str, Any]) -> Preparation | None:
        """The setting's preparation of ``sample`` (``preparation(setting).prepare``), None without one."""
        spec = self.preparation(setting)
        return None if spec is None else spec.prepare(backbone, sample)

    @property
    def batched(self) -> bool:
        """True when the method edits a batch in one pass (it implements ``edit_batch``)."""
        return type(self).edit_batch is not Method.edit_batch

    def edit(self, backbone, sample, prep: Any, setting: dict[str, Any], generator: torch.Generator) -> EditResult:
        """One cell. Batched methods get it as a batch of one."""
        if not self.batched:
            raise NotImplementedError(f"method {self.name!r} implements neither edit nor edit_batch")
        return self.edit_batch(backbone, [EditRow(sample, prep, generator)], setting)[0]

    def edit_batch(self, backbone, rows: list[EditRow], setting: dict[str, Any]) -> list[EditResult | Exception]:
        """Every row at one ``setting``; one result per row, in order. A row's result may be the
        exception that row alone ended with (a remote request that failed): that cell fails with it
        and the batch's other cells keep their results; any exception raised instead re-runs the
        batch one cell at a time.

        A batched implementation must draw each row's noise from that row's generator only, so
        a cell's result does not depend on the batch it ran in. This default runs ``edit`` per
        row and counts each row's NFE itself.
        """
        results = []
        for row in rows:
            before = backbone.nfe.count
            result = self.edit(backbone, row.sample, row.prep, setting, row.generator)
            result.nfe = backbone.nfe.count - before
            results.append(result)
        return results
