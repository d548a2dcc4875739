"""Running one genome: a subprocess in its own process group, a hard wall-clock limit.

Timeouts are enforced by killing the whole process group (the genome and anything it
spawned, such as torch.compile workers), never by a thread that cannot be killed. On
Linux the genome is also asked to die with the engine (``PR_SET_PDEATHSIG``), so a
``kill -9`` of the engine leaves no orphan holding the GPU.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from evo.metrics import classify
from evo.records import Outcome

POLL_INTERVAL_S = 0.25
TERM_GRACE_S = 5.0


@dataclass(frozen=True)
class Tick:
    """Progress of a running genome, passed to the ``on_tick`` callback.

    Attributes:
        elapsed_s: wall seconds since the process started.
        wall_limit_s: the hard limit, seconds.
        last_line: the last non-empty line the genome printed (its progress line).
    """

    elapsed_s: float
    wall_limit_s: float
    last_line: str


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        except OSError:
            pass


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL what is left after a grace period."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=TERM_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _last_line(path: Path, max_bytes: int = 4096) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            chunk = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    for line in reversed(chunk.replace("\r", "\n").splitlines()):
        if line.strip():
            return line.strip()
    return ""


def run_genome(
    genome_file: Path,
    log_file: Path,
    cwd: Path,
    env: Mapping[str, str],
    wall_limit_s: float,
    on_tick: Callable[[Tick], None] | None = None,
    python: str = sys.executable,
) -> Outcome:
    """Run ``python genome_file`` and classify how it ended.

    Args:
        genome_file: the genome's source file.
        log_file: receives its stdout and stderr (overwritten).
        cwd: working directory, put first on PYTHONPATH; holds ``prepare.py``, which the
            genome imports.
        env: extra environment variables (``EVO_PROFILE``, ``EVO_SEED``, ...).
        wall_limit_s: hard limit in seconds; past it the process group is killed and the
            outcome is TIMEOUT.
        on_tick: called about four times a second with a :class:`Tick`.

    Returns:
        The :class:`Outcome` (COMPLETE, FAIL or TIMEOUT).

    Raises:
        KeyboardInterrupt: re-raised after killing the process group, so the caller can
            record the evaluation as INTERRUPTED.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    # The genome file lives under genomes/<run>/ but imports prepare.py from the project.
    python_path = os.pathsep.join(p for p in (str(cwd), os.environ.get("PYTHONPATH", "")) if p)
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1", "PYTHONPATH": python_path}
    start = time.monotonic()
    timed_out = False
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(
            [python, str(genome_file)],
            cwd=str(cwd),
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 -- setsid + pdeathsig, no locks taken
        )
        try:
            while proc.poll() is None:
                elapsed = time.monotonic() - start
                if elapsed > wall_limit_s:
                    timed_out = True
                    _kill_group(proc)
                    break
                if on_tick is not None:
                    on_tick(Tick(elapsed, wall_limit_s, _last_line(log_file)))
                time.sleep(POLL_INTERVAL_S)
        except BaseException:
            _kill_group(proc)
            raise
        # The genome may have left children behind in its group; end them too.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    wall_s = time.monotonic() - start
    text = log_file.read_text(encoding="utf-8", errors="replace")
    return classify(text, proc.returncode, timed_out, wall_s)
