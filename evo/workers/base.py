"""What every kind of evaluation worker shares: a slot's placement, a job, its result.

An evaluation *slot* runs one genome at a time: one GPU, or a share of the CPU cores.
The engine owns the archive and the run's state; a worker pool only runs jobs and hands
back :class:`Finished` results, so a pool (local threads, a Ray cluster) never writes
the archive. In the spirit of Ray's driver/task split: a job that could not run to an end
(a dead node, a killed worker) comes back with ``error`` set, and the engine decides to
re-run it (the evaluation is recorded INTERRUPTED, never counted).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from evo.evaluation import Placement
from evo.records import Outcome
from evo.runner import Tick


@dataclass(frozen=True)
class EvaluationJob:
    """One evaluation the engine has recorded RUNNING and hands to a worker.

    Attributes:
        eval_id: the archive's evaluation id.
        genome_id: the genome evaluated.
        code: its source.
        log_path: where its log is written on the engine's machine.
        env: the harness's variables for it (profile, dataset, ``EVO_SEED``, budget).
        hard_limit_s: wall-clock limit of the genome process, seconds.
        scoring_limit_s: wall seconds past which it is not scored (``None``: none yet).
        seed: whether the genome is the run's seed, whose compile cache may become the
            run's (:mod:`evo.compile_cache`).
        ready_limit_s: wall seconds by which its model must be exported to be scored
            (:mod:`evo.model_snapshot`; ``None``: none yet).
    """

    eval_id: int
    genome_id: str
    code: str
    log_path: Path
    env: dict[str, str]
    hard_limit_s: float
    scoring_limit_s: float | None
    seed: bool = False
    ready_limit_s: float | None = None


@dataclass(frozen=True)
class Finished:
    """A job that came back.

    Attributes:
        job: the job.
        device: where it ran (the slot's placement name; for Ray, the node and GPU).
        outcome: the evaluation's outcome, or ``None`` when ``error`` is set.
        error: why the job could not run to an end (worker or node died, the harness
            changed); the engine records the evaluation INTERRUPTED.
        started_s, finished_s: ``time.monotonic()`` on the engine's machine when the job
            was handed to the slot and when its result was taken (slot utilization).
    """

    job: EvaluationJob
    device: str
    outcome: Outcome | None
    error: BaseException | None = None
    started_s: float = 0.0
    finished_s: float = 0.0


@dataclass(frozen=True)
class Running:
    """A job in flight, for progress displays: which slot, since when."""

    job: EvaluationJob
    device: str
    started_s: float


__all__ = ["EvaluationJob", "Finished", "Placement", "Running", "TickCallback", "WorkerLostError", "WorkerPool"]


class WorkerLostError(RuntimeError):
    """The worker or node running a job died; the evaluation is re-run, never counted."""

TickCallback = Callable[[str, Tick], None]  # (device, tick), called from worker threads


class WorkerPool(Protocol):
    """Runs evaluation jobs on a fixed number of slots.

    The engine calls it from one thread; ``on_tick`` may be called from others.
    """

    @property
    def slots(self) -> int:
        """How many jobs may run at once."""
        ...

    def free(self) -> int:
        """Slots with no job (a job submitted now starts at once)."""
        ...

    def submit(self, job: EvaluationJob) -> str:
        """Start ``job`` on a free slot; returns the slot's placement name.

        Raises:
            RuntimeError: no slot is free.
        """
        ...

    def wait(self, timeout_s: float) -> list[Finished]:
        """Jobs that finished, waiting up to ``timeout_s`` for the first one ([] on timeout)."""
        ...

    def next_device(self) -> str:
        """What is recorded as the device of the next submitted job (``ray`` until a Ray
        task reports its node)."""
        ...

    def running(self) -> list[Running]:
        """The jobs in flight."""
        ...

    def close(self) -> None:
        """Stop: kill every job in flight and release the slots (idempotent)."""
        ...
