"""The model a genome exports, copied out of its reach as soon as the engine sees it.

A genome's wall time is all the engine can measure of its training: what the genome prints,
and any signal from its own process, it can forge. The wall time of the whole process
includes the work after training (the export, the harness's own pass over the training
slice), which grows with the model, so the limit on it has to be generous, and a genome
could spend that slack on more training. This module bounds the training itself: the
engine looks at the genome's export folder about four times a second while it runs, and
the first time it holds every file of a complete export (:data:`evo.evaluator.PROGRAM_FILES`,
regular files) it copies them into a folder of its own, in a thread of its own (the runner
goes on enforcing the genome's limits). That copy is what the trusted evaluator scores, and
``ready_s``, the wall second the copy was complete, bounds the model's training: whatever the
genome does later (more training, a second export, rewriting the files through a descriptor
it kept open) is never seen, and whatever it did during the copy happened before ``ready_s``.
The engine holds ``ready_s`` to the run's *model-ready limit* (:func:`ready_limit_s`), which
is tight because it excludes the work after the export.

The folder is opened once without following a link and every file relative to that
descriptor, so swapping the folder for a link never makes the engine read elsewhere; links,
FIFOs and oversized files are never read; holes in a sparse file stay holes in the copy.
A genome that exits before a look saw its export is copied at its exit, with ``ready_s`` its
wall time.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from evo.evaluator import MAX_PROGRAM_BYTES, MAX_TENSOR_FILE_BYTES, PROGRAM_FILES
from evo.genome import remove_tree

EXPORT_ERROR = "export_error.txt"  # written by prepare.export_model when torch.export failed
MAX_ERROR_BYTES = 16 * 2**10
CHUNK_BYTES = 4 * 2**20
MAX_FAILED_COPIES = 3  # copies an export that keeps changing under the engine may cost it
# Model-ready allowance: the seed's seconds past the budget until its model was ready
# (start-up, compilation, untimed warm-up steps, the export) plus the larger of half of
# that, this share of the budget and MIN_READY_SLACK_S.
READY_SLACK_SHARE = 0.05
MIN_READY_SLACK_S = 3.0


def ready_limit_s(time_budget_s: float, seed_ready_s: Sequence[float]) -> float | None:
    """The wall second by which a genome's model must be ready (exported) to be scored.

    Args:
        time_budget_s: the evaluation's training budget, seconds.
        seed_ready_s: the seed genome's model-ready seconds (``model_ready_s``) at the same
            budget, from its completed evaluations.

    Returns:
        ``time_budget_s + pre + max(pre / 2, READY_SLACK_SHARE * time_budget_s,
        MIN_READY_SLACK_S)``, ``pre`` the seed's largest model-ready seconds past the
        budget; ``None`` when there is no seed reading (an archive from before this limit,
        or ``fitness = reported``, where no model is exported).
    """
    if not seed_ready_s:
        return None
    pre = max(0.0, max(seed_ready_s) - time_budget_s)
    return time_budget_s + pre + max(pre / 2, READY_SLACK_SHARE * time_budget_s, MIN_READY_SLACK_S)


class ModelSnapshot:
    """A copy of a genome's first complete export, taken while it runs.

    Args:
        export_dir: the genome's export folder (in its workspace; it may not exist yet).
        into: a folder of the engine's, out of the genome's sandbox; created on the
            snapshot, removed by :meth:`discard`.

    Attributes:
        ready_s: wall seconds from the genome's start until the copy was complete
            (``None``: none yet); for a warm-started genome, plus its interpreter's imports.
        refused: why a complete export was not copied (a file too large, a full disk), if so.
    """

    def __init__(self, export_dir: Path, into: Path) -> None:
        self.export_dir = export_dir
        self.into = into
        self.ready_s: float | None = None
        self.refused: str | None = None
        self.imports_s = 0.0  # a warm interpreter's import seconds, counted in ready_s (as_if_cold)
        self._thread: threading.Thread | None = None
        self._offset_s = 0.0  # the genome's elapsed seconds minus time.monotonic()
        self._copied: tuple[bool, float] | None = None  # (taken, monotonic end) of the last copy
        self._cancel = threading.Event()
        self._failed = 0  # copies that failed because the export changed under them
        self._failed_on: tuple | None = None  # the export's files (inode, size, mtime) at the last failure

    @property
    def taken(self) -> bool:
        return self.ready_s is not None

    def poll(self, elapsed_s: float, wait: bool = False) -> bool:
        """Look at the export folder; ``elapsed_s``: the genome's wall seconds now. A complete
        export starts a copy in a thread (``wait``: finish it here); a finished copy sets
        ``ready_s``. Returns whether a snapshot is taken. Never raises for what the genome
        did to its folder: an export that changed during the copy is tried again later."""
        if self.taken:
            return True
        if self._thread is None:
            files = _complete(self.export_dir)
            if files is None or files == self._failed_on or self._cancel.is_set():
                return False  # (an export a copy failed on is copied again only once it changed)
            self._offset_s = elapsed_s - time.monotonic()
            self._thread = threading.Thread(target=self._copy, name=f"snapshot {self.into.name}", daemon=True)
            self._thread.start()
        if wait:
            self._thread.join()
        if self._thread.is_alive():
            return False
        self._thread = None
        assert self._copied is not None
        taken, end = self._copied
        if not taken and not self.refused and not self._cancel.is_set():
            self._failed += 1
            self._failed_on = _complete(self.export_dir)
            if self._failed >= MAX_FAILED_COPIES:
                self.refused = f"the export kept changing while the engine copied it ({self._failed} tries)"
                taken = True
        if taken:
            self.ready_s = end + self._offset_s
        return taken

    def at_exit(self, wall_s: float, timed_out: bool = False) -> None:
        """The genome's processes are gone: finish or take the snapshot now (``ready_s`` at
        most ``wall_s``: nothing changes after the exit); without a complete export, keep its
        ``export_error.txt`` (why torch.export failed), if any, for the evaluator to report.
        A genome killed at its limit (``timed_out``) is never scored: its copy is stopped."""
        if timed_out:
            self._stop()
            return
        if self._thread is not None:
            self.poll(wall_s, wait=True)  # the copy under way
        if not self.taken:
            self._failed_on = None  # nothing can change it now
            self.poll(wall_s, wait=True)  # a copy of what is there now
        if self.taken:
            self.ready_s = min(self.ready_s, wall_s)
            return
        try:
            folder = _open_folder(self.export_dir)
        except OSError:
            return
        try:
            self.into.mkdir(parents=True, exist_ok=True)
            _copy_file(folder, EXPORT_ERROR, self.into, MAX_ERROR_BYTES)
        except (OSError, _TooLarge):
            remove_tree(self.into)  # no folder: the evaluator says no model was exported
        finally:
            os.close(folder)

    def as_if_cold(self, imports_s: float) -> None:
        """The genome ran in a warm interpreter (:mod:`evo.warm_start`), whose clock starts
        after the imports that the seed's (cold) clock includes: count them in ``ready_s``,
        so that a warm genome gets no more training time than a cold one."""
        self.imports_s = imports_s
        if self.ready_s is not None:
            self.ready_s += imports_s

    def discard(self) -> None:
        """Stop a copy under way and remove the copy."""
        self._stop()
        remove_tree(self.into)

    def _stop(self) -> None:
        self._cancel.set()
        if self._thread is not None:
            self._thread.join()  # within a chunk's copy
            self._thread = None

    def _copy(self) -> None:
        """The copy, in its own thread: ``_copied`` = (taken, when it ended), always set."""
        taken = False
        try:
            taken = self._copy_files()
        except Exception as exc:  # noqa: BLE001 -- whatever it was, the model is not scored
            self.refused, taken = f"the engine could not copy it: {type(exc).__name__}: {exc}", True
        finally:
            if self.refused or not taken:
                remove_tree(self.into)
            self._copied = (taken, time.monotonic())

    def _copy_files(self) -> bool:
        """Copy the three files; whether a snapshot is taken (or refused). False: the export
        changed under the copy (or it was stopped)."""
        remove_tree(self.into)
        try:
            folder = _open_folder(self.export_dir)
        except OSError:
            return False
        try:
            self.into.mkdir(parents=True)
            for name in PROGRAM_FILES:
                limit = MAX_PROGRAM_BYTES if name == PROGRAM_FILES[0] else MAX_TENSOR_FILE_BYTES
                _copy_file(folder, name, self.into, limit, self._cancel)
        except _TooLarge as exc:
            self.refused = str(exc)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                return False  # swapped or removed meanwhile: look again when it changed
            self.refused = f"the engine could not copy it: {exc.strerror}"
        finally:
            os.close(folder)
        return True


class _TooLarge(Exception):
    pass


def _open_folder(path: Path) -> int:
    """A descriptor of ``path`` if it is a real folder (a link is refused). Raises OSError."""
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)


def _complete(export_dir: Path) -> tuple | None:
    """The export files' (inode, size, mtime) if the folder (not a link) holds every one as
    a regular file, else ``None``; checked before anything is copied, so a FIFO or a link
    costs no copy."""
    try:
        folder = _open_folder(export_dir)
    except OSError:
        return None
    try:
        found = []
        for name in PROGRAM_FILES:
            try:
                info = os.stat(name, dir_fd=folder, follow_symlinks=False)
            except OSError:
                return None
            if not stat.S_ISREG(info.st_mode):
                return None
            found.append((info.st_ino, info.st_size, info.st_mtime_ns))
        return tuple(found)
    finally:
        os.close(folder)


def _copy_file(folder: int, name: str, into: Path, limit: int, cancel: threading.Event | None = None) -> None:
    """Copy ``name`` of the open ``folder`` into ``into`` if it is a regular file (not a link,
    FIFO or device) of at most ``limit`` bytes; only its data, holes stay holes. Raises
    OSError (absent, not regular, unreadable, disk full, ``cancel`` set) or _TooLarge."""
    source = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
    try:
        info = os.fstat(source)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, f"{name} is not a regular file")
        if info.st_size > limit:
            raise _TooLarge(f"{name} is {info.st_size:,} bytes, more than the {limit:,} allowed")
        target = os.open(into / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            for start, end in _data_extents(source, info.st_size):
                offset = start
                while offset < end:
                    if cancel is not None and cancel.is_set():
                        raise OSError(errno.ECANCELED, "the copy was stopped")
                    chunk = os.pread(source, min(CHUNK_BYTES, end - offset), offset)
                    if not chunk:
                        break  # truncated meanwhile
                    os.pwrite(target, chunk, offset)
                    offset += len(chunk)
            os.ftruncate(target, info.st_size)
        finally:
            os.close(target)
    finally:
        os.close(source)


def _data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """The (start, end) byte ranges of ``fd`` that hold data (SEEK_DATA / SEEK_HOLE), one at
    a time; the whole file where the file system cannot tell."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA) if hasattr(os, "SEEK_DATA") else offset
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size) if hasattr(os, "SEEK_HOLE") else size
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                return
            start, end = offset, size  # the file system cannot tell: all of the rest
        if start >= size:
            return
        yield start, end
        offset = end
