"""The mutation-operator interface: parents in, one child's source (or a reason) out.

Like LibCST's codemod driver, an operator never raises for "not applicable": it returns
an :class:`OperatorResult` whose status says success, skip (nothing to do for this
parent) or failure (it tried and could not).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from evo.results import GenomeResult


@dataclass(frozen=True)
class Parent:
    """A parent as operators see it.

    Attributes:
        genome_id: its id in the run.
        code: its source.
        val_bpb: its fitness (lower is better); ``None`` if it has none yet.
    """

    genome_id: str
    code: str
    val_bpb: float | None


@dataclass(frozen=True)
class Context:
    """What the run knows so far, for operators that learn from it.

    Attributes:
        complete: ``(source, val_bpb)`` of every COMPLETE genome of the run (mean val_bpb).
        results: every genome of the run with its verdict (ids, descriptions, parents,
            failure kinds and log tails), oldest first.
        profile: the run's harness profile.
        time_budget_s: training seconds per genome.
        program: the project's program.md, the research instructions for the LLM operator
            (read by the engine at every proposal, so edits take effect during a run).
        constant_weights: constant name -> how much its edits have paid off
            (:func:`evo.credit.constant_weights`; empty: draw constants uniformly).
        believed: ``(source, posterior mean)`` of the genomes of ``complete``
            (:mod:`evo.posterior`: less noisy than the means; empty without a noise floor).
        failed: sources of the latest genomes that failed (crashed, diverged, timed out).
    """

    complete: tuple[tuple[str, float], ...] = ()
    results: tuple[GenomeResult, ...] = ()
    profile: str = ""
    time_budget_s: float = 0.0
    program: str = ""
    constant_weights: Mapping[str, float] = field(default_factory=dict)
    believed: tuple[tuple[str, float], ...] = ()
    failed: tuple[str, ...] = ()


class Status(str, enum.Enum):
    OK = "ok"
    SKIP = "skip"
    FAIL = "fail"


@dataclass(frozen=True)
class OperatorResult:
    """What an operator produced.

    Attributes:
        status: OK with ``code`` and ``description``; SKIP or FAIL with ``reason``.
        code: the child's source (OK only).
        description: one human line naming the change, e.g. ``MATRIX_LR 0.04 -> 0.05``.
        reason: why there is no child (SKIP, FAIL).
    """

    status: Status
    code: str = ""
    description: str = ""
    reason: str = ""

    @classmethod
    def ok(cls, code: str, description: str) -> OperatorResult:
        return cls(Status.OK, code=code, description=description)

    @classmethod
    def skip(cls, reason: str) -> OperatorResult:
        return cls(Status.SKIP, reason=reason)

    @classmethod
    def fail(cls, reason: str) -> OperatorResult:
        return cls(Status.FAIL, reason=reason)


class MutationOperator(Protocol):
    """Makes one child from ``n_parents`` parents."""

    name: str
    n_parents: int

    def propose(self, parents: Sequence[Parent], rng: random.Random, context: Context) -> OperatorResult:
        """One child of ``parents`` (exactly ``n_parents`` of them); never raises for 'not applicable'.

        Args:
            parents: the parents, best-first where it matters.
            rng: the engine's random generator (the only source of randomness).
            context: what the run knows (every genome and its verdict).
        """
        ...
