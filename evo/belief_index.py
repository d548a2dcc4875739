"""Every COMPLETE genome's belief (:mod:`evo.posterior`), kept ranked at a cost per change
that does not grow with the run.

A full pass (every belief, the edit scale) costs O(genomes). It is redone when the noise
floor moved by more than ``FULL_SIGMA_DRIFT`` since the last pass, when the changes since
then reach ``FULL_SHARE`` of the run, and always while the run has at most ``FULL_BELOW``
genomes (a pass then costs a few milliseconds). Between passes a changed genome's belief
is recomputed from its parents' current beliefs with the last pass's edit scale (its
descendants keep theirs until the next pass): an approximation that the next pass
corrects, and whose cost per change is O(log genomes).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from evo.posterior import Belief, EditScale, belief, beliefs, edit_scale, parents_belief, parents_of

FULL_BELOW = 2000  # genomes up to which every change triggers a full pass
FULL_SHARE = 0.02  # changes (as a share of the genomes) that trigger a full pass
FULL_SIGMA_DRIFT = 0.02  # relative change of sigma that triggers a full pass


class BeliefIndex:
    """genome id -> :class:`Belief`, and the ids ranked by (posterior mean, birth)."""

    def __init__(self) -> None:
        self.beliefs: dict[str, Belief] = {}
        self._ranked: list[tuple[float, int, str]] = []
        self._keys: dict[str, tuple[float, int, str]] = {}
        self._dirty: set[str] = set()
        self._scale: EditScale | None = None
        self._sigma: float | None = None
        self._passed = False
        self._since_pass = 0

    def mark(self, genome_id: str) -> None:
        """A genome whose readings (or existence) changed."""
        self._dirty.add(genome_id)

    def refresh(
        self, results: Callable[[], Sequence[Any]], result: Callable[[str], Any], birth: Callable[[str], int],
        sigma: float | None,
    ) -> None:
        """Bring the beliefs up to date (module docstring).

        Args:
            results: every genome of the run in birth order (called only for a full pass).
            result: one genome's result by id.
            birth: a genome's birth index.
            sigma: the pooled noise floor now.
        """
        count = len(self._keys) + len(self._dirty)
        drifted = (sigma is None) != (self._sigma is None) or (
            sigma is not None and self._sigma and abs(sigma - self._sigma) > FULL_SIGMA_DRIFT * self._sigma
        )
        if not self._passed or drifted or count <= FULL_BELOW or self._since_pass + len(self._dirty) >= FULL_SHARE * count:
            if self._dirty or drifted or not self._passed:
                self._full(results(), birth, sigma)
            return
        for genome_id in sorted(self._dirty, key=birth):
            self._update(result(genome_id), birth(genome_id))
        self._since_pass += len(self._dirty)
        self._dirty.clear()

    def _full(self, results: Sequence[Any], birth: Callable[[str], int], sigma: float | None) -> None:
        self._scale = edit_scale(results, sigma) if sigma else None
        self.beliefs = beliefs(results, sigma, self._scale)
        self._keys = {i: (b.mean, birth(i), i) for i, b in self.beliefs.items()}
        self._ranked = sorted(self._keys.values())
        self._sigma, self._passed, self._since_pass = sigma, True, 0
        self._dirty.clear()

    def _update(self, r: Any, birth: int) -> None:
        genome_id = r.genome_id
        old = self._keys.pop(genome_id, None)
        if old is not None:
            del self._ranked[bisect_left(self._ranked, old)]
            del self.beliefs[genome_id]
        if not r.is_complete:
            return
        if self._sigma is None or self._scale is None:
            new = Belief(r.val_bpb, 0.0, r.n)
        else:
            prior = parents_belief(self.beliefs[p] for p in parents_of(r) if p in self.beliefs)
            new = belief(prior, r.val_bpb, r.n, self._sigma, self._scale)
        self.beliefs[genome_id] = new
        key = self._keys[genome_id] = (new.mean, birth, genome_id)
        insort(self._ranked, key)

    def ranked(self) -> Iterator[str]:
        """Genome ids by posterior mean, best first (ties: older first)."""
        return (i for _, _, i in self._ranked)

    def ranked_keys(self) -> list[tuple[float, int, str]]:
        """``(posterior mean, birth, id)``, sorted (a live list: do not modify)."""
        return self._ranked
