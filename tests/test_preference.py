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
