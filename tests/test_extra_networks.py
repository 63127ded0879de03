"""Extra networks beside the backbone: offline loading by folder or hub id, fingerprints,
compatibility, and what a change of weights invalidates."""

import hashlib
import json
import shutil

import pytest
import torch

from bench.data import Sample
from bench.diffusion.extra_networks import WEIGHTS, changed_networks, check_compatible, load_network, save_untrained
from bench.errors import ConfigError
from bench.execution.config import build_config
from bench.execution.runner import Runner, resume_run, start_run
from bench.registry import get_method
from bench.store import Store
from tests.helpers import write_dataset


def save_network(backbone, kind, folder, seed):
    if folder.exists():
        shutil.rmtree(folder)
    save_untrained(backbone, kind, seed, folder)
    return str(folder)


def run_config(tmp_path, methods):
    data = write_dataset(tmp_path / "data", n=1)
    return build_config({"dataset": {"name": None, "path": data}, "methods": methods, "output": str(tmp_path / "runs")})


def controlnet_output(backbone, image, source):
    method = get_method("controlnet")()
    setting = method.resolve({"controlnet": source, "steps": 2, "w": 1.0})
    sample = Sample("x", image, "a cat", "a dog")
    prep = method.prepare(backbone, sample, setting).value
    return method.edit(backbone, sample, prep, setting, torch.Generator().manual_seed(0)).image


def test_a_local_folder_loads_once_fingerprinted_on_the_backbones_device(backbone, tmp_path):
    source = save_network(backbone, "controlnet", tmp_path / "cn", seed=1)
    network = load_network(backbone, "controlnet", source)
    assert load_network(backbone, "controlnet", source) is network
    digest = hashlib.sha256((tmp_path / "cn" / WEIGHTS).read_bytes()).hexdigest()
    assert network.fingerprint["weights_sha256"] == digest and network.labels == []
    param = next(network.model.parameters())
    assert param.device == backbone.device and param.dtype == backbone.dtype and not param.requires_grad
    assert backbone.describe()["extra_networks"][f"controlnet:{source}"] == network.fingerprint


def test_changed_weights_miss_the_loaded_network_and_change_its_fingerprint(backbone, image, tmp_path):
    source = save_network(backbone, "controlnet", tmp_path / "cn", seed=1)
    first = load_network(backbone, "controlnet", source)
    recorded = backbone.extra_fingerprints()
    before = controlnet_output(backbone, image, source)
    save_network(backbone, "controlnet", tmp_path / "cn", seed=2)
    second = load_network(backbone, "controlnet", source)
    assert second is not first and second.fingerprint["id"] != first.fingerprint["id"]
    assert (controlnet_output(backbone, image, source) - before).abs().max() > 1e-4
    ids = f"{first.fingerprint['id']} -> {second.fingerprint['id']}"
    assert changed_networks(recorded, backbone) == [f"controlnet:{source} ({ids})"]


def test_resume_refuses_changed_extra_network_weights(backbone, tmp_path):
    source = save_network(backbone, "t2i_adapter", tmp_path / "adapter", seed=1)
    config = run_config(tmp_path, {"t2i_adapter": {"t2i_adapter": source, "steps": 1, "w": 1.0}})
    run_dir, counts = start_run(config, progress=False)
    assert counts["ok"] == 1
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["backbone"]["extra_networks"][f"t2i_adapter:{source}"]["weights_sha256"]
    save_network(backbone, "t2i_adapter", tmp_path / "adapter", seed=2)
    store = Store(run_dir)  # an unfinished run: a finished one returns before loading any network
    store.db.execute("DELETE FROM cells")
    store.close()
    with pytest.raises(ConfigError, match="extra network weights changed since it started: t2i_adapter:"):
        resume_run(run_dir, progress=False)


def test_missing_weights_fail_before_any_cell_naming_what_and_where(backbone, tmp_path):
    config = run_config(tmp_path, {"controlnet": {"controlnet": "someone/no-such-controlnet"}})
    with pytest.raises(ConfigError, match=r"ControlNet 'someone/no-such-controlnet': looked for config.json and "
                       r"diffusion_pytorch_model.safetensors in the Hugging Face cache .*untrained: true"):  # fmt: skip
        Runner(config, tmp_path / "run", backbone=backbone, progress=False)
    bin_only = tmp_path / "bin_only"
    bin_only.mkdir()
    (bin_only / "config.json").write_text("{}")
    (bin_only / "diffusion_pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ConfigError, match=f"diffusion_pytorch_model.safetensors in local folder {bin_only}"):
        load_network(backbone, "controlnet", str(bin_only))


def test_a_hub_id_is_read_from_the_local_cache_only(backbone, tmp_path, monkeypatch):
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--someone--ip2p"
    save_network(backbone, "instruct_pix2pix", repo / "snapshots" / "abc123" / "unet", seed=1)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    network = load_network(backbone, "instruct_pix2pix", "someone/ip2p")
    assert network.folder == repo / "snapshots" / "abc123" / "unet" and network.model.config.in_channels == 8


def test_a_network_for_another_architecture_is_refused(backbone, tmp_path):
    from diffusers import T2IAdapter

    T2IAdapter(channels=[16, 32], num_res_blocks=1).save_pretrained(tmp_path / "sd2ish", safe_serialization=True)
    network = load_network(backbone, "t2i_adapter", str(tmp_path / "sd2ish"))
    with pytest.raises(ConfigError, match=r"does not fit the backbone 'tiny': its channels is \[16, 32\]"):
        check_compatible(backbone, network)
