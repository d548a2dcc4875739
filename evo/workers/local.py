"""Evaluation slots on this machine: one per GPU, or shares of the CPU cores.

Each job runs :func:`evo.evaluation.evaluate_genome` in a thread of its own (the genome
itself is a sandboxed process; the thread only waits on it), with its slot's
:class:`Placement`: ``CUDA_VISIBLE_DEVICES`` and only that GPU's device node, or a
pinned set of cores with matching thread counts. A GPU is never found by polling which
card looks free: slot i always owns its device. When a slot's genome is done training,
the slot's next genome interpreter is started and held (:mod:`evo.warm_start`; off with
``EvaluationSetup.warm_start`` false); the slot's next job takes it over.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from evo import genome as genome_files
from evo.evaluation import EvaluationSetup, Placement, evaluate_genome, start_warm
from evo.runner import Tick
from evo.sandbox import gpu_identity
from evo.warm_start import WarmStart
from evo.workers.base import EvaluationJob, Finished, Running, TickCallback

_WARM_NAMES = itertools.count()  # warm starts of this process: <genome_dir>/_warm<pid>-<n>.work


class _Stopped(BaseException):
    """Raised in a job's thread (from its tick) to kill the genome when the pool closes."""


def gpu_placements(indices: Sequence[int]) -> list[Placement]:
    """One slot per CUDA device (indices in PCI bus order), each seeing only its device.

    Where the driver tells the device's UUID, ``CUDA_VISIBLE_DEVICES`` names it by UUID and
    the sandbox binds only its ``/dev/nvidiaN`` node.
    """
    placements = []
    for index in indices:
        identity = gpu_identity(index)
        visible = identity[1] if identity else str(index)
        env = {"CUDA_VISIBLE_DEVICES": visible, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
        placements.append(Placement(f"cuda:{index}", env, gpu_index=index if identity else None))
    return placements


def cpu_placements(workers: int, cores: Sequence[int] | None = None, name: str = "cpu") -> list[Placement]:
    """``workers`` slots sharing the CPU cores this process may use.

    One worker: the whole machine, unpinned (named ``name``). Several: the cores split into
    contiguous, near-equal blocks, each slot pinned to its block with ``OMP_NUM_THREADS``
    (and MKL's) set to the block's size; with more workers than cores, slots share cores
    round-robin (one core each), which slows each genome and makes timed fitness noisier.

    Raises:
        ValueError: ``workers`` < 1.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        return [Placement(name)]
    cores = sorted(cores if cores is not None else os.sched_getaffinity(0))
    if workers > len(cores):
        blocks = [(cores[i % len(cores)],) for i in range(workers)]
    else:
        size, extra = divmod(len(cores), workers)
        blocks, start = [], 0
        for i in range(workers):
            end = start + size + (1 if i < extra else 0)
            blocks.append(tuple(cores[start:end]))
            start = end
    placements = []
    for i, block in enumerate(blocks):
        label = f"{block[0]}" if len(block) == 1 else f"{block[0]}-{block[-1]}"
        name = f"cpu[{label}]" if workers <= len(cores) else f"cpu[{label}]#{i}"  # shared cores: names stay distinct
        threads = str(len(block))
        placements.append(Placement(name, {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}, cpus=block))
    return placements


class LocalPool:
    """Runs jobs on this machine, one per placement at a time.

    Args:
        setup: the run's evaluation setup.
        placements: one per slot.
        genome_dir: where workspaces are made.
        on_tick: progress of each running genome, ``(device, tick)``, from the job threads.
    """

    def __init__(
        self, setup: EvaluationSetup, placements: Sequence[Placement], genome_dir: Path,
        on_tick: TickCallback | None = None,
    ) -> None:
        if not placements:
            raise ValueError("a worker pool needs at least one slot")
        if len({p.name for p in placements}) != len(placements):
            raise ValueError(f"slot names must be distinct: {[p.name for p in placements]}")
        self.setup = setup
        self.placements = list(placements)
        self.genome_dir = genome_dir
        self.on_tick = on_tick
        self._busy: dict[str, Running] = {}  # placement name -> job
        self._done: queue.SimpleQueue[Finished] = queue.SimpleQueue()
        self._threads: dict[str, threading.Thread] = {}
        self._stop = threading.Event()
        self._warm: dict[str, WarmStart] = {}  # placement name -> its next genome's interpreter
        self._warm_lock = threading.Lock()

    @property
    def slots(self) -> int:
        return len(self.placements)

    def free(self) -> int:
        return self.slots - len(self._busy)

    def next_device(self) -> str:
        """The placement name the next :meth:`submit` will use."""
        return self._free_placement().name

    def _free_placement(self) -> Placement:
        for placement in self.placements:
            if placement.name not in self._busy:
                return placement
        raise RuntimeError("no free evaluation slot")

    def submit(self, job: EvaluationJob) -> str:
        placement = self._free_placement()
        self._busy[placement.name] = Running(job, placement.name, time.monotonic())
        thread = threading.Thread(target=self._run, args=(job, placement), name=f"evo-slot-{placement.name}", daemon=True)
        self._threads[placement.name] = thread
        thread.start()
        return placement.name

    def _run(self, job: EvaluationJob, placement: Placement) -> None:
        started = time.monotonic()

        def tick(t: Tick) -> None:
            if self._stop.is_set():
                raise _Stopped
            if self.on_tick is not None:
                self.on_tick(placement.name, t)

        with self._warm_lock:
            held = self._warm.pop(placement.name, None)
        try:
            outcome = evaluate_genome(
                self.setup, job.code, genome_files.workspace_path(self.genome_dir, job.genome_id), job.log_path,
                job.env, hard_limit_s=job.hard_limit_s, scoring_limit=job.scoring_limit_s, ready_limit=job.ready_limit_s, on_tick=tick,
                placement=placement, keep_compile_cache=job.seed, started=held,
                on_training_over=lambda: self._start_warm(placement),
            )
            result = Finished(job, placement.name, outcome, None, started, time.monotonic())
        except BaseException as exc:  # noqa: BLE001 -- handed to the engine, which decides
            result = Finished(job, placement.name, None, exc, started, time.monotonic())
        self._done.put(result)

    def _start_warm(self, placement: Placement) -> None:
        """Start the slot's next genome interpreter, unless it has one or the pool is closing
        (called from the slot's job and genome threads; returns at once)."""
        if not self.setup.warm_start:
            return
        with self._warm_lock:
            if self._stop.is_set() or placement.name in self._warm:
                return
            name = f"{genome_files.WARM_PREFIX}{os.getpid()}-{next(_WARM_NAMES)}"
            try:
                self._warm[placement.name] = start_warm(
                    self.setup, self.genome_dir / f"{name}.work", self.genome_dir / f"{name}.log", placement)
            except RuntimeError:  # no thread could be started: the next job starts cold
                pass

    def wait(self, timeout_s: float) -> list[Finished]:
        try:
            first = self._done.get(timeout=timeout_s) if timeout_s > 0 else self._done.get_nowait()
        except queue.Empty:
            return []
        finished = [first]
        while True:
            try:
                finished.append(self._done.get_nowait())
            except queue.Empty:
                break
        for f in finished:
            self._busy.pop(f.device, None)
            self._threads.pop(f.device, None)
        return finished

    def running(self) -> list[Running]:
        return list(self._busy.values())

    def close(self, timeout_s: float = 30.0) -> None:
        """Kill every running genome (its thread's next tick raises) and every held warm
        start, wait for the threads."""
        with self._warm_lock:
            self._stop.set()
            held, self._warm = list(self._warm.values()), {}
        for started in held:
            started.close()
        deadline = time.monotonic() + timeout_s
        for thread in list(self._threads.values()):
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()
        self._busy.clear()
