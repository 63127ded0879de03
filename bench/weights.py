"""Weights files on disk: their sha256 digests (memoised, free for hub-cache blobs, which are
named by theirs), and the rule that ``.bin`` pickles are never loaded."""

import hashlib
import json
import warnings
from pathlib import Path

from bench.paths import cache_dir, write_atomic


def file_digest(path: Path) -> str:
    """sha256 of a weights file; free for hub-cache blobs, which are named by it."""
    real = path.resolve()
    if len(real.name) == 64 and all(c in "0123456789abcdef" for c in real.name):
        return real.name
    stat = real.stat()
    memo_path = cache_dir() / "weight_digests.json"
    memo = _read_digest_memo(memo_path)
    memo_key = f"{real}:{stat.st_size}:{stat.st_mtime_ns}"
    if memo_key not in memo:
        h = hashlib.sha256()
        with open(real, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
        memo[memo_key] = h.hexdigest()
        write_atomic(memo_path, lambda p: p.write_text(json.dumps(memo, indent=1)))
    return memo[memo_key]


def _read_digest_memo(path: Path) -> dict:
    """The memo of weight digests; an unreadable one counts as empty (recomputed and rewritten)."""
    if not path.is_file():
        return {}
    try:
        memo = json.loads(path.read_text())
        if isinstance(memo, dict):
            return memo
    except (OSError, UnicodeDecodeError, ValueError):
        pass
    warnings.warn(f"{path} is unreadable; recomputing the weight digests it held")
    return {}


def only_bin_weights(folder: Path) -> str | None:
    """Why ``folder`` cannot be loaded when it holds ``.bin`` weights but no safetensors; else ``None``."""
    bins = sorted(p.name for p in folder.glob("*.bin"))
    if bins and not any(folder.glob("*.safetensors")):
        return (
            f"{folder} holds only .bin weights ({', '.join(bins)}), no .safetensors; "
            ".bin files are never loaded (they are pickles): convert them to safetensors"
        )
    return None
