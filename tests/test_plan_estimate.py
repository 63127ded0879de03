"""Planning without a backbone: collapsed settings, effective schedules, NFE estimates, --dry-run."""

import filecmp

import pytest
from click.testing import CliRunner

from bench.execution.config import build_config
from bench.execution.plan import collapsed_settings, dry_run_text
from bench.execution.runner import Runner
from bench.registry import get_method
from bench.reporting.report import cells_table
from bench.store import setting_json
from run_bench import main
from tests.helpers import read_cells, write_dataset


def config_of(tmp_path, methods, n=1):
    data = write_dataset(tmp_path / "data", n=n)
    return build_config({"dataset": {"name": None, "path": data}, "methods": methods, "output": str(tmp_path / "runs")})


def test_settings_that_run_the_same_steps_are_named_at_plan_time(tmp_path):
    config = config_of(tmp_path, {"sdedit": {"t0": [0.5, 0.7, 0.3], "steps": 4}, "ilvr": {"cond_stop": [0.5, 0.6], "steps": 4}})
    warnings = collapsed_settings(config)
    assert len(warnings) == 2
    assert warnings[0].startswith("sdedit: settings t0=0.5 and t0=0.7 run the same steps (start step 2, 2 timesteps run of 4)")
    assert warnings[1].startswith("ilvr: settings cond_stop=0.5 and cond_stop=0.6 run the same steps")
    assert collapsed_settings(config_of(tmp_path / "b", {"sdedit": {"t0": [0.5, 0.7], "steps": 10}})) == []


def test_a_flow_backbone_counts_start_levels_by_its_img2img_rule_when_naming_collapsed_settings(tmp_path):
    """SD3 and FLUX run ``steps - int(steps - steps * t0)`` steps: at 4 steps t0 0.5 and 0.6 differ (2, 3)
    where SD's ``int(steps * t0)`` makes them coincide; 0.6 and 0.7 coincide at 3 steps from step 1."""
    data = write_dataset(tmp_path / "data", n=1)
    for backbone in ("tiny-sd3", "tiny-flux"):
        config = build_config({"dataset": {"name": None, "path": data}, "backbone": {"name": backbone},
                               "methods": {"sdedit": {"t0": [0.5, 0.6, 0.7], "steps": 4}}})  # fmt: skip
        warnings = collapsed_settings(config)
        assert len(warnings) == 1, warnings
        assert warnings[0].startswith("sdedit: settings t0=0.6 and t0=0.7 run the same steps (start step 1, 3 timesteps run of 4)")


@pytest.mark.parametrize("t0, steps, start, run", [(0.5, 4, 2, 2), (0.7, 4, 2, 2), (1.0, 4, 0, 4), (0.3, 50, 35, 15)])
def test_schedule_matches_the_timesteps_the_sampler_runs(backbone, t0, steps, start, run):
    from bench.diffusion.sampling import partial_timesteps

    scheduler = backbone.new_scheduler(steps)
    timesteps = partial_timesteps(scheduler, steps, t0)
    assert get_method("sdedit").schedule({"t0": t0, "w": 7.5, "steps": steps}) == (start, run)
    assert len(timesteps) == run and int(timesteps[0]) == int(scheduler.timesteps[start])


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, backbone):
    """One small run (one sample, 2 steps) shared by the tests below: collapsing settings, and three
    inversions computed. Inversion weights no other test uses keep its inversions out of the
    session's disk cache until it runs."""
    tmp_path = tmp_path_factory.mktemp("small-run")
    methods = {
        "reconstruct": {}, "sdedit": {"t0": [0.5, 0.7, 1.0], "steps": 2},
        "ddim_inversion": {"steps": 2, "inversion_w": 3.25},
        "null_text_inversion": {"steps": 2, "inner_steps": 2, "inversion_w": 1.75},
        "p2p": {"steps": 2, "inversion": "ddim", "inversion_w": 2.5, "cross_replace_steps": 0.5},
    }  # fmt: skip
    config = config_of(tmp_path, methods)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    Runner(config, run_dir, backbone=backbone, progress=False).run()
    return config, run_dir, read_cells(run_dir)


def test_collapsed_settings_are_identical_and_the_store_and_export_say_why(small_run):
    _, run_dir, cells = small_run
    exported = cells_table(run_dir)
    sdedit = exported[exported["method"] == "sdedit"].set_index("param.t0")
    assert sdedit.loc[[0.5, 0.7, 1.0], ["start_step", "steps_run"]].values.tolist() == [[1, 1], [1, 1], [0, 2]]
    assert filecmp.cmp(run_dir / sdedit.loc[0.5, "output_path"], run_dir / sdedit.loc[0.7, "output_path"], shallow=False)
    assert not filecmp.cmp(run_dir / sdedit.loc[0.5, "output_path"], run_dir / sdedit.loc[1.0, "output_path"], shallow=False)
    assert cells.loc[cells["method"] == "reconstruct", "start_step"].isna().all()


def test_the_run_records_the_nfe_the_dry_run_estimates(small_run):
    """The estimate --dry-run adds up equals the NFE the run's store records for each edit and each
    computed preparation (null-text's optimisation may stop early: there it is an upper bound). The
    conformance battery (tests/test_conformance.py) checks every method's counted NFE likewise."""
    config, _, cells = small_run
    assert (cells["status"] == "ok").all(), cells["error"].dropna().tolist()
    checked = 0
    for method, settings in config.settings.items():
        for setting in settings:
            edit, prep = get_method(method).estimate_nfe(setting)
            (row,) = [r for r in cells[cells["method"] == method].itertuples() if r.setting == setting_json(setting)]
            assert row.nfe == edit, (method, setting)
            if row.prep_nfe and not row.prep_cached:
                assert row.prep_nfe <= prep if method == "null_text_inversion" else row.prep_nfe == prep, (method, setting)
                checked += 1
    assert checked >= 3


def test_dry_run_finds_the_inversions_a_run_left_in_the_disk_cache(small_run, tmp_path):
    """The shared run inverted its one sample (steps 2, inversion_w 3.25); the same image in another
    dataset folder is found, the inversion at another inversion_w is not."""
    config = config_of(tmp_path, {"ddim_inversion": {"steps": 2, "inversion_w": [3.25, 5.5]}})
    text = dry_run_text(config)
    assert "preparations (inversions): 2 (ddim_inversion: 2); 1 found in the disk cache, 1 to compute;" in text


def test_dry_run_lists_the_plan_and_loads_no_backbone(tmp_path, monkeypatch):
    import bench.diffusion.backbone

    def refuse(*args, **kwargs):
        raise AssertionError("--dry-run loaded the backbone")

    monkeypatch.setattr(bench.diffusion.backbone.Backbone, "__init__", refuse)
    config = tmp_path / "c.yaml"
    config.write_text(f"dataset: {{name: null, path: {write_dataset(tmp_path / 'data', n=3)}}}\n"
                      "methods: {reconstruct: {}, sdedit: {t0: [0.5, 0.7], steps: 4}, ddim_inversion: {steps: 3}}\n"
                      "seeds: [0, 1]\n")  # fmt: skip
    result = CliRunner().invoke(main, ["run", str(config), "--dry-run", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "dry run: 3 sample(s) x 2 seed(s); nothing is loaded or run"
    assert "sdedit | t0=0.5 | 6 | 2 | 2 | 4" in lines and "sdedit | t0=0.7 | 6 | 2 | 2 | 4" in lines
    assert "reconstruct | — | 3 | — | — | 0" in lines  # deterministic given the sample: one seed (issue 39)
    assert "18 cells; estimated NFE: 66 for the edits" in lines  # 2 x 6 x 4 + 3 x 3 x 2
    (prep,) = [line for line in lines if line.startswith("preparations (inversions): 3 (ddim_inversion: 3); ")]
    assert prep.endswith("; up to 9 NFE if all are computed")  # found in the cache or not: other tests decide
    assert any(line.startswith("warning: sdedit: settings t0=0.5 and t0=0.7") for line in lines)
    assert not (tmp_path / "runs").exists()
    assert dry_run_text(build_config({"methods": {"reconstruct": {}}})).startswith("dry run: 6 sample(s) x 1 seed(s)")


def test_the_estimate_looks_up_the_cache_key_the_run_writes(tmp_path, backbone):
    """After each setting's real ``prepare``, ``--dry-run`` finds its preparation in the disk cache:
    both use the spec's ``cache_key``. (P2P's ddpm inversion was looked up under a DDIM key the
    run never writes, so the estimate said "to compute" for what the run loaded from the cache.)"""
    from bench.execution.plan import dataset_refs

    methods = {
        "p2p": {"steps": 2, "zip": {"inversion": ["ddim", "null_text", "direct", "ddpm"], "inversion_w": [1.0, 1.0, 1.0, 7.5]}},
        "ddpm_inversion": {"steps": 2, "skip": 1, "inversion_w": 7.5},
    }
    config = config_of(tmp_path, methods)
    sample = dataset_refs(config)[0].load(backbone.resolution)
    for method, settings in config.settings.items():
        adapter = get_method(method)()
        for setting in settings:
            spec = type(adapter).preparation(setting)
            adapter.prepare(backbone, sample, setting)
            assert spec is not None and spec.is_cached(backbone, sample), (method, setting)
    assert "found in the disk cache, 0 to compute" in dry_run_text(config)


def test_a_deterministic_method_runs_one_seed_per_sample_whatever_seeds_says(tmp_path):
    """ddim_inversion is deterministic given the sample: seeds [0, 1] plan (and cost) one cell per
    sample at seed 0, the dry run says so; sdedit draws noise and runs both seeds."""
    from bench.execution.plan import dataset_refs, plan_units

    config = build_config({"dataset": {"path": write_dataset(tmp_path / "data", n=3)}, "seeds": [0, 1],
                           "methods": {"ddim_inversion": {"steps": 3}, "sdedit": {"t0": 0.5, "steps": 4}}})  # fmt: skip
    cells = [c for u in plan_units(config.settings, dataset_refs(config), config.seeds, set(), 1) for c in u.cells]
    assert sorted({(c.method, c.seed) for c in cells}) == [("ddim_inversion", 0), ("sdedit", 0), ("sdedit", 1)]
    assert sum(c.method == "ddim_inversion" for c in cells) == 3
    lines = dry_run_text(config).splitlines()
    assert "ddim_inversion | — | 3 | 0 | 3 | 6" in lines
    assert "9 cells; estimated NFE: 42 for the edits" in lines  # 3 x 6 + 6 x 4, not 6 x 6 + 6 x 4
    assert any(line.startswith("note: ddim_inversion is deterministic given the sample") for line in lines)
    assert not any(line.startswith("note: sdedit") for line in lines)


def test_the_dry_run_counts_preparations_kept_in_memory_as_the_run_computes_them(tmp_path, flux):
    """kv_edit's inversion records stay in memory (too large for the disk cache): every run computes
    them, once per sample and preparation key. configs/flow_protocol.yaml's row costs 24 + 24 = 48 NFE
    a cell; the dry run's total was 24 a cell, the edits alone. Two settings differing in ``w`` share
    a preparation (one unit), one differing in ``skip`` has its own."""
    protocol = {"steps": 28, "inversion_w": 1.5, "attn_scale": 1.0, "re_init": False}  # the row, less skip and w
    methods = {"kv_edit": protocol | {"zip": {"skip": [4, 4, 6], "w": [5.5, 2.0, 5.5]}}}
    config = build_config({"dataset": {"name": None, "path": write_dataset(tmp_path / "data", n=2)},
                           "methods": methods, "backbone": {"name": "tiny-flux"}, "output": str(tmp_path / "runs")})  # fmt: skip
    lines = dry_run_text(config).splitlines()
    assert "6 cells; estimated NFE: 140 for the edits" in lines  # 2 x (24 + 24 + 22)
    kept = "preparations kept in memory only (every run computes them): 4 (kv_edit: 4); 92 NFE"  # 2 x (24 + 22)
    assert kept in lines
    assert "estimated NFE in all: up to 232 (the edits and every preparation computed)" in lines
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    Runner(config, run_dir, backbone=flux, progress=False).run()
    cells = read_cells(run_dir)
    assert (cells["status"] == "ok").all(), cells["error"].dropna().tolist()
    assert cells["nfe"].sum() + cells["prep_nfe"].sum() == 232
