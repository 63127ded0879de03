import csv

import yaml
from click.testing import CliRunner

from run_bench import main
from tests.helpers import write_dataset


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_methods_lists_parameters_with_ranges():
    result = invoke("methods")
    assert result.exit_code == 0
    assert "sdedit:" in result.output and "t0 = 0.5  [float in (0, 1]]" in result.output
    assert "reconstruct:" in result.output


def test_datasets_lists_the_bundled_set():
    result = invoke("datasets")
    assert result.exit_code == 0 and result.output.startswith("sample: ")
    for hub in ("magicbrush: hub osunlp/MagicBrush", "emu_edit: hub facebook/emu_edit_test_set", "gedit_bench: hub stepfun-ai/GEdit-Bench"):
        assert hub in result.output, "hub cards are listed without being loaded (they may not be cached)"


def test_datasets_says_what_a_local_copy_needs_and_what_each_card_reports():
    output = invoke("datasets").output
    gedit = output[output.index("gedit_bench: hub"):].split("\n")
    assert gedit[1].startswith("  columns a local copy must have: key (part of the sample id: string | integer)")
    assert "input_image (image: image)" in gedit[1] and "Intersection_exist (group 'intersection'" in gedit[1]
    assert "input_image_raw" not in gedit[1]
    assert gedit[2].startswith("  judge protocol: VIEScore") and "vie_sc, vie_pq, vie_o" in gedit[2]
    assert gedit[3].startswith("  table: editbench report RUN --table gedit_bench or gedit (SC, PQ, O per task type")
    emu = output[output.index("emu_edit: hub"):].split("\n")
    assert emu[2] == "  metrics: clip_i_input, dino_input, clip_t, clip_direction, l1_input"


def test_config_errors_are_one_clean_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"methods": {"sdedit": {"t0": 2}}}))
    result = invoke("run", config)
    assert result.exit_code == 1
    assert "Error: method 'sdedit': parameter 't0' = 2 is not allowed; expected float in (0, 1]" in result.output
    assert "Traceback" not in result.output
    result = invoke("run", config, "--set", "sdedit.t0=0.5", "--set", "sdedit.stpes=3")
    assert "unknown parameter 'stpes' (did you mean 'steps'?)" in result.output


def test_run_report_export(tmp_path, monkeypatch):
    config = tmp_path / "c.yaml"
    data = write_dataset(tmp_path / "data", n=2)
    config.write_text(yaml.safe_dump({"dataset": {"path": data}, "methods": {"reconstruct": {}}}))  # path alone
    result = invoke("run", config, "--set", "sdedit={}", "--set", "sdedit.t0=0.5,1.0", "--set", "sdedit.steps=2", "--out", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    run_dir = result.stdout.strip().splitlines()[-1]
    assert run_dir.startswith(str(tmp_path / "runs"))
    report = invoke("report", run_dir)
    assert "| sdedit | t0=1.0 | 2 | 0 | 0 |" in report.output and "untrained backbone" in report.output
    exported = invoke("export", run_dir, "--csv", tmp_path / "cells.csv")
    assert exported.exit_code == 0
    rows = list(csv.DictReader(open(tmp_path / "cells.csv")))
    assert len(rows) == 2 * 3 and {r["method"] for r in rows} == {"reconstruct", "sdedit"}
    import bench.diffusion.backbone

    def refuse(*args, **kwargs):
        raise AssertionError("--resume of a finished run loaded the backbone")

    monkeypatch.setattr(bench.diffusion.backbone.Backbone, "__init__", refuse)  # a finished run is seen from its store alone
    resumed = invoke("run", "--resume", run_dir, "--quiet")
    assert resumed.exit_code == 0 and "6 already done" in resumed.output
    assert "give no CONFIG" in invoke("run", config, "--resume", run_dir).output


def test_methods_lists_the_extra_network_methods_with_their_ranges():
    output = invoke("methods").output
    assert "controlnet:" in output and "conditioning_scale = 1.0  [float in [0, 5]]" in output
    assert "t2i_adapter:" in output and "adapter_scale = 1.0  [float in [0, 5]]" in output
    assert "instruct_pix2pix:" in output and "image_w = 1.5  [float in [0, 50]]" in output
    assert "(needs: instruction)" in output
    assert "condition = 'canny'  [one of 'canny', 'grey', 'blur', 'depth', 'segmentation', 'pose']" in output
    assert "depth_model = 'Intel/dpt-hybrid-midas'  [str]" in output


def test_version():
    from bench import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"editbench {__version__}"


def test_a_missing_gpu_is_one_line_naming_the_available_devices(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"methods": {"reconstruct": {}}}))
    result = invoke("run", config, "--set", "backbone.device=cuda", "--out", tmp_path / "runs", "--quiet")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == [
        "Error: backbone device 'cuda' is not available on this machine; available: "
        + ", ".join(["mps"] * torch.backends.mps.is_available() + ["cpu"]) + " (or auto)"
    ]


def test_a_mistyped_backbone_folder_names_the_folders_there(tmp_path):
    (tmp_path / "sd15" / "unet").mkdir(parents=True)
    (tmp_path / "sd15" / "unet" / "config.json").write_text("{}")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"methods": {"reconstruct": {}}}))
    result = invoke("run", config, "--backbone", tmp_path / "sd-15", "--out", tmp_path / "runs", "--quiet")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"backbone folder '{tmp_path / 'sd-15'}' does not exist (did you mean 'sd15'?)" in result.output
    result = invoke("run", config, "--backbone", tmp_path, "--out", tmp_path / "runs", "--quiet")
    assert "is not a diffusers pipeline folder (no unet/ or transformer/ config.json)" in result.output


def test_backbones_prints_parameters_per_network():
    result = invoke("backbones", "tiny-kontext", "no/such-model")
    assert result.exit_code == 0, result.output
    assert "tiny-kontext (FLUX.1 Kontext):" in result.output and "transformer 167K" in result.output
    assert "no/such-model: not on disk" in result.output


def test_a_backbone_folder_whose_model_index_is_not_json_is_a_one_line_error(tmp_path):
    (tmp_path / "sd" / "unet").mkdir(parents=True)
    (tmp_path / "sd" / "unet" / "config.json").write_text("{}")
    (tmp_path / "sd" / "model_index.json").write_text("{not json")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"methods": {"reconstruct": {}}}))
    for extra in (["--dry-run"], ["--out", tmp_path / "runs", "--quiet"]):
        result = invoke("run", config, "--backbone", tmp_path / "sd", *extra)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert f"Error: backbone folder '{tmp_path / 'sd'}' is not a diffusers pipeline folder: its model_index.json " \
               "is not JSON" in result.output
    assert not (tmp_path / "runs").exists()


def test_a_mistyped_embedded_backbone_is_refused_without_a_hub_lookup(tmp_path, monkeypatch):
    import huggingface_hub

    from bench.diffusion.tiny import TINY_BACKBONES

    def no_hub(*args, **kwargs):
        raise AssertionError("a name that is no hub id (owner/name) was looked up on the hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_hub)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_hub)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"methods": {"reconstruct": {}}}))
    for extra in (["--dry-run"], ["--out", tmp_path / "runs", "--quiet"]):
        result = invoke("run", config, "--backbone", "tiny-sd4", *extra)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert ("Error: backbone 'tiny-sd4' is not an embedded backbone, a folder or a hub id (owner/name) "
                f"(did you mean 'tiny-sd3'?); embedded: {', '.join(sorted(TINY_BACKBONES))}") in result.output
    assert not (tmp_path / "runs").exists()


def test_a_hub_id_that_cannot_be_loaded_lists_every_embedded_backbone(tmp_path, monkeypatch):
    import huggingface_hub

    from bench.diffusion.tiny import TINY_BACKBONES

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"methods": {"reconstruct": {}}}))
    result = invoke("run", config, "--backbone", "someone/no-such-model", "--out", tmp_path / "runs", "--quiet")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert f"or an embedded untrained backbone ({', '.join(sorted(TINY_BACKBONES))})." in result.output
