"""The in-memory run state keeps its indexes equal to what a scan of the whole run gives.

The scheduler asks :class:`RunState` (unfinished genomes, survivors, the declared best,
the latest COMPLETE genomes) at every step instead of scanning every genome; these tests
drive random runs (births, evaluations started, finished, interrupted, replicates) and
compare each answer with the plain scan over ``results()`` after every change.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from evo.noise import noise_sigma
from evo.racing import judge
from evo.records import EvalState, EvaluationRecord, GenomeRecord
from evo.results import genome_results
from evo.selection import survivors
from evo.state import RunState, SourceCache

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def genome(seq: int) -> GenomeRecord:
    operator = "seed" if seq == 0 else "hyperparam"
    return GenomeRecord("r", f"g{seq:04d}", 0, operator, "", f"sha{seq}", f"norm{seq}", T0 + timedelta(seconds=seq))


def evaluation(eval_id: int, genome_id: str, state: EvalState, val_bpb: float | None) -> EvaluationRecord:
    return EvaluationRecord(
        eval_id, "r", genome_id, 1, state, T0, None if state is EvalState.RUNNING else T0, 42, "cpu", "log",
        metrics={"val_bpb": val_bpb} if state is EvalState.COMPLETE else {},
    )


def check(state: RunState, k: float, best_replicates: int, mu: int) -> None:
    results = state.results()
    sigma = noise_sigma(results)
    assert state.sigma() == sigma
    expected = judge(results, sigma, best_replicates)
    got = state.verdict(best_replicates)
    assert got.best == expected.best and got.probability == expected.probability
    assert (state.incumbent(best_replicates) and state.incumbent(best_replicates).genome_id) == expected.best
    assert state.replicates == sum(max(r.counted - 1, 0) for r in results)
    for born_before in (None, len(results) // 2):
        pool = [r for r in results[:born_before] if r.is_complete]
        want = sorted(pool, key=lambda r: (expected.beliefs[r.genome_id].mean, state.birth_index(r.genome_id)))[:mu]
        assert [r.genome_id for r in state.believed(mu, best_replicates, born_before)] == [r.genome_id for r in want]
    assert [r.genome_id for r in state.unfinished()] == [r.genome_id for r in results if not r.is_finished]
    for born_before in (None, len(results) // 2, len(results)):
        pool = results if born_before is None else results[:born_before]
        assert [r.genome_id for r in state.best(mu, born_before)] == [r.genome_id for r in survivors(pool, mu)]
    complete = [r.genome_id for r in results if r.is_complete]
    assert [r.genome_id for r in state.latest_complete(3)] == complete[-3:]


@pytest.mark.parametrize("seed", range(12))
def test_indexes_match_a_scan_of_the_run_after_every_change(seed):
    rng = random.Random(seed)
    k, best_replicates, mu = 0.0, rng.choice([1, 2, 3]), rng.choice([2, 4])
    state = RunState([], [], SourceCache(lambda sha: sha))
    running: dict[str, int] = {}
    eval_id = 0
    for _ in range(300):
        action = rng.random()
        if action < 0.3 or len(state) == 0:
            state.add_genome(genome(len(state)))
        elif action < 0.6 and len(running) < len(state):
            idle = [r.genome_id for r in state.results() if r.genome_id not in running]
            genome_id = rng.choice(idle)
            eval_id += 1
            running[genome_id] = eval_id
            state.record(evaluation(eval_id, genome_id, EvalState.RUNNING, None))
        elif running:
            genome_id = rng.choice(sorted(running))
            outcome = rng.choices([EvalState.COMPLETE, EvalState.FAIL, EvalState.INTERRUPTED], [6, 1, 1])[0]
            value = round(rng.gauss(1.0, 0.02), 3)  # rounded: ties in val_bpb happen
            state.record(evaluation(running.pop(genome_id), genome_id, outcome, value))
        check(state, k, best_replicates, mu)
    assert any(r.n > 1 for r in state.results()), "the random run should hold replicates"


def test_loaded_state_equals_the_state_built_step_by_step():
    rng = random.Random(7)
    genomes = [genome(i) for i in range(50)]
    evaluations = [
        evaluation(i + 1, g.genome_id, rng.choice([EvalState.COMPLETE, EvalState.FAIL]), rng.gauss(1.0, 0.02))
        for i, g in enumerate(genomes * 2)
    ]
    loaded = RunState(genomes, evaluations, SourceCache(lambda sha: sha))
    scanned = genome_results(genomes, evaluations)
    assert [r.genome_id for r in loaded.best(10)] == [r.genome_id for r in survivors(scanned, 10)]
    expected = judge(scanned, noise_sigma(scanned), 2)
    assert loaded.incumbent(2).genome_id == expected.best
    assert loaded.counted == 100


def test_source_cache_reads_misses_in_one_call_and_keeps_the_latest():
    calls: list[list[str]] = []

    def load_many(shas: list[str]) -> dict[str, str]:
        calls.append(shas)
        return {sha: f"code of {sha}" for sha in shas}

    cache = SourceCache(lambda sha: pytest.fail("misses must be read together"), size=3, load_many=load_many)
    assert cache.get_many(["a", "b", "a"]) == {"a": "code of a", "b": "code of b"}
    assert calls == [["a", "b"]]
    cache.get_many(["b", "c", "d"])  # "a" is the least recently used: dropped
    assert calls[-1] == ["c", "d"]
    cache.get_many(["a"])
    assert calls[-1] == ["a"]
