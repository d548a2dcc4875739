"""Evaluation workers: where the engine's jobs run (local slots, a Ray cluster)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from evo.evaluation import EvaluationSetup
from evo.workers.base import (
    EvaluationJob,
    Finished,
    Placement,
    Running,
    TickCallback,
    WorkerLostError,
    WorkerPool,
)
from evo.workers.local import LocalPool, cpu_placements, gpu_placements

__all__ = [
    "EvaluationJob", "Execution", "Finished", "LocalPool", "Placement", "Running", "TickCallback", "WorkerLostError",
    "WorkerPool", "make_pool",
]


@dataclass(frozen=True)
class Execution:
    """Where a run's evaluations go; chosen at each ``evo start`` / ``evo resume``, not
    stored with the run (a resumed run may use other GPUs or a cluster).

    Attributes:
        workers: evaluation slots: CPU shares on this machine, or Ray tasks at once
            (``None``: one on CPU; on Ray, every GPU of the cluster, else one).
        gpus: CUDA devices of this machine, one slot each (``None``: device 0 on a GPU run).
        ray: a Ray cluster's address, ``auto`` (the one ``ray start`` made here) or
            ``local`` (a Ray instance of this process); ``None``: no Ray.
        warm_start: slots on this machine start their next genome's interpreter while the
            current genome finishes (:mod:`evo.warm_start`); ``None``: on GPU slots only
            (on CPU slots its imports would compete for the cores the current genome's
            export and trusted evaluation use).
    """

    workers: int | None = None
    gpus: tuple[int, ...] | None = None
    ray: str | None = None
    warm_start: bool | None = None

    def warm(self, gpu: bool) -> bool:
        """Whether local slots start their next genome's interpreter early."""
        return gpu if self.warm_start is None else self.warm_start

    def local_slots(self, gpu: bool) -> int:
        """Slots on this machine (what each genome's memory limit is divided by)."""
        if self.ray is not None:
            return 1
        if gpu:
            return len(self.gpus) if self.gpus else 1
        return self.workers or 1


def make_pool(
    execution: Execution, setup: EvaluationSetup, genome_dir: Path, device: str, on_tick: TickCallback | None,
) -> WorkerPool:
    """The worker pool for ``execution``.

    Raises:
        ValueError: ``--ray`` without Ray installed (``pip install -e ".[ray]"``).
    """
    if execution.ray is not None:
        try:
            from evo.workers.ray_pool import RayPool
        except ImportError as exc:
            raise ValueError(f"--ray needs Ray on this machine: pip install -e '.[ray]' ({exc})") from exc

        return RayPool(setup, genome_dir, execution.ray, execution.workers, setup.gpu, on_tick)
    if setup.gpu:
        placements = gpu_placements(execution.gpus or (0,))
    else:
        placements = cpu_placements(execution.workers or 1, name=device)
    return LocalPool(setup, placements, genome_dir, on_tick)
