"""The run's spending cap on LLM calls, shared by the proposal threads.

A call starts only if what the run has spent, plus the worst-case cost of the calls in
flight, plus this call's worst case, stays within the cap. A call's worst case is its
prompt at one token per 2 characters (code and English run 3 to 4) plus ``max_tokens``
of output, so concurrent calls cannot overshoot the cap together. The spend starts from the
archive's ``llm_calls`` (a resumed run remembers what it spent).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from evo.llm.prices import Price

CHARS_PER_TOKEN_BOUND = 2.0


@dataclass(frozen=True)
class Reservation:
    """Money set aside for one call in flight."""

    usd: float


class Budget:
    """Spend so far and reservations in flight, against an optional cap (thread-safe).

    Args:
        price: the model's price.
        max_usd: the cap (``None``: no cap).
        spent_usd: spend already recorded in the archive.
    """

    def __init__(self, price: Price, max_usd: float | None, spent_usd: float = 0.0) -> None:
        self.price = price
        self.max_usd = max_usd
        self._spent = spent_usd
        self._reserved = 0.0
        self._lock = threading.Lock()

    @property
    def spent_usd(self) -> float:
        with self._lock:
            return self._spent

    def worst_case_usd(self, prompt_chars: int, max_tokens: int) -> float:
        """The most one call can cost: a prompt of ``prompt_chars`` and a full answer."""
        return self.price.cost_usd(int(prompt_chars / CHARS_PER_TOKEN_BOUND) + 1, max_tokens)

    def reserve(self, usd: float) -> Reservation | None:
        """Set ``usd`` aside for a call, or ``None`` when the cap does not allow it."""
        with self._lock:
            if self.max_usd is not None and self._spent + self._reserved + usd > self.max_usd:
                return None
            self._reserved += usd
            return Reservation(usd)

    def settle(self, reservation: Reservation, cost_usd: float) -> None:
        """Release a reservation and add the call's real cost."""
        with self._lock:
            self._reserved -= reservation.usd
            self._spent += cost_usd
