"""Where editbench keeps its caches (tiny backbone, inversions, reference statistics)."""

import os
from pathlib import Path


def write_atomic(path: Path, write) -> None:
    """``write(tmp)`` beside ``path``, then rename over it: readers see the old file or the new, never half."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def cache_dir() -> Path:
    """Root of editbench's on-disk caches: ``$EDITBENCH_CACHE`` or ``~/.cache/editbench``."""
    root = os.environ.get("EDITBENCH_CACHE") or Path.home() / ".cache" / "editbench"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def repo_root() -> Path:
    """The checkout editbench runs from (``datasets/`` and ``configs/`` live there)."""
    return Path(__file__).resolve().parent.parent
