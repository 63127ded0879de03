"""The instruction editors (issue 35 item 2) equal calling their diffusers pipeline directly, with
the same inputs, seed and size, on their embedded tiny checkpoints (to 1e-4 in fp32); a batch
equals its cells alone and NFE is counted from the denoiser's calls."""

import numpy as np
import pytest
import torch
from PIL import Image

from bench.method import EditRow
from bench.registry import get_method
from bench.samples import Sample, image_tensor

TOLERANCE = 1e-4


def _sample(sample_id: str, width: int, height: int, seed: int) -> Sample:
    """A sample at its own aspect ratio (a keep_aspect size), smooth so the VAE sees structure."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((width, height), Image.BICUBIC)
    return Sample(sample_id, image_tensor(img), "a photo", instruction=f"make it red {sample_id}")


def _edit(method, backbone, samples, setting, seeds):
    rows = [EditRow(s, None, torch.Generator().manual_seed(seed)) for s, seed in zip(samples, seeds)]
    before = backbone.nfe.count
    results = method.edit_batch(backbone, rows, setting)
    return [r.image for r in results], backbone.nfe.count - before


@pytest.mark.parametrize("given", [{"steps": 2}, {"steps": 2, "true_cfg": 2.0, "guidance": 3.0}])
def test_kontext_equals_flux_kontext_pipeline(kontext, given):
    from diffusers import FluxKontextPipeline

    from methods.kontext import pil_image

    method = get_method("kontext")()
    setting = method.resolve(given, "kontext")
    samples = [_sample("wide", 144, 112, 0), _sample("also_wide", 144, 112, 1)]
    batch, nfe = _edit(method, kontext, samples, setting, [3, 4])
    assert nfe == 2 * method.estimate_nfe(setting)[0]
    pipe = FluxKontextPipeline.from_pretrained(kontext.folder)  # the checkpoint as diffusers loads it
    pipe.set_progress_bar_config(disable=True)
    for sample, seed, image in zip(samples, [3, 4], batch):
        direct = pipe(image=pil_image(sample.image), prompt=sample.instruction, guidance_scale=setting["guidance"],
                      true_cfg_scale=setting["true_cfg"], negative_prompt="" if setting["true_cfg"] > 1 else None,
                      num_inference_steps=setting["steps"], height=112, width=144, max_area=112 * 144,
                      _auto_resize=False, generator=torch.Generator().manual_seed(seed), output_type="pt").images  # fmt: skip
        assert image.shape == (1, 3, 112, 144)  # the sample's own size, not diffusers' 1024x1024 default
        assert (image - direct).abs().max() <= TOLERANCE
        alone, _ = _edit(method, kontext, [sample], setting, [seed])
        assert (alone[0] - image).abs().max() <= TOLERANCE


def test_kontext_defaults_are_the_official_ones():
    setting = get_method("kontext").resolve({}, "kontext")
    assert (setting["steps"], setting["guidance"], setting["true_cfg"]) == (28, 2.5, 1.0)


def test_qwen_image_edit_equals_qwen_image_edit_pipeline(qwen_image):
    from diffusers import QwenImageEditPipeline

    from methods.kontext import pil_image

    method = get_method("qwen_image_edit")()
    setting = method.resolve({"steps": 2}, "qwen_image")
    sample = _sample("wide", 144, 112, 0)
    (image,), nfe = _edit(method, qwen_image, [sample], setting, [5])
    assert nfe == method.estimate_nfe(setting)[0] == 4  # true CFG: two evaluations a step
    pipe = QwenImageEditPipeline.from_pretrained(qwen_image.folder)
    pipe.set_progress_bar_config(disable=True)
    direct = pipe(image=pil_image(sample.image), prompt=sample.instruction, negative_prompt=" ", true_cfg_scale=4.0,
                  num_inference_steps=2, height=112, width=144, generator=torch.Generator().manual_seed(5),
                  output_type="pt").images  # fmt: skip
    assert image.shape == (1, 3, 112, 144) and (image - direct).abs().max() <= TOLERANCE
    defaults = method.resolve({}, "qwen_image")
    assert (defaults["steps"], defaults["true_cfg"]) == (50, 4.0)


def test_model_policy_uses_each_pipelines_rule(kontext, qwen_image):
    from bench.samples import ResolutionPolicy

    policy = ResolutionPolicy("model")
    assert kontext.frame(policy).choices and kontext.frame(policy).area == 128 * 128
    assert qwen_image.frame(policy).multiple == 32


def test_qwen_image_edit_plus_equals_qwen_image_edit_plus_pipeline(qwen_image_plus):
    from diffusers import QwenImageEditPlusPipeline

    from methods.kontext import pil_image

    method = get_method("qwen_image_edit_plus")()
    setting = method.resolve({"steps": 2, "true_cfg": 1.0}, "qwen_image_plus")
    sample = _sample("wide", 144, 112, 0)
    (image,), nfe = _edit(method, qwen_image_plus, [sample], setting, [8])
    assert nfe == method.estimate_nfe(setting)[0] == 2
    pipe = QwenImageEditPlusPipeline.from_pretrained(qwen_image_plus.folder)
    pipe.set_progress_bar_config(disable=True)
    direct = pipe(image=[pil_image(sample.image)], prompt=sample.instruction, true_cfg_scale=1.0, num_inference_steps=2,
                  height=112, width=144, generator=torch.Generator().manual_seed(8), output_type="pt").images  # fmt: skip
    assert image.shape == (1, 3, 112, 144) and (image - direct).abs().max() <= TOLERANCE


def test_flux2_klein_equals_flux2_klein_pipeline(flux2):
    from diffusers import Flux2KleinPipeline

    from methods.kontext import pil_image

    method = get_method("flux2")()
    setting = method.resolve({"steps": 2}, "flux2")
    samples = [_sample("wide", 144, 112, 0), _sample("also_wide", 144, 112, 1)]
    batch, nfe = _edit(method, flux2, samples, setting, [6, 7])
    assert nfe == 2 * method.estimate_nfe(setting)[0] == 8  # base model: real CFG, two evaluations a step
    pipe = Flux2KleinPipeline.from_pretrained(flux2.folder)
    pipe.set_progress_bar_config(disable=True)
    for sample, seed, image in zip(samples, [6, 7], batch):
        direct = pipe(image=pil_image(sample.image), prompt=sample.instruction, guidance_scale=4.0,
                      num_inference_steps=2, height=112, width=144, generator=torch.Generator().manual_seed(seed),
                      output_type="pt").images  # fmt: skip
        assert image.shape == (1, 3, 112, 144) and (image - direct).abs().max() <= TOLERANCE
    defaults = method.resolve({}, "flux2")
    assert (defaults["steps"], defaults["guidance"]) == (50, 4.0)


@pytest.mark.parametrize("width, height", [(144, 112), (128, 128)])
def test_flux2_dev_equals_flux2_pipeline(flux2_dev, width, height):
    """[dev]: ``guidance`` is the embedded guidance, one transformer evaluation a step, at a
    non-square and a square size."""
    from diffusers import Flux2Pipeline

    from bench.method import rules_in_force
    from methods.kontext import pil_image

    method = get_method("flux2")()
    setting = method.resolve({"steps": 2}, "flux2")
    method.check_backbone(setting, flux2_dev)  # guidance 4 is no CFG on [dev]: nothing to refuse
    samples = [_sample("first", width, height, 0), _sample("second", width, height, 1)]
    batch, nfe = _edit(method, flux2_dev, samples, setting, [6, 7])
    with rules_in_force(flux2_dev.step_rules):
        assert nfe == 2 * method.estimate_nfe(setting)[0] == 4  # embedded guidance: one evaluation a step
    pipe = Flux2Pipeline.from_pretrained(flux2_dev.folder)  # the checkpoint as diffusers loads it
    pipe.set_progress_bar_config(disable=True)
    for sample, seed, image in zip(samples, [6, 7], batch):
        direct = pipe(image=pil_image(sample.image), prompt=sample.instruction, guidance_scale=4.0,
                      num_inference_steps=2, height=height, width=width, generator=torch.Generator().manual_seed(seed),
                      output_type="pt").images  # fmt: skip
        assert image.shape == (1, 3, height, width) and (image - direct).abs().max() <= TOLERANCE
        alone, _ = _edit(method, flux2_dev, [sample], setting, [seed])
        assert (alone[0] - image).abs().max() <= TOLERANCE
    weaker, _ = _edit(method, flux2_dev, samples[:1], method.resolve({"steps": 2, "guidance": 1.0}, "flux2"), [6])
    assert (weaker[0] - batch[0]).abs().max() > 1e-3  # the guidance reaches the transformer


def test_flux2_defaults_are_both_pipelines_defaults():
    """``steps`` and ``guidance`` are the ``num_inference_steps`` and ``guidance_scale`` of both
    ``Flux2Pipeline`` and ``Flux2KleinPipeline`` (read from their signatures, not docstrings)."""
    import inspect

    from diffusers import Flux2KleinPipeline, Flux2Pipeline

    defaults = get_method("flux2").resolve({}, "flux2")
    for pipeline in (Flux2Pipeline, Flux2KleinPipeline):
        signature = inspect.signature(pipeline.__call__).parameters
        assert (defaults["steps"], defaults["guidance"]) == (signature["num_inference_steps"].default,
                                                             signature["guidance_scale"].default)  # fmt: skip


def test_flux2_refuses_guidance_on_a_step_distilled_klein(flux2, flux2_dev, monkeypatch):
    from bench.errors import ConfigError

    method = get_method("flux2")
    setting = method.resolve({}, "flux2")
    monkeypatch.setattr(flux2, "is_distilled", True)
    with pytest.raises(ConfigError, match="step-distilled"):
        method.check_backbone(setting, flux2)
    method.check_backbone(method.resolve({"guidance": 1.0}, "flux2"), flux2)
    assert not flux2_dev.is_distilled and flux2_dev.variant == "dev" and flux2.variant == "klein"


def test_flux2_step_rules_follow_the_variant(flux2, flux2_dev):
    """The dry run's NFE per step: [dev] one whatever the guidance, [klein] two with CFG."""
    from bench.method import rules_in_force

    setting = get_method("flux2").resolve({"steps": 3}, "flux2")
    for backbone, nfe in ((flux2_dev, 3), (flux2, 6)):
        with rules_in_force(backbone.step_rules):
            assert get_method("flux2").estimate_nfe(setting) == (nfe, 0)


def test_tiny_flux2_dev_processor_tokenizes_and_encodes_prompts_apart(flux2_dev):
    """The tiny [dev]'s ``PixtralProcessor`` (loaded from its folder) tokenizes text byte by byte in
    Mistral Small 3's chat format, and two prompts give different embeddings at the pipeline's
    ``max_sequence_length`` 512."""
    tokenizer = flux2_dev.tokenizer.tokenizer
    text = "make the cat red"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert len(ids) == len(text.encode()) and tokenizer.decode(ids) == text
    messages = [[{"role": "system", "content": [{"type": "text", "text": "S"}]},
                 {"role": "user", "content": [{"type": "text", "text": text}]}]]  # fmt: skip
    chat = flux2_dev.tokenizer.apply_chat_template(messages, tokenize=False)
    assert chat == ["<s>[SYSTEM_PROMPT]S[/SYSTEM_PROMPT][INST]make the cat red[/INST]"]
    pipe = flux2_dev.family.pipeline(flux2_dev, None)
    first, second = (pipe.encode_prompt(p, device="cpu")[0] for p in ("make the cat red", "make the dog blue"))
    assert first.shape == (1, 512, 48) and (first - second).abs().max() > 1e-3


def test_flux2_hub_patterns_fetch_the_diffusers_layout_only():
    """FLUX.2-dev's diffusers layout (sharded transformer and Mistral encoder with their index
    files; shard counts here are illustrative): every config, shard, index and processor file is
    fetched; BFL's single-file weights at the top level and any pickle weights are not."""
    from fnmatch import fnmatch

    from bench.diffusion.backbone import BackboneSpec
    from bench.diffusion.families import flux2

    wanted = ["model_index.json", "scheduler/scheduler_config.json", "tokenizer/tokenizer.json",
              "tokenizer/tokenizer_config.json", "tokenizer/processor_config.json", "tokenizer/chat_template.jinja",
              "text_encoder/config.json", "text_encoder/model.safetensors.index.json",
              *(f"text_encoder/model-{i:05d}-of-00010.safetensors" for i in range(1, 11)),
              "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors.index.json",
              *(f"transformer/diffusion_pytorch_model-{i:05d}-of-00007.safetensors" for i in range(1, 8)),
              "vae/config.json", "vae/diffusion_pytorch_model.safetensors"]  # fmt: skip
    unwanted = ["flux2-dev.safetensors", "ae.safetensors", "README.md", "text_encoder/pytorch_model.bin"]
    patterns = flux2.hub_patterns(BackboneSpec(name="black-forest-labs/FLUX.2-dev"))
    fetched = [f for f in wanted + unwanted if any(fnmatch(f, p) for p in patterns)]
    assert fetched == wanted


@pytest.mark.slow  # ~20 s: the pipeline always makes ~1024² px
def test_longcat_edit_equals_longcat_pipeline_resized_to_the_sample(longcat):
    import torch.nn.functional as F
    from diffusers import LongCatImageEditPipeline

    from methods.kontext import pil_image

    method = get_method("longcat_edit")()
    setting = method.resolve({"steps": 2}, "longcat")
    sample = _sample("wide", 144, 112, 0)
    (image,), nfe = _edit(method, longcat, [sample], setting, [9])
    assert nfe == method.estimate_nfe(setting)[0] == 4
    pipe = LongCatImageEditPipeline.from_pretrained(longcat.folder)
    pipe.set_progress_bar_config(disable=True)
    direct = pipe(image=pil_image(sample.image), prompt=sample.instruction, guidance_scale=4.5, num_inference_steps=2,
                  generator=torch.Generator().manual_seed(9), output_type="pt").images  # fmt: skip
    assert direct.shape[2:] != (112, 144)  # ~1 MP whatever the input: the adapter resizes it to the sample
    resized = F.interpolate(direct, size=(112, 144), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    assert image.shape == (1, 3, 112, 144) and (image - resized).abs().max() <= TOLERANCE


@pytest.mark.slow  # 1-4 min on 2 shared cores, half of it the tiny Qwen-Image-Edit (~8 s an image)
def test_the_instruction_editors_config_runs_offline_with_every_cell_ok(tmp_path):
    """configs/instruction_editors.yaml: six methods on five tiny models in one run, on the bundled
    GEdit-schema fixture (4 aspect ratios, en and cn) under keep_aspect; every output keeps its
    source's aspect ratio, the report has one table, and GEdit-Bench's own view reads the run."""
    import json
    import math

    from click.testing import CliRunner

    from bench.data import load_dataset
    from bench.execution.config import load_config
    from bench.execution.runner import start_run
    from bench.paths import repo_root
    from bench.reporting.report import cells_table, summary_markdown
    from bench.samples import cell_frame, run_frames
    from run_bench import main

    config = load_config(repo_root() / "configs" / "instruction_editors.yaml")
    run_dir, counts = start_run(config, out=str(tmp_path), progress=False)
    assert counts["failed"] == counts["skipped"] == 0 and counts["ok"] == 6 * 8  # 6 methods x 4 keys x (en, cn)
    table = cells_table(run_dir)
    assert set(table["backbone"]) == {"tiny", "tiny-flux", "tiny-kontext", "tiny-qwen-image-edit", "tiny-flux2-klein"}
    assert set(table["group.language"]) == {"en", "cn"} and table["edit_type"].nunique() == 4

    frames = run_frames(json.loads((run_dir / "manifest.json").read_text()))
    sources = {ref.id: ref.load(frames[None]).source_size for ref in load_dataset(config.dataset)}
    assert len({w / h for w, h in sources.values()}) == 4 and all(w != h for w, h in sources.values())
    for cell in table.itertuples():
        frame, (w, h) = cell_frame(frames, cell.backbone), sources[cell.sample_id]
        out_w, out_h = Image.open(run_dir / cell.output_path).size
        scale = math.sqrt(frame.area / (w * h))  # nothing cropped: each side the source's, scaled, to the multiple
        assert frame.mode == "keep_aspect" and (out_w, out_h) == frame.size_for(w, h)
        assert abs(out_w - w * scale) <= frame.multiple / 2 and abs(out_h - h * scale) <= frame.multiple / 2

    summary = summary_markdown(run_dir).split("\n\n")
    (main_table,) = [block for block in summary if block.startswith("| method")]  # one table over every model
    assert sum(" @ " in line for line in main_table.splitlines()) == 6
    result = CliRunner().invoke(main, ["report", str(run_dir), "--table", "gedit_bench"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "## English, full set" in result.output and "## Chinese, intersection subset" in result.output
    assert all(f"| {method} |" in result.output for method in config.settings)


def test_parameter_counts_come_from_configs_without_weights(tmp_path):
    """A FLUX.1-size transformer (diffusers' defaults: ~12B parameters) counted on the meta device."""
    import json

    from bench.diffusion.model_size import component_parameters, format_count

    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "config.json").write_text(json.dumps({"_class_name": "FluxTransformer2DModel"}))
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxKontextPipeline",
                                                           "transformer": ["diffusers", "FluxTransformer2DModel"],
                                                           "tokenizer": ["transformers", "CLIPTokenizer"]}))  # fmt: skip
    counts = component_parameters(tmp_path)
    assert list(counts) == ["transformer"] and 11.5e9 < counts["transformer"] < 12.5e9
    assert format_count(counts["transformer"]).endswith("B")


def test_backbones_lists_tiny_flux2_dev_with_each_networks_parameters(flux2_dev):
    """``editbench backbones`` counts the tiny [dev]'s networks from their configs alone: the counts
    of the loaded networks, the Mistral3 encoder's vision tower and projector included."""
    from click.testing import CliRunner

    from bench.diffusion.model_size import component_parameters, format_count
    from run_bench import main

    counts = component_parameters(flux2_dev.folder)
    loaded = {name: sum(p.numel() for p in getattr(flux2_dev, name).parameters()) for name in counts}
    assert counts == loaded and list(counts) == ["text_encoder", "transformer", "vae"]
    result = CliRunner().invoke(main, ["backbones", "tiny-flux2-dev"])
    assert result.exit_code == 0, result.output
    each = ", ".join(f"{name} {format_count(n)}" for name, n in counts.items())
    total = format_count(sum(counts.values()))
    assert f"tiny-flux2-dev (FLUX.2 [dev]/[klein]): {total} parameters: {each}" in result.output
