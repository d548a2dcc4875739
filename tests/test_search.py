"""Noise awareness, the optuna operator (and its memory across resume), crossover, selection."""

from __future__ import annotations

import dataclasses
import random
import textwrap
from datetime import datetime

import pytest
from conftest import add_harness
from test_engine import Recorder

from evo.archive import Archive
from evo.config import Paths, RunConfig
from evo.engine import Engine
from evo.noise import noise_sigma
from evo.operators import Context, OptunaProposal, Parent, Status, UniformCrossover
from evo.operators.cst_tools import read_constants, set_constants
from evo.operators.optuna_sampler import build_study, search_space, to_params
from evo.racing import judge
from evo.records import EvalState, EvaluationRecord, GenomeRecord
from evo.results import GenomeResult, genome_results
from evo.scheduler import Scheduler
from evo.selection import select_parents
from evo.state import RunState


def _engine(tmp_path, config: RunConfig) -> tuple[Engine, Archive]:
    paths = Paths.for_project(add_harness(tmp_path))
    archive = Archive(paths.archive_path)
    config = dataclasses.replace(config, fitness="reported")
    if config.run not in {r.run for r in archive.list_runs()}:
        archive.create_run(config, 1.0, tmp_path)
    return Engine(paths, archive, config, 1.0, "cpu", Recorder()), archive


def _result(gid: str, values: list[float], created: int = 0, operator: str = "hyperparam") -> GenomeResult:
    genome = GenomeRecord("r", gid, 0, operator, gid, gid, gid, datetime(2026, 1, 1, 0, 0, created))
    evals = tuple(
        EvaluationRecord(i, "r", gid, i + 1, EvalState.COMPLETE, genome.created_at, genome.created_at, 42 + i, "cpu",
                         "x.log", metrics={"val_bpb": v})
        for i, v in enumerate(values)
    )
    return genome_results([genome], evals)[0]


# ---------------------------------------------------------------------------- noise


def test_declared_best_needs_replicates_and_the_likeliest_wins():
    seed = _result("g0000", [1.500, 1.510, 1.490], 0, "seed")  # sigma = 0.01
    sigma = noise_sigma([seed])
    assert sigma == pytest.approx(0.01)
    within = _result("g0001", [1.490, 1.495], 1)  # 0.0075 better, 2 readings
    lucky = _result("g0002", [1.300], 2)  # far better, but a single evaluation
    better = _result("g0003", [1.450, 1.460], 3)  # 0.045 better with 2 replicates
    verdict = judge([seed, within, lucky], sigma, 2)
    assert verdict.best == "g0001"  # more likely best than the seed, and confirmed
    assert verdict.leader == "g0002"  # the single lucky reading leads ...
    assert verdict.probability < 0.05  # ... so the declared best is probably not the best evaluated
    assert judge([seed, within, lucky, better], sigma, 2).best == "g0003"
    assert better.val_bpb_std == pytest.approx(0.00707, abs=1e-4) and better.n == 2


def test_sigma_is_pooled_over_every_genome_with_replicates():
    """Montgomery's pooled variance: sum (n_i - 1) s_i^2 / sum (n_i - 1); genomes that
    ignore EVO_SEED (identical replicates) and single evaluations have no say."""
    from evo.noise import noise_estimate

    seed = _result("g0000", [1.500, 1.510, 1.490], 0, "seed")  # s^2 = 1e-4, 2 df
    other = _result("g0001", [1.40, 1.43], 1)  # s^2 = 4.5e-4, 1 df
    pinned = _result("g0002", [1.45, 1.45], 2)  # seeds 42, 43, same value: no noise measured
    single = _result("g0003", [1.2], 3)
    estimate = noise_estimate([seed, other, pinned, single])
    assert pinned.ignores_seed and not other.ignores_seed
    assert estimate.df == 3 and estimate.genomes == 2
    assert estimate.sigma == pytest.approx(((2 * 1e-4 + 1 * 4.5e-4) / 3) ** 0.5)
    assert estimate.low < estimate.sigma < estimate.high
    # more replicates at the same spread narrow the interval
    many = noise_estimate([_result(f"g{i:04d}", [1.5, 1.51, 1.49], i) for i in range(10)])
    assert many.sigma == pytest.approx(0.01) and many.df == 20
    assert many.high - many.low < (noise_estimate([seed]).high - noise_estimate([seed]).low) / 3
    assert noise_estimate([single]) is None


@pytest.mark.parametrize("df, q05, q95", [(1, 0.003932, 3.841459), (2, 0.102587, 5.991465), (3, 0.351846, 7.814728),
                                          (5, 1.145476, 11.070498), (10, 3.940299, 18.307038)])
def test_chi_square_quantiles_of_the_noise_interval(df, q05, q95):
    """Table values (scipy.stats.chi2.ppf): exact at 1 and 2 degrees of freedom, where the
    approximation alone made the interval of one replicate pair absurd (sigma up to 41)."""
    from evo.noise import chi2_quantile

    tolerance = 1e-3 if df <= 2 else (0.07 if df == 3 else 0.02)
    assert chi2_quantile(0.05, df) == pytest.approx(q05, rel=tolerance)
    assert chi2_quantile(0.95, df) == pytest.approx(q95, rel=tolerance)

def test_noise_only_change_is_not_an_improvement_but_a_real_one_is(tmp_path, fake_genome):
    noisy = set_constants(fake_genome, {"NOISE_BPB": 0.01})
    config = RunConfig(run="n", profile="cpu", population=1, generations=1, operators={"hyperparam": 1.0},
                       noise_replicates=3)
    engine, archive = _engine(tmp_path, config)
    engine.run(noisy)  # generation 0: the seed, evaluated with 3 seeds
    (seed,) = engine.results()
    assert seed.n == 3 and sorted(e.seed for e in seed.evaluations) == [42, 43, 44]
    sigma = noise_sigma(engine.results())
    assert sigma > 0.001
    assert archive.noise_floor("n")[1] == pytest.approx(sigma)

    seed_code = archive.source(seed.genome.source_sha256)
    noise_only = archive.add_genome("n", 1, "hyperparam", "UNUSED 1 -> 2", set_constants(seed_code, {"UNUSED": 2}),
                                    [seed.genome_id])
    better = archive.add_genome("n", 1, "hyperparam", "LR 0.04 -> 0.02", set_constants(seed_code, {"LR": 0.02}),
                                [seed.genome_id])
    engine, archive = _engine(tmp_path, RunConfig(**{**config.__dict__, "generations": 2, "population": 2}))
    top = engine.run(None)
    by_id = {r.genome_id: r for r in engine.results()}
    assert top.genome_id == better.genome_id  # a genuine improvement is accepted ...
    assert by_id[better.genome_id].n >= 2  # ... after re-evaluation with a new seed
    assert by_id[noise_only.genome_id].n == 1  # no replicate wasted on a change within the noise


# ---------------------------------------------------------------------------- optuna


def test_optuna_search_space_respects_types(fake_genome):
    space = search_space(read_constants(fake_genome))
    assert "WIDTH:log2" in space and space["WIDTH:log2"].low == 6 and space["WIDTH:log2"].high == 10
    assert space["LR"].log and space["LR"].low == pytest.approx(0.01)
    assert "BEHAVIOUR" not in space and "NOISE_BPB" not in space  # free string; zero float


@pytest.mark.parametrize("sampler", ["tpe", "cmaes"])
@pytest.mark.parametrize("seed", range(10))
def test_optuna_child_values_are_valid(fake_genome, seed, sampler):
    history = Context(complete=((fake_genome, 1.8), (set_constants(fake_genome, {"LR": 0.02}), 1.7)))
    result = OptunaProposal(sampler).propose([Parent("g0", fake_genome, 1.8)], random.Random(seed), history)
    assert result.status is Status.OK
    after = read_constants(result.code)
    width = after["WIDTH"].value
    assert width & (width - 1) == 0 and 64 <= width <= 1024  # powers of two stay powers of two
    assert isinstance(after["DEPTH"].value, int) and after["DEPTH"].value >= 1
    assert 0.01 <= after["LR"].value <= 0.16


@pytest.mark.parametrize("objective", ["posterior", "mean"])
def test_the_optuna_trials_value_posterior_means_or_mean_readings(fake_genome, monkeypatch, objective):
    """A trial's value is its genome's posterior mean where the run has beliefs, or its mean
    reading with ``OBJECTIVE = "mean"`` (search_sim's ``--set`` switch)."""
    from evo.operators import optuna_sampler

    monkeypatch.setattr(optuna_sampler, "OBJECTIVE", objective)
    seen = []
    real_build = optuna_sampler.build_study

    def recording_build(space, history, sampler):
        seen.extend(value for _, value in history)
        return real_build(space, history, sampler)

    monkeypatch.setattr(optuna_sampler, "build_study", recording_build)
    child = set_constants(fake_genome, {"LR": 0.02})
    context = Context(complete=((fake_genome, 1.8), (child, 1.7)), believed=((fake_genome, 1.8), (child, 1.75)))
    OptunaProposal("tpe").propose([Parent("g0", fake_genome, 1.8)], random.Random(0), context)
    assert seen == ([1.8, 1.75] if objective == "posterior" else [1.8, 1.7])


def test_resume_keeps_the_optuna_history(tmp_path, fake_genome):
    config = RunConfig(run="o", profile="cpu", population=3, generations=2, operators={"optuna": 1.0},
                       noise_replicates=1, best_replicates=1)
    engine, archive = _engine(tmp_path, config)
    engine.run(fake_genome)
    complete = [r for r in engine.results() if r.is_complete]
    assert len(complete) == 6

    resumed, _ = _engine(tmp_path, config)  # a new engine over the same archive, as `evo resume` builds
    state = RunState.load(archive, "o")  # what the resumed engine reads, once
    scheduler = Scheduler(config, resumed.operators, config.profile, 1.0, lambda: "", None, "seed_train.py")
    context = scheduler.context(state)
    assert len(context.complete) == 6
    space = search_space(read_constants(fake_genome), [read_constants(code) for code, _ in context.complete])
    study = build_study(space, context.complete, OptunaProposal("tpe")._sampler(0))
    assert len(study.trials) == 6
    assert sorted(t.value for t in study.trials) == sorted(r.val_bpb for r in complete)
    parent = Parent(complete[0].genome_id, state.source(complete[0].genome), complete[0].val_bpb)
    with_history = OptunaProposal("tpe").propose([parent], random.Random(5), context)
    assert "6 trials" in with_history.description
    again = OptunaProposal("tpe").propose([parent], random.Random(5), scheduler.context(RunState.load(archive, "o")))
    assert again.code == with_history.code  # the rebuilt study gives the same proposal
    fresh = OptunaProposal("tpe").propose([parent], random.Random(5), Context())
    assert "0 trials" in fresh.description
    # the GP searches a trust region around the parent: only the history inside it is a trial
    gp = OptunaProposal("gp").propose([parent], random.Random(5), context)
    inside = sum(to_params(read_constants(code), search_space(read_constants(parent.code), (), factor=2.0)) is not None
                 for code, _ in context.complete)
    assert gp.status is Status.OK and 0 < inside < 6 and f"{inside} trials" in gp.description


# ---------------------------------------------------------------------------- crossover

A = textwrap.dedent("""\
    LR = 0.04  # lr
    WIDTH = 2**8  # width
    DEPTH = 3  # depth
    ONLY_A = 1  # a's own
    """)
B = textwrap.dedent("""\
    LR = 0.02  # lr
    WIDTH = 2**6  # width
    DEPTH = 3  # depth
    """)


@pytest.mark.parametrize("seed", range(10))
def test_uniform_crossover_mixes_shared_constants(seed):
    result = UniformCrossover().propose([Parent("g1", A, 1.0), Parent("g2", B, 1.1)], random.Random(seed), Context())
    assert result.status is Status.OK
    child = read_constants(result.code)
    from_b = {n for n in ("LR", "WIDTH") if child[n].value == read_constants(B)[n].value}
    assert len(from_b) == 1  # a proper mix: neither parent copied
    assert child["ONLY_A"].value == 1 and child["DEPTH"].value == 3
    assert "# width" in result.code  # the first parent's code, comments and all
    assert result.description.startswith("crossover g1 x g2")


def test_crossover_child_has_both_parents_in_the_lineage(tmp_path, fake_genome):
    config = RunConfig(run="x", profile="cpu", population=5, generations=3,
                       operators={"hyperparam": 0.5, "crossover": 0.5}, noise_replicates=1, best_replicates=1)
    engine, archive = _engine(tmp_path, config)
    engine.run(fake_genome)
    crossed = [g for g in archive.genomes("x") if g.operator == "crossover"]
    assert crossed, "no crossover child in three generations"
    for g in crossed:
        assert len(g.parents) == 2
        assert {(p, g.genome_id) for p in g.parents} <= set(archive.edges("x"))


# ---------------------------------------------------------------------------- selection


def test_selection_caps_children_per_parent_and_skips_failures():
    pool = [_result(f"g{i}", [1.0 + i / 10]) for i in range(4)]
    rng = random.Random(0)
    for method in ("tournament", "rank"):
        picks = [select_parents(pool, 1, rng, method, elite_first=False, children={"g0": 2}, cap=2)[0].genome_id
                 for _ in range(200)]
        assert "g0" not in picks  # the best is capped for this generation
        assert set(picks) <= {"g1", "g2", "g3"}
    failed = genome_results([GenomeRecord("r", "bad", 0, "x", "", "", "", datetime(2026, 1, 1))], [])
    with pytest.raises(ValueError, match="COMPLETE"):
        select_parents(pool + failed, 1, rng)


def test_rank_selection_prefers_better_genomes():
    pool = [_result(f"g{i}", [1.0 + i / 10]) for i in range(4)]
    rng = random.Random(1)
    picks = [select_parents(pool, 1, rng, "rank", elite_first=False)[0].genome_id for _ in range(2000)]
    assert picks.count("g0") > picks.count("g1") > picks.count("g2") > picks.count("g3") > 0
