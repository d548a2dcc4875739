"""Token prices of Claude models, and the cost of a call in USD.

An unknown model is an error unless a price is given (``--llm-price IN,OUT``): a call is
never counted as free. Prices are USD per million tokens, base rates (no batch discount;
evo does not use prompt caching, and any cache tokens the API reports are charged at the
input rate, never less), from the model pages of platform.claude.com.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class UnknownModelPriceError(ValueError):
    """The model has no price in :data:`PRICES` and none was given."""


@dataclass(frozen=True)
class Price:
    """USD per million input tokens and per million output tokens."""

    input_usd_per_mtok: float
    output_usd_per_mtok: float

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_usd_per_mtok + output_tokens * self.output_usd_per_mtok) / 1e6


# model id -> (input, output) USD per million tokens.
PRICES: dict[str, Price] = {
    "claude-fable-5-1": Price(10.0, 50.0),
    "claude-opus-5-5": Price(4.0, 20.0),
    "claude-sonnet-5-5": Price(2.0, 10.0),
    "claude-opus-5": Price(5.0, 25.0),
    "claude-sonnet-5": Price(2.0, 10.0),
    "claude-opus-4-8": Price(5.0, 25.0),
    "claude-opus-4-6": Price(5.0, 25.0),
    "claude-sonnet-4-6": Price(3.0, 15.0),
    "claude-opus-4-5": Price(5.0, 25.0),
    "claude-opus-4-5-20251101": Price(5.0, 25.0),
    "claude-sonnet-4-5": Price(3.0, 15.0),
    "claude-sonnet-4-5-20250929": Price(3.0, 15.0),
    "claude-haiku-4-5": Price(1.0, 5.0),
    "claude-haiku-4-5-20251001": Price(1.0, 5.0),
}


def price_for(model: str, override: Sequence[float] | None = None) -> Price:
    """The price of ``model``, or ``override`` (input, output USD per million tokens).

    Raises:
        UnknownModelPriceError: the model is not in :data:`PRICES` and no override was given.
        ValueError: the override is not two non-negative numbers.
    """
    if override is not None:
        if len(override) != 2 or any(p < 0 for p in override):
            raise ValueError(f"an LLM price is two non-negative numbers (input, output USD per million tokens), got {override}")
        return Price(float(override[0]), float(override[1]))
    if model not in PRICES:
        raise UnknownModelPriceError(
            f"no price known for model {model!r}; give one with --llm-price IN,OUT (USD per million "
            f"input and output tokens), or use one of: {', '.join(sorted(PRICES))}"
        )
    return PRICES[model]


def parse_price(text: str) -> tuple[float, float]:
    """``"3,15"`` -> ``(3.0, 15.0)``.

    Raises:
        ValueError: not two comma-separated non-negative numbers.
    """
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 2 or any(v < 0 for v in values):
        raise ValueError(f"--llm-price wants IN,OUT in USD per million tokens, e.g. 3,15; got {text!r}")
    return values  # type: ignore[return-value]
