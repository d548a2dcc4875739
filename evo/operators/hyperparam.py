"""Perturb one or two hyperparameters of the genome's ALL_CAPS block (libcst).

Numbers move in log space (a multiplicative, log-normal step, as in evolution strategies'
log-normal self-adaptation, Schwefel 1977): ints stay ints, powers of two stay powers of
two (one doubling or halving; see POWER_OF_TWO_MIN), ratios stay within [0, 1], betas move in log(1 - beta).
Strings are chosen among a known list of valid values; booleans flip. Constants of value
zero have no log scale and are left alone.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from evo.config import FROZEN_CONSTANTS, STRING_CHOICES
from evo.credit import weighted_order
from evo.operators.base import Context, OperatorResult, Parent
from evo.operators.cst_tools import Constant, describe_change, free_constants, read_constants, set_constants

LOG_SIGMA = 0.35  # std of the log-space step: about x0.7 to x1.4 for one sigma
TWO_CHANGES_P = 0.25  # chance of changing two constants at once
# Ints written as 2**k, or powers of two from this value up (batch sizes, widths), move by
# one doubling or halving; smaller ints (a depth of 8, say) take log-normal integer steps.
POWER_OF_TWO_MIN = 16


def _is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def _round_sig(value: float, digits: int = 3) -> float:
    if value == 0:
        return 0.0
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def _perturb_float(name: str, value: float, rng: random.Random) -> float | None:
    if value <= 0 or not math.isfinite(value):
        return None
    bounded = name.endswith(("_RATIO", "_FRAC")) and value <= 1.0
    for _ in range(10):
        new = _round_sig(value * math.exp(rng.gauss(0.0, LOG_SIGMA)))
        if bounded:
            new = min(new, 1.0)
        if new != value and new > 0:
            return new
    return None


def _perturb_int(value: int, power_of: int | None, rng: random.Random) -> int | None:
    if value <= 0:
        return None
    if power_of == 2 or (_is_power_of_two(value) and value >= POWER_OF_TWO_MIN):
        return value * 2 if (value == 1 or rng.random() < 0.5) else value // 2
    for _ in range(10):
        new = max(1, round(value * math.exp(rng.gauss(0.0, LOG_SIGMA))))
        if new != value:
            return new
    return value + 1


def _perturb_fraction(value: float, rng: random.Random) -> float | None:
    """A value in (0, 1) such as a beta: step in log(1 - value), stay inside (0, 1)."""
    if not 0.0 < value < 1.0:
        return None
    for _ in range(10):
        new = 1.0 - (1.0 - value) * math.exp(rng.gauss(0.0, LOG_SIGMA))
        new = min(max(_round_sig(new, 4), 1e-4), 0.9999)
        if new != value:
            return new
    return None


def _is_fraction_name(name: str) -> bool:
    """Momentum and beta coefficients live in (0, 1) and move in log(1 - value)."""
    return "MOMENTUM" in name or "BETA" in name


def perturb(constant: Constant, rng: random.Random, choices: Mapping[str, Sequence[str]] = STRING_CHOICES) -> Any:
    """A new value for one constant, or ``None`` when it has no sensible neighbour.

    Returns:
        A value of the same type (int, float, str, bool, tuple) that differs from the old.
    """
    value = constant.value
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return _perturb_int(value, constant.power_of, rng)
    if isinstance(value, float):
        if _is_fraction_name(constant.name) and 0.0 < value < 1.0:
            return _perturb_fraction(value, rng)
        return _perturb_float(constant.name, value, rng)
    if isinstance(value, str):
        options = [c for c in choices.get(constant.name, ()) if c != value]
        return rng.choice(options) if options else None
    if isinstance(value, tuple) and value:
        index = rng.randrange(len(value))
        element = value[index]
        if isinstance(element, float) and 0.0 < element < 1.0:
            new = _perturb_fraction(element, rng)
        elif isinstance(element, float):
            new = _perturb_float(constant.name, element, rng)
        else:
            new = _perturb_int(element, None, rng)
        if new is None:
            return None
        return value[:index] + (new,) + value[index + 1 :]
    return None


def mutable_constants(code: str, frozen: frozenset[str] = FROZEN_CONSTANTS) -> dict[str, Constant]:
    """The hyperparameters an operator may change (all but fixed and ``frozen`` ones)."""
    return free_constants(read_constants(code), frozen)


class HyperparamMutation:
    """Perturb one (sometimes two) hyperparameters of one parent, drawn by the weights of
    :func:`evo.credit.constant_weights` (constants whose edits paid off, more often)."""

    name = "hyperparam"
    n_parents = 1

    def __init__(self, two_changes_p: float | None = None) -> None:
        self.two_changes_p = TWO_CHANGES_P if two_changes_p is None else two_changes_p

    def propose(self, parents: Sequence[Parent], rng: random.Random, context: Context) -> OperatorResult:
        (parent,) = parents
        try:
            constants = mutable_constants(parent.code)
        except Exception as exc:  # a genome libcst cannot parse has nothing to perturb
            return OperatorResult.fail(f"cannot read the hyperparameters: {exc}")
        names = weighted_order(list(constants), context.constant_weights, rng)  # what paid off, more often
        wanted = 2 if rng.random() < self.two_changes_p else 1
        changes: dict[str, Any] = {}
        for name in names:
            new = perturb(constants[name], rng)
            if new is not None:
                changes[name] = new
            if len(changes) == wanted:
                break
        if not changes:
            return OperatorResult.skip("the genome has no hyperparameter with a neighbouring value")
        ordered = sorted(changes, key=lambda n: constants[n].line)
        description = ", ".join(describe_change(n, constants[n].value, changes[n]) for n in ordered)
        return OperatorResult.ok(set_constants(parent.code, changes), description)
