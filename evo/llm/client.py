"""One Claude model behind the Messages API, through the official ``anthropic`` SDK.

Transient failures are retried by the SDK (``max_retries``) with exponential backoff
and jitter, honouring ``retry-after`` headers: request timeouts, connection errors, 429
rate limits, 529 overloaded and other 5xx. What is left after the retries becomes an
:class:`LLMCallError` with a short ``kind``, recorded with the attempt. A call takes at
most about ``(max_retries + 1) * timeout_s`` plus the backoff pauses.

The key comes from ``ANTHROPIC_API_KEY``; the endpoint from ``base_url``, else the SDK's
``ANTHROPIC_BASE_URL``, else the public API.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import anthropic

from evo.llm.prompt import Request

API_KEY_ENV = "ANTHROPIC_API_KEY"


def api_key_from_env() -> str | None:
    """The API key evo uses, or ``None`` when ``ANTHROPIC_API_KEY`` is unset or empty."""
    return os.environ.get(API_KEY_ENV) or None


@dataclass(frozen=True)
class Completion:
    """The model's answer to one call.

    Attributes:
        text: the text blocks of the answer, joined.
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
    """A call that failed after the SDK's retries.

    Attributes:
        kind: ``timeout``, ``rate_limited``, ``overloaded``, ``server_error``,
            ``connection_error`` or ``api_error``.
        latency_s: wall seconds spent, retries included.
    """

    def __init__(self, kind: str, message: str, latency_s: float) -> None:
        super().__init__(message)
        self.kind = kind
        self.latency_s = latency_s


def _kind(exc: anthropic.AnthropicError) -> str:
    # order matters: subclasses first
    if isinstance(exc, anthropic.APITimeoutError):
        return "timeout"
    if isinstance(exc, anthropic.APIConnectionError):
        return "connection_error"
    if isinstance(exc, anthropic.RateLimitError):
        return "rate_limited"
    if isinstance(exc, anthropic.OverloadedError):
        return "overloaded"
    if isinstance(exc, anthropic.InternalServerError):
        return "server_error"
    return "api_error"


def _message(exc: anthropic.AnthropicError) -> str:
    if isinstance(exc, anthropic.APIStatusError):
        return f"HTTP {exc.status_code}: {exc.message}"[:500]
    return f"{type(exc).__name__}: {exc}"[:500]


class MessagesClient:
    """Sends :class:`~evo.llm.prompt.Request` s to one model. Safe to share between threads.

    Args:
        model: the model id, e.g. ``claude-sonnet-5-5``.
        api_key: the key (default: ``ANTHROPIC_API_KEY``).
        base_url: the API's address (default: ``ANTHROPIC_BASE_URL``, else the public API).
        timeout_s: limit of one HTTP attempt, seconds.
        max_retries: retries of transient failures (timeouts, 429, 529, 5xx).
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
        timeout_s: float = 300.0,
        max_retries: int = 3,
        max_tokens: int = 16384,
    ) -> None:
        key = api_key or api_key_from_env()
        if not key:
            raise ValueError(f"no API key: set {API_KEY_ENV}")
        self.model = model
        self.max_tokens = max_tokens
        self._sdk = anthropic.Anthropic(api_key=key, base_url=base_url, timeout=timeout_s, max_retries=max_retries)

    def complete(self, request: Request) -> Completion:
        """One answer (after the SDK's retries).

        Raises:
            LLMCallError: the call failed for good (the error's ``kind`` says how).
        """
        started = time.monotonic()
        try:
            message = self._sdk.messages.create(
                model=self.model,
                max_tokens=self.max_tokens,
                system=request.system,
                messages=list(request.messages),
            )
        except anthropic.AnthropicError as exc:
            raise LLMCallError(_kind(exc), _message(exc), time.monotonic() - started) from exc
        usage = message.usage
        input_tokens = usage.input_tokens + (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)
        text = "".join(block.text for block in message.content if block.type == "text")
        return Completion(text, message.stop_reason, input_tokens, usage.output_tokens, time.monotonic() - started)

    def close(self) -> None:
        self._sdk.close()
