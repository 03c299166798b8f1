"""A circuit breaker for the membership service: during an outage callers get the apology
at once instead of each waiting out the lookup's time limit.

Closed: every lookup goes to the service; ``failures`` failures in a row open it. Open:
lookups fail at once, without a request. After ``retry_seconds`` it is half-open: one
lookup (the trial) goes to the service while the others still fail at once; the trial's
success closes the breaker, its failure opens it for another ``retry_seconds``. The clock
is injectable, so tests control the timings.
"""
from __future__ import annotations

import logging
import time
from enum import IntEnum
from typing import Callable

log = logging.getLogger(__name__)


class BreakerState(IntEnum):
    """The value is the ``ivr_membership_breaker_state`` gauge's."""
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    def __init__(self, failures: int = 5, retry_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[BreakerState], None] | None = None) -> None:
        if failures < 1:
            raise ValueError("the breaker needs at least 1 failure to open")
        self.failures = failures
        self.retry_seconds = retry_seconds
        self.clock = clock
        self.on_change = on_change
        self.state = BreakerState.CLOSED
        self.opened = 0               # times it opened
        self._in_a_row = 0
        self._opened_at = 0.0
        self._trial = False           # a half-open trial lookup is in flight

    def allow(self) -> bool:
        """Whether a lookup may go to the service now; if True, report its end with
        ``succeeded``, ``failed`` or ``abandoned``."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if self.clock() - self._opened_at < self.retry_seconds:
                return False
            self._set(BreakerState.HALF_OPEN)
        if self._trial:
            return False
        self._trial = True
        return True

    def succeeded(self) -> None:
        self._in_a_row = 0
        self._trial = False
        if self.state is not BreakerState.CLOSED:
            log.warning("membership service answers again: breaker closed")
            self._set(BreakerState.CLOSED)

    def failed(self) -> None:
        self._trial = False
        self._in_a_row += 1
        if self.state is BreakerState.HALF_OPEN or (
                self.state is BreakerState.CLOSED and self._in_a_row >= self.failures):
            if self.state is BreakerState.CLOSED:
                log.error("membership service failed %d times in a row: breaker open, callers "
                          "get the apology at once; trying again every %.0f s",
                          self._in_a_row, self.retry_seconds)
            self._opened_at = self.clock()
            self.opened += 1
            self._set(BreakerState.OPEN)

    def abandoned(self) -> None:
        """The lookup ended without an answer either way (the caller hung up)."""
        self._trial = False

    def _set(self, state: BreakerState) -> None:
        self.state = state
        if self.on_change is not None:
            self.on_change(state)
