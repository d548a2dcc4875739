"""Credit: which operators and which constants have paid off in this run.

Both are learned from (child, parent) pairs whose fitness is known, so both are derived
from the archive (nothing is stored twice) and a resumed run learns the same.

* **Operators** (adaptive operator selection, e.g. Fialho et al. 2010 "Analyzing
  bandit-based adaptive operator selection mechanisms"; probability matching, Goldberg
  1990), over a sliding window of the latest births: a child *improves* when its
  posterior mean (:mod:`evo.posterior`) is below its best parent's by more than sigma. Each operator's weight is the run's configured weight times its Beta(1 + s,
  1 + f) mean success rate (a child screened out, :mod:`evo.screening`, counts as one that
  did not improve), that rate floored at ``OPERATOR_FLOOR`` of the best operator's
  (an operator that failed early keeps some chance).
* **Constants**: a child's gain over its first parent (``max(0, parent mean - child mean)``,
  bits/byte) is shared among the constants it changed; a constant's weight is its mean
  gain per edit, shrunk toward the mean over all constants with ``PRIOR_EDITS`` pseudo
  edits (never-edited constants get the overall mean: they are tried). The mutation
  operators draw the constants they change with these weights, so edits of constants that
  never mattered become rarer without stopping.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evo.posterior import Belief, parents_of
from evo.results import SCREENED

OPERATOR_WINDOW = 256  # operators earn credit over the latest births (a sliding window, Fialho et al. 2010)
OPERATOR_FLOOR = 0.25  # an operator keeps at least this share of its configured weight
PRIOR_EDITS = 3.0  # pseudo edits of the overall mean gain in each constant's weight
CONSTANT_FLOOR = 0.2  # a constant keeps at least this share of the overall mean weight


@dataclass(frozen=True)
class OperatorCredit:
    """An operator's record in a run: ``children`` with a belief, ``improved`` of them, its ``weight``."""

    children: int
    improved: int
    weight: float


def operator_credit(
    results: Sequence[Any], believed: Mapping[str, Belief], configured: Mapping[str, float], sigma: float | None = None,
) -> dict[str, OperatorCredit]:
    """Operator name -> :class:`OperatorCredit` over the latest ``OPERATOR_WINDOW`` of
    ``results`` (every genome of the run, in birth order: GenomeResults or lineage Nodes),
    for the operators of ``configured`` (name -> configured weight); a child improves when
    its posterior mean is below its best parent's by more than ``sigma`` (an edit that
    changes nothing would otherwise "improve" half the time by noise)."""
    children: Counter[str] = Counter()
    improved: Counter[str] = Counter()
    for r in results[-OPERATOR_WINDOW:]:
        operator = getattr(r, "operator", None) or r.genome.operator
        child = believed.get(r.genome_id)
        parents = [believed[p] for p in parents_of(r) if p in believed]
        if operator in configured and child is None and parents and r.state == SCREENED:
            children[operator] += 1  # screened out (evo.screening): a child that did not improve
            continue
        if operator not in configured or child is None or not parents:
            continue
        children[operator] += 1
        improved[operator] += child.mean < min(p.mean for p in parents) - (sigma or 0.0)
    rates = {name: (1 + improved[name]) / (2 + children[name]) for name in configured}
    top = max(rates.values(), default=0.5)
    return {
        name: OperatorCredit(children[name], improved[name], weight * max(rates[name], OPERATOR_FLOOR * top))
        for name, weight in configured.items()
    }


def operator_weights(credit: Mapping[str, OperatorCredit]) -> dict[str, float]:
    """name -> weight to draw operators by (:func:`operator_credit`'s)."""
    return {name: c.weight for name, c in credit.items()}


def constant_weights(edits: Iterable[tuple[Iterable[str], float]]) -> dict[str, float]:
    """Constant name -> weight, from ``(changed constant names, gain)`` per edit (module docstring).

    Returns an empty dict when no edit is known (operators then draw uniformly).
    """
    totals: dict[str, float] = {}
    counts: Counter[str] = Counter()
    overall: list[float] = []
    for names, gain in edits:
        names = list(names)
        if not names or not math.isfinite(gain):
            continue
        share = max(gain, 0.0) / len(names)
        overall.append(max(gain, 0.0))
        for name in names:
            totals[name] = totals.get(name, 0.0) + share
            counts[name] += 1
    if not overall:
        return {}
    mean = math.fsum(overall) / len(overall)
    if mean <= 0:
        return {}
    weights = {
        name: max((totals[name] + PRIOR_EDITS * mean) / (counts[name] + PRIOR_EDITS), CONSTANT_FLOOR * mean)
        for name in totals
    }
    weights[""] = mean  # the weight of a constant never edited
    return weights


def weighted_order(names: Sequence[str], weights: Mapping[str, float], rng: Any) -> list[str]:
    """``names`` in a random order drawn by weight (without replacement; Efraimidis &
    Spirakis 2006: key ``u ** (1 / w)``); uniform when ``weights`` is empty."""
    if not weights:
        order = list(names)
        rng.shuffle(order)
        return order
    default = weights.get("", 1.0)
    keyed = [(rng.random() ** (1.0 / max(weights.get(n, default), 1e-12)), n) for n in names]
    return [n for _, n in sorted(keyed, reverse=True)]
