"""The generation loop: select -> mutate -> write genome -> run under budget -> record.

Everything the loop needs is rebuilt from the archive at each step, so ``evo resume``
is the same loop started again: completed evaluations are never re-run, evaluations
left RUNNING by a dead engine are marked INTERRUPTED and run again, and generation
numbers continue where they stopped.

A generation has ``population`` children (lambda = mu = population). Generation 0 is
the seed genome (with its profile's overrides) and ``population - 1`` mutants of it;
later generations draw parents from the survivors (see :mod:`evo.selection`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from evo import genome as genome_files
from evo.archive import Archive
from evo.config import SEED_OVERRIDES, Paths, RunConfig
from evo.harness import genome_env
from evo.metrics import tail
from evo.operators import REGISTRY, Context, MutationOperator, Parent, Status
from evo.operators.cst_tools import describe_change, read_constants, set_constants
from evo.progress import Reporter
from evo.records import EvalState, FailureKind, GenomeRecord, Outcome
from evo.results import GenomeResult, best, genome_results
from evo.runner import run_genome
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


def seed_child(seed_code: str, profile: str, seed_name: str) -> Child:
    """The generation-0 seed genome: the seed file with its profile's overrides applied."""
    overrides = SEED_OVERRIDES.get(profile, {})
    constants = read_constants(seed_code)
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
        self.operators: dict[str, MutationOperator] = {name: REGISTRY[name]() for name in config.operators}
        # Seeded from the run's seed and the archive's size, so a resumed run does not
        # replay the random draws that produced its existing children.
        self.rng = random.Random(config.seed)
        self._sources: dict[str, str] = {}  # sha256 -> code; sources never change

    # ------------------------------------------------------------------ the loop

    def run(self, seed_code: str | None = None) -> GenomeResult | None:
        """Run generations until ``config.generations`` are done (forever if ``None``).

        Args:
            seed_code: the seed genome's source; needed only while generation 0 has no
                genome yet (a new run).

        Returns:
            The best genome so far.

        Raises:
            KeyboardInterrupt: after recording the running evaluation as INTERRUPTED.
            EngineError: the search cannot continue.
        """
        self.archive.interrupt_running(self.config.run, "the engine stopped before this evaluation finished")
        while True:
            generation = self.current_generation()
            if self.config.generations is not None and generation >= self.config.generations:
                break
            self.run_generation(generation, seed_code)
        return best(self.results())

    def run_generation(self, generation: int, seed_code: str | None = None) -> None:
        """Bring ``generation`` to ``population`` finished children."""
        self.rng = random.Random(f"{self.config.seed}:{generation}:{len(self.results())}")
        self.reporter.generation_started(generation, self.config.population)
        while True:
            results = self.results()
            children = [r for r in results if r.genome.generation == generation]
            unfinished = [r for r in children if not r.is_finished]
            if unfinished:  # recorded earlier but never evaluated to an end: run it now
                self.evaluate(unfinished[0].genome, len(children) - len(unfinished) + 1)
                continue
            if len(children) >= self.config.population:
                break
            child = self.make_child(generation, results, seed_code)
            record = self.archive.add_genome(
                self.config.run, generation, child.operator, child.description, child.code, child.parents
            )
            genome_files.write_atomic(genome_files.genome_path(self.genome_dir, record.genome_id), child.code)
            self.evaluate(record, len(children) + 1)
        results = self.results()
        if generation == 0 and best(results) is None:
            raise EngineError(
                "no genome of generation 0 completed, so there is no parent to evolve; "
                f"read the logs under {self.genome_dir}"
            )
        self.reporter.generation_finished(generation, best(results), results)

    def current_generation(self) -> int:
        """The lowest generation that does not yet have ``population`` finished children."""
        results = self.results()
        if not results:
            return 0
        last = max(r.genome.generation for r in results)
        in_last = [r for r in results if r.genome.generation == last]
        done = len(in_last) >= self.config.population and all(r.is_finished for r in in_last)
        return last + 1 if done else last

    def results(self) -> list[GenomeResult]:
        """Every genome of the run with its evaluations' verdict, from the archive."""
        run = self.config.run
        return genome_results(self.archive.genomes(run), self.archive.evaluations(run))

    # ------------------------------------------------------------------ mutation

    def make_child(self, generation: int, results: Sequence[GenomeResult], seed_code: str | None) -> Child:
        """Select parent(s) and apply a mutation operator until the child is new.

        Raises:
            EngineError: no new child after ``config.mutation_attempts`` tries.
        """
        if generation == 0 and not results:
            if seed_code is None:
                raise EngineError("the run has no seed genome recorded and none was given")
            return seed_child(seed_code, self.config.profile, self.paths.seed_genome.name)
        if generation == 0:
            pool = [r for r in results if r.genome.operator == "seed"]  # mutants of the seed
        else:
            pool = survivors([r for r in results if r.genome.generation < generation], self.config.population)
        elite_done = any(r.genome.generation == generation for r in results)
        seen = {r.genome.normalized_sha256 for r in results}
        context = self.context(results)
        reasons: list[str] = []
        for attempt in range(self.config.mutation_attempts):
            operator = self._pick_operator()
            if generation == 0:
                parents = [pool[0]] * operator.n_parents
            else:
                parents = select_parents(
                    pool, operator.n_parents, self.rng, self.config.tournament_size,
                    elite_first=(attempt == 0 and not elite_done),
                )
            code_parents = [Parent(p.genome_id, self.source(p.genome), p.val_bpb) for p in parents]
            result = operator.propose(code_parents, self.rng, context)
            if result.status is not Status.OK:
                reasons.append(f"{operator.name}: {result.reason}")
                continue
            try:
                genome_files.validate(result.code)
            except genome_files.InvalidGenomeError as exc:
                reasons.append(f"{operator.name}: {exc}")
                continue
            if genome_files.normalized_sha256(result.code) in seen:
                reasons.append(f"{operator.name}: duplicate of an evaluated genome ({result.description})")
                continue
            ids = tuple(dict.fromkeys(p.genome_id for p in parents))
            return Child(result.code, operator.name, result.description, ids)
        raise EngineError(
            f"no new child after {self.config.mutation_attempts} attempts; last reasons: " + "; ".join(reasons[-3:])
        )

    def _pick_operator(self) -> MutationOperator:
        names = list(self.operators)
        weights = [self.config.operators[n] for n in names]
        return self.operators[self.rng.choices(names, weights=weights)[0]]

    def source(self, genome: GenomeRecord) -> str:
        if genome.source_sha256 not in self._sources:
            self._sources.update(self.archive.sources(self.config.run))
        if genome.source_sha256 not in self._sources:
            self._sources[genome.source_sha256] = self.archive.source(genome.source_sha256)
        return self._sources[genome.source_sha256]

    def context(self, results: Sequence[GenomeResult]) -> Context:
        """What operators may learn from: every genome's verdict and the completed sources."""
        complete = tuple((self.source(r.genome), r.val_bpb) for r in results if r.is_complete)
        return Context(complete, tuple(results), self.config.profile, self.time_budget_s)

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, genome: GenomeRecord, index_in_generation: int) -> None:
        """Run one genome under the time budget and record the outcome.

        Raises:
            KeyboardInterrupt: after recording this evaluation as INTERRUPTED.
        """
        run = self.config.run
        path = genome_files.genome_path(self.genome_dir, genome.genome_id)
        code = self.source(genome)
        if not path.is_file() or path.read_text(encoding="utf-8") != code:
            genome_files.write_atomic(path, code)
        attempt = 1 + sum(1 for e in self.archive.evaluations(run) if e.genome_id == genome.genome_id)
        log = genome_files.log_path(self.genome_dir, genome.genome_id, attempt)
        record = self.archive.start_evaluation(run, genome.genome_id, EVAL_SEED, self.device, log)
        self.reporter.genome_started(genome, index_in_generation, self.config.population, record.attempt)
        env = genome_env(self.config.profile, self.config.dataset, EVAL_SEED, self.config.time_budget_s)
        try:
            outcome = run_genome(
                path, log, cwd=self.paths.project_dir, env=env,
                wall_limit_s=self.config.effective_wall_limit_s(self.time_budget_s),
                on_tick=self.reporter.tick,
            )
        except BaseException:
            interrupted = Outcome(EvalState.INTERRUPTED, 0.0, None, {}, FailureKind.INTERRUPTED,
                                  "the engine stopped before this evaluation finished", _read_tail(log))
            self.archive.finish_evaluation(record.eval_id, interrupted)
            raise
        finished = self.archive.finish_evaluation(record.eval_id, outcome)
        self.reporter.genome_finished(genome, finished, best(self.results()))


def _read_tail(path: Path) -> str:
    try:
        return tail(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return ""
