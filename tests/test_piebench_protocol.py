"""configs/piebench_protocol*.yaml: PnPInversion's table row by row, every cell ok on the tiny backbone."""

import pytest

from bench.execution.config import load_config
from tests.test_piebench_matrix import run_matrix

PROTOCOL, PNP = "configs/piebench_protocol.yaml", "configs/piebench_protocol_pnp.yaml"
#: Few steps: p2p keeps one step after edit-friendly DDPM's 12 skipped ones.
FEW_STEPS = ["p2p.steps=13", "p2p.inner_steps=1", "masactrl.steps=2", "masactrl.start_step=1",
             "pix2pix_zero.steps=2", "edict.steps=3", "dataset.limit=1"]  # fmt: skip


def settings(config, method):
    return config.settings[method]


def test_protocol_rows_are_set_as_pnpinversions_scripts_set_them():
    config = load_config(PROTOCOL)
    p2p = {s["inversion"]: s for s in settings(config, "p2p")}
    assert set(p2p) == {"ddim", "null_text", "negative_prompt", "direct", "ddpm"}
    for kind in ("ddim", "null_text", "negative_prompt", "direct"):
        s = p2p[kind]
        assert (s["edit"], s["reweight_word"], s["reweight_factor"], s["blend_words"]) == ("refine_reweight", "blend", 2.0, "auto")
        assert (s["steps"], s["w"], s["cross_replace_steps"], s["self_replace_steps"], s["skip"]) == (50, 7.5, 0.4, 0.6, 0)
    ddpm = p2p["ddpm"]
    assert (ddpm["skip"], ddpm["source_w"], ddpm["inversion_w"], ddpm["blend_words"], ddpm["edit"], ddpm["zero_last_noise"]) == (
        12, "inversion_w", 1.0, "none", "auto_words", True)
    assert all(s["source_prompt"] == "" and s["start_step"] == 4 for s in settings(config, "masactrl"))
    assert all((s["direction"], s["negative_prompt"], s["w"], s["loss_halves"], s["offset_edit"]) == ("prompts", "source", 7.5, "both", True)
               for s in settings(config, "pix2pix_zero"))  # fmt: skip
    assert [(s["w"], s["strength"], s["leapfrog"], s["own_scheduler"]) for s in settings(config, "edict")] == [(3.0, 0.8, True, True)]
    pnp = load_config(PNP).settings["pnp"]
    assert {s["inversion"] for s in pnp} == {"ddim", "direct"}
    assert all(s["source_prompt"] == "" and s["negative_prompt"].startswith("ugly") and s["source_row"] == "stored" for s in pnp)


@pytest.mark.parametrize("path, overrides", [(PROTOCOL, FEW_STEPS), (PNP, ["pnp.steps=2", "dataset.limit=1"])])
def test_protocol_config_runs_every_cell(tmp_path, backbone, path, overrides):
    config, counts, cells = run_matrix(tmp_path, backbone, overrides, path)
    assert counts["failed"] == counts["skipped"] == 0, cells.loc[cells["status"] != "ok", ["method", "error"]]
    assert counts["ok"] == config.n_settings
