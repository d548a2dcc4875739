"""Resource limits of one genome process tree: file size, process count, memory.

Two mechanisms, the stronger first:

* **cgroups** (v2, or v1's ``pids`` and ``memory`` hierarchies), where this process may
  create them (root, or a delegated subtree): ``pids.max`` and the memory limit hold for
  the whole tree, and :meth:`Confinement.kill_all` ends every process in the group,
  detached or not.
* **rlimits** otherwise (``RLIMIT_NPROC``, ``RLIMIT_AS``): per process, and the kernel
  does not apply ``RLIMIT_NPROC`` to root; ``RLIMIT_AS`` is never set on the gpu profile,
  where CUDA reserves far more address space than it uses.

``RLIMIT_FSIZE`` (the largest file a genome may write) and ``RLIMIT_CORE = 0`` are always
set. The limits are applied by the launcher :mod:`evo.confine`, a single-threaded process
that joins the cgroup and sets the rlimits before it execs the sandbox, so the engine's
threads never run code between fork and exec.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
_counter = itertools.count()


@dataclass(frozen=True)
class ProcessLimits:
    """Limits of one evaluation's processes (``None``: no limit).

    Attributes:
        max_file_size_mb: the largest file any of them may write, MiB.
        max_processes: processes (and threads) alive at once in the tree.
        max_memory_mb: resident memory of the tree (cgroup) or address space of each
            process (rlimit), MiB.
        address_space_ok: whether an address-space rlimit may stand in for the memory
            limit (``False`` on CUDA).
    """

    max_file_size_mb: int | None = 16384
    max_processes: int | None = 1024
    max_memory_mb: int | None = None
    address_space_ok: bool = True


def default_memory_mb(fraction: float = 0.8) -> int | None:
    """``fraction`` of this machine's physical memory, MiB (``None`` where unknown)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * fraction / 2**20)
    except (ValueError, OSError, AttributeError):
        return None


class Confinement:
    """A cgroup for one evaluation when one can be made, else rlimits alone.

    Use as a context manager: the group is removed (after killing what is left in it) on exit.

    Attributes:
        mechanism: ``cgroup2``, ``cgroup1`` or ``rlimit``: what enforces processes and memory.
        cgroup_dirs: the cgroup folders the launcher joins (empty for ``rlimit``).
    """

    def __init__(self, limits: ProcessLimits, root: Path = CGROUP_ROOT) -> None:
        self.limits = limits
        self.cgroup_dirs: list[Path] = []
        self.mechanism = "rlimit"
        name = f"evo-{os.getpid()}-{next(_counter)}"
        try:
            self._make_v2(root, name) if (root / "cgroup.controllers").is_file() else self._make_v1(root, name)
        except OSError:
            self._remove()
            self.cgroup_dirs, self.mechanism = [], "rlimit"

    # ------------------------------------------------------------------ set-up

    def _make_v2(self, root: Path, name: str) -> None:
        enabled = (root / "cgroup.subtree_control").read_text().split()
        missing = [c for c in ("pids", "memory") if c not in enabled]
        if missing:
            (root / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in missing))
        group = root / name
        group.mkdir()
        self.cgroup_dirs = [group]
        self._write(group / "pids.max", self.limits.max_processes)
        self._write(group / "memory.max", self._memory_bytes())
        self._write(group / "memory.swap.max", 0 if self.limits.max_memory_mb else None, required=False)
        self.mechanism = "cgroup2"

    def _make_v1(self, root: Path, name: str) -> None:
        pids, memory = root / "pids" / name, root / "memory" / name
        if not (root / "pids" / "cgroup.procs").is_file() or not (root / "memory" / "cgroup.procs").is_file():
            raise OSError("no cgroup v1 pids and memory hierarchies")
        for group in (pids, memory):
            group.mkdir()
            self.cgroup_dirs.append(group)
        self._write(pids / "pids.max", self.limits.max_processes)
        self._write(memory / "memory.limit_in_bytes", self._memory_bytes())
        self.mechanism = "cgroup1"

    def _memory_bytes(self) -> int | None:
        return self.limits.max_memory_mb * 2**20 if self.limits.max_memory_mb else None

    @staticmethod
    def _write(path: Path, value: int | None, required: bool = True) -> None:
        if value is None:
            return
        try:
            path.write_text(str(value))
        except OSError:
            if required:
                raise

    # ------------------------------------------------------------------ launcher arguments

    def launcher_args(self) -> list[str]:
        """Arguments of :mod:`evo.confine` that apply these limits to the launched tree."""
        args: list[str] = []
        if self.limits.max_file_size_mb:
            args += ["--fsize-mb", str(self.limits.max_file_size_mb)]
        for group in self.cgroup_dirs:
            args += ["--cgroup", str(group)]
        if self.mechanism == "rlimit":
            if self.limits.max_processes:
                args += ["--nproc", str(self.limits.max_processes)]
            if self.limits.max_memory_mb and self.limits.address_space_ok:
                args += ["--as-mb", str(self.limits.max_memory_mb)]
        return args

    def command(self, python: str, argv: list[str], cpus: tuple[int, ...] = ()) -> list[str]:
        """``argv`` (already wrapped by the sandbox) run through the launcher :mod:`evo.confine`
        with ``python``: in these limits and cgroup, pinned to ``cpus`` when given."""
        pinned = ["--cpus", ",".join(map(str, cpus))] if cpus else []
        return [python, "-m", "evo.confine", *self.launcher_args(), *pinned, "--", *argv]

    def describe(self) -> str:
        """One line: what limits what, for the run's start message and the archive."""
        mb = self.limits.max_memory_mb
        memory = f"{mb} MiB" if mb and (self.mechanism != "rlimit" or self.limits.address_space_ok) else "none"
        return (f"{self.mechanism}: processes {self.limits.max_processes or 'unlimited'}, memory {memory}, "
                f"file size {self.limits.max_file_size_mb or 'unlimited'} MiB")

    # ------------------------------------------------------------------ tear-down

    def pids(self) -> set[int]:
        """Processes still in the group (empty for ``rlimit``)."""
        found: set[int] = set()
        for group in self.cgroup_dirs:
            try:
                found.update(int(p) for p in (group / "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                continue
        return found

    def kill_all(self, timeout_s: float = 10.0) -> None:
        """SIGKILL every process in the group until none is left (or ``timeout_s`` passed)."""
        if not self.cgroup_dirs:
            return
        kill_file = self.cgroup_dirs[0] / "cgroup.kill"
        if self.mechanism == "cgroup2" and kill_file.exists():
            try:
                kill_file.write_text("1")
            except OSError:
                pass
        deadline = time.monotonic() + timeout_s
        while (left := self.pids()) and time.monotonic() < deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.05)

    def _remove(self) -> None:
        for group in reversed(self.cgroup_dirs):
            for _ in range(50):
                try:
                    group.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)

    def __enter__(self) -> Confinement:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill_all()
        self._remove()
