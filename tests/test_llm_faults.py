"""Faults of the LLM API never stop a run by accident, against a fake Messages API on
127.0.0.1: each kind of malformed answer is a recorded failed call and the run goes on to
its end; an LLM-only run waits out a burst of failures with backoff and completes; an
LLM-only run stops cleanly, saying why, at its cost cap or when the key is refused; and
the parts behind it (the budget's wait for calls in flight, the documented time limits)."""

from __future__ import annotations

import io
import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from conftest import add_harness
from fake_messages_api import HTML_PAGE, MALFORMED, FakeMessagesAPI, Reply, overloaded, smart, unknown_model
from rich.console import Console
from test_engine import Recorder

from evo import breeding
from evo.archive import Archive
from evo.cli import main
from evo.config import Paths, RunConfig
from evo.engine import Engine, EngineError
from evo.llm.budget import Budget
from evo.llm.prices import Price
from evo.progress import ConsoleReporter
from evo.results import genome_results

PROGRAM_MD = Path(__file__).resolve().parents[1] / "program.md"


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")


@pytest.fixture
def quick_backoff(monkeypatch):
    """An LLM-only run waits 0.05 s, then up to 0.2 s, between tries (not 15 s to 4 min)."""
    monkeypatch.setattr(breeding, "RETRY_WAIT_S", (0.05, 0.2))


def _engine(tmp_path, api, *, population=3, generations=2, operators=None, reporter=None,
            **llm) -> tuple[Engine, Archive, Recorder]:
    shutil.copy(PROGRAM_MD, tmp_path / "program.md")
    paths = Paths.for_project(add_harness(tmp_path))
    archive = Archive(paths.archive_path)
    config = RunConfig(
        run="r", profile="smoke", fitness="reported", population=population, generations=generations, seed=1,
        noise_replicates=1, best_replicates=1, operators=operators or {"llm": 0.5, "hyperparam": 0.5},
        llm_base_url=api.url, **llm,
    )
    archive.create_run(config, 1.0, tmp_path)
    messages = Recorder()
    return Engine(paths, archive, config, 1.0, "cpu", reporter or messages), archive, messages


def _results(archive):
    return genome_results(archive.genomes("r"), archive.evaluations("r"))


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_a_malformed_answer_is_a_recorded_failed_call_and_the_run_goes_to_its_end(key, tmp_path, fake_genome, kind,
                                                                                  capsys):
    reply, outcome, words = MALFORMED[kind]
    with FakeMessagesAPI(lambda request, n: reply) as api:
        engine, archive, messages = _engine(tmp_path, api)
        engine.run(fake_genome)  # raises nothing
    results = _results(archive)
    assert len(results) == 6 and all(r.is_finished for r in results)  # every generation born and evaluated
    said = [m for m in messages.messages if m.startswith("llm made no child")]  # live, not only in evo status
    assert len(said) == len(api.requests) and all(outcome in m for m in said), messages.messages
    assert all(r.genome.operator in ("seed", "hyperparam") for r in results)
    calls = archive.llm_calls("r")
    assert calls and len(calls) == len(api.requests)  # every call is a row
    for call in calls:
        assert (call.outcome, call.round, call.child_sha256) == (outcome, 1, None)  # not sent back for repair
        assert words in call.error and "\n" not in call.error and len(call.error) <= 300
    if kind == "empty content":  # the answer said what it cost: counted
        assert all(c.cost_usd > 0 for c in calls)
    assert main(["status", "--project", str(tmp_path)]) == 0
    assert f"{len(calls)} failed ({outcome} {len(calls)})" in capsys.readouterr().out


def test_an_llm_only_run_waits_out_a_burst_of_failures_and_completes(key, quick_backoff, tmp_path, fake_genome):
    """The first five calls fail (an HTML page, {}, overloaded past the retries, an error
    object, an empty answer); the run waits, says so, tries again and completes."""
    failures = {1: Reply(body=HTML_PAGE, content_type="text/html"), 2: Reply(body="{}"), 3: overloaded(),
                4: MALFORMED["error object"][0], 5: Reply(content=[])}
    good = smart()
    with FakeMessagesAPI(lambda request, n: failures.get(n) or good(request, n)) as api:
        engine, archive, messages = _engine(tmp_path, api, operators={"llm": 1.0}, llm_max_retries=0)
        engine.run(fake_genome)
    results = _results(archive)
    assert len(results) == 6 and all(r.is_finished for r in results)
    assert [r.genome.operator for r in results].count("llm") == 5
    calls = archive.llm_calls("r")
    assert sorted(c.outcome for c in calls if c.outcome != "ok") == sorted(
        ["bad_response", "bad_response", "overloaded", "bad_response", "empty_answer"])
    retries = [m for m in messages.messages if "trying again in" in m]
    assert retries and all("\n" not in m and m.startswith("no child yet for generation") for m in retries)
    assert not any("no new child" in m for m in messages.messages)


def test_the_servers_words_in_a_message_are_shown_as_text_not_markup(key, quick_backoff, tmp_path, fake_genome):
    """A failure whose text holds rich markup (``[/red]`` closes no tag: a MarkupError if
    read as markup) is printed as it is by the console reporter, and the run completes."""
    weird = Reply(body=json.dumps({"type": "error", "error": {"type": "proxy_error", "message": "upstream [/red] gone"}}))
    good = smart()
    out = io.StringIO()
    with FakeMessagesAPI(lambda request, n: weird if n == 1 else good(request, n)) as api:
        engine, archive, _ = _engine(tmp_path, api, operators={"llm": 1.0},
                                     reporter=ConsoleReporter(1.0, Console(file=out, width=300)))
        engine.run(fake_genome)
    assert len(_results(archive)) == 6
    assert "(proxy_error: upstream [/red] gone)" in out.getvalue() and "trying again in" in out.getvalue()


def test_an_llm_only_run_stops_cleanly_at_its_cost_cap(key, tmp_path, fake_genome):
    with FakeMessagesAPI(smart()) as api:
        # a call costs (1000 + 100) tokens at $10/MTok = $0.011; its worst case ~$0.03: about two fit
        engine, archive, messages = _engine(tmp_path, api, population=4, generations=3, operators={"llm": 1.0},
                                            llm_price=(10.0, 10.0), max_llm_cost_usd=0.05, llm_max_tokens=100)
        best = engine.run(fake_genome)  # a clean end, not an error
    results = _results(archive)
    assert best is not None and 2 <= len(results) < 12 and all(r.is_finished for r in results)
    assert archive.llm_spend_usd("r") <= 0.05
    said = [m for m in messages.messages if "LLM budget reached" in m]
    assert len(said) == 1
    assert "of the $0.05 cap" in said[0] and "only operator" in said[0] and "--max-llm-cost" in said[0]
    assert not any("continues with the other operators" in m for m in messages.messages)


def test_an_llm_only_run_stops_with_a_clear_error_when_the_key_is_refused(key, tmp_path, fake_genome):
    with FakeMessagesAPI(lambda request, n: Reply(status=401)) as api:
        engine, archive, _ = _engine(tmp_path, api, operators={"llm": 1.0})
        with pytest.raises(EngineError, match=r"refused the API key \(HTTP 401: authentication_error") as error:
            engine.run(fake_genome)
    assert "set a valid ANTHROPIC_API_KEY" in str(error.value) and "evo resume r" in str(error.value)
    results = _results(archive)
    assert len(results) == 1 and results[0].is_complete  # the seed's evaluation is kept
    calls = archive.llm_calls("r")
    assert calls and {c.outcome for c in calls} == {"auth"} and len(calls) == len(api.requests) <= 4  # no more asks


def test_a_refused_key_in_a_mixed_run_turns_the_llm_off_and_the_run_goes_on(key, tmp_path, fake_genome):
    with FakeMessagesAPI(lambda request, n: Reply(status=403)) as api:
        engine, archive, messages = _engine(tmp_path, api, population=3, generations=3)
        engine.run(fake_genome)
    results = _results(archive)
    assert len(results) == 9 and all(r.is_finished for r in results)
    assert len(api.requests) <= 4  # those in flight when the first refusal came, then none
    said = [m for m in messages.messages if "refused the API key" in m]
    assert len(said) == 1 and "the run continues with the other operators" in said[0]


def test_an_llm_only_run_with_an_unknown_model_stops_with_one_line_naming_it(key, quick_backoff, tmp_path,
                                                                             fake_genome):
    """A wrong model name (HTTP 404 not_found_error) is an error of the setup, like a refused
    key: the LLM operator stops at once (no retries, no asking again with backoff), and a
    run with no other operator stops with one line naming the model."""

    def responder(request, n):  # past 8 asks a refused key ends what would otherwise retry forever
        return unknown_model(request, n) if n <= 8 else Reply(status=401)

    with FakeMessagesAPI(responder) as api:
        engine, archive, messages = _engine(tmp_path, api, operators={"llm": 1.0}, llm_model="claude-nonexistent-9",
                                            llm_price=(1.0, 1.0))
        with pytest.raises(EngineError, match=r"does not know the model 'claude-nonexistent-9'") as error:
            engine.run(fake_genome)
    text = str(error.value)
    assert "\n" not in text and "not_found_error" in text and "--llm-model" in text and "only operator" in text
    assert not any("trying again in" in m for m in messages.messages)
    results = _results(archive)
    assert len(results) == 1 and results[0].is_complete  # the seed's evaluation is kept
    calls = archive.llm_calls("r")
    assert calls and {c.outcome for c in calls} == {"not_found"} and len(calls) == len(api.requests) <= 4
    assert all(r["model"] == "claude-nonexistent-9" for r in api.requests)


def test_an_unknown_model_in_a_mixed_run_turns_the_llm_off_and_the_run_goes_on(key, tmp_path, fake_genome):
    with FakeMessagesAPI(unknown_model) as api:
        engine, archive, messages = _engine(tmp_path, api, population=3, generations=2, llm_model="claude-nope",
                                            llm_price=(1.0, 1.0))
        engine.run(fake_genome)
    assert len(_results(archive)) == 6 and len(api.requests) <= 4
    said = [m for m in messages.messages if "does not know the model" in m]
    assert len(said) == 1 and "'claude-nope'" in said[0] and "continues with the other operators" in said[0]


def test_the_budget_waits_for_calls_in_flight_and_refuses_a_call_that_can_never_fit():
    budget = Budget(Price(1e6, 0.0), max_usd=1.0)  # $1 per input token
    first = budget.reserve(0.6)
    assert first is not None and budget.reserve(0.6) is None  # no wait asked: refused at once
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(budget.reserve(0.5, wait_s=5.0)))
    waiter.start()
    time.sleep(0.2)
    assert not got  # waiting for the call in flight
    budget.settle(first, 0.3)  # it cost less than its worst case: the waiting call fits
    waiter.join(5)
    assert got and got[0] is not None and budget.spent_usd == pytest.approx(0.3)
    assert budget.exhausted(0.8) and not budget.exhausted(0.7)
    started = time.monotonic()
    assert budget.reserve(0.8, wait_s=5.0) is None and time.monotonic() - started < 1.0  # never fits: no wait


def test_the_time_limits_are_documented_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["start", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--llm-timeout S limit of one LLM request, seconds (default 120" in help_text
    assert "A child waits at most 2 x S for the LLM in all" in help_text
    assert RunConfig(run="r", profile="smoke").llm_timeout_s == 120.0
    with pytest.raises(ValueError, match="--llm-timeout must be > 0"):
        RunConfig(run="r", profile="smoke", llm_timeout_s=0)


def test_a_run_stopped_by_an_unknown_model_resumes_with_another_model(key, quick_backoff, tmp_path, fake_genome,
                                                                     capsys):
    """The stop line names the way on (``evo resume --run R --llm-model MODEL``), and it works:
    the resumed run asks the API with the new model and goes on to its end."""
    shutil.copy(PROGRAM_MD, tmp_path / "program.md")
    project = add_harness(tmp_path)
    (project / "seed.py").write_text(fake_genome)

    def responder(request, n):
        return unknown_model(request, n) if request["model"] == "claude-nonexistent-9" else smart()(request, n)

    with FakeMessagesAPI(responder) as api:
        common = ["--project", str(project), "--llm-base-url", api.url]
        rc = main(["start", *common, "--run", "r", "--profile", "smoke", "--fitness", "reported", "--sandbox", "none",
                   "--seed-genome", str(project / "seed.py"), "--population", "2", "--generations", "2",
                   "--noise-replicates", "1",
                   "--operators", "llm=1", "--llm-model", "claude-nonexistent-9", "--llm-price", "1,1"])
        said = capsys.readouterr()
        out = said.out + said.err
        assert rc != 0 and "evo resume --run r --llm-model MODEL" in " ".join(out.split()), out
        assert main(["resume", *common, "--run", "r", "--llm-model", "claude-imaginary-8", "--llm-price", "1,2"]) == 0
    archive = Archive(project / "archive" / "evo.duckdb", read_only=True)
    results = genome_results(archive.genomes("r"), archive.evaluations("r"))
    assert len(results) == 4 and all(r.is_finished for r in results)
    models = [c.model for c in archive.llm_calls("r")]
    assert models[0] == "claude-nonexistent-9" and models[-1] == "claude-imaginary-8"
    assert {r["model"] for r in api.requests} == {"claude-nonexistent-9", "claude-imaginary-8"}
    stored = RunConfig.from_json(archive.get_run("r").config_json)  # a later resume goes on with the new model
    assert (stored.llm_model, tuple(stored.llm_price), stored.llm_base_url) == ("claude-imaginary-8", (1.0, 2.0), api.url)
