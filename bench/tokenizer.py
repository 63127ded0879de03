"""SD 1.x's CLIP tokenizer, built offline from the BPE file that open-clip-torch ships, and a
small T5-style tokenizer for the tiny SD3 backbone (``t5_style_tokenizer``).

CLIP's vocabulary is fully determined by ``bpe_simple_vocab_16e6.txt.gz``: the 256 byte
symbols, the same with the end-of-word marker ``</w>``, the first 48,894 merges, and the two
special tokens, 49,408 entries in all. We write it as ``vocab.json`` + ``merges.txt`` so that
``CLIPTokenizer.from_pretrained(folder)`` loads it exactly like a hub checkpoint's tokenizer.
"""

import gzip
import json
from pathlib import Path

CLIP_VOCAB_SIZE = 49408
_N_MERGES = CLIP_VOCAB_SIZE - 2 * 256 - 2  # 48,894


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP's reversible map from the 256 byte values to printable characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def open_clip_bpe_path() -> Path:
    """The BPE merges file inside the installed open-clip-torch wheel."""
    import open_clip

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(f"open-clip-torch does not ship {path.name} at {path}")
    return path


def write_clip_tokenizer_files(folder: Path) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and the tokenizer config for SD's CLIP tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(open_clip_bpe_path(), "rt", encoding="utf-8").read().split("\n")
    merges = [line for line in lines[1 : _N_MERGES + 1]]
    symbols = _bytes_to_unicode()
    vocab = symbols + [s + "</w>" for s in symbols]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == CLIP_VOCAB_SIZE, len(vocab)
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return folder


def t5_style_tokenizer():
    """A T5-style ``T5TokenizerFast`` built offline with ``tokenizers``: T5's special tokens
    (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2), SentencePiece's ``▁`` word marker, a Unigram model over
    single printable characters (with and without the marker), and ``</s>`` appended, as T5 does.
    Every ASCII prompt tokenizes (character by character); not T5's 32k vocabulary."""
    import string

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    chars = sorted(set(string.ascii_letters + string.digits + string.punctuation))
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [("\u2581" + c, -3.0) for c in chars] + [(c, -4.0) for c in chars]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(
        tokenizer_object=tokenizer, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0,
        model_max_length=512,
    )
