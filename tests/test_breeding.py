"""Making one child: an operator the weights favour but that can do nothing with the
parents does not use all of the child's tries (evo.breeding.FAILS_PER_CHILD)."""

from __future__ import annotations

import dataclasses
import random
from datetime import datetime

import pytest
from conftest import FAKE_GENOME

from evo.breeding import FAILS_PER_CHILD, Breeder, ChildPlan, NoChildError
from evo.config import RunConfig
from evo.operators import Context, OperatorResult
from evo.operators.cst_tools import set_constants
from evo.records import EvalState, EvaluationRecord, GenomeRecord
from evo.results import GenomeResult


class Stuck:
    """An operator that skips every parent it is given."""

    name, n_parents = "stuck", 1

    def __init__(self):
        self.calls = 0

    def propose(self, parents, rng, context):
        self.calls += 1
        return OperatorResult.skip("nothing to change in this parent")


class Works:
    """An operator that always makes a new child."""

    name, n_parents = "works", 1

    def propose(self, parents, rng, context):
        return OperatorResult.ok(set_constants(parents[0].code, {"UNUSED": 7}), "UNUSED 7")


def _plan(weights: dict[str, float], seed: int) -> ChildPlan:
    genome = GenomeRecord("r", "g0000", 0, "seed", "seed", "s", "n", datetime(2026, 1, 1), ())
    reading = EvaluationRecord(eval_id=1, run="r", genome_id="g0000", attempt=1, state=EvalState.COMPLETE,
                               started_at=datetime(2026, 1, 1), finished_at=datetime(2026, 1, 1), seed=42,
                               device="cpu", log_path="x.log", wall_s=1.0, metrics={"val_bpb": 1.0})
    parent = GenomeResult(genome, "COMPLETE", 1.0, 0.0, 1, reading, (reading,))
    return ChildPlan(cohort=1, index=1, pool=(parent,), children_of={}, seen=frozenset(), sources={"g0000": FAKE_GENOME},
                     context=Context(), rng=random.Random(seed), operators=tuple(weights), weights=weights)


def _breeder(weights: dict[str, float]) -> tuple[Breeder, Stuck]:
    stuck = Stuck()
    config = RunConfig(run="r", profile="smoke", seed=3, fitness="reported", operators=weights)
    return Breeder(config, {"stuck": stuck, "works": Works()}), stuck


@pytest.mark.parametrize("seed", range(5))
def test_a_favoured_operator_that_keeps_failing_yields_the_child_to_the_others(seed):
    weights = {"stuck": 0.999, "works": 0.001}
    breeder, stuck = _breeder(weights)
    child = breeder.mutate(_plan(weights, seed))
    assert child.operator == "works"
    assert stuck.calls == FAILS_PER_CHILD  # drawn by its weight until rationed, then never again for this child


def test_an_operator_left_alone_still_gets_every_try():
    weights = {"stuck": 1.0, "works": 0.0}
    breeder, stuck = _breeder(weights)
    plan = _plan({"stuck": 1.0}, 0)
    with pytest.raises(NoChildError, match="no new child after 20 attempts") as error:
        breeder.mutate(dataclasses.replace(plan, operators=("stuck",)))
    assert stuck.calls == 20 and not error.value.final
