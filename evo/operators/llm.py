"""Claude proposes one named change to the parent under program.md; applied strictly.

One proposal is one call, plus at most one repair round: when the answer is malformed,
an edit does not apply, the child does not compile, or it repeats an evaluated genome,
the precise error goes back to the model once. Every call, failed or not, is recorded
(``llm_calls`` in the archive) with its tokens, cost and outcome; a refusal, a cut-off
answer or an API failure that outlasted the retries is a failed attempt. No call starts
once the run's budget (``max_llm_cost_usd``) is reached; the operator then skips and says
so once. The parts live in :mod:`evo.llm`.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from evo import genome as genome_files
from evo.config import DEFAULT_LLM_MODEL, RunConfig
from evo.llm.budget import Budget
from evo.llm.client import Completion, LLMCallError, MessagesClient, api_key_from_env
from evo.llm.edits import AnswerError, EditError, apply_edits, parse_answer
from evo.llm.prices import price_for
from evo.llm.prompt import Request, build_request, repair_request
from evo.operators.base import Context, OperatorResult, Parent


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
        timeout_s: limit of one HTTP attempt.
        max_retries: retries of timeouts, 429, 529 and 5xx (by the SDK, with backoff).
        max_tokens: the longest answer.
    """

    model: str = DEFAULT_LLM_MODEL
    base_url: str | None = None
    price: tuple[float, float] | None = None
    max_cost_usd: float | None = None
    rewrite: bool = False
    timeout_s: float = 300.0
    max_retries: int = 3
    max_tokens: int = 16384

    @classmethod
    def from_config(cls, config: RunConfig) -> LLMSettings:
        price = tuple(config.llm_price) if config.llm_price is not None else None
        return cls(config.llm_model, config.llm_base_url, price, config.max_llm_cost_usd, config.llm_rewrite,
                   config.llm_timeout_s, config.llm_max_retries, config.llm_max_tokens)


class _Rejected(Exception):
    """An answer that gives no child; ``repairable`` ones go back to the model once."""

    def __init__(self, outcome: str, message: str, repairable: bool) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.repairable = repairable


class LLMMutation:
    """Ask Claude for one named change to the parent (SEARCH/REPLACE edits or a whole file).

    Args:
        settings: model, endpoint, price, budget and answer format.

    Raises:
        UnknownModelPriceError: the model has no known price and none was given.
    """

    name = "llm"
    n_parents = 1
    max_tries_per_child = 2  # proposals cost money: a child slot asks twice at most, then uses other operators

    def __init__(self, settings: LLMSettings | None = None) -> None:
        self.settings = settings or LLMSettings()
        self.price = price_for(self.settings.model, self.settings.price)
        self.budget = Budget(self.price, self.settings.max_cost_usd)
        self._log: CallLog = MemoryCallLog()
        self._run = ""
        self._notify: Callable[[str], None] = lambda text: None
        self._client: MessagesClient | None = None
        self._lock = threading.Lock()
        self._said_budget = False

    @classmethod
    def from_config(cls, config: RunConfig) -> LLMMutation:
        return cls(LLMSettings.from_config(config))

    def attach(self, log: CallLog, run: str, notify: Callable[[str], None]) -> None:
        """Record calls in ``log`` under ``run`` (its past spend counts against the cap); say things with ``notify``."""
        self._log, self._run, self._notify = log, run, notify
        self.budget = Budget(self.price, self.settings.max_cost_usd, log.llm_spend_usd(run))

    # ------------------------------------------------------------------ proposing

    def propose(self, parents: Sequence[Parent], rng: random.Random, context: Context) -> OperatorResult:
        (parent,) = parents
        if not context.program.strip():
            return OperatorResult.fail("program.md is missing or empty: the LLM has no instructions")
        client = self._get_client()
        if isinstance(client, OperatorResult):
            return client
        request = build_request(context.program, parent, context, self.settings.rewrite)
        for round_ in (1, 2):
            answer = self._call(client, request, parent, round_)
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
                    return OperatorResult.skip("no ANTHROPIC_API_KEY: the LLM operator is off")
                s = self.settings
                self._client = MessagesClient(s.model, base_url=s.base_url, timeout_s=s.timeout_s,
                                              max_retries=s.max_retries, max_tokens=s.max_tokens)
            return self._client

    def _call(self, client: MessagesClient, request: Request, parent: Parent, round_: int) -> Completion | OperatorResult:
        reservation = self.budget.reserve(self.budget.worst_case_usd(request.size_chars, self.settings.max_tokens))
        if reservation is None:
            self._say_budget_reached()
            return OperatorResult.skip(f"the LLM budget of ${self.settings.max_cost_usd:.2f} is reached")
        try:
            answer = client.complete(request)
        except LLMCallError as exc:
            self.budget.settle(reservation, 0.0)
            self._log.record_llm_call(
                self._run, parent.genome_id, self.settings.model, round=round_, input_tokens=0, output_tokens=0,
                cost_usd=0.0, latency_s=exc.latency_s, outcome=exc.kind, error=str(exc),
            )
            return OperatorResult.fail(f"{exc.kind}: {exc}")
        self.budget.settle(reservation, self.price.cost_usd(answer.input_tokens, answer.output_tokens))
        return answer

    def _child(self, answer: Completion, parent: Parent, context: Context) -> tuple[str, str]:
        """The child's code and description, or :class:`_Rejected` saying why not."""
        if answer.stop_reason == "refusal":
            raise _Rejected("refusal", "the model declined to answer", repairable=False)
        if answer.stop_reason == "max_tokens":
            raise _Rejected("truncated", f"the answer was cut off at {self.settings.max_tokens} tokens", repairable=False)
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

    def _say_budget_reached(self) -> None:
        with self._lock:
            if self._said_budget:
                return
            self._said_budget = True
        self._notify(
            f"LLM budget reached: ${self.budget.spent_usd:.4f} spent of ${self.settings.max_cost_usd:.2f}; "
            "the run continues with the other operators"
        )


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else text
