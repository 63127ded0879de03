"""Every metric equals the package (or the published formula) that defines it, on fixed
image pairs. Networks are random but identical on both sides, so equality is exact."""

import math

import numpy as np
import pytest
import torch

from bench.data import Sample
from bench.metrics import get_metric
from bench.metrics import MetricOptions
from bench.metrics.extractors import Extractors

H = 64


def pair(seed: int, n: int = 3, size: int = H) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed source images and edited versions of them, both uint8-exact in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=g)
    source = torch.nn.functional.interpolate(low, size=size, mode="bilinear", align_corners=False)
    edited = (source + 0.15 * torch.randn(source.shape, generator=g)).clamp(0, 1)
    return (source * 255).round() / 255, (edited * 255).round() / 255


def samples(n: int, masks=None, target="a photo of a dog", source="a photo of a cat") -> list[Sample]:
    masks = masks if masks is not None else [None] * n
    return [Sample(f"s{i}", torch.zeros(3, H, H), source, target, masks[i]) for i in range(n)]


def box_mask(x0: int, x1: int, size: int = H) -> torch.Tensor:
    mask = torch.zeros(1, size, size)
    mask[:, x0:x1, x0:x1] = 1
    return mask


def metric(name: str, extractors: Extractors):
    m = get_metric(name)()
    m.load(extractors)
    return m


@pytest.fixture(scope="module")
def untrained():
    return Extractors(MetricOptions(untrained_extractors=True, seed=3))


# -- pixel metrics: torchmetrics for PSNR and MSE, scikit-image for SSIM ---------------------------
def test_psnr_mse_equal_torchmetrics(untrained):
    from torchmetrics import MeanSquaredError
    from torchmetrics.image import PeakSignalNoiseRatio

    source, edited = pair(0)
    ours = {n: metric(n, untrained)(edited, source, samples(3)) for n in ("psnr", "mse")}
    for i in range(3):
        e, s = edited[i : i + 1], source[i : i + 1]
        assert ours["psnr"][i].item() == pytest.approx(PeakSignalNoiseRatio(data_range=1.0)(e, s).item(), rel=1e-6)
        assert ours["mse"][i].item() == pytest.approx(MeanSquaredError()(e.flatten(), s.flatten()).item(), rel=1e-6)


def skimage_ssim(edited: torch.Tensor, source: torch.Tensor) -> float:
    """The PIE-era SSIM of two (3, H, W) images by an independent implementation: scikit-image's,
    Gaussian window (sigma 1.5, truncated at 11 pixels), population covariances, border cropped."""
    from skimage.metrics import structural_similarity

    return structural_similarity(
        edited.permute(1, 2, 0).double().numpy(), source.permute(1, 2, 0).double().numpy(), channel_axis=2,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
    )  # fmt: skip


def natural_pair(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three photos shipped with scikit-image at ``size`` px and degraded copies (blurred, noised)."""
    import skimage.data
    from PIL import Image, ImageFilter

    g = torch.Generator().manual_seed(size)
    sources, edits = [], []
    for name in ("astronaut", "coffee", "chelsea"):
        photo = Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize((size, size), Image.BICUBIC)
        source = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 255).permute(2, 0, 1)
        blurred = np.asarray(photo.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32) / 255
        edited = torch.from_numpy(blurred).permute(2, 0, 1) + 0.03 * torch.randn(source.shape, generator=g)
        sources.append(source)
        edits.append(((edited.clamp(0, 1) * 255).round() / 255).float())
    return torch.stack(sources), torch.stack(edits)


@pytest.mark.parametrize("size", [128, 512])
@pytest.mark.parametrize("kind", ["natural", "random"])
def test_ssim_and_ssim_bg_equal_the_pie_era_definition(size, kind):
    """ssim and ssim_bg equal scikit-image's SSIM with the border cropped (torchmetrics <= 1.4.1,
    PIE-Bench's environment) to 1e-4, whatever torchmetrics is installed: its SSIM is not called."""
    if kind == "natural":
        source, edited = natural_pair(size)
    else:
        g = torch.Generator().manual_seed(size)
        source = (torch.rand(3, 3, size, size, generator=g) * 255).round() / 255
        edited = (torch.rand(3, 3, size, size, generator=g) * 255).round() / 255
    masks = [box_mask(size // 4, size // 2, size), box_mask(size // 8, 7 * size // 8, size), None]
    batch = [Sample(f"s{i}", source[i], "a cat", "a dog", masks[i]) for i in range(3)]
    ours = get_metric("ssim")()(edited, source, batch)
    ours_bg = get_metric("ssim_bg")()(edited, source, batch)
    for i in range(3):
        assert ours[i].item() == pytest.approx(skimage_ssim(edited[i], source[i]), abs=1e-4)
        if masks[i] is not None:
            keep = 1 - masks[i]
            assert ours_bg[i].item() == pytest.approx(skimage_ssim(edited[i] * keep, source[i] * keep), abs=1e-4)
    assert math.isnan(ours_bg[2])


def test_ssim_map_covers_only_positions_where_the_window_fits():
    """Map entry (i, j) is SSIM from the 11x11 Gaussian-weighted window centred on pixel (i + 5, j + 5),
    written out here; the map has no entries for the 5-pixel border."""
    from bench.metrics.pixel import ssim_map

    g = torch.Generator().manual_seed(0)
    source, edited = torch.rand(2, 1, 3, 32, 32, generator=g).double()
    full = ssim_map(edited, source)
    assert full.shape == (1, 3, 22, 22)
    x = torch.arange(11, dtype=torch.float64) - 5
    w1 = torch.exp(-(x**2) / 4.5)
    window = torch.outer(w1, w1) / w1.sum() ** 2
    for i, j in [(0, 0), (21, 3), (10, 21)]:
        e, s = edited[0, :, i : i + 11, j : j + 11], source[0, :, i : i + 11, j : j + 11]
        mu_e, mu_s = (window * e).sum((1, 2)), (window * s).sum((1, 2))
        var_e = (window * (e - mu_e[:, None, None]) ** 2).sum((1, 2))
        var_s = (window * (s - mu_s[:, None, None]) ** 2).sum((1, 2))
        cov = (window * (e - mu_e[:, None, None]) * (s - mu_s[:, None, None])).sum((1, 2))
        c1, c2 = 0.01**2, 0.03**2
        expected = (2 * mu_e * mu_s + c1) * (2 * cov + c2) / ((mu_e**2 + mu_s**2 + c1) * (var_e + var_s + c2))
        torch.testing.assert_close(full[0, :, i, j], expected)
    with pytest.raises(ValueError, match="at least 11x11"):
        get_metric("ssim")()(source[..., :10, :10].float(), source[..., :10, :10].float(), samples(1))


# -- LPIPS: the lpips package, backbone random but seeded identically ------------------------
@pytest.mark.parametrize("net", ["alex", "squeeze"])
def test_lpips_equals_lpips_package(net):
    import lpips

    ex = Extractors(MetricOptions(untrained_extractors=True, seed=5, lpips_net=net))
    source, edited = pair(1)
    ours = metric("lpips", ex)(edited, source, samples(3))
    torch.manual_seed(5)
    reference = lpips.LPIPS(net=net, pnet_rand=True, verbose=False).eval()
    with torch.no_grad():
        expected = reference(edited * 2 - 1, source * 2 - 1).flatten()
        also = reference(edited, source, normalize=True).flatten()  # lpips' own [0, 1] -> [-1, 1]
    torch.testing.assert_close(ours.float(), expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ours.float(), also, rtol=1e-5, atol=1e-7)
    assert (ours > 0).all()


def test_range_mistakes_are_caught_or_converted(untrained):
    """[-1, 1] images where [0, 1] is expected are refused; [0, 1] images given to LPIPS are
    converted to the [-1, 1] it needs (scored as such, not raw)."""
    import lpips

    source, edited = pair(2)
    lp = metric("lpips", untrained)
    for name in ("psnr", "lpips", "clip_score", "ssim_bg"):
        with pytest.raises(ValueError, match=r"must lie in \[0, 1\], got values in \[-1"):
            get_metric(name)()(edited * 2 - 1, source * 2 - 1, samples(3))
    with pytest.raises(ValueError, match="expected floats in \\[0, 1\\], got dtype torch.uint8"):
        lp((edited * 255).to(torch.uint8), (source * 255).to(torch.uint8), samples(3))
    with pytest.raises(ValueError, match=r"got values in \[0, 255\]"):
        lp(edited * 255, source * 255, samples(3))
    with pytest.raises(ValueError, match="edited images: images contain NaN or Inf"):
        lp(torch.full_like(edited, float("nan")), source, samples(3))
    ours = lp(edited, source, samples(3)).float()
    torch.manual_seed(3)
    reference = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    with torch.no_grad():
        unconverted = reference(edited, source).flatten()  # what feeding [0, 1] unconverted would give
        converted = reference(edited * 2 - 1, source * 2 - 1).flatten()
    torch.testing.assert_close(ours, converted, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(ours, unconverted, rtol=1e-3)


# -- PIE-Bench background metrics vs the PIE-Bench formula written out here -----------------
def pie_bench(name: str, edited: np.ndarray, source: np.ndarray, mask: np.ndarray, lpips_net=None) -> float:
    """PIE-Bench's evaluation, per image: uint8 HWC images / 255, both times the unedited-part
    mask (HWC), then torchmetrics' metric over the whole image (SSIM: the torchmetrics <= 1.4.1
    definition PIE-Bench ran, by scikit-image)."""
    from torchmetrics import MeanSquaredError
    from torchmetrics.image import PeakSignalNoiseRatio

    if mask.sum() == 0:
        return float("nan")
    e = torch.tensor(edited.astype(np.float32) / 255 * mask).permute(2, 0, 1)
    s = torch.tensor(source.astype(np.float32) / 255 * mask).permute(2, 0, 1)
    if name == "psnr_bg":
        return PeakSignalNoiseRatio(data_range=1.0)(e[None], s[None]).item()
    if name == "ssim_bg":
        return skimage_ssim(e, s)
    if name == "mse_bg":
        return MeanSquaredError()(e.contiguous(), s.contiguous()).item()
    with torch.no_grad():
        return lpips_net(e[None] * 2 - 1, s[None] * 2 - 1).item()


def to_np(image: torch.Tensor) -> np.ndarray:
    return (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def test_background_pie_form_equals_pie_bench_formula():
    import lpips

    ex = Extractors(MetricOptions(untrained_extractors=True, seed=7))
    source, edited = pair(3)
    masks = [box_mask(16, 48), box_mask(0, H), None]  # partial, everything, no mask
    torch.manual_seed(7)
    squeeze = lpips.LPIPS(net="squeeze", pnet_rand=True, verbose=False).eval()
    for name in ("psnr_bg", "ssim_bg", "mse_bg", "lpips_bg"):
        ours = metric(name, ex)(edited, source, samples(3, masks))
        keep = (1 - masks[0]).permute(1, 2, 0).repeat(1, 1, 3).numpy()
        expected = pie_bench(name, to_np(edited[0]), to_np(source[0]), keep, squeeze)
        assert ours[0].item() == pytest.approx(expected, rel=1e-5, abs=1e-7), name
        assert math.isnan(ours[1]) and math.isnan(ours[2]), f"{name}: NaN when the mask covers all, or is missing"
        assert get_metric(name).nan_reason


def test_background_masked_form_averages_unmasked_pixels_only(untrained):
    source, edited = pair(4, n=2)
    mask = box_mask(8, 40)
    keep = 1 - mask
    inside_changed = edited.clone()
    inside_changed[:, :, 8:40, 8:40] = 1 - inside_changed[:, :, 8:40, 8:40]  # edits inside the mask only
    ours = {n: metric(n, untrained) for n in ("mse_bg_masked", "psnr_bg_masked", "ssim_bg_masked", "lpips_bg_masked")}
    se = (edited - source).pow(2)
    expected_mse = (se * keep).sum(dim=(1, 2, 3)) / (3 * keep.sum())
    torch.testing.assert_close(ours["mse_bg_masked"](edited, source, samples(2, [mask] * 2)).float(), expected_mse)
    torch.testing.assert_close(
        ours["psnr_bg_masked"](edited, source, samples(2, [mask] * 2)).float(), -10 * torch.log10(expected_mse)
    )
    # changing pixels inside the mask changes nothing; the PIE-Bench form is different from the masked mean
    for name, m in ours.items():
        a, b = m(edited, source, samples(2, [mask] * 2)), m(inside_changed, source, samples(2, [mask] * 2))
        if name in ("mse_bg_masked", "psnr_bg_masked"):  # SSIM's window and LPIPS's receptive field cross the edge
            torch.testing.assert_close(a, b, msg=name)
    pie = get_metric("mse_bg")()(edited, source, samples(2, [mask] * 2))
    assert (pie < ours["mse_bg_masked"](edited, source, samples(2, [mask] * 2))).all()
    border_only = torch.ones(1, H, H)
    border_only[:, 3:-3, 3:-3] = 0  # keeps pixels the SSIM map (no 5-pixel border) does not cover
    assert torch.isnan(ours["ssim_bg_masked"](edited, source, samples(2, [1 - border_only] * 2))).all()
    # with nothing masked the SSIM map average is plain SSIM
    empty = samples(2, [torch.zeros(1, H, H)] * 2)
    torch.testing.assert_close(
        ours["ssim_bg_masked"](edited, source, empty), get_metric("ssim")()(edited, source, empty)
    )


# -- CLIP: torchmetrics' CLIPScore with the same tiny CLIP ------------------------------------
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from bench.tokenizer import write_clip_tokenizer_files

    folder = tmp_path_factory.mktemp("tiny-clip")
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
             "projection_dim": 16}  # fmt: skip
    config = CLIPConfig(
        text_config=tower, vision_config={**tower, "patch_size": 8, "image_size": 32}, projection_dim=16
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=CLIPTokenizer.from_pretrained(write_clip_tokenizer_files(tmp_path_factory.mktemp("tok"))),
    )
    processor.save_pretrained(folder)
    return str(folder)


def torchmetrics_clip_score(folder: str):
    """torchmetrics' CLIPScore on the same model; its feature getters need tensors, which
    transformers 5's CLIPModel wraps in model outputs."""
    from torchmetrics.multimodal import CLIPScore
    from transformers import CLIPModel, CLIPProcessor

    class TensorCLIP(CLIPModel):
        def get_image_features(self, *args, **kwargs):
            return super().get_image_features(*args, **kwargs).pooler_output

        def get_text_features(self, *args, **kwargs):
            return super().get_text_features(*args, **kwargs).pooler_output

    return CLIPScore(
        model_name_or_path=lambda: (TensorCLIP.from_pretrained(folder), CLIPProcessor.from_pretrained(folder))
    )


def test_clip_scores_equal_torchmetrics_clipscore(tiny_clip):
    ex = Extractors(MetricOptions(clip_model=tiny_clip))
    source, edited = pair(5, n=2)
    masks = [box_mask(16, 48), box_mask(0, 32)]
    batch = samples(2, masks, target="a red car")
    reference = torchmetrics_clip_score(tiny_clip)
    scores = metric("clip_score", ex)(edited, source, batch)
    edited_scores = metric("clip_score_edited", ex)(edited, source, batch)
    assert not ex.untrained, "a model from a local folder is pretrained, not labelled untrained"
    for i in range(2):
        pixels = (edited[i] * 255).round().to(torch.uint8)
        reference.reset()
        assert scores[i].item() == pytest.approx(reference(pixels, "a red car").item(), rel=1e-4, abs=1e-4)
        reference.reset()
        masked = (pixels * masks[i]).to(torch.uint8)  # PIE-Bench: np.uint8(image * mask)
        assert edited_scores[i].item() == pytest.approx(reference(masked, "a red car").item(), rel=1e-4, abs=1e-4)
    no_target = metric("clip_score", ex)(edited, source, samples(2, target=None))
    assert torch.isnan(no_target).all()


def test_clip_direction_equals_its_formula(tiny_clip):
    from transformers import CLIPModel, CLIPProcessor

    ex = Extractors(MetricOptions(clip_model=tiny_clip))
    source, edited = pair(6, n=2)
    ours = metric("clip_direction", ex)(edited, source, samples(2))
    model, processor = CLIPModel.from_pretrained(tiny_clip).eval(), CLIPProcessor.from_pretrained(tiny_clip)
    with torch.no_grad():

        def img(x):
            pixels = processor(images=[(i * 255).round().to(torch.uint8) for i in x], return_tensors="pt")[
                "pixel_values"
            ]
            f = model.get_image_features(pixel_values=pixels).pooler_output
            return f / f.norm(dim=-1, keepdim=True)

        tokens = processor(text=["a photo of a dog", "a photo of a cat"], return_tensors="pt", padding=True)
        t = model.get_text_features(**tokens).pooler_output
        t = t / t.norm(dim=-1, keepdim=True)
        expected = torch.nn.functional.cosine_similarity(img(edited) - img(source), (t[0] - t[1])[None], dim=-1)
    torch.testing.assert_close(ours.float(), expected, rtol=1e-4, atol=1e-5)
    same = metric("clip_direction", ex)(source, source, samples(2))
    assert torch.isnan(same).all(), "no image direction: undefined, not 0"


# -- structure distance: the PIE-Bench formula on a tiny DINO-shaped ViT -----------------------
@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    from transformers import ViTConfig, ViTModel

    folder = tmp_path_factory.mktemp("tiny-vit")
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                       patch_size=8, image_size=224, qkv_bias=True, layer_norm_eps=1e-6)  # fmt: skip
    torch.manual_seed(0)
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    return str(folder)


def pie_structure_distance(model, edited: torch.Tensor, source: torch.Tensor, antialias: bool) -> torch.Tensor:
    """PIE-Bench's structure distance per image pair, written out: float pixel values 0..255, shorter
    side resized to 224 (bilinear, ``antialias`` as given), ImageNet-normalised, cosine self-similarity
    of the last layer's keys, MSE between source and edited."""
    mean = torch.tensor((0.485, 0.456, 0.406))[:, None, None]
    std = torch.tensor((0.229, 0.224, 0.225))[:, None, None]

    def self_similarity(image):
        h, w = image.shape[-2:]
        size = (224, round(224 * w / h)) if h <= w else (round(224 * h / w), 224)
        resized = torch.nn.functional.interpolate(
            image[None] * 255, size=size, mode="bilinear", align_corners=False, antialias=antialias
        )
        out = model(pixel_values=(resized - mean) / std, output_hidden_states=True, interpolate_pos_encoding=True)
        last = model.layers[-1] if hasattr(model, "layers") else model.encoder.layer[-1]
        attention = last.attention
        key = attention.k_proj if hasattr(attention, "k_proj") else attention.attention.key
        keys = key(last.layernorm_before(out.hidden_states[-2]))[0]  # (tokens, heads * head_dim)
        unit = keys / keys.norm(dim=-1, keepdim=True)
        return unit @ unit.T

    with torch.no_grad():
        return torch.stack(
            [(self_similarity(e) - self_similarity(s)).pow(2).mean() for e, s in zip(edited, source)]
        )


def test_structure_distance_equals_pie_bench_formula(tiny_vit):
    from transformers import ViTModel

    ex = Extractors(MetricOptions(dino_model=tiny_vit))
    source, edited = pair(7, n=2, size=96)
    ours = metric("structure_distance", ex)(edited, source, samples(2))
    model = ViTModel.from_pretrained(tiny_vit, add_pooling_layer=False).eval()
    expected = pie_structure_distance(model, edited, source, antialias=False)
    torch.testing.assert_close(ours.float(), expected, rtol=1e-4, atol=1e-8)
    assert (ours > 0).all()
    assert metric("structure_distance", ex)(source, source, samples(2)).abs().max() < 1e-10


def test_structure_distance_resizes_512_to_224_without_antialiasing(tiny_vit):
    """PIE-Bench's environment (torchvision < 0.17) resized tensors without antialiasing; when
    downsampling 512 -> 224 that differs from the antialiased resize, and ours is the former."""
    from transformers import ViTModel

    ex = Extractors(MetricOptions(dino_model=tiny_vit))
    source, edited = natural_pair(512)
    source, edited = source[:2], edited[:2]
    ours = metric("structure_distance", ex)(edited, source, samples(2)).float()
    model = ViTModel.from_pretrained(tiny_vit, add_pooling_layer=False).eval()
    plain = pie_structure_distance(model, edited, source, antialias=False)
    antialiased = pie_structure_distance(model, edited, source, antialias=True)
    torch.testing.assert_close(ours, plain, rtol=1e-4, atol=1e-8)
    assert ((ours - antialiased).abs() > 0.05 * antialiased.abs()).all(), (ours, antialiased)
