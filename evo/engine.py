"""The engine: a short loop that keeps every evaluation slot busy.

One child, top to bottom: the scheduler picks the next job when a slot frees (a due
evaluation, or a new child: select parents -> mutate, :mod:`evo.scheduler`) -> the child
is recorded (:meth:`Engine._birth`) -> its evaluation is recorded RUNNING and handed to a
worker (:meth:`Engine._start`), which runs it in its sandbox under the time budget and
scores it (:mod:`evo.workers`, :mod:`evo.evaluation`) -> the outcome is recorded
(:meth:`Engine._finish`). Only the engine writes the archive; workers hand results back.

The run's state is read from the archive once (:class:`evo.state.RunState`) and kept up
to date from what the engine records, so ``evo resume`` is the same loop started again:
completed evaluations are never re-run, evaluations left RUNNING by a dead engine are
marked INTERRUPTED and run again (exactly once), and births continue where they stopped.
"""

from __future__ import annotations

import queue
from pathlib import Path

import duckdb

from evo import genome as genome_files
from evo.archive import Archive, ArchiveError
from evo.boundary import evaluation_setup
from evo.config import Paths, RunConfig
from evo.evaluation import read_pinned_harness
from evo.harness import genome_env
from evo.held_out import HELD_OUT_SEED
from evo.held_out import describe as describe_held_out
from evo.held_out import held_out as held_out_figure
from evo.metrics import tail
from evo.operators import REGISTRY, MutationOperator
from evo.operators.llm import LLMMutation
from evo.pending import PendingOutcomes
from evo.progress import Reporter
from evo.records import EvalState, EvaluationRecord, FailureKind, GenomeRecord, Outcome
from evo.results import GenomeResult
from evo.runner import read_tail
from evo.scheduler import Birth, Child, Due, EngineError, Scheduler, seed_child
from evo.state import RunState
from evo.time_limits import evaluation_limits
from evo.workers import EvaluationJob, Execution, Finished, WorkerLostError, WorkerPool, make_pool

EVAL_SEED = 42  # EVO_SEED of every first evaluation: genomes differ by code, not by seed
POLL_S = 0.25  # how often the loop looks at the slots while genomes train

__all__ = ["EVAL_SEED", "ArchiveWriteError", "Child", "Engine", "EngineError", "Execution", "evo_seed", "seed_child"]


def evo_seed(replicate: int, held_out: bool = False) -> int:
    """The ``EVO_SEED`` of a genome's evaluation: ``EVAL_SEED + replicate``, so first
    evaluations share one seed (genomes differ by code, not by luck) and replicates measure
    the noise; held-out evaluation r (:mod:`evo.held_out`) gets ``HELD_OUT_SEED + r``."""
    return (HELD_OUT_SEED if held_out else EVAL_SEED) + replicate


class ArchiveWriteError(ArchiveError):
    """A finished evaluation could not be written to the archive (its outcome is kept)."""


class Engine:
    """Runs one run against an archive until its cohorts or evaluations are done.

    Args:
        paths: the project's folders and archive file.
        archive: the open archive.
        config: the run's configuration (as stored in the archive).
        time_budget_s: training seconds per genome (the profile's unless overridden).
        device: what genomes run on (``cpu``, ``cuda:<name>``), the name of a single CPU slot.
        reporter: receives progress events.
        execution: the evaluation slots (default: one, on this machine).
    """

    def __init__(
        self, paths: Paths, archive: Archive, config: RunConfig, time_budget_s: float, device: str, reporter: Reporter,
        execution: Execution | None = None,
    ) -> None:
        self.paths = paths
        self.archive = archive
        self.config = config
        self.time_budget_s = time_budget_s
        self.device = device
        self.reporter = reporter
        self.execution = execution or Execution()
        self.genome_dir = paths.genome_dir(config.run)
        unknown = sorted(set(config.operators) - set(REGISTRY))
        if unknown:
            raise EngineError(f"unknown operator(s) {', '.join(unknown)}; known: {', '.join(sorted(REGISTRY))}")
        self.operators: dict[str, MutationOperator] = {
            name: REGISTRY[name](config) for name, weight in config.operators.items() if weight > 0
        }
        self._notes: queue.SimpleQueue[str] = queue.SimpleQueue()  # messages from proposal threads
        llm = self.operators.get(LLMMutation.name)
        if isinstance(llm, LLMMutation):  # its calls are recorded in the archive, within the run's budget
            llm.attach(archive, config.run)
        gpu = device.startswith("cuda")
        self.setup = evaluation_setup(paths, archive, config, gpu, self.execution.local_slots(gpu), reporter.message,
                                      self.execution.warm(gpu))
        self.state: RunState | None = None
        self.pending = PendingOutcomes(archive.path)
        self._noise_recorded = False
        self._cohorts_reported: set[int] = set()

    # ------------------------------------------------------------------ the loop

    def run(self, seed_code: str | None = None) -> GenomeResult | None:
        """Run until ``config.generations`` cohorts are born and evaluated (forever if
        ``None``) or ``config.max_evaluations`` evaluations were counted.

        Args:
            seed_code: the seed genome's source; needed only while the run has no genome.

        Returns:
            The run's declared best genome (the noise-aware incumbent).

        Raises:
            KeyboardInterrupt: after recording the running evaluations as INTERRUPTED.
            HarnessChangedError: prepare.py is not the run's pinned harness.
            EngineError: the search cannot continue (the seed genome failed, no new child).
        """
        for record in self.pending.recover(self.archive, self.config.run):
            self.reporter.message(
                f"recorded the {record.state.value} evaluation of {record.genome_id} kept from the last session"
            )
        self.archive.interrupt_running(self.config.run, "the engine stopped before this evaluation finished")
        genome_files.remove_workspaces(self.genome_dir)  # left by a killed engine
        state = self.state = RunState.load(self.archive, self.config.run)
        program = self.paths.program_md
        scheduler = Scheduler(
            self.config, self.operators, self.config.profile, self.time_budget_s,
            lambda: program.read_text(encoding="utf-8") if LLMMutation.name in self.operators and program.is_file() else "",
            seed_code, Path(self.config.seed_genome).name, self._notes.put,
        )
        pool = make_pool(self.execution, self.setup, self.genome_dir, self.device, self.reporter.tick)
        ask = True  # whether the scheduler may have something new: after a result or a ready proposal
        try:
            while True:
                while ask and pool.free() > 0:
                    job = scheduler.next(state, len(pool.running()))
                    self._flush_notes()
                    if job is None:
                        ask = False
                        break
                    self._start(pool, *self._job(state, job), held_out=isinstance(job, Due) and job.held_out,
                                fidelity=job.fidelity)
                if not pool.running():
                    if not scheduler.waiting_for_proposal:
                        break
                    scheduler.proposals.wait_any(POLL_S)  # only slow proposals pending: wait for one
                    ask = True
                    continue
                for finished in pool.wait(POLL_S):
                    self._finish(state, finished)
                    ask = True
                ask = ask or any(scheduler.proposals.ready(k) for k in scheduler.proposals.keys())
        except BaseException as exc:
            self._interrupt(pool, recover_kept=isinstance(exc, KeyboardInterrupt))
            raise
        finally:
            pool.close()
            scheduler.close()
            self._flush_notes()
        if len(state) and next(state.ranked(), None) is None and not scheduler.out_of_evaluations(state, 0):
            raise EngineError(self._seed_failure())
        return self.incumbent()

    def _job(self, state: RunState, job: Due | Birth) -> tuple[GenomeRecord, int]:
        """The genome to evaluate and its replicate number; a birth is recorded first."""
        if isinstance(job, Due):
            return job.result.genome, job.replicate
        child = job.child
        if job.index == 0:
            self.reporter.generation_started(job.cohort, self.config.population)
        record = self.archive.add_genome(
            self.config.run, child.generation, child.operator, child.description, child.code, child.parents
        )
        state.add_genome(record, child.code)
        genome_files.write_atomic(genome_files.genome_path(self.genome_dir, record.genome_id), child.code)
        return record, 0

    def _start(
        self, pool: WorkerPool, genome: GenomeRecord, replicate: int, held_out: bool = False, fidelity: float = 1.0,
    ) -> None:
        """Record a RUNNING evaluation of ``genome`` and hand it to a free slot.

        Replicate r runs with ``EVO_SEED = evo_seed(r, held_out)``; a screen (``fidelity``
        below 1, :mod:`evo.screening`) trains for that share of the time budget, and its
        wall and scoring limits follow that budget.

        Raises:
            HarnessChangedError: prepare.py is not the run's pinned harness (nothing recorded).
        """
        state = self.state
        read_pinned_harness(self.setup)
        code = state.source(genome)
        path = genome_files.genome_path(self.genome_dir, genome.genome_id)
        if not path.is_file() or path.read_text(encoding="utf-8") != code:
            genome_files.write_atomic(path, code)
        result = state.result(genome.genome_id)
        attempt = 1 + len(result.evaluations) + len(result.held_out) + len(result.screens)
        log = genome_files.log_path(self.genome_dir, genome.genome_id, attempt)
        seed = evo_seed(replicate, held_out)
        record = self.archive.start_evaluation(
            self.config.run, genome.genome_id, seed, pool.next_device(), log, self.setup.sandbox.name, held_out,
            fidelity,
        )
        state.record(record)
        if held_out and replicate == 0:
            self.reporter.message(
                f"search over: evaluating the declared best {genome.genome_id} {self.config.held_out_replicates} more "
                f"time{'s' if self.config.held_out_replicates != 1 else ''} with fresh seeds, held out from every "
                "decision (evo.held_out)"
            )
        screen = fidelity < 1.0
        budget_s = self.time_budget_s * fidelity
        env = genome_env(self.config.profile, self.config.dataset, seed, budget_s if screen else self.config.time_budget_s)
        scoring_limit_s, ready_limit_s = evaluation_limits(state.seed(), genome, self.time_budget_s, budget_s)
        job = EvaluationJob(
            record.eval_id, genome.genome_id, code, log, env, self.config.effective_wall_limit_s(budget_s),
            scoring_limit_s, seed=genome.operator == "seed", ready_limit_s=ready_limit_s,
        )
        device = pool.submit(job)
        birth = state.birth_index(genome.genome_id)
        self.reporter.genome_started(
            genome, birth % self.config.population + 1, self.config.population, record.attempt, device,
            budget_s=budget_s if screen else None,
        )

    def _finish(self, state: RunState, finished: Finished) -> None:
        """Record what a slot handed back; a lost worker's evaluation is INTERRUPTED (re-run).

        Raises:
            BaseException: the job's own error when it is not a lost worker (the harness
                changed, ...), after recording the evaluation INTERRUPTED.
        """
        job = finished.job
        outcome = finished.outcome
        if finished.error is not None or outcome is None:
            why = f"the evaluation did not run to an end: {finished.error}"
            outcome = Outcome(EvalState.INTERRUPTED, 0.0, None, {}, FailureKind.INTERRUPTED, why,
                              tail(read_tail(job.log_path)))
        record = self._commit(job, outcome, finished.device)
        state.record(record)
        result = state.result(job.genome_id)
        genome = result.genome
        self.reporter.genome_finished(genome, record, self.incumbent())
        if record.held_out:
            self._report_held_out(result)
        if record.state is EvalState.COMPLETE and result.n == 2 and result.ignores_seed:
            self.reporter.message(
                f"{genome.genome_id}: evaluations with EVO_SEED "
                f"{', '.join(str(e.seed) for e in result.evaluations if e.state is EvalState.COMPLETE)} "
                f"gave the identical val_bpb {record.val_bpb:.6f}: the genome fixes its own random seed "
                "(torch.manual_seed?), so its replicates measure no noise"
            )
        self.record_noise_floor()
        if finished.error is not None and not isinstance(finished.error, WorkerLostError):
            raise finished.error
        cohort = state.birth_index(genome.genome_id) // self.config.population
        members = state.cohort(cohort * self.config.population, self.config.population)
        if cohort not in self._cohorts_reported and len(members) == self.config.population and all(
            r.is_finished for r in members
        ):
            self._cohorts_reported.add(cohort)
            self.reporter.generation_finished(cohort, self.incumbent(), members)

    def _report_held_out(self, result: GenomeResult) -> None:
        """One line per finished held-out evaluation; its figure once all of them are in."""
        k, done = self.config.held_out_replicates, result.held_out_counted
        figure = held_out_figure(result.held_out_scores, self.state.sigma())
        if done < k or figure is None:
            self.reporter.message(f"{result.genome_id}: held-out evaluation {done}/{k} of the declared best finished")
            return
        self.reporter.message(
            f"declared best {result.genome_id}: {describe_held_out(figure)}, from evaluations that took no part "
            f"in choosing it (its search readings: mean {result.val_bpb:.6f}, n={result.n})"
        )

    def _commit(self, job: EvaluationJob, outcome: Outcome, device: str | None) -> EvaluationRecord:
        """Record a finished evaluation; its outcome is kept in a file until the archive has it.

        Raises:
            ArchiveWriteError: the archive could not be written (a full disk...); the
                outcome stays in its file and ``evo resume`` records it.
        """
        try:
            kept = self.pending.save(self.config.run, job.genome_id, job.eval_id, outcome, device)
        except OSError as exc:
            kept = None
            self.reporter.message(f"could not keep the outcome of {job.genome_id} beside the archive: {exc}")
        try:
            record = self.archive.finish_evaluation(job.eval_id, outcome, device)
        except (duckdb.Error, OSError) as exc:
            where = (f"its outcome is kept in {kept} and `evo resume` records it" if kept
                     else "its outcome could not be kept: `evo resume` evaluates it again")
            raise ArchiveWriteError(
                f"the archive {self.archive.path} could not record the evaluation of {job.genome_id} "
                f"({type(exc).__name__}: {exc}); {where}. Free disk space or fix the archive's folder, then resume"
            ) from exc
        self.pending.remove(job.eval_id)
        return record

    def _interrupt(self, pool: WorkerPool, recover_kept: bool = False) -> None:
        """Stop the slots and record what they were running as INTERRUPTED (re-run on resume),
        with ``recover_kept`` (a Ctrl-C, which may have cut a commit short) record the outcomes
        kept beside the archive (:mod:`evo.pending`), and finish any other evaluation of the
        run still RUNNING as INTERRUPTED. A failed commit's outcome stays kept, RUNNING, for
        ``evo resume``."""
        running = pool.running()
        pool.close()
        for r in running:
            self._record_interrupted(r.job.eval_id, r.job.log_path)
        if recover_kept:
            try:
                self.pending.recover(self.archive, self.config.run)
            except Exception:  # noqa: BLE001 -- it stays kept, RUNNING: the next resume records it
                pass
        try:  # then what a Ctrl-C cut short between its record and its slot (the run's lock is held);
            # an outcome still kept stays RUNNING: the next resume records it
            self.archive.interrupt_running(self.config.run, "the engine stopped before this evaluation finished",
                                           keep=self.pending.kept())
        except Exception:  # noqa: BLE001 -- the next resume does the same
            pass

    def _record_interrupted(self, eval_id: int, log_path: Path) -> None:
        """Finish a RUNNING evaluation as INTERRUPTED (best effort: resume does it otherwise)."""
        outcome = Outcome(EvalState.INTERRUPTED, 0.0, None, {}, FailureKind.INTERRUPTED,
                          "the engine stopped before this evaluation finished", tail(read_tail(log_path)))
        try:
            self.archive.finish_evaluation(eval_id, outcome)
        except Exception:  # noqa: BLE001 -- resume marks it INTERRUPTED anyway
            pass

    def evaluate(self, genome: GenomeRecord, replicate: int = 0) -> EvaluationRecord:
        """Evaluate one recorded genome now, on one slot of this machine, and record it.

        Raises:
            KeyboardInterrupt: after recording the evaluation as INTERRUPTED.
            HarnessChangedError: prepare.py is not the run's pinned harness.
        """
        state = self.state = RunState.load(self.archive, self.config.run)
        pool = make_pool(Execution(), self.setup, self.genome_dir, self.device, self.reporter.tick)
        try:
            self._start(pool, genome, replicate)
            finished: list[Finished] = []
            while not finished:
                finished = pool.wait(POLL_S)
            self._finish(state, finished[0])
        except BaseException as exc:
            self._interrupt(pool, recover_kept=isinstance(exc, KeyboardInterrupt))
            raise
        finally:
            pool.close()
        return state.result(genome.genome_id).evaluations[-1]

    # ------------------------------------------------------------------ what the run says

    def results(self) -> list[GenomeResult]:
        """Every genome of the run with its evaluations' verdict (in memory while running)."""
        if self.state is None:
            self.state = RunState.load(self.archive, self.config.run)
        return self.state.results()

    def incumbent(self) -> GenomeResult | None:
        """The run's declared best: see :func:`evo.racing.judge`."""
        if self.state is None:
            self.state = RunState.load(self.archive, self.config.run)
        return self.state.incumbent(self.config.best_replicates)

    def record_noise_floor(self) -> None:
        """Store sigma in the archive once the seed's replicates are all in."""
        seed = self.state.seed()
        noise = self.state.noise()
        if self._noise_recorded or seed is None or noise is None or seed.n < self.config.noise_replicates:
            return
        sigma = noise.sigma
        self._noise_recorded = True
        if self.archive.noise_floor(self.config.run) is None:
            self.archive.record_noise_floor(self.config.run, seed.genome_id, sigma, seed.n, 0.0)
            self.reporter.message(
                f"noise floor: sigma = {sigma:.6f} bits/byte from {seed.n} seeds of {seed.genome_id} "
                f"(90% interval {noise.low:.6f}-{noise.high:.6f}; pooled with every later replicate); "
                "the declared best is the genome most likely to be best, with "
                f"{self.config.best_replicates} or more evaluations"
            )

    def _seed_failure(self) -> str:
        seed = self.state.seed()
        last = seed.last if seed is not None else None
        if last is None:
            return f"no genome completed; read the logs under {self.genome_dir}"
        kind = f" ({last.failure_kind})" if last.failure_kind else ""
        error = f": {last.error}" if last.error else ""
        return (f"the seed genome {seed.genome_id} failed{kind}{error}; see its log at {last.log_path}. "
                "No genome completed, so there is no parent to evolve")

    def _flush_notes(self) -> None:
        while not self._notes.empty():
            self.reporter.message(self._notes.get())
