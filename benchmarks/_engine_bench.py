"""Helpers shared by the engine benchmarks (``slots.py``, ``engine_scaling.py``): a temporary
smoke project with its data prepared, the torch-free fake genome with a fixed duration, a
reporter that records when evaluations start and finish, and interval arithmetic.

Not a benchmark itself.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from conftest import FAKE_GENOME  # noqa: E402  (tests/conftest.py: the torch-free fake genome)

SLEEP_LINE = "    time.sleep(SLEEP_S)\n"
SLEEP_CONSTANT = "SLEEP_S = 0.0  # seconds to pretend to train\n"


def fake_genome(sleep_s: float, constants: dict[str, str] | None = None) -> str:
    """The fake genome of the tests, "training" exactly ``sleep_s`` seconds.

    The duration is written as a literal into the genome's body, not only into its
    ``SLEEP_S`` constant: the mutation operators perturb every ALL_CAPS constant, so a
    child could otherwise sleep 3 s or 9 s and the timings would measure the operators'
    luck. ``SLEEP_S`` is still set (and mutated) but no longer changes the duration.

    Args:
        constants: ALL_CAPS name -> source text of its new value (e.g. ``{"LR": "0.0123"}``),
            replaced on the constant's line with a string replace (fast: no libcst).
    """
    assert SLEEP_LINE in FAKE_GENOME and SLEEP_CONSTANT in FAKE_GENOME, "tests/conftest.py FAKE_GENOME changed"
    code = FAKE_GENOME.replace(SLEEP_LINE, f"    time.sleep({float(sleep_s)!r})\n")
    code = code.replace(SLEEP_CONSTANT, f"SLEEP_S = {float(sleep_s)!r}  # seconds to pretend to train\n")
    for name, value in (constants or {}).items():
        start = code.index(f"\n{name} = ") + 1
        end = code.index("  #", start)
        code = code[:start] + f"{name} = {value}" + code[end:]
    return code


def clean_up_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit``, so that ``kill`` still removes the temporary folders."""

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def make_project(root: Path) -> Path:
    """A project folder under ``root`` holding evo's ``prepare.py``, its smoke data prepared
    in ``root/cache`` (``EVO_CACHE_DIR`` is set in this process's environment, so the
    engine, the genomes and Ray's workers all see it)."""
    project = root / "project"
    project.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "prepare.py", project / "prepare.py")
    os.environ["EVO_CACHE_DIR"] = str(root / "cache")
    subprocess.run([sys.executable, "prepare.py", "--profile", "smoke"], cwd=project, check=True,
                   capture_output=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return project


class TimingReporter:
    """A silent reporter that notes the process CPU time (``time.process_time``: every thread
    of this process, children excluded) and the monotonic time at each start and finish."""

    def __init__(self) -> None:
        self.starts: list[tuple[float, float]] = []  # (monotonic, process CPU)
        self.finishes: list[tuple[float, float]] = []
        self.messages: list[str] = []

    def generation_started(self, generation, population):
        pass

    def genome_started(self, genome, index, population, attempt, device, budget_s=None):
        self.starts.append((time.monotonic(), time.process_time()))

    def tick(self, device, tick):
        pass

    def genome_finished(self, genome, evaluation, best):
        self.finishes.append((time.monotonic(), time.process_time()))

    def generation_finished(self, generation, best, results):
        pass

    def message(self, text):
        self.messages.append(text)


Interval = tuple[float, float]


def busy_seconds(intervals: Iterable[Interval], lo: float, hi: float) -> float:
    """Seconds of ``intervals`` (not overlapping each other) inside ``[lo, hi]``."""
    return sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in intervals)


def lanes(intervals: Sequence[Interval], count: int) -> list[list[Interval]]:
    """Split intervals into ``count`` lanes of non-overlapping ones (each interval to the lane
    that freed last before it started: a slot is reused by the next job the engine starts).

    Used where the archive's device does not name the slot (every Ray task on one node is
    ``ray:<ip>/cpu``). Raises ``ValueError`` if more than ``count`` overlap.
    """
    result: list[list[Interval]] = [[] for _ in range(count)]
    ends = [float("-inf")] * count
    for a, b in sorted(intervals):
        free = [i for i in range(count) if ends[i] <= a + 1e-6]
        if not free:
            raise ValueError(f"more than {count} evaluations overlap at {a}")
        i = max(free, key=lambda k: ends[k])
        result[i].append((a, b))
        ends[i] = b
    return result


def gaps(lane: Sequence[Interval]) -> list[float]:
    """Idle seconds between consecutive intervals of one lane."""
    ordered = sorted(lane)
    return [b[0] - a[1] for a, b in zip(ordered, ordered[1:], strict=False)]


def fmt_stats(values: Sequence[float], digits: int = 2) -> str:
    """``median/max`` of ``values`` (``-`` when empty)."""
    if not values:
        return "-"
    return f"{statistics.median(values):.{digits}f}/{max(values):.{digits}f}"
