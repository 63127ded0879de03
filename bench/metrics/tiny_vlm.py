"""A seeded random Qwen2.5-VL, the default judge's architecture shrunk, built offline.

The judge's smoke path (``--untrained-extractors``) and the tests need a vision-language model
of the real architecture without downloading one. ``write_tiny_qwen25_vl(folder)`` writes a
complete hub-style folder with ``save_pretrained``: weights (safetensors), config, image and
video processor configs, a byte-level BPE tokenizer made with the ``tokenizers`` package (the
256 byte symbols, no merges, and Qwen's special tokens) and a chat template that lays out
messages as Qwen2.5-VL's does (``<|im_start|>role ... <|im_end|>``, each image as
``<|vision_start|><|image_pad|><|vision_end|>``). The folder then loads through exactly the
code path of a real checkpoint (``AutoModelForImageTextToText``/``AutoProcessor``).
"""

from pathlib import Path

import torch

#: Qwen's special tokens, in the order their ids follow the 256 byte symbols.
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>")  # fmt: skip

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: Pixels the tiny model's image processor keeps (Qwen2.5-VL's own default allows 12.8 M).
TINY_MAX_PIXELS = 56 * 56

#: The decoding defaults Qwen2-VL/Qwen2.5-VL-Instruct checkpoints ship in generation_config.json
#: (hub copies: unsloth/Qwen2-VL-2B @8963fb5, hf-internal-testing/tiny-random-Qwen2VLForConditionalGeneration
#: @11e879f, nbeerbower/Dumpling-Qwen2.5-VL-7B, a Qwen2.5-VL-7B-Instruct fine-tune). ``generate``
#: fills every argument it is not given from them: top_k 1 makes "sampling" greedy.
QWEN_VL_GENERATION_DEFAULTS = {"do_sample": True, "temperature": 0.1, "top_k": 1, "top_p": 0.001,
                               "repetition_penalty": 1.05}  # fmt: skip


def qwen_byte_tokenizer():
    """Qwen's byte-level BPE tokenizer shrunk: the 256 byte symbols, no merges, Qwen's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import Qwen2TokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    tokenizer = Qwen2TokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    return tokenizer


def write_tiny_qwen25_vl(folder: Path, seed: int = 0, generation_defaults: dict | None = None) -> Path:
    """Write a seeded random tiny Qwen2.5-VL (model + processor) to ``folder``; returns it.
    ``generation_defaults`` (e.g. ``QWEN_VL_GENERATION_DEFAULTS``) go into its generation_config.json."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    folder = Path(folder)
    tokenizer = qwen_byte_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    hidden = 32
    config = Qwen2_5_VLConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": hidden, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                     "max_position_embeddings": 4096, "rope_scaling": {"type": "mrope", "mrope_section": [2, 1, 1]},
                     "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"],
                     "bos_token_id": ids["<|endoftext|>"]},
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                       "out_hidden_size": hidden, "patch_size": 14, "spatial_merge_size": 2,
                       "temporal_patch_size": 2, "window_size": 56, "fullatt_block_indexes": [1]},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    for key, value in (generation_defaults or {}).items():
        setattr(model.generation_config, key, value)
    model.save_pretrained(folder, safe_serialization=True)
    image_processor = Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=TINY_MAX_PIXELS)
    video_processor = Qwen2VLVideoProcessor(min_pixels=28 * 28, max_pixels=TINY_MAX_PIXELS)
    processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                    video_processor=video_processor, chat_template=CHAT_TEMPLATE)  # fmt: skip
    processor.save_pretrained(folder)
    return folder
