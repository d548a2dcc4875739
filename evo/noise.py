"""Noise awareness: the noise floor sigma and the noise-aware incumbent.

autoresearch keeps a change when one noisy number improves; its own logs show kept
"improvements" far below run-to-run noise. evo measures the noise first: the seed genome
is evaluated ``noise_replicates`` times with different ``EVO_SEED``s, and sigma is the
sample standard deviation of those val_bpb values. A challenger displaces the incumbent
(the run's declared best) only when

* it has at least ``best_replicates`` COMPLETE evaluations (it is re-evaluated with new
  seeds before it can be declared best), and
* its mean val_bpb is lower than the incumbent's by more than ``k * sigma``.

This is the racing idea of Maron & Moore (1994), "Hoeffding races", reduced to a fixed
threshold: spend replicates only on genomes that look better than the incumbent.
"""

from __future__ import annotations

from collections.abc import Sequence

from evo.config import RunConfig
from evo.results import GenomeResult


def seed_result(results: Sequence[GenomeResult]) -> GenomeResult | None:
    """The run's seed genome (operator ``seed``), if recorded."""
    return next((r for r in results if r.genome.operator == "seed"), None)


def noise_sigma(results: Sequence[GenomeResult]) -> float | None:
    """Sample std of the seed genome's COMPLETE val_bpb values, ``None`` with fewer than 2."""
    seed = seed_result(results)
    if seed is None or seed.n < 2:
        return None
    return seed.val_bpb_std


def incumbent(results: Sequence[GenomeResult], sigma: float | None, k: float, best_replicates: int) -> GenomeResult | None:
    """The run's declared best genome.

    Walks the genomes in creation order: the first COMPLETE genome (normally the seed)
    is the first incumbent; a later genome with ``n >= best_replicates`` replaces it when
    its mean is lower by more than ``k * sigma`` (``sigma`` ``None`` counts as 0).

    Returns:
        The incumbent, or ``None`` when nothing completed.
    """
    margin = k * (sigma or 0.0)
    current: GenomeResult | None = None
    for r in results:
        if not r.is_complete:
            continue
        if current is None:
            current = r
        elif r.n >= best_replicates and r.val_bpb < current.val_bpb - margin:
            current = r
    return current


def is_improvement(candidate: GenomeResult, current: GenomeResult | None, sigma: float | None, k: float) -> bool:
    """Whether ``candidate``'s mean beats ``current``'s by more than ``k * sigma``."""
    if not candidate.is_complete:
        return False
    if current is None:
        return True
    return candidate.val_bpb < current.val_bpb - k * (sigma or 0.0)


def needs_replicate(
    result: GenomeResult, current: GenomeResult | None, sigma: float | None, k: float, best_replicates: int
) -> bool:
    """Whether a COMPLETE genome must be re-evaluated before it can be declared best.

    True when it has fewer than ``best_replicates`` COMPLETE evaluations and its mean beats
    the incumbent by more than ``k * sigma`` (it would become the best if that held up).
    """
    if not result.is_complete or result.counted >= best_replicates or current is None:
        return False
    if current.genome_id == result.genome_id:
        return False
    return is_improvement(result, current, sigma, k)


def declared_best(results: Sequence[GenomeResult], config: RunConfig) -> GenomeResult | None:
    """The run's best by its own settings (noise_k, best_replicates): :func:`incumbent`."""
    return incumbent(results, noise_sigma(results), config.noise_k, config.best_replicates)
