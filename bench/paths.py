"""Where editbench keeps its caches (tiny backbone, inversions, reference statistics)."""

import os
import uuid
from pathlib import Path


def write_atomic(path: Path, write) -> None:
    """``write(tmp)`` beside ``path``, then rename over it: readers see the old file or the new, never half.

    The temporary name is unique (not just per process: Ray workers on several machines may
    share one cache folder), so concurrent writers of one entry never write into each other's
    file; the last rename wins and every rename installs a whole file.
    """
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cache_dir() -> Path:
    """Root of editbench's on-disk caches: ``$EDITBENCH_CACHE`` or ``~/.cache/editbench``."""
    root = os.environ.get("EDITBENCH_CACHE") or Path.home() / ".cache" / "editbench"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def repo_root() -> Path:
    """The checkout editbench runs from (``datasets/`` and ``configs/`` live there)."""
    return Path(__file__).resolve().parent.parent
