"""configs/piebench_matrix.yaml: every cell ok, each inversion computed once per image."""

import pytest

from bench.execution.config import load_config
from bench.execution.runner import Runner
from bench.reporting.report import cells_table

CONFIG = "configs/piebench_matrix.yaml"
#: Fresh inversions per image: the DDIM trajectory (ddim, negative_prompt, direct, and null_text's
#: pivot), null-text's embeddings, the edit-friendly DDPM inversion (p2p ddpm and ddpm_inversion), EDICT.
INVERSIONS_PER_IMAGE = 4
METHODS = {"p2p", "masactrl", "pnp", "pix2pix_zero", "edict", "ddpm_inversion", "blended_latent"}
FEW_STEPS = [f"{m}.steps=2" for m in METHODS] + ["ddpm_inversion.skip=1", "p2p.inner_steps=2"]


def run_matrix(tmp_path, backbone, overrides, path=CONFIG):
    config = load_config(path, overrides)
    (tmp_path / "run").mkdir()
    runner = Runner(config, tmp_path / "run", backbone=backbone, progress=False)
    runner.write_manifest()
    counts = runner.run()
    return config, counts, cells_table(tmp_path / "run")


def check_matrix(config, counts, cells):
    assert counts["failed"] == counts["skipped"] == 0, cells.loc[cells["status"] != "ok", ["method", "error"]]
    assert counts["ok"] == len(cells) == config.n_settings * cells["sample_id"].nunique()
    assert set(cells["method"]) == METHODS
    with_inversion = cells[cells["method"] != "blended_latent"]
    for sample_id, group in with_inversion.groupby("sample_id"):
        fresh = group[~group["prep_cached"].astype(bool)]
        assert len(fresh) == INVERSIONS_PER_IMAGE, (sample_id, fresh[["method", "param.inversion"]])
        assert (fresh["prep_nfe"] > 0).all()
        assert (group.loc[group["prep_cached"].astype(bool), "prep_nfe"] == 0).all()


def test_the_matrix_config_runs_every_cell_and_inverts_each_image_once(tmp_path, backbone):
    config, counts, cells = run_matrix(tmp_path, backbone, ["dataset.limit=1", *FEW_STEPS])
    assert config.n_settings == 14
    check_matrix(config, counts, cells)


@pytest.mark.slow
def test_the_matrix_config_as_shipped(tmp_path, backbone):
    check_matrix(*run_matrix(tmp_path, backbone, []))
