"""One writer per run folder: an exclusive OS file lock held while a process writes to a run.

``run``, ``run --resume`` and ``score`` take the lock before they write anything; a second
process that tries to write the same run fails at once with a message naming the run and the
holder's pid, instead of computing the same cells and overwriting the first one's rows. The
lock is ``fcntl.flock`` on ``<run>/run.lock``: the operating system releases it when the
holder exits or is killed, so a crashed run never stays locked (the file itself stays; it is
only the lock that matters).
"""

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from bench.errors import ConfigError

LOCK_FILE = "run.lock"


class RunLocked(ConfigError):
    """Another live process is writing this run."""


@contextmanager
def run_lock(run_dir: Path):
    """Hold ``run_dir``'s writer lock for the ``with`` block; ``RunLocked`` if another process has it."""
    path = Path(run_dir) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunLocked(
                f"run {run_dir} is being written by another process (pid {holder}); "
                "wait for it to finish or stop it, then try again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextmanager
def locked_run(run_dir: Path):
    """Hold an existing run's writer lock for the ``with`` block; yields its manifest, read under the lock."""
    from bench.store import read_manifest

    read_manifest(run_dir)  # a clear error, and no lock file left behind, for a folder that is no run
    with run_lock(run_dir):
        yield read_manifest(run_dir)
