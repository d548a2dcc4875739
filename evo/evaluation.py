"""One evaluation of one genome, top to bottom: the trust boundary of evo.

1. **pin**: the project's ``prepare.py`` must still be the harness the run started with
   (sha256), else :class:`HarnessChangedError`; its bytes, read once, are what the genome
   and the evaluator import.
2. **workspace**: a fresh folder holding ``train.py`` (the genome) and a read-only
   ``prepare.py``; the genome's only writable place.
3. **run** the genome in its sandbox (:mod:`evo.sandbox`) under its limits
   (:mod:`evo.limits`), with an allowlisted environment, killed at the engine's limit:
   the hard wall-clock limit, or earlier the *scoring limit* (time budget plus the run's
   start-up allowance, measured on the seed genome), past which it would not be scored
   anyway (``overtime``). Its output is logged with a cap (:mod:`evo.runner`). With
   ``fitness = trusted``, the engine copies the model the moment the genome has exported
   it (:mod:`evo.model_snapshot`); a model ready after the run's tighter *model-ready limit*
   is not scored either (``overtime``), so the slack after the export cannot buy training.
4. **score**: with ``fitness = trusted`` (the default), a genome that exited 0 is scored
   by the trusted evaluator (:mod:`evo.evaluator`) in a separate sandboxed process, from
   the engine's copy of the first model it exported; what it printed is kept as
   ``reported_val_bpb``. That process is started warm while the genome exports its model,
   and reads the model only once the genome's processes are gone (:mod:`evo.warm_evaluator`). With
   ``fitness = reported`` (synthetic benchmarks and tests), the printed val_bpb is the
   fitness; every other protection stays.
5. **clean up**: the workspace is removed; nothing the genome started is left running.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from evo import compile_cache
from evo.genome import remove_tree
from evo.limits import ProcessLimits
from evo.metrics import classify, parse_summary, tail
from evo.model_snapshot import ModelSnapshot
from evo.records import EvalState, FailureKind, Outcome
from evo.runner import ProcessResult, Tick
from evo.sandbox import Sandbox, SandboxSpec, allowed_environment
from evo.warm_evaluator import EXPORT_STARTED, WarmEvaluator
from evo.warm_start import WarmStart, WarmStartLost, takes

MODEL_DIR = "evo_model"  # in the workspace: where the harness exports the model
# Start-up allowance: the seed's overhead (wall time beyond its budget: start-up,
# compilation, evaluation, export) plus the larger of itself, a quarter of the budget and
# this many seconds, so honest children with bigger models or a busier machine still fit.
MIN_ALLOWANCE_S = 20.0
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)


class HarnessChangedError(RuntimeError):
    """The project's ``prepare.py`` is not the harness the run started with."""


@dataclass(frozen=True)
class EvaluationSetup:
    """What every evaluation of a run shares.

    Attributes:
        project_dir: holds the pinned ``prepare.py``.
        harness_sha256: the run's pinned sha256 of ``prepare.py``.
        profile, dataset: the harness's profile and dataset.
        cache_dir: the harness's cache (tokenizer, data), absolute.
        fitness: ``trusted`` or ``reported``.
        sandbox: where genomes and the evaluator run.
        limits: their resource limits.
        data_files: what a genome may read (``prepare.genome_data_files``).
        hidden: folders a genome must not see (validation data, archive, genomes).
        gpu: whether genomes get the NVIDIA devices.
        python: the interpreter that runs genomes and the evaluator.
        compile_cache: the run's shared compile cache (:mod:`evo.compile_cache`; ``None``:
            every genome compiles cold, as without a sandbox).
        warm_start: a local slot starts its next genome's interpreter while the current
            genome finishes (:mod:`evo.warm_start`).
    """

    project_dir: Path
    harness_sha256: str
    profile: str
    dataset: str
    cache_dir: Path
    fitness: str
    sandbox: Sandbox
    limits: ProcessLimits
    data_files: tuple[Path, ...] = ()
    hidden: tuple[Path, ...] = ()
    gpu: bool = False
    python: str = sys.executable
    compile_cache: Path | None = None
    warm_start: bool = False


@dataclass(frozen=True)
class Placement:
    """Where one slot's genomes run.

    Attributes:
        name: what is recorded as the evaluation's device and shown by ``evo status``
            (``cuda:0``, ``cpu[0-3]``, ``ray:10.0.0.5/GPU1``).
        env: variables added to the genome's environment (``CUDA_VISIBLE_DEVICES``,
            ``OMP_NUM_THREADS``).
        gpu_index: the one CUDA device the slot's genomes may open (``None``: every
            device the run may use, or none on CPU).
        cpus: CPU cores its processes are pinned to (``()``: not pinned).
    """

    name: str
    env: dict[str, str] = field(default_factory=dict)
    gpu_index: int | None = None
    cpus: tuple[int, ...] = ()



def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_pinned_harness(setup: EvaluationSetup) -> bytes:
    """The bytes of ``prepare.py``, checked against the run's pin.

    Raises:
        HarnessChangedError: missing, or its sha256 differs from the pin.
    """
    path = setup.project_dir / "prepare.py"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HarnessChangedError(f"cannot read the harness {path}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != setup.harness_sha256:
        raise HarnessChangedError(
            f"{path} changed since this run started (sha256 {setup.harness_sha256[:12]}... is now {digest[:12]}...): "
            "scores from another harness are not comparable. Restore it (e.g. `git checkout prepare.py`) "
            "to go on with this run, or start a new run."
        )
    return data


def scoring_limit_s(time_budget_s: float, seed_wall_s: Sequence[float]) -> float | None:
    """The wall time past which a genome is not scored: budget plus the start-up allowance.

    Args:
        time_budget_s: the run's training budget, seconds.
        seed_wall_s: wall seconds of the seed genome's completed evaluations.

    Returns:
        Seconds, or ``None`` while the seed has no completed evaluation (no allowance yet).
    """
    if not seed_wall_s:
        return None
    overhead = max(0.0, max(seed_wall_s) - time_budget_s)
    return time_budget_s + overhead + max(overhead, 0.25 * time_budget_s, MIN_ALLOWANCE_S)


def redact(text: str | None, environ: dict[str, str] | None = None) -> str | None:
    """``text`` with the values of secret-looking environment variables replaced."""
    if not text:
        return text
    environ = dict(os.environ) if environ is None else environ
    for name, value in environ.items():
        if SECRET_NAME.search(name) and len(value) >= 8 and value in text:
            text = text.replace(value, f"[{name} redacted]")
    return text


# ---------------------------------------------------------------------------- the evaluation


def evaluate_genome(
    setup: EvaluationSetup,
    code: str,
    workspace: Path,
    log_path: Path,
    env: dict[str, str],
    hard_limit_s: float,
    scoring_limit: float | None,
    on_tick: Callable[[Tick], None] | None = None,
    placement: Placement | None = None,
    keep_compile_cache: bool = False,
    started: WarmStart | None = None,
    on_training_over: Callable[[], None] | None = None,
    ready_limit: float | None = None,
) -> Outcome:
    """Run and score one genome (module docstring, steps 1-5).

    Args:
        code: the genome's source.
        workspace: a folder to create for it (removed afterwards).
        log_path: its log (capped).
        env: the harness's variables for it (``EVO_PROFILE``, ``EVO_SEED``, ...).
        hard_limit_s: the wall-clock limit of the process, seconds.
        scoring_limit: the scoring limit, seconds (``None``: none yet).
        placement: the slot it runs on (its GPU, its cores, their variables); ``None``:
            the whole machine.
        keep_compile_cache: the genome is the run's seed: when it completes in the sandbox,
            its compile cache becomes the run's (unless there is one already).
        started: the slot's warm interpreter (:func:`start_warm`), taken over by this
            evaluation (its workspace replaces ``workspace``) when the genome may run in
            it (:func:`evo.warm_start.takes`), else closed; closed afterwards either way.
        on_training_over: called (from this thread or the genome's) when the genome is done
            training: its harness began the export, or it exited; maybe more than once.
        ready_limit: the model-ready limit, seconds (``None``: none yet;
            :func:`evo.model_snapshot.ready_limit_s`).

    Returns:
        The :class:`Outcome` to record (``sandbox`` set).
    Raises:
        HarnessChangedError: before anything runs.
        KeyboardInterrupt: after the processes were killed and the workspace removed.
    """
    warm: WarmEvaluator | None = None
    snapshot: ModelSnapshot | None = None
    if started is not None and not (takes(code) and started.wait_held()):
        started.close()
        started = None
    if started is not None:
        workspace = started.workspace
    trusted_harness = workspace.parent / f".{workspace.name}.harness"  # the evaluator's copy, never the genome's
    try:
        harness = read_pinned_harness(setup)
        if started is None:
            _make_workspace(setup, workspace, harness)
        (workspace / "train.py").write_text(code, encoding="utf-8")
        remove_tree(trusted_harness)
        trusted_harness.mkdir()
        (trusted_harness / "prepare.py").write_bytes(harness)
        limit = hard_limit_s if scoring_limit is None else min(hard_limit_s, scoring_limit)
        placement = placement or Placement("local")
        cache_env = compile_cache.give(setup.compile_cache, workspace)  # the seed's, if it came after the warm start
        if setup.fitness == "trusted":
            warm = WarmEvaluator(setup, trusted_harness, log_path, placement)
            snapshot = ModelSnapshot(workspace / MODEL_DIR, workspace.parent / f".{workspace.name}.model")
        genome_env = _genome_env(setup, workspace, {**env, **placement.env, **cache_env})
        result = _run_genome(setup, workspace, log_path, genome_env, limit, on_tick, placement, warm, started,
                             on_training_over, snapshot)
        if on_training_over is not None:
            on_training_over()
        if snapshot is not None:
            snapshot.at_exit(result.wall_s, result.timed_out)
            if started is not None and started.imports_s:
                snapshot.as_if_cold(started.imports_s)
        outcome = _judge(setup, result, log_path, hard_limit_s, scoring_limit, warm, snapshot, ready_limit)
        if keep_compile_cache and setup.sandbox.isolated and outcome.state is EvalState.COMPLETE:
            compile_cache.keep(workspace, setup.compile_cache)
    finally:
        if warm is not None:
            warm.close()
        if started is not None:
            started.close()  # (before the snapshot: its ticks, in the warm start's thread, poll it)
        if snapshot is not None:
            snapshot.discard()
        remove_tree(workspace)
        remove_tree(trusted_harness)
    return replace(outcome, error=redact(outcome.error), log_tail=redact(outcome.log_tail) or "")


def _genome_env(setup: EvaluationSetup, workspace: Path, env: dict[str, str]) -> dict[str, str]:
    tmp = "/tmp" if setup.sandbox.isolated else str(workspace / "tmp")
    return allowed_environment({
        **env,
        "EVO_CACHE_DIR": str(setup.cache_dir),
        "EVO_EXPORT_DIR": str(workspace / MODEL_DIR),
        "HOME": str(workspace),
        "TMPDIR": tmp,
        "PYTHONPATH": str(workspace),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    })


def _make_workspace(setup: EvaluationSetup, workspace: Path, harness: bytes) -> None:
    """A fresh workspace holding the pinned ``prepare.py`` (and ``tmp`` without a sandbox)."""
    remove_tree(workspace)
    workspace.mkdir(parents=True)
    (workspace / "prepare.py").write_bytes(harness)
    if not setup.sandbox.isolated:
        (workspace / "tmp").mkdir()


def _genome_spec(setup: EvaluationSetup, workspace: Path, genome_env: dict[str, str], placement: Placement) -> SandboxSpec:
    return SandboxSpec(
        workdir=workspace, env=genome_env, read_only=setup.data_files, hidden=setup.hidden, gpu=setup.gpu,
        gpu_index=placement.gpu_index, overlays=((workspace / "prepare.py", workspace / "prepare.py"),),
    )


def start_warm(setup: EvaluationSetup, workspace: Path, log_path: Path, placement: Placement) -> WarmStart:
    """Start a slot's warm interpreter for its next evaluation (:mod:`evo.warm_start`) in
    ``workspace``, logging to ``log_path`` until its release. Returns at once: the workspace
    (the pinned ``prepare.py``, a copy of the run's compile cache) is made in its own thread,
    and where that fails (the harness changed, a full disk) it is never ready and the next
    evaluation starts cold, meeting the same problem where it is reported."""

    def prepare() -> tuple[SandboxSpec, dict[str, str]]:
        _make_workspace(setup, workspace, read_pinned_harness(setup))
        cache_env = compile_cache.give(setup.compile_cache, workspace)
        genome_env = _genome_env(setup, workspace, {**placement.env, **cache_env})
        return _genome_spec(setup, workspace, genome_env, placement), genome_env

    return WarmStart(setup, workspace, prepare, log_path, placement)


def _run_genome(
    setup: EvaluationSetup, workspace: Path, log_path: Path, genome_env: dict[str, str], limit_s: float,
    on_tick: Callable[[Tick], None] | None, placement: Placement, warm: WarmEvaluator | None,
    started: WarmStart | None, on_training_over: Callable[[], None] | None, snapshot: ModelSnapshot | None,
) -> ProcessResult:
    """Run the genome, in ``started`` if it is given and still there; its warm evaluator
    (and the slot's next warm start) start when the harness says the export began, and
    ``snapshot`` looks for its exported model at every tick."""

    def ticked(tick: Tick) -> None:
        if snapshot is not None:
            snapshot.poll(tick.elapsed_s)
        if tick.last_line.startswith(EXPORT_STARTED):
            if warm is not None:
                warm.start()
            if on_training_over is not None:
                on_training_over()
        if on_tick is not None:
            on_tick(tick)

    if started is not None:
        try:
            return started.run(genome_env, log_path, limit_s, ticked)
        except WarmStartLost:  # nothing of the genome ran: run it cold, in the same workspace
            started.close(remove_workspace=False)
    spec = _genome_spec(setup, workspace, genome_env, placement)
    return setup.sandbox.run([setup.python, "train.py"], spec, setup.limits, setup.python, placement.cpus, log_path,
                             limit_s, ticked)


def _judge(
    setup: EvaluationSetup, result: ProcessResult, log_path: Path, hard_limit_s: float,
    scoring_limit: float | None, warm: WarmEvaluator | None, snapshot: ModelSnapshot | None,
    ready_limit: float | None,
) -> Outcome:
    """How the genome ended, and its fitness; in a trusted run a printed val_bpb is only ever
    kept as ``reported_val_bpb``, and ``model_ready_s`` is the engine's (the snapshot's)."""
    outcome = _verdict(setup, result, log_path, hard_limit_s, scoring_limit, warm, snapshot, ready_limit)
    if setup.fitness == "trusted":
        metrics = {k: v for k, v in outcome.metrics.items() if k not in ("model_ready_s", "warm_imports_s")}
        if snapshot is not None and snapshot.ready_s is not None:
            metrics["model_ready_s"] = round(snapshot.ready_s, 3)
        if snapshot is not None and snapshot.imports_s:
            metrics["warm_imports_s"] = round(snapshot.imports_s, 3)
        if outcome.state is not EvalState.COMPLETE and "val_bpb" in metrics:
            metrics["reported_val_bpb"] = metrics.pop("val_bpb")
        outcome = replace(outcome, metrics=metrics)
    return outcome


def _verdict(
    setup: EvaluationSetup, result: ProcessResult, log_path: Path, hard_limit_s: float,
    scoring_limit: float | None, warm: WarmEvaluator | None, snapshot: ModelSnapshot | None,
    ready_limit: float | None,
) -> Outcome:
    if scoring_limit is not None and result.wall_s > scoring_limit and (not result.timed_out or scoring_limit < hard_limit_s):
        return Outcome(
            EvalState.FAIL, result.wall_s, result.returncode, parse_summary(result.tail), FailureKind.OVERTIME,
            f"ran {result.wall_s:.0f} s, past the time budget plus the run's start-up allowance "
            f"({scoring_limit:.0f} s, measured on the seed genome): not scored",
            tail(result.tail),
        )
    ready_s = None if snapshot is None else snapshot.ready_s
    if ready_limit is not None and ready_s is not None and ready_s > ready_limit:
        return Outcome(
            EvalState.FAIL, result.wall_s, result.returncode, parse_summary(result.tail), FailureKind.OVERTIME,
            f"its model was exported {ready_s:.0f} s after it started, past the time budget plus the run's "
            f"start-up allowance for the export ({ready_limit:.0f} s, measured on the seed genome): not scored",
            tail(result.tail),
        )
    outcome = classify(result.tail, result.returncode, result.timed_out, result.wall_s)
    if warm is None or result.timed_out or result.returncode != 0 or outcome.failure_kind is FailureKind.NAN:
        return outcome
    printed = outcome.metrics
    assert snapshot is not None  # made with the evaluator
    if snapshot.refused:
        score = {"reason": f"the exported model cannot be scored: {snapshot.refused}"}
    else:
        score = warm.score(snapshot.into)
    if "reason" in score:
        return Outcome(EvalState.FAIL, result.wall_s, result.returncode, printed, FailureKind.UNVERIFIABLE,
                       str(score["reason"]), outcome.log_tail)
    metrics = {k: v for k, v in printed.items() if k != "val_bpb"}
    if "val_bpb" in printed:
        metrics["reported_val_bpb"] = printed["val_bpb"]
    metrics.update(val_bpb=score["val_bpb"], trusted_eval_s=score["seconds"], trusted_eval_tokens=score["tokens"],
                   causality_max_diff=score["causality_max_diff"], trusted_eval_wall_s=score["wall_s"],
                   trusted_eval_ready_s=score.get("waited_s", 0.0))
    return Outcome(EvalState.COMPLETE, result.wall_s, result.returncode, metrics, None, None, outcome.log_tail)
