"""Where editbench keeps its caches (tiny backbone, inversions, reference statistics), and the
file-naming and atomic-write rules every writer shares, and the folders of requested output files."""

import hashlib
import os
import re
import secrets
from pathlib import Path

from bench.errors import ConfigError

#: Longest readable part of an output name; the hash beside it keeps names unique.
STEM_READABLE_CHARS = 60


def output_stem(sample_id: str) -> str:
    """A short, file-system-safe name for a sample's outputs, different for every distinct id.

    The readable part is the id with characters outside ``[A-Za-z0-9._-]`` replaced by ``_``,
    cut to 60 characters; the first 10 hex digits of the sha256 of the exact id follow it, so
    ``a/b`` and ``a_b`` (same readable part) still get different names, and a 300-character
    id still gives a name far below the file-system limit.
    """
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", sample_id)[:STEM_READABLE_CHARS].lstrip(".") or "sample"
    return f"{readable}-{hashlib.sha256(sample_id.encode()).hexdigest()[:10]}"


def _temporary_name(path: Path) -> Path:
    """``<name>.tmp-<pid>-<random>`` beside ``path``: unique per writer, and naming its process."""
    return path.with_name(f"{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_stale_temporaries(path: Path) -> None:
    """Delete temporaries of ``path`` whose writer is gone: ``<name>.tmp`` (the old fixed name)
    and ``<name>.tmp-<pid>[-<random>]`` of a process that no longer exists. Temporaries of
    live processes are left alone: they may be about to be renamed into place."""
    pattern = re.compile(rf"{re.escape(path.name)}\.tmp(?:-(\d+)(?:-[0-9a-f]+)?)?")
    try:
        candidates = list(path.parent.iterdir())
    except FileNotFoundError:
        return
    for candidate in candidates:
        match = pattern.fullmatch(candidate.name)
        if match and (match[1] is None or not _process_alive(int(match[1]))):
            candidate.unlink(missing_ok=True)


def write_atomic(path: Path, write) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it over ``path``.

    Readers see the old file or the new, never half of one; concurrent writers of one path each
    use their own temporary (the last rename wins), and temporaries left by killed writers of
    this path are removed.
    """
    path = Path(path)
    remove_stale_temporaries(path)
    tmp = _temporary_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def output_file(path) -> Path:
    """``path``, a file a command was asked to write (``--csv``, ``--html``, ``--plot``, ...), with
    its missing folders created, as every such option does; a ``ConfigError`` when it cannot be."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"cannot write {path}: it is a folder; give a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a folder on the way is a file, or not writable
        raise ConfigError(f"cannot write {path}: folder {path.parent} cannot be created ({exc.strerror})") from exc
    return path


def cache_dir() -> Path:
    """Root of editbench's on-disk caches: ``$EDITBENCH_CACHE`` or ``~/.cache/editbench``."""
    root = os.environ.get("EDITBENCH_CACHE") or Path.home() / ".cache" / "editbench"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def repo_root() -> Path:
    """The checkout editbench runs from (``datasets/`` and ``configs/`` live there)."""
    return Path(__file__).resolve().parent.parent
