"""Multi-turn chains (``dataset.turns: iterative``): order, inputs, failure, kill -9 and resume."""

import html

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from bench.data import DatasetSpec, load_dataset
from bench.errors import ConfigError
from bench.execution.chains import input_image
from bench.execution.config import build_config, load_config
from bench.execution.runner import resume_run, start_run
from bench.execution.scoring import score_run
from bench.method import EditResult, Method
from bench.paths import repo_root
from bench.registry import register
from bench.store import Store
from run_bench import main
from tests.helpers import committed, kill_9_after, read_cells, write_hub_fixture, write_turns_manifest
from tests.test_metrics_reference import tiny_clip, tiny_vit  # noqa: F401


@register
class _FailsOnTurnTwo(Method):
    """Darkens its input; fails on every turn-2 sample (ids ``<chain>_2``)."""

    name = "test_fails_turn_two"

    def edit(self, backbone, sample, prep, setting, generator):
        if sample.id.endswith("_2"):
            raise RuntimeError("turn two is cursed")
        return EditResult(sample.image[None] * 0.9)


def chain_config(tmp_path, methods, dataset, **more):
    raw = {"dataset": {"name": None, "turns": "iterative", **dataset}, "methods": methods, "metrics": ["psnr", "l1_input"],
           "output": str(tmp_path / "runs"), "backbone": {"resolution": 64}, **more}  # fmt: skip
    return build_config(raw)


def test_jsonl_instruction_lists_are_chains_and_turn_rules_select_them(tmp_path):
    path = write_turns_manifest(tmp_path / "data")
    first = load_dataset(DatasetSpec(path=path))
    every = load_dataset(DatasetSpec(path=path, turns="all"))  # the old name of independent
    assert [r.id for r in first] == ["c0_1", "c1_1"]
    assert [(r.id, r.chain, r.turn) for r in every[:3]] == [("c0_1", "c0", 1), ("c0_2", "c0", 2), ("c0_3", "c0", 3)]
    assert DatasetSpec(path=path, turns="all").turns == "independent"
    sample = every[1].load(32)
    assert (sample.instruction, sample.target_prompt) == ("make it red", "a red photo with a hat")
    assert [r.id for r in load_dataset(DatasetSpec(path=path, turns="iterative", limit=1))] == ["c0_1", "c0_2", "c0_3"]
    with pytest.raises(ConfigError, match="turn rule"):
        DatasetSpec(path=path, turns="chained")


def test_each_turn_edits_the_previous_turns_saved_output(tmp_path):
    config = chain_config(tmp_path, {"test_fails_turn_two": {}}, {"path": write_turns_manifest(tmp_path / "data")},
                          batch_size=2)  # fmt: skip
    run_dir, counts = start_run(config, progress=False)
    cells = read_cells(run_dir).set_index("key")
    chained = cells[cells.input_key.notna()]
    assert len(cells) == 2 * (3 + 2) and len(chained) == 2 * 2
    # turn 1 ok, turn 2 (chained and independent) failed, the chained turn 3 skipped with turn 2's failure
    assert set(cells[cells.turn == 1].status) == {"ok"} and set(cells[cells.turn == 2].status) == {"failed"}
    third = chained[chained.turn == 3]
    assert (third.status == "skipped").all()
    assert third.error.str.fullmatch(r"turn 2 of chain c\d failed: RuntimeError: turn two is cursed").all()
    independent_third = cells[(cells.turn == 3) & cells.input_key.isna()]
    assert (independent_third.status == "ok").all(), "an independent turn does not depend on the one before"
    assert counts == {"ok": 4, "failed": 4, "skipped": 2, "already done": 0}


def test_a_chained_turn_reads_its_input_cell(tmp_path):
    config = chain_config(tmp_path, {"reconstruct": {}}, {"path": write_turns_manifest(tmp_path / "data", n=1)})
    run_dir, _ = start_run(config, progress=False)
    cells = read_cells(run_dir).set_index("key")
    chained = cells[cells.input_key.notna()].sort_values("turn")
    for key, cell in chained.iterrows():
        previous = cells.loc[cell.input_key]
        assert previous.turn == cell.turn - 1 and previous.chain == cell.chain
        assert "_iter_" in cell.output_path and "_iter_" not in cells.loc[chained.input_key.iloc[0]].output_path
        # l1_input is the turn's distance to its own input: the previous turn's saved pixels
        edited = input_image((run_dir / cell.output_path).read_bytes())
        source = input_image((run_dir / previous.output_path).read_bytes())
        assert cell["metric.l1_input"] == pytest.approx((edited - source).abs().mean().item(), abs=1e-6)
    score_run(run_dir, ["mse"], progress=False)  # editbench score compares a chained turn with its own input too
    rescored = read_cells(run_dir).set_index("key")
    for key, cell in chained.iterrows():
        edited = input_image((run_dir / cell.output_path).read_bytes())
        source = input_image((run_dir / cells.loc[cell.input_key].output_path).read_bytes())
        assert rescored.loc[key, "metric.mse"] == pytest.approx(((edited - source) ** 2).mean().item(), rel=1e-5)


@pytest.mark.parametrize("batch_size", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_kill_9_mid_chain_then_resume_runs_every_turn_once_with_the_same_bytes(tmp_path, batch_size):
    """The plan runs the 4 independent turns, then chain 1000's turns 1-3, then chain 1001's: a kill
    after 5 cells lands in chain 1000 (a cell takes about a second, the kill comes within 50 ms)."""
    folder = write_hub_fixture(tmp_path / "mb", "magicbrush", "dev", n=2, turns=3)
    config = {"dataset": {"name": "magicbrush", "path": folder, "turns": "iterative"}, "metrics": ["psnr"],
              "methods": {"sdedit": {"steps": 10, "t0": 0.5}}, "backbone": {"resolution": 64}, "batch_size": batch_size}  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    total = 2 * (3 + 2)
    run_dir = kill_9_after([str(tmp_path / "run.yaml")], tmp_path / "killed", cells=5)
    before = read_cells(run_dir)
    chain = before[(before.chain == "1000") & (before.turn == 1) | before.input_key.notna()]
    assert 1 <= len(chain) < 3 and len(before) < total, "killed mid-chain"

    _, counts = resume_run(run_dir, progress=False)
    assert counts["already done"] == len(before) and counts["ok"] == total - len(before)
    resumed = read_cells(run_dir).set_index("key")
    assert len(resumed) == total and (resumed.status == "ok").all()

    whole_dir, _ = start_run(build_config({**config, "output": str(tmp_path / "whole")}), progress=False)
    whole = read_cells(whole_dir).set_index("key")
    assert sorted(whole.index) == sorted(resumed.index)
    for key, cell in whole.iterrows():
        assert (whole_dir / cell.output_path).read_bytes() == (run_dir / resumed.loc[key, "output_path"]).read_bytes(), key
    assert committed(run_dir / Store.FILENAME) == total


@pytest.fixture(scope="module")
def magicbrush_chains(tmp_path_factory, tiny_clip, tiny_vit):  # noqa: F811
    """configs/multiturn.yaml (sdedit and instruct_pix2pix, ``turns: iterative``) on a three-turn
    MagicBrush-schema fixture, at 2 steps, with MagicBrush's metrics on tiny local CLIP and DINO-shaped networks."""
    tmp = tmp_path_factory.mktemp("mb_chains")
    folder = write_hub_fixture(tmp / "mb", "magicbrush", "dev", n=2, turns=3)
    overrides = [f"dataset.path={folder}", "sdedit.steps=2", "instruct_pix2pix.steps=2", "batch_size=2",
                 f"metric_options.similarity_clip_model={tiny_clip}", f"metric_options.similarity_dino_model={tiny_vit}",
                 f"output={tmp / 'runs'}", "backbone.resolution=64"]  # fmt: skip
    config = load_config(repo_root() / "configs" / "multiturn.yaml", overrides)
    assert config.dataset.turns == "iterative" and set(config.settings) == {"sdedit", "instruct_pix2pix"}
    run_dir, counts = start_run(config, progress=False)
    return tmp, run_dir, counts


def test_magicbrush_iterative_run_exports_turns_and_prints_both_settings(magicbrush_chains):
    tmp, run_dir, counts = magicbrush_chains
    assert counts["ok"] == 2 * 2 * (3 + 2) and counts["failed"] == counts["skipped"] == 0
    out = CliRunner().invoke(main, ["export", str(run_dir), "--csv", str(tmp / "cells.csv")])
    assert out.exit_code == 0, out.output
    table = pd.read_csv(tmp / "cells.csv")
    chains = table[table.input_key.notna() | (table.turn == 1)]
    assert (chains.groupby(["method", "chain"]).turn.apply(sorted) == pd.Series([[1, 2, 3]] * 4).values).all()
    second = table[table.input_key.notna() & (table.turn == 2)]
    assert second.groupby("method").batch_id.nunique().eq(1).all(), "one batch holds turn 2 of both chains"
    report = CliRunner().invoke(main, ["report", str(run_dir), "--table", "magicbrush"])
    assert report.exit_code == 0, report.output
    rows = [line for line in report.output.splitlines() if line.startswith("| ") and "turn |" in line]
    assert [r.split(" | ")[:2] for r in rows] == [["| Single-turn", "sdedit"], ["| Single-turn", "instruct_pix2pix"],
                                                  ["| Multi-turn", "sdedit"], ["| Multi-turn", "instruct_pix2pix"]]
    assert [r.split(" | ")[2] for r in rows] == ["6", "6", "2", "2"]


def test_magicbrush_settings_average_the_cells_image_eval_pairs(magicbrush_chains):
    """Single-turn: turn 1 and the independent turns; multi-turn: each chain's last iterative image."""
    from bench.reporting.aggregate import load_run
    from bench.reporting.magicbrush_table import magicbrush_rows

    _, run_dir, _ = magicbrush_chains
    run = load_run(run_dir)
    cells = run.cells[run.cells.method == "sdedit"]
    single = cells[cells.input_key.isna()]
    final = cells[cells.input_key.notna() & (cells.turn == 3)]
    (_, single_rows), (_, multi_rows) = magicbrush_rows(run)
    for rows, chosen in ((single_rows, single), (multi_rows, final)):
        (row,) = [r for r in rows if r.method == "sdedit"]
        assert row.metrics["l1_gt"].mean == pytest.approx(chosen["metric.l1_gt"].mean())
        assert row.ok == len(chosen)


def test_drift_table_and_plot_per_turn(magicbrush_chains, tmp_path):
    from bench.reporting import plots
    from bench.reporting.aggregate import load_run
    from bench.reporting.turns import drift_figure, drift_rows

    _, run_dir, _ = magicbrush_chains
    run = load_run(run_dir)
    rows = drift_rows(run, "l1_input")
    assert {(r.method, r.kind) for r in rows} == {(m, k) for m in ("sdedit", "instruct_pix2pix")
                                                  for k in ("iterative", "independent")}  # fmt: skip
    assert all(sorted(r.by_turn) == [1, 2, 3] and all(s.n == 2 for s in r.by_turn.values()) for r in rows)
    assert not plots.figure_overlaps(drift_figure(run, "l1_gt"))
    out = CliRunner().invoke(main, ["report", str(run_dir), "--table", "drift", "--metric", "l1_gt",
                                    "--md", str(tmp_path / "drift.md")])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert (tmp_path / "drift_files" / "drift_l1_gt.png").is_file()
    assert "| sdedit | iterative |" in (tmp_path / "drift.md").read_text()


def test_a_chained_turn_and_the_independent_edit_of_its_sample_pair_with_their_own_kind(magicbrush_chains):
    """The report's paired comparisons (best row, compare) match cells by sample and seed: a chained
    turn and the independent edit of the same sample are different cells (rows that keep both: the
    main table leaves the chained turns out)."""
    from bench.reporting.aggregate import load_run, summarize

    _, run_dir, _ = magicbrush_chains
    (row, *_) = summarize(load_run(run_dir), keep_chained=True)
    values = row.values["l1_gt"]
    assert values.index.is_unique and len(values) == 2 * (3 + 2)
    assert ("1000_2 (iterative)", 0) in values.index and ("1000_2", 0) in values.index


def test_the_main_report_of_an_iterative_run_shows_the_independent_edits_and_points_to_the_chains(
        magicbrush_chains, tmp_path):  # fmt: skip
    """Its rows average the independent edits only (MagicBrush's single-turn setting), not chained
    and independent turns together; the Markdown and HTML pages say where the chains are, and that
    the image grids show the independent edits."""
    from bench.reporting.aggregate import load_run, summarize

    _, run_dir, _ = magicbrush_chains
    run = load_run(run_dir)
    for row in summarize(run):
        own = run.cells[(run.cells.method == row.method) & (run.cells.setting == row.setting_json)]
        independent = own[own.input_key.isna()]
        assert row.cells == row.ok == len(independent) == 2 * 3
        assert row.metrics["l1_gt"].mean == pytest.approx(independent["metric.l1_gt"].mean())
    out = CliRunner().invoke(main, ["report", str(run_dir), "--md", str(tmp_path / "r.md"),
                                    "--html", str(tmp_path / "r.html")])  # fmt: skip
    assert out.exit_code == 0, out.output
    for page in ("r.md", "r.html"):
        text = html.unescape(" ".join((tmp_path / page).read_text().split()))
        assert "its 8 chained turn cell(s) (each turn edited from the method's own previous output) are left" in text
        assert "--table magicbrush --md PATH" in text and "--table drift" in text
        assert "Each tile is a turn's independent edit (from its recorded source), not the chained turn" in text


def test_the_dry_run_counts_the_preparations_of_chained_turns(tmp_path, monkeypatch):
    """A chained turn prepares the method's own previous output: one inversion per chained cell, on
    top of one per source sample and disk-cache entry (the two settings share theirs). The dry
    run's total is what the run computes."""
    from bench.execution.plan import dry_run_text

    monkeypatch.setenv("EDITBENCH_CACHE", str(tmp_path / "cache"))  # every inversion is computed
    folder = write_hub_fixture(tmp_path / "mb", "magicbrush", "dev", n=2, turns=3)
    config = build_config({"dataset": {"name": "magicbrush", "path": folder, "turns": "iterative"}, "metrics": ["psnr"],
                           "methods": {"ddim_inversion": {"steps": 2, "inversion_w": 2.5, "w": [2.0, 3.0]}},
                           "backbone": {"resolution": 64}, "output": str(tmp_path / "runs")})  # fmt: skip
    lines = dry_run_text(config).splitlines()
    assert "20 cells; estimated NFE: 80 for the edits" in lines  # (6 turns + 4 chained) x 2 settings x 4
    assert any(line.startswith("preparations (inversions): 14 (ddim_inversion: 14); ") for line in lines)  # 6 + 4 x 2
    assert "estimated NFE in all: up to 136 (the edits and every preparation computed)" in lines  # 80 + 14 x 4
    run_dir, counts = start_run(config, progress=False)
    cells = read_cells(run_dir)
    assert counts["ok"] == 20 and cells["nfe"].sum() + cells["prep_nfe"].sum() == 136


def test_set_metrics_of_an_iterative_run_score_the_independent_edits(magicbrush_chains, tmp_path, monkeypatch):
    """A set-level value (FID, KID) sits in the report's row of its method and setting, which holds
    the independent edits: it is computed over those images, not over the chained turns too."""
    import shutil

    import torch

    from bench.execution.scoring import score_sets
    from bench.metrics.base import SetMetric
    from bench.samples import as_frame

    class MeanColour(torch.nn.Module):
        num_features = 3

        def forward(self, images):
            return images.mean((2, 3))

    class CountImages(SetMetric):
        name, extractor_id, higher_is_better = "test_count_images", "test_mean_colour", False
        features = MeanColour()

        def start(self, real):
            self.n = 0

        def update(self, fake):
            self.n += len(fake)

        def compute(self):
            return float(self.n)

    monkeypatch.setenv("EDITBENCH_CACHE", str(tmp_path / "cache"))
    tmp, shared_run, _ = magicbrush_chains
    run_dir = shutil.copytree(shared_run, tmp_path / "run")  # the shared run stays as it is
    refs = load_dataset(DatasetSpec(name="magicbrush", path=str(tmp / "mb"), turns="iterative"))
    store = Store(run_dir)
    try:
        rows = score_sets(store, run_dir, [CountImages()], refs, as_frame(64), 4)
    finally:
        store.close()
    assert {value for *_, value, _ in rows} == {6.0} and {n for *_, n in rows} == {6}  # 2 chains x 3 turns


def test_a_chain_runs_on_its_methods_backbone_with_several_backbones(tmp_path):
    """Chains and several models in one run: each method's turns, chained ones included, are planned
    on its backbone, the units of one backbone together, and each turn edits its own method's output."""
    from bench.execution.chains import plan_chain_units

    config = chain_config(tmp_path, {"reconstruct": {}, "kontext": {"backbone": "tiny-kontext", "steps": 2}},
                          {"path": write_turns_manifest(tmp_path / "data", n=1)})  # fmt: skip
    labels = {method: config.backbone_label(method) for method in config.settings}
    units = plan_chain_units(config.settings, load_dataset(config.dataset), config.seeds, {}, 4, tmp_path, labels)
    assert all(unit.backbone == labels[unit.method] for unit in units)
    order = [unit.backbone for unit in units]
    assert order == sorted(order, key=order.index) and set(order) == {"tiny", "tiny-kontext"}  # one block each
    run_dir, _ = start_run(config, progress=False)
    cells = read_cells(run_dir).set_index("key")
    assert (cells.status == "ok").all() and cells.input_key.notna().sum() == 2 * 2
    assert dict(zip(cells.method, cells.backbone)) == {"reconstruct": "tiny", "kontext": "tiny-kontext"}
    for _, cell in cells[cells.input_key.notna()].iterrows():
        edited = cells.loc[cell.input_key]
        assert (edited.method, edited.backbone) == (cell.method, cell.backbone)
