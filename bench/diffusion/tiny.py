"""The embedded default backbone: a seeded, randomly initialised SD-architecture pipeline.

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


def tiny_folder() -> Path:
    """Where the tiny pipeline lives (it may not be built yet)."""
    return cache_dir() / f"tiny-sd-v{TINY_VERSION}"


def tiny_backbone_dir() -> Path:
    """Folder of the tiny pipeline, built on first use."""
    folder = tiny_folder()
    if not (folder / "model_index.json").is_file():
        _build(folder)
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
    from transformers import CLIPTokenizer

    tmp = folder.with_name(f"{folder.name}.building-{os.getpid()}")
    tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer_files(tmp / "_tokenizer_src"))
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
    pipe.save_pretrained(tmp, safe_serialization=True)

    shutil.rmtree(tmp / "_tokenizer_src")
    if folder.exists():  # another process finished first
        shutil.rmtree(tmp)
    else:
        tmp.rename(folder)
