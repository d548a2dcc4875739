"""Parent selection and survivors for a (mu + lambda) evolution strategy.

Survivors (mu + lambda, Schwefel 1981; Beyer & Schwefel 2002, "Evolution strategies — a
comprehensive introduction"): the ``mu`` best COMPLETE genomes among all parents and
children so far, ranked by posterior mean (:mod:`evo.posterior`: a single lucky reading
does not make a survivor), or by mean val_bpb where no posterior is given. Parents are drawn from the survivors by

* tournament selection (Goldberg & Deb 1991): the best of ``size`` random survivors, or
* linear rank selection (Baker 1985): survivor of rank i (0 = best) is drawn with
  probability proportional to ``mu - i``,

with elitism (the best survivor is the first parent of each generation). Failed genomes
are never parents, and a parent that already has ``cap`` children in the current
generation is not drawn again, so one lucky genome cannot take over the population.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Mapping, Sequence

from evo.config import SELECTIONS
from evo.results import GenomeResult


def survivors(results: Sequence[GenomeResult], mu: int) -> list[GenomeResult]:
    """The ``mu`` COMPLETE genomes of lowest mean val_bpb, best first (ties by age); O(n log mu).
    (The engine ranks its survivors by posterior mean, :meth:`evo.state.RunState.believed`;
    this is the raw-mean ranking that :meth:`evo.state.RunState.best` keeps.)"""
    return heapq.nsmallest(mu, (r for r in results if r.is_complete), key=lambda r: (r.val_bpb, r.genome.created_at))


def _fitness_key(fitness: Mapping[str, float] | None) -> Callable[[GenomeResult], float]:
    if fitness is None:
        return lambda r: r.val_bpb
    return lambda r: fitness.get(r.genome_id, r.val_bpb)


def tournament(
    pool: Sequence[GenomeResult], rng: random.Random, size: int, fitness: Mapping[str, float] | None = None,
) -> GenomeResult:
    """The best of ``size`` genomes drawn without replacement from ``pool`` (by ``fitness``:
    genome id -> posterior mean, else by mean val_bpb).

    Raises:
        ValueError: the pool is empty or holds a genome without a val_bpb.
    """
    _check(pool)
    contestants = rng.sample(list(pool), min(size, len(pool)))
    return min(contestants, key=_fitness_key(fitness))


def rank_select(pool: Sequence[GenomeResult], rng: random.Random, fitness: Mapping[str, float] | None = None) -> GenomeResult:
    """Linear rank selection: weight ``len(pool) - rank`` (best has the largest).

    Raises:
        ValueError: the pool is empty or holds a genome without a val_bpb.
    """
    _check(pool)
    ordered = sorted(pool, key=_fitness_key(fitness))
    weights = [len(ordered) - i for i in range(len(ordered))]
    return rng.choices(ordered, weights=weights)[0]


def _check(pool: Sequence[GenomeResult]) -> None:
    if not pool:
        raise ValueError("no evaluated genome to select a parent from")
    if any(not r.is_complete for r in pool):
        raise ValueError("only COMPLETE genomes can be parents")


def select_parents(
    pool: Sequence[GenomeResult],
    n: int,
    rng: random.Random,
    method: str = "tournament",
    tournament_size: int = 3,
    elite_first: bool = True,
    children: Mapping[str, int] | None = None,
    cap: int | None = None,
    fitness: Mapping[str, float] | None = None,
) -> list[GenomeResult]:
    """``n`` parents for one child (``n`` = the operator's number of parents).

    Args:
        pool: the survivors (COMPLETE genomes).
        n: how many parents to draw; distinct when the pool allows.
        method: ``tournament`` or ``rank``.
        tournament_size: contestants per tournament.
        elite_first: the best genome of ``pool`` is the first parent.
        children: genome id -> children it already has in this generation.
        cap: a genome with ``cap`` children is not drawn (ignored if every genome is capped).
        fitness: genome id -> what selection ranks by (the posterior mean,
            :mod:`evo.posterior`); the mean val_bpb when not given.

    Raises:
        ValueError: the pool is empty, holds a failed genome, or ``method`` is unknown.
    """
    if method not in SELECTIONS:
        raise ValueError(f"unknown selection {method!r}; choose one of {', '.join(SELECTIONS)}")
    _check(pool)
    counts = children or {}
    open_pool = [r for r in pool if cap is None or counts.get(r.genome_id, 0) < cap] or list(pool)
    parents: list[GenomeResult] = []
    if elite_first and n > 0:
        parents.append(min(open_pool, key=_fitness_key(fitness)))
    while len(parents) < n:
        remaining = [r for r in open_pool if r not in parents] or open_pool
        if method == "tournament":
            pick = tournament(remaining, rng, tournament_size, fitness)
        else:
            pick = rank_select(remaining, rng, fitness)
        parents.append(pick)
    return parents
