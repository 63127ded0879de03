"""Learned preference metrics: PickScore as its authors' inference code computes it, on a tiny
CLIP saved as a local folder (the same loading path as yuvalkirstain/PickScore_v1)."""

import pytest
import torch
import torch.nn.functional as F

from bench.data import Sample
from bench.metrics import get_metric
from bench.metrics import MetricOptions
from bench.metrics.extractors import Extractors
from tests.helpers import TINY_VOCAB, tiny_bert_tokenizer, tiny_openclip
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
    from bench.metrics.offline import ExtractorMissing

    metric = get_metric("pickscore")()
    with pytest.raises(ExtractorMissing, match="editbench-test/no-pickscore"):
        metric.load(Extractors(MetricOptions(pickscore_model="editbench-test/no-pickscore")))


@pytest.mark.slow
def test_untrained_pickscore_has_clip_h_architecture():
    extractors = Extractors(MetricOptions(untrained_extractors=True))
    metric = get_metric("pickscore")()
    metric.load(extractors)
    model = metric.model
    assert model.config.vision_config.hidden_size == 1280 and model.config.text_config.hidden_size == 1024
    assert model.config.projection_dim == 1024 and model.config.vision_config.num_hidden_layers == 32
    assert any("PickScore" in label for label in extractors.labels())


# -- HPS v2.1 on a tiny OpenCLIP architecture --------------------------------------------------

@pytest.fixture(scope="module")
def tiny_hps(tmp_path_factory):
    """A tiny OpenCLIP architecture registered with open_clip and a checkpoint in the authors'
    format (``{"state_dict": ...}``) with weights unlike a fresh seeded build."""
    import open_clip

    folder = tmp_path_factory.mktemp("hps")
    architecture = tiny_openclip(folder)
    torch.manual_seed(5)
    model = open_clip.create_model(architecture, pretrained=None)
    torch.save({"state_dict": model.state_dict()}, folder / "HPS_tiny.pt")
    return architecture, str(folder / "HPS_tiny.pt"), model.eval()


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
    from bench.metrics.offline import ExtractorMissing

    metric = get_metric("hps_v21")()
    with pytest.raises(ExtractorMissing, match="(?s)xswu/HPSv2.*HPS_v2.1_compressed.pt.*hps_checkpoint"):
        metric.load(Extractors(MetricOptions(hps_architecture=tiny_hps[0])))


@pytest.mark.slow
def test_untrained_hps_is_vit_h_14_and_labelled():
    extractors = Extractors(MetricOptions(untrained_extractors=True))
    metric = get_metric("hps_v21")()
    metric.load(extractors)
    model = metric.model
    assert model.visual.image_size in (224, (224, 224)) and model.text_projection.shape == (1024, 1024)
    assert any("HPS ViT-H-14" in label for label in extractors.labels())


# -- ImageReward on a tiny BLIP, against the authors' package -------------------------------------
TINY_MED = {"architectures": ["BertModel"], "hidden_size": 768, "num_hidden_layers": 1, "num_attention_heads": 12,
            "intermediate_size": 128, "max_position_embeddings": 64, "layer_norm_eps": 1e-12, "hidden_act": "gelu",
            "vocab_size": len(TINY_VOCAB) + 2, "pad_token_id": 0, "type_vocab_size": 2, "model_type": "bert",
            "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "encoder_width": 128,
            "add_cross_attention": True}  # fmt: skip  # 768: the package's reward head is MLP(768)


def authors_image_reward_modules(monkeypatch, tokenizer_folder):
    """The ``image-reward`` package's own model modules, importable under transformers 5.

    Installed without its dependencies (it pins timm 0.6.13). Its ``__init__`` chain (ReFL,
    CLIP and aesthetic scorers) is bypassed by importing the model files directly; the shim
    supplies what transformers 5 removed (``apply_chunking_to_forward``,
    ``find_pruneable_heads_and_indices``, ``prune_linear_layer`` at their old place,
    ``get_head_mask``, ``invert_attention_mask`` and ``init_weights``, in their transformers 4
    definitions for the no-head-mask, no-chunking case ImageReward uses), a stub for fairscale's
    gradient-checkpoint wrapper (unused at inference) and ``bert-base-uncased`` from the tiny folder
    (with the special-token ids under their transformers 4 name)."""
    import importlib
    import importlib.util
    import sys
    import types

    import transformers.modeling_utils
    import transformers.pytorch_utils

    spec = importlib.util.find_spec("ImageReward")
    if spec is None:
        pytest.skip("image-reward is not installed (scripts/setup.sh installs it without its pinned deps)")
    root = spec.submodule_search_locations[0]
    for name in [m for m in sys.modules if m.startswith("ImageReward.")]:
        monkeypatch.delitem(sys.modules, name)
    for name in ("ImageReward", "ImageReward.models", "ImageReward.models.BLIP"):
        sub = name.removeprefix("ImageReward").replace(".", "/")
        package = types.ModuleType(name)
        package.__path__ = [root + sub]
        monkeypatch.setitem(sys.modules, name, package)
    wrapper = types.ModuleType("fairscale.nn.checkpoint.checkpoint_activations")
    wrapper.checkpoint_wrapper = lambda module, **kwargs: module
    for name in ("fairscale", "fairscale.nn", "fairscale.nn.checkpoint"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, wrapper.__name__, wrapper)
    for name in ("apply_chunking_to_forward", "prune_linear_layer"):
        monkeypatch.setattr(transformers.modeling_utils, name, getattr(transformers.pytorch_utils, name), raising=False)
    monkeypatch.setattr(transformers.modeling_utils, "find_pruneable_heads_and_indices", None, raising=False)
    med = importlib.import_module("ImageReward.models.BLIP.med")
    blip = importlib.import_module("ImageReward.models.BLIP.blip")
    monkeypatch.setattr(med.BertModel, "get_head_mask", lambda self, mask, layers: [None] * layers, raising=False)
    monkeypatch.setattr(med.BertModel, "invert_attention_mask", lambda self, mask: (
        1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min, raising=False)  # fmt: skip
    monkeypatch.setattr(med.BertPreTrainedModel, "init_weights", lambda self: self.apply(self._init_weights))
    bert = blip.BertTokenizer

    class TinyBert(bert):
        @classmethod
        def from_pretrained(cls, name, *args, **kwargs):
            assert name == "bert-base-uncased"
            return super().from_pretrained(tokenizer_folder)

        @property
        def additional_special_tokens_ids(self):  # transformers 5's name: extra_special_tokens
            return self.extra_special_tokens_ids

    monkeypatch.setattr(blip, "BertTokenizer", TinyBert)
    return importlib.import_module("ImageReward.ImageReward"), importlib.import_module(
        "ImageReward.models.BLIP.blip_pretrain"), importlib.import_module("ImageReward.models.BLIP.vit")  # fmt: skip


@pytest.fixture
def tiny_image_reward(tmp_path, monkeypatch):
    """The package's ``ImageReward`` built on a shrunk ViT (width 128, 2 blocks) and BERT (1 layer),
    seeded and perturbed, saved as ``ImageReward.pt`` + ``med_config.json`` + a BERT tokenizer."""
    import json

    tokenizer = tiny_bert_tokenizer(tmp_path)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "med_config.json").write_text(json.dumps(TINY_MED))
    package, pretrain, vit = authors_image_reward_modules(monkeypatch, tokenizer)

    def tiny_vit(kind, image_size, *args):  # the package builds only ViT-B/L; same class, smaller
        return vit.VisionTransformer(img_size=image_size, patch_size=16, embed_dim=128, depth=2, num_heads=2), 128

    monkeypatch.setattr(pretrain, "create_vit", tiny_vit)
    torch.manual_seed(11)
    reference = package.ImageReward(med_config=str(tmp_path / "model" / "med_config.json")).eval()
    with torch.no_grad():
        for parameter in reference.parameters():  # away from the init (zero biases, unit norms)
            parameter.add_(0.05 * torch.randn_like(parameter))
    torch.save(reference.state_dict(), tmp_path / "model" / "ImageReward.pt")
    return str(tmp_path / "model"), tokenizer, reference


def test_image_reward_equals_the_packages_score(tiny_image_reward):
    from PIL import Image

    folder, tokenizer, reference = tiny_image_reward
    metric = get_metric("image_reward")()
    metric.load(Extractors(MetricOptions(image_reward_model=folder, image_reward_tokenizer=tokenizer)))
    g = torch.Generator().manual_seed(2)
    pixels = (torch.rand(2, 3, 40, 48, generator=g) * 255).round().to(torch.uint8)  # not square: cropped
    prompts = ["a photo of a red dog", "a cats"]
    samples = [Sample(f"s{i}", torch.zeros(3, 40, 48), "x", p) for i, p in enumerate(prompts)]
    ours = metric(pixels.float() / 255, torch.zeros(2, 3, 40, 48), samples)
    with torch.no_grad():
        expected = [reference.score(p, Image.fromarray(x.permute(1, 2, 0).numpy())) for p, x in zip(prompts, pixels)]
    torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float64), atol=1e-4, rtol=1e-4)
    assert ours[0] != ours[1]


def test_image_reward_missing_or_wrong_files_name_them(tmp_path):
    import json

    from bench.errors import ConfigError
    from bench.metrics.offline import ExtractorMissing

    tokenizer = tiny_bert_tokenizer(tmp_path)
    metric = get_metric("image_reward")()
    missing = "(?s)ImageReward.pt.*editbench-test/no-image-reward.*image_reward_model"
    with pytest.raises(ExtractorMissing, match=missing):
        metric.load(Extractors(MetricOptions(image_reward_model="editbench-test/no-image-reward",
                                             image_reward_tokenizer=tokenizer)))  # fmt: skip
    torch.save({"mlp.layers.0.weight": torch.zeros(1)}, tmp_path / "ImageReward.pt")
    (tmp_path / "med_config.json").write_text(json.dumps(TINY_MED))
    with pytest.raises(ConfigError, match="ImageReward.pt: not an ImageReward checkpoint"):
        options = MetricOptions(image_reward_model=str(tmp_path), image_reward_tokenizer=tokenizer)
        metric.load(Extractors(options))
    with pytest.raises(ExtractorMissing, match="BERT tokenizer 'editbench-test/no-bert'"):
        metric.load(Extractors(MetricOptions(image_reward_tokenizer="editbench-test/no-bert")))


@pytest.mark.slow
def test_untrained_image_reward_is_vit_l_and_bert_base_and_labelled(tmp_path):
    options = MetricOptions(untrained_extractors=True, image_reward_tokenizer=tiny_bert_tokenizer(tmp_path))
    extractors = Extractors(options)
    metric = get_metric("image_reward")()
    metric.load(extractors)
    model = metric.model
    assert model.vision.config.hidden_size == 1024 and model.vision.config.num_hidden_layers == 24
    assert model.text.config.hidden_size == 768 and model.text.config.encoder_hidden_size == 1024
    assert any("ImageReward" in label for label in extractors.labels())
