"""Genome normalisation from several threads at once (proposal threads run beside the engine).

CPython 3.11 shares ast.parse's recursion counter between threads (python/cpython#106905):
when a garbage collection inside one thread's parse runs a finalizer that lets another thread
parse, the first fails with "SystemError: AST constructor recursion depth mismatch". It failed
a CI run of the engine tests; before the lock in evo.genome this test failed every time.
"""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path

from evo.genome import normalize

SEED = (Path(__file__).resolve().parents[1] / "seed_train.py").read_text()
DURATION_S = 1.0  # without the lock, 10 runs out of 10 failed


class _Finalized:
    """Garbage whose finalizer releases the GIL, as an HTTP response or socket in a cycle does."""

    def __del__(self):
        time.sleep(0)


def _at_depth(depth: int, work):
    return work() if depth == 0 else _at_depth(depth - 1, work)


def test_normalize_is_safe_from_threads_at_different_stack_depths():
    errors: list[BaseException] = []
    end = time.monotonic() + DURATION_S

    def churn():
        while time.monotonic() < end and not errors:
            for _ in range(50):
                cycle = _Finalized()
                cycle.self = cycle
                del cycle
            time.sleep(0.001)

    def parse(depth: int):
        while time.monotonic() < end and not errors:
            try:
                _at_depth(depth, lambda: normalize(SEED))
            except BaseException as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(exc)

    try:
        threads = [threading.Thread(target=churn)] + [threading.Thread(target=parse, args=(d,)) for d in (5, 80, 150)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        gc.collect()
    assert errors == []
