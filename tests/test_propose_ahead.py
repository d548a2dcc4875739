"""Which children are proposed ahead, in threads: only those of slow operators (the LLM).

A fast operator's child is made when its slot frees, from every result recorded by then;
made ahead at the start of its cohort, the optuna operator's model missed the cohort's
latest results (on two landscape families that cost 0.004-0.015 of true fitness at 64
evaluations, benchmarks/search_sim.py).
"""

from __future__ import annotations

from datetime import datetime

from conftest import FAKE_GENOME

from evo.config import RunConfig
from evo.genome import normalized_sha256, source_sha256
from evo.operators import REGISTRY, OperatorResult
from evo.operators.cst_tools import set_constants
from evo.records import EvalState, EvaluationRecord, GenomeRecord
from evo.scheduler import Birth, Scheduler
from evo.state import RunState, SourceCache

T0 = datetime(2026, 1, 1)


class SlowOperator:
    """A stand-in for the LLM: slow (a limit of tries per child), records the births it made."""

    name = "slow"
    n_parents = 1
    max_tries_per_child = 2

    def __init__(self):
        self.calls = 0

    def propose(self, parents, rng, context):
        self.calls += 1
        return OperatorResult.ok(set_constants(parents[0].code, {"UNUSED": 1000 + self.calls}), f"UNUSED {self.calls}")


class Watched:
    """A fast operator that notes how many genomes the context it was called with held,
    against how many the run had at that moment."""

    def __init__(self, inner, born: list[int]):
        self.inner, self.name, self.n_parents = inner, inner.name, inner.n_parents
        self.born, self.seen = born, []

    def propose(self, parents, rng, context):
        self.seen.append((len(context.results), self.born[0]))
        return self.inner.propose(parents, rng, context)


def _run(operators: dict[str, float], births: int) -> tuple[Scheduler, list[int], dict[str, str]]:
    """Drive a scheduler through ``births`` births, recording a reading after each; returns the
    scheduler, the number of proposals pending after each decision, and the children's operators."""
    config = RunConfig(run="r", profile="smoke", population=8, seed=3, fitness="reported", noise_replicates=1,
                       best_replicates=1, proposal_workers=4, operators=operators)
    born = [0]
    ops = {n: (SlowOperator() if n == "slow" else Watched(REGISTRY[n](config), born)) for n in operators}
    sources: dict[str, str] = {}
    state = RunState([], [], SourceCache(sources.__getitem__))
    scheduler = Scheduler(config, ops, "smoke", 1.0, lambda: "", FAKE_GENOME, "seed.py")
    pending, made_by = [], {}
    try:
        eval_id = 0
        while len(state) < births:
            job = scheduler.next(state, 0)
            pending.append(len(scheduler.proposals))
            if job is None:
                scheduler.proposals.wait_any(5.0)
                continue
            assert isinstance(job, Birth)
            child = job.child
            sha = source_sha256(child.code)
            sources[sha] = child.code
            genome = GenomeRecord("r", f"g{len(state):04d}", child.generation, child.operator, child.description, sha,
                                  normalized_sha256(child.code), T0, child.parents)
            state.add_genome(genome, child.code)
            made_by[genome.genome_id] = child.operator
            born[0] = len(state)
            eval_id += 1
            state.record(EvaluationRecord(eval_id, "r", genome.genome_id, 1, EvalState.COMPLETE, T0, T0, 42, "cpu", "",
                                          metrics={"val_bpb": 1.0 + 0.001 * eval_id}))
    finally:
        scheduler.close()
    return scheduler, pending, made_by


def test_a_run_of_fast_operators_proposes_nothing_ahead():
    scheduler, pending, made_by = _run({"hyperparam": 0.5, "optuna": 0.5}, births=20)
    assert len(made_by) == 20 and set(made_by.values()) - {"seed"} <= {"hyperparam", "optuna"}
    assert max(pending) == 0
    for name in ("hyperparam", "optuna"):  # every child was made when its birth came, from every reading so far
        seen = scheduler.operators[name].seen
        assert seen and all(held == born for held, born in seen), seen


def test_only_the_slow_operators_children_are_proposed_ahead():
    scheduler, pending, made_by = _run({"slow": 0.5, "hyperparam": 0.5}, births=24)
    children = [op for op in made_by.values() if op != "seed"]
    assert len(children) == 23 and {"slow", "hyperparam"} <= set(children)  # both keep their share of births
    assert max(pending) >= 1  # the slow operator's children were proposed ahead
    assert scheduler.operators["slow"].calls == children.count("slow")  # each slow child proposed once
    seen = scheduler.operators["hyperparam"].seen  # the fast children were made when their birth came
    assert seen and all(held == born for held, born in seen), seen
