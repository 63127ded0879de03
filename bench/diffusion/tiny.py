"""The embedded backbones: seeded, randomly initialised pipelines of each family's architecture.

``tiny`` (SD 1.x) is the default; ``tiny-sdxl`` is SDXL's (``_build_sdxl``), ``tiny-sd3`` SD3's
(``_build_sd3``), ``tiny-flux`` FLUX.1 [dev]'s (``_build_flux``); the instruction editors':
``tiny-kontext`` FLUX.1 Kontext's (``_build_kontext``), ``tiny-qwen-image-edit`` Qwen-Image-Edit's
(``_build_qwen_image_edit``) and -Plus's (``_build_qwen_image_edit_plus``), ``tiny-flux2-klein``
FLUX.2 [klein] base's (``_build_flux2_klein``), ``tiny-flux2-dev`` FLUX.2 [dev]'s
(``_build_flux2_dev``), ``tiny-longcat`` LongCat-Image-Edit's (``_build_longcat``).

It has every component of Stable Diffusion 1.x at a toy size (UNet with cross-attention
blocks, an AutoencoderKL with downsampling factor 8, a CLIP text encoder over the real
49,408-token vocabulary, DDIM with SD's beta schedule). It is written once with
``save_pretrained`` (safetensors) and then loaded through the same ``from_pretrained`` path as a
real checkpoint, so everything the tests exercise is the code that runs real models.
Numbers it produces are smoke numbers: it has never been trained.
"""

import os
import shutil
from pathlib import Path

import torch

from bench.paths import cache_dir
from bench.tokenizer import CLIP_VOCAB_SIZE, write_clip_tokenizer_files

# Bump when the architecture or seeding below changes: it names the cache folder.
TINY_VERSION = 1
TINY_SEED = 0
TINY_RESOLUTION = 128  # latent 16x16, so ILVR factors up to 16 are meaningful

SD_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
)


#: The embedded backbones and their families.
TINY_BACKBONES = {"tiny": "sd", "tiny-sdxl": "sdxl", "tiny-sd3": "sd3", "tiny-flux": "flux", "tiny-kontext": "kontext",
                  "tiny-qwen-image-edit": "qwen_image", "tiny-qwen-image-edit-plus": "qwen_image_plus",
                  "tiny-flux2-klein": "flux2", "tiny-flux2-dev": "flux2", "tiny-longcat": "longcat"}  # fmt: skip
_FOLDERS = {name: f"{name}-v{TINY_VERSION}" for name in TINY_BACKBONES} | {"tiny": f"tiny-sd-v{TINY_VERSION}"}


def tiny_folder(name: str = "tiny") -> Path:
    """Where the tiny pipeline ``name`` lives (it may not be built yet)."""
    return cache_dir() / _FOLDERS[name]


def tiny_backbone_dir(name: str = "tiny") -> Path:
    """Folder of the tiny pipeline ``name``, built on first use."""
    folder = tiny_folder(name)
    if not (folder / "model_index.json").is_file():
        builders = {"tiny": _build, "tiny-sdxl": _build_sdxl, "tiny-sd3": _build_sd3, "tiny-flux": _build_flux,
                    "tiny-kontext": _build_kontext, "tiny-qwen-image-edit": _build_qwen_image_edit,
                    "tiny-qwen-image-edit-plus": _build_qwen_image_edit_plus, "tiny-flux2-klein": _build_flux2_klein,
                    "tiny-flux2-dev": _build_flux2_dev, "tiny-longcat": _build_longcat}  # fmt: skip
        builders[name](folder)
    return folder


def _build(folder: Path) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(TINY_SEED)
    unet = UNet2DConditionModel(
        sample_size=TINY_RESOLUTION // 8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    torch.manual_seed(TINY_SEED + 1)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=TINY_RESOLUTION,
        scaling_factor=0.18215,
    )
    torch.manual_seed(TINY_SEED + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=CLIP_VOCAB_SIZE,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
            projection_dim=32,
        )
    )
    write_pipeline(folder, unet, vae, text_encoder)


def write_pipeline(folder: Path, unet, vae, text_encoder) -> None:
    """Save an SD pipeline of these components, SD's CLIP tokenizer and DDIM scheduler to ``folder``
    (safetensors), atomically: it is written beside ``folder`` and renamed into place."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    tmp = _building(folder)
    tokenizer = _clip_tokenizer(tmp)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(**SD_SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    _save_atomically(pipe, tmp, folder)


def _building(folder: Path) -> Path:
    """The folder beside ``folder`` where this process builds it (``_save_atomically`` renames it into place)."""
    return folder.with_name(f"{folder.name}.building-{os.getpid()}")


def _save_atomically(pipe, tmp: Path, folder: Path, vae_sample_size: bool = False) -> None:
    """Save ``pipe`` into ``tmp`` (where a tokenizer source may have been written), with ``vae_sample_size``
    the tiny native size stated in its VAE config (``_state_vae_sample_size``), and rename it to ``folder``,
    dropping the tokenizer source."""
    pipe.save_pretrained(tmp, safe_serialization=True)
    if vae_sample_size:
        _state_vae_sample_size(tmp)
    shutil.rmtree(tmp / "_tokenizer_src", ignore_errors=True)
    if folder.exists():  # another process finished first
        shutil.rmtree(tmp)
    else:
        tmp.rename(folder)


def _clip_tokenizer(tmp: Path):
    """SD's CLIP tokenizer, from files written into ``tmp``'s tokenizer source."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(write_clip_tokenizer_files(tmp / "_tokenizer_src"))


def _tiny_t5(tokenizer, width: int, head_width: int):
    """A one-layer T5 encoder (``width`` wide, 4 heads of ``head_width``) over ``tokenizer``, seeded."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(TINY_SEED + 4)
    return T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer), d_model=width, d_ff=64, d_kv=head_width, num_layers=1, num_heads=4,
            relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        )
    )  # fmt: skip


def _tiny_flow_vae(block_out_channels: tuple[int, ...], norm_num_groups: int, scaling_factor: float,
                   shift_factor: float):  # fmt: skip
    """A 16-channel ``AutoencoderKL`` with a shift factor and no quant convs (SD3's and FLUX's kind), seeded."""
    from diffusers import AutoencoderKL

    torch.manual_seed(TINY_SEED + 1)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=block_out_channels, layers_per_block=1,
        latent_channels=16, norm_num_groups=norm_num_groups, sample_size=TINY_RESOLUTION,
        scaling_factor=scaling_factor, shift_factor=shift_factor, use_quant_conv=False, use_post_quant_conv=False,
    )  # fmt: skip


def _tiny_qwen25_vl(tmp: Path):
    """(encoder, tokenizer, ``Qwen2VLProcessor``) of the tiny Qwen2.5-VL of ``bench.metrics.tiny_vlm``,
    written into ``tmp``'s tokenizer source and loaded from there."""
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration, Qwen2VLProcessor

    from bench.metrics.tiny_vlm import write_tiny_qwen25_vl

    source = write_tiny_qwen25_vl(tmp / "_tokenizer_src", seed=TINY_SEED + 2)
    encoder = Qwen2_5_VLForConditionalGeneration.from_pretrained(source)
    vl = AutoProcessor.from_pretrained(source)
    processor = Qwen2VLProcessor(image_processor=vl.image_processor, tokenizer=vl.tokenizer,
                                 video_processor=vl.video_processor, chat_template=vl.chat_template)  # fmt: skip
    return encoder, vl.tokenizer, processor


def _resave(pipeline_class, source: str, folder: Path, vae_sample_size: bool = False) -> None:
    """The tiny pipeline ``source``'s seeded networks saved as a ``pipeline_class`` (same architecture,
    another pipeline) into ``folder``."""
    pipe = pipeline_class.from_pretrained(tiny_backbone_dir(source), use_safetensors=True)
    _save_atomically(pipe, _building(folder), folder, vae_sample_size)


def _tiny_clip(seed: int, hidden: int, projection: bool = True):
    """A tiny CLIP text encoder (with a projection unless told otherwise) over CLIP's real vocabulary."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(
        CLIPTextConfig(
            vocab_size=CLIP_VOCAB_SIZE, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
            pad_token_id=49407, projection_dim=hidden,
        )
    )  # fmt: skip


def _build_sd3(folder: Path) -> None:
    """SD3's architecture at a toy size: MMDiT (patch 2, 16 latent channels), 16-channel VAE
    with a shift factor, CLIP-L/CLIP-G-like encoders (32 wide each), a one-layer T5 (64 wide)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    from bench.tokenizer import t5_style_tokenizer

    tmp = _building(folder)
    clip_tokenizer = _clip_tokenizer(tmp)
    t5_tokenizer = t5_style_tokenizer()
    torch.manual_seed(TINY_SEED)
    transformer = SD3Transformer2DModel(
        sample_size=TINY_RESOLUTION // 8, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
        attention_head_dim=8, num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=32,
        pooled_projection_dim=64, pos_embed_max_size=16,
    )  # fmt: skip
    vae = _tiny_flow_vae((8, 16, 16, 16), norm_num_groups=8, scaling_factor=1.5305, shift_factor=0.0609)
    t5 = _tiny_t5(t5_tokenizer, width=64, head_width=16)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=vae, text_encoder=_tiny_clip(TINY_SEED + 2, 32), tokenizer=clip_tokenizer,
        text_encoder_2=_tiny_clip(TINY_SEED + 3, 32), tokenizer_2=clip_tokenizer, text_encoder_3=t5,
        tokenizer_3=t5_tokenizer,
    )  # fmt: skip
    _save_atomically(pipe, tmp, folder)


def _build_sdxl(folder: Path) -> None:
    """SDXL's architecture at a toy size: a UNet with added text-time embeddings (six time ids
    plus the pooled projection), a first block without attention and two transformer layers per
    attention block, cross-attention over both CLIP encoders (32 + 32 wide; the second with a
    projection), a VAE with SDXL's scaling factor, and DDIM with SD's schedule."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    tmp = _building(folder)
    tokenizer = _clip_tokenizer(tmp)
    hidden = 32
    torch.manual_seed(TINY_SEED)
    unet = UNet2DConditionModel(
        sample_size=TINY_RESOLUTION // 8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
        layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2),
        attention_head_dim=(2, 4), use_linear_projection=True, cross_attention_dim=2 * hidden,
        addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=8 * 6 + hidden, norm_num_groups=8,
    )  # fmt: skip
    torch.manual_seed(TINY_SEED + 1)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 16, 16, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=8, sample_size=TINY_RESOLUTION, scaling_factor=0.13025, force_upcast=True,
    )  # fmt: skip
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=_tiny_clip(TINY_SEED + 2, hidden, projection=False),
        text_encoder_2=_tiny_clip(TINY_SEED + 3, hidden), tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet,
        scheduler=DDIMScheduler(**SD_SCHEDULER_CONFIG), force_zeros_for_empty_prompt=True, add_watermarker=False,
    )  # fmt: skip
    _save_atomically(pipe, tmp, folder)


def _build_flux(folder: Path) -> None:
    """FLUX.1 [dev]'s architecture at a toy size: a transformer with guidance embedding (2 double-
    and 4 single-stream blocks, 2 heads of 16, RoPE axes 4/4/8, 64 = 16 x 2 x 2 packed channels),
    a 16-channel VAE with FLUX's scaling and shift factors, a tiny CLIP (pooled, 32 wide) and a
    one-layer T5 (32 wide), and FLUX's dynamically shifted flow-matching scheduler."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    from bench.tokenizer import t5_style_tokenizer

    tmp = _building(folder)
    clip_tokenizer = _clip_tokenizer(tmp)
    t5_tokenizer = t5_style_tokenizer()
    hidden = 32
    torch.manual_seed(TINY_SEED)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=2, num_single_layers=4, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=hidden, pooled_projection_dim=hidden, guidance_embeds=True, axes_dims_rope=(4, 4, 8),
    )  # fmt: skip
    vae = _tiny_flow_vae((8, 16, 16, 16), norm_num_groups=8, scaling_factor=0.3611, shift_factor=0.1159)
    t5 = _tiny_t5(t5_tokenizer, width=hidden, head_width=8)
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096,
    )  # fmt: skip
    pipe = FluxPipeline(
        transformer=transformer, scheduler=scheduler, vae=vae,
        text_encoder=_tiny_clip(TINY_SEED + 2, hidden, projection=False), tokenizer=clip_tokenizer,
        text_encoder_2=t5, tokenizer_2=t5_tokenizer,
    )  # fmt: skip
    _save_atomically(pipe, tmp, folder)


def _build_kontext(folder: Path) -> None:
    """FLUX.1 Kontext [dev]'s pipeline: the same architecture as FLUX.1 [dev] (Kontext is a FLUX.1
    transformer trained to edit), so ``tiny-flux``'s seeded networks saved as a ``FluxKontextPipeline``."""
    from diffusers import FluxKontextPipeline

    _resave(FluxKontextPipeline, "tiny-flux", folder)


def _build_qwen_image_edit(folder: Path) -> None:
    """Qwen-Image-Edit's pipeline at a toy size: a one-block QwenImage transformer (2 heads of 16,
    RoPE axes 4/6/6, 64 = 16 x 2 x 2 packed channels), a Qwen-Image video VAE (base 8, 16 latent
    channels), the tiny Qwen2.5-VL of ``bench.metrics.tiny_vlm`` as text and image encoder (its
    byte-level tokenizer and a ``Qwen2VLProcessor``), and the flow-matching scheduler with dynamic
    shift. The VAE config states ``sample_size`` 128, the tiny checkpoint's native size."""
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageEditPipeline,
        QwenImageTransformer2DModel,
    )

    tmp = _building(folder)
    encoder, tokenizer, processor = _tiny_qwen25_vl(tmp)
    torch.manual_seed(TINY_SEED)
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=64, out_channels=16, num_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=encoder.config.text_config.hidden_size, axes_dims_rope=(4, 6, 6),
    )  # fmt: skip
    torch.manual_seed(TINY_SEED + 1)
    vae = AutoencoderKLQwenImage(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1)
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
        base_image_seq_len=256, max_image_seq_len=8192, shift_terminal=0.02, time_shift_type="exponential",
    )  # fmt: skip
    pipe = QwenImageEditPipeline(scheduler=scheduler, vae=vae, text_encoder=encoder, tokenizer=tokenizer,
                                 processor=processor, transformer=transformer)  # fmt: skip
    _save_atomically(pipe, tmp, folder, vae_sample_size=True)


def _state_vae_sample_size(folder: Path) -> None:
    """Write the tiny native size into a Qwen-Image VAE config, which has no ``sample_size`` of its own
    (``bench.diffusion.families.qwen_image.native_resolution`` reads it; diffusers ignores it)."""
    import json

    config = folder / "vae" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "sample_size": TINY_RESOLUTION}, indent=2))


def _build_qwen_image_edit_plus(folder: Path) -> None:
    """Qwen-Image-Edit-2509/2511's pipeline (``QwenImageEditPlusPipeline``): the same architecture as
    Qwen-Image-Edit, so ``tiny-qwen-image-edit``'s seeded networks saved as the Plus pipeline."""
    from diffusers import QwenImageEditPlusPipeline

    _resave(QwenImageEditPlusPipeline, "tiny-qwen-image-edit", folder, vae_sample_size=True)


def _build_flux2_klein(folder: Path) -> None:
    """FLUX.2 [klein] base's pipeline (not step-distilled: real CFG) at a toy size: the networks of
    ``_flux2_networks`` without a guidance embedding, and a Qwen3 of hidden size 16 with 28 layers,
    so the pipeline's default hidden layers (9, 18, 27) exist, over the byte-level tokenizer of
    ``bench.metrics.tiny_vlm`` with its chat template."""
    from diffusers import Flux2KleinPipeline
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from bench.metrics.tiny_vlm import CHAT_TEMPLATE, qwen_byte_tokenizer

    tmp = _building(folder)
    tokenizer = qwen_byte_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    hidden = 16
    torch.manual_seed(TINY_SEED + 2)
    encoder = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=32, num_hidden_layers=28,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=1024,
    ))  # fmt: skip
    transformer, vae, scheduler = _flux2_networks(joint_attention_dim=3 * hidden, guidance_embeds=False)
    pipe = Flux2KleinPipeline(scheduler=scheduler, vae=vae, text_encoder=encoder, tokenizer=tokenizer,
                              transformer=transformer, is_distilled=False)  # fmt: skip
    _save_atomically(pipe, tmp, folder)


def _build_flux2_dev(folder: Path) -> None:
    """FLUX.2 [dev]'s pipeline at a toy size: the networks of ``_flux2_networks`` with a guidance
    embedding (embedded guidance, as FLUX.2-dev's transformer), and a Mistral3 (Mistral Small 3's
    classes) of hidden size 16 with 30 text layers, so the pipeline's default hidden layers (10,
    20, 30) exist, and a one-layer Pixtral vision tower, over ``mistral_byte_processor``."""
    from diffusers import Flux2Pipeline
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    tmp = _building(folder)
    processor = mistral_byte_processor()
    ids = {t: processor.tokenizer.convert_tokens_to_ids(t) for t in ("<s>", "</s>", "<pad>", "[IMG]")}
    hidden = 16
    torch.manual_seed(TINY_SEED + 2)
    encoder = Mistral3ForConditionalGeneration(Mistral3Config(
        text_config={"model_type": "mistral", "vocab_size": len(processor.tokenizer), "hidden_size": hidden,
                     "intermediate_size": 32, "num_hidden_layers": 30, "num_attention_heads": 2,
                     "num_key_value_heads": 1, "head_dim": 8, "max_position_embeddings": 1024,
                     "bos_token_id": ids["<s>"], "eos_token_id": ids["</s>"], "pad_token_id": ids["<pad>"]},
        vision_config={"model_type": "pixtral", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "head_dim": 8, "patch_size": 14, "image_size": 112},
        image_token_index=ids["[IMG]"], spatial_merge_size=2,
    ))  # fmt: skip
    transformer, vae, scheduler = _flux2_networks(joint_attention_dim=3 * hidden, guidance_embeds=True)
    pipe = Flux2Pipeline(scheduler=scheduler, vae=vae, text_encoder=encoder, tokenizer=processor,
                         transformer=transformer)  # fmt: skip
    _save_atomically(pipe, tmp, folder)


def _flux2_networks(joint_attention_dim: int, guidance_embeds: bool):
    """FLUX.2's transformer (one double- and one single-stream block, 2 heads of 16, RoPE axes
    4/4/4/4, 128 = 32 x 2 x 2 channels), a 32-channel FLUX.2 VAE (``sample_size`` 128) and the
    flow-matching scheduler with dynamic shifting, seeded."""
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel

    torch.manual_seed(TINY_SEED)
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=128, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=joint_attention_dim, timestep_guidance_channels=32, axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=guidance_embeds,
    )  # fmt: skip
    torch.manual_seed(TINY_SEED + 1)
    vae = AutoencoderKLFlux2(block_out_channels=(8, 8, 8, 8), latent_channels=32, norm_num_groups=4,
                             sample_size=TINY_RESOLUTION, layers_per_block=1)  # fmt: skip
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True)
    return transformer, vae, scheduler


#: Mistral's control tokens, the Mistral Small 3 chat and Pixtral image markers included.
MISTRAL_SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                          "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]",
                          "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]")  # fmt: skip
#: Mistral Small 3's chat format: ``<s>[SYSTEM_PROMPT]...[/SYSTEM_PROMPT][INST]...[/INST]``, an
#: image block as ``[IMG]`` (which the processor expands), content given as a string or a list of
#: text and image blocks, as ``Flux2Pipeline``'s ``format_input`` gives it.
MISTRAL_CHAT_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}"
    "{%- if message['content'] is string %}{%- set text = message['content'] %}"
    "{%- else %}{%- set text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text')"
    " | join('') %}"
    "{%- endif %}"
    "{%- if message['role'] == 'system' %}{{- '[SYSTEM_PROMPT]' + text + '[/SYSTEM_PROMPT]' }}"
    "{%- elif message['role'] == 'user' %}{{- '[INST]' }}"
    "{%- if message['content'] is not string %}{%- for block in message['content'] %}"
    "{%- if block['type'] == 'image' %}{{- '[IMG]' }}{%- endif %}{%- endfor %}{%- endif %}"
    "{{- text + '[/INST]' }}"
    "{%- elif message['role'] == 'assistant' %}{{- text + eos_token }}{%- endif %}{%- endfor %}"
)


def mistral_byte_processor():
    """A ``PixtralProcessor`` over Mistral's byte-level BPE shrunk: ``MISTRAL_SPECIAL_TOKENS``, then
    the 256 byte symbols, no merges (every byte of a text is a token), with
    ``MISTRAL_CHAT_TEMPLATE`` and a Pixtral image processor of patch 14."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PixtralImageProcessor, PixtralProcessor, PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(MISTRAL_SPECIAL_TOKENS)}
    vocab |= {symbol: len(vocab) + i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                        pad_token="<pad>")  # fmt: skip
    tokenizer.add_special_tokens({"additional_special_tokens": [t for t in MISTRAL_SPECIAL_TOKENS[3:] if t != "<pad>"]})
    image_processor = PixtralImageProcessor(patch_size=14, size={"longest_edge": 112})
    return PixtralProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14, spatial_merge_size=2,
                            chat_template=MISTRAL_CHAT_TEMPLATE)  # fmt: skip


def _build_longcat(folder: Path) -> None:
    """LongCat-Image-Edit's pipeline at a toy size: a transformer of one double- and one single-
    stream block (2 heads of 16, RoPE axes 4/6/6, 64 = 16 x 2 x 2 packed channels), a 16-channel
    VAE with FLUX's scaling and shift (``sample_size`` 128), and the tiny Qwen2.5-VL of
    ``bench.metrics.tiny_vlm`` as text and image encoder, with a ``Qwen2VLProcessor``."""
    from diffusers import FlowMatchEulerDiscreteScheduler, LongCatImageEditPipeline, LongCatImageTransformer2DModel

    tmp = _building(folder)
    encoder, tokenizer, processor = _tiny_qwen25_vl(tmp)
    hidden = encoder.config.text_config.hidden_size
    torch.manual_seed(TINY_SEED)
    transformer = LongCatImageTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=hidden, pooled_projection_dim=hidden, axes_dims_rope=[4, 6, 6],
    )  # fmt: skip
    vae = _tiny_flow_vae((8, 8, 8, 8), norm_num_groups=4, scaling_factor=0.3611, shift_factor=0.1159)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True)
    pipe = LongCatImageEditPipeline(scheduler=scheduler, vae=vae, text_encoder=encoder, tokenizer=tokenizer,
                                    text_processor=processor, transformer=transformer)  # fmt: skip
    _save_atomically(pipe, tmp, folder)
