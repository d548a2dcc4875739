"""Noise awareness: the noise floor sigma, pooled over every replicate of the run.

autoresearch keeps a change when one noisy number improves; its own logs show kept
"improvements" far below run-to-run noise. evo measures the noise first: the seed genome
is evaluated ``noise_replicates`` times with different ``EVO_SEED``s. sigma is then the
*pooled* standard deviation over every genome with repeated COMPLETE evaluations (the
seed's and every replicate spent later), so it keeps learning from each replicate:

    sigma^2 = sum_i (n_i - 1) s_i^2 / sum_i (n_i - 1)

(the pooled variance of a one-way layout, assuming one noise level across genomes; e.g.
Montgomery, "Design and Analysis of Experiments", ch. 3). Its uncertainty is the
chi-square interval on ``sum_i (n_i - 1)`` degrees of freedom. Genomes whose replicates
are identical although their seeds differ fix their own seed and measure no noise: they
are left out. What a genome's readings say about its true fitness, given sigma, is
:mod:`evo.posterior`'s; the declared best and where replicates go, :mod:`evo.racing`'s.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from evo.config import RunConfig
from evo.results import GenomeResult

if TYPE_CHECKING:
    from evo.racing import Verdict


@dataclass(frozen=True)
class NoiseEstimate:
    """The pooled noise floor.

    Attributes:
        sigma: pooled standard deviation of val_bpb between seeds (bits/byte).
        df: its degrees of freedom, ``sum_i (n_i - 1)``.
        genomes: genomes with repeated evaluations that it pools.
        low, high: the 90% chi-square confidence interval of sigma (bits/byte).
    """

    sigma: float
    df: int
    genomes: int
    low: float
    high: float


def pooled_term(result: GenomeResult) -> tuple[float, int] | None:
    """``((n - 1) s^2, n - 1)`` of one genome, or ``None`` when it has no say in the noise
    floor (fewer than 2 COMPLETE evaluations, or replicates that ignore ``EVO_SEED``)."""
    if result.n < 2 or result.val_bpb_std is None or result.ignores_seed:
        return None
    return (result.n - 1) * result.val_bpb_std**2, result.n - 1


def pooled_estimate(terms: Iterable[tuple[float, int]]) -> NoiseEstimate | None:
    """The :class:`NoiseEstimate` of some :func:`pooled_term` values (``None`` for none).

    The chi-square quantiles are exact for 1 and 2 degrees of freedom and use the
    Wilson-Hilferty approximation (Wilson & Hilferty 1931) from 3 on:
    ``chi2_p(k) ~ k (1 - 2/(9k) + z_p sqrt(2/(9k)))^3``.
    """
    terms = list(terms)
    if not terms:
        return None
    df = sum(k for _, k in terms)
    variance = math.fsum(ss for ss, _ in terms) / df
    low = math.sqrt(df * variance / chi2_quantile(0.95, df))
    high = math.sqrt(df * variance / chi2_quantile(0.05, df))
    return NoiseEstimate(math.sqrt(variance), df, len(terms), low, high)


def chi2_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of the chi-square distribution with ``df`` >= 1 degrees of freedom:
    exact for 1 (a squared standard normal) and 2 (an exponential of mean 2), Wilson-Hilferty
    beyond (relative error at the 5% quantile: 7% at 3, 1.5% at 5, 0.2% at 10; less at the 95%)."""
    normal = statistics.NormalDist()
    if df == 1:
        return normal.inv_cdf((1 + p) / 2) ** 2
    if df == 2:
        return -2 * math.log(1 - p)
    z = normal.inv_cdf(p)
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def noise_estimate(results: Sequence[GenomeResult]) -> NoiseEstimate | None:
    """The run's pooled noise floor (module docstring), ``None`` before any replicate."""
    return pooled_estimate(t for r in results if (t := pooled_term(r)) is not None)


def noise_sigma(results: Sequence[GenomeResult]) -> float | None:
    """The pooled sigma of :func:`noise_estimate` (bits/byte), ``None`` before any replicate."""
    estimate = noise_estimate(results)
    return None if estimate is None else estimate.sigma


def declared_verdict(results: Sequence[GenomeResult], config: RunConfig) -> Verdict:
    """The run's verdict by its own settings: :func:`evo.racing.judge` on the pooled sigma
    (``results``: every genome of the run, in birth order)."""
    from evo.racing import judge

    return judge(results, noise_sigma(results), config.best_replicates)


def declared_best(results: Sequence[GenomeResult], config: RunConfig) -> GenomeResult | None:
    """The run's declared best by its own settings (:func:`declared_verdict`)."""
    best = declared_verdict(results, config).best
    return None if best is None else next(r for r in results if r.genome_id == best)
