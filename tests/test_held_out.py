"""Held-out evaluations (evo.held_out): the declared best is evaluated again with fresh seeds
when the search ends, and those readings take no part in any decision."""

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
from evo.engine import EVAL_SEED, Engine
from evo.held_out import HELD_OUT_SEED, held_out
from evo.lineage import load_nodes
from evo.noise import declared_best, pooled_term
from evo.operators.cst_tools import set_constants
from evo.records import EvalState, EvaluationRecord, GenomeRecord
from evo.results import genome_result, genome_results

T0 = datetime(2026, 1, 1)


def _engine(tmp_path, run="r", **settings):
    tmp_path.mkdir(parents=True, exist_ok=True)
    paths = Paths.for_project(add_harness(tmp_path))
    archive = Archive(paths.archive_path)
    config = RunConfig(run=run, profile="smoke", population=3, seed=1, fitness="reported", **settings)
    archive.create_run(config, 1.0, tmp_path)
    reporter = Recorder()
    return Engine(paths, archive, config, 1.0, "cpu", reporter), archive, config, reporter


def _noisy(fake_genome: str) -> str:
    return set_constants(fake_genome, {"NOISE_BPB": 0.01})


def test_the_reserve_is_kept_only_in_a_run_long_enough_for_it():
    assert RunConfig(run="r", profile="smoke", max_evaluations=160).held_out_reserve() == 2
    assert RunConfig(run="r", profile="smoke", max_evaluations=8).held_out_reserve() == 2
    assert RunConfig(run="r", profile="smoke", max_evaluations=7).held_out_reserve() == 0  # more than a quarter of the run
    assert RunConfig(run="r", profile="smoke", max_evaluations=160, held_out_replicates=0).held_out_reserve() == 0
    assert RunConfig(run="r", profile="smoke").held_out_reserve() == 0  # no limit: nothing to keep
    with pytest.raises(ValueError, match="--held-out must be >= 0"):
        RunConfig(run="r", profile="smoke", held_out_replicates=-1)


def test_held_out_readings_take_no_part_in_the_genomes_fitness_or_the_noise_floor():
    genome = GenomeRecord("r", "g0000", 0, "seed", "seed", "a", "a", T0, ())

    def evaluation(eval_id, seed, value, held=False, state=EvalState.COMPLETE):
        metrics = {} if value is None else {"val_bpb": value}
        return EvaluationRecord(eval_id, "r", "g0000", eval_id, state, T0, T0, seed, "cpu", "x.log",
                                metrics=metrics, held_out=held)

    searched = [evaluation(1, EVAL_SEED, 1.00), evaluation(2, EVAL_SEED + 1, 1.02)]
    held = [evaluation(3, HELD_OUT_SEED, 1.30, True), evaluation(4, HELD_OUT_SEED + 1, None, True, EvalState.RUNNING)]
    r = genome_result(genome, [*searched, *held])
    bare = genome_result(genome, searched)
    assert (r.val_bpb, r.val_bpb_std, r.n, r.state, r.counted) == (
        bare.val_bpb, bare.val_bpb_std, bare.n, bare.state, bare.counted)
    assert r.state == "COMPLETE"  # a held-out evaluation running does not make the genome RUNNING
    assert r.held_out_scores == [1.30] and r.held_out_counted == 1
    assert pooled_term(r) == pooled_term(bare)
    figure = held_out(r.held_out_scores, 0.02)
    assert (figure.val_bpb, figure.se, figure.n) == (1.30, 0.02, 1)


def test_a_run_spends_its_last_evaluations_on_its_declared_best_with_fresh_seeds(tmp_path, fake_genome):
    engine, archive, config, reporter = _engine(tmp_path, max_evaluations=12)
    engine.run(_noisy(fake_genome))

    evals = archive.evaluations("r")
    assert len(evals) == 12  # the held-out evaluations are within --max-evaluations
    held = [e for e in evals if e.held_out]
    assert held == evals[-2:] and all(e.state is EvalState.COMPLETE for e in held)
    assert [e.seed for e in held] == [HELD_OUT_SEED, HELD_OUT_SEED + 1]
    assert all(e.seed < HELD_OUT_SEED for e in evals[:-2])  # no search reading used a held-out seed
    best = engine.incumbent()
    assert {e.genome_id for e in held} == {best.genome_id}
    # the declared best is what the search readings alone say, and so is its fitness
    searched = genome_results(archive.genomes("r"), evals[:-2])
    assert declared_best(searched, config).genome_id == best.genome_id
    mine = next(r for r in searched if r.genome_id == best.genome_id)
    assert (best.val_bpb, best.n) == (mine.val_bpb, mine.n)
    # the lineage views leave them out too (the verdicts agree with genome_results)
    node = next(n for n in load_nodes(archive, "r") if n.genome_id == best.genome_id)
    assert (node.n, node.val_bpb) == (best.n, pytest.approx(best.val_bpb))
    # and evo status shows the figure, on its own line and in --json
    mean = statistics.fmean(e.val_bpb for e in held)
    view = load_status(archive, archive.get_run("r"), None, "finished")
    assert any(f"held-out val_bpb {mean:.6f}" in line and "(n=2)" in line for line in header_lines(view))
    figure = status_json(view)["declared_best"]["held_out"]
    assert figure["n"] == 2 and figure["val_bpb"] == pytest.approx(mean) and figure["se"] > 0
    assert any(f"search over: evaluating the declared best {best.genome_id} 2 more times" in m
               for m in reporter.messages)
    assert any(f"declared best {best.genome_id}: held-out val_bpb {mean:.6f}" in m for m in reporter.messages)
    # resumed, a run that is out of evaluations takes none again
    Engine(engine.paths, archive, config, 1.0, "cpu", Recorder()).run()
    assert len(archive.evaluations("r")) == 12


def test_a_generational_run_takes_them_after_its_last_cohort_and_zero_turns_them_off(tmp_path, fake_genome):
    engine, archive, _, _ = _engine(tmp_path, generations=2)
    engine.run(_noisy(fake_genome))
    evals = archive.evaluations("r")
    held = [e for e in evals if e.held_out]
    searched = [e for e in evals if not e.held_out]
    assert len(held) == 2 and {e.genome_id for e in held} == {engine.incumbent().genome_id}
    assert min(e.started_at for e in held) >= max(e.finished_at for e in searched)
    assert len(genome_results(archive.genomes("r"), evals)) == 6  # two cohorts, nothing more born

    off, archive_off, _, _ = _engine(tmp_path / "off", generations=2, held_out_replicates=0)
    off.run(_noisy(fake_genome))
    assert not any(e.held_out for e in archive_off.evaluations("r"))
