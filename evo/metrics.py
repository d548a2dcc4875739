"""Reading a genome's log: the summary block, and why a run failed.

The genome contract: after training, a genome prints a line ``---`` and then
``key: value`` lines (``val_bpb``, ``training_seconds``, ...). On a NaN or exploding
loss it prints ``FAIL`` and exits 1.
"""

from __future__ import annotations

import math
import re

from evo.records import EvalState, FailureKind, Outcome

_KEY_VALUE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):\s*(\S+)\s*$")
_OOM_PATTERNS = (
    "out of memory",
    "outofmemoryerror",
    "memoryerror",
    "cuda error: out of memory",
    "cannot allocate memory",
)
LOG_TAIL_LINES = 60


def parse_summary(log: str) -> dict[str, float]:
    """The key/value lines after the last ``---`` line of a log.

    Returns:
        ``{key: float}``; non-numeric values are skipped; empty when there is no block.
    """
    lines = log.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "---"]
    if not starts:
        return {}
    metrics: dict[str, float] = {}
    for line in lines[starts[-1] + 1 :]:
        match = _KEY_VALUE.match(line.strip())
        if not match:
            continue
        try:
            metrics[match.group(1)] = float(match.group(2))
        except ValueError:
            continue
    return metrics


def tail(log: str, n_lines: int = LOG_TAIL_LINES) -> str:
    """The last ``n_lines`` lines of a log (each cut at 1,000 characters)."""
    return "\n".join(line[:1000] for line in log.splitlines()[-n_lines:])


def last_error_line(log: str) -> str | None:
    for line in reversed(log.splitlines()):
        stripped = line.strip()
        if re.match(r"^[A-Za-z_.]*(Error|Exception|Interrupt)\b", stripped) or stripped.startswith("RuntimeError"):
            return stripped[:500]
    return None


def classify(log: str, returncode: int | None, timed_out: bool, wall_s: float) -> Outcome:
    """Turn a finished process's log and exit status into an :class:`Outcome`.

    Args:
        log: everything the process wrote (stdout and stderr).
        returncode: the exit status (negative: killed by that signal), ``None`` if unknown.
        timed_out: the engine killed the process at its wall-clock limit.
        wall_s: wall-clock seconds of the process.

    Returns:
        COMPLETE when a summary with a finite val_bpb was printed and the process exited 0;
        otherwise TIMEOUT, or FAIL with kind ``nan`` (a ``FAIL`` line or a non-finite
        val_bpb), ``oom``, ``crash`` (non-zero exit) or ``no_summary``.
    """
    metrics = parse_summary(log)
    log_tail = tail(log)
    lines = {line.strip() for line in log.splitlines()}
    lowered = log.lower()
    val_bpb = metrics.get("val_bpb")

    def fail(kind: FailureKind, error: str | None, state: EvalState = EvalState.FAIL) -> Outcome:
        return Outcome(state, wall_s, returncode, metrics, kind, error, log_tail)

    if timed_out:
        return fail(FailureKind.TIMEOUT, f"killed at the wall-clock limit after {wall_s:.0f} s", EvalState.TIMEOUT)
    if "FAIL" in lines:
        return fail(FailureKind.NAN, "the genome reported FAIL (NaN or exploding loss)")
    if returncode == 0 and val_bpb is not None and math.isfinite(val_bpb):
        return Outcome(EvalState.COMPLETE, wall_s, returncode, metrics, None, None, log_tail)
    if val_bpb is not None and not math.isfinite(val_bpb):
        return fail(FailureKind.NAN, f"val_bpb is {val_bpb}")
    if any(p in lowered for p in _OOM_PATTERNS):
        return fail(FailureKind.OOM, last_error_line(log) or "out of memory")
    if returncode not in (0, None):
        reason = last_error_line(log) or (
            f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
        )
        return fail(FailureKind.CRASH, reason)
    return fail(FailureKind.NO_SUMMARY, "the process ended without a summary block with val_bpb")
