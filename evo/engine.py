"""The generation loop: select -> mutate -> write genome -> run under budget -> record.

Everything the loop needs is rebuilt from the archive at each step, so ``evo resume``
is the same loop started again: completed evaluations are never re-run, evaluations
left RUNNING by a dead engine are marked INTERRUPTED and run again, and generation
numbers continue where they stopped.

A generation has ``population`` children (lambda = mu = population). Generation 0 is
the seed genome (with its profile's overrides) and ``population - 1`` mutants of it;
later generations draw parents from the survivors (see :mod:`evo.selection`).

Children are proposed ahead: once a generation's parents are known, the proposals of
its open slots run in threads (:mod:`evo.proposals`), so an LLM answer is written while
a genome trains. Each slot draws from its own generator, seeded by the run's seed, the
generation and the slot: proposals stay reproducible whatever the threads' timing, and a
resumed run never replays the draws of a recorded child.
"""

from __future__ import annotations

import math
import queue
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from evo import genome as genome_files
from evo.archive import Archive
from evo.config import SEED_OVERRIDES, Paths, RunConfig
from evo.evaluation import EvaluationSetup, evaluate_genome, read_pinned_harness, scoring_limit_s, sha256_file
from evo.evaluator import EVALUATOR_VERSION
from evo.harness import genome_env, genome_view
from evo.limits import Confinement, ProcessLimits, default_memory_mb
from evo.metrics import tail
from evo.noise import incumbent, needs_replicate, noise_sigma, seed_result
from evo.operators import REGISTRY, Context, MutationOperator, Parent, Status
from evo.operators.cst_tools import describe_change, read_constants, set_constants
from evo.operators.llm import LLMMutation
from evo.progress import Reporter
from evo.proposals import ProposalPool
from evo.records import EvalState, FailureKind, GenomeRecord, Outcome
from evo.results import GenomeResult, best, genome_results
from evo.runner import read_tail
from evo.sandbox import detect
from evo.selection import select_parents, survivors

EVAL_SEED = 42  # EVO_SEED of every first evaluation: genomes differ by code, not by seed


class EngineError(RuntimeError):
    """The search cannot go on (e.g. no genome of generation 0 completed)."""


@dataclass(frozen=True)
class Child:
    """A proposed child before it is recorded."""

    code: str
    operator: str
    description: str
    parents: tuple[str, ...]


@dataclass(frozen=True)
class Slot:
    """What proposing one child needs, fixed in the main thread so a proposal can run in a thread.

    Attributes:
        index: the child's place in its generation (0 takes the elite parent).
        pool: the COMPLETE genomes parents are drawn from.
        children_of: genome id -> children it has (or is planned to get) in this generation.
        seen: normalized hashes of every genome of the run (a child must be new).
        sources: genome id -> source, for the pool.
        rng: this slot's own generator, derived from the run's seed, the generation and the index.
    """

    generation: int
    index: int
    pool: tuple[GenomeResult, ...]
    children_of: dict[str, int]
    seen: frozenset[str]
    sources: dict[str, str]
    context: Context
    rng: random.Random


def seed_child(seed_code: str, profile: str, seed_name: str) -> Child:
    """The generation-0 seed genome: the seed file with its profile's overrides applied.

    Overrides name constants of ``seed_train.py``; a seed genome of the user's own that
    lacks some of them gets those it has (the description lists what was applied).
    """
    constants = read_constants(seed_code)
    overrides = {k: v for k, v in SEED_OVERRIDES.get(profile, {}).items() if k in constants}
    code = set_constants(seed_code, overrides) if overrides else seed_code
    description = f"seed genome ({seed_name})"
    if overrides:
        changes = ", ".join(describe_change(k, constants[k].value, v) for k, v in overrides.items())
        description += f", {profile} profile: {changes}"
    return Child(code, "seed", description, ())


class Engine:
    """Runs the generations of one run against an archive.

    Args:
        paths: the project's folders and archive file.
        archive: the open archive.
        config: the run's configuration (as stored in the archive).
        time_budget_s: training seconds per genome (the profile's unless overridden).
        device: what genomes run on, recorded with each evaluation.
        reporter: receives progress events.
    """

    def __init__(
        self, paths: Paths, archive: Archive, config: RunConfig, time_budget_s: float, device: str, reporter: Reporter
    ) -> None:
        self.paths = paths
        self.archive = archive
        self.config = config
        self.time_budget_s = time_budget_s
        self.device = device
        self.reporter = reporter
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
            llm.attach(archive, config.run, self._notes.put)
        self.proposals: ProposalPool[Child] = ProposalPool(config.proposal_workers)
        self._sources: dict[str, str] = {}  # sha256 -> code; sources never change
        self.setup = self._evaluation_setup()

    def _evaluation_setup(self) -> EvaluationSetup:
        """The run's trust boundary: pinned harness, sandbox, limits, what genomes may read.

        A run recorded before pinning existed is pinned to the harness as it is now.
        """
        record = self.archive.get_run(self.config.run)
        pinned = record.harness_sha256
        if pinned is None:
            pinned = sha256_file(self.paths.prepare_py)
            self.archive.pin_harness(self.config.run, pinned, EVALUATOR_VERSION)
        elif record.evaluator_version and record.evaluator_version != EVALUATOR_VERSION:
            self.reporter.message(
                f"[yellow]note:[/] the trusted evaluator changed since this run started "
                f"({record.evaluator_version} -> {EVALUATOR_VERSION})"
            )
        sandbox = detect(self.config.sandbox)
        gpu = self.device.startswith("cuda")
        view = genome_view(self.paths.prepare_py, self.config.profile, self.config.dataset)
        limits = ProcessLimits(
            max_file_size_mb=self.config.max_file_size_mb, max_processes=self.config.max_processes,
            max_memory_mb=self.config.max_memory_mb or default_memory_mb(), address_space_ok=not gpu,
        )
        hidden = (*view.hidden, self.paths.archive_path.parent, self.paths.project_dir / "genomes")
        setup = EvaluationSetup(
            self.paths.project_dir, pinned, self.config.profile, self.config.dataset, view.cache_dir,
            self.config.fitness, sandbox, limits, view.data_files, hidden, gpu,
        )
        with Confinement(limits) as probe:
            limited = probe.describe()
        if sandbox.isolated:
            self.reporter.message(f"sandbox: bubblewrap ({sandbox.binary}); limits: {limited}")
        else:
            self.reporter.message(
                f"[yellow]no sandbox[/] ({sandbox.reason}): genomes run unconfined and could read validation data "
                f"or write your files; trusted scoring, limits ({limited}) and the pinned harness still apply"
            )
        if self.config.fitness == "reported":
            self.reporter.message("[yellow]fitness is self-reported[/] (--fitness reported): genomes' printed val_bpb is trusted")
        return setup

    # ------------------------------------------------------------------ the loop

    def run(self, seed_code: str | None = None) -> GenomeResult | None:
        """Run generations until ``config.generations`` are done (forever if ``None``) or
        ``config.max_evaluations`` evaluations were counted.

        Args:
            seed_code: the seed genome's source; needed only while generation 0 has no
                genome yet (a new run).

        Returns:
            The run's declared best genome (the noise-aware incumbent).

        Raises:
            KeyboardInterrupt: after recording the running evaluation as INTERRUPTED.
            EngineError: the search cannot continue.
        """
        self.archive.interrupt_running(self.config.run, "the engine stopped before this evaluation finished")
        genome_files.remove_workspaces(self.genome_dir)  # left by a killed engine
        try:
            while not self.out_of_evaluations():
                generation = self.current_generation()
                if self.config.generations is not None and generation >= self.config.generations:
                    break
                self.run_generation(generation, seed_code)
        finally:
            self.proposals.close()
            self._flush_notes()
        return self.incumbent(self.results())

    def run_generation(self, generation: int, seed_code: str | None = None) -> None:
        """Bring ``generation`` to ``population`` finished children, with their replicates.

        One step at a time, each decided from the archive: (1) an evaluation that is due
        (an interrupted child, a seed replicate for the noise floor, a replicate of a
        child that would become the best), else (2) a new child: select parents, mutate
        (proposed ahead, in threads, while earlier genomes train: :meth:`propose_ahead`),
        record, write, evaluate.
        """
        self.reporter.generation_started(generation, self.config.population)
        while not self.out_of_evaluations():
            results = self.results()
            self.propose_ahead(generation, results)
            due = self.due_evaluation(generation, results)
            if due is not None:
                self.evaluate(due.genome, self._index(due, results), replicate=due.counted)
                continue
            children = [r for r in results if r.genome.generation == generation]
            if len(children) >= self.config.population:
                break
            child = self.take_child(generation, results, seed_code)
            record = self.archive.add_genome(
                self.config.run, generation, child.operator, child.description, child.code, child.parents
            )
            genome_files.write_atomic(genome_files.genome_path(self.genome_dir, record.genome_id), child.code)
            self.evaluate(record, len(children) + 1, replicate=0)
        results = self.results()
        if generation == 0 and best(results) is None and not self.out_of_evaluations():
            raise EngineError(
                "no genome of generation 0 completed, so there is no parent to evolve; "
                f"read the logs under {self.genome_dir}"
            )
        self.record_noise_floor(results)
        self.reporter.generation_finished(generation, self.incumbent(results), results)

    def due_evaluation(self, generation: int, results: Sequence[GenomeResult]) -> GenomeResult | None:
        """The genome of ``generation`` whose next evaluation is due, if any.

        In order: a child never evaluated to an end (PENDING, or interrupted); the seed
        genome until it has ``noise_replicates`` evaluations (the noise floor); a COMPLETE
        child that beats the incumbent by more than k * sigma but has fewer than
        ``best_replicates`` evaluations (re-evaluated before it may be declared best).
        """
        children = [r for r in results if r.genome.generation == generation]
        for r in children:
            if not r.is_finished:
                return r
        for r in children:
            if r.genome.operator == "seed" and r.is_complete and r.counted < self.config.noise_replicates:
                return r
        current = self.incumbent(results)
        sigma = noise_sigma(results)
        for r in children:
            if needs_replicate(r, current, sigma, self.config.noise_k, self.config.best_replicates):
                return r
        return None

    def current_generation(self) -> int:
        """The lowest generation with fewer than ``population`` children or an evaluation due."""
        results = self.results()
        if not results:
            return 0
        last = max(r.genome.generation for r in results)
        in_last = [r for r in results if r.genome.generation == last]
        done = len(in_last) >= self.config.population and self.due_evaluation(last, results) is None
        return last + 1 if done else last

    def out_of_evaluations(self) -> bool:
        """Whether ``config.max_evaluations`` counted evaluations are done."""
        if self.config.max_evaluations is None:
            return False
        counted = sum(r.counted for r in self.results())
        return counted >= self.config.max_evaluations

    def incumbent(self, results: Sequence[GenomeResult]) -> GenomeResult | None:
        """The run's declared best: see :func:`evo.noise.incumbent`."""
        return incumbent(results, noise_sigma(results), self.config.noise_k, self.config.best_replicates)

    def record_noise_floor(self, results: Sequence[GenomeResult]) -> None:
        """Store sigma in the archive once the seed's replicates are all in."""
        seed = seed_result(results)
        sigma = noise_sigma(results)
        if seed is None or sigma is None or seed.n < self.config.noise_replicates:
            return
        if self.archive.noise_floor(self.config.run) is None:
            self.archive.record_noise_floor(self.config.run, seed.genome_id, sigma, seed.n, self.config.noise_k)
            self.reporter.message(
                f"noise floor: sigma = {sigma:.6f} bits/byte over {seed.n} seeds of {seed.genome_id}; "
                f"a child must beat the best by more than {self.config.noise_k:g} sigma = "
                f"{self.config.noise_k * sigma:.6f} to count as an improvement"
            )

    @staticmethod
    def _index(result: GenomeResult, results: Sequence[GenomeResult]) -> int:
        same = [r.genome_id for r in results if r.genome.generation == result.genome.generation]
        return same.index(result.genome_id) + 1

    def results(self) -> list[GenomeResult]:
        """Every genome of the run with its evaluations' verdict, from the archive."""
        run = self.config.run
        return genome_results(self.archive.genomes(run), self.archive.evaluations(run))

    # ------------------------------------------------------------------ mutation

    def make_child(self, generation: int, results: Sequence[GenomeResult], seed_code: str | None) -> Child:
        """Select parent(s) and apply a mutation operator until the child is new, here and now.

        Raises:
            EngineError: no new child after ``config.mutation_attempts`` tries.
        """
        if generation == 0 and not results:
            if seed_code is None:
                raise EngineError("the run has no seed genome recorded and none was given")
            return seed_child(seed_code, self.config.profile, self.paths.seed_genome.name)
        index = sum(1 for r in results if r.genome.generation == generation)
        return self._mutate(self._slot(generation, index, results, self._children_of(generation, results)))

    def _slot(
        self, generation: int, index: int, results: Sequence[GenomeResult], children_of: dict[str, int],
        context: Context | None = None, salt: str = "",
    ) -> Slot:
        if generation == 0:
            pool = [r for r in results if r.genome.operator == "seed"]  # mutants of the seed
        else:
            pool = survivors([r for r in results if r.genome.generation < generation], self.config.population)
        return Slot(
            generation, index, tuple(pool), dict(children_of), frozenset(r.genome.normalized_sha256 for r in results),
            {r.genome_id: self.source(r.genome) for r in pool}, context or self.context(results),
            random.Random(f"{self.config.seed}:{generation}:{index}{salt}"),
        )

    @staticmethod
    def _children_of(generation: int, results: Sequence[GenomeResult]) -> Counter[str]:
        children_of: Counter[str] = Counter()
        for r in results:
            if r.genome.generation == generation:
                children_of.update(set(r.genome.parents))
        return children_of

    def _choose(self, slot: Slot, attempt: int, tries: Counter[str]) -> tuple[MutationOperator, list[GenomeResult]] | None:
        """An operator (by the run's weights) and its parents, or ``None`` when no operator is left.

        An operator with ``max_tries_per_child`` (the LLM: each try costs money) is not
        drawn again for this child once it used them.
        """
        names = [n for n, op in self.operators.items() if tries[n] < getattr(op, "max_tries_per_child", math.inf)]
        if not names:
            return None
        operator = self.operators[slot.rng.choices(names, weights=[self.config.operators[n] for n in names])[0]]
        if slot.generation == 0:
            return operator, [slot.pool[0]] * operator.n_parents
        parents = select_parents(
            list(slot.pool), operator.n_parents, slot.rng, self.config.selection, self.config.tournament_size,
            elite_first=(attempt == 0 and slot.index == 0), children=slot.children_of, cap=self.config.children_cap,
        )
        return operator, parents

    def _mutate(self, slot: Slot, first: tuple[MutationOperator, list[GenomeResult]] | None = None) -> Child:
        """Apply operators to parents of ``slot`` until the child is new; safe to run in a thread.

        Raises:
            EngineError: no new child after ``config.mutation_attempts`` tries.
        """
        reasons: list[str] = []
        tries: Counter[str] = Counter()
        for attempt in range(self.config.mutation_attempts):
            choice = first if attempt == 0 and first is not None else self._choose(slot, attempt, tries)
            if choice is None:
                reasons.append("every operator used its tries for this child")
                break
            operator, parents = choice
            tries[operator.name] += 1
            code_parents = [Parent(p.genome_id, slot.sources[p.genome_id], p.val_bpb) for p in parents]
            result = operator.propose(code_parents, slot.rng, slot.context)
            if result.status is not Status.OK:
                reasons.append(f"{operator.name}: {result.reason}")
                continue
            try:
                genome_files.validate(result.code)
            except genome_files.InvalidGenomeError as exc:
                reasons.append(f"{operator.name}: {exc}")
                continue
            if genome_files.normalized_sha256(result.code) in slot.seen:
                reasons.append(f"{operator.name}: duplicate of an evaluated genome ({result.description})")
                continue
            ids = tuple(dict.fromkeys(p.genome_id for p in parents))
            return Child(result.code, operator.name, result.description, ids)
        raise EngineError(
            f"no new child after {sum(tries.values())} attempts; last reasons: " + "; ".join(reasons[-3:])
        )

    # ------------------------------------------------------------------ proposals ahead

    def propose_ahead(self, generation: int, results: Sequence[GenomeResult]) -> None:
        """Start proposing the generation's open slots in threads, so the LLM works while genomes train.

        Only once the generation's parents are known (the seed scored, for generation 0),
        and only when none of its slots is pending. Each slot's first operator and parents
        are chosen here, in slot order, so elitism and the children cap see earlier slots.
        """
        self._flush_notes()
        if self.config.proposal_workers < 1:
            return
        if generation == 0 and not any(r.genome.operator == "seed" and r.is_complete for r in results):
            return
        index = sum(1 for r in results if r.genome.generation == generation)
        slots = list(range(index, self.config.population))
        if self.config.max_evaluations is not None:  # do not pay for children that will never run
            slots = slots[: max(0, self.config.max_evaluations - sum(r.counted for r in results))]
        if not slots or any((generation, i) in self.proposals for i in slots):
            return
        children_of = self._children_of(generation, results)
        context = self.context(results)
        for i in slots:
            slot = self._slot(generation, i, results, children_of, context)
            first = self._choose(slot, 0, Counter())
            if first is None:
                return
            children_of.update({p.genome_id for p in first[1]})
            self.proposals.submit((generation, i), partial(self._mutate, slot, first))

    def take_child(self, generation: int, results: Sequence[GenomeResult], seed_code: str | None) -> Child:
        """The next child: its proposal made ahead (waiting for it if needed), else one made now."""
        index = sum(1 for r in results if r.genome.generation == generation)
        if (generation, index) not in self.proposals:
            return self.make_child(generation, results, seed_code)
        child = self.proposals.take((generation, index))
        self._flush_notes()
        if genome_files.normalized_sha256(child.code) not in {r.genome.normalized_sha256 for r in results}:
            return child
        # a proposal running beside it produced the same child first: a failed attempt, propose again now
        slot = self._slot(generation, index, results, self._children_of(generation, results), salt=":again")
        return self._mutate(slot)

    def _flush_notes(self) -> None:
        while not self._notes.empty():
            self.reporter.message(self._notes.get())

    def source(self, genome: GenomeRecord) -> str:
        if genome.source_sha256 not in self._sources:
            self._sources.update(self.archive.sources(self.config.run))
        if genome.source_sha256 not in self._sources:
            self._sources[genome.source_sha256] = self.archive.source(genome.source_sha256)
        return self._sources[genome.source_sha256]

    def context(self, results: Sequence[GenomeResult]) -> Context:
        """What operators may learn from: every genome's verdict and the completed sources."""
        complete = tuple((self.source(r.genome), r.val_bpb) for r in results if r.is_complete)
        program = ""
        if LLMMutation.name in self.operators and self.paths.program_md.is_file():  # read anew: edits apply
            program = self.paths.program_md.read_text(encoding="utf-8")
        return Context(complete, tuple(results), self.config.profile, self.time_budget_s, program)

    # ------------------------------------------------------------------ evaluation

    def scoring_limit(self, genome: GenomeRecord, results: Sequence[GenomeResult]) -> float | None:
        """Wall seconds past which ``genome`` is not scored (``None`` for the seed genome, which
        defines the run's start-up allowance, and before it completed)."""
        if genome.operator == "seed":
            return None
        seed = seed_result(results)
        walls = [e.wall_s for e in seed.evaluations if e.state is EvalState.COMPLETE and e.wall_s] if seed else []
        return scoring_limit_s(self.time_budget_s, walls)

    def evaluate(self, genome: GenomeRecord, index_in_generation: int, replicate: int = 0) -> None:
        """Run one genome in its sandbox under the time budget, score it, record the outcome.

        Replicate r runs with ``EVO_SEED = EVAL_SEED + r``: first evaluations share one
        seed (genomes differ by code, not by luck), replicates measure the noise.

        Raises:
            HarnessChangedError: prepare.py is not the run's pinned harness (nothing recorded).
            KeyboardInterrupt: after recording this evaluation as INTERRUPTED.
        """
        run = self.config.run
        read_pinned_harness(self.setup)
        path = genome_files.genome_path(self.genome_dir, genome.genome_id)
        code = self.source(genome)
        if not path.is_file() or path.read_text(encoding="utf-8") != code:
            genome_files.write_atomic(path, code)
        results = self.results()
        attempt = 1 + sum(len(r.evaluations) for r in results if r.genome_id == genome.genome_id)
        log = genome_files.log_path(self.genome_dir, genome.genome_id, attempt)
        seed = EVAL_SEED + replicate
        record = self.archive.start_evaluation(run, genome.genome_id, seed, self.device, log, self.setup.sandbox.name)
        self.reporter.genome_started(genome, index_in_generation, self.config.population, record.attempt)
        env = genome_env(self.config.profile, self.config.dataset, seed, self.config.time_budget_s)
        try:
            outcome = evaluate_genome(
                self.setup, code, genome_files.workspace_path(self.genome_dir, genome.genome_id), log, env,
                hard_limit_s=self.config.effective_wall_limit_s(self.time_budget_s),
                scoring_limit=self.scoring_limit(genome, results), on_tick=self.reporter.tick,
            )
        except BaseException:
            interrupted = Outcome(EvalState.INTERRUPTED, 0.0, None, {}, FailureKind.INTERRUPTED,
                                  "the engine stopped before this evaluation finished", tail(read_tail(log)))
            self.archive.finish_evaluation(record.eval_id, interrupted)
            raise
        finished = self.archive.finish_evaluation(record.eval_id, outcome)
        self.reporter.genome_finished(genome, finished, self.incumbent(self.results()))
