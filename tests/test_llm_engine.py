"""Runs with the LLM operator against a fake Messages API: children evaluated, every call
recorded, a non-matching edit never a child, the cost cap reached mid-run, proposals
made while genomes train, and the command line (operators, no key, status)."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from conftest import add_harness
from fake_messages_api import FakeMessagesAPI, Reply, bad_edit, lr_edit, parent_source, smart
from test_engine import Recorder

from evo.archive import Archive
from evo.cli import _parse_operators, main
from evo.config import Paths, RunConfig
from evo.engine import Engine
from evo.harness import HarnessError
from evo.llm.prices import UnknownModelPriceError
from evo.operators.cst_tools import set_constants
from evo.proposals import ProposalPool
from evo.results import genome_results

PROGRAM_MD = Path(__file__).resolve().parents[1] / "program.md"


class Timeline(Recorder):
    """A recorder that also keeps the engine's messages and each generation's wall time."""

    def __init__(self):
        super().__init__()
        self.messages: list[str] = []
        self.started_at: dict[int, float] = {}
        self.wall_s: dict[int, float] = {}

    def generation_started(self, generation, population):
        self.started_at[generation] = time.monotonic()

    def generation_finished(self, generation, best, results):
        self.wall_s[generation] = time.monotonic() - self.started_at[generation]

    def message(self, text):
        self.messages.append(text)


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")


def _run(tmp_path, seed_code, api, *, population=3, generations=2, operators=None, before=None, **llm):
    shutil.copy(PROGRAM_MD, tmp_path / "program.md")
    paths = Paths.for_project(add_harness(tmp_path))
    archive = Archive(paths.archive_path)
    config = RunConfig(
        run="r", profile="smoke", fitness="reported", population=population, generations=generations, seed=1, noise_replicates=1,
        best_replicates=1, operators=operators or {"llm": 0.5, "hyperparam": 0.5}, llm_base_url=api.url, **llm,
    )
    archive.create_run(config, 1.0, tmp_path)
    timeline = Timeline()
    engine = Engine(paths, archive, config, 1.0, "cpu", timeline)
    if before is not None:
        before(engine)
    engine.run(seed_code)
    return archive, timeline


def test_llm_children_are_evaluated_and_every_call_is_recorded(key, tmp_path, fake_genome, capsys):
    # children made in the engine's thread: a proposal made ahead is used only if it is ready
    # when a slot frees, which depends on the machine's load (threads: the tests below)
    with FakeMessagesAPI(smart()) as api:
        archive, _ = _run(tmp_path, fake_genome, api, proposal_workers=0)
    results = genome_results(archive.genomes("r"), archive.evaluations("r"))
    assert len(results) == 6 and all(r.is_finished for r in results)
    llm_children = [r for r in results if r.genome.operator == "llm"]
    assert llm_children and all(r.is_complete for r in llm_children)
    calls = archive.llm_calls("r")
    assert len(calls) == len(api.requests)  # every call is a row
    assert {c.child_id for c in calls if c.child_id} == {r.genome_id for r in llm_children}
    for r in llm_children:
        call = next(c for c in calls if c.child_id == r.genome_id)
        assert r.genome.parents == (call.parent_id,) and r.genome.description.startswith("LR ")
    assert main(["status", "--project", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    spend = sum(c.cost_usd for c in calls)
    assert f"LLM claude-sonnet-5-5: {len(calls)} attempts, {len(llm_children)} children recorded, 0 failed" in out
    assert f"spend ${spend:.4f}" in out


def test_a_search_block_that_never_matches_never_produces_a_child(key, tmp_path, fake_genome, capsys):
    with FakeMessagesAPI(lambda request, n: Reply(bad_edit())) as api:
        archive, _ = _run(tmp_path, fake_genome, api)
    results = genome_results(archive.genomes("r"), archive.evaluations("r"))
    assert len(results) == 6 and all(r.genome.operator in ("seed", "hyperparam") for r in results)
    calls = archive.llm_calls("r")
    assert calls and all(c.outcome == "apply_error" and c.child_id is None for c in calls)
    assert [c.round for c in calls] == [1, 2] * (len(calls) // 2)  # each proposal: one repair round
    main(["status", "--project", str(tmp_path)])
    assert f"0 children recorded, {len(calls)} failed (apply_error {len(calls)})" in capsys.readouterr().out


def test_the_cost_cap_is_reached_mid_run_and_the_run_goes_on(key, tmp_path, fake_genome):
    with FakeMessagesAPI(smart()) as api:
        # each call costs (1000 + 100) tokens at $10/MTok = $0.011; its worst case ~$0.03,
        # so about two calls fit the cap
        archive, timeline = _run(tmp_path, fake_genome, api, population=4, generations=2,
                                 operators={"llm": 0.8, "hyperparam": 0.2}, llm_price=(10.0, 10.0),
                                 max_llm_cost_usd=0.05, llm_max_tokens=100)
    results = genome_results(archive.genomes("r"), archive.evaluations("r"))
    assert len(results) == 8  # every generation complete
    calls = archive.llm_calls("r")
    assert 1 <= len(calls) <= 3 and archive.llm_spend_usd("r") <= 0.05
    said = [m for m in timeline.messages if "LLM budget reached" in m]
    assert len(said) == 1
    last_call = max(c.created_at for c in calls)
    assert any(r.genome.created_at > last_call and r.genome.operator == "hyperparam" for r in results)


def test_proposals_run_while_genomes_train(key, tmp_path, fake_genome):
    """Only a generation's first child waits for the model; the others' answers are ready
    when the slot frees (measured as the slot's idle gap before each evaluation)."""
    model_s, train_s, population = 0.6, 0.4, 3
    slow = set_constants(fake_genome, {"SLEEP_S": train_s})
    with FakeMessagesAPI(lambda request, n: Reply(lr_edit(parent_source(request), 0.5 + 0.05 * n),
                                                  delay_s=model_s)) as api:
        archive, timeline = _run(tmp_path, slow, api, population=population, operators={"llm": 1.0})
    results = genome_results(archive.genomes("r"), archive.evaluations("r"))
    assert [r.genome.operator for r in results].count("llm") == 2 * population - 1
    evals = sorted(archive.evaluations("r"), key=lambda e: e.started_at)
    cohort1 = {r.genome_id for r in results[population:]}
    gaps = [(b.started_at - a.finished_at).total_seconds() for a, b in zip(evals, evals[1:], strict=False)
            if b.genome_id in cohort1 and b.attempt == 1]
    assert len(gaps) == population
    # the first child waits for the model (its proposal starts once its parents are known);
    # the others were proposed while it trained; proposing in turn would idle population * model_s
    # (the first gap also holds the process start-up, ~0.3 s on a busy 2-core machine)
    assert gaps[0] <= model_s + 0.5 and all(g < 0.3 for g in gaps[1:]), gaps
    assert sum(gaps[1:]) < model_s  # in turn: at least (population - 1) * model_s


def test_a_slot_does_not_wait_for_a_slow_llm_when_another_operator_can_answer(key, tmp_path, fake_genome):
    """The model takes 4 s per answer, genomes train 0.3 s: the slot runs hyperparam children
    meanwhile, and the LLM's answers are used for later births when they arrive."""
    slow = set_constants(fake_genome, {"SLEEP_S": 0.3})
    with FakeMessagesAPI(lambda request, n: Reply(lr_edit(parent_source(request), 0.5 + 0.05 * n),
                                                  delay_s=4.0)) as api:
        archive, _ = _run(tmp_path, slow, api, population=4, generations=3,
                          operators={"llm": 0.9, "hyperparam": 0.1})
    results = genome_results(archive.genomes("r"), archive.evaluations("r"))
    assert len(results) == 12 and all(r.is_finished for r in results)
    operators = [r.genome.operator for r in results]
    assert operators.count("hyperparam") >= 4  # made at once while the model was thinking
    evals = sorted(archive.evaluations("r"), key=lambda e: e.started_at)
    gaps = [(b.started_at - a.finished_at).total_seconds() for a, b in zip(evals, evals[1:], strict=False)]
    assert max(gaps) < 1.0, gaps  # the slot never waited for a 4 s answer


def test_the_proposal_pool_runs_jobs_concurrently_and_hands_back_errors():
    pool: ProposalPool[int] = ProposalPool(3)
    gate = threading.Barrier(3, timeout=5)  # three jobs must be running at once to pass it

    def job(i):
        gate.wait()
        return i * i

    for i in range(3):
        pool.submit(i, lambda i=i: job(i))
    pool.submit(0, lambda: 99)  # already submitted: ignored
    assert [pool.take(i) for i in (2, 0, 1)] == [4, 0, 1] and len(pool) == 0

    def broken():
        raise ValueError("no child")

    pool.submit("x", broken)
    with pytest.raises(ValueError, match="no child"):
        pool.take("x")
    pool.submit("slow", lambda: time.sleep(0.2))
    pool.close()  # abandons what is pending, does not wait
    assert "slow" not in pool


def test_closing_the_proposal_pool_waits_a_little_for_running_jobs():
    """A proposal thread still inside libcst when the interpreter ends can abort the
    process: close() lets running jobs end, up to its wait."""
    pool: ProposalPool[None] = ProposalPool(2)
    started = threading.Event()
    ended = threading.Event()

    def job(seconds):
        started.set()
        time.sleep(seconds)
        ended.set()

    pool.submit("short", lambda: job(0.3))
    assert started.wait(5)
    pool.close(wait_s=5)
    assert ended.is_set()

    pool = ProposalPool(1)
    started.clear()
    pool.submit("long", lambda: job(30))  # an LLM call in flight is not waited for
    assert started.wait(5)
    began = time.monotonic()
    pool.close(wait_s=0.2)
    assert time.monotonic() - began < 2


def test_operators_flag_and_defaults(monkeypatch):
    assert _parse_operators("llm=0.5, hyperparam=0.5") == {"llm": 0.5, "hyperparam": 0.5}
    with pytest.raises(ValueError, match="unknown operator 'gpt'"):
        _parse_operators("gpt=1")
    with pytest.raises(ValueError, match="positive weight"):
        _parse_operators("llm=0")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert "llm" not in _parse_operators(None)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    mix = _parse_operators(None)
    assert mix["llm"] == 0.5 and sum(mix.values()) == pytest.approx(1.0)


def test_start_without_a_key_runs_without_the_llm_and_says_so(monkeypatch, tmp_path, fake_genome, capsys):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    shutil.copy(PROGRAM_MD, tmp_path / "program.md")
    from evo.cli import _llm_ready

    config = RunConfig(run="r", profile="smoke", operators={"llm": 0.5, "hyperparam": 0.5})
    ready = _llm_ready(config, Paths.for_project(tmp_path))
    assert ready.operators == {"hyperparam": 0.5}
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no ANTHROPIC_API_KEY set: running without the LLM operator" in out
    with pytest.raises(ValueError, match="only operator"):
        _llm_ready(RunConfig(run="r", profile="smoke", operators={"llm": 1.0}), Paths.for_project(tmp_path))


def test_an_unknown_model_needs_a_price_and_the_llm_needs_program_md(monkeypatch, tmp_path):
    from evo.cli import _llm_ready

    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    paths = Paths.for_project(tmp_path)
    config = RunConfig(run="r", profile="smoke", operators={"llm": 1.0}, llm_model="claude-imaginary-9")
    with pytest.raises(UnknownModelPriceError, match="--llm-price"):
        _llm_ready(config, paths)
    priced = RunConfig(run="r", profile="smoke", operators={"llm": 1.0}, llm_model="claude-imaginary-9",
                       llm_price=(1.0, 5.0))
    with pytest.raises(HarnessError, match="program.md"):
        _llm_ready(priced, paths)
    shutil.copy(PROGRAM_MD, tmp_path / "program.md")
    assert _llm_ready(priced, paths) == priced
