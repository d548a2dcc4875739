"""Parent selection and survivors for a (mu + lambda) evolution strategy.

Survivors (mu + lambda, Schwefel 1981; Beyer & Schwefel 2002, "Evolution strategies — a
comprehensive introduction"): the ``mu`` best COMPLETE genomes among all parents and
children so far. Parents are drawn from the survivors by tournament selection (Goldberg
& Deb 1991) on val_bpb; the single best survivor is always a parent once per generation
(elitism). Failed genomes are never parents.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from evo.results import GenomeResult, ranked


def survivors(results: Sequence[GenomeResult], mu: int) -> list[GenomeResult]:
    """The ``mu`` best COMPLETE genomes, best first."""
    return [r for r in ranked(results) if r.is_complete][:mu]


def tournament(pool: Sequence[GenomeResult], rng: random.Random, size: int) -> GenomeResult:
    """The best of ``size`` genomes drawn without replacement from ``pool``.

    Raises:
        ValueError: the pool is empty or holds a genome without a val_bpb.
    """
    if not pool:
        raise ValueError("no evaluated genome to select a parent from")
    if any(not r.is_complete for r in pool):
        raise ValueError("only COMPLETE genomes can be parents")
    contestants = rng.sample(list(pool), min(size, len(pool)))
    return min(contestants, key=lambda r: r.val_bpb)


def select_parents(
    pool: Sequence[GenomeResult], n: int, rng: random.Random, tournament_size: int = 3, elite_first: bool = True
) -> list[GenomeResult]:
    """``n`` parents for the next ``n`` children.

    Args:
        pool: the survivors (COMPLETE genomes).
        n: how many parents to draw (with replacement across draws).
        tournament_size: contestants per tournament.
        elite_first: the best genome of ``pool`` is the first parent.

    Raises:
        ValueError: the pool is empty.
    """
    if not pool:
        raise ValueError("no evaluated genome to select a parent from")
    parents: list[GenomeResult] = []
    if elite_first and n > 0:
        parents.append(min(pool, key=lambda r: r.val_bpb))
    while len(parents) < n:
        parents.append(tournament(pool, rng, tournament_size))
    return parents
