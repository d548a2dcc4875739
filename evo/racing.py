"""The declared best and where replicates go: racing on posterior beliefs.

From the beliefs of :mod:`evo.posterior`, each COMPLETE genome's probability of being
the best of the run follows (``P(best)``). Then:

* **the declared best** is the genome with at least ``best_replicates`` COMPLETE
  evaluations that is most likely to be the best among such genomes (ties: lower
  posterior mean); before any genome has them, the run's first COMPLETE genome (normally
  the seed). Its stated probability is ``P(best)`` over every COMPLETE genome of the run:
  how sure evo is that nothing evaluated is better.
* **replicates decide the race** (racing, Maron & Moore 1994 "Hoeffding races", with the
  allocation of an optimal-computing-budget rule, Chen et al. 2000 "Simulation budget
  allocation for further enhancing the efficiency of ordinal optimization"): the genome
  most likely to be best is re-evaluated until it has ``best_replicates`` readings; while
  no genome is best with probability ``CONFIDENCE``, the contender (``P(best) >=
  MIN_CHANCE``, fewer than ``MAX_READINGS`` readings) whose reading would move the race
  most (largest ``P(best) * sd``) gets one more, as long as replicates stay under
  ``REPLICATE_SHARE`` of the run's evaluations. Otherwise the slot goes to a new child.

Without a noise floor (no replicate yet, or replicates that ignore ``EVO_SEED``) beliefs
are raw means: the leader is the lowest mean, it is still re-evaluated until it has
``best_replicates`` readings, the declared best is the lowest mean among genomes with
enough evaluations, and no probability is stated.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from evo.posterior import PROB_TOP, Belief, beliefs, prob_best

CONFIDENCE = 0.7  # P(best) of the leader that ends the race
MIN_CHANCE = 0.1  # a genome less likely than this to be best gets no replicate for the race
MAX_READINGS = 3  # readings beyond which a contender's replicates stop
REPLICATE_SHARE = 0.2  # race replicates stay under this share of the run's evaluations


@dataclass(frozen=True)
class Verdict:
    """What the run's readings say.

    Attributes:
        best: the declared best genome's id (``None`` before anything completed).
        probability: its ``P(best)`` over every COMPLETE genome (``None`` without sigma).
        leader: the genome most likely to be best (any number of readings).
        beliefs: genome id -> posterior belief, every COMPLETE genome.
        chances: genome id -> ``P(best)`` for the genomes of lowest posterior mean.
    """

    best: str | None
    probability: float | None
    leader: str | None
    beliefs: Mapping[str, Belief] = field(default_factory=dict)
    chances: Mapping[str, float] = field(default_factory=dict)


def judge(results: Sequence[Any], sigma: float | None, best_replicates: int, known: Mapping[str, Belief] | None = None) -> Verdict:
    """The :class:`Verdict` of ``results`` (every genome, in birth order).

    Args:
        results: :class:`evo.results.GenomeResult` or :class:`evo.lineage.Node` values.
        sigma: the pooled noise floor, ``None`` before any replicate.
        best_replicates: COMPLETE evaluations a genome needs to be declared best.
        known: beliefs already computed for these results (:func:`evo.posterior.beliefs`).
    """
    if known is None:  # beliefs() keeps birth order
        believed = beliefs(results, sigma)
        keys = [(b.mean, i, genome_id) for i, (genome_id, b) in enumerate(believed.items())]
    else:
        believed, get = known, known.get
        keys = [(b.mean, i, r.genome_id) for i, r in enumerate(results) if (b := get(r.genome_id)) is not None]
    first = next((r.genome_id for r in results if r.is_complete), None)
    return judge_ranked(believed, _lowest_first(keys), sigma, best_replicates, first)


def _lowest_first(keys: list[tuple[float, int, str]]) -> Iterator[str]:
    """Genome ids by (posterior mean, birth), popped from a heap: O(n + k log n) for the
    first k (judge_ranked reads only the top of the ranking)."""
    heapq.heapify(keys)
    while keys:
        yield heapq.heappop(keys)[2]


def judge_ranked(
    believed: Mapping[str, Belief], ranked: Iterable[str], sigma: float | None, best_replicates: int,
    first_complete: str | None,
) -> Verdict:
    """:func:`judge` from beliefs already ranked by posterior mean (ties: older first) and
    the run's first COMPLETE genome: costs what the top of the ranking costs."""
    if not believed:
        return Verdict(None, None, None)
    contenders: list[str] = []
    eligible: list[str] = []
    for i in ranked:
        if len(contenders) < PROB_TOP:
            contenders.append(i)
        if believed[i].n >= best_replicates:
            eligible.append(i)
            if len(eligible) >= PROB_TOP:
                break
    if sigma is None or sigma <= 0:
        best = eligible[0] if eligible else first_complete
        return Verdict(best, None, contenders[0], believed, {})
    chances = prob_best({i: believed[i] for i in contenders})
    leader = max(chances, key=lambda i: (chances[i], -believed[i].mean))
    if eligible:
        among = prob_best({i: believed[i] for i in eligible})
        best = max(among, key=lambda i: (among[i], -believed[i].mean))
    else:
        best = first_complete
    return Verdict(best, chances.get(best, 0.0), leader, believed, chances)


def race_replicate(
    verdict: Verdict, best_replicates: int, busy: Collection[str], replicates: int, evaluations: int,
) -> str | None:
    """The genome whose next evaluation decides the race (module docstring), if any.

    Args:
        verdict: the run's :class:`Verdict` (without sigma only the leader is confirmed).
        best_replicates: readings the leader needs.
        busy: genomes being evaluated now (never replicated twice at once).
        replicates: evaluations of the run beyond each genome's first.
        evaluations: the run's evaluations that count.
    """
    if verdict.leader is None:
        return None
    leader = verdict.beliefs[verdict.leader]
    if leader.n < best_replicates and verdict.leader not in busy:
        return verdict.leader
    if verdict.probability is None:
        return None
    if max(verdict.chances.values(), default=0.0) >= CONFIDENCE or replicates >= REPLICATE_SHARE * evaluations:
        return None
    open_ = [
        i for i, p in verdict.chances.items()
        if p >= MIN_CHANCE and verdict.beliefs[i].n < MAX_READINGS and i not in busy
    ]
    if not open_:
        return None
    return max(open_, key=lambda i: (verdict.chances[i] * verdict.beliefs[i].sd, -verdict.beliefs[i].mean))
