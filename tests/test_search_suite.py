"""The synthetic-landscape search benchmark (benchmarks/landscapes.py, search_suite.py):
its genomes keep evo's contract, its landscapes have the promised shape, its baselines
search, and one tiny evo run goes through the real CLI."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import landscapes as L  # noqa: E402
import search_suite as S  # noqa: E402

from evo.config import FROZEN_CONSTANTS  # noqa: E402
from evo.metrics import classify, parse_summary  # noqa: E402
from evo.operators.cst_tools import read_constants  # noqa: E402
from evo.operators.optuna_sampler import search_space, to_params  # noqa: E402
from evo.records import EvalState  # noqa: E402


def run_genome(path: Path, seed: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env={**env, "EVO_SEED": str(seed)},
                          cwd=path.parent, timeout=30)


def test_genome_keeps_the_seed_block_and_prints_true_fitness_plus_its_noise(tmp_path):
    land = L.make_landscape("coupled", 3)
    code = L.landscape_genome(land)
    assert "import torch" not in code and "prepare" not in code
    seed_block = {n: (c.value, c.power_of) for n, c in read_constants(L.seed_code()).items()}
    genome_block = {n: (c.value, c.power_of) for n, c in read_constants(code).items()}
    assert genome_block == seed_block  # the landscape's own parameters are not constants
    for line in L.block_code().splitlines():
        assert line in code.splitlines()
    path = tmp_path / "landscape.py"
    path.write_text(code)
    readings = []
    for seed in (0, 7):
        proc = run_genome(path, seed)
        outcome = classify(proc.stdout + proc.stderr, proc.returncode, False, 0.1)
        assert outcome.state is EvalState.COMPLETE, proc.stdout + proc.stderr
        metrics = parse_summary(proc.stdout)
        for key in ("val_bpb", "training_seconds", "total_seconds", "peak_vram_mb", "mfu_percent",
                     "total_tokens_M", "num_steps", "num_params_M", "depth"):
            assert key in metrics
        expected = L.true_fitness(land, code) + L.noise(land, code, seed)
        assert metrics["val_bpb"] == pytest.approx(expected, abs=2e-6)
        readings.append(metrics["val_bpb"])
    assert readings[0] != readings[1]  # the noise follows EVO_SEED
    assert L.true_fitness(land, code) == pytest.approx(1.0)


def test_a_cliff_prints_fail_and_exits_1(tmp_path):
    land = L.make_landscape("cliff", 0)
    from evo.operators.cst_tools import set_constants

    code = set_constants(L.landscape_genome(land), {"MATRIX_LR": 0.16})  # x4: past the cliff
    assert L.true_fitness(land, code) is None
    path = tmp_path / "landscape.py"
    path.write_text(code)
    proc = run_genome(path, 0)
    assert proc.returncode == 1
    assert "FAIL" in proc.stdout.splitlines()
    assert classify(proc.stdout, proc.returncode, False, 0.1).state is EvalState.FAIL


@pytest.mark.parametrize("family", L.FAMILIES)
def test_each_family_seed_is_one_and_its_optimum_is_lower_and_searchable(family):
    constants = read_constants(L.block_code())
    space = search_space(constants)
    for instance in (0, 101):
        land = L.make_landscape(family, instance)
        assert L.true_fitness(land, constants) == pytest.approx(1.0)
        values, f_opt = L.optimum(land)
        assert 0.94 <= f_opt <= 0.96
        assert 0.001 <= land.sigma <= 0.01
        assert to_params({n: type(c)(n, values[n], c.power_of, c.line, c.fixed) for n, c in constants.items()},
                         space) is not None, "the optimum lies outside optuna's space around the seed"
        # Only constants evo may move matter: the frozen ones and WARMUP_RATIO do not.
        for name, value in (("FINAL_EVAL_BATCH_SIZE", 4), ("WARMUP_RATIO", 0.5)):
            assert name in FROZEN_CONSTANTS or name == "WARMUP_RATIO"
            assert L.true_fitness(land, {**values, name: value}) == pytest.approx(f_opt)
        # The optimum is a local minimum along every coordinate step evo could take.
        for name in ("MATRIX_LR", "EMBEDDING_LR", "DEPTH"):
            for factor in (0.7, 1.4):
                v = values[name] * factor
                v = max(1, round(v)) if isinstance(values[name], int) else v
                t = L.true_fitness(land, {**values, name: v})
                assert t is None or t >= f_opt - 1e-12


def test_instances_differ_by_seed_and_held_out_family_is_marked():
    a, b = L.make_landscape("sphere", 0), L.make_landscape("sphere", 1)
    assert a.params["opt"] != b.params["opt"]
    assert L.make_landscape("sphere", 0).params == a.params
    assert L.make_landscape("ridge", 0).held_out and not a.held_out
    assert len(L.FAMILIES) >= 5


@pytest.mark.parametrize("method", ["tpe", "cmaes", "random", "greedy"])
def test_baselines_improve_on_the_seed(method):
    land = L.make_landscape("sphere", 0)
    curve = (S.run_greedy(land, 0, 24) if method == "greedy" else S.run_optuna(method, land, 0, 24))["curve"]
    assert len(curve) == 24
    assert curve[-1]["true"] < 0.995
    trues = [c["true"] for c in curve]
    assert all(math.isfinite(t) for t in trues)


def test_report_statistics():
    runs = {"evo": [{"curve": [{"true": 1.0, "estimate": None}, {"true": 0.95, "estimate": 0.94}]},
                    {"curve": [{"true": 1.0, "estimate": None}, {"true": 0.96, "estimate": 0.955}]}],
            "greedy": [{"curve": [{"true": 0.99, "estimate": 0.98}, {"true": 0.99, "estimate": 0.98}]},
                       {"curve": [{"true": 0.98, "estimate": 0.97}, {"true": 0.98, "estimate": 0.97}]}]}
    summary = S.summarize(runs, [1, 2], 2)
    assert summary["evo"]["checkpoints"]["2"]["true_mean"] == pytest.approx(0.955)
    assert summary["evo"]["checkpoints"]["2"]["curse_mean"] == pytest.approx(0.0075)  # true - estimate
    assert math.isnan(summary["evo"]["checkpoints"]["1"]["curse_mean"])
    assert S.evals_to_reach_greedy(summary, 2) == 2
    assert S.verdicts(summary, [2])["greedy@2"]["evo_better"]
    runs["evo"][0]["curve"][1]["posterior"] = 0.945  # evo's posterior mean, where recorded
    posterior = S.summarize(runs, [2], 2)["evo"]["checkpoints"]["2"]
    assert posterior["posterior_curse_mean"] == pytest.approx(0.005)  # over the repeats that have one


@pytest.mark.slow
def test_a_tiny_evo_run_through_the_cli_declares_a_best(tmp_path):
    """6 evaluations through `evo start --fitness reported`; the declared best replays."""
    land = L.make_landscape("sphere", 0)
    project = S.make_project(tmp_path / "project", land)
    run = "tiny"
    proc = subprocess.run(S.evo_command(project, 6, 0, run, S.sandbox_choice()), cwd=project,
                          capture_output=True, text=True, env=S.evo_env(None), timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    curve = S.evo_curve(project / "archive" / "evo.duckdb", run, land, 6)
    assert len(curve) == 6
    last = curve[-1]
    assert last["genome"] is not None and last["n"] >= 2  # seeds' replicates count
    from evo.archive import Archive

    archive = Archive(project / "archive" / "evo.duckdb", read_only=True)
    genome = archive.genome(run, last["genome"])
    source = archive.source(genome.source_sha256)
    assert L.true_fitness(land, source) == pytest.approx(last["true"])
    # Replay: the chosen genome, run again with the seeds evo gave it, prints what evo read.
    path = tmp_path / "chosen.py"
    path.write_text(source)
    evals = [e for e in archive.evaluations(run, genome_id=genome.genome_id) if e.state is EvalState.COMPLETE]
    for e in evals:
        replay = parse_summary(run_genome(path, e.seed).stdout)["val_bpb"]
        assert replay == pytest.approx(e.val_bpb, abs=1e-9)
    assert last["estimate"] == pytest.approx(sum(e.val_bpb for e in evals) / len(evals))
    # evo's posterior mean of it: between the mean reading and the prior it shrinks toward
    assert last["posterior"] is not None and abs(last["posterior"] - last["estimate"]) < 0.05


def test_a_landscape_genome_given_a_shorter_budget_reads_with_its_fidelity_bias(tmp_path):
    land = L.make_landscape("sphere", 0)
    path = tmp_path / "landscape.py"
    path.write_text(L.landscape_genome(land, 3.0))
    from evo.operators.cst_tools import set_constants

    child = tmp_path / "child.py"  # higher learning rates: short runs favour them (the bias is < 0 for them)
    child.write_text(set_constants(path.read_text(), {"MATRIX_LR": 0.08, "EMBEDDING_LR": 1.2}))
    values = L._values(child.read_text())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def read(budget: str | None) -> float:
        extra = {} if budget is None else {"EVO_TIME_BUDGET": budget}
        proc = subprocess.run([sys.executable, str(child)], capture_output=True, text=True, timeout=30,
                              env={**env, "EVO_SEED": "5", **extra})
        return parse_summary(proc.stdout)["val_bpb"]

    full = L.reading(land, values, 5)
    assert read(None) == pytest.approx(full, abs=2e-6) and read("3.0") == pytest.approx(full, abs=2e-6)
    screen = read("1.0")
    assert screen == pytest.approx(L.reading(land, values, 5, 1.0 / 3.0), abs=2e-6)
    bias = L.landscape_fidelity_bias(values, land.params, 1.0 / 3.0)
    assert screen - full == pytest.approx(bias, abs=2e-6)
    assert bias < (2.0 / 3.0) * 0.1  # worse overall, less so for the higher learning rates
    assert L.landscape_fidelity_bias(values, land.params, 1.0) == 0.0


@pytest.mark.slow
def test_a_screened_evo_run_is_counted_in_full_budget_evaluations(tmp_path):
    land = L.make_landscape("sphere", 0)
    project = S.make_project(tmp_path / "project", land, screen=0.5)
    proc = subprocess.run(S.evo_command(project, 8, 0, "scr", S.sandbox_choice(), screen=0.5), cwd=project,
                          capture_output=True, text=True, env=S.evo_env(None), timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    from evo.archive import Archive

    evals = Archive(project / "archive" / "evo.duckdb", read_only=True).evaluations("scr")
    screens = [e for e in evals if e.fidelity == 0.5]
    assert screens and len(evals) > 8  # a screen costs half an evaluation
    assert 7.0 < sum(e.fidelity for e in evals if e.state.is_finished) <= 8.0
    for e in screens:  # the genome read its budget: 1.5 of 3 s, with the fidelity bias
        assert e.val_bpb is None or e.val_bpb > 1.0 + 0.5 * 0.1 - 0.1
    curve = S.evo_curve(project / "archive" / "evo.duckdb", "scr", land, 8)
    assert len(curve) == 8 and curve[-1]["genome"] is not None
