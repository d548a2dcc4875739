"""Uniform crossover of two parents' hyperparameter blocks.

Each constant the parents share (same name in both ALL_CAPS blocks) is taken from either
parent with probability 1/2 (uniform crossover, Syswerda 1989); the rest of the code is
the first parent's. The child has both parents as lineage edges.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from evo.operators.base import Context, OperatorResult, Parent
from evo.operators.cst_tools import format_value, read_constants, set_constants


class UniformCrossover:
    """Mix the shared constants of two parents, 50/50 per constant."""

    name = "crossover"
    n_parents = 2

    def propose(self, parents: Sequence[Parent], rng: random.Random, context: Context) -> OperatorResult:
        first, second = parents
        if first.genome_id == second.genome_id:
            return OperatorResult.skip("crossover needs two different parents")
        try:
            a, b = read_constants(first.code), read_constants(second.code)
        except Exception as exc:  # noqa: BLE001
            return OperatorResult.fail(f"cannot read the hyperparameters: {exc}")
        differing = [n for n in a if n in b and a[n].value != b[n].value and not (a[n].fixed or b[n].fixed)]
        if not differing:
            return OperatorResult.skip("the parents share no constant with different values")
        # A child that takes all or none of the differing constants is a copy of a parent;
        # redraw (a single differing constant can only make such a copy: the engine rejects it).
        taken = differing
        for _ in range(10):
            taken = [n for n in differing if rng.random() < 0.5]
            if 0 < len(taken) < len(differing):
                break
        if not taken:
            taken = differing[:1]
        changes = {n: b[n].value for n in taken}
        parts = ", ".join(f"{n} {format_value(b[n].value)}" for n in sorted(taken, key=lambda n: a[n].line))
        description = f"crossover {first.genome_id} x {second.genome_id}: from {second.genome_id} {parts}"
        return OperatorResult.ok(set_constants(first.code, changes), description)
