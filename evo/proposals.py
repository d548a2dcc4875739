"""Child proposals made ahead of time, in threads, while genomes train.

An LLM answer takes tens of seconds; a genome trains for minutes. The engine submits the
proposals of a generation's open slots as soon as their parents are known, and takes
them when a slot comes up (see :mod:`evo.scheduler`). Proposals never run more than one
cohort ahead (the next cohort's parents are not known until this one is evaluated).

Workers are daemon threads: on Ctrl-C the engine abandons what is pending and waits a
few seconds at most for the jobs already running; a longer one (an LLM call in flight,
which cannot be killed) ends with the process.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Generic, TypeVar

T = TypeVar("T")
CLOSE_WAIT_S = 5.0  # how long close() waits for running jobs


class ProposalPool(Generic[T]):
    """Runs submitted jobs on ``workers`` daemon threads; each job is taken by its key.

    Args:
        workers: jobs running at once (at least 1).
    """

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._futures: dict[Hashable, Future[T]] = {}
        self._jobs: queue.SimpleQueue[tuple[Future[T], Callable[[], T]] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def __contains__(self, key: Hashable) -> bool:
        return key in self._futures

    def __len__(self) -> int:
        return len(self._futures)

    def submit(self, key: Hashable, job: Callable[[], T]) -> None:
        """Start ``job`` for ``key`` on a worker, unless one was submitted for it already."""
        if key in self._futures:
            return
        future: Future[T] = Future()
        self._futures[key] = future
        self._jobs.put((future, job))
        if len(self._threads) < self.workers:
            thread = threading.Thread(target=self._work, name=f"evo-proposal-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def take(self, key: Hashable) -> T:
        """The result of ``key``'s job, waiting for it if needed; the key is then forgotten.

        Raises:
            KeyError: nothing was submitted for ``key``.
            Exception: whatever the job raised.
        """
        return self._futures.pop(key).result()

    def keys(self) -> list[Hashable]:
        """Keys submitted and not yet taken."""
        return list(self._futures)

    def wait_any(self, timeout_s: float) -> None:
        """Return once some submitted job has finished, or after ``timeout_s``."""
        if self._futures:
            wait(list(self._futures.values()), timeout=timeout_s, return_when=FIRST_COMPLETED)

    def ready(self, key: Hashable) -> bool:
        """Whether ``key``'s job has finished."""
        return key in self._futures and self._futures[key].done()

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Abandon pending jobs and let the workers end, waiting up to ``wait_s`` seconds
        for jobs already running (a parse in libcst's native code cut off by the end of
        the interpreter can abort the process); a longer job (an LLM call) is left to end
        with the process."""
        for future in self._futures.values():
            future.cancel()
        self._futures.clear()
        for _ in self._threads:
            self._jobs.put(None)
        deadline = time.monotonic() + wait_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()

    def _work(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            future, job = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:  # noqa: BLE001 (handed to the taker)
                future.set_exception(exc)
