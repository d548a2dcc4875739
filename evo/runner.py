"""Running one untrusted process: its own session, a hard wall-clock limit, a bounded log.

Timeouts are enforced by killing the whole process group (and, where the evaluation has
one, its cgroup), never by a thread that cannot be killed. The process's stdout and
stderr go through a pipe to :class:`LogSink`, which writes at most ``max_log_bytes`` to
the log file and keeps only a bounded tail in memory, however much the process prints.
A process may be started ahead of need and held at a :class:`Gate` (the warm trusted
evaluator, :mod:`evo.warm_evaluator`; a slot's next genome interpreter,
:mod:`evo.warm_start`): its wall-clock limit counts from its release.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

POLL_INTERVAL_S = 0.25
TERM_GRACE_S = 5.0
MAX_LOG_BYTES = 8 * 2**20  # a log on disk: its first bytes, then a marker and its tail
TAIL_BYTES = 256 * 2**10  # kept in memory: the end of the output, where the summary is
_CHUNK = 64 * 2**10


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


@dataclass(frozen=True)
class ProcessResult:
    """How a process ended, as the engine measured it.

    Attributes:
        returncode: exit status (negative: killed by that signal).
        wall_s: wall-clock seconds from start to exit, measured by the engine.
        timed_out: killed at the wall-clock limit.
        tail: the last :data:`TAIL_BYTES` of its output, decoded.
        output_bytes: everything it printed, bytes (the log holds at most ``max_log_bytes``).
    """

    returncode: int | None
    wall_s: float
    timed_out: bool
    tail: str
    output_bytes: int


class Gate:
    """Holds a started process until it is needed: :meth:`release` writes a message
    (``go``) to its stdin and starts its wall-clock limit; :meth:`cancel` kills it, held
    or released (thread-safe: the engine's thread decides, :func:`run_process` acts).

    Attributes:
        message: the line written at the release (ends with a newline).
        wall_limit_s: the limit from the release, when it was given then (``None``: the
            one :func:`run_process` was called with).
        delivered: :func:`run_process` wrote the message to a process that was still there.
        holding: set by :func:`run_process` once the process runs and its log file is open.
    """

    def __init__(self) -> None:
        self._decided = threading.Event()
        self._lock = threading.Lock()
        self.released = False
        self.cancelled = False
        self.message = b"go\n"
        self.wall_limit_s: float | None = None
        self.delivered = False
        self.holding = threading.Event()

    def release(self, message: bytes = b"go\n", wall_limit_s: float | None = None) -> None:
        with self._lock:
            if not self.cancelled:
                self.message, self.wall_limit_s = message, wall_limit_s
                self.released = True
                self._decided.set()

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            self._decided.set()

    def wait(self, timeout_s: float) -> bool:
        """Whether it was released or cancelled within ``timeout_s`` seconds."""
        return self._decided.wait(timeout_s)


class LogSink:
    """Copies a pipe into a log file with a cap, keeping a bounded tail in memory.

    The first ``max_bytes - tail_bytes`` bytes go to the file as they come (flushed at
    once, so ``tail -f`` shows a running genome's progress); past that only
    the latest ``tail_bytes`` are kept, and :meth:`close` appends a line saying how much
    was dropped, then that tail. Memory use is ``O(tail_bytes)`` whatever is printed.
    """

    def __init__(self, pipe, path: Path, max_bytes: int = MAX_LOG_BYTES, tail_bytes: int = TAIL_BYTES) -> None:
        self.path = path
        self.head_limit = max(0, max_bytes - tail_bytes)
        self.tail_bytes = tail_bytes
        self.total = 0
        self._written = 0
        self._tail = bytearray()
        self._lock = threading.Lock()
        self._file = open(path, "wb")
        self._thread = threading.Thread(target=self._pump, args=(pipe,), name=f"log {path.name}", daemon=True)
        self._thread.start()

    def _pump(self, pipe) -> None:
        try:
            while chunk := pipe.read1(_CHUNK) if hasattr(pipe, "read1") else pipe.read(_CHUNK):
                with self._lock:
                    self.total += len(chunk)
                    room = self.head_limit - self._written
                    if room > 0:
                        self._file.write(chunk[:room])
                        self._file.flush()  # on disk as it comes: a user follows a running genome's log
                        self._written += min(room, len(chunk))
                    self._tail += chunk
                    if len(self._tail) > self.tail_bytes:
                        del self._tail[: len(self._tail) - self.tail_bytes]
        except (OSError, ValueError):
            pass
        finally:
            pipe.close()

    def tail(self) -> str:
        """The last bytes printed so far, decoded (invalid UTF-8 replaced)."""
        with self._lock:
            return bytes(self._tail).decode("utf-8", errors="replace")

    def close(self, timeout_s: float = 10.0) -> None:
        """Wait for the pipe's end, then finish the file (marker and tail if output was dropped)."""
        self._thread.join(timeout_s)
        with self._lock:
            if self.total > self._written:
                kept = min(len(self._tail), self.total - self._written)
                dropped = self.total - self._written - kept
                if dropped:
                    self._file.write(f"\n[evo: {dropped:,} bytes of output dropped from this log]\n".encode())
                self._file.write(bytes(self._tail[len(self._tail) - kept :]))
            self._file.close()


def last_line(text: str) -> str:
    for line in reversed(text[-4096:].replace("\r", "\n").splitlines()):
        if line.strip():
            return line.strip()
    return ""


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL what is left after a grace period."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    try:
        proc.wait(timeout=TERM_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _go(proc: subprocess.Popen, message: bytes) -> bool:
    """Write the release message; whether it was written (the process's stdin still open)."""
    try:
        proc.stdin.write(message)
        proc.stdin.close()
    except (OSError, ValueError):  # a broken pipe: it ended while held
        return False  # its exit status and output say why
    return True


def run_process(
    argv: Sequence[str],
    log_file: Path,
    cwd: Path,
    env: Mapping[str, str],
    wall_limit_s: float,
    on_tick: Callable[[Tick], None] | None = None,
    max_log_bytes: int = MAX_LOG_BYTES,
    on_exit: Callable[[], None] | None = None,
    gate: Gate | None = None,
) -> ProcessResult:
    """Run ``argv`` in its own session with exactly ``env``, logging to ``log_file``.

    Args:
        argv: the command (already wrapped by the launcher and the sandbox).
        log_file: receives its stdout and stderr, at most ``max_log_bytes`` (overwritten).
        cwd: working directory.
        env: the complete environment (nothing of this process's is added).
        wall_limit_s: hard limit in seconds; past it the process group is killed.
        on_tick: called about four times a second with a :class:`Tick`.
        on_exit: called once the process has ended (or been killed), before returning;
            e.g. to kill what it left in its cgroup.
        gate: hold the process (its stdin a pipe) until the gate is released, then write
            the gate's message and close its stdin; ``wall_limit_s`` (or the gate's) and
            ``wall_s`` count from the release. A cancelled gate kills it (``timed_out``
            false; ``wall_s`` 0 when it was still held).

    Returns:
        The :class:`ProcessResult`.

    Raises:
        KeyboardInterrupt: re-raised after killing the process group.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    timed_out = False
    proc = subprocess.Popen(
        list(argv), cwd=str(cwd), env=dict(env), stdin=subprocess.DEVNULL if gate is None else subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    sink = LogSink(proc.stdout, log_file, max_log_bytes)
    try:
        held = gate is not None
        if gate is not None:
            gate.holding.set()
        while proc.poll() is None:
            if held:
                if not gate.wait(POLL_INTERVAL_S):
                    continue
                if not gate.cancelled:
                    held = False
                    gate.delivered = _go(proc, gate.message)
                    start = time.monotonic()
                    wall_limit_s = gate.wall_limit_s if gate.wall_limit_s is not None else wall_limit_s
            if gate is not None and gate.cancelled:
                _kill_group(proc)
                break
            elapsed = time.monotonic() - start
            if elapsed > wall_limit_s:
                timed_out = True
                _kill_group(proc)
                break
            if on_tick is not None:
                on_tick(Tick(elapsed, wall_limit_s, last_line(sink.tail())))
            try:
                proc.wait(POLL_INTERVAL_S)  # returns as soon as it exits
            except subprocess.TimeoutExpired:
                pass
        wall_s = 0.0 if held else time.monotonic() - start
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        try:  # whatever is left in its group
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if on_exit is not None:
            on_exit()
        sink.close()
        if proc.stdin is not None:
            proc.stdin.close()
    return ProcessResult(proc.returncode, wall_s, timed_out, sink.tail(), sink.total)


def read_tail(path: Path, max_bytes: int = TAIL_BYTES) -> str:
    """The last ``max_bytes`` of a file, decoded ("" if it cannot be read)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - max_bytes))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
