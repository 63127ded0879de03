"""The conformance battery: every registered built-in method, on every backbone family it declares,
passes the same checks, so registering a method is what puts it under test.

A method declares its case (``Method.conformance``, a ``bench.method.Conformance``): a few small
settings, the first being the fast case of the default run, values some family needs, identity
settings; whether two seeds may differ is the method's own ``stochastic`` (``Method.is_stochastic``).
``test_every_builtin_method_declares_a_case`` fails for a method without one. For each (method,
family, declared setting), on each of that family's tiny backbones (``FAMILY_FIXTURES``: FLUX.2
[klein] and [dev]) and two samples:

(a) a batch of 3 cells (two samples, two seeds) equals each cell run alone: the same NFE,
    gradient evaluations and artifacts, and images equal to float noise (below); the two samples'
    images differ, and two seeds' PNG bytes differ exactly when the method declares the setting
    stochastic (``Method.is_stochastic``): a run computes one seed per sample of a setting declared
    deterministic, so that declaration must not lie;
(b) the counted NFE of every edit and of every computed preparation equals ``estimate_nfe``, the
    dry run's estimate (declared null-text settings set ``early_stop`` 0, so it is exact); the
    estimate has no gradient evaluations, so those are checked by (a) and (c) only;
(c) two runs of a cell, preparation included, give the same PNG bytes, NFE and gradient evaluations;
(d) fp16 and bf16 backbones give finite images close to fp32's (``test_half_precision``);
(e) each declared identity holds (``test_identity``);
(f) the plan's preparation key (``Method.preparation_key``, from the setting alone, no backbone) is
    the run's: equal settings give one key, and the disk-cache entry the run writes is the one the
    dry run looks up (``PreparationSpec.is_cached``).

Only the first family's first setting runs by default, on each of its tiny backbones (and a
representative half-precision subset); the rest is marked ``slow``.

**Float noise** (the bound of (a) and (e)), measured on this CPU: oneDNN picks convolution kernels
by batch size, so one UNet evaluation of a batch differs from the same rows run alone by up to
~2.4e-6 (native convolutions are batch-invariant, and much slower). CFG extrapolates that
difference w-fold at every step and the untrained tiny VAE decoder amplifies it again. Over every
declared case on every family the largest image difference measured is 2.1e-5 (ddim_inversion at
inversion_w 3.25; 8e-5 was once seen for p2p over negative-prompt inversion), and in 46 of 108
cases some pixel sat on a rounding boundary, so the 8-bit PNGs of batch and alone differed by one
level there: exact bytes would fail. Images are compared at ``IMAGE_TOLERANCE`` = 1e-4 on [0, 1]
floats, a fortieth of one 8-bit level, so the saved PNGs differ at most by one level. A row given
another row's prompt, mask or noise differs by more than 1e-3, which the batch check also asserts.
The VAE runs row by row (``bench.diffusion.sampling``), adding no noise of its own. Two runs of
the same batch are deterministic, so (c) asks for the same bytes.

**Half precision** (d): the mean absolute difference on [0, 1] pixels is at most 0.05 in fp16 and
0.15 in bf16. Measured worst over every declared case and family: fp16 0.030 (edict on
tiny-sdxl), bf16 0.125 (cfg from t0 0.6 on tiny-sdxl, whose fresh noise is drawn in the backbone's
dtype). Untrained weights amplify rounding, so these are loose smoke bounds, not accuracy claims.
"""

from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch

from bench import registry
from bench.data import Sample
from bench.diffusion.backbone import Backbone
from bench.execution.plan import cell_seed
from bench.execution.worker import png_bytes, to_uint8
from bench.method import Conformance, EditResult, EditRow, Method, Preparation
from bench.registry import BUILTIN_PACKAGE, all_methods, get_method, register
from bench.method import rules_in_force
from tests.helpers import tiny_backbone_spec

pytestmark = pytest.mark.backbone  # the whole battery runs in the GPU suite's CUDA subset

IMAGE_TOLERANCE = 1e-4
HALF_MEAN_BOUND = {"fp16": 0.05, "bf16": 0.15}
#: The tiny backbones of each family (session fixtures of tests/conftest.py): the family's own first,
#: then other variants of its pipeline that the battery runs as well (FLUX.2 [dev] beside [klein]).
FAMILY_FIXTURES = {"sd": ("backbone",), "sdxl": ("sdxl",), "sd3": ("sd3",), "flux": ("flux",), "kontext": ("kontext",),
                   "qwen_image": ("qwen_image",), "qwen_image_plus": ("qwen_image_plus",),
                   "flux2": ("flux2", "flux2_dev"), "longcat": ("longcat",)}  # fmt: skip
#: Each fixture's embedded backbone.
TINY = {"backbone": "tiny", "sdxl": "tiny-sdxl", "sd3": "tiny-sd3", "flux": "tiny-flux", "kontext": "tiny-kontext",
        "qwen_image": "tiny-qwen-image-edit", "qwen_image_plus": "tiny-qwen-image-edit-plus",
        "flux2": "tiny-flux2-klein", "flux2_dev": "tiny-flux2-dev", "longcat": "tiny-longcat"}  # fmt: skip
#: Half precision in the default run: p2p over ddpm (it once failed with "mat1 and mat2 must have
#: the same dtype") and a two-branch editor; (method, inversion) on the method's first family.
HALF_PRECISION_FAST = {("p2p", "ddpm"), ("masactrl", "direct")}
#: The three cells of the batch: (sample index, seed); two samples, two seeds.
CELLS = ((0, 0), (0, 1), (1, 0))


# -- which methods and cases ---------------------------------------------------------------------
def builtin_methods() -> list[type[Method]]:
    """Every registered method of the built-in package (``methods/``), however it was registered."""
    return [cls for cls in all_methods() if cls.__module__.split(".")[0] == BUILTIN_PACKAGE]


def conformance_gaps(methods: list[type[Method]]) -> list[str]:
    """One line per method whose declaration the battery cannot run: none, empty, no ``stochastic``
    of its own, an exemption a method that makes its images may not claim, a family it does not
    declare, an inversion its settings leave out, an identity naming an unknown method."""
    gaps = []
    for cls in methods:
        case: Conformance | None = cls.conformance
        if case is None or not (case.settings or case.exempt):
            gaps.append(f"{cls.name}: declares no conformance case (Method.conformance)")
            continue
        if not any("stochastic" in vars(c) for c in cls.__mro__ if c is not Method):
            gaps.append(f"{cls.name}: does not declare stochastic (False when seeds give equal bytes)")
        if case.exempt and (case.settings or cls.measures_cost):
            gaps.append(f"{cls.name}: exempt, but it makes its images or declares settings")
        if stray := sorted(set(case.family_settings) - set(cls.families)):
            gaps.append(f"{cls.name}: family_settings for undeclared families {stray}")
        inversion = next((p for p in cls.params if p.name == "inversion" and p.choices), None)
        if inversion and case.settings:
            if left_out := sorted(set(inversion.choices) - {cls.resolve(s)["inversion"] for s in case.settings}):
                gaps.append(f"{cls.name}: no declared setting for inversion(s) {left_out}")
        unknown = [i.equals for i in case.identities if i.equals not in registry.method_names()]
        if unknown:
            gaps.append(f"{cls.name}: identities name unknown methods {unknown}")
    return gaps


def _declared_cases(fast):
    """A ``pytest.param(name, family, fixture, setting index)`` per declared setting on each tiny
    backbone (``FAMILY_FIXTURES``) of each declared family, marked ``slow`` unless ``fast(cls,
    family, index, resolved setting)``. A family's own backbone keeps the id ``name-family-index``."""
    for cls in builtin_methods():
        case = cls.conformance
        for family in cls.families:
            for fixture in FAMILY_FIXTURES[family]:
                for index in range(len(case.settings) if case else 0):
                    is_fast = fast(cls, family, index, cls.resolve(case.setting(index, family)))
                    mark = () if is_fast else pytest.mark.slow
                    where = family if fixture == FAMILY_FIXTURES[family][0] else fixture
                    yield pytest.param(cls.name, family, fixture, index, id=f"{cls.name}-{where}-{index}", marks=mark)


#: Methods whose first case alone takes over ~20 s on 2 CPU cores (the tiny Qwen-Image-Edit
#: and LongCat pipelines always work at ~1024² px): slow, in the full run only.
SLOW_METHODS = {"qwen_image_edit", "qwen_image_edit_plus", "longcat_edit"}


def _first_case(cls, family, index, setting) -> bool:
    return family == cls.families[0] and index == 0 and cls.name not in SLOW_METHODS


def _half_precision_fast(cls, family, index, setting) -> bool:
    return family == cls.families[0] and (cls.name, setting.get("inversion")) in HALF_PRECISION_FAST


def _identity_cases():
    for cls in builtin_methods():
        for index, identity in enumerate(cls.conformance.identities if cls.conformance else ()):
            yield pytest.param(cls.name, index, id=f"{cls.name}-{index}-{identity.equals}")


# -- running cells ------------------------------------------------------------------------------------
def _image(seed: int, size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(low, size=size, mode="bilinear", align_corners=False)[0]


def _mask(size: int, box: tuple[float, float, float, float]) -> torch.Tensor:
    mask = torch.zeros(1, size, size)
    top, left, bottom, right = (int(v * size) for v in box)
    mask[:, top:bottom, left:right] = 1
    return mask


def battery_samples(size: int) -> list[Sample]:
    """Two samples with every field a method may need, at the backbone's resolution."""
    return [
        Sample("conformance-cat", _image(10, size), "a photo of a cat on a sofa", "a photo of a dog on a sofa",
               mask=_mask(size, (0.2, 0.2, 0.7, 0.8)), edit_words=("cat", "dog"), class_label=281,
               instruction="turn the cat into a dog", output_caption="a photo of a dog on a sofa"),
        Sample("conformance-car", _image(11, size), "a red car in the street", "a blue car in the old street",
               mask=_mask(size, (0.4, 0.1, 0.9, 0.6)), edit_words=("red", "blue"), class_label=817,
               instruction="paint the car blue", output_caption="a blue car in the old street"),
    ]  # fmt: skip


@dataclass
class Prepared:
    value: object
    nfe: int
    computed: bool


@dataclass
class Edited:
    image: torch.Tensor  # (3, H, W) float
    nfe: int
    grad_evals: int
    artifacts: dict

    @property
    def png(self) -> bytes:
        """The PNG bytes the worker would save."""
        from PIL import Image

        return png_bytes(Image.fromarray(to_uint8(self.image).numpy()))


class Cells:
    """One method at one setting on one backbone, run as the worker runs it: ``prepare`` per sample
    (its NFE counted), then ``edit_batch`` over rows with each cell's own generator."""

    def __init__(self, cls: type[Method], backbone: Backbone, given: dict):
        self.method, self.backbone = cls(), backbone
        self.setting = cls.resolve(given, backbone.family_name)
        cls.check_backbone(self.setting, backbone)

    def prepare(self, sample: Sample) -> Prepared:
        before = self.backbone.nfe.count
        value = self.method.prepare(self.backbone, sample, self.setting)
        nfe = self.backbone.nfe.count - before
        if isinstance(value, Preparation):
            return Prepared(value.value, nfe, not value.cache_hit)
        return Prepared(value, nfe, True)

    def edit(self, cells: list[tuple[Sample, Prepared, int]]) -> list[Edited]:
        rows = [EditRow(s, p.value, torch.Generator("cpu").manual_seed(cell_seed(s.id, seed))) for s, p, seed in cells]
        before = self.backbone.nfe.count
        results = self.method.edit_batch(self.backbone, rows, self.setting)
        batch_nfe = self.backbone.nfe.count - before
        assert len(results) == len(rows)
        nfe = [batch_nfe // len(rows) if r.nfe is None else r.nfe for r in results]  # as the worker splits it
        return [Edited(r.image[0].float(), n, r.grad_evals, r.artifacts) for r, n in zip(results, nfe)]


def fresh_cache(monkeypatch, folder) -> None:
    """Point the disk cache at an empty folder, so every preparation is computed (and counted)."""
    monkeypatch.setenv("EDITBENCH_CACHE", str(folder))


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def seed_declaration_error(cls: type[Method], setting: dict, seed0: Edited, seed1: Edited) -> str | None:
    """Why a method's stochastic declaration at ``setting`` is false for the cells of seeds 0 and 1
    of one sample (declared deterministic: equal PNG bytes; stochastic: different ones), or None."""
    differ = seed0.png != seed1.png
    if differ == cls.is_stochastic(setting):
        return None
    declared = "stochastic" if cls.is_stochastic(setting) else "deterministic (stochastic = False)"
    return f"{cls.name}: declared {declared}, but seeds 0 and 1 give {'different' if differ else 'equal'} PNG bytes"


# -- the checks -------------------------------------------------------------------------------------
def test_every_builtin_method_declares_a_case():
    assert conformance_gaps(builtin_methods()) == []


def test_a_builtin_method_without_a_case_fails_the_battery(monkeypatch):
    class Undeclared(Method):
        name = "conformance_undeclared"

    Undeclared.__module__ = f"{BUILTIN_PACKAGE}.conformance_undeclared"  # as if in methods/conformance_undeclared.py
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # the registration ends with the test
    register(Undeclared)
    gaps = conformance_gaps(builtin_methods())
    assert gaps == ["conformance_undeclared: declares no conformance case (Method.conformance)"]


class _SourceCopy(Method):
    """Gives back the source image: deterministic given the sample."""

    name = "conformance_source_copy"

    def edit(self, backbone, sample, prep, setting, generator):
        return EditResult(sample.image[None].clone())


class _NoisySource(_SourceCopy):
    """The source plus noise from the cell's generator: two seeds differ."""

    name = "conformance_noisy_source"

    def edit(self, backbone, sample, prep, setting, generator):
        noise = torch.rand(sample.image.shape, generator=generator)
        return EditResult((0.5 * sample.image + 0.5 * noise)[None])


@pytest.mark.parametrize("cls, stochastic, lies", [
    (_SourceCopy, False, False), (_SourceCopy, True, True), (_NoisySource, True, False), (_NoisySource, False, True),
])  # fmt: skip
def test_a_false_stochastic_declaration_fails_the_battery(backbone, cls, stochastic, lies):
    declared = type(cls.__name__, (cls,), {"stochastic": stochastic})
    run = Cells(declared, backbone, {})
    sample = battery_samples(backbone.resolution)[0]
    seed0, seed1 = (run.edit([(sample, run.prepare(sample), seed)])[0] for seed in (0, 1))
    assert (seed_declaration_error(declared, run.setting, seed0, seed1) is not None) == lies


@pytest.mark.parametrize("name, family, fixture, index", list(_declared_cases(_first_case)))
def test_method_conforms(request, monkeypatch, tmp_path, name, family, fixture, index):
    cls = get_method(name)
    backbone = request.getfixturevalue(fixture)
    run = Cells(cls, backbone, cls.conformance.setting(index, family))
    with rules_in_force(backbone.step_rules):  # the family's NFE per guided step, as the dry run estimates
        edit_nfe, prep_nfe = cls.estimate_nfe(run.setting)
    samples = battery_samples(backbone.resolution)

    fresh_cache(monkeypatch, tmp_path / "first")
    preps = [run.prepare(sample) for sample in samples]
    for prep in preps:  # (b) a computed preparation costs what the dry run estimates
        assert prep.computed and prep.nfe == prep_nfe, (prep.nfe, prep_nfe)
    # (f) the plan's preparation key, derived from the setting alone, is the one the run prepared under:
    # equal settings give one key, and the disk-cache entry the run wrote is the one the dry run looks up
    spec = cls.preparation_key(run.setting)
    assert spec == cls.preparation_key(cls.resolve(cls.conformance.setting(index, family), family))
    if spec is None:
        assert all(prep.value is None for prep in preps)
    for sample in samples:
        assert spec is None or spec.is_cached(backbone, sample) == spec.cached, (spec, sample.id)
    cells = [(samples[s], preps[s], seed) for s, seed in CELLS]
    batch = run.edit(cells)
    alone = [run.edit([cell])[0] for cell in cells]

    for together, single in zip(batch, alone):  # (a) a batch equals its cells run alone
        assert max_difference(together.image, single.image) <= IMAGE_TOLERANCE
        assert (together.nfe, together.grad_evals) == (single.nfe, single.grad_evals)
        assert together.nfe == edit_nfe, (together.nfe, edit_nfe)  # (b) the edit costs what the dry run estimates
        assert together.artifacts.keys() == single.artifacts.keys()
        for key in single.artifacts:  # colour-mapped float maps: the same noise may land one colour step apart
            a, b = (np.asarray(r.artifacts[key]).astype(int) for r in (together, single))
            assert a.shape == b.shape and np.abs(a - b).max() <= 8 and (a != b).mean() < 0.01, key
    assert max_difference(batch[0].image, batch[2].image) > 1e-3  # the rows of two samples are not collapsed
    assert seed_declaration_error(cls, run.setting, alone[0], alone[1]) is None

    fresh_cache(monkeypatch, tmp_path / "second")  # (c) a second run, preparation included, gives the same bytes
    again = run.edit([(samples[0], run.prepare(samples[0]), CELLS[0][1])])[0]
    assert again.png == alone[0].png and (again.nfe, again.grad_evals) == (alone[0].nfe, alone[0].grad_evals)

@pytest.fixture(scope="module")
def backbones(request):
    """``(fixture, dtype) ->`` that fixture's tiny backbone in that dtype (fp32: the session's), built on first use."""
    built = {}

    def get(fixture: str, dtype: str) -> Backbone:
        if dtype == "fp32":
            return request.getfixturevalue(fixture)
        if (fixture, dtype) not in built:
            built[fixture, dtype] = Backbone(tiny_backbone_spec(TINY[fixture], dtype=dtype))
        return built[fixture, dtype]

    return get


def one_cell(cls, backbone, given, sample) -> torch.Tensor:
    run = Cells(cls, backbone, given)
    return run.edit([(sample, run.prepare(sample), 0)])[0].image


@pytest.mark.parametrize("name, family, fixture, index", list(_declared_cases(_half_precision_fast)))
def test_half_precision(backbones, name, family, fixture, index):
    """(d) fp16 and bf16 give finite images within ``HALF_MEAN_BOUND`` of fp32 (module docstring)."""
    cls = get_method(name)
    given = cls.conformance.setting(index, family)
    sample = battery_samples(backbones(fixture, "fp32").resolution)[0]
    reference = one_cell(cls, backbones(fixture, "fp32"), given, sample)
    for dtype, bound in HALF_MEAN_BOUND.items():
        image = one_cell(cls, backbones(fixture, dtype), given, sample)
        assert torch.isfinite(image).all(), dtype
        assert (image - reference).abs().mean().item() <= bound, dtype


@pytest.mark.parametrize("name, index", list(_identity_cases()))
def test_identity(request, name, index):
    """(e) The declared identity: the method at its setting gives the other method's image."""
    cls = get_method(name)
    identity = cls.conformance.identities[index]
    backbone = request.getfixturevalue(FAMILY_FIXTURES[cls.families[0]][0])
    sample = battery_samples(backbone.resolution)[0]
    if identity.target_is_source:
        sample = replace(sample, target_prompt=sample.source_prompt)
    image = one_cell(cls, backbone, identity.setting, sample)
    plain = one_cell(get_method(identity.equals), backbone, identity.equals_setting, sample)
    assert max_difference(image, plain) <= IMAGE_TOLERANCE
