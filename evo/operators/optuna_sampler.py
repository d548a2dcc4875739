"""Hyperparameter proposals from an optuna sampler that has seen the whole run.

The search space is derived from the parent's ALL_CAPS block: positive floats get a
log-scale range around their value, ints an integer range (powers of two move on their
exponent), ratios stay in [0, 1], betas in (0, 1), strings and booleans are categorical.
Every genome of the operators' context (the run's best and latest COMPLETE genomes) with
the same constant names becomes a finished trial, its posterior mean the objective
(:mod:`evo.posterior`; its mean val_bpb without a noise floor, or with
``OBJECTIVE = "mean"``), and so does every recent failed genome, with the worst value that
completed (a failure imputed as the worst outcome, so the model learns where the cliffs
are). The study is rebuilt from the archive on every proposal, so a resumed run keeps its
knowledge. The sampler then asks for one new point.

Samplers: Gaussian-process Bayesian optimization (Snoek et al. 2012, "Practical Bayesian
Optimization of Machine Learning Algorithms"; optuna's GPSampler, a Matern-5/2 GP with a
noise term and log expected improvement) over every searchable constant, by default: on
the synthetic landscapes of ``benchmarks/search_suite.py`` it finds far better constants
per evaluation than TPE. As options: TPE (Bergstra et al. 2011, "Algorithms for
Hyper-Parameter Optimization"; optuna's TPESampler) over every constant, and CMA-ES
(Hansen 2016, "The CMA Evolution Strategy: A Tutorial"; optuna's CmaEsSampler) over a few
constants at a time.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from evo.config import FROZEN_CONSTANTS, STRING_CHOICES
from evo.credit import weighted_order
from evo.operators.base import Context, OperatorResult, Parent
from evo.operators.cst_tools import Constant, describe_change, read_constants, set_constants
from evo.operators.hyperparam import POWER_OF_TWO_MIN, _is_fraction_name, _is_power_of_two

RANGE_FACTOR = 4.0  # a float or int may move to [value / 4, value * 4]
SAMPLERS = ("gp", "tpe", "cmaes")
SUBSPACE_SIZE = 3  # constants one TPE or CMA-ES proposal searches; the others keep the parent's values
FULL_SPACE = ("gp", "tpe")  # samplers that search every constant at once
TRUST_FACTOR = 2.0  # the GP searches the parent's value / 2 to x 2 (a trust region, as TuRBO, Eriksson et al. 2019)
GP_STARTUP = 8  # genomes the GP sampler needs before it models (random proposals until then)
OBJECTIVE = "posterior"  # a trial's value: its genome's posterior mean ("posterior") or its mean reading ("mean")

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _is_pow2_param(constant: Constant) -> bool:
    v = constant.value
    return isinstance(v, int) and not isinstance(v, bool) and (
        constant.power_of == 2 or (_is_power_of_two(v) and v >= POWER_OF_TWO_MIN)
    )


def search_space(
    constants: Mapping[str, Constant],
    observed: Sequence[Mapping[str, Constant]] = (),
    frozen: frozenset[str] = FROZEN_CONSTANTS,
    factor: float | None = None,
) -> dict[str, BaseDistribution]:
    """Optuna distributions for the genome's mutable constants (not fixed, not ``frozen``).

    Parameter names are the constant names; a power of two is searched on its exponent
    (``NAME:log2``), a tuple element by index (``NAME[0]``). Each range spans the
    parent's value / ``factor`` to x ``factor`` (default ``RANGE_FACTOR``, 4; powers of
    two: that many doublings) and is widened to hold every ``observed`` genome's value,
    so no evaluated genome falls outside the study. Constants with no sensible range
    (zero-valued floats that are not ratios, negative numbers, free strings) are left
    out and keep the parent's value.

    Returns:
        param name -> distribution.
    """
    factor = RANGE_FACTOR if factor is None else factor

    def seen(name: str) -> list:
        return [o[name].value for o in observed if name in o and type(o[name].value) is type(constants[name].value)]

    space: dict[str, BaseDistribution] = {}
    for name, c in constants.items():
        if name in frozen or c.fixed:
            continue
        v = c.value
        if isinstance(v, bool):
            space[name] = CategoricalDistribution((False, True))
        elif _is_pow2_param(c):
            exps = [round(math.log2(x)) for x in seen(name) if x > 0 and _is_power_of_two(x)]
            e, span = round(math.log2(v)), max(1, round(math.log2(factor)))
            space[f"{name}:log2"] = IntDistribution(max(0, min([e - span, *exps])), max([e + span, *exps]))
        elif isinstance(v, int) and v > 0:
            xs = [x for x in seen(name) if x > 0]
            low = min([max(1, math.floor(v / factor)), *xs])
            space[name] = IntDistribution(low, max([v + 2, math.ceil(v * factor), *xs]), log=True)
        elif isinstance(v, float) and name.endswith(("_RATIO", "_FRAC")) and 0.0 <= v <= 1.0:
            space[name] = FloatDistribution(0.0, 1.0)
        elif isinstance(v, float) and _is_fraction_name(name) and 0.0 < v < 1.0:
            space[name] = _fraction_distribution(v, [x for x in seen(name) if 0.0 < x < 1.0], factor)
        elif isinstance(v, float) and v > 0 and math.isfinite(v):
            xs = [x for x in seen(name) if x > 0 and math.isfinite(x)]
            space[name] = FloatDistribution(min([v / factor, *xs]), max([v * factor, *xs]), log=True)
        elif isinstance(v, str) and name in STRING_CHOICES:
            space[name] = CategoricalDistribution(tuple(dict.fromkeys((v, *STRING_CHOICES[name]))))
        elif isinstance(v, tuple):
            for i, x in enumerate(v):
                if isinstance(x, float) and 0.0 < x < 1.0:
                    xs = [t[i] for t in seen(name) if len(t) > i and isinstance(t[i], float) and 0.0 < t[i] < 1.0]
                    space[f"{name}[{i}]"] = _fraction_distribution(x, xs, factor)
    return space


def _fraction_distribution(x: float, observed: Sequence[float], factor: float) -> FloatDistribution:
    """A coefficient in (0, 1) such as a beta: 1 - x may shrink or grow by ``factor``."""
    lo, hi = 1.0 - (1.0 - x) * factor, 1.0 - (1.0 - x) / factor
    return FloatDistribution(min([max(0.0, lo), *observed]), max([min(0.9999, hi), *observed]))


def to_params(constants: Mapping[str, Constant], space: Mapping[str, BaseDistribution]) -> dict[str, Any] | None:
    """A genome's constants as a point of ``space``, or ``None`` if it lies outside."""
    params: dict[str, Any] = {}
    for param, dist in space.items():
        name, _, rest = param.partition(":")
        index = None
        if "[" in name:
            name, idx = name[:-1].split("[")
            index = int(idx)
        if name not in constants:
            return None
        value = constants[name].value
        if index is not None:
            if not isinstance(value, tuple) or index >= len(value):
                return None
            value = value[index]
        if rest == "log2":
            if not (isinstance(value, int) and _is_power_of_two(value)):
                return None
            value = round(math.log2(value))
        if isinstance(dist, CategoricalDistribution):
            if value not in dist.choices:
                return None
        elif not (dist.low <= value <= dist.high) or (isinstance(dist, IntDistribution) and not isinstance(value, int)):
            return None
        params[param] = value
    return params


def from_params(constants: Mapping[str, Constant], params: Mapping[str, Any]) -> dict[str, Any]:
    """Constant values (name -> value) for a point, rounded as a human would write them."""
    values: dict[str, Any] = {}
    for param, x in params.items():
        name, _, rest = param.partition(":")
        if "[" in name:
            name, idx = name[:-1].split("[")
            base = list(values.get(name, constants[name].value))
            base[int(idx)] = round(float(x), 4)
            values[name] = tuple(base)
        elif rest == "log2":
            values[name] = 2 ** int(x)
        elif isinstance(x, float):
            values[name] = float(f"{x:.3g}")
        else:
            values[name] = x
    return values


def build_study(space: Mapping[str, BaseDistribution], history: Sequence[tuple[str, float]], sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """An in-memory study holding one COMPLETE trial per genome of ``history`` inside ``space``.

    Genomes whose values fall outside ``space`` (or that libcst cannot read) are left out.
    """
    study = optuna.create_study(direction="minimize", sampler=sampler)
    for code, val_bpb in history:
        constants = cached_constants(code)
        if constants is None:
            continue
        params = to_params(constants, space)
        if params is None:
            continue
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dict(space), value=val_bpb))
    return study


class OptunaProposal:
    """Ask an optuna sampler, fed with every evaluated genome sharing the parent's constants.

    The GP and TPE samplers search every constant at once; CMA-ES proposals search
    ``subspace_size`` constants drawn by the weights of :func:`evo.credit.constant_weights`
    (a random subspace, as in coordinate-wise search, biased toward the constants whose
    edits paid off); the study's trials cover those constants' values in
    every genome of the history.

    Args:
        sampler: ``gp`` (default), ``tpe`` or ``cmaes``.
        subspace_size: constants searched per proposal (default: all for ``gp`` and ``tpe``,
            3 for ``cmaes``).
        trust_factor: search only the parent's value / f to x f, leaving history outside
            out of the study (default: ``TRUST_FACTOR`` for ``gp``, none otherwise).
    """

    name = "optuna"
    n_parents = 1

    def __init__(self, sampler: str = "gp", subspace_size: int | None = None, trust_factor: float | None = None) -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        self.sampler_name = sampler
        self.trust_factor = trust_factor if trust_factor is not None else (TRUST_FACTOR if sampler == "gp" else None)
        # the GP models every constant at once; TPE and CMA-ES search a few at a time
        self.subspace_size = subspace_size if subspace_size is not None else (None if sampler in FULL_SPACE else SUBSPACE_SIZE)

    def _sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        if self.sampler_name == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=GP_STARTUP)
        if self.sampler_name == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, multivariate=True)

    def propose(self, parents: Sequence[Parent], rng: random.Random, context: Context) -> OperatorResult:
        (parent,) = parents
        try:
            constants = _cached_constants(parent.code)
        except Exception as exc:  # noqa: BLE001
            return OperatorResult.fail(f"cannot read the hyperparameters: {exc}")
        if not search_space(constants):
            return OperatorResult.skip("the genome has no hyperparameter optuna can search")
        names = set(constants)
        # posterior means where known (less noise for the model), else mean readings
        history = (context.believed if OBJECTIVE == "posterior" else ()) or context.complete
        shared = [(code, bpb, c) for code, bpb in history if (c := cached_constants(code)) and set(c) == names]
        if shared:  # a failed genome is a trial as bad as the worst that completed (imputation of failures)
            worst = max(bpb for _, bpb, _ in shared)
            shared += [(code, worst, c) for code in context.failed if (c := cached_constants(code)) and set(c) == names]
        if self.trust_factor is None:
            space = search_space(constants, [c for _, _, c in shared])
        else:  # a trust region around the parent: history outside it is left out of the study
            space = search_space(constants, (), factor=self.trust_factor)
        # CMA-ES searches a random subspace of a few constants, the rest held at the parent's
        # values: with the handful of trials a run has, it is close to random search over the
        # whole block. The GP (in its trust region) and TPE model every constant.
        names_in_space = sorted({p.partition(":")[0].split("[")[0] for p in space})
        if self.subspace_size is None:
            chosen = set(names_in_space)
        elif context.constant_weights:
            chosen = set(weighted_order(names_in_space, context.constant_weights, rng)[: self.subspace_size])
        else:
            chosen = set(rng.sample(names_in_space, min(self.subspace_size, len(names_in_space))))
        space = {p: d for p, d in space.items() if p.partition(":")[0].split("[")[0] in chosen}
        study = build_study(space, [(code, bpb) for code, bpb, _ in shared], self._sampler(rng.randrange(2**31)))
        trial = study.ask(dict(space))
        values = from_params(constants, trial.params)
        changes = {n: v for n, v in values.items() if v != constants[n].value}
        if not changes:
            return OperatorResult.skip("the sampler proposed the parent's own values")
        ordered = sorted(changes, key=lambda n: constants[n].line)
        trials = len(study.trials) - 1
        description = ", ".join(describe_change(n, constants[n].value, changes[n]) for n in ordered)
        return OperatorResult.ok(set_constants(parent.code, changes), f"{description} (optuna {self.sampler_name}, {trials} trials)")


@functools.lru_cache(maxsize=4096)
def _cached_constants(code: str) -> Mapping[str, Constant]:
    """``read_constants(code)``, parsed once per source (a libcst parse of the seed costs
    ~0.2 s; every proposal reads the whole history). Read-only: shared between callers."""
    return MappingProxyType(read_constants(code))


def cached_constants(code: str) -> Mapping[str, Constant] | None:
    """The constants of ``code`` (parsed once per source, shared, read-only), ``None`` when
    libcst cannot read it."""
    try:
        return _cached_constants(code)
    except Exception:  # noqa: BLE001 -- a genome libcst cannot read is not a trial
        return None
