"""Aggregation: bootstrap CIs, NaN accounting, grouping by setting and edit type, best marks.

``make_run`` writes small synthetic run folders (no backbone needed) that the report and
compare tests use too."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from bench.execution.plan import cell_key
from bench.execution.runner import setting_slug
from bench.metrics import METRICS, ImageMetric
from bench.reporting.aggregate import (
    Stat,
    best_rows,
    bootstrap_ci,
    describe,
    format_stat,
    load_run,
    nan_notes,
    summarize,
)
from bench.reporting.report import provenance
from bench.store import CellRecord, Store, setting_json
from tests.helpers import write_dataset


class LowerBetter(ImageMetric):
    name = "lowfake"
    higher_is_better = False


class MaskedFake(ImageMetric):
    name = "bgfake"
    higher_is_better = True
    nan_reason = "NaN when the mask covers the whole image"


@pytest.fixture
def fake_metrics(monkeypatch):
    for cls in (LowerBetter, MaskedFake):
        monkeypatch.setitem(METRICS, cls.name, cls)


def cell(method, setting, sample, metrics=None, status="ok", edit_type="change_object", seed=0, **cost):
    return dict(method=method, setting=setting, sample=sample, metrics=metrics or {}, status=status,
                edit_type=edit_type, seed=seed, cost=cost)  # fmt: skip


def make_run(root, name, cells, *, labels=("untrained backbone",), fingerprint="fp-a", dataset=None, set_metrics=(),
             created="2026-01-01T00:00:00+00:00", metrics=("psnr", "ssim"), commit="abc1234"):  # fmt: skip
    """A run folder with the given cells (metrics as given, tiny random output images)."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    dataset = dataset or write_dataset(root / "data", n=3)  # one dataset per folder: runs in it are comparable
    rng = np.random.default_rng(0)
    store = Store(run_dir)
    for c in cells:
        key = cell_key(c["method"], c["setting"], c["sample"], c["seed"])
        output = None
        if c["status"] == "ok":
            output = f"images/{c['method']}/{setting_slug(c['setting'])}/{c['sample']}_seed{c['seed']}.png"
            (run_dir / output).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(run_dir / output)
        cost = {"time_s": 1.0, "nfe": 4, "grad_evals": 0, "prep_time_s": 0.0, "prep_nfe": 0, "prep_cached": False}
        cost.update(c["cost"])
        store.commit_cell(CellRecord(
            key, c["method"], c["setting"], c["sample"], c["seed"], c["status"], c["edit_type"],
            None if c["status"] == "ok" else "RuntimeError: boom", output, metrics=c["metrics"], **cost))  # fmt: skip
    if set_metrics:
        store.db.execute(
            "CREATE TABLE IF NOT EXISTS set_metrics (method TEXT, setting TEXT, name TEXT, value REAL, n INTEGER)"
        )
        store.db.executemany("INSERT INTO set_metrics VALUES (?, ?, ?, ?, ?)",
                             [(m, setting_json(s), n, v, k) for m, s, n, v, k in set_metrics])  # fmt: skip
    methods = {}
    for c in cells:
        methods.setdefault(c["method"], [])
        if c["setting"] not in methods[c["method"]]:
            methods[c["method"]].append(c["setting"])
    manifest = {
        "created": created,
        "command": ["editbench", "run", "x.yaml"],
        "config": {"dataset": {"name": None, "path": dataset, "limit": None, "edit_types": None},
                   "methods": methods, "seeds": [0], "metrics": list(metrics)},
        "backbone": {"spec": {"name": "tiny", "dtype": "fp32", "scheduler": "ddim"}, "resolution": 32,
                     "fingerprint": {"id": fingerprint}},
        "packages": {"torch": "2.0"},
        "git": {"commit": commit, "dirty": False},
        "device": {"type": "cpu"},
        "labels": list(labels),
    }  # fmt: skip
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    store.set_info("manifest", manifest)
    store.set_info("labels", list(labels))
    store.close()
    return run_dir


def sweep_cells(psnr_by_t0: dict, samples=("img0", "img1", "img2"), spread=0.1):
    """reconstruct + sdedit over t0, psnr = the given level (+/- spread over samples)."""
    out = [cell("reconstruct", {}, s, {"psnr": 30.0 + i, "ssim": 0.9}) for i, s in enumerate(samples)]
    for t0, level in psnr_by_t0.items():
        for i, s in enumerate(samples):
            out.append(cell("sdedit", {"t0": t0, "w": 7.5}, s, {"psnr": level + spread * (i - 1), "ssim": 0.5}))
    return out


# -- bootstrap ---------------------------------------------------------------------------------------
def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    values = np.random.default_rng(1).normal(10, 2, 50)
    a, b = bootstrap_ci(values, seed=0), bootstrap_ci(values, seed=0)
    assert a == b
    assert bootstrap_ci(values, seed=1) != a
    assert a[0] < values.mean() < a[1]


def test_bootstrap_ci_width_matches_the_normal_theory():
    values = np.random.default_rng(2).normal(0, 1, 400)
    low, high = bootstrap_ci(values)
    expected = 2 * 1.96 * values.std(ddof=1) / math.sqrt(len(values))
    assert abs((high - low) - expected) / expected < 0.1


def test_bootstrap_ci_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(3)
    hits = 0
    for seed in range(200):
        low, high = bootstrap_ci(rng.exponential(1.0, 40), n_boot=1000, seed=seed)
        hits += low <= 1.0 <= high
    assert 0.86 <= hits / 200 <= 0.99  # percentile bootstrap undercovers a little on skewed data


def test_bootstrap_ci_needs_two_finite_values():
    assert all(math.isnan(v) for v in bootstrap_ci([3.0]))
    with pytest.raises(ValueError, match="finite"):
        bootstrap_ci([1.0, float("nan")])


def test_describe_counts_nans_and_keeps_infinities():
    s = describe([1.0, float("nan"), 3.0, float("nan")], n_missing=1)
    assert (s.mean, s.n, s.n_nan, s.n_missing) == (2.0, 2, 2, 1) and s.has_ci
    assert "(2 NaN, 1 missing)" in format_stat(s)
    everything_nan = describe([float("nan")] * 3)
    assert math.isnan(everything_nan.mean) and everything_nan.n_nan == 3 and format_stat(everything_nan).startswith("—")
    perfect = describe([float("inf"), 20.0])
    assert perfect.mean == float("inf") and not perfect.has_ci


# -- runs --------------------------------------------------------------------------------------------
def test_summarize_groups_counts_and_never_drops_nans(tmp_path, fake_metrics):
    s = {"t0": 0.5}
    cells = [
        cell("sdedit", s, "img0", {"psnr": 10.0, "bgfake": float("nan")}),
        cell("sdedit", s, "img1", {"psnr": 14.0, "bgfake": 2.0}),
        cell("sdedit", s, "img2", {"psnr": 12.0}),  # bgfake not computed for this cell
        cell("sdedit", s, "bad", status="failed"),
        cell("sdedit", s, "nomask", status="skipped"),
    ]
    run = load_run(make_run(tmp_path, "r", cells, metrics=("psnr", "bgfake")))
    (row,) = summarize(run)
    assert (row.cells, row.ok, row.failed, row.skipped) == (5, 3, 1, 1)
    assert row.metrics["psnr"].mean == 12.0 and row.metrics["psnr"].n == 3
    bg = row.metrics["bgfake"]
    assert (bg.mean, bg.n, bg.n_nan, bg.n_missing) == (2.0, 1, 1, 1)
    notes = nan_notes([row])
    assert notes == ["bgfake was NaN for 1 of 3 values (sdedit: 1) — NaN when the mask covers the whole image",
                     "bgfake has no value for 1 of 3 values (sdedit: 1) — not computed"]
    assert row.first_error == "RuntimeError: boom"


def test_undeclared_nan_reason_is_said_so(tmp_path):
    run = load_run(make_run(tmp_path, "r", [cell("sdedit", {"t0": 0.5}, "img0", {"psnr": float("nan")})]))
    (note,) = nan_notes(summarize(run))
    assert "psnr was NaN for 1 of 1 values" in note and "no reason declared" in note


def test_nan_notes_collapse_to_one_line_per_reason_with_counts(tmp_path, fake_metrics):
    cells = [cell("sdedit", {"t0": t0}, s, {"psnr": float("nan"), "bgfake": float("nan")})
             for t0 in (0.3, 0.5) for s in ("img0", "img1")]  # fmt: skip
    cells += [cell("sdedit", {"t0": 0.7}, "img0", {"psnr": 1.0, "bgfake": float("nan")})]
    notes = nan_notes(summarize(load_run(make_run(tmp_path, "r", cells, metrics=("psnr", "bgfake")))))
    assert notes == [
        "psnr was NaN for 4 of 5 values (sdedit t0=0.3: 2, sdedit t0=0.5: 2) — no reason declared by the metric",
        "bgfake was NaN for 5 of 5 values (sdedit t0=0.3: 2, sdedit t0=0.5: 2, sdedit t0=0.7: 1) — "
        "NaN when the mask covers the whole image",
    ]


def test_breakdown_by_edit_type(tmp_path):
    s = {"t0": 0.5}
    cells = [cell("sdedit", s, "img0", {"psnr": 10.0}, edit_type="change_color"),
             cell("sdedit", s, "img1", {"psnr": 20.0}, edit_type="add_object"),
             cell("sdedit", s, "img2", {"psnr": 30.0}, edit_type="add_object")]  # fmt: skip
    rows = summarize(load_run(make_run(tmp_path, "r", cells)), by_edit_type=True)
    got = [(r.edit_type, r.ok, r.metrics["psnr"].mean) for r in rows]
    assert got == [("add_object", 2, 25.0), ("change_color", 1, 10.0)]


def test_rows_are_in_run_order_with_the_reference_first_and_labels_show_varying_params(tmp_path):
    cells = sweep_cells({0.3: 20.0, 0.7: 15.0})
    cells = cells[3:] + cells[:3]  # sdedit first in the store
    rows = summarize(load_run(make_run(tmp_path, "r", cells)))
    assert [(r.method, r.label) for r in rows] == [("reconstruct", "—"), ("sdedit", "t0=0.3"), ("sdedit", "t0=0.7")]


def test_set_metrics_are_read_when_present(tmp_path):
    cells = [cell("sdedit", {"t0": 0.5}, "img0", {"psnr": 10.0})]
    run_dir = make_run(tmp_path, "r", cells, set_metrics=[("sdedit", {"t0": 0.5}, "fid", 42.0, 1)])
    store = Store(run_dir)
    store.set_info("set_metrics_n_source", 3)
    store.close()
    run = load_run(run_dir)
    (row,) = summarize(run)
    assert row.metrics["fid"] == Stat(42.0, n=1, per_image=False)
    assert "fid" in run.metric_names and "(set, n=1)" in format_stat(row.metrics["fid"])
    assert ("set-level metrics", "against 3 source images") in provenance(run)


def _rows(tmp_path, name, levels: dict, metric="psnr", samples=("img0", "img1", "img2"), spread=(0.0, 0.1, -0.1), **kw):
    """reconstruct (99) + one sdedit row per t0, ``metric`` = level + the per-sample spread."""
    cells = [cell("reconstruct", {}, s, {metric: 99.0}) for s in samples]
    cells += [cell("sdedit", {"t0": t0}, s, {metric: level + d}) for t0, level in levels.items()
              for s, d in zip(samples, spread)]  # fmt: skip
    return summarize(load_run(make_run(tmp_path, name, cells, metrics=(metric,), **kw)))


def test_best_follows_each_metrics_direction_and_skips_the_reference(tmp_path, fake_metrics):
    assert best_rows(_rows(tmp_path, "a", {0.3: 20.0, 0.5: 25.0, 0.7: 24.0}), "psnr") == {2}  # not reconstruct's 99
    assert best_rows(_rows(tmp_path, "b", {0.3: 0.5, 0.5: 0.2, 0.7: 0.9}, "lowfake"), "lowfake") == {2}


def test_overlapping_rows_are_not_bold(tmp_path):
    """psnr 9.95 vs 9.94 with per-sample noise far larger than the gap: the paired interval holds 0."""
    noise = (0.0, 1.3, -1.1, 0.7, -0.9)
    samples = tuple(f"img{i}" for i in range(5))
    cells = [cell("sdedit", {"t0": 0.3}, s, {"psnr": 9.95 + d}) for s, d in zip(samples, noise)]
    cells += [cell("sdedit", {"t0": 0.5}, s, {"psnr": 9.94 + d2}) for s, d2 in zip(samples, (1.0, -0.8, 0.3, -1.2, 0.7))]
    rows = summarize(load_run(make_run(tmp_path, "r", cells)))
    assert rows[0].metrics["psnr"].mean > rows[1].metrics["psnr"].mean
    assert best_rows(rows, "psnr") == set()


def test_a_small_but_consistent_paired_gain_is_bold(tmp_path):
    """Unpaired intervals overlap (the samples differ a lot), but on every shared cell one row is
    ahead: the paired comparison tells them apart."""
    spread = (0.0, 5.0, -5.0)
    rows = _rows(tmp_path, "r", {0.3: 20.0, 0.5: 20.2}, spread=spread)
    assert rows[1].metrics["psnr"].low < rows[2].metrics["psnr"].high  # the unpaired CIs overlap
    assert best_rows(rows, "psnr") == {2}


def test_constant_columns_ties_and_single_rows_are_not_bold(tmp_path):
    assert best_rows(_rows(tmp_path, "a", {0.3: 0.0, 0.5: 0.0, 0.7: 0.0}, spread=(0.0, 0.0, 0.0)), "psnr") == set()
    assert best_rows(_rows(tmp_path, "b", {0.3: 25.0, 0.5: 25.0, 0.7: 20.0}), "psnr") == set()
    assert best_rows(_rows(tmp_path, "c", {0.3: 25.0}), "psnr") == set()


def test_rows_that_share_no_cells_are_not_bold(tmp_path):
    cells = [cell("sdedit", {"t0": 0.3}, s, {"psnr": 30.0 + i}) for i, s in enumerate(("img0", "img1"))]
    cells += [cell("sdedit", {"t0": 0.5}, "img2", {"psnr": 10.0}, seed=s) for s in (0, 1)]
    assert best_rows(summarize(load_run(make_run(tmp_path, "r", cells))), "psnr") == set()


def test_set_metrics_are_never_bold(tmp_path):
    cells = [cell("sdedit", {"t0": t}, s, {"psnr": 1.0}) for t in (0.3, 0.5) for s in ("img0", "img1", "img2")]
    sets = [("sdedit", {"t0": 0.3}, "fid", 40.0, 3), ("sdedit", {"t0": 0.5}, "fid", 90.0, 6)]
    rows = summarize(load_run(make_run(tmp_path, "r", cells, set_metrics=sets, metrics=("psnr", "fid"))))
    assert best_rows(rows, "fid") == set()


def test_not_a_run_folder_is_a_clear_error(tmp_path):
    from bench.errors import ConfigError

    with pytest.raises(ConfigError, match="not a run folder"):
        load_run(tmp_path)
    assert not (tmp_path / "results.sqlite").exists()


# -- seeds of one sample are one piece of evidence (issue 39 item 2) --------------------------------------
def _seed_rows(tmp_path, name, seeds, levels, samples=("img0",)):
    """fireflow-like rows whose seeds give equal values (deterministic given the sample)."""
    cells = [cell("fireflow", {"inject": inject}, s, {"psnr": level + i}, seed=seed)
             for inject, level in levels.items() for i, s in enumerate(samples) for seed in seeds]  # fmt: skip
    return summarize(load_run(make_run(tmp_path, name, cells)))


def test_repeated_seeds_of_one_sample_bold_nothing_that_one_seed_would_not(tmp_path):
    """The issue's case: two seeds of one image, rows 1.9e-6 apart: no paired test can tell them apart."""
    levels = {1: 20.0 + 1.9e-6, 2: 20.0}
    assert best_rows(_seed_rows(tmp_path, "one", (0,), levels), "psnr") == set()
    assert best_rows(_seed_rows(tmp_path, "two", (0, 1), levels), "psnr") == set()


def test_intervals_resample_samples_so_repeated_seeds_change_nothing(tmp_path):
    samples = ("img0", "img1", "img2")
    one = _seed_rows(tmp_path, "one", (0,), {1: 20.0}, samples)[0]
    two = _seed_rows(tmp_path, "two", (0, 1), {1: 20.0}, samples)[0]
    a, b = one.metrics["psnr"], two.metrics["psnr"]
    assert (a.mean, a.low, a.high) == pytest.approx((b.mean, b.low, b.high))
    assert (a.n, a.samples, b.n, b.samples) == (3, 3, 6, 3)
    assert (one.n_text, two.n_text) == ("3", "3 (6 cells)")


def test_a_cluster_bootstrap_is_wider_than_counting_each_seed():
    per_sample = np.random.default_rng(3).normal(size=10)
    values, samples = np.repeat(per_sample, 2), np.repeat([f"s{i}" for i in range(10)], 2)  # two equal seeds each
    cells_low, cells_high = bootstrap_ci(values)
    low, high = bootstrap_ci(values, clusters=samples)
    assert (low, high) == bootstrap_ci(per_sample)  # as if each sample were given once
    assert high - low > 1.3 * (cells_high - cells_low)  # counting each seed narrows it by about sqrt(2)
    assert all(math.isnan(v) for v in bootstrap_ci([1.0, 2.0], clusters=["a", "a"]))  # one sample: no interval
