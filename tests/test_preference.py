"""Learned preference metrics: PickScore as its authors' inference code computes it, on a tiny
CLIP saved as a local folder (the same loading path as yuvalkirstain/PickScore_v1)."""

import pytest
import torch
import torch.nn.functional as F

from bench.data import Sample
from bench.metrics import get_metric
from bench.metrics.extractors import Extractors, MetricOptions
from tests.test_guidance_nets import tiny_clip_folder


def authors_pickscore(folder: str, pictures, prompt: str) -> torch.Tensor:
    """PickScore's published inference: PIL images and the prompt through the processor,
    normalised embeddings, ``logit_scale.exp() * text @ image.T``."""
    from transformers import CLIPModel, CLIPProcessor

    model, processor = CLIPModel.from_pretrained(folder).eval(), CLIPProcessor.from_pretrained(folder)
    with torch.no_grad():
        image = model.get_image_features(**processor(images=pictures, return_tensors="pt")).pooler_output
        text = model.get_text_features(**processor(text=prompt, padding=True, truncation=True, max_length=77,
                                                   return_tensors="pt")).pooler_output  # fmt: skip
        image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
        return (model.logit_scale.exp() * (text @ image.T))[0]


def test_pickscore_equals_the_authors_inference():
    from PIL import Image

    folder = tiny_clip_folder()
    options = MetricOptions(pickscore_model=folder, pickscore_processor=folder)
    metric = get_metric("pickscore")()
    metric.load(Extractors(options))
    g = torch.Generator().manual_seed(3)
    edited = torch.rand(3, 3, 32, 32, generator=g)
    pixels = (edited * 255).round().to(torch.uint8)
    edited = pixels.float() / 255  # what the worker scores: the saved PNG's pixels
    samples = [Sample(f"s{i}", torch.zeros(3, 32, 32), "a cat", "a photo of a dog") for i in range(3)]
    ours = metric(edited, torch.zeros_like(edited), samples)
    pictures = [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in pixels]
    torch.testing.assert_close(ours, authors_pickscore(folder, pictures, "a photo of a dog").double(), atol=1e-4, rtol=1e-4)


def test_pickscore_without_target_prompt_is_nan():
    folder = tiny_clip_folder()
    metric = get_metric("pickscore")()
    metric.load(Extractors(MetricOptions(pickscore_model=folder, pickscore_processor=folder)))
    edited = torch.rand(2, 3, 32, 32)
    values = metric(edited, edited, [Sample("a", edited[0], "a cat", None), Sample("b", edited[1], "a cat", "a dog")])
    assert torch.isnan(values[0]) and torch.isfinite(values[1])


def test_pickscore_missing_weights_name_both_ids():
    from bench.metrics.extractors import ExtractorMissing

    metric = get_metric("pickscore")()
    with pytest.raises(ExtractorMissing, match="editbench-test/no-pickscore"):
        metric.load(Extractors(MetricOptions(pickscore_model="editbench-test/no-pickscore")))


@pytest.mark.slow
def test_untrained_pickscore_has_clip_h_architecture():
    extractors = Extractors(MetricOptions(untrained_extractors=True))
    model, _ = extractors.pickscore("pickscore")
    assert model.config.vision_config.hidden_size == 1280 and model.config.text_config.hidden_size == 1024
    assert model.config.projection_dim == 1024 and model.config.vision_config.num_hidden_layers == 32
    assert any("PickScore" in label for label in extractors.labels())


# -- HPS v2.1 on a tiny OpenCLIP architecture --------------------------------------------------
TINY_OPENCLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16,
                 "patch_size": 8}, "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                 "layers": 2}}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_hps(tmp_path_factory):
    """A tiny OpenCLIP architecture registered with open_clip and a checkpoint in the authors'
    format (``{"state_dict": ...}``) with weights unlike a fresh seeded build."""
    import json

    import open_clip

    folder = tmp_path_factory.mktemp("hps")
    (folder / "editbench-tiny-openclip.json").write_text(json.dumps(TINY_OPENCLIP))
    open_clip.add_model_config(folder / "editbench-tiny-openclip.json")
    torch.manual_seed(5)
    model = open_clip.create_model("editbench-tiny-openclip", pretrained=None)
    torch.save({"state_dict": model.state_dict()}, folder / "HPS_tiny.pt")
    return "editbench-tiny-openclip", str(folder / "HPS_tiny.pt"), model.eval()


def test_hps_loads_the_checkpoint_and_scores_as_hpsv2(tiny_hps):
    import open_clip
    from PIL import Image
    from torchvision import transforms

    architecture, checkpoint, reference = tiny_hps
    metric = get_metric("hps_v21")()
    metric.load(Extractors(MetricOptions(hps_architecture=architecture, hps_checkpoint=checkpoint)))
    torch.testing.assert_close(metric.model.state_dict()["text_projection"], reference.state_dict()["text_projection"])
    g = torch.Generator().manual_seed(1)
    pixels = (torch.rand(2, 3, 40, 48, generator=g) * 255).round().to(torch.uint8)  # not square: padded
    samples = [Sample(f"s{i}", torch.zeros(3, 40, 48), "a cat", "a photo of a dog") for i in range(2)]
    ours = metric(pixels.float() / 255, torch.zeros(2, 3, 40, 48), samples)

    def resize_max(image):  # hpsv2's ResizeMaxSize(32) of its evaluation transform
        new = [round(d * 32 / max(image.shape[1:])) for d in image.shape[1:]]
        image = transforms.functional.resize(image, new, transforms.InterpolationMode.BICUBIC, antialias=False)
        pad_h, pad_w = 32 - new[0], 32 - new[1]
        return transforms.functional.pad(image, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2])

    preprocess = transforms.Compose([transforms.ToTensor(), resize_max, transforms.Normalize(
        (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])  # fmt: skip
    image = torch.stack([preprocess(Image.fromarray(p.permute(1, 2, 0).numpy())) for p in pixels])
    text = open_clip.get_tokenizer(architecture)(["a photo of a dog"] * 2)
    with torch.no_grad():
        out = open_clip.create_model(architecture, pretrained=None, output_dict=True)
        out.load_state_dict(torch.load(checkpoint, weights_only=True)["state_dict"])
        features = out.eval()(image, text)
    expected = torch.diagonal(features["image_features"] @ features["text_features"].T)
    torch.testing.assert_close(ours, expected.double(), atol=1e-5, rtol=1e-5)


def test_hps_missing_checkpoint_names_the_file_and_the_hub_cache(tiny_hps):
    from bench.metrics.extractors import ExtractorMissing

    metric = get_metric("hps_v21")()
    with pytest.raises(ExtractorMissing, match="(?s)xswu/HPSv2.*HPS_v2.1_compressed.pt.*hps_checkpoint"):
        metric.load(Extractors(MetricOptions(hps_architecture=tiny_hps[0])))


@pytest.mark.slow
def test_untrained_hps_is_vit_h_14_and_labelled():
    extractors = Extractors(MetricOptions(untrained_extractors=True))
    model, _ = extractors.hps("hps_v21")
    assert model.visual.image_size in (224, (224, 224)) and model.text_projection.shape == (1024, 1024)
    assert any("HPS ViT-H-14" in label for label in extractors.labels())
