"""Ground-truth and input-similarity metrics (MagicBrush, Emu Edit) against their reference
implementations: torch's losses on ``ToTensor`` images, MagicBrush's torchvision DINO pipeline,
OpenAI's CLIP preprocessing written in torchvision, and torchmetrics' CLIPScore."""

import pytest
import torch
from PIL import Image
from torchvision import transforms

from bench.data import Sample
from bench.metrics import MetricOptions
from bench.metrics.extractors import Extractors
from tests.test_metrics_reference import H, metric, pair, tiny_clip, tiny_vit, torchmetrics_clip_score  # noqa: F401

OPENAI_MEAN, OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def with_truth(targets, captions=None) -> list[Sample]:
    captions = captions or [None] * len(targets)
    return [Sample(f"s{i}", torch.zeros(3, H, H), "a cat", "a dog", target_image=t, output_caption=c)
            for i, (t, c) in enumerate(zip(targets, captions))]  # fmt: skip


def pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray((image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())


def test_l1_l2_equal_torch_losses_on_totensor_images():
    source, edited = pair(1, n=2)
    truth, _ = pair(2, n=2)
    ex = Extractors(MetricOptions())
    batch = with_truth([truth[0], None])
    l1, l2 = metric("l1_gt", ex)(edited, source, batch), metric("l2_gt", ex)(edited, source, batch)
    to_tensor = transforms.ToTensor()
    gen, gt = to_tensor(pil(edited[0])), to_tensor(pil(truth[0]))
    assert l1[0].item() == pytest.approx(torch.nn.L1Loss()(gen, gt).item(), abs=1e-7)
    assert l2[0].item() == pytest.approx(torch.nn.MSELoss()(gen, gt).item(), abs=1e-7)
    assert torch.isnan(l1[1]) and torch.isnan(l2[1]), "no ground truth: NaN, never a distance to something else"
    l1_input = metric("l1_input", ex)(edited, source, batch)
    assert l1_input[1].item() == pytest.approx(torch.nn.L1Loss()(to_tensor(pil(edited[1])), to_tensor(pil(source[1]))).item(), abs=1e-7)
    assert l1_input[0].item() != pytest.approx(l1[0].item()), "to the input and to the ground truth differ"


def test_l1_l2_resize_the_edit_to_the_ground_truths_own_size_as_magicbrush_does(tiny_vit):  # noqa: F811
    """MagicBrush's ``eval_distance``: ``gen_img.resize(gt_img.size)`` (PIL's default filter), ``ToTensor``,
    torch's losses; the similarity metrics embed the ground truth at its own size."""
    source, edited = pair(7, n=1)
    original, _ = pair(8, n=1, size=96)
    original = original[:, :, :80]  # 80 high, 96 wide: not the run's square
    sample = with_truth([torch.zeros(3, H, H)])[0]
    sample.target_original = original[0]
    ex = Extractors(MetricOptions(similarity_dino_model=tiny_vit))
    to_tensor = transforms.ToTensor()
    gt = pil(original[0])
    gen = to_tensor(pil(edited[0]).resize(gt.size))
    assert metric("l1_gt", ex)(edited, source, [sample])[0].item() == pytest.approx(
        torch.nn.L1Loss()(gen, to_tensor(gt)).item(), abs=1e-7)
    assert metric("l2_gt", ex)(edited, source, [sample])[0].item() == pytest.approx(
        torch.nn.MSELoss()(gen, to_tensor(gt)).item(), abs=1e-7)
    same = with_truth([original[0]])[0]
    same.target_original = original[0]
    assert metric("dino_gt", ex)(original, original, [same])[0].item() == pytest.approx(1.0, abs=1e-5)


def test_dino_metrics_equal_magicbrush_pipeline(tiny_vit):  # noqa: F811
    from transformers import ViTModel

    ex = Extractors(MetricOptions(similarity_dino_model=tiny_vit))
    source, edited = pair(3, n=2)
    truth, _ = pair(4, n=2)
    batch = with_truth([truth[0], truth[1]])
    ours_gt, ours_input = metric("dino_gt", ex)(edited, source, batch), metric("dino_input", ex)(edited, source, batch)
    model = ViTModel.from_pretrained(tiny_vit, add_pooling_layer=False).eval()
    magicbrush = transforms.Compose([transforms.Resize(256, interpolation=3), transforms.CenterCrop(224),
                                     transforms.ToTensor(), transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])  # fmt: skip

    def features(image):
        with torch.no_grad():
            return model(pixel_values=magicbrush(pil(image))[None]).last_hidden_state[0, 0]

    for i in range(2):
        cos = torch.nn.functional.cosine_similarity
        assert ours_gt[i].item() == pytest.approx(cos(features(edited[i]), features(truth[i]), dim=0).item(), abs=1e-5)
        assert ours_input[i].item() == pytest.approx(cos(features(edited[i]), features(source[i]), dim=0).item(), abs=1e-5)
    assert metric("dino_gt", ex)(source, source, with_truth([source[0], source[1]])).tolist() == pytest.approx([1, 1])


def test_clip_image_and_text_metrics_equal_openai_preprocessing_and_clipscore(tiny_clip):  # noqa: F811
    from transformers import CLIPModel

    ex = Extractors(MetricOptions(similarity_clip_model=tiny_clip))
    source, edited = pair(5, n=2)
    truth, _ = pair(6, n=2)
    batch = with_truth([truth[0], None], captions=["a red car", None])
    clip_i = metric("clip_i_gt", ex)(edited, source, batch)
    clip_t = metric("clip_t", ex)(edited, source, batch)
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    openai = transforms.Compose([transforms.Resize(32, interpolation=transforms.InterpolationMode.BICUBIC),
                                 transforms.CenterCrop(32), transforms.ToTensor(), transforms.Normalize(OPENAI_MEAN, OPENAI_STD)])  # fmt: skip
    with torch.no_grad():
        feats = [model.get_image_features(pixel_values=openai(pil(x))[None]).pooler_output[0] for x in (edited[0], truth[0])]
    expected = torch.nn.functional.cosine_similarity(feats[0], feats[1], dim=0).item()
    assert clip_i[0].item() == pytest.approx(expected, abs=1e-4)
    assert torch.isnan(clip_i[1]) and torch.isnan(clip_t[1])
    reference = torchmetrics_clip_score(tiny_clip)
    score = reference((edited[0] * 255).round().to(torch.uint8), "a red car").item()
    assert 100 * max(clip_t[0].item(), 0) == pytest.approx(score, rel=1e-4, abs=1e-4)


def test_untrained_similarity_extractors_are_labelled():
    ex = Extractors(MetricOptions(untrained_extractors=True, seed=1))
    dino = metric("dino_gt", ex)
    assert dino.model.config.hidden_size == 384 and dino.model.config.patch_size == 16  # DINO ViT-S/16
    assert any("DINO facebook/dino-vits16" in label and "dino_gt" in label for label in ex.labels())


def test_metrics_command_names_models_and_preprocessing():
    from click.testing import CliRunner

    from run_bench import main

    out = CliRunner().invoke(main, ["metrics"]).output
    for name in ("l1_gt", "l2_gt", "clip_i_gt", "dino_gt", "clip_t", "l1_input", "clip_i_input", "dino_input"):
        assert f"\n{name} " in out or out.startswith(f"{name} ")
    assert "openai/clip-vit-base-patch32" in out and "facebook/dino-vits16" in out and "bicubic" in out
