"""Held-out evaluations: an unbiased val_bpb for the declared best.

A search declares best the genome whose readings were lowest, and among many genomes read
with noise the lowest readings are partly luck. So the chosen genome's readings are
optimistic, and so is its posterior mean, only less: this is the winner's curse. In model
selection it is the bias of reporting the validation score of the model chosen on it
(Cawley & Talbot 2010, "On over-fitting in model selection and subsequent selection bias
in performance evaluation", JMLR 11). The standard remedy is a test set: readings taken
after the choice, which play no part in it.

So a run ends its search by evaluating the declared best ``held_out_replicates`` more
times with fresh seeds (``EVO_SEED = HELD_OUT_SEED + i``, which no search reading uses).
These evaluations are recorded as *held out* and kept out of every decision: the genome's
mean val_bpb and its n, the noise floor, the beliefs, racing, selection and the operators'
credit all ignore them (:func:`evo.results.genome_result` puts them apart). Their mean is
therefore an unbiased estimate of the declared best's val_bpb. Its standard error is
``sigma / sqrt(k)``. ``evo status`` shows it beside the search's figures.

When it happens:

* with ``--max-evaluations N``, the last ``k`` evaluations are kept for it
  (:meth:`evo.config.RunConfig.held_out_reserve`; none when ``4 k > N``);
* with ``--generations G`` (and no evaluation limit), it comes after the last cohort and
  every replicate due to it have finished.

The held-out evaluations run one at a time, once nothing else runs, so the declared best
they measure is final. A run with neither limit (it runs until stopped) gets none; a run
stopped by Ctrl-C gets them when ``evo resume`` brings it to its end. If a resumed run
declares another genome best, the new one is evaluated in turn, and the old one's
held-out readings stay apart.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from evo.records import EvalState, EvaluationRecord

HELD_OUT_SEED = 1_000_042  # EVO_SEED of held-out evaluation i is HELD_OUT_SEED + i (search seeds are 42 + r)


@dataclass(frozen=True)
class HeldOut:
    """The held-out figure of one genome.

    Attributes:
        val_bpb: mean of its COMPLETE held-out readings (bits/byte).
        se: its standard error, ``sigma / sqrt(n)`` (``None`` without a noise floor).
        n: COMPLETE held-out readings.
    """

    val_bpb: float
    se: float | None
    n: int


def scores(evaluations: Iterable[EvaluationRecord]) -> list[float]:
    """The val_bpb of the COMPLETE ones among held-out ``evaluations``, in their order."""
    return [e.val_bpb for e in evaluations if e.state is EvalState.COMPLETE and e.val_bpb is not None]


def held_out(scores: Sequence[float], sigma: float | None) -> HeldOut | None:
    """The :class:`HeldOut` figure from held-out val_bpb readings (``None`` for none).

    The standard error uses the run's pooled sigma (:mod:`evo.noise`), which rests on many
    more degrees of freedom than ``k`` readings' own spread.
    """
    if not scores:
        return None
    se = None if sigma is None else sigma / math.sqrt(len(scores))
    return HeldOut(statistics.fmean(scores), se, len(scores))


def describe(figure: HeldOut) -> str:
    """``held-out val_bpb 0.981234 ± 0.001200 (n=2)``."""
    spread = "" if figure.se is None else f" ± {figure.se:.6f}"
    return f"held-out val_bpb {figure.val_bpb:.6f}{spread} (n={figure.n})"
