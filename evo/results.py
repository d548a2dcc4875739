"""Per-genome results derived from the archive's records (never stored twice).

A genome's state is that of its latest evaluation that was not INTERRUPTED (an
interrupted attempt is re-run and never counts), or of the interrupted one if nothing
came after it, or PENDING if it was never started. Its fitness is the mean val_bpb of its
COMPLETE evaluations (lower is better). Held-out evaluations (:mod:`evo.held_out`) take
no part in any of this: they are kept apart, in ``held_out``. So are screens, evaluations
at a fraction of the budget (:mod:`evo.screening`), in ``screens``: a genome with no full
evaluation takes its state from its screens, and a COMPLETE screen makes it ``SCREENED``
(read at the screening fidelity only, waiting for a promotion to the full budget).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from evo.held_out import scores as held_out_scores
from evo.records import EvalState, EvaluationRecord, GenomeRecord

PENDING = "PENDING"
SCREENED = "SCREENED"


@dataclass(frozen=True)
class GenomeResult:
    """A genome with what its evaluations say.

    Attributes:
        genome: the archive record.
        state: an :class:`EvalState` value or ``PENDING``.
        val_bpb: mean val_bpb over COMPLETE evaluations, ``None`` without one.
        val_bpb_std: their sample standard deviation (0.0 for a single one).
        n: the number of COMPLETE evaluations.
        last: the evaluation that gave ``state`` (``None`` when PENDING).
        evaluations: all its evaluations, oldest first (interrupted ones included), except
            the held-out ones.
        held_out: its held-out evaluations, oldest first (:mod:`evo.held_out`).
        screens: its screening evaluations, oldest first (:mod:`evo.screening`).
    """

    genome: GenomeRecord
    state: str
    val_bpb: float | None
    val_bpb_std: float | None
    n: int
    last: EvaluationRecord | None
    evaluations: tuple[EvaluationRecord, ...] = ()
    held_out: tuple[EvaluationRecord, ...] = ()
    screens: tuple[EvaluationRecord, ...] = ()

    @property
    def counted(self) -> int:
        """Evaluations that count: finished, and not INTERRUPTED (held-out ones apart)."""
        return sum(1 for e in self.evaluations if e.state.is_finished and e.state is not EvalState.INTERRUPTED)

    @property
    def held_out_counted(self) -> int:
        """Held-out evaluations that count (finished, not INTERRUPTED)."""
        return sum(1 for e in self.held_out if e.state.is_finished and e.state is not EvalState.INTERRUPTED)

    @property
    def held_out_scores(self) -> list[float]:
        """The val_bpb of its COMPLETE held-out evaluations, oldest first."""
        return held_out_scores(self.held_out)

    @property
    def screens_counted(self) -> int:
        """Screening evaluations that count (finished, not INTERRUPTED)."""
        return sum(1 for e in self.screens if e.state.is_finished and e.state is not EvalState.INTERRUPTED)

    @property
    def screen_bpb(self) -> float | None:
        """Mean val_bpb of its COMPLETE screens (at the screening fidelity), ``None`` without one."""
        scores = held_out_scores(self.screens)
        return statistics.fmean(scores) if scores else None

    @property
    def genome_id(self) -> str:
        return self.genome.genome_id

    @property
    def is_complete(self) -> bool:
        return self.val_bpb is not None

    @property
    def ignores_seed(self) -> bool:
        """Whether COMPLETE evaluations with different ``EVO_SEED`` gave one identical
        val_bpb: the genome fixes its own random seed (``torch.manual_seed(42)``, say), so
        its replicates measure no noise."""
        complete = [e for e in self.evaluations if e.state is EvalState.COMPLETE and e.val_bpb is not None]
        return len({e.seed for e in complete}) >= 2 and len({e.val_bpb for e in complete}) == 1

    @property
    def is_finished(self) -> bool:
        """Evaluated to an end that counts (COMPLETE, FAIL or TIMEOUT), or SCREENED (its
        screen finished; a promotion is a new decision, :mod:`evo.screening`)."""
        return self.state in (EvalState.COMPLETE.value, EvalState.FAIL.value, EvalState.TIMEOUT.value, SCREENED)


def genome_result(genome: GenomeRecord, evaluations: Iterable[EvaluationRecord]) -> GenomeResult:
    """The :class:`GenomeResult` of one genome from its evaluations (any order)."""
    evals = sorted(evaluations, key=lambda e: e.eval_id)
    held_out = tuple(e for e in evals if e.held_out)
    screens = tuple(e for e in evals if e.is_screen and not e.held_out)
    if held_out or screens:
        evals = [e for e in evals if not e.held_out and not e.is_screen]
    counted = [e for e in evals if e.state is not EvalState.INTERRUPTED]
    last = counted[-1] if counted else (evals[-1] if evals else None)
    scores = [e.val_bpb for e in evals if e.state is EvalState.COMPLETE and e.val_bpb is not None]
    mean = statistics.fmean(scores) if scores else None
    std = statistics.stdev(scores) if len(scores) > 1 else (0.0 if scores else None)
    state = last.state.value if last is not None else PENDING
    if screens and last is None:  # never promoted: its screens say where it stands
        last = ([e for e in screens if e.state is not EvalState.INTERRUPTED] or [screens[-1]])[-1]
        state = SCREENED if last.state is EvalState.COMPLETE else last.state.value
    return GenomeResult(genome, state, mean, std, len(scores), last, tuple(evals), held_out, screens)


def genome_results(genomes: Iterable[GenomeRecord], evaluations: Iterable[EvaluationRecord]) -> list[GenomeResult]:
    """One :class:`GenomeResult` per genome, in the genomes' order."""
    by_genome: dict[str, list[EvaluationRecord]] = {}
    for evaluation in evaluations:
        by_genome.setdefault(evaluation.genome_id, []).append(evaluation)
    return [genome_result(genome, by_genome.get(genome.genome_id, ())) for genome in genomes]


def ranked(results: Sequence[GenomeResult]) -> list[GenomeResult]:
    """COMPLETE genomes by val_bpb (best first, ties by age), then the rest by id."""
    complete = sorted((r for r in results if r.is_complete), key=lambda r: (r.val_bpb, r.genome.created_at))
    others = [r for r in results if not r.is_complete]
    return complete + others


def best(results: Sequence[GenomeResult]) -> GenomeResult | None:
    """The genome with the lowest val_bpb, or ``None`` when none completed."""
    complete = [r for r in results if r.is_complete]
    return min(complete, key=lambda r: (r.val_bpb, r.genome.created_at)) if complete else None
