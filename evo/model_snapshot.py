"""The model a genome exports, copied out of its reach the moment the engine first sees it.

A genome's wall time is all the engine can measure of its training: what the genome prints,
and any signal from its own process, it can forge. The wall time of the whole process
includes the work after training (the export, the harness's own pass over the training
slice), which grows with the model, so the limit on it has to be generous, and a genome
could spend that slack on more training. This module bounds the training itself: the
engine looks at the genome's export folder about four times a second while it runs, and
the first time it holds every file of a complete export (:data:`evo.evaluator.PROGRAM_FILES`,
regular files) it copies them into a folder of its own. That copy is what the trusted
evaluator scores, and ``ready_s``, the wall second it was taken, bounds the model's
training: whatever the genome does later (more training, a second export, rewriting the
files through a descriptor it kept open) is never seen. The engine then holds ``ready_s``
to the run's *model-ready limit* (:func:`ready_limit_s`), which is tight because it
excludes the work after the export.

A genome that exits before a poll saw its export is snapshotted at its exit, with
``ready_s`` its wall time. Links, FIFOs and oversized files are never read.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from evo.evaluator import MAX_PROGRAM_BYTES, MAX_TENSOR_FILE_BYTES, PROGRAM_FILES
from evo.genome import remove_tree

EXPORT_ERROR = "export_error.txt"  # written by prepare.export_model when torch.export failed
MAX_ERROR_BYTES = 16 * 2**10
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
    """Copies of a genome's first complete export, taken while it runs.

    Args:
        export_dir: the genome's export folder (in its workspace; it may not exist yet).
        into: a folder of the engine's, out of the genome's sandbox; created on the
            snapshot, removed by :meth:`discard`.

    Attributes:
        ready_s: wall seconds from the genome's start to the snapshot (``None``: none yet).
        refused: why a complete export could not be taken (a file too large), if so.
    """

    def __init__(self, export_dir: Path, into: Path) -> None:
        self.export_dir = export_dir
        self.into = into
        self.ready_s: float | None = None
        self.refused: str | None = None

    @property
    def taken(self) -> bool:
        return self.ready_s is not None

    def poll(self, elapsed_s: float) -> bool:
        """Take the snapshot if the export is complete now; ``elapsed_s``: the genome's wall
        seconds so far. Returns whether a snapshot is taken (now or before). Never raises
        for what the genome did to its folder: an unreadable export is tried again later."""
        if self.taken:
            return True
        if not _is_real_dir(self.export_dir):
            return False
        try:
            names = set(os.listdir(self.export_dir))
        except OSError:
            return False
        if not all(name in names and _is_regular(self.export_dir / name) for name in PROGRAM_FILES):
            return False  # (checked before anything is copied, so a FIFO or link costs no copy)
        remove_tree(self.into)
        try:
            self.into.mkdir(parents=True)
            for name in PROGRAM_FILES:
                _copy_regular(self.export_dir / name, self.into / name, _limit(name))
        except _TooLarge as exc:
            self.refused = str(exc)
        except OSError as exc:
            remove_tree(self.into)
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                return False  # swapped or removed meanwhile: look again at the next tick
            self.refused = f"the engine could not copy it: {exc.strerror}"
        if self.refused:
            remove_tree(self.into)
        self.ready_s = elapsed_s
        return True

    def at_exit(self, wall_s: float) -> None:
        """The genome's processes are gone: take the snapshot now if no poll did (``ready_s``
        = ``wall_s``); without a complete export, keep its ``export_error.txt`` (why
        torch.export failed), if any, for the evaluator to report."""
        if self.poll(wall_s):
            return
        if not _is_real_dir(self.export_dir):
            return
        try:
            self.into.mkdir(parents=True, exist_ok=True)
            _copy_regular(self.export_dir / EXPORT_ERROR, self.into / EXPORT_ERROR, MAX_ERROR_BYTES)
        except (OSError, _TooLarge):
            remove_tree(self.into)  # no folder: the evaluator says no model was exported

    def discard(self) -> None:
        remove_tree(self.into)


class _TooLarge(Exception):
    pass


def _limit(name: str) -> int:
    return MAX_PROGRAM_BYTES if name == PROGRAM_FILES[0] else MAX_TENSOR_FILE_BYTES


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _copy_regular(source: Path, target: Path, limit: int) -> None:
    """Copy ``source`` if it is a regular file (not a link, FIFO or device) of at most
    ``limit`` bytes. Raises OSError (absent, not regular, unreadable) or _TooLarge."""
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{source.name} is not a regular file")
        if info.st_size > limit:
            raise _TooLarge(f"{source.name} is {info.st_size:,} bytes, more than the {limit:,} allowed")
        with os.fdopen(os.dup(fd), "rb") as src, open(target, "xb") as dst:
            copied = 0
            while chunk := src.read(1 << 22):
                copied += len(chunk)
                if copied > limit:
                    raise _TooLarge(f"{source.name} grew past the {limit:,} bytes allowed")
                dst.write(chunk)
    finally:
        os.close(fd)
