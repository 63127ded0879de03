"""``rf_solver`` (RF-Solver-Edit) on the tiny SD3 backbone, and ``fireflow`` wherever the two share
the machinery: exact NFE (estimate = measured), the disk cache of the inversion (a hit gives the
same inversion, values and edit), ``inject = 0`` is plain inversion + regeneration with the solver,
the value-sharing processor (recording changes nothing, injecting a run's own values changes
nothing, sharing another's does), processors restored after a failing cell, and a batch equal to
its cells run alone. Every property holds for any weights."""

import pytest
import torch

from bench.data import Sample
from bench.diffusion.attention.value_sharing import ValueSharing, shared_blocks, sharing_values
from bench.diffusion.families.sd3 import guided_velocity
from bench.diffusion.inversion.flow_solvers import SOLVERS, solve_inversion, solve_sampling
from bench.diffusion.inversion.solver_inversion import SolverInversionSpec
from bench.diffusion.inversion.solver_inversion import guided_velocity_fn
from bench.errors import ConfigError
from bench.registry import get_method, register
from methods.rf_solver import RFSolverEdit
from tests.helpers import cell_rows, read_cells, run_config

STEPS = 3


def _image(seed: int) -> torch.Tensor:
    low = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(low, size=128, mode="bilinear", align_corners=False)[0]


@pytest.fixture(scope="module")
def samples():
    return [
        Sample("cat", _image(0), "a photo of a cat on a sofa", "a photo of a dog on a sofa"),
        Sample("car", _image(1), "a red car in the street", "a blue car in the old street"),
    ]


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITBENCH_CACHE", str(tmp_path))


def _counted(sd3, fn, *args):
    before = sd3.nfe.count
    out = fn(*args)
    return out, sd3.nfe.count - before


@pytest.mark.parametrize("name", ["rf_solver", "fireflow"])
@pytest.mark.parametrize(
    "given", [{"w": 3.0, "inversion_w": 1.0, "inject": 2}, {"w": 1.0, "inversion_w": 2.5, "inject": 1}]
)
def test_measured_nfe_equals_the_estimate(sd3, samples, fresh_cache, name, given):
    method = get_method(name)()
    setting = method.resolve({"steps": STEPS, **given})
    edit_nfe, prep_nfe = method.estimate_nfe(setting)
    miss, nfe = _counted(sd3, method.prepare, sd3, samples[0], setting)
    assert not miss.cache_hit and nfe == prep_nfe
    _, nfe = _counted(sd3, method.edit, sd3, samples[0], miss.value, setting, torch.Generator())
    assert nfe == edit_nfe
    hit, nfe = _counted(sd3, method.prepare, sd3, samples[0], setting)
    per_step = {"rf_solver": 2, "fireflow": 1}[name]  # FireFlow's first evaluation of a shared step is reused
    cfg = 1 if setting["inversion_w"] in (0, 1) else 2
    assert hit.cache_hit and nfe == setting["inject"] * per_step * cfg


@pytest.mark.parametrize("name", ["rf_solver", "fireflow"])
def test_a_cache_hit_gives_the_same_inversion_values_and_edit(sd3, samples, fresh_cache, name):
    method = get_method(name)()
    setting = method.resolve({"steps": STEPS, "w": 3.0, "inject": STEPS})
    miss, hit = method.prepare(sd3, samples[0], setting), method.prepare(sd3, samples[0], setting)
    assert not miss.cache_hit and hit.cache_hit
    assert torch.equal(miss.value.latents, hit.value.latents)
    assert miss.value.values.keys() == hit.value.values.keys() and miss.value.values
    assert all(torch.equal(miss.value.values[k], hit.value.values[k]) for k in miss.value.values)
    one, two = (method.edit(sd3, samples[0], p.value, setting, torch.Generator()).image for p in (miss, hit))
    assert torch.equal(one, two)


def test_the_cache_key_names_the_solver(sd3, samples, fresh_cache):
    get_method("rf_solver")().prepare(sd3, samples[0], get_method("rf_solver").resolve({"steps": STEPS}))
    assert SolverInversionSpec("rf_solver", STEPS, 1.0).is_cached(sd3, samples[0])
    assert not SolverInversionSpec("fireflow", STEPS, 1.0).is_cached(sd3, samples[0])
    keys = {
        str(SolverInversionSpec(kind, STEPS, 1.0).cache_key(sd3, samples[0]))
        for kind in ("rf_solver", "fireflow", "flow")
    }
    assert len(keys) == 3


@pytest.mark.parametrize("name", ["rf_solver", "fireflow"])
def test_inject_0_is_plain_inversion_and_regeneration_with_the_solver(sd3, samples, name):
    method = get_method(name)()
    setting = method.resolve({"steps": STEPS, "w": 4.0, "inversion_w": 1.5, "inject": 0})
    sample = samples[1]
    edited = method.edit(sd3, sample, method.prepare(sd3, sample, setting).value, setting, torch.Generator()).image
    schedule, uncond = sd3.new_scheduler(STEPS), sd3.encode_text("")

    def velocity(prompt, w):
        cond = sd3.encode_text(prompt)
        return lambda z, sigma, ev: guided_velocity(sd3, z, schedule.timestep_at(sigma), cond, uncond, w)

    solver = SOLVERS[name]
    trajectory, _ = solve_inversion(
        solver, velocity(sample.source_prompt, 1.5), sd3.encode_image(sample.image[None]), schedule.sigmas
    )
    latent = solve_sampling(solver, velocity(sample.target_prompt, 4.0), trajectory[-1:], schedule.sigmas)
    assert torch.equal(edited, sd3.decode(latent).float())


def test_recording_values_leaves_the_inversion_unchanged(sd3, samples, tmp_path, monkeypatch):
    method = get_method("rf_solver")()
    trajectories = []
    for inject in (0, STEPS):
        monkeypatch.setenv("EDITBENCH_CACHE", str(tmp_path / str(inject)))  # each computes its own inversion
        prep = method.prepare(
            sd3, samples[0], method.resolve({"steps": STEPS, "w": 3.0, "inversion_w": 2.0, "inject": inject})
        )
        assert not prep.cache_hit and bool(prep.value.values) == bool(inject)
        trajectories.append(prep.value.latents)
    assert torch.equal(*trajectories)


@pytest.mark.parametrize("name", ["rf_solver", "fireflow"])
def test_injecting_a_runs_own_values_changes_nothing_and_anothers_changes_it(sd3, samples, name):
    solver, schedule = SOLVERS[name], sd3.new_scheduler(STEPS)
    blocks = shared_blocks(sd3.transformer, 8)
    cond, uncond = sd3.encode_text(samples[0].target_prompt), sd3.encode_text("")
    z = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(3))

    def run(sharing):
        velocity = guided_velocity_fn(sd3, schedule, cond, uncond, 1.0, sharing, STEPS)
        with sharing_values(sd3.transformer, blocks, sharing):
            return solve_sampling(solver, velocity, z, schedule.sigmas)

    recorder = ValueSharing.recording()
    plain = run(recorder)
    assert torch.equal(
        plain, solve_sampling(solver, guided_velocity_fn(sd3, schedule, cond, uncond, 1.0), z, schedule.sigmas)
    )
    assert len(recorder.banks[0]) == solver.evaluations(STEPS) * len(blocks)
    assert torch.equal(run(ValueSharing.injecting(recorder.banks)), plain)
    others = {key: torch.randn_like(v) for key, v in recorder.banks[0].items()}
    assert (run(ValueSharing.injecting([others])) - plain).abs().max() > 1e-3


def test_sharing_changes_the_edit(sd3, samples):
    method = get_method("rf_solver")()
    images = {}
    for inject in (0, 1):
        setting = method.resolve({"steps": STEPS, "w": 3.0, "inject": inject})
        images[inject] = method.edit(
            sd3, samples[0], method.prepare(sd3, samples[0], setting).value, setting, torch.Generator()
        ).image
    assert (images[0] - images[1]).abs().max() > 1e-4


def test_processors_are_restored_after_a_failing_cell(sd3, samples):
    method = get_method("rf_solver")()
    setting = method.resolve({"steps": STEPS, "w": 3.0, "inject": 2})
    prep = method.prepare(sd3, samples[0], setting).value
    originals = sd3.transformer.attn_processors
    calls = []

    def fail_on_the_third_call(module, args, kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("simulated failure inside a shared step")

    handle = sd3.transformer.register_forward_pre_hook(fail_on_the_third_call, with_kwargs=True)
    try:
        with pytest.raises(RuntimeError, match="simulated failure"):
            method.edit(sd3, samples[0], prep, setting, torch.Generator())
    finally:
        handle.remove()
    after = sd3.transformer.attn_processors
    assert after.keys() == originals.keys() and all(after[k] is originals[k] for k in originals)
    assert all(not block.attn.to_v._forward_hooks for block in sd3.transformer.transformer_blocks)
    assert method.edit(sd3, samples[0], prep, setting, torch.Generator()).image.isfinite().all()


@pytest.mark.parametrize("name", ["rf_solver", "fireflow"])
def test_a_batch_equals_its_cells_run_alone(sd3, samples, name):
    method = get_method(name)()
    setting = method.resolve({"steps": STEPS, "w": 3.0, "inject": 2})
    preps = {s.id: method.prepare(sd3, s, setting).value for s in samples}

    def rows():
        return cell_rows(samples, preps)

    batch, batch_nfe = _counted(sd3, method.edit_batch, sd3, rows(), setting)
    for row, together in zip(rows(), batch):
        (alone,), nfe = _counted(sd3, method.edit_batch, sd3, [row], setting)
        assert (together.image - alone.image).abs().max().item() <= 1e-4 and nfe * 4 == batch_nfe
    assert (batch[0].image - batch[2].image).abs().max() > 1e-3


def test_settings_are_checked(sd3):
    with pytest.raises(ConfigError, match="inject = 4 is more than steps = 3"):
        get_method("rf_solver").resolve({"steps": 3, "inject": 4})
    with pytest.raises(ConfigError, match="'blocks' = 0 is not allowed"):
        get_method("fireflow").resolve({"blocks": 0})
    assert shared_blocks(sd3.transformer, 1) == [1] and shared_blocks(sd3.transformer, 8) == [0, 1]
    for name in ("rf_solver", "fireflow"):
        assert get_method(name).families == ("sd3", "flux")  # issue 34: on FLUX.1 as their authors run them


def test_editbench_methods_lists_them_with_families_defaults_and_sources():
    from click.testing import CliRunner

    from run_bench import main

    output = CliRunner().invoke(main, ["methods"]).output
    for name, steps, source in (
        ("rf_solver", 15, "RF-Solver-Edit's run scripts"),
        ("fireflow", 8, "FireFlow's README"),
    ):
        listing = output[output.index(f"{name}: ") :].split("\n\n")[0].splitlines()[:7]
        assert listing[1].strip() == "families: SD3/3.5, FLUX.1"
        assert listing[2].strip().startswith(f"steps = {steps}  [int in [1, 1000]]") and source in listing[2]
        assert all("(" in line for line in listing[2:]), "every default names its source"


@register
class _FailsInsideSharing(RFSolverEdit):
    """``rf_solver`` whose transformer fails on its third call in any batch holding sample ``img1``."""

    name = "test_rf_solver_failing_img1"

    def edit_batch(self, backbone, rows, setting):
        calls = []

        def fail(module, args, kwargs):
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("simulated failure inside a shared step")

        poisoned = any(row.sample.id == "img1" for row in rows)
        handle = backbone.transformer.register_forward_pre_hook(fail, with_kwargs=True) if poisoned else None
        try:
            return super().edit_batch(backbone, rows, setting)
        finally:
            if handle is not None:
                handle.remove()


def test_a_cell_failing_inside_the_shared_steps_fails_alone_and_the_processors_come_back(sd3, tmp_path):
    from bench.execution.runner import Runner

    originals = sd3.transformer.attn_processors
    config = run_config(
        tmp_path,
        {"test_rf_solver_failing_img1": {"steps": 2, "inject": 2}},
        n=3,
        backbone={"name": "tiny-sd3"},
        batch_size=3,
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    Runner(config, run_dir, backbone=sd3, progress=False).run()
    cells = read_cells(run_dir).set_index("sample_id")
    assert cells.loc["img1", "status"] == "failed" and "simulated failure" in cells.loc["img1", "error"]
    assert (cells.drop("img1").status == "ok").all()
    after = sd3.transformer.attn_processors
    assert after.keys() == originals.keys() and all(after[k] is originals[k] for k in originals)
