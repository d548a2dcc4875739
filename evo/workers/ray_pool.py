"""Evaluation slots on a Ray cluster: one Ray task per evaluation (``evo start --ray ADDRESS``).

**What travels.** The engine stays on the driver (the machine running ``evo``) and keeps
the archive. Each evaluation is one Ray task (``max_retries=0``: the engine, not Ray,
decides re-runs) asking for one GPU, or ``cpus_per_slot`` CPUs on a CPU run; Ray picks
the node. Its arguments travel through Ray's object store: the pinned harness
(``prepare.py``'s bytes, checked against the run's sha256 on the driver), the run's
:class:`~evo.evaluation.EvaluationSetup` and the job (the genome's code, its harness
variables, its limits). Nothing else is shipped: ``runtime_env`` is not used for code, so
**evo must be installed on every node, in the same Python environment** (same Python,
same torch) as on the driver; Ray's workers import ``evo.workers.ray_pool`` from it.

**On the node**, the task runs :func:`evo.evaluation.evaluate_genome` as a local slot
would: the genome in its sandbox and limits, with ``CUDA_VISIBLE_DEVICES`` set to the GPU
Ray gave the task (recorded as device ``ray:<node ip>/GPU<id>``; ``ray:<node ip>/cpu`` on
a CPU run). Where the node sees the project's ``prepare.py`` with the pinned sha256 (the
driver's own machine, or a shared file system), the run's setup is used as it is; else
the task builds a node-local project ``~/.cache/evo/ray/<harness sha256>/`` holding the
pinned ``prepare.py``, prepares the harness's data there once (under a file lock, so
tasks starting together on one node prepare it once) and points the sandbox at that
node's data. The genome's workspace is a node-local temporary folder, removed after.

**Logs.** The genome's log is written on the node, capped at
:data:`evo.runner.MAX_LOG_BYTES`, and returned with the result; the driver writes it to
the job's ``log_path`` (the run's ``genomes/`` folder), where a local slot would have (so
is the trusted evaluator's log, where it failed). What the Ray workers themselves print
(the data preparation of a node) stays in Ray's logs on each node
(``/tmp/ray/session_latest/logs``) when evo made the connection: it is not forwarded to
evo's display.

**A worker or node that dies** (the Ray worker killed, the node lost, Ray's memory monitor
killing the worker, the task cancelled) makes the job come back with a
:class:`~evo.workers.base.WorkerLostError`, and a one-line note in its log: the engine
records the evaluation INTERRUPTED, never counted, and runs it again, exactly once. The
genome itself dies with its Ray worker (``PR_SET_PDEATHSIG`` in :mod:`evo.confine`,
``--die-with-parent`` in the sandbox).

**Starting a cluster.** On the head node: ``ray start --head`` (port 6379); on each other
node: ``ray start --address HEAD:6379``; then, on the head (or any machine that can reach
it), ``evo start ... --ray auto`` (or ``--ray HEAD:6379``). ``--ray local`` starts a Ray
instance inside evo, on this machine only: a way to try it without a cluster.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

try:
    import ray
    import ray.exceptions
except ImportError as exc:  # evo's extra, not a dependency
    raise ImportError('evaluating on Ray needs Ray: pip install -e ".[ray]" (on every node)') from exc

from evo.evaluation import (
    EvaluationSetup,
    HarnessChangedError,
    Placement,
    evaluate_genome,
    read_pinned_harness,
)
from evo.harness import genome_view, prepare_data
from evo.records import Outcome
from evo.runner import MAX_LOG_BYTES, Tick
from evo.sandbox import detect, gpu_identity
from evo.workers.base import EvaluationJob, Finished, Running, TickCallback, WorkerLostError

DEVICE = "ray"  # a job's device until its task reports the node it ran on
NODE_PROJECTS = Path("~/.cache/evo/ray")  # node-local projects, one per harness sha256
TICK_INTERVAL_S = 1.0  # how often wait() reports the elapsed time of running jobs
CANCEL_GRACE_S = 10.0  # close(): how long cancelled tasks get to kill their genome themselves
FORCED_EXIT_WAIT_S = 5.0  # close(): how long it waits for force-cancelled tasks' workers to die

# Ray's errors for a task whose worker, node or result was lost (names missing from an older Ray are skipped).
_LOST_NAMES = (
    "WorkerCrashedError", "NodeDiedError", "ActorDiedError", "TaskCancelledError", "ObjectLostError",
    "RaySystemError", "LocalRayletDiedError", "OutOfMemoryError",
)
LOST_ERRORS: tuple[type[BaseException], ...] = tuple(
    cls for cls in (getattr(ray.exceptions, name, None) for name in _LOST_NAMES) if cls is not None
)

_prepared: set[tuple[str, str, str]] = set()  # in a Ray worker: (sha256, profile, dataset) already prepared


# ---------------------------------------------------------------------------- on the node


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a killed worker its parent has not reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _work_folders_base() -> Path:
    """This node's parent folder of evaluation folders (``<tmp>/evo-ray``), created if missing."""
    base = Path(tempfile.gettempdir()) / "evo-ray"
    base.mkdir(parents=True, exist_ok=True)
    return base


def _work_folders_by_owner(base: Path) -> list[tuple[int, Path]]:
    """``(worker pid, folder)`` of each evaluation folder in ``base`` (named ``<pid>-<id>``)."""
    owned = []
    for folder in base.iterdir():
        pid = folder.name.split("-", 1)[0]
        if pid.isdigit():
            owned.append((int(pid), folder))
    return owned


def _remove_dead_work_folders() -> Path:
    """Remove this node's evaluation folders whose worker process is gone; returns their parent.

    A task whose worker was killed (a forced cancel, a crash) never ran its own clean-up."""
    base = _work_folders_base()
    for pid, folder in _work_folders_by_owner(base):
        if not _pid_alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
    return base


def _work_folder() -> Path:
    """A fresh node-local folder for one evaluation; folders of dead workers are removed first."""
    base = _remove_dead_work_folders()
    folder = base / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    folder.mkdir()
    return folder


def node_setup(setup: EvaluationSetup, harness: bytes, root: Path | None = None) -> EvaluationSetup:
    """The run's setup as this node sees it.

    Where ``setup.project_dir/prepare.py`` exists here with the pinned sha256, ``setup`` as
    it is. Else a node-local project ``root/<sha256>/`` holding ``harness``, its data
    prepared (once per node, under a file lock), and the setup pointed at it.

    Raises:
        HarnessChangedError: ``harness`` is not the pinned harness.
        HarnessError: the data could not be prepared.
    """
    digest = setup.harness_sha256
    with contextlib.suppress(OSError):
        if hashlib.sha256((setup.project_dir / "prepare.py").read_bytes()).hexdigest() == digest:
            return setup
    if hashlib.sha256(harness).hexdigest() != digest:
        raise HarnessChangedError(f"the harness sent to this node is not the pinned one ({digest[:12]}...)")
    root = (root or NODE_PROJECTS).expanduser()
    project = root / digest
    project.mkdir(parents=True, exist_ok=True)
    prepare_py = project / "prepare.py"
    with open(root / f"{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not prepare_py.is_file() or hashlib.sha256(prepare_py.read_bytes()).hexdigest() != digest:
                tmp = project / f".prepare.py.{os.getpid()}.tmp"
                tmp.write_bytes(harness)
                os.replace(tmp, prepare_py)
            key = (digest, setup.profile, setup.dataset)
            if key not in _prepared:
                prepare_data(project, setup.profile, setup.dataset)
                _prepared.add(key)
            view = genome_view(prepare_py, setup.profile, setup.dataset)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    sandbox = setup.sandbox
    if sandbox.isolated and not (sandbox.binary and Path(sandbox.binary).exists()):
        sandbox = detect("bwrap")  # this node's bubblewrap (SandboxUnavailableError where it has none)
    compile_cache = None  # this node's own, filled by a seed evaluation run here (evo.compile_cache)
    if setup.compile_cache is not None and sandbox.isolated:
        compile_cache = project / "compile-caches" / setup.compile_cache.parent.name
        compile_cache.parent.mkdir(exist_ok=True)
    return dataclasses.replace(
        setup, project_dir=project, cache_dir=view.cache_dir, data_files=view.data_files, hidden=view.hidden,
        sandbox=sandbox, python=sys.executable, compile_cache=compile_cache,
    )


def _placement(gpu: bool, cpus: int) -> Placement:
    """This task's slot: the GPU Ray gave it, or its share of the node's cores."""
    ip = ray.util.get_node_ip_address()
    if not gpu:
        threads = str(cpus)
        return Placement(f"ray:{ip}/cpu", {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
    ids = ray.get_gpu_ids()
    if not ids:
        return Placement(f"ray:{ip}/GPU", {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "")})
    gpu_id = str(ids[0])
    identity = gpu_identity(int(gpu_id)) if gpu_id.isdigit() else None
    if identity:  # as a local slot: by UUID, and the sandbox binds only this GPU's device node
        env = {"CUDA_VISIBLE_DEVICES": identity[1], "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
        return Placement(f"ray:{ip}/GPU{gpu_id}", env, gpu_index=int(gpu_id))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") or ",".join(str(i) for i in ids)
    return Placement(f"ray:{ip}/GPU{gpu_id}", {"CUDA_VISIBLE_DEVICES": visible})


def _read_capped(path: Path, limit: int = MAX_LOG_BYTES) -> bytes:
    """A log's bytes (already capped by the runner), at most ``limit`` plus a marker."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError:
        return b""
    if len(data) > limit:
        data = data[:limit] + b"\n[evo: log truncated]\n"
    return data


def trusted_log_path(log_path: Path) -> Path:
    """Where :func:`evaluate_genome` writes the trusted evaluator's log when it fails."""
    return log_path.with_name(log_path.name.replace(".log", ".trusted.log"))


def evaluate_on_node(
    setup: EvaluationSetup, harness: bytes, job: EvaluationJob, gpu: bool, cpus: int,
) -> tuple[Outcome, str, bytes, bytes | None]:
    """The Ray task: evaluate ``job`` on this node.

    Returns:
        ``(outcome, device, log, trusted_log)``: the outcome, the slot's name, the genome's
        log (capped) and the trusted evaluator's log where it failed and left one.
    """
    local = node_setup(setup, harness)
    placement = _placement(gpu, cpus)
    folder = _work_folder()
    try:
        log = folder / job.log_path.name
        outcome = evaluate_genome(
            local, job.code, folder / f"{job.genome_id}.work", log, job.env, hard_limit_s=job.hard_limit_s,
            scoring_limit=job.scoring_limit_s, ready_limit=job.ready_limit_s, placement=placement, keep_compile_cache=job.seed,
        )
        trusted = trusted_log_path(log)
        trusted_bytes = _read_capped(trusted) if trusted.is_file() else None
        if trusted_bytes is not None and outcome.error:  # name the copy the driver will write
            outcome = dataclasses.replace(
                outcome, error=outcome.error.replace(str(trusted), str(trusted_log_path(job.log_path))))
        return outcome, placement.name, _read_capped(log), trusted_bytes
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------- on the driver


@dataclasses.dataclass
class _InFlight:
    job: EvaluationJob
    ref: Any  # ray.ObjectRef
    started_s: float
    label: str = DEVICE  # the slot's name on the driver's display (``ray#0``...), until the node is known


def _summary(exc: BaseException) -> str:
    """The kind and first line of a Ray error (its message may hold a whole traceback)."""
    cause = getattr(exc, "cause", None) if isinstance(exc, ray.exceptions.RayTaskError) else None
    shown = cause if cause is not None else exc
    lines = str(shown).strip().splitlines()
    return f"{type(shown).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _is_lost(exc: BaseException) -> bool:
    if isinstance(exc, LOST_ERRORS):
        return True
    cause = getattr(exc, "cause", None) if isinstance(exc, ray.exceptions.RayTaskError) else None
    return cause is not None and isinstance(cause, LOST_ERRORS)


class RayPool:
    """Runs jobs as Ray tasks, at most ``slots`` at once; Ray places them on the cluster.

    Args:
        setup: the run's evaluation setup (on the driver).
        genome_dir: the run's genome folder on the driver (logs go where ``job.log_path``
            says; workspaces are node-local).
        address: ``auto`` (the cluster ``ray start`` made), ``HOST:PORT``, or ``local``
            (start a Ray instance in this process, on this machine only).
        slots: jobs in flight at once (``None``: every GPU of the cluster on a GPU run, else one).
        gpu: each task takes one GPU (else ``cpus_per_slot`` CPUs).
        on_tick: progress of each running job, ``(device, tick)``: elapsed wall time only,
            reported from :meth:`wait` (a Ray task does not call back).
        cpus_per_slot: CPUs each task takes on a CPU run.
        init_kwargs: more arguments of ``ray.init`` (``num_cpus``, ``num_gpus``,
            ``resources``...), e.g. logical GPUs for a test with ``local``.

    Raises:
        ValueError: ``slots`` < 1, or ``slots`` is ``None`` on a GPU run and the cluster has no GPU.
    """

    def __init__(
        self, setup: EvaluationSetup, genome_dir: Path, address: str, slots: int | None, gpu: bool,
        on_tick: TickCallback | None = None, cpus_per_slot: int = 1, init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.setup = setup
        self.genome_dir = genome_dir
        self.address = address
        self.gpu = gpu
        self.on_tick = on_tick
        self.cpus_per_slot = cpus_per_slot
        self._started_ray = False
        if not ray.is_initialized():
            kwargs = dict(init_kwargs or {})
            kwargs.setdefault("log_to_driver", False)  # the nodes' output stays in Ray's logs, off evo's display
            kwargs["address"] = address  # "local": a new instance, never a cluster `ray start` left here
            if address == "local":
                kwargs.setdefault("include_dashboard", False)
                if not gpu and slots is not None:  # every slot runs at once, even past this machine's cores
                    kwargs.setdefault("num_cpus", max(slots * cpus_per_slot, os.cpu_count() or 1))
            ray.init(**kwargs)
            self._started_ray = address == "local"
        if slots is None:
            gpus = int(ray.cluster_resources().get("GPU", 0)) if gpu else 1
            if gpus < 1:
                raise ValueError(f"the Ray cluster at {address} has no GPU; give the number of workers")
            slots = gpus
        if slots < 1:
            raise ValueError(f"a worker pool needs at least one slot, got {slots}")
        self._slots = slots
        resources = {"num_gpus": 1} if gpu else {"num_cpus": cpus_per_slot}
        self._task = ray.remote(evaluate_on_node).options(max_retries=0, **resources)
        self._setup_ref = ray.put(setup)
        self._harness_ref: Any = None
        self._flight: list[_InFlight] = []
        self._early: list[Finished] = []  # jobs that failed on the driver before a task started
        self._closed = False

    @property
    def slots(self) -> int:
        return self._slots

    def free(self) -> int:
        return self._slots - len(self._flight) - len(self._early)

    def next_device(self) -> str:
        return DEVICE

    def submit(self, job: EvaluationJob) -> str:
        if self._closed:
            raise RuntimeError("the Ray worker pool is closed")
        if self.free() < 1:
            raise RuntimeError("no free evaluation slot")
        started = time.monotonic()
        try:
            harness = read_pinned_harness(self.setup)  # the pin is checked for each job, as a local slot does
        except HarnessChangedError as exc:
            self._early.append(Finished(job, DEVICE, None, exc, started, time.monotonic()))
            return DEVICE
        if self._harness_ref is None:  # the bytes match the pin, so they never change: shipped once
            self._harness_ref = ray.put(harness)
        ref = self._task.remote(self._setup_ref, self._harness_ref, job, self.gpu, self.cpus_per_slot)
        taken = {f.label for f in self._flight}
        label = next(f"{DEVICE}#{i}" for i in range(self._slots + 1) if f"{DEVICE}#{i}" not in taken)
        self._flight.append(_InFlight(job, ref, started, label))
        return label

    def wait(self, timeout_s: float) -> list[Finished]:
        if self._early:
            done, self._early = self._early, []
            return done + self._collect(0.0)
        if not self._flight:
            if timeout_s > 0:
                time.sleep(timeout_s)
            return []
        return self._collect(timeout_s)

    def _collect(self, timeout_s: float) -> list[Finished]:
        """Results of the tasks done within ``timeout_s``, reporting ticks meanwhile."""
        if not self._flight:
            return []
        deadline = time.monotonic() + max(0.0, timeout_s)
        refs = [f.ref for f in self._flight]
        while True:
            remaining = deadline - time.monotonic()
            ready, _ = ray.wait(refs, num_returns=1, timeout=max(0.0, min(TICK_INTERVAL_S, remaining)))
            if ready or remaining <= TICK_INTERVAL_S:
                break
            self._tick()
        if not ready:
            self._tick()
            return []
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        ready_set = set(ready)
        done = [f for f in self._flight if f.ref in ready_set]
        self._flight = [f for f in self._flight if f.ref not in ready_set]
        return [self._result(f) for f in done]

    def _tick(self) -> None:
        if self.on_tick is None:
            return
        now = time.monotonic()
        for f in self._flight:
            limit = f.job.hard_limit_s
            if f.job.scoring_limit_s is not None:
                limit = min(limit, f.job.scoring_limit_s)
            self.on_tick(f.label, Tick(now - f.started_s, limit, ""))

    def _result(self, flight: _InFlight) -> Finished:
        job = flight.job
        try:
            outcome, device, log, trusted = ray.get(flight.ref)
        except Exception as exc:  # handed to the engine, which decides
            if _is_lost(exc):
                error: BaseException = WorkerLostError(
                    f"the Ray worker running evaluation {job.eval_id} was lost: {_summary(exc)}")
                error.__cause__ = exc
            elif isinstance(exc, ray.exceptions.RayTaskError) and isinstance(exc.cause, HarnessChangedError):
                error = exc.cause
            else:  # the RayTaskError itself: its message holds the node's traceback
                error = exc
            self._write_log(job.log_path, f"evo: the evaluation did not run to an end on Ray: {error}\n".encode(),
                            keep=True)
            return Finished(job, DEVICE, None, error, flight.started_s, time.monotonic())
        self._write_log(job.log_path, log)
        if trusted is not None:
            self._write_log(trusted_log_path(job.log_path), trusted)
        return Finished(job, device, outcome, None, flight.started_s, time.monotonic())

    @staticmethod
    def _write_log(path: Path, data: bytes, keep: bool = False) -> None:
        """Write a log on the driver (``keep``: not over an existing one)."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if keep and path.exists():
                return
            path.write_bytes(data)
        except OSError:
            pass

    def running(self) -> list[Running]:
        return [Running(f.job, f.label, f.started_s) for f in self._flight]

    def close(self, timeout_s: float = CANCEL_GRACE_S) -> None:
        """Cancel every task in flight: first as an interrupt (the task kills its genome and
        removes its workspace), then, past ``timeout_s`` (0: at once), by killing its worker. The folders
        of killed workers on this node are removed (other nodes remove theirs at their next
        evaluation)."""
        if self._closed:
            return
        self._closed = True
        flight, self._flight, self._early = self._flight, [], []
        refs = [f.ref for f in flight]
        if refs and ray.is_initialized():
            if timeout_s > 0:
                for ref in refs:
                    with contextlib.suppress(Exception):
                        ray.cancel(ref, force=False)
                with contextlib.suppress(Exception):
                    _, refs = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
            for ref in refs:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            if refs:
                deadline = time.monotonic() + FORCED_EXIT_WAIT_S
                owners: set[int] = set()
                with contextlib.suppress(OSError):
                    owners = {pid for pid, _ in _work_folders_by_owner(_work_folders_base())}
                with contextlib.suppress(Exception):
                    ray.wait(refs, num_returns=len(refs), timeout=FORCED_EXIT_WAIT_S)
                # A cancelled ref can resolve before its worker is gone: wait (within the same
                # deadline) until the folders' owners are dead, then remove their folders.
                while any(_pid_alive(pid) for pid in owners) and time.monotonic() < deadline:
                    time.sleep(0.05)
                with contextlib.suppress(OSError):
                    _remove_dead_work_folders()
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
