"""Offline honesty: pretrained weights come from local caches or fail fast with a clear
error; ``--untrained-extractors`` gives seeded random extractors whose numbers are labelled.
And the run/score/metrics commands around them."""

import csv
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image

from bench.data import DatasetSpec, load_dataset
from bench.errors import ConfigError
from bench.metrics import MetricOptions
from bench.metrics.clip import clip_network
from bench.metrics.distribution import inception_network
from bench.metrics.extractors import Extractors
from bench.metrics.offline import UNTRAINED_FLAG, ExtractorMissing
from bench.metrics.perceptual import lpips_network
from run_bench import main
from tests.helpers import write_dataset


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_missing_weights_name_the_weights_the_places_and_the_flag(empty_torch_home):
    ex = Extractors(MetricOptions(clip_model="editbench-test/no-such-clip"))
    with pytest.raises(ExtractorMissing) as err:
        ex.get(lpips_network, "alex", False, metric="lpips")
    assert "alexnet-owt-7be5be79.pth" in str(err.value) and str(empty_torch_home) in str(err.value)
    assert UNTRAINED_FLAG in str(err.value)
    with pytest.raises(
        ExtractorMissing, match="(?s)CLIP model 'editbench-test/no-such-clip'.*Hugging Face cache.*--untrained"
    ):
        ex.get(clip_network, ex.options.clip_model, None, metric="clip_score")
    if not (Path("/tmp") / "inception-2015-12-05.pt").is_file():
        with pytest.raises(ExtractorMissing, match=r"(?s)inception-2015-12-05\.pt.*pt_inception.*inception_weights"):
            weights = str(empty_torch_home / "nope.pt")
            Extractors(MetricOptions(inception_weights=weights)).get(inception_network, weights, metric="fid")


def test_cached_weights_are_used_without_network(empty_torch_home):
    """A torchvision checkpoint in the torch hub cache is loaded offline, and not labelled."""
    import torchvision

    empty_torch_home.mkdir(parents=True)
    torch.manual_seed(11)
    state = torchvision.models.alexnet().state_dict()
    torch.save(state, empty_torch_home / "alexnet-owt-7be5be79.pth")
    ex = Extractors(MetricOptions())
    net = ex.get(lpips_network, "alex", False, metric="lpips")
    first_conv = next(m for m in net.net.modules() if isinstance(m, torch.nn.Conv2d))
    torch.testing.assert_close(first_conv.weight, state["features.0.weight"])
    assert ex.labels() == []


def test_cached_inception_weights_are_found_and_loaded_strictly(empty_torch_home):
    """clean-fid's TorchScript file and pytorch-fid's state dict, from the torch hub cache."""
    from bench.metrics.distribution import INCEPTION_FID_WEIGHTS, INCEPTION_TORCHSCRIPT, fid_inception, load_inception

    empty_torch_home.mkdir(parents=True)
    images = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    net = fid_inception()
    state = {**net.state_dict(), "fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}
    torch.save(state, empty_torch_home / INCEPTION_FID_WEIGHTS)
    features, identity = load_inception(None, untrained=False, seed=0)
    assert identity.startswith(INCEPTION_FID_WEIGHTS)
    with torch.no_grad():
        from bench.metrics.distribution import clean_resize

        torch.testing.assert_close(features.eval()(images), net.eval()(clean_resize(images) / 255 * 2 - 1))
    del state["Mixed_7c.branch_pool.conv.weight"]
    torch.save(state, empty_torch_home / INCEPTION_FID_WEIGHTS)
    with pytest.raises(RuntimeError, match="Missing key"):
        load_inception(None, untrained=False, seed=0)

    class Graph(torch.nn.Module):  # stands in for clean-fid's TorchScript Inception: ``.layers`` on (x - 128) / 128
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.Sequential(torch.nn.Conv2d(3, 2048, 1), torch.nn.AdaptiveAvgPool2d(1))

    graph = Graph()
    torch.jit.script(graph).save(str(empty_torch_home / INCEPTION_TORCHSCRIPT))
    features, identity = load_inception(None, untrained=False, seed=0)
    assert identity.startswith(INCEPTION_TORCHSCRIPT)
    with torch.no_grad():
        expected = graph.layers((clean_resize(images) - 128) / 128).flatten(1)
        torch.testing.assert_close(features(images), expected)


def test_untrained_extractors_are_seeded_and_labelled():
    a = Extractors(MetricOptions(untrained_extractors=True, seed=1))
    b = Extractors(MetricOptions(untrained_extractors=True, seed=1))
    c = Extractors(MetricOptions(untrained_extractors=True, seed=2))
    nets = [e.get(lpips_network, "squeeze", False, metric="lpips_bg").net for e in (a, b, c)]
    weights = [next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d)).weight for net in nets]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])
    a.get(lpips_network, "squeeze", False, metric="lpips")
    assert a.labels() == ["untrained extractor LPIPS squeeze backbone (seeded random weights) behind lpips_bg, lpips"]


def test_metric_options_are_validated():
    from bench.execution.config import build_config

    with pytest.raises(ConfigError, match="unknown key 'clip_modle' \\(did you mean 'clip_model'\\?\\)"):
        build_config({"methods": {"reconstruct": {}}, "metric_options": {"clip_modle": "x"}})
    with pytest.raises(
        ConfigError, match="metric_options.lpips_net: unknown LPIPS network 'alexnet'.*allowed: alex, squeeze, vgg"
    ):
        build_config({"methods": {"reconstruct": {}}, "metric_options": {"lpips_net": "alexnet"}})
    config = build_config({"methods": {"reconstruct": {}}}, ["metric_options.untrained_extractors=true"])
    assert config.metric_options.untrained_extractors and config.resolved["metric_options"]["untrained_extractors"]


def test_metrics_command_lists_direction_range_and_needs():
    result = invoke("metrics")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "lpips ↓  [0, inf]  per image; needs pretrained weights" in lines
    assert "clip_direction ↑  [-1, 1]  per image; needs source_prompt, target_prompt, pretrained weights" in lines
    assert "psnr_bg ↑  [0, inf]  per image; needs mask" in lines
    assert "fid ↓  [0, inf]  per set; needs pretrained weights" in lines
    assert any(line.startswith("nfe ↓") and "cost" in line for line in lines)


def test_source_features_are_computed_once_and_cached(tmp_path):
    from bench.execution.scoring import source_features

    refs = load_dataset(DatasetSpec(name=None, path=write_dataset(tmp_path / "data", n=3)))
    calls = []

    def extractor(images):
        calls.append(len(images))
        return images.mean(dim=(2, 3))

    extractor.num_features = 3
    first = source_features(extractor, "test-extractor", refs, 64, batch_size=2)
    again = source_features(extractor, "test-extractor", refs, 64, batch_size=2)
    assert calls == [2, 1] and torch.equal(first, again) and first.shape == (3, 3)
    source_features(extractor, "another-extractor", refs, 64, batch_size=4)
    assert calls == [2, 1, 3]


def test_run_fails_fast_without_weights_and_runs_offline_with_the_flag(tmp_path, empty_torch_home):
    config = tmp_path / "c.yaml"
    data = write_dataset(tmp_path / "data", n=2)
    config.write_text(yaml.safe_dump({
        "dataset": {"name": None, "path": data}, "methods": {"reconstruct": {}},
        "metrics": ["psnr", "lpips", "psnr_bg", "kid"],  # fid: the same path as kid, 20 s more on CPU
    }))  # fmt: skip
    runs = tmp_path / "runs"
    failed = invoke("run", config, "--out", runs, "--quiet")
    assert failed.exit_code == 1 and "alexnet-owt-7be5be79.pth" in failed.output and UNTRAINED_FLAG in failed.output
    assert not runs.exists() or not any(runs.iterdir()), "no run folder: nothing ran"

    result = invoke("run", config, "--untrained-extractors", "--out", runs, "--quiet")
    assert result.exit_code == 0, result.output
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    db = sqlite3.connect(run_dir / "results.sqlite")
    sets = {name: (value, n) for name, value, n in db.execute("SELECT name, value, n FROM set_metrics")}
    assert set(sets) == {"kid"} and sets["kid"][1] == 2 and math.isfinite(sets["kid"][0])
    exported = invoke("export", run_dir, "--csv", tmp_path / "cells.csv")
    assert exported.exit_code == 0, exported.output
    with open(tmp_path / "cells.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(float(r["metric.lpips"]) > 0 for r in rows)
    assert all("untrained extractor LPIPS alex" in r["labels"] and "Inception-V3" in r["labels"] for r in rows)

    # add metrics afterwards, from the saved images, without re-running the method
    scored = invoke("score", run_dir, "--metrics", "mse,ssim_bg_masked", "--quiet")
    assert scored.exit_code == 0, scored.output
    refs = {r.id: r for r in load_dataset(DatasetSpec(name=None, path=data))}
    for key, sample_id, path in db.execute("SELECT key, sample_id, output_path FROM cells"):
        edited = torch.from_numpy(np.asarray(Image.open(run_dir / path), dtype=np.float32) / 255).permute(2, 0, 1)
        source = refs[sample_id].load(edited.shape[-1]).image
        (mse,) = db.execute("SELECT value FROM metrics WHERE key = ? AND name = 'mse'", (key,)).fetchone()
        assert mse == pytest.approx((edited - source).pow(2).mean().item(), rel=1e-6)
        assert db.execute("SELECT value FROM metrics WHERE key = ? AND name = 'ssim_bg_masked'", (key,)).fetchone()
    # the manifest now lists them, so cells a resume computes get them too
    (lost,) = db.execute("SELECT key FROM cells LIMIT 1").fetchone()
    db.execute("DELETE FROM metrics WHERE key = ?", (lost,))
    db.execute("DELETE FROM cells WHERE key = ?", (lost,))
    db.commit()
    resumed = invoke("run", "--resume", run_dir, "--quiet")
    assert resumed.exit_code == 0, resumed.output
    names = {n for (n,) in db.execute("SELECT name FROM metrics WHERE key = ?", (lost,))}
    assert {"mse", "ssim_bg_masked", "lpips"} <= names, names
    bad = invoke("score", run_dir, "--metrics", "lpisp")
    assert bad.exit_code == 1 and "unknown metric 'lpisp' (did you mean 'lpips'?)" in bad.output
    without_flag = invoke("score", run_dir, "--metrics", "lpips")
    assert without_flag.exit_code == 1 and UNTRAINED_FLAG in without_flag.output


def test_cost_metrics_read_the_runner_columns():
    from bench.metrics import get_metric
    from bench.store import CellRecord

    cell = CellRecord("k", "sdedit", {}, "s", 0, "ok", nfe=40, time_s=1.5)
    assert get_metric("nfe")().value(cell) == 40 and get_metric("time_s")().value({"time_s": 2.0}) == 2.0
    assert math.isnan(get_metric("gpu_time_s")().value(cell)) and get_metric("gpu_time_s").nan_reason
