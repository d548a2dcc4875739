"""The LLM operator against a fake Messages API on 127.0.0.1, through the real anthropic SDK."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from fake_messages_api import FakeMessagesAPI, Reply, bad_edit, lr_edit, overloaded, parent_source

from evo.archive import Archive
from evo.config import RunConfig
from evo.llm import client as client_module
from evo.llm.prompt import build_request
from evo.operators.base import Context, Parent, Status
from evo.operators.llm import LLMMutation, LLMSettings
from evo.records import EvalState, FailureKind, Outcome
from evo.results import genome_results

PROGRAM = (Path(__file__).resolve().parents[1] / "program.md").read_text(encoding="utf-8")


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")


@pytest.fixture
def world(tmp_path, fake_genome):
    """An archive with one run whose seed genome completed, and the matching context."""
    archive = Archive(tmp_path / "evo.duckdb")
    archive.create_run(RunConfig(run="r", profile="smoke"), 1.0, tmp_path)
    seed = archive.add_genome("r", 0, "seed", "seed genome", fake_genome)
    record = archive.start_evaluation("r", seed.genome_id, 42, "cpu", tmp_path / "g0000.log")
    archive.finish_evaluation(record.eval_id, Outcome(EvalState.COMPLETE, 1.0, 0, {"val_bpb": 1.7, "num_steps": 10.0},
                                                      None, None, "---\nval_bpb: 1.7"))
    results = tuple(genome_results(archive.genomes("r"), archive.evaluations("r")))
    context = Context(((fake_genome, 1.7),), results, "smoke", 1.0, PROGRAM)
    return archive, Parent(seed.genome_id, fake_genome, 1.7), context


def _operator(api, archive, **settings) -> LLMMutation:
    operator = LLMMutation(LLMSettings(base_url=api.url, **settings))
    operator.attach(archive, "r")
    return operator


def _propose(operator, world):
    _, parent, context = world
    return operator.propose([parent], random.Random(0), context)


def test_good_edits_make_a_child_and_the_call_is_recorded(key, world):
    archive, parent, _ = world
    with FakeMessagesAPI(lambda request, n: Reply(lr_edit(parent_source(request), 0.5), input_tokens=2000,
                                                  output_tokens=300)) as api:
        result = _propose(_operator(api, archive), world)
    assert result.status is Status.OK, result.reason
    assert result.description == "LR 0.04 -> 0.02"
    assert result.code == parent.code.replace("LR = 0.04  # learning rate", "LR = 0.02  # learning rate")
    request = api.requests[0]
    assert request["model"] == "claude-sonnet-5-5" and request["system"] == PROGRAM
    prompt = request["messages"][0]["content"]
    for part in ("## Best genomes so far", "## Recent failures", "## Already tried from this parent",
                 "## The parent genome g0000", "val_bpb 1.700000", "num_steps 10"):
        assert part in prompt
    (call,) = archive.llm_calls("r")
    assert (call.outcome, call.round, call.parent_id, call.input_tokens, call.output_tokens) == ("ok", 1, "g0000", 2000, 300)
    assert call.cost_usd == pytest.approx((2000 * 2 + 300 * 10) / 1e6)  # claude-sonnet-5-5: $2 / $10 per MTok
    assert call.child_sha256 is not None and call.child_id is None  # the engine has not recorded it (yet)
    assert archive.llm_spend_usd("r") == pytest.approx(call.cost_usd)


def test_an_edit_that_does_not_apply_takes_one_repair_round(key, world):
    archive, parent, _ = world
    answers = {1: bad_edit()}
    with FakeMessagesAPI(lambda request, n: Reply(answers.get(n) or lr_edit(parent_source(request), 2.0))) as api:
        result = _propose(_operator(api, archive), world)
    assert result.status is Status.OK and "LR = 0.08" in result.code
    repair = api.requests[1]["messages"]
    assert [m["role"] for m in repair] == ["user", "assistant", "user"]
    assert repair[1]["content"] == bad_edit()
    assert "edit 1: its SEARCH text does not occur in the parent" in repair[2]["content"]
    assert "LR = 0.04  # learning rate" in repair[2]["content"]  # the nearest lines of the parent
    assert [(c.round, c.outcome) for c in archive.llm_calls("r")] == [(1, "apply_error"), (2, "ok")]


def test_a_search_block_that_never_matches_never_makes_a_child(key, world):
    archive, _, _ = world
    with FakeMessagesAPI(lambda request, n: Reply(bad_edit())) as api:
        result = _propose(_operator(api, archive), world)
    assert result.status is Status.FAIL and result.code == ""
    assert result.reason.startswith("apply_error (after the repair round): edit 1:")
    assert len(api.requests) == 2  # one repair round, never more
    calls = archive.llm_calls("r")
    assert [(c.round, c.outcome, c.child_sha256) for c in calls] == [(1, "apply_error", None), (2, "apply_error", None)]
    assert "nearest lines" in calls[0].error


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        ("Sure! I think the learning rate is too high.", "bad_answer"),
        ("DESCRIPTION: break it\n<<<<<<< SEARCH\nLR = 0.04  # learning rate\n=======\nLR = = 0.02\n>>>>>>> REPLACE\n",
         "invalid"),
        ("DESCRIPTION: comment only\n<<<<<<< SEARCH\nLR = 0.04  # learning rate\n=======\nLR = 0.04  # the step size\n"
         ">>>>>>> REPLACE\n", "duplicate"),
    ],
)
def test_garbage_invalid_and_duplicate_answers_are_failed_attempts(key, world, answer, outcome):
    archive, _, _ = world
    with FakeMessagesAPI(lambda request, n: Reply(answer)) as api:
        result = _propose(_operator(api, archive), world)
    assert result.status is Status.FAIL and result.reason.startswith(outcome)
    assert [c.outcome for c in archive.llm_calls("r")] == [outcome, outcome]
    assert len(api.requests) == 2


def test_a_refusal_is_a_failed_attempt_without_repair(key, world):
    archive, _, _ = world
    with FakeMessagesAPI(lambda request, n: Reply("I can't help with that.", stop_reason="refusal")) as api:
        result = _propose(_operator(api, archive), world)
    assert result.status is Status.FAIL and result.reason.startswith("refusal")
    assert len(api.requests) == 1 and [c.outcome for c in archive.llm_calls("r")] == ["refusal"]


def test_overloaded_is_retried_then_succeeds(key, world):
    archive, _, _ = world
    replies = {1: overloaded(), 2: Reply(status=429, headers={"retry-after-ms": "20"})}
    with FakeMessagesAPI(lambda request, n: replies.get(n) or Reply(lr_edit(parent_source(request), 0.5))) as api:
        result = _propose(_operator(api, archive, max_retries=3), world)
    assert result.status is Status.OK
    assert len(api.requests) == 3  # 529, 429, then the answer: retried by the SDK within one attempt
    assert [c.outcome for c in archive.llm_calls("r")] == ["ok"]


def test_overloaded_beyond_the_retries_is_a_failed_attempt(key, world):
    archive, _, _ = world
    with FakeMessagesAPI(lambda request, n: overloaded()) as api:
        result = _propose(_operator(api, archive, max_retries=1), world)
    assert result.status is Status.FAIL and result.reason.startswith("overloaded")
    assert len(api.requests) == 2
    (call,) = archive.llm_calls("r")
    assert (call.outcome, call.cost_usd, call.input_tokens) == ("overloaded", 0.0, 0)
    assert "529" in call.error


def test_a_slow_answer_hits_the_timeout_and_retries_stop_at_the_proposals_time_limit(key, world, monkeypatch):
    """Attempts of 0.5 s against a 3 s answer: five retries are allowed, but the proposal's
    1.2 s limit leaves time for two attempts only."""
    monkeypatch.setattr(client_module, "RETRY_WAIT_S", (0.05, 0.1))
    archive, _, _ = world
    started = time.monotonic()
    with FakeMessagesAPI(lambda request, n: Reply(lr_edit(parent_source(request), 0.5), delay_s=3.0)) as api:
        result = _propose(_operator(api, archive, timeout_s=0.5, max_retries=5, max_wait_s=1.2), world)
        elapsed = time.monotonic() - started
    assert result.status is Status.FAIL and result.reason.startswith("timeout")
    assert len(api.requests) == 2 and elapsed < 1.2 + 0.3  # not the slow answer, not six attempts
    (call,) = archive.llm_calls("r")
    assert call.outcome == "timeout" and 1.0 <= call.latency_s <= 1.2 + 0.3


def test_the_repair_round_gets_only_the_time_left_of_the_proposal(key, world):
    """The first answer does not apply (after 0.3 s); the repair call is cut off when the
    proposal's 1 s is up, not after a full 0.9 s timeout of its own."""
    archive, _, _ = world
    replies = {1: Reply(bad_edit(), delay_s=0.3)}
    started = time.monotonic()
    with FakeMessagesAPI(lambda request, n: replies.get(n) or Reply(bad_edit(), delay_s=3.0)) as api:
        result = _propose(_operator(api, archive, timeout_s=0.9, max_retries=0, max_wait_s=1.0), world)
        elapsed = time.monotonic() - started
    assert result.status is Status.FAIL and result.reason.startswith("timeout")
    assert len(api.requests) == 2 and elapsed < 1.0 + 0.3
    assert [(c.round, c.outcome) for c in archive.llm_calls("r")] == [(1, "apply_error"), (2, "timeout")]
    assert archive.llm_calls("r")[1].latency_s < 0.9 - 0.1  # its timeout was cut to what was left


def test_the_budget_stops_calls_before_they_start_and_the_operator_stops(key, world):
    archive, parent, context = world
    with FakeMessagesAPI(lambda request, n: Reply(lr_edit(parent_source(request), 0.5 + 0.1 * n))) as api:
        operator = _operator(api, archive, price=(10.0, 10.0), max_tokens=100)
        # a call costs (1000 + 100 tokens) x $10/MTok = $0.011; a call starts only if the
        # spend plus its worst case (the prompt at 2 characters a token, 100 output tokens)
        # stays within the cap: this cap allows two calls
        worst = operator.budget.worst_case_usd(build_request(PROGRAM, parent, context).size_chars, 100)
        operator = _operator(api, archive, price=(10.0, 10.0), max_tokens=100, max_cost_usd=0.022 + worst - 0.001)
        results = [_propose(operator, world) for _ in range(5)]
    assert [r.status for r in results] == [Status.OK, Status.OK, Status.SKIP, Status.SKIP, Status.SKIP]
    assert len(api.requests) == 2 and operator.stopped is not None and not operator.stopped.fatal
    assert operator.stopped.reason.startswith("LLM budget reached: $0.0220 spent of the $")
    assert "evo resume r --max-llm-cost" in operator.stopped.fix
    assert archive.llm_spend_usd("r") == pytest.approx(0.022)


def test_the_spend_of_a_resumed_run_counts_against_its_cap(key, world):
    archive, _, _ = world
    archive.record_llm_call("r", "g0000", "claude-sonnet-5-5", round=1, input_tokens=0, output_tokens=0,
                            cost_usd=0.99, latency_s=1.0, outcome="ok")
    with FakeMessagesAPI(lambda request, n: Reply(lr_edit(parent_source(request), 0.5))) as api:
        result = _propose(_operator(api, archive, max_cost_usd=1.0), world)
    assert result.status is Status.SKIP and not api.requests


def test_without_a_key_the_operator_skips(monkeypatch, world):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    result = _propose(LLMMutation(), world)
    assert result.status is Status.SKIP and "ANTHROPIC_API_KEY" in result.reason


def test_the_prompt_shows_the_best_the_failures_and_what_was_tried_from_the_parent(world, fake_genome, tmp_path):
    archive, parent, _ = world
    tried = archive.add_genome("r", 1, "hyperparam", "WIDTH 256 -> 512", fake_genome.replace("2**8", "2**9"), ["g0000"])
    crashed = archive.add_genome("r", 1, "llm", "fused attention", fake_genome.replace("3  # layers", "4  # layers"),
                                 ["g0000"])
    for genome, outcome in [
        (tried, Outcome(EvalState.COMPLETE, 1.0, 0, {"val_bpb": 1.75}, None, None, "")),
        (crashed, Outcome(EvalState.FAIL, 1.0, 1, {}, FailureKind.CRASH, "RuntimeError: boom: shapes do not match",
                          "step 1\nTraceback (most recent call last):\nRuntimeError: boom: shapes do not match")),
    ]:
        record = archive.start_evaluation("r", genome.genome_id, 42, "cpu", tmp_path / f"{genome.genome_id}.log")
        archive.finish_evaluation(record.eval_id, outcome)
    results = tuple(genome_results(archive.genomes("r"), archive.evaluations("r")))
    request = build_request(PROGRAM, parent, Context((), results, "smoke", 1.0, PROGRAM))
    prompt = request.messages[0]["content"]
    assert request.system == PROGRAM
    assert "| g0000 | 1.700000 | seed | seed genome |" in prompt and "| g0001 | 1.750000 | hyperparam |" in prompt
    failures = prompt[prompt.index("## Recent failures"):prompt.index("## Already tried")]
    assert "g0002 (llm): fused attention" in failures and "FAIL (crash): RuntimeError: boom" in failures
    assert "Traceback (most recent call last):" in failures  # the tail of its log
    tried_part = prompt[prompt.index("## Already tried"):prompt.index("## The parent genome")]
    assert "- g0001 (hyperparam): WIDTH 256 -> 512 -> val_bpb 1.750000, +0.050000 vs parent" in tried_part
    assert "- g0002 (llm): fused attention -> FAIL (crash)" in tried_part
    assert prompt.index("## The parent genome g0000") < prompt.index(fake_genome.splitlines()[0])


def test_rewrite_mode_takes_the_whole_file(key, world):
    archive, parent, _ = world
    whole = parent.code.replace("WIDTH = 2**8", "WIDTH = 2**6")
    with FakeMessagesAPI(lambda request, n: Reply(f"DESCRIPTION: narrower\n```python\n{whole}```\n")) as api:
        result = _propose(_operator(api, archive, rewrite=True), world)
    assert result.status is Status.OK and result.code == whole and result.description == "narrower"
    assert "the complete new genome in one ```python fenced block" in api.requests[0]["messages"][0]["content"]
