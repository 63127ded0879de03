"""Disk cache of preparations (inversions): safetensors files, loaded without pickle.

An entry is named by the sha256 of its key fields (JSON, sorted keys); the fields are also
stored in the file's metadata and compared on load, so an entry is only ever returned for
exactly the key it was written for. Writes go to a temporary file renamed into place, so an
interrupted run never leaves a half-written entry that a later run would trust.
"""

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .paths import cache_dir, write_atomic

KEY_METADATA = "editbench_key"


def cache_key(fields: dict) -> str:
    """Canonical JSON of the key fields; every field takes part, so changing any one misses."""
    return json.dumps(fields, sort_keys=True, default=str)


def entry_path(fields: dict, kind: str = "inversions") -> Path:
    """Where the entry for ``fields`` lives: ``<cache_dir>/<kind>/<sha256>.safetensors``."""
    digest = hashlib.sha256(cache_key(fields).encode()).hexdigest()
    return cache_dir() / kind / f"{digest}.safetensors"


def load(fields: dict, device: torch.device | str = "cpu", kind: str = "inversions") -> dict[str, torch.Tensor] | None:
    """The tensors stored for ``fields``, or ``None`` when there is no (readable, matching) entry."""
    path = entry_path(fields, kind)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            stored_key = (f.metadata() or {}).get(KEY_METADATA)
        if stored_key != cache_key(fields):
            return None
        return load_file(str(path), device=str(device))
    except (OSError, ValueError, RuntimeError, SafetensorError):  # corrupt or foreign: a miss, recomputed and overwritten
        return None


def save(fields: dict, tensors: dict[str, torch.Tensor], kind: str = "inversions") -> Path:
    """Store ``tensors`` for ``fields`` atomically; returns the entry's path."""
    path = entry_path(fields, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    write_atomic(path, lambda tmp: save_file(cpu, str(tmp), metadata={KEY_METADATA: cache_key(fields)}))
    return path
