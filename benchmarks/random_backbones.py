"""Full-size pipelines of SDXL, SD3-medium and FLUX.1-dev with seeded random weights, for measuring
speed and memory (which do not depend on the weights' values) where no checkpoint can be had.

Each builder constructs the published architecture from its config (the numbers of the released
``config.json`` files), on ``device`` (random initialisation of billions of weights is fast on a
GPU, slow on a CPU), casts it to ``dtype`` and saves the pipeline (safetensors) into a folder that
``bench.diffusion.backbone.Backbone`` loads like a real checkpoint. SD 1.5's is
``benchmarks/memory.py: build_random_sd15``. Sizes on disk in bf16: SDXL about 7 GB, SD3-medium
about 15 GB (with T5-XXL), FLUX.1-dev about 33 GB (with T5-XXL).

    from benchmarks.random_backbones import build_random
    build_random("sdxl", Path("/tmp/sdxl-random"), device="cuda", dtype=torch.bfloat16)
"""

from pathlib import Path
from types import FunctionType

import torch

from bench.diffusion.tiny import SD_SCHEDULER_CONFIG, _save_atomically
from bench.tokenizer import CLIP_VOCAB_SIZE, t5_style_tokenizer, write_clip_tokenizer_files

CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              hidden_act="quick_gelu", projection_dim=768)  # fmt: skip
CLIP_BIGG = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                 hidden_act="gelu", projection_dim=1280)  # fmt: skip
T5_XXL = dict(vocab_size=32128, d_model=4096, d_ff=10240, d_kv=64, num_layers=24, num_heads=64,
              feed_forward_proj="gated-gelu", relative_attention_num_buckets=32)  # fmt: skip
VAE_1024 = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                layers_per_block=2, sample_size=1024)  # fmt: skip
SDXL_UNET = dict(sample_size=128, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280), layers_per_block=2,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), use_linear_projection=True,
                 cross_attention_dim=2048, addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816)  # fmt: skip
SD3_MEDIUM = dict(sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
                  num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                  pooled_projection_dim=2048, pos_embed_max_size=192)  # fmt: skip
FLUX_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                axes_dims_rope=(16, 56, 56))  # fmt: skip
FLUX_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                      base_image_seq_len=256, max_image_seq_len=4096)  # fmt: skip


def _clip(config: dict, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return cls(CLIPTextConfig(vocab_size=CLIP_VOCAB_SIZE, max_position_embeddings=77, bos_token_id=49406,
                              eos_token_id=49407, pad_token_id=49407, **config))  # fmt: skip


def _t5():
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, **T5_XXL))


# Each builder: the pipeline class and its parts, networks as functions making them (build_random makes
# them one at a time, so that only one network is on the device at once).
def _sdxl(tokenizer):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    return StableDiffusionXLPipeline, dict(
        unet=lambda: UNet2DConditionModel(**SDXL_UNET),
        vae=lambda: AutoencoderKL(latent_channels=4, scaling_factor=0.13025, force_upcast=True, **VAE_1024),
        text_encoder=lambda: _clip(CLIP_L, projection=False),
        text_encoder_2=lambda: _clip(CLIP_BIGG, projection=True),
        tokenizer=tokenizer, tokenizer_2=tokenizer, scheduler=DDIMScheduler(**SD_SCHEDULER_CONFIG),
        force_zeros_for_empty_prompt=True, add_watermarker=False,
    )  # fmt: skip


def _sd3(tokenizer):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    return StableDiffusion3Pipeline, dict(
        transformer=lambda: SD3Transformer2DModel(**SD3_MEDIUM),
        vae=lambda: AutoencoderKL(latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
                          use_post_quant_conv=False, **VAE_1024),
        text_encoder=lambda: _clip(CLIP_L, projection=True),
        text_encoder_2=lambda: _clip(CLIP_BIGG, projection=True),
        text_encoder_3=_t5, tokenizer=tokenizer, tokenizer_2=tokenizer, tokenizer_3=t5_style_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
    )  # fmt: skip


def _flux(tokenizer):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    return FluxPipeline, dict(
        transformer=lambda: FluxTransformer2DModel(**FLUX_DEV),
        vae=lambda: AutoencoderKL(latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                          use_post_quant_conv=False, **VAE_1024),
        text_encoder=lambda: _clip(CLIP_L, projection=False), text_encoder_2=_t5, tokenizer=tokenizer,
        tokenizer_2=t5_style_tokenizer(), scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER),
    )  # fmt: skip


BUILDERS = {"sdxl": _sdxl, "sd3": _sd3, "flux": _flux}


def build_random(family: str, folder: Path, device: str = "cpu", dtype: torch.dtype = torch.bfloat16) -> None:
    """Write ``family``'s full-size pipeline with seeded random weights in ``dtype`` to ``folder``
    (atomically: built beside it and renamed into place)."""
    from transformers import CLIPTokenizer

    tmp = folder.with_name(f"{folder.name}.building")
    tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer_files(tmp / "_tokenizer_src"))
    pipeline_class, parts = BUILDERS[family](tokenizer)
    for index, (name, part) in enumerate(parts.items()):
        if isinstance(part, FunctionType):  # a network: made in dtype and moved off the device one by one
            torch.manual_seed(index)
            default = torch.get_default_dtype()
            torch.set_default_dtype(dtype)  # made in dtype: FLUX's 12B weights in fp32 would need 48 GB at once
            try:
                with torch.device(device):
                    parts[name] = part()
            finally:
                torch.set_default_dtype(default)
            parts[name] = parts[name].to("cpu", dtype)
    _save_atomically(pipeline_class(**parts), tmp, folder)
