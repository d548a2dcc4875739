"""Making one new child from a plan: an operator drawn by the run's weights, its parents
selected, applied until the child is new; and, when every operator is slow, tried again
with backoff until it is made.

Slow operators (the LLM: each try costs money and up to its time limit) try at most
``max_tries_per_child`` times per child (the LLM: once); a child they could not make
comes from the other operators. When every operator is slow, a failed round never stops the run: the proposal
says so in one line, waits with exponential backoff and jitter (``RETRY_WAIT_S``: about
15 s, 30 s, ... up to 4 min; Brooker 2015, "Exponential Backoff And Jitter", AWS
Architecture Blog) and tries again.

An operator can stop for the rest of the run (its ``stopped`` attribute: the LLM budget is
spent, the API refused the key or does not know the model). It is then never drawn, and
:meth:`Breeder.check_stops` says so once, with what follows: the run goes on with the other
operators; when none is left no child is born any more, and the run ends after the
evaluations under way and due (a spent budget) or stops with an :class:`EngineError` once
the running evaluations are recorded (a refused key, an unknown model: errors of the setup).
"""

from __future__ import annotations

import math
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import tenacity
from rich.markup import escape

from evo import genome as genome_files
from evo.config import RunConfig
from evo.operators import Context, MutationOperator, Parent, Status
from evo.results import GenomeResult
from evo.selection import select_parents

RETRY_WAIT_S = (15.0, 240.0)  # an all-slow run's wait between tries of a child: first, longest (s)
REASON_CHARS = 200  # the longest reason quoted in a retry line
FAILS_PER_CHILD = 5  # failed tries after which an operator yields a child to the others (while one has fewer)


def _short(reason: str) -> str:
    """``reason`` cut to :data:`REASON_CHARS` for a one-line note."""
    return reason if len(reason) <= REASON_CHARS else reason[: REASON_CHARS - 3] + "..."


class EngineError(RuntimeError):
    """The search cannot go on (e.g. the seed genome failed, no new child can be made)."""


class NoChildError(EngineError):
    """No operator made a new child for a plan.

    Attributes:
        reasons: why each try failed, ``"operator: reason"``.
        final: every operator of the plan has stopped for the run: trying again cannot help.
    """

    def __init__(self, message: str, reasons: list[str], final: bool) -> None:
        super().__init__(message)
        self.reasons = reasons
        self.final = final


class _Closed(Exception):
    """The breeder closed while a proposal waited to try again."""


@dataclass(frozen=True)
class Child:
    """A proposed child before it is recorded."""

    code: str
    operator: str
    description: str
    parents: tuple[str, ...]
    generation: int = 0


@dataclass(frozen=True)
class ChildPlan:
    """What proposing one child needs, fixed in the engine's thread so it can run in another.

    Attributes:
        cohort, index: the birth it is planned for (index 0 takes the elite parent).
        pool: the COMPLETE genomes parents are drawn from.
        children_of: genome id -> children it has (or is planned to get) in this cohort.
        seen: normalized hashes of every genome of the run (a child must be new).
        sources: genome id -> source, for the pool.
        rng: this plan's own generator.
        operators: the operators it may use (all, or only those that answer at once).
        fitness: genome id -> posterior mean (bits/byte) of the pool, what selection ranks by.
        weights: operator name -> its weight for this child (the run's, adapted by credit).
    """

    cohort: int
    index: int
    pool: tuple[GenomeResult, ...]
    children_of: dict[str, int]
    seen: frozenset[str]
    sources: dict[str, str]
    context: Context
    rng: random.Random
    operators: tuple[str, ...]
    fitness: dict[str, float] | None = None
    weights: dict[str, float] | None = None


def is_slow(operator: MutationOperator) -> bool:
    """Operators whose proposals take long and cost money (the LLM): limited tries per child."""
    return math.isfinite(getattr(operator, "max_tries_per_child", math.inf))


class Stop(Protocol):
    """Why an operator makes no more children in this run (:class:`evo.operators.llm.Stopped` is one)."""

    reason: str  # what happened, one line
    fix: str  # what the user can do to use the operator again
    fatal: bool  # an error of the user's setup (a refused key, an unknown model) rather than a limit reached


def stopped(operator: MutationOperator) -> Stop | None:
    """Why ``operator`` stopped for the run (its ``stopped`` attribute), or ``None``."""
    return getattr(operator, "stopped", None)


class Breeder:
    """Makes children from plans with the run's operators (module docstring); its methods
    are safe to run in proposal threads.

    Args:
        config: the run's settings (operator weights, selection, ``mutation_attempts``).
        operators: name -> operator, those with a positive weight.
        note: receives one-line messages in rich markup (the reporter's; the text of
            servers and models in them is escaped); must be thread-safe.

    Attributes:
        retry_wait_s: ``(first, longest)`` wait between tries of an all-slow run, seconds.
    """

    def __init__(self, config: RunConfig, operators: dict[str, MutationOperator],
                 note: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.operators = operators
        self.note: Callable[[str], None] = note or (lambda text: None)
        self.retry_wait_s = RETRY_WAIT_S
        self.fast = tuple(n for n, op in operators.items() if not is_slow(op))
        self._announced: set[str] = set()  # operators whose stop was said
        self._closed = threading.Event()

    def close(self) -> None:
        """End the waits of proposals between tries (they raise and end)."""
        self._closed.set()

    def check_stops(self, in_flight: int) -> bool:
        """Say, once each, which operators stopped for the run and what follows; whether
        evaluations may still start (``False`` only after a setup error stopped the last one).

        Raises:
            EngineError: every operator stopped, one for a setup error, and nothing runs.
        """
        stops = {name: why for name, op in self.operators.items() if (why := stopped(op)) is not None}
        alone = len(stops) == len(self.operators)
        fatal = next((name for name, why in stops.items() if why.fatal), None) if alone else None
        for name, why in stops.items():
            if name in self._announced or (fatal is not None and in_flight == 0):
                continue
            self._announced.add(name)
            reason, fix = escape(why.reason), escape(why.fix)
            if not alone:
                self.note(f"{reason}; the run continues with the other operators (to use {name} again: {fix})")
            elif fatal is not None:
                self.note(f"{reason}; {name} is the run's only operator, so the run stops once the "
                          f"{in_flight} running evaluation(s) are recorded")
            else:
                self.note(f"{reason}, and {name} is the run's only operator: no new children; the run ends once "
                          f"the evaluations under way and due are done. To go on: {fix}")
        if fatal is None:
            return True
        if in_flight == 0:
            why = stops[fatal]
            raise EngineError(f"{why.reason}; {fatal} is the run's only operator, so the run stopped. To go on: {why.fix}")
        return False

    def births_over(self) -> bool:
        """Whether every operator stopped for the run (no child can be made any more)."""
        return all(stopped(op) is not None for op in self.operators.values())

    def choose(self, plan: ChildPlan, attempt: int, tries: Counter[str],
               fails: Counter[str] | None = None) -> tuple[MutationOperator, list[GenomeResult]] | None:
        """An operator (by the run's weights) and its parents, or ``None`` when no operator is left.

        An operator that stopped for the run is never drawn, and one with
        ``max_tries_per_child`` (the LLM: each try costs money) is not drawn again for
        this child once it used them. One that failed ``FAILS_PER_CHILD`` times for this
        child (``fails``: it skipped, made an invalid genome or a duplicate) is drawn only
        once every other operator failed as often: an operator the credit weights favour
        cannot use all of a child's tries on a parent it can do nothing with.
        """
        names = [
            n for n in plan.operators
            if tries[n] < getattr(self.operators[n], "max_tries_per_child", math.inf) and stopped(self.operators[n]) is None
        ]
        if not names:
            return None
        names = [n for n in names if fails is None or fails[n] < FAILS_PER_CHILD] or names
        weights = plan.weights or self.config.operators
        operator = self.operators[plan.rng.choices(names, weights=[weights[n] for n in names])[0]]
        if plan.cohort == 0:
            return operator, [plan.pool[0]] * operator.n_parents
        parents = select_parents(
            list(plan.pool), operator.n_parents, plan.rng, self.config.selection, self.config.tournament_size,
            elite_first=(attempt == 0 and plan.index == 0), children=plan.children_of, cap=self.config.children_cap,
            fitness=plan.fitness,
        )
        return operator, parents

    def mutate(self, plan: ChildPlan, first: tuple[MutationOperator, list[GenomeResult]] | None = None) -> Child:
        """Apply operators to parents of ``plan`` until the child is new; safe to run in a thread.

        Raises:
            NoChildError: no new child after ``config.mutation_attempts`` tries, or once
                every operator used its tries for this child or stopped for the run.
        """
        reasons: list[str] = []
        tries: Counter[str] = Counter()
        fails: Counter[str] = Counter()
        for attempt in range(self.config.mutation_attempts):
            choice = first if attempt == 0 and first is not None else self.choose(plan, attempt, tries, fails)
            if choice is None:
                break
            operator, parents = choice
            tries[operator.name] += 1
            outcome = self._attempt(operator, parents, plan)
            if isinstance(outcome, Child):
                return outcome
            fails[operator.name] += 1
            reasons.append(f"{operator.name}: {outcome}")
        final = all(stopped(self.operators[n]) is not None for n in plan.operators)
        if final:
            reasons.append("every operator stopped for this run")
        elif len(reasons) < self.config.mutation_attempts:
            reasons.append("every operator used its tries for this child")
        raise NoChildError(
            f"no new child after {sum(tries.values())} attempts; last reasons: " + "; ".join(reasons[-3:]), reasons, final
        )

    def _attempt(self, operator: MutationOperator, parents: list[GenomeResult], plan: ChildPlan) -> Child | str:
        """One try of ``operator`` on ``parents``: the new child, or why it failed. A slow
        operator's failure (an LLM call that cost time and money) is said in one line."""
        code_parents = [Parent(p.genome_id, plan.sources[p.genome_id], p.val_bpb) for p in parents]
        result = operator.propose(code_parents, plan.rng, plan.context)
        if result.status is not Status.OK:
            reason = str(result.reason)
            # all slow: _say_retry says it; an operator that stopped for the run: check_stops says why
            if result.status is Status.FAIL and is_slow(operator) and self.fast and stopped(operator) is None:
                self.note(f"{operator.name} made no child for generation {plan.cohort}, child {plan.index + 1}: "
                          f"{escape(_short(reason))}")
            return reason
        try:
            genome_files.validate(result.code)
        except genome_files.InvalidGenomeError as exc:
            return str(exc)
        if genome_files.normalized_sha256(result.code) in plan.seen:
            return f"duplicate of an evaluated genome ({result.description})"
        return Child(result.code, operator.name, result.description, tuple(dict.fromkeys(p.genome_id for p in parents)))

    def patient(self, plan: ChildPlan, first: tuple[MutationOperator, list[GenomeResult]] | None = None) -> Child:
        """:meth:`mutate` until it makes a child, for a run whose operators are all slow:
        after a failed round it says so in one line and waits (exponential backoff with
        jitter, ``retry_wait_s``) before the next. Safe to run in a thread.

        Raises:
            NoChildError: every operator of the plan stopped for the run (``final``).
        """
        picks = [first]

        def once() -> Child:
            pick, picks[0] = picks[0], None
            return self.mutate(plan, pick)

        low_s, high_s = self.retry_wait_s
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda exc: isinstance(exc, NoChildError) and not exc.final),
            wait=tenacity.wait_exponential_jitter(multiplier=low_s, max=high_s, jitter=low_s),
            sleep=self._sleep,
            before_sleep=partial(self._say_retry, plan),
            reraise=True,
        )
        return retrying(once)

    def _sleep(self, seconds: float) -> None:
        if self._closed.wait(seconds):
            raise _Closed("the scheduler closed")

    def _say_retry(self, plan: ChildPlan, retry_state: tenacity.RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        reasons = [r for r in getattr(exc, "reasons", []) if not r.startswith("every operator")] or ["no child"]
        self.note(
            f"no child yet for generation {plan.cohort}, child {plan.index + 1} ({escape(_short(reasons[-1]))}); "
            f"trying again in {retry_state.upcoming_sleep:.1f} s (try {retry_state.attempt_number + 1})"
        )
