"""One engine per run: an advisory file lock held while a run is started or resumed.

``fcntl.flock`` is released by the kernel when the process dies, ``kill -9`` included,
so a crashed engine never leaves a run locked; its RUNNING evaluations are then known to
be stale and are marked INTERRUPTED on resume.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType


class RunLockedError(RuntimeError):
    """Another live process is already running this run."""


class RunLock:
    """Context manager holding ``<archive>.<run>.lock``.

    Raises:
        RunLockedError: on enter, when another process holds the lock.
    """

    def __init__(self, archive_path: Path, run: str) -> None:
        self.path = archive_path.with_name(f"{archive_path.name}.{run}.lock")
        self.run = run
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLockedError(f"run {self.run!r} is already running (pid {holder}); stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
