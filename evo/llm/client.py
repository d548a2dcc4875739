"""One Claude model behind the Messages API, through the official ``anthropic`` SDK.

A call is bounded in time. Each HTTP attempt is limited to ``timeout_s``; transient
failures (timeouts, connection errors, 408, 409, 429 rate limits, 5xx, 529 overloaded)
are retried up to ``max_retries`` times with exponential backoff and jitter (tenacity;
AWS's "Exponential Backoff And Jitter", Brooker 2015), honouring the API's
``retry-after-ms`` / ``retry-after`` headers as the SDK does; and a call given a
``deadline`` ends by it: an attempt's timeout is cut to the time left, and no attempt
starts with less than ``MIN_ATTEMPT_S`` (or a quarter of ``timeout_s``) left. The SDK's
own retries are off so that this bound holds.

The answer is checked here, not trusted to the SDK's lenient parsing: a body that is not
JSON (an HTML page from a proxy), JSON that is not a message (``{}``, no ``content`` or
``usage``) and a 200 carrying an error object are each an :class:`LLMCallError` of kind
``bad_response`` with a short description; a refused key (401, 403) is kind ``auth``, and
a 404 (an unknown model, or an address that is not the Messages API) kind ``not_found``.
What is left after the retries is an :class:`LLMCallError` too: a call never raises
anything else for what the server sends.

The key comes from ``ANTHROPIC_API_KEY``; the endpoint from ``base_url``, else the SDK's
``ANTHROPIC_BASE_URL``, else the public API.
"""

from __future__ import annotations

import email.utils
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import anthropic
import tenacity
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from evo.llm.prompt import Request

API_KEY_ENV = "ANTHROPIC_API_KEY"
RETRY_WAIT_S = (0.5, 8.0)  # backoff between retries of one call: first wait, longest wait (the SDK's values)
MAX_RETRY_AFTER_S = 60.0  # a longer retry-after header is not waited for (the SDK's rule)
MIN_ATTEMPT_S = 5.0  # an attempt starts only with this long (or timeout_s / 4, if less) before the deadline
ERROR_CHARS = 300  # the longest error message kept


def api_key_from_env() -> str | None:
    """The API key evo uses, or ``None`` when ``ANTHROPIC_API_KEY`` is unset or empty."""
    return os.environ.get(API_KEY_ENV) or None


@dataclass(frozen=True)
class Completion:
    """The model's answer to one call.

    Attributes:
        text: the text blocks of the answer, joined (``""`` when it has none).
        stop_reason: why generation stopped (``end_turn``, ``max_tokens``, ``refusal``, ...).
        input_tokens: billed input tokens (cache reads and writes included).
        output_tokens: billed output tokens.
        latency_s: wall seconds of the call, retries included.
    """

    text: str
    stop_reason: str | None
    input_tokens: int
    output_tokens: int
    latency_s: float


class LLMCallError(Exception):
    """A call that gave no usable answer.

    Attributes:
        kind: ``timeout``, ``rate_limited``, ``overloaded``, ``server_error``,
            ``connection_error``, ``auth`` (the key was refused: 401, 403), ``not_found``
            (404: no such model, or no Messages API at that address), ``bad_response``
            (a malformed answer) or ``api_error`` (another 4xx).
        latency_s: wall seconds spent, retries included.
        input_tokens, output_tokens: what the answer says was billed (0 when it does not say).
    """

    def __init__(self, kind: str, message: str, latency_s: float, input_tokens: int = 0, output_tokens: int = 0) -> None:
        super().__init__(_short(message))
        self.kind = kind
        self.latency_s = latency_s
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens


class BadResponseError(ValueError):
    """A 2xx answer that is not a message; carries the tokens it says were billed (else 0)."""

    def __init__(self, message: str, input_tokens: int = 0, output_tokens: int = 0) -> None:
        super().__init__(message)
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens


def _short(text: str) -> str:
    """One line of at most ``ERROR_CHARS`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= ERROR_CHARS else line[: ERROR_CHARS - 3] + "..."


def _kind(exc: anthropic.AnthropicError) -> str:
    if isinstance(exc, anthropic.APITimeoutError):  # a subclass of APIConnectionError: first
        return "timeout"
    if isinstance(exc, anthropic.APIConnectionError):
        return "connection_error"
    status = getattr(exc, "status_code", None)
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "not_found"
    if status == 429:
        return "rate_limited"
    if status == 529:
        return "overloaded"
    if isinstance(status, int) and status >= 500:
        return "server_error"
    return "api_error"


def _message(exc: anthropic.AnthropicError) -> str:
    if isinstance(exc, anthropic.APIStatusError):
        error = exc.body.get("error") if isinstance(exc.body, dict) else None
        if isinstance(error, dict) and error.get("message"):
            return f"HTTP {exc.status_code}: {error.get('type', 'error')}: {error['message']}"
        return f"HTTP {exc.status_code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def _transient(exc: BaseException) -> bool:
    """Whether a retry may succeed (the SDK's rule: timeouts, connections, 408, 409, 429, 5xx)."""
    if isinstance(exc, anthropic.APIConnectionError):
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and (status in (408, 409, 429) or status >= 500)


def _retry_after_s(exc: BaseException) -> float | None:
    """The wait the server asked for (``retry-after-ms``, ``retry-after`` seconds or date), if sane."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    wait: float | None = None
    try:
        if headers.get("retry-after-ms"):
            wait = float(headers["retry-after-ms"]) / 1000.0
        elif headers.get("retry-after"):
            text = headers["retry-after"]
            try:
                wait = float(text)
            except ValueError:
                when = email.utils.parsedate_to_datetime(text)
                wait = when.timestamp() - time.time()
    except (TypeError, ValueError, OverflowError):
        return None
    return wait if wait is not None and 0 < wait <= MAX_RETRY_AFTER_S else None


class _RetryWait(wait_base):
    """The server's ``retry-after`` when it gives one, else exponential backoff with jitter."""

    def __init__(self) -> None:
        first, longest = RETRY_WAIT_S
        self._backoff = tenacity.wait_exponential_jitter(multiplier=first, max=longest, jitter=first)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        asked = _retry_after_s(exc) if exc is not None else None
        return asked if asked is not None else self._backoff(retry_state)


class _StopAtDeadline(stop_base):
    """Stop when the next attempt (after its wait) could not have ``min_s`` seconds before the deadline."""

    def __init__(self, deadline: float | None, min_s: float) -> None:
        self.deadline = deadline
        self.min_s = min_s

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        if self.deadline is None:
            return False
        return time.monotonic() + retry_state.upcoming_sleep + self.min_s > self.deadline


def parse_message(body: str, content_type: str = "") -> tuple[str, str | None, int, int]:
    """``(text, stop_reason, input_tokens, output_tokens)`` of a Messages API answer body.

    Input tokens include cache reads and writes. Text is the text blocks joined (``""``
    when there are none: the caller decides what an empty answer means).

    Raises:
        BadResponseError: the body is not JSON, not a message, or an error object; it carries
            the tokens the body reports, if any.
    """
    try:
        data: Any = json.loads(body)
    except ValueError:
        kind = content_type.split(";")[0].strip() or "no content-type"
        raise BadResponseError(f"the answer is not JSON ({kind}): {body[:120]!r}") from None
    if not isinstance(data, dict):
        raise BadResponseError(f"the answer is JSON but not an object: {body[:120]!r}")
    if data.get("type") == "error" or ("error" in data and "content" not in data):
        error = data.get("error")
        detail = f"{error.get('type', '?')}: {error.get('message', '')}" if isinstance(error, dict) else repr(error)
        raise BadResponseError(f"an error object instead of a message ({detail})")
    usage = data.get("usage")
    tokens = [usage.get(k) if isinstance(usage, dict) else None for k in ("input_tokens", "output_tokens")]
    billed = tuple(t if isinstance(t, int) and t >= 0 else 0 for t in tokens)
    content = data.get("content")
    missing = [name for name, ok in (("content", isinstance(content, list)),
                                     ("usage", all(isinstance(t, int) for t in tokens))) if not ok]
    if missing:
        raise BadResponseError(f"the answer is not a message (no valid {' or '.join(missing)}): {body[:120]!r}", *billed)
    cache = sum(n for k in ("cache_creation_input_tokens", "cache_read_input_tokens")
                if isinstance(n := usage.get(k), int) and n > 0)
    text = "".join(
        block["text"] for block in content
        if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)
    )
    stop_reason = data.get("stop_reason")
    return text, stop_reason if isinstance(stop_reason, str) else None, billed[0] + cache, billed[1]


class MessagesClient:
    """Sends :class:`~evo.llm.prompt.Request` s to one model. Safe to share between threads.

    Args:
        model: the model id, e.g. ``claude-sonnet-5-5``.
        api_key: the key (default: ``ANTHROPIC_API_KEY``).
        base_url: the API's address (default: ``ANTHROPIC_BASE_URL``, else the public API).
        timeout_s: limit of one HTTP attempt, seconds.
        max_retries: retries of transient failures (timeouts, 408, 409, 429, 5xx, 529).
        max_tokens: the longest answer, in tokens.

    Raises:
        ValueError: no API key.
    """

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        max_tokens: int = 16384,
    ) -> None:
        key = api_key or api_key_from_env()
        if not key:
            raise ValueError(f"no API key: set {API_KEY_ENV}")
        self.model = model
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.max_retries = max(0, max_retries)
        self._min_attempt_s = min(MIN_ATTEMPT_S, timeout_s / 4)
        self._sdk = anthropic.Anthropic(api_key=key, base_url=base_url, timeout=timeout_s, max_retries=0)

    def complete(self, request: Request, deadline: float | None = None) -> Completion:
        """One answer, retrying transient failures (module docstring).

        Args:
            request: what to send.
            deadline: ``time.monotonic()`` by which the call ends, retries included
                (``None``: only ``timeout_s`` per attempt and ``max_retries`` bound it).

        Raises:
            LLMCallError: no usable answer (its ``kind`` says why); nothing else for
                whatever the server sends.
        """
        started = time.monotonic()
        if not self.can_start(deadline):
            raise LLMCallError("timeout", "no time left for a call before the deadline", 0.0)
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_transient),
            stop=tenacity.stop_after_attempt(self.max_retries + 1)
            | _StopAtDeadline(deadline, self._min_attempt_s),
            wait=_RetryWait(),
            reraise=True,
        )
        try:
            raw = retrying(self._attempt, request, deadline)
        except anthropic.AnthropicError as exc:
            raise LLMCallError(_kind(exc), _message(exc), time.monotonic() - started) from exc
        latency_s = time.monotonic() - started
        response = raw.http_response
        try:
            text, stop_reason, input_tokens, output_tokens = parse_message(
                response.text, response.headers.get("content-type", "")
            )
        except BadResponseError as exc:
            raise LLMCallError("bad_response", f"HTTP {response.status_code}: {exc}", latency_s,
                               exc.input_tokens, exc.output_tokens) from None
        return Completion(text, stop_reason, input_tokens, output_tokens, latency_s)

    def can_start(self, deadline: float | None) -> bool:
        """Whether a call started now has time for an attempt before ``deadline``
        (``MIN_ATTEMPT_S``, or a quarter of ``timeout_s`` if less)."""
        return deadline is None or deadline - time.monotonic() >= self._min_attempt_s

    def _attempt(self, request: Request, deadline: float | None) -> Any:
        timeout_s = self.timeout_s if deadline is None else max(0.1, min(self.timeout_s, deadline - time.monotonic()))
        return self._sdk.messages.with_raw_response.create(
            model=self.model,
            max_tokens=self.max_tokens,
            system=request.system,
            messages=list(request.messages),
            timeout=timeout_s,
        )

    def close(self) -> None:
        self._sdk.close()
