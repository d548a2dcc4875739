"""Claude proposes one named change to the parent under program.md; applied strictly.

One proposal is one call, plus at most one repair round: when the answer is malformed,
an edit does not apply, the child does not compile, or it repeats an evaluated genome,
the precise error goes back to the model once. Every call, failed or not, is recorded
(``llm_calls`` in the archive) with its tokens, cost and outcome; a refusal, a cut-off
or empty answer, a malformed HTTP answer (``bad_response``) or an API failure that
outlasted the retries is a failed attempt, never an exception.

Time is bounded: one HTTP attempt takes at most ``timeout_s``, and one proposal (its
call, the retries, the repair round) at most ``wait_s`` (twice ``timeout_s`` unless set),
so a child never waits longer than that for the LLM. A child asks once
(``max_tries_per_child``); the scheduler then uses another operator, or in an LLM-only
run tries again later with backoff (:mod:`evo.scheduler`).

Three things end the operator's part in a run, seen in :attr:`LLMMutation.stopped`: the
run's budget (``max_llm_cost_usd``) cannot pay for another call, the API refused the key
(401, 403), or it does not know the model (404: a wrong ``--llm-model``). It then skips
without calling; the scheduler says what that means for the run. The parts live in :mod:`evo.llm`.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from evo import genome as genome_files
from evo.config import DEFAULT_LLM_MODEL, RunConfig
from evo.llm.budget import Budget
from evo.llm.client import API_KEY_ENV, Completion, LLMCallError, MessagesClient, api_key_from_env
from evo.llm.edits import AnswerError, EditError, apply_edits, parse_answer
from evo.llm.prices import price_for
from evo.llm.prompt import Request, build_request, repair_request
from evo.operators.base import Context, OperatorResult, Parent

WAIT_TIMEOUTS = 2.0  # a proposal's time limit, in HTTP timeouts: the call, its retries and the repair round


class CallLog(Protocol):
    """Where calls are recorded (:class:`evo.archive.Archive` is one)."""

    def record_llm_call(self, run: str, parent_id: str, model: str, **fields) -> object: ...

    def llm_spend_usd(self, run: str) -> float: ...


class MemoryCallLog:
    """A call log in memory, for an operator used outside a run."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self._lock = threading.Lock()

    def record_llm_call(self, run: str, parent_id: str, model: str, **fields) -> dict:
        with self._lock:
            self.calls.append({"run": run, "parent_id": parent_id, "model": model, **fields})
            return self.calls[-1]

    def llm_spend_usd(self, run: str) -> float:
        with self._lock:
            return sum(c["cost_usd"] for c in self.calls if c["run"] == run)


@dataclass(frozen=True)
class LLMSettings:
    """The operator's settings (from the run's :class:`~evo.config.RunConfig`).

    Attributes:
        model: the Claude model id.
        base_url: the Messages API's address (``None``: ``ANTHROPIC_BASE_URL`` or the public API).
        price: ``(input, output)`` USD per million tokens; required for a model not in
            :data:`evo.llm.prices.PRICES`.
        max_cost_usd: the run's spending cap (``None``: no cap).
        rewrite: ask for the whole file instead of SEARCH/REPLACE edits.
        timeout_s: limit of one HTTP attempt, seconds.
        max_retries: retries of timeouts, 408, 409, 429, 5xx and 529 (with backoff), within the proposal's time.
        max_tokens: the longest answer.
        max_wait_s: limit of one proposal, seconds, retries and the repair round included
            (``None``: ``WAIT_TIMEOUTS`` x ``timeout_s``).

    Raises:
        ValueError: a timeout or wait that is not positive, negative retries.
    """

    model: str = DEFAULT_LLM_MODEL
    base_url: str | None = None
    price: tuple[float, float] | None = None
    max_cost_usd: float | None = None
    rewrite: bool = False
    timeout_s: float = 120.0
    max_retries: int = 3
    max_tokens: int = 16384
    max_wait_s: float | None = None

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or (self.max_wait_s is not None and self.max_wait_s <= 0):
            raise ValueError(f"the LLM timeout must be > 0 seconds, got {self.timeout_s}"
                             + (f" (and a proposal's wait {self.max_wait_s})" if self.max_wait_s is not None else ""))
        if self.max_retries < 0:
            raise ValueError(f"LLM retries must be >= 0, got {self.max_retries}")

    @property
    def wait_s(self) -> float:
        """The longest a proposal (so a child) waits for the LLM, seconds."""
        return self.max_wait_s if self.max_wait_s is not None else WAIT_TIMEOUTS * self.timeout_s

    @classmethod
    def from_config(cls, config: RunConfig) -> LLMSettings:
        price = tuple(config.llm_price) if config.llm_price is not None else None
        return cls(
            model=config.llm_model, base_url=config.llm_base_url, price=price, max_cost_usd=config.max_llm_cost_usd,
            rewrite=config.llm_rewrite, timeout_s=config.llm_timeout_s, max_retries=config.llm_max_retries,
            max_tokens=config.llm_max_tokens,
        )


@dataclass(frozen=True)
class Stopped:
    """Why an operator makes no more children in this run.

    Attributes:
        reason: what happened, one line (e.g. ``LLM budget reached: $0.0493 spent of the $0.05 cap``).
        fix: what the user can do to use the operator again.
        fatal: an error of the user's setup (a refused key, an unknown model) rather than a limit reached.
    """

    reason: str
    fix: str
    fatal: bool


class _Rejected(Exception):
    """An answer that gives no child; ``repairable`` ones go back to the model once."""

    def __init__(self, outcome: str, message: str, repairable: bool) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.repairable = repairable


class LLMMutation:
    """Ask Claude for one named change to the parent (SEARCH/REPLACE edits or a whole file).

    Args:
        settings: model, endpoint, price, budget, time limits and answer format.

    Raises:
        UnknownModelPriceError: the model has no known price and none was given.
    """

    name = "llm"
    n_parents = 1
    max_tries_per_child = 1  # a proposal costs money and up to wait_s: then the child comes from elsewhere

    def __init__(self, settings: LLMSettings | None = None) -> None:
        self.settings = settings or LLMSettings()
        self.price = price_for(self.settings.model, self.settings.price)
        self.budget = Budget(self.price, self.settings.max_cost_usd)
        self.stopped: Stopped | None = None
        self._log: CallLog = MemoryCallLog()
        self._run = ""
        self._client: MessagesClient | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: RunConfig) -> LLMMutation:
        return cls(LLMSettings.from_config(config))

    def attach(self, log: CallLog, run: str) -> None:
        """Record calls in ``log`` under ``run`` (its past spend counts against the cap)."""
        self._log, self._run = log, run
        self.budget = Budget(self.price, self.settings.max_cost_usd, log.llm_spend_usd(run))

    # ------------------------------------------------------------------ proposing

    def propose(self, parents: Sequence[Parent], rng: random.Random, context: Context) -> OperatorResult:
        (parent,) = parents
        if self.stopped is not None:
            return OperatorResult.skip(self.stopped.reason)
        if not context.program.strip():
            return OperatorResult.fail("program.md is missing or empty: the LLM has no instructions")
        client = self._get_client()
        if isinstance(client, OperatorResult):
            return client
        deadline = time.monotonic() + self.settings.wait_s
        request = build_request(context.program, parent, context, self.settings.rewrite)
        for round_ in (1, 2):
            answer = self._call(client, request, parent, round_, deadline)
            if isinstance(answer, OperatorResult):
                return answer
            try:
                code, description = self._child(answer, parent, context)
            except _Rejected as rejected:
                self._record(parent, round_, answer, rejected.outcome, error=str(rejected))
                if not rejected.repairable or round_ == 2:
                    suffix = " (after the repair round)" if round_ == 2 else ""
                    return OperatorResult.fail(f"{rejected.outcome}{suffix}: {_first_line(str(rejected))}")
                request = repair_request(request, answer.text, str(rejected))
                continue
            self._record(parent, round_, answer, "ok", child_sha256=genome_files.source_sha256(code))
            return OperatorResult.ok(code, description)
        raise AssertionError("unreachable")  # pragma: no cover

    def _get_client(self) -> MessagesClient | OperatorResult:
        with self._lock:
            if self._client is None:
                if not api_key_from_env():
                    return OperatorResult.skip(f"no {API_KEY_ENV}: the LLM operator is off")
                s = self.settings
                self._client = MessagesClient(s.model, base_url=s.base_url, timeout_s=s.timeout_s,
                                              max_retries=s.max_retries, max_tokens=s.max_tokens)
            return self._client

    def _call(self, client: MessagesClient, request: Request, parent: Parent, round_: int,
              deadline: float) -> Completion | OperatorResult:
        """The answer, or why there is none (the failed call recorded, the stop noted)."""
        if not client.can_start(deadline):
            return OperatorResult.fail(f"timeout: no time left for round {round_} of this proposal "
                                       f"(a proposal takes at most {self.settings.wait_s:g} s)")
        worst_usd = self.budget.worst_case_usd(request.size_chars, self.settings.max_tokens)
        reservation = self.budget.reserve(worst_usd, wait_s=max(0.0, deadline - time.monotonic()))
        if reservation is None:
            if self.budget.exhausted(worst_usd):
                self._stop(Stopped(
                    f"LLM budget reached: ${self.budget.spent_usd:.4f} spent of the ${self.settings.max_cost_usd:.2f} cap",
                    f"raise the cap: evo resume {self._run or 'RUN'} --max-llm-cost USD", fatal=False,
                ))
                return OperatorResult.skip(f"the LLM budget of ${self.settings.max_cost_usd:.2f} is reached")
            return OperatorResult.skip("the LLM budget is held by calls in flight until this proposal's time ran out")
        cost_usd = 0.0
        try:
            answer = client.complete(request, deadline)
            cost_usd = self.price.cost_usd(answer.input_tokens, answer.output_tokens)
        except LLMCallError as exc:
            cost_usd = self.price.cost_usd(exc.input_tokens, exc.output_tokens)
            self._log.record_llm_call(
                self._run, parent.genome_id, self.settings.model, round=round_, input_tokens=exc.input_tokens,
                output_tokens=exc.output_tokens, cost_usd=cost_usd, latency_s=exc.latency_s, outcome=exc.kind,
                error=str(exc),
            )
            if exc.kind == "auth":
                where = f" at {self.settings.base_url}" if self.settings.base_url else ""
                self._stop(Stopped(
                    f"the Messages API{where} refused the API key ({exc})",
                    f"set a valid {API_KEY_ENV} (and check --llm-base-url), then evo resume {self._run or 'RUN'}",
                    fatal=True,
                ))
                return OperatorResult.skip(f"auth: {exc}")
            if exc.kind == "not_found":  # a wrong model name (or address): no retry can help
                where = f" at {self.settings.base_url}" if self.settings.base_url else ""
                self._stop(Stopped(
                    f"the Messages API{where} does not know the model {self.settings.model!r} ({exc})",
                    f"evo resume --run {self._run or 'RUN'} --llm-model MODEL, with a model the API serves (and "
                    "check --llm-base-url)",
                    fatal=True,
                ))
                return OperatorResult.skip(f"not_found: {exc}")
            return OperatorResult.fail(f"{exc.kind}: {exc}")
        finally:
            self.budget.settle(reservation, cost_usd)
        return answer

    def _stop(self, stopped: Stopped) -> None:
        with self._lock:
            if self.stopped is None:
                self.stopped = stopped

    def _child(self, answer: Completion, parent: Parent, context: Context) -> tuple[str, str]:
        """The child's code and description, or :class:`_Rejected` saying why not."""
        if answer.stop_reason == "refusal":
            raise _Rejected("refusal", "the model declined to answer", repairable=False)
        if answer.stop_reason == "max_tokens":
            raise _Rejected("truncated", f"the answer was cut off at {self.settings.max_tokens} tokens", repairable=False)
        if not answer.text.strip():  # nothing to repair, and the API refuses an empty assistant turn
            raise _Rejected("empty_answer", f"the answer has no text (stop_reason {answer.stop_reason})", repairable=False)
        try:
            parsed = parse_answer(answer.text, rewrite=self.settings.rewrite)
            code = parsed.code if parsed.code is not None else apply_edits(parent.code, parsed.edits)
        except AnswerError as exc:
            raise _Rejected("bad_answer", str(exc), repairable=True) from exc
        except EditError as exc:
            raise _Rejected("apply_error", str(exc), repairable=True) from exc
        try:
            genome_files.validate(code)
        except genome_files.InvalidGenomeError as exc:
            raise _Rejected("invalid", f"the child is not valid Python: {exc}", repairable=True) from exc
        norm = genome_files.normalized_sha256(code)
        same = next((r for r in context.results if r.genome.normalized_sha256 == norm), None)
        if same is not None:
            raise _Rejected(
                "duplicate",
                f"the child is the same program (comments and formatting aside) as genome {same.genome_id} "
                f"({same.genome.description}), already in the run; propose a different change",
                repairable=True,
            )
        return code, parsed.description

    def _record(self, parent: Parent, round_: int, answer: Completion, outcome: str, *,
                error: str | None = None, child_sha256: str | None = None) -> None:
        self._log.record_llm_call(
            self._run, parent.genome_id, self.settings.model, round=round_, input_tokens=answer.input_tokens,
            output_tokens=answer.output_tokens, cost_usd=self.price.cost_usd(answer.input_tokens, answer.output_tokens),
            latency_s=answer.latency_s, outcome=outcome, error=error, child_sha256=child_sha256,
        )


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else text
