"""The run's spending cap on LLM calls, shared by the proposal threads.

A call starts only if what the run has spent, plus the worst-case cost of the calls in
flight, plus this call's worst case, stays within the cap. A call's worst case is its
prompt at one token per 2 characters (code and English run 3 to 4) plus ``max_tokens``
of output, so concurrent calls cannot overshoot the cap together. The spend starts from the
archive's ``llm_calls`` (a resumed run remembers what it spent).

A call the cap does not allow only because calls in flight hold money waits for them to
settle (their real cost is usually far below their worst case); a call the cap does not
allow even with nothing in flight never will (settling only adds spend): the budget is
then exhausted for it.
"""

from __future__ import annotations

import threading
import time
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
        self._settled = threading.Condition()

    @property
    def spent_usd(self) -> float:
        with self._settled:
            return self._spent

    def worst_case_usd(self, prompt_chars: int, max_tokens: int) -> float:
        """The most one call can cost: a prompt of ``prompt_chars`` and a full answer."""
        return self.price.cost_usd(int(prompt_chars / CHARS_PER_TOKEN_BOUND) + 1, max_tokens)

    def exhausted(self, usd: float) -> bool:
        """Whether a call of worst case ``usd`` will never fit the cap in this run."""
        with self._settled:
            return self.max_usd is not None and self._spent + usd > self.max_usd

    def reserve(self, usd: float, wait_s: float = 0.0) -> Reservation | None:
        """Set ``usd`` aside for a call, or ``None`` when the cap does not allow it.

        Args:
            usd: the call's worst case (:meth:`worst_case_usd`).
            wait_s: how long to wait, at most, for calls in flight to settle when only
                their reservations stand in the way.
        """
        deadline = time.monotonic() + wait_s
        with self._settled:
            while self.max_usd is not None and self._spent + self._reserved + usd > self.max_usd:
                left_s = deadline - time.monotonic()
                if self._spent + usd > self.max_usd or left_s <= 0:
                    return None
                self._settled.wait(left_s)
            self._reserved += usd
            return Reservation(usd)

    def settle(self, reservation: Reservation, cost_usd: float) -> None:
        """Release a reservation and add the call's real cost."""
        with self._settled:
            self._reserved -= reservation.usd
            self._spent += cost_usd
            self._settled.notify_all()
