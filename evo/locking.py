"""One engine per run, and by default one engine per project: advisory file locks.

Two kinds of lock file live beside the archive (``archive/`` by default):

* ``<archive>.<run>.lock``, one per *running* engine: held with ``fcntl.flock``
  (exclusive) while ``evo start`` or ``evo resume`` runs the run, holding the engine's
  pid, and removed when the engine stops. ``flock`` is released by the kernel when the
  process dies, ``kill -9`` included, so a crashed engine never leaves a run locked: the
  file it leaves behind is not locked, counts as stale, and is removed by the next engine
  that starts in the project (its RUNNING evaluations are marked INTERRUPTED on resume).
* ``<archive>.lock``, one per project: a mutex held for the few milliseconds in which
  an engine looks at the other runs' locks and takes its own, so that two ``evo start``
  at the same moment cannot both see "nothing running".

A second engine in a project whose run is going is refused (:class:`ProjectBusyError`)
unless it is started with ``allow_concurrent``: engines that share cores or GPUs halve
each other's throughput and skew every timed val_bpb. A second engine on the *same* run
is always refused (:class:`RunLockedError`).

Readers (``evo runs``, ``evo status``) find the running engines with
:func:`running_engines`: they open lock files read-only and test them with a shared,
non-blocking ``flock``, which fails only while an engine holds the file; they write
nothing, so they work on a read-only file system.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

MUTEX_WAIT_S = 10.0  # how long an engine waits for the project mutex (held for milliseconds)
ACQUIRE_WAIT_S = 2.0  # how long an engine retries its run lock against a reader's brief shared probe


class RunLockedError(RuntimeError):
    """Another live process is already running this run."""


class ProjectBusyError(RunLockedError):
    """Another run of the project is going, and concurrent engines were not allowed."""


@dataclass(frozen=True)
class Holder:
    """A running engine: its run and its pid (``None`` if the lock file holds none)."""

    run: str
    pid: int | None


def run_lock_path(archive_path: Path, run: str) -> Path:
    """The lock file of ``run``: ``<archive>.<run>.lock``."""
    return archive_path.with_name(f"{archive_path.name}.{run}.lock")


def project_lock_path(archive_path: Path) -> Path:
    """The project's mutex file: ``<archive>.lock``."""
    return archive_path.with_name(f"{archive_path.name}.lock")


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def running_engines(archive_path: Path, remove_stale: bool = False) -> list[Holder]:
    """The engines running runs of this archive now, by run name.

    Args:
        archive_path: the archive file.
        remove_stale: delete lock files no engine holds (only an engine does this, under
            the project mutex; readers leave the folder untouched).
    """
    prefix, suffix = f"{archive_path.name}.", ".lock"
    holders = []
    try:
        names = sorted(p.name for p in archive_path.parent.iterdir())
    except OSError:
        return []
    for name in names:
        if not (name.startswith(prefix) and name.endswith(suffix)) or len(name) <= len(prefix) + len(suffix):
            continue
        path = archive_path.parent / name
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holders.append(Holder(name[len(prefix):-len(suffix)], _read_pid(fd)))
        else:
            if remove_stale:
                path.unlink(missing_ok=True)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    return holders


class _ProjectMutex:
    """The project's ``<archive>.lock``, held exclusively for a moment."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> _ProjectMutex:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + MUTEX_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise RunLockedError(f"{self.path} stayed locked for {MUTEX_WAIT_S:.0f} s; is an engine hanging?") from None
                time.sleep(0.02)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class RunLock:
    """Context manager held by the engine of ``run`` while it runs (module docstring).

    Args:
        archive_path: the archive file; the lock files live beside it.
        run: the run's name.
        allow_concurrent: start even when another run of the project is going.

    Raises:
        RunLockedError: on enter, when another process runs this run.
        ProjectBusyError: on enter, when another run is going and not ``allow_concurrent``.
    """

    def __init__(self, archive_path: Path, run: str, allow_concurrent: bool = False) -> None:
        self.archive_path = archive_path
        self.path = run_lock_path(archive_path, run)
        self.run = run
        self.allow_concurrent = allow_concurrent
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _ProjectMutex(project_lock_path(self.archive_path)):
            others = running_engines(self.archive_path, remove_stale=True)
            for holder in others:
                pid = f"pid {holder.pid}" if holder.pid else "pid unknown"
                if holder.run == self.run:
                    raise RunLockedError(f"run {self.run!r} is already running ({pid}); stop it first")
            if others and not self.allow_concurrent:
                holder = others[0]
                pid = f"pid {holder.pid}" if holder.pid else "pid unknown"
                stop = f"kill -INT {holder.pid}" if holder.pid else "Ctrl-C in its terminal"
                raise ProjectBusyError(
                    f"run {holder.run!r} is already running in this project ({pid}); a second engine would share "
                    f"its cores or GPUs, slowing both and skewing every timed val_bpb. Wait for it, stop it "
                    f"({stop}), or pass --allow-concurrent"
                )
            self._fd = self._acquire()
        return self

    def _acquire(self) -> int:
        """Create and lock this run's file (the inode check guards against a file removed
        between open and lock); retries briefly past a reader's shared probe."""
        deadline = time.monotonic() + ACQUIRE_WAIT_S
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                if time.monotonic() > deadline:
                    raise RunLockedError(f"run {self.run!r} is already running (pid {pid or 'unknown'}); stop it first") from None
                time.sleep(0.02)
                continue
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # while still held: nobody can take a file about to vanish
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
