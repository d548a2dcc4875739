"""Screening: multi-fidelity evaluation by asynchronous successive halving (ASHA).

Most children are worse than their parents, and a full evaluation of each one is the
search's whole cost. With screening on (``--screen FRACTION``), a new child is first
trained for ``FRACTION`` of the time budget, as a complete run with its own schedule: the
genome is given ``EVO_TIME_BUDGET = FRACTION x budget`` and its learning-rate schedule
follows that budget, so a screen is not a truncated full run (truncation would favour
settings that decay fast). Only promising children are promoted to a full evaluation.

The rule is ASHA's with two rungs (Li et al. 2020, "A System for Massively Parallel
Hyperparameter Tuning", MLSys; arXiv:1810.05934; successive halving: Jamieson &
Talwalkar 2016, Karnin et al. 2013), over a sliding window. A screened genome's *rung*
is the ``eta x population`` genomes screened last up to and including itself, in birth
order (a failed screen ranks last). Whenever a slot frees and nothing else is due, the
screened genome with the best reading that is among the best ``floor(n / eta)`` of the
``n`` in its rung, and was not promoted before, is promoted; otherwise a new child is
screened. (The run's first ``eta x population`` screened share one rung: the first ones.) Asynchronous: no rung waits to fill. A genome is a candidate while it is among
the latest ``eta x population`` screened; after that it is screened out for good.

Why a window and not ASHA's whole history: an evolutionary search improves as it goes,
and against every child ever screened nearly every new child ranks in the best third
(measured: 35 of 51 children promoted in a 64-evaluation run on the sphere landscape),
so the screen would cost without sorting anything; and a rung that slides on past a
genome would promote it once better ones left, for the same reason. Ranking each child
among its contemporaries is the idea of the median stopping rule too (Golovin et al.
2017, "Google Vizier: A Service for Black-Box Optimization", KDD).

Scores are compared only within one fidelity: a screen's reading decides promotions and
nothing else. The genome's fitness, the noise floor, the beliefs, racing, selection of
parents, the operators' credit and the declared best read full evaluations only
(:func:`evo.results.genome_result` keeps screens apart). A screened genome that was
never promoted is ``SCREENED``: it has no fitness and is no parent. For the operators'
credit a child screened out counts as a child that did not improve.

Cost: a screen counts ``FRACTION`` of an evaluation against ``--max-evaluations`` (which
is thus in full-budget evaluations). The seed genome and its noise replicates are always
full evaluations.

Where it helps: when a short run ranks children roughly as a full run does. On the
landscape suite's fidelity-biased landscapes (``benchmarks/landscapes.py``) the measured
effect is in the README; on real training its value depends on how well short runs
predict full ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from evo.records import EvalState
from evo.results import SCREENED, GenomeResult

DEFAULT_ETA = 3  # ASHA's reduction factor: the best third of the rung is promoted


def rung_key(result: GenomeResult, birth: int) -> tuple[float, int, str] | None:
    """The genome's place in the rung: ``(screen val_bpb, birth, id)``, ``inf`` for a failed
    screen; ``None`` when it has no finished screen (not in the rung)."""
    if not result.screens_counted:
        return None
    score = result.screen_bpb
    return (math.inf if score is None else score, birth, result.genome_id)


def promotion(latest: Sequence[tuple[float, int, str]], window: int, eta: int,
              result_of: Callable[[str], GenomeResult], offset: int = 0) -> GenomeResult | None:
    """The next genome to promote to a full evaluation, or ``None`` (module docstring).

    Args:
        latest: rung keys (:func:`rung_key`) of the latest ``2 x window - 1`` screened
            genomes, in birth order.
        window: the rung's length: a genome is ranked among the ``window`` screened genomes
            ending at itself.
        eta: the reduction factor (>= 2): the best ``floor(n / eta)`` of a rung of ``n``.
        result_of: genome id -> its :class:`GenomeResult`.
        offset: screened genomes before ``latest[0]`` (the first ``window`` of the run share
            one rung: the first ``window`` screened).

    Only the latest ``window`` genomes are candidates; costs ``O(window^2)`` comparisons,
    whatever the run's size.
    """
    chosen: tuple[float, int, str] | None = None
    for i in range(max(0, len(latest) - window), len(latest)):
        key = latest[i]
        if chosen is not None and key >= chosen:
            continue
        end = max(i + 1, min(len(latest), window - offset))  # the run's first genomes: the first window
        rung = latest[max(0, end - window): end]
        if sum(1 for k in rung if k < key) < len(rung) // eta and result_of(key[2]).state == SCREENED:
            chosen = key
    return None if chosen is None else result_of(chosen[2])


def screen_cost(result: GenomeResult) -> float:
    """Full-budget evaluations its screens cost: the sum of their fidelities (those that count)."""
    return sum(e.fidelity for e in result.screens if e.state.is_finished and e.state is not EvalState.INTERRUPTED)
