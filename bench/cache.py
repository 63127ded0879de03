"""Disk cache of preparations (inversions): safetensors files, loaded without pickle.

An entry is named by the sha256 of its key fields (JSON, sorted keys); the fields are also
stored in the file's metadata and compared on load, so an entry is only ever returned for
exactly the key it was written for. A sha256 of the tensors (names, dtypes, shapes and
bytes) is stored beside them and verified on load: an entry whose bytes were damaged is a
miss (warned about once), recomputed and overwritten, never a hit. Writes go to a temporary
file renamed into place, so an interrupted run never leaves a half-written entry.
"""

import hashlib
import json
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from bench.paths import cache_dir, write_atomic

KEY_METADATA = "editbench_key"
CHECKSUM_METADATA = "editbench_sha256"
_warned: set[Path] = set()


def cache_key(fields: dict) -> str:
    """Canonical JSON of the key fields; every field takes part, so changing any one misses."""
    return json.dumps(fields, sort_keys=True, default=str)


def tensors_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def entry_path(fields: dict, kind: str = "inversions") -> Path:
    """Where the entry for ``fields`` lives: ``<cache_dir>/<kind>/<sha256>.safetensors``."""
    digest = hashlib.sha256(cache_key(fields).encode()).hexdigest()
    return cache_dir() / kind / f"{digest}.safetensors"


def _warn_once(path: Path, problem: str) -> None:
    if path not in _warned:
        _warned.add(path)
        warnings.warn(f"cache entry {path} {problem}; recomputing and overwriting it", stacklevel=3)


def load(fields: dict, device: torch.device | str = "cpu", kind: str = "inversions") -> dict[str, torch.Tensor] | None:
    """The tensors stored for ``fields``, or ``None`` when there is no readable, matching and intact entry."""
    path = entry_path(fields, kind)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        if metadata.get(KEY_METADATA) != cache_key(fields):
            return None
        tensors = load_file(str(path), device="cpu")
    except (OSError, ValueError, RuntimeError, SafetensorError):  # corrupt or foreign: a miss, recomputed and overwritten
        _warn_once(path, "is unreadable")
        return None
    if metadata.get(CHECKSUM_METADATA) != tensors_checksum(tensors):
        _warn_once(path, "does not match its checksum (damaged, or written before entries carried one)")
        return None
    return {name: t.to(device) for name, t in tensors.items()}


def save(fields: dict, tensors: dict[str, torch.Tensor], kind: str = "inversions") -> Path:
    """Store ``tensors`` for ``fields`` atomically, with their checksum; returns the entry's path."""
    path = entry_path(fields, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    metadata = {KEY_METADATA: cache_key(fields), CHECKSUM_METADATA: tensors_checksum(cpu)}
    write_atomic(path, lambda tmp: save_file(cpu, str(tmp), metadata=metadata))
    _warned.discard(path)
    return path
