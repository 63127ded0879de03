"""One scoring path: ``score_images`` scores per-image metrics in batches of
``metric_options.batch_size`` for the worker (the cells of one edited batch) and for
``editbench score``; values equal scoring each image alone, notes stay per image, and a metric
that fails on one image fails that image's cell only."""

import pytest
import torch

from bench.data import Sample
from bench.metrics import METRICS, ImageMetric, get_metric
from bench.metrics.image_scores import score_images
from tests.helpers import read_cells, run_config


class _Recording(ImageMetric):
    """The mean pixel difference; records the sample ids of every call, leaves a note per image,
    and raises on a batch holding a sample whose id is in ``cursed``."""

    name = "test_recording"
    higher_is_better = False
    calls: list[list[str]] = []
    cursed: set[str] = set()

    def compute(self, edited, source, samples):
        ids = [s.id for s in samples]
        type(self).calls.append(ids)
        if self.cursed & set(ids):
            raise RuntimeError(f"{sorted(self.cursed & set(ids))} is cursed")
        self.notes = [f"note of {i}" for i in ids]
        return (edited - source).abs().mean(dim=(1, 2, 3))


@pytest.fixture
def recording(monkeypatch):
    monkeypatch.setitem(METRICS, _Recording.name, _Recording)
    monkeypatch.setattr(_Recording, "calls", [])
    monkeypatch.setattr(_Recording, "cursed", set())
    return _Recording


def images(n: int, size=(16, 16), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, *size, generator=g) for _ in range(n)]


def samples(n: int, size=(16, 16)):
    mask = torch.zeros(1, *size)
    mask[..., : size[0] // 2, :] = 1
    return [Sample(f"s{i}", torch.zeros(3, *size), "a cat", "a dog", mask=mask) for i in range(n)]


def test_batches_of_one_size_and_batch_size_give_the_values_of_one_by_one(recording):
    edited = images(3) + images(2, (16, 24), seed=1)
    sources = images(3, seed=2) + images(2, (16, 24), seed=3)
    batch = samples(3) + samples(2, (16, 24))
    metrics = [get_metric(name)() for name in ("psnr", "ssim", "mse_bg_masked", "test_recording")]
    scores = score_images(metrics, edited, sources, batch, batch_size=2)
    assert recording.calls == [["s0", "s1"], ["s2"], ["s0", "s1"]]  # sizes apart, at most 2 per call
    for i, score in enumerate(scores):
        alone = score_images(metrics, edited[i : i + 1], sources[i : i + 1], batch[i : i + 1], batch_size=1)[0]
        assert score.values == alone.values and score.error is None  # exact: these metrics are per image
        assert score.notes == {"test_recording": f"note of s{i % 3}"}


def test_a_failing_image_carries_the_error_alone_and_later_metrics_skip_it(recording):
    recording.cursed = {"s1"}
    metrics = [get_metric("test_recording")(), get_metric("mse")()]
    scores = score_images(metrics, images(3), images(3, seed=1), samples(3), batch_size=3)
    assert recording.calls == [["s0", "s1", "s2"], ["s0"], ["s1"], ["s2"]]
    assert "cursed" in str(scores[1].error) and scores[1].values == {}
    assert all(scores[i].error is None and set(scores[i].values) == {"test_recording", "mse"} for i in (0, 2))


def test_set_and_cost_metrics_are_left_out():
    scores = score_images([get_metric("nfe")(), get_metric("psnr")()], images(1), images(1, seed=1), samples(1), 4)
    assert set(scores[0].values) == {"psnr"}


def test_the_worker_scores_the_cells_of_a_batch_together(tmp_path, recording, backbone):
    """An edited batch of 3 cells, metric batch size 2: calls of 2 and 1 images (the first,
    raising, repeated one by one); the cell the metric fails on fails alone with its error (the
    edit batch is not re-run: every cell keeps batch size 3), the others keep values and notes."""
    from bench.execution.runner import Runner

    recording.cursed = {"img1"}
    config = run_config(tmp_path, {"reconstruct": {}}, n=3, batch_size=3, metrics=["mse", "test_recording"],
                        metric_options={"batch_size": 2})  # fmt: skip
    (tmp_path / "run").mkdir()
    runner = Runner(config, tmp_path / "run", backbone=backbone, progress=False)
    runner.write_manifest()
    counts = runner.run()
    runner.store.close()
    assert recording.calls == [["img0", "img1"], ["img0"], ["img1"], ["img2"]]
    cells = read_cells(tmp_path / "run").set_index("sample_id")
    assert counts["ok"] == 2 and cells.loc["img1", "status"] == "failed" and (cells.batch_size == 3).all()
    assert "RuntimeError: ['img1'] is cursed" in cells.loc["img1", "error"]
    assert cells.loc["img2", "note.test_recording"] == "note of img2"
    assert cells.loc[["img0", "img2"], "metric.mse"].gt(0).all()
