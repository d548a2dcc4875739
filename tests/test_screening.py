"""Screening (evo.screening): children are first trained at a fraction of the budget, and only
the best of them by ASHA's rule are promoted to a full evaluation; screen readings decide
promotions and nothing else."""

from __future__ import annotations

import statistics
from datetime import datetime

import pytest
from conftest import add_harness
from test_engine import Recorder

from evo.archive import Archive
from evo.cli_status import header_lines, load_status
from evo.cli_status_json import status_json
from evo.config import Paths, RunConfig
from evo.credit import operator_credit
from evo.engine import Engine
from evo.lineage import load_nodes
from evo.operators.cst_tools import set_constants
from evo.posterior import Belief
from evo.records import EvalState, EvaluationRecord, GenomeRecord
from evo.results import SCREENED, genome_result, genome_results
from evo.run_index import run_state
from evo.scheduler import Due, Scheduler
from evo.state import RunState, SourceCache

T0 = datetime(2026, 1, 1)
SCREEN_OFFSET = 0.2  # what the test genome adds to a screen's reading: mixing one into a fitness shows


def _genome(i: int, operator: str = "hyperparam", parents: tuple[str, ...] = ("g0000",)) -> GenomeRecord:
    return GenomeRecord("r", f"g{i:04d}", 0 if i == 0 else 1, operator, "", f"s{i}", f"n{i}", T0,
                        () if operator == "seed" else parents)


def _eval(eval_id: int, genome: int, value: float | None, fidelity: float = 1.0,
          state: EvalState = EvalState.COMPLETE) -> EvaluationRecord:
    metrics = {} if value is None else {"val_bpb": value}
    return EvaluationRecord(eval_id, "r", f"g{genome:04d}", 1, state, T0, T0, 42, "cpu", "x.log",
                            metrics=metrics, fidelity=fidelity)


def test_a_screen_gives_a_state_but_no_fitness():
    g = _genome(1)
    screened = genome_result(g, [_eval(1, 1, 1.3, 0.5)])
    assert (screened.state, screened.val_bpb, screened.n, screened.counted) == (SCREENED, None, 0, 0)
    assert screened.is_finished and not screened.is_complete
    assert (screened.screens_counted, screened.screen_bpb) == (1, 1.3)
    assert genome_result(g, [_eval(1, 1, None, 0.5, EvalState.FAIL)]).state == "FAIL"
    assert genome_result(g, [_eval(1, 1, None, 0.5, EvalState.RUNNING)]).state == "RUNNING"
    assert genome_result(g, [_eval(1, 1, None, 0.5, EvalState.INTERRUPTED)]).state == "INTERRUPTED"
    promoted = genome_result(g, [_eval(1, 1, 1.3, 0.5), _eval(2, 1, 1.01)])
    assert (promoted.state, promoted.val_bpb, promoted.n, promoted.counted) == ("COMPLETE", 1.01, 1, 1)
    assert promoted.screen_bpb == 1.3  # kept apart: not in the mean
    running = genome_result(g, [_eval(1, 1, 1.3, 0.5), _eval(2, 1, None, 1.0, EvalState.RUNNING)])
    assert running.state == "RUNNING"
    cut = genome_result(g, [_eval(1, 1, 1.3, 0.5), _eval(2, 1, None, 1.0, EvalState.INTERRUPTED)])
    assert cut.state == "INTERRUPTED"  # a promotion cut short is evaluated in full again, not screened


def _state(screens: dict[int, float | None], full: dict[int, float] | None = None) -> RunState:
    """The seed (2 full readings) and children 1.. with the given screen readings (None: failed)."""
    genomes = [_genome(0, "seed")] + [_genome(i) for i in screens]
    evals = [_eval(1, 0, 1.0), _eval(2, 0, 1.002)]
    for i, value in screens.items():
        evals.append(_eval(10 + i, i, value, 0.5, EvalState.COMPLETE if value is not None else EvalState.FAIL))
    for i, value in (full or {}).items():
        evals.append(_eval(100 + i, i, value))
    return RunState(genomes, evals, SourceCache(lambda sha: ""))


def test_asha_promotes_the_best_third_of_the_rung_best_first_and_once():
    readings = {1: 1.25, 2: 1.21, 3: None, 4: 1.23, 5: 1.30, 6: 1.22}
    state = _state(readings)
    assert state.screened == 6
    assert state.spent() == pytest.approx(2 + 6 * 0.5)
    assert state.promotion(3, 100).genome_id == "g0002"  # floor(6 / 3) = 2 may be promoted: g0002 (1.21), g0006 (1.22)
    state = _state(readings, {2: 1.01})
    assert state.promotion(3, 100).genome_id == "g0006"
    state = _state(readings, {2: 1.01, 6: 1.02})
    assert state.promotion(3, 100) is None  # g0004 (third best) waits until the rung holds 9
    state = _state({**readings, 7: 1.4, 8: 1.5, 9: None}, {2: 1.01, 6: 1.02})
    assert state.promotion(3, 100).genome_id == "g0004"
    assert state.promotion(2, 100) is not None and _state(readings).promotion(7, 100) is None
    # a genome's rung is the `window` screened up to itself: g0009's (g0004..g0009) has it second best,
    # where the whole history (g0001, g0002 and g0006 better) would pass it over
    state = _state({1: 1.10, 2: 1.21, 3: None, 4: 1.26, 5: 1.30, 6: 1.22, 7: 1.4, 8: 1.5, 9: 1.24}, {6: 1.02})
    assert state.promotion(3, 100).genome_id == "g0001"
    assert state.promotion(3, 6).genome_id == "g0009"
    state = _state({1: 1.10, 2: 1.21, 3: None, 4: 1.26, 5: 1.30, 6: 1.22, 7: 1.4, 8: 1.5, 9: 1.24}, {6: 1.02, 9: 1.0})
    assert state.promotion(3, 6) is None  # g0001 left the candidates; g0004 was not in the best third of its rung


def test_the_scheduler_screens_children_promotes_in_full_and_rescreens_an_interrupted_screen():
    config = RunConfig(run="r", profile="smoke", fitness="reported", screen_fraction=0.5, proposal_workers=0)
    scheduler = Scheduler(config, {}, "smoke", 1.0, lambda: "", None, "seed.py")
    try:
        state = _state({1: 1.25, 2: 1.21, 3: 1.3})
        job = scheduler.due(state)
        assert isinstance(job, Due) and job.result.genome_id == "g0002" and job.fidelity == 1.0
        state.add_genome(_genome(4))
        state.record(_eval(50, 4, None, 0.5, EvalState.INTERRUPTED))
        job = scheduler.due(state)
        assert job.result.genome_id == "g0004" and job.fidelity == 0.5
        assert not scheduler.screens(state.seed()) and not scheduler.screens(state.result("g0002"))
    finally:
        scheduler.close()


def test_a_child_screened_out_counts_as_a_child_that_did_not_improve():
    results = [genome_result(_genome(0, "seed"), [_eval(1, 0, 1.0)]),
               genome_result(_genome(1), [_eval(2, 1, 1.3, 0.5)]),
               genome_result(_genome(2), [_eval(3, 2, 1.2, 0.5), _eval(4, 2, 0.9)])]
    believed = {"g0000": Belief(1.0, 0.001, 1), "g0002": Belief(0.9, 0.001, 1)}
    credit = operator_credit(results, believed, {"hyperparam": 1.0}, 0.001)
    assert (credit["hyperparam"].children, credit["hyperparam"].improved) == (2, 1)


def _screen_genome(fake_genome: str) -> str:
    """The fake genome, noisy, reading worse by SCREEN_OFFSET below the full budget, printing its budget."""
    code = set_constants(fake_genome, {"NOISE_BPB": 0.01})
    code = code.replace(
        '    print("---")\n',
        '    budget_s = float(os.environ.get("EVO_TIME_BUDGET", "-1"))\n'
        '    if 0 < budget_s < 1.0:\n'
        f'        bpb += {SCREEN_OFFSET}\n'
        '    print("---")\n'
        '    print(f"budget_s: {budget_s}")\n',
    )
    assert "budget_s" in code
    return code


def test_a_screened_run_trains_children_short_first_and_promotes_only_the_best(tmp_path, fake_genome):
    paths = Paths.for_project(add_harness(tmp_path))
    archive = Archive(paths.archive_path)
    config = RunConfig(run="r", profile="smoke", population=4, seed=3, fitness="reported", max_evaluations=14,
                       screen_fraction=0.5, held_out_replicates=0)
    archive.create_run(config, 1.0, tmp_path)
    Engine(paths, archive, config, 1.0, "cpu", Recorder()).run(_screen_genome(fake_genome))

    genomes = archive.genomes("r")
    evals = sorted(archive.evaluations("r"), key=lambda e: e.eval_id)
    screens = [e for e in evals if e.fidelity < 1.0]
    full = [e for e in evals if e.fidelity == 1.0]
    assert screens and all(e.fidelity == 0.5 and e.metrics["budget_s"] == 0.5 for e in screens)
    assert all(e.metrics.get("budget_s") != 0.5 for e in full)
    seed_id = genomes[0].genome_id
    for g in genomes[1:]:  # every child is screened first
        first = next(e for e in evals if e.genome_id == g.genome_id)
        assert first.fidelity == 0.5, g.genome_id
    # ASHA's rule, replayed: a child's first full evaluation starts while it is in the best
    # third of the screens finished before it
    for g in genomes[1:]:
        promoted = next((e for e in full if e.genome_id == g.genome_id), None)
        if promoted is None:
            continue
        rung = sorted((e.val_bpb if e.state is EvalState.COMPLETE else float("inf"), e.genome_id)
                      for e in screens if e.eval_id < promoted.eval_id)
        assert g.genome_id in [gid for _, gid in rung[: len(rung) // 3]], (g.genome_id, rung)
    results = {r.genome_id: r for r in genome_results(genomes, evals)}
    assert any(r.state == SCREENED for r in results.values())
    assert any(r.screens and r.evaluations for r in results.values())  # some child was promoted
    for r in results.values():  # a fitness is the mean of full readings only (screens read SCREEN_OFFSET worse)
        readings = [e.val_bpb for e in full if e.genome_id == r.genome_id and e.state is EvalState.COMPLETE]
        assert r.val_bpb == (statistics.fmean(readings) if readings else None)
        if r.state == SCREENED:
            assert r.val_bpb is None and r.screen_bpb >= 1.5 + SCREEN_OFFSET - 0.05
    parents = {p for g in genomes for p in g.parents}
    assert not parents & {r.genome_id for r in results.values() if r.state == SCREENED}  # never a parent
    spent = sum(1 for e in full if e.state.is_finished) + 0.5 * sum(1 for e in screens if e.state.is_finished)
    assert 13.5 <= spent <= 14
    assert results[seed_id].n == 2 and all(e.fidelity == 1.0 for e in results[seed_id].evaluations)

    nodes = load_nodes(archive, "r")  # the lineage views' SQL says what genome_result says
    assert [(n.state, n.val_bpb, n.n) for n in nodes] == [
        (results[g.genome_id].state, results[g.genome_id].val_bpb, results[g.genome_id].n) for g in genomes]
    assert [n.screen_bpb for n in nodes] == pytest.approx(
        [results[g.genome_id].screen_bpb for g in genomes], nan_ok=True)
    summary = next(s for s in archive.run_summaries() if s.run == "r")
    assert summary.spent == pytest.approx(spent) and run_state(summary, False) == "finished"
    record = archive.get_run("r")
    view = load_status(archive, record, None, "finished")
    text = "\n".join(header_lines(view))
    n_screened = sum(1 for r in results.values() if r.screen_bpb is not None)
    n_promoted = sum(1 for r in results.values() if r.screen_bpb is not None and r.evaluations)
    assert f"{n_screened} screened, {n_promoted} promoted" in text
    data = status_json(view)
    assert data["screening"] == {"fraction": 0.5, "eta": 3, "screened": n_screened, "promoted": n_promoted}
    assert data["states"].get(SCREENED) == sum(1 for r in results.values() if r.state == SCREENED)


def test_screen_settings_are_checked():
    with pytest.raises(ValueError, match="screen fraction"):
        RunConfig(run="r", profile="smoke", screen_fraction=1.0)
    with pytest.raises(ValueError, match="eta"):
        RunConfig(run="r", profile="smoke", screen_fraction=0.3, screen_eta=1)
    assert not RunConfig(run="r", profile="smoke").screening
