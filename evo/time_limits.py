"""The time limits a genome's evaluation is held to, set by the seed genome's readings.

Two limits, both measured by the engine and neither trusting the genome:

* the **scoring limit** (:func:`evo.evaluation.scoring_limit_s`): wall seconds past which
  the whole process is not scored (budget plus the seed's start-up and evaluation time,
  with room to spare);
* the **model-ready limit** (:func:`evo.model_snapshot.ready_limit_s`): the wall second by
  which the engine's copy of the genome's first export must be complete, so that a genome
  cannot spend the start-up allowance on more training.

The seed itself is held to neither: its readings define them.
"""

from __future__ import annotations

from evo.evaluation import scoring_limit_s
from evo.model_snapshot import ready_limit_s
from evo.records import EvalState, GenomeRecord
from evo.results import GenomeResult


def evaluation_limits(
    seed: GenomeResult | None, genome: GenomeRecord, run_budget_s: float, budget_s: float,
) -> tuple[float | None, float | None]:
    """The scoring and model-ready limits of one evaluation of ``genome``, wall seconds.

    Args:
        seed: the run's seed genome with its evaluations (``None`` before it is recorded).
        genome: the genome to evaluate.
        run_budget_s: the run's time budget, seconds.
        budget_s: this evaluation's time budget, seconds (a screen's is shorter).

    Returns:
        ``(scoring_limit_s, ready_limit_s)``; each ``None`` for the seed genome and while
        the seed has no completed evaluation with the reading it needs (the model-ready one
        is missing from archives older than that limit and under ``--fitness reported``).
    """
    if genome.operator == "seed" or seed is None:
        return None, None
    complete = [e for e in seed.evaluations if e.state is EvalState.COMPLETE]  # (screens apart)
    shift_s = budget_s - run_budget_s  # the seed's readings moved to this budget: same seconds past it
    walls = [e.wall_s + shift_s for e in complete if e.wall_s]
    ready = [e.metrics["model_ready_s"] + shift_s for e in complete if e.metrics.get("model_ready_s") is not None]
    return scoring_limit_s(budget_s, walls), ready_limit_s(budget_s, ready)
