"""The gradient guides: the sign of guidance end to end, loading classifiers and CLIP models,
labels, clear errors, and configs/guidance.yaml run through the runner."""

import json

import pytest
import torch
from PIL import Image

from bench.data import Sample
from bench.diffusion.guidance import ClassifierGuide, ClipGuide, guided_sample, load_classifier, load_clip
from bench.errors import ConfigError, SampleError
from bench.execution.config import load_config
from bench.execution.runner import Runner
from bench.paths import repo_root
from bench.registry import get_method
from bench.store import Store
from tests.test_guidance_nets import FACTORY, tiny_classifier, tiny_clip_folder

CPU = torch.device("cpu")


def samples(image):
    """Samples on one source, differing in target prompt and label."""
    return [Sample(f"s{i}", image, "a photo", p, class_label=i) for i, p in enumerate(("a red car", "a castle"))]


def final_scores(backbone, image, guide, measure, scales, t0=1.0, seeds=(0, 1)) -> torch.Tensor:
    """measure(final image) per (sample, seed) and scale: (cases, len(scales))."""
    rows = []
    for sample in samples(image):
        for seed in seeds:
            row = []
            for scale in scales:
                setting = {"w": 0.0, "steps": 3, "t0": t0, "scale": scale}
                final = guided_sample(backbone, sample, setting, torch.Generator().manual_seed(seed), guide).image
                with torch.no_grad():
                    row.append(measure.score(final, sample, torch.Generator()).item())
            rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


# The tiny backbone's untrained decoder barely depends on its latent, so gradients of image
# scores are small: these scales are still in the first-order regime (the gain is linear in s).
def test_classifier_guidance_raises_the_log_probability_of_the_label(backbone, image):
    guide = ClassifierGuide(tiny_classifier(), "", untrained=True)
    scores = final_scores(backbone, image, guide, guide, (0.0, 1e3, -1e3))
    gain = (scores[:, 1:] - scores[:, :1]).mean(0)
    assert gain[0] > 0 > gain[1], gain  # and a negative scale descends: the sign is the gradient's


def test_clip_text_guidance_raises_the_similarity_to_the_prompt(backbone, image):
    clip = load_clip(tiny_clip_folder(), False, CPU)
    scores = final_scores(backbone, image, ClipGuide(clip, cutouts=2), ClipGuide(clip, cutouts=0), (0.0, 1e2))
    assert (scores[:, 1] - scores[:, 0]).mean() > 0


def test_clip_image_guidance_raises_the_similarity_to_the_reference(backbone, image):
    clip = load_clip(tiny_clip_folder(), False, CPU)
    g = torch.Generator().manual_seed(5)
    reference = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4, generator=g), size=128, mode="nearest")
    guide, measure = ClipGuide(clip, 2, reference), ClipGuide(clip, 0, reference)
    scores = final_scores(backbone, image, guide, measure, (0.0, 1e2), t0=0.75)
    assert (scores[:, 1] - scores[:, 0]).mean() > 0


def test_methods_run_guided_cells_and_label_untrained_guides(backbone, image, tmp_path):
    path = tmp_path / "ref.png"
    Image.fromarray((torch.rand(64, 48, 3).numpy() * 255).astype("uint8")).save(path)
    sample = samples(image)[0]
    for name, params, labels in [
        ("classifier_guidance", {"classifier": FACTORY, "untrained": True, "label": "espresso"},
         ["untrained classifier (smoke numbers)"]),
        ("clip_guidance", {"clip_model": tiny_clip_folder(), "reference": str(path)}, []),
        ("clip_guidance", {"clip_model": tiny_clip_folder(), "w": 3.0, "t0": 0.5, "cutouts": 0}, []),
    ]:  # fmt: skip
        method = get_method(name)()
        setting = method.resolve({**params, "steps": 4, "scale": 10.0})
        result = method.edit(backbone, sample, None, setting, torch.Generator().manual_seed(0))
        assert result.image.shape == (1, 3, 128, 128) and torch.isfinite(result.image).all()
        assert result.grad_evals == int(4 * setting["t0"])
        assert result.labels == labels


def test_labels_by_index_or_imagenet_name(image):
    method = get_method("classifier_guidance")
    assert method.resolve({"label": 281, "classifier": FACTORY})["label"] == "281"
    resnet = load_classifier("resnet18", True, CPU)  # untrained, but torchvision's ImageNet names offline
    sample = Sample("x", image, "a cat", class_label="Tabby")
    assert ClassifierGuide(resnet, "", untrained=True).target(sample, 1000) == 281
    assert ClassifierGuide(resnet, "967", untrained=True).target(sample, 1000) == 967
    with pytest.raises(SampleError, match="did you mean 'tabby'"):
        ClassifierGuide(resnet, "tabbby", untrained=True).target(sample, 1000)
    with pytest.raises(SampleError, match="out of range"):
        ClassifierGuide(resnet, "1000", untrained=True).target(sample, 1000)
    with pytest.raises(SampleError, match="sample 'x': has no class_label"):
        ClassifierGuide(resnet, "", untrained=True).target(Sample("x", image, "a cat"), 1000)
    method = get_method("classifier_guidance")
    no_label = Sample("x", image, "a cat")
    assert method.missing(no_label, method.resolve({"classifier": FACTORY})) == ["class_label"]
    assert method.missing(no_label, method.resolve({"classifier": FACTORY, "label": 3})) == []
    assert method.missing(sample, method.resolve({"classifier": FACTORY})) == []


def test_classifier_errors_name_the_problem(monkeypatch, tmp_path):
    method = get_method("classifier_guidance")
    with pytest.raises(ConfigError, match="did you mean 'resnet50'"):
        method.resolve({"classifier": "resnet5O"})
    with pytest.raises(ConfigError, match="cannot import 'nothing' from module 'tests.test_guidance_nets'"):
        method.resolve({"classifier": "tests.test_guidance_nets:nothing"})
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match=r"resnet18-[0-9a-f]+\.pth are not on disk.*untrained: true"):
        method.resolve({"classifier": "resnet18"})
    assert method.resolve({"classifier": "resnet18", "untrained": True})["untrained"] is True


def test_clip_errors_name_the_problem(backbone, image):
    method = get_method("clip_guidance")
    with pytest.raises(ConfigError, match="reference image 'no/such.png' is not a file"):
        method.resolve({"reference": "no/such.png"})
    with pytest.raises(ConfigError, match=r"(?s)clip_model 'no-such-org/no-such-clip': no local weights.*untrained: true"):
        method.check_backbone(method.resolve({"clip_model": "no-such-org/no-such-clip"}), backbone)
    with pytest.raises(ConfigError, match="untrained: true rebuilds only openai/clip-vit-large-patch14"):
        method.check_backbone(method.resolve({"clip_model": "no-such-org/no-such-clip", "untrained": True}), backbone)
    guide = ClipGuide(load_clip(tiny_clip_folder(), False, CPU), 0)
    with pytest.raises(SampleError, match="needs a target prompt"):
        guide.target(Sample("x", image, "a cat"))


def test_guidance_config_sweeps_the_scales_and_asks_for_untrained_guides():
    config = load_config(repo_root() / "configs" / "guidance.yaml")
    assert [s["w"] for s in config.settings["cfg"]] == [0, 1, 2, 4, 7.5, 12]
    for name in ("classifier_guidance", "clip_guidance"):
        assert len({s["scale"] for s in config.settings[name]}) >= 4
        assert all(s["untrained"] for s in config.settings[name])


def run_guidance_config(backbone, run_dir, overrides):
    """configs/guidance.yaml on two bundled samples, one seed, two steps, two settings per method."""
    overrides = ["dataset.limit=2", "seeds=0", "metrics=psnr", "cfg.w=0,7.5", "cfg.steps=2", "classifier_guidance.steps=2",
                 "classifier_guidance.scale=0,1000", "clip_guidance.steps=2", "clip_guidance.scale=0,100", *overrides]
    run_dir.mkdir()
    counts = Runner(load_config(repo_root() / "configs" / "guidance.yaml", overrides), run_dir, backbone=backbone,
                    progress=False).run()  # fmt: skip
    store = Store(run_dir)
    cells = store.cells_frame()
    skipped = cells[cells.status == "skipped"]
    # the first bundled sample (astronaut) has no class label: its classifier cells are skipped, saying so
    assert list(skipped.method) == ["classifier_guidance"] * 2 and skipped.error.str.contains("lacks class_label").all()
    assert counts["ok"] == 2 * 6 - 2 and counts["failed"] == 0
    for _, cell in cells[cells.status == "ok"].iterrows():
        scale = json.loads(cell.setting).get("scale", 0)
        assert (cell.grad_evals > 0) == (scale > 0), cell.to_dict()
    return store.info("labels")


def test_guidance_config_runs_with_tiny_guides(backbone, tmp_path):
    overrides = [f"classifier_guidance.classifier={FACTORY}", f"clip_guidance.clip_model={tiny_clip_folder()}",
                 "clip_guidance.untrained=false"]  # fmt: skip
    labels = run_guidance_config(backbone, tmp_path / "run", overrides)
    assert "untrained classifier (smoke numbers)" in labels and "untrained CLIP guide (smoke numbers)" not in labels


@pytest.mark.slow
def test_guidance_config_runs_as_shipped(backbone, tmp_path):
    """Untrained ResNet-18 and CLIP ViT-B/32 at full size, as the shipped config asks."""
    labels = run_guidance_config(backbone, tmp_path / "run", [])
    assert "untrained classifier (smoke numbers)" in labels and "untrained CLIP guide (smoke numbers)" in labels
