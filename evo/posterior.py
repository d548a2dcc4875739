"""Posterior fitness: what each genome's val_bpb probably is, given every reading of the run.

A raw mean is a poor verdict for a genome read once: among many children, the lowest
single readings are mostly luck (the winner's curse), and most edits of a constant
change little. evo treats true fitness as a Gaussian belief, from a hierarchical normal
model fitted by empirical Bayes (Efron & Morris 1975, "Data analysis using Stein's
estimator and its generalizations"; Gelman et al., "Bayesian Data Analysis", ch. 5):

* a reading of genome i is ``y = theta_i + e``, ``e ~ N(0, sigma^2)``, sigma the pooled
  noise floor (:mod:`evo.noise`);
* an edit moves true fitness by a random amount: ``theta_child ~ N(theta_parent + delta,
  tau^2)`` (the mean of a crossover child's parents), ``delta`` the typical effect of an
  edit (usually > 0: most edits hurt) and ``tau`` its spread, both estimated from the
  run's (child, parent) pairs with robust moments (median and MAD of the differences of
  their means, less the noise's share), over the run's latest ``EDIT_WINDOW`` pairs;
* a genome without a COMPLETE parent (the seed) has a flat prior: its belief is its mean.

Beliefs are computed in birth order, a parent's belief being its children's prior (a
forward filter: what children say about a parent is not fed back). A genome's posterior
is the precision-weighted mean of its prior and its readings, so a single lucky reading
of a child is pulled toward its parent, and a genome read n times is pulled less.

The probability that a genome is the best of a set is computed from independent
Gaussian beliefs by one-dimensional quadrature (``P(i best) = integral of
pdf_i(x) * prod_{j != i} (1 - cdf_j(x)) dx``), over the ``PROB_TOP`` genomes of lowest
posterior mean (the rest have no practical chance).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

PROB_TOP = 24  # genomes the probability of being best is computed over
QUADRATURE_POINTS = 400
MIN_TAU_FACTOR = 0.5  # tau >= this * sigma: an edit is never assumed to change nothing
MIN_PAIRS = 3  # (child, parent) pairs before tau and delta are estimated
EDIT_WINDOW = 4096  # the latest (child, parent) pairs tau and delta are estimated from


class Belief(NamedTuple):
    """A genome's posterior fitness: Normal(``mean``, ``sd``^2), bits/byte; ``n`` readings.
    (A named tuple: a run builds one per genome per pass, 100,000 at a time.)"""

    mean: float
    sd: float
    n: int


class EditScale(NamedTuple):
    """How far an edit moves true fitness: ``delta`` (mean shift) and ``tau`` (spread), bits/byte,
    from ``pairs`` (child, parent) pairs."""

    delta: float
    tau: float
    pairs: int


def parents_of(result: Any) -> tuple[str, ...]:
    """Parent ids of a :class:`evo.results.GenomeResult` or an :class:`evo.lineage.Node`."""
    try:
        return result.parents
    except AttributeError:
        return result.genome.parents


def edit_scale(results: Sequence[Any], sigma: float) -> EditScale:
    """The run's :class:`EditScale` from its latest ``EDIT_WINDOW`` COMPLETE children whose
    parents completed (what edits do now: a population near an optimum is hurt by more of
    them than the seed was; and a cost that does not grow with the run).

    ``d = mean(child) - mean(parents)``; ``delta = median(d)``; ``tau^2 = (1.4826 MAD(d))^2``
    less the noise's share ``sigma^2 (1/n_child + 1/n_parent)`` (averaged), floored at
    ``(MIN_TAU_FACTOR sigma)^2``. With fewer than ``MIN_PAIRS`` pairs: ``delta = 0``,
    ``tau = 2 sigma`` (weak shrinkage until the run says more).
    """
    import numpy as np

    done = {r.genome_id: (r.val_bpb, r.n) for r in results if r.val_bpb is not None}
    diffs: list[float] = []
    noise_share: list[float] = []
    for r in reversed(results):
        if len(diffs) >= EDIT_WINDOW:
            break
        mean = r.val_bpb
        if mean is None:
            continue
        parents = [done[p] for p in parents_of(r) if p in done]
        if len(parents) == 1:
            (parent_mean, n), = parents
            diffs.append(mean - parent_mean)
            noise_share.append(1 / r.n + 1 / n)
        elif parents:
            diffs.append(mean - math.fsum(m for m, _ in parents) / len(parents))
            noise_share.append(1 / r.n + math.fsum(1 / n for _, n in parents) / len(parents) ** 2)
    floor = MIN_TAU_FACTOR * sigma
    if len(diffs) < MIN_PAIRS:
        return EditScale(0.0, max(2 * sigma, floor), len(diffs))
    d = np.asarray(diffs)
    delta = float(np.median(d))
    spread = 1.4826 * float(np.median(np.abs(d - delta)))
    tau_sq = spread**2 - sigma**2 * statistics.fmean(noise_share)
    return EditScale(delta, max(math.sqrt(max(tau_sq, 0.0)), floor), len(diffs))


def belief(prior: Belief | None, mean: float, n: int, sigma: float, scale: EditScale) -> Belief:
    """The posterior of a genome with ``n`` readings of mean ``mean`` whose parents' belief
    is ``prior`` (``None``: flat prior)."""
    if prior is None:
        return Belief(mean, sigma / math.sqrt(n), n)
    prior_var = prior.sd**2 + scale.tau**2
    data_var = sigma**2 / n
    var = 1 / (1 / prior_var + 1 / data_var)
    return Belief(var * ((prior.mean + scale.delta) / prior_var + mean / data_var), math.sqrt(var), n)


def parents_belief(parents: Iterable[Belief]) -> Belief | None:
    """The prior centre of a child: its COMPLETE parents' beliefs averaged (``None`` for none)."""
    parents = list(parents)
    if not parents:
        return None
    mean = math.fsum(p.mean for p in parents) / len(parents)
    sd = math.sqrt(math.fsum(p.sd**2 for p in parents)) / len(parents)
    return Belief(mean, sd, 0)


def beliefs(results: Sequence[Any], sigma: float | None, scale: EditScale | None = None) -> dict[str, Belief]:
    """genome id -> :class:`Belief` of every COMPLETE genome (``results`` in birth order).

    Without sigma (no replicate yet, or noise awareness off) a belief is the raw mean with
    sd 0. O(len(results)).
    """
    out: dict[str, Belief] = {}
    if sigma is None or sigma <= 0:
        for r in results:
            if r.is_complete:
                out[r.genome_id] = Belief(r.val_bpb, 0.0, r.n)
        return out
    scale = scale or edit_scale(results, sigma)
    # belief() inlined (the same expressions, so the same floats): 100,000 genomes a pass
    tau_sq, delta, sigma_sq = scale.tau**2, scale.delta, sigma**2
    get = out.get
    for r in results:
        mean = r.val_bpb
        if mean is None:
            continue
        n = r.n
        ids = parents_of(r)
        if len(ids) == 1:
            prior = get(ids[0])
        elif ids:
            prior = parents_belief([b for b in map(get, ids) if b is not None])
        else:
            prior = None
        if prior is None:
            out[r.genome_id] = Belief(mean, sigma / math.sqrt(n), n)
            continue
        prior_var = prior.sd**2 + tau_sq
        data_var = sigma_sq / n
        var = 1 / (1 / prior_var + 1 / data_var)
        out[r.genome_id] = Belief(var * ((prior.mean + delta) / prior_var + mean / data_var), math.sqrt(var), n)
    return out


def top(beliefs_: Mapping[str, Belief], k: int | None = None) -> list[str]:
    """The ``k`` (default ``PROB_TOP``) genome ids of lowest posterior mean, best first."""
    return sorted(beliefs_, key=lambda i: (beliefs_[i].mean, beliefs_[i].sd))[: PROB_TOP if k is None else k]


def prob_best(candidates: Mapping[str, Belief]) -> dict[str, float]:
    """genome id -> probability that its true fitness is the lowest of ``candidates``.

    Quadrature (trapezoid) over ``QUADRATURE_POINTS`` points across each belief's +-6 sd,
    merged, up to the lowest of the beliefs' mean + 6 sd (the minimum lies below it): every
    belief's density is sampled at its own scale, however far apart the beliefs are or
    however different their spreads. Beliefs with sd 0 count as point masses (ties share).
    The probabilities sum to 1 (normalized).
    """
    ids = list(candidates)
    if not ids:
        return {}
    if len(ids) == 1:
        return {ids[0]: 1.0}
    point = [i for i in ids if candidates[i].sd <= 0]
    if point:  # a point mass below every other belief's spread wins outright
        lowest = min(candidates[i].mean for i in point)
        winners = [i for i in point if candidates[i].mean == lowest]
        others = [i for i in ids if candidates[i].sd > 0]
        chance_others = {i: statistics.NormalDist(candidates[i].mean, candidates[i].sd).cdf(lowest) for i in others}
        stay = math.prod(1 - p for p in chance_others.values())
        out = {i: 0.0 for i in ids}
        for w in winners:
            out[w] = stay / len(winners)
        rest = 1 - stay
        if others and rest > 0:
            total = sum(chance_others.values()) or 1.0
            for i in others:
                out[i] = rest * chance_others[i] / total
        return out
    import numpy as np

    means = np.array([candidates[i].mean for i in ids])
    sds = np.array([candidates[i].sd for i in ids])
    high = float((means + 6 * sds).min())  # the minimum of the true values lies below this
    span = np.linspace(-6.0, 6.0, QUADRATURE_POINTS)
    x = np.unique(np.minimum((means[:, None] + sds[:, None] * span[None, :]).ravel(), high))  # (X,), X <= N * points
    z = (x[None, :] - means[:, None]) / sds[:, None]  # (N, X)
    pdf = np.exp(-0.5 * z**2) / (sds[:, None] * math.sqrt(2 * math.pi))
    survive = np.clip(0.5 * _erfc(z / math.sqrt(2)), 1e-300, 1.0)  # P(theta_j > x), (N, X)
    log_all = np.log(survive).sum(axis=0)  # (X,)
    density = pdf * np.exp(log_all[None, :] - np.log(survive))  # pdf_i * prod_{j != i} survive_j
    mass = np.trapezoid(density, x, axis=1)
    total = float(mass.sum()) or 1.0
    return {i: float(m) / total for i, m in zip(ids, mass, strict=True)}


def _erfc(values: Any) -> Any:
    import numpy as np

    return np.vectorize(math.erfc, otypes=[float])(values)
