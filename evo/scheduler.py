"""What runs next when an evaluation slot frees: a due evaluation, or a new child.

Asynchronous steady state (as in asynchronous evolution strategies and Ray Tune's
asynchronous schedulers; see also Scott & De Jong 2016, "Understanding simple
asynchronous evolutionary algorithms"): there is no generation barrier. Whenever a
slot frees, the next job is decided from the run as it stands:

1. an evaluation that is due, over every genome not being evaluated: a genome never
   evaluated to an end (PENDING, or interrupted), the seed genome until it has
   ``noise_replicates`` evaluations (the noise floor), a replicate that decides the race
   for the best (:func:`evo.racing.race_replicate`: the genome most likely to be best
   until it has ``best_replicates`` readings, contenders while the race is open), and,
   with screening on (:mod:`evo.screening`), a screened child's promotion to a full
   evaluation (ASHA's rule);
2. once the search is over (:mod:`evo.held_out`), the declared best's held-out
   evaluations, one at a time when nothing else runs, and nothing else;
3. else a new child. Births are paced in *cohorts* of ``population``: birth ``b``
   belongs to cohort ``b // population``, and ``--generations G`` means ``G`` cohorts.
   Cohort 0 is the seed genome and ``population - 1`` mutants of it (started once the
   seed has scored); a child of a later cohort ``c`` draws its parents from the survivors
   among the genomes of cohorts ``< c`` that have finished (ranked by posterior mean,
   :mod:`evo.posterior`). With one slot every cohort is
   finished before the next starts, which is exactly the generational (mu + lambda) loop.
   A child's *generation*, recorded in the lineage, is one more than its deepest
   parent's (0 for cohort 0). With screening on, every child but the seed is first
   evaluated at the screening fidelity.

Children are proposed ahead, in threads (:mod:`evo.proposals`), as soon as their
parents are known, so an LLM answer is written while genomes train. A slot never waits
for a proposal that is not ready when another operator can make a child at once: that
child is made now and the pending proposal is used for a later birth.

Children are made by :class:`evo.breeding.Breeder`: a slow operator (the LLM) tries
once per child; when every operator is slow, a proposal that failed tries again later
with backoff, so failed calls never stop the run; an operator that stopped for the run
(LLM budget spent, key refused) is said once, and when no operator is left no child is
born (the run ends after what is running and due; a refused key is an EngineError).

Each planned child draws from its own generator, seeded by the run's seed, the cohort
and the birth's index in it: proposals stay reproducible whatever the threads' timing.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from evo import genome as genome_files
from evo.breeding import Breeder, Child, ChildPlan, EngineError, NoChildError
from evo.config import SEED_OVERRIDES, RunConfig
from evo.credit import operator_credit, operator_weights
from evo.operator_context import ContextBuilder
from evo.operators import Context, MutationOperator
from evo.operators.cst_tools import describe_change, read_constants, set_constants
from evo.proposals import ProposalPool
from evo.racing import race_replicate
from evo.results import GenomeResult
from evo.state import RunState

__all__ = ["Birth", "Child", "ChildPlan", "Due", "EngineError", "NoChildError", "Scheduler", "seed_child"]


@dataclass(frozen=True)
class Due:
    """A recorded genome whose next evaluation is due; ``replicate`` numbers its seed
    (``held_out``: a held-out evaluation, :mod:`evo.held_out`; ``fidelity``: the share of
    the time budget, below 1 for a screen, :mod:`evo.screening`)."""

    result: GenomeResult
    replicate: int
    held_out: bool = False
    fidelity: float = 1.0


@dataclass(frozen=True)
class Birth:
    """A new child to record and evaluate; ``cohort`` and ``index`` place it in the pacing
    (``fidelity``: the share of the time budget of its first evaluation)."""

    child: Child
    cohort: int
    index: int
    fidelity: float = 1.0


def seed_child(seed_code: str, profile: str, seed_name: str) -> Child:
    """The cohort-0 seed genome: the seed file with its profile's overrides applied.

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


class Scheduler:
    """Decides the next job of a run (module docstring).

    Args:
        config: the run's settings.
        operators: name -> operator, those with a positive weight.
        context_extras: ``(profile, time_budget_s, program_md)`` for :class:`Context`;
            ``program_md`` is called at each plan (edits of program.md apply at once).
        seed_code: the seed genome's source (``None`` once the run has genomes).
        seed_name: its file name, for the seed's description.
        note: receives one-line messages, from the engine's thread and from proposal
            threads (the engine shows them); must be thread-safe.
    """

    def __init__(
        self, config: RunConfig, operators: dict[str, MutationOperator], profile: str, time_budget_s: float,
        program_md: Callable[[], str], seed_code: str | None, seed_name: str,
        note: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.operators = operators
        self.profile = profile
        self.seed_code = seed_code
        self.seed_name = seed_name
        self.proposals: ProposalPool[Child] = ProposalPool(config.proposal_workers)
        self.breeder = Breeder(config, operators, note)
        self._fast = self.breeder.fast
        self._proposed: set[int] = set()  # cohorts whose open births were planned ahead
        self.waiting_for_proposal = False  # the last next() found only slow proposals, none ready
        self._context = ContextBuilder(config.best_replicates, profile, time_budget_s, program_md)

    def close(self) -> None:
        self.breeder.close()  # proposals waiting to try again end now
        self.proposals.close()

    # ------------------------------------------------------------------ the decision

    def next(self, state: RunState, in_flight: int) -> Due | Birth | None:
        """The job for a slot that just freed, or ``None`` when nothing can start now.

        Args:
            state: the run as it stands.
            in_flight: evaluations running (they count against ``max_evaluations``).

        Raises:
            EngineError: no new child could be made; every operator stopped, one for an
                error of the setup (a refused API key), and no evaluation is running.
        """
        self.waiting_for_proposal = False
        if not self.breeder.check_stops(in_flight):
            return None
        if self.out_of_evaluations(state, in_flight):
            return None
        if self.held_out_reserved(state, in_flight):
            return self.held_out_due(state, in_flight)
        due = self.due(state)
        if due is not None:
            return due
        births = len(state)
        cohort, index = divmod(births, self.config.population)
        if self.config.generations is not None and cohort >= self.config.generations:
            return self.held_out_due(state, in_flight)  # every cohort born, nothing due: the search is over
        if births == 0:
            if self.seed_code is None:
                raise EngineError("the run has no seed genome recorded and none was given")
            return Birth(seed_child(self.seed_code, self.profile, self.seed_name), 0, 0)  # always in full
        pool = self.parent_pool(state, cohort)
        if not pool:
            return None  # parents not known yet: wait for a running evaluation
        self.propose_ahead(state, cohort, pool, in_flight)
        child = self.take_child(state, cohort, index, pool)
        fidelity = self.config.screen_fraction if self.config.screening else 1.0
        return None if child is None else Birth(child, cohort, index, fidelity)

    def left(self, state: RunState, in_flight: int) -> float:
        """Evaluations left of ``max_evaluations`` (in full-budget evaluations, screens at their
        fidelity, :meth:`RunState.spent`; a running evaluation counts one); ``inf`` without a limit."""
        if self.config.max_evaluations is None:
            return math.inf
        return self.config.max_evaluations - state.spent() - in_flight

    def out_of_evaluations(self, state: RunState, in_flight: int) -> bool:
        """Whether no further evaluation fits in ``max_evaluations`` (held-out ones included)."""
        return self.left(state, in_flight) < 1.0 - 1e-9

    def held_out_reserved(self, state: RunState, in_flight: int) -> bool:
        """Whether only the evaluations kept for the held-out ones are left of ``max_evaluations``
        (:meth:`RunConfig.held_out_reserve`): no other full evaluation fits, the search is over."""
        reserve = self.config.held_out_reserve()
        return reserve > 0 and self.left(state, in_flight) - reserve < 1.0 - 1e-9

    def held_out_due(self, state: RunState, in_flight: int) -> Due | None:
        """Once the search is over: the declared best's next held-out evaluation
        (:mod:`evo.held_out`), when nothing else runs, until it has ``held_out_replicates``;
        ``None`` when a run with ``max_evaluations`` keeps none for them (too short)."""
        config = self.config
        if in_flight or (config.max_evaluations is not None and config.held_out_reserve() == 0):
            return None
        best = state.incumbent(self.config.best_replicates)
        if best is None or best.held_out_counted >= config.held_out_replicates:
            return None
        return Due(best, best.held_out_counted, held_out=True)

    def due(self, state: RunState) -> Due | None:
        """The first genome whose next evaluation is due (module docstring, 1), if any.

        Costs what the run's unfinished genomes cost, plus the verdict's recomputation after
        a fitness changed (:meth:`RunState.verdict`).
        """
        unfinished = state.unfinished()
        for r in unfinished:
            if r.state != "RUNNING":
                if self.screens(r):
                    return Due(r, r.screens_counted, fidelity=self.config.screen_fraction)
                return Due(r, r.counted)
        seed = state.seed()
        if seed is not None and seed.is_complete and seed.state != "RUNNING" and seed.counted < self.config.noise_replicates:
            return Due(seed, seed.counted)
        verdict = state.verdict(self.config.best_replicates)
        busy = {r.genome_id for r in unfinished}  # all RUNNING: any other was returned above
        chosen = race_replicate(verdict, self.config.best_replicates, busy, state.replicates, state.counted)
        if chosen is not None:
            r = state.result(chosen)
            return Due(r, r.counted)
        promoted = state.promotion(self.config.screen_eta, self.config.screen_window) if self.config.screening else None
        return None if promoted is None else Due(promoted, 0)

    def screens(self, result: GenomeResult) -> bool:
        """Whether the genome's next evaluation is a screen: screening is on, it is not the
        seed, and it has neither a finished screen nor a full evaluation."""
        return (self.config.screening and result.genome.operator != "seed" and not result.evaluations
                and not result.screens_counted)

    def parent_pool(self, state: RunState, cohort: int) -> list[GenomeResult]:
        """Who a child of ``cohort`` may descend from: the seed for cohort 0 (once it
        scored), else the survivors among the finished genomes of earlier cohorts."""
        if cohort == 0:
            seed = state.seed()
            return [seed] if seed is not None and seed.is_complete else []
        return state.believed(self.config.population, self.config.best_replicates, born_before=cohort * self.config.population)

    # ------------------------------------------------------------------ children

    def generation_of(self, state: RunState, cohort: int, parents: tuple[str, ...]) -> int:
        """One more than the deepest parent's generation; 0 in cohort 0."""
        if cohort == 0 or not parents:
            return 0
        return 1 + max(state.result(p).genome.generation for p in parents)

    def plan(
        self, state: RunState, cohort: int, index: int, pool: list[GenomeResult], children_of: dict[str, int],
        context: Context | None = None, salt: str = "", fast_only: bool = False,
    ) -> ChildPlan:
        sources = state.sources.get_many(r.genome.source_sha256 for r in pool)
        believed = state.verdict(self.config.best_replicates).beliefs
        return ChildPlan(
            cohort, index, tuple(pool), dict(children_of), frozenset(state.normalized),
            {r.genome_id: sources[r.genome.source_sha256] for r in pool}, context or self.context(state),
            random.Random(f"{self.config.seed}:{cohort}:{index}{salt}"),
            self._fast if fast_only else tuple(self.operators),
            {r.genome_id: believed[r.genome_id].mean for r in pool if r.genome_id in believed},
            self.operator_weights(state),
        )

    def children_of(self, state: RunState, cohort: int) -> Counter[str]:
        """Children each genome has among the births of ``cohort``."""
        counts: Counter[str] = Counter()
        for r in state.cohort(cohort * self.config.population, self.config.population):
            counts.update(set(r.genome.parents))
        return counts

    def propose_ahead(self, state: RunState, cohort: int, pool: list[GenomeResult], in_flight: int) -> None:
        """Start proposing the open births of ``cohort`` in threads, once, in index order
        (each plan's first operator and parents are drawn here, so elitism and the
        children cap see the earlier plans).

        Only births drawn for a slow operator (the LLM) are proposed ahead: a fast
        operator's child is made when its slot frees, from every result recorded by then
        (proposed ahead, the optuna operator's model missed the cohort's latest results;
        on the landscape suite's sphere and coupled families, 6 repeats of
        ``benchmarks/search_sim.py``, that cost 0.015 and 0.004 of true fitness at 64
        evaluations)."""
        if (self.config.proposal_workers < 1 or cohort in self._proposed
                or all(name in self._fast for name in self.operators)):
            return
        self._proposed.add(cohort)
        first = len(state) - cohort * self.config.population
        indices = list(range(first, self.config.population))
        if self.config.max_evaluations is not None:  # do not pay for children that will never run
            left = self.left(state, in_flight)
            indices = indices[: max(0, math.ceil(left / (self.config.screen_fraction or 1.0)))]
        children_of = self.children_of(state, cohort)
        context = self.context(state)
        job = self.breeder.mutate if self._fast else self.breeder.patient
        for i in indices:
            plan = self.plan(state, cohort, i, pool, children_of, context)
            choice = self.breeder.choose(plan, 0, Counter())
            if choice is None:
                return
            children_of.update({p.genome_id for p in choice[1]})
            if choice[0].name in self._fast:
                continue  # made by the fast operators when its slot frees (take_child)
            self.proposals.submit((cohort, i), partial(job, plan, choice))

    def take_child(self, state: RunState, cohort: int, index: int, pool: list[GenomeResult]) -> Child | None:
        """The child for birth ``(cohort, index)``.

        A ready proposal (its own first, else the oldest ready one); when none is ready, a
        child made now by the operators that answer at once; when only slow operators
        exist, ``None`` (the engine waits for the proposal while recording results; one
        is started for this birth if none is pending). ``None`` too once every operator
        stopped and no proposal is pending.
        """
        keys = sorted(self.proposals.keys())
        ready = [k for k in keys if self.proposals.ready(k)]
        key = (cohort, index) if (cohort, index) in ready else (ready[0] if ready else None)
        children_of = self.children_of(state, cohort)
        if key is not None:
            keys.remove(key)
            child = self._taken(key)
            if child is not None and genome_files.normalized_sha256(child.code) not in state.normalized:
                return self._placed(state, cohort, child)
            if child is not None and not self._fast and not self.breeder.births_over():
                # a proposal running beside it produced the same child first: propose again
                plan = self.plan(state, cohort, index, pool, children_of, salt=":again")
                self.proposals.submit((cohort, index), partial(self.breeder.patient, plan, None))
                self.waiting_for_proposal = True
                return None
        if self.breeder.births_over():
            self.waiting_for_proposal = bool(keys)  # children already paid for are still taken
            return None
        if not self._fast:
            if not keys:
                plan = self.plan(state, cohort, index, pool, children_of)
                self.proposals.submit((cohort, index), partial(self.breeder.patient, plan, None))
            self.waiting_for_proposal = True
            return None
        # a cohort planned ahead had its slow births submitted: the rest are the fast operators'
        fast_only = bool(keys) or key is not None or cohort in self._proposed
        salt = (":again" if key is not None else ":now") if fast_only else ""
        plan = self.plan(state, cohort, index, pool, children_of, salt=salt, fast_only=fast_only)
        return self._placed(state, cohort, self.breeder.mutate(plan))

    def _taken(self, key: tuple[int, int]) -> Child | None:
        """The child of a finished proposal; ``None`` when it made none (when every
        operator stopped, or when faster operators exist to make the child instead)."""
        try:
            return self.proposals.take(key)
        except NoChildError as exc:
            if exc.final or self._fast:
                return None
            raise

    def operator_weights(self, state: RunState) -> dict[str, float]:
        """Operator name -> weight for the next child: the run's, adapted by credit (:mod:`evo.credit`)."""
        configured = {n: self.config.operators[n] for n in self.operators}
        believed = state.verdict(self.config.best_replicates).beliefs
        return operator_weights(operator_credit(state.results(), believed, configured, state.sigma()))

    def _placed(self, state: RunState, cohort: int, child: Child) -> Child:
        generation = self.generation_of(state, cohort, child.parents)
        return Child(child.code, child.operator, child.description, child.parents, generation)

    def context(self, state: RunState) -> Context:
        """What operators may learn from (:class:`evo.operator_context.ContextBuilder`)."""
        return self._context(state)
