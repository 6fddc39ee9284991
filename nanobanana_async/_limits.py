"""Client-wide pacing: a pause all creates obey, request-rate limits, and a retry budget.

These are shared by every job of a client, so one 429 slows the whole client
down instead of each job hammering the service on its own schedule. Every
poll and create passes through them, so they read ``time.monotonic()``
(the clock of asyncio's loop, and so of anyio's deadlines) directly.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Awaitable, Callable

import anyio

from ._errors import ConfigurationError

__all__ = ["AdaptiveRate", "PauseGate", "RateLimiter", "RetryBudget"]


class PauseGate:
    """A shared "not before" time: after a 429 with Retry-After, every create waits it out.

    Waiters wake with a little jitter so a paused batch does not resume in one burst.
    """

    def __init__(
        self, *, spread: float = 0.1, sleep: Callable[[float], Awaitable[None]] = anyio.sleep
    ) -> None:
        self._until = 0.0
        self._spread = spread
        self._sleep = sleep

    @property
    def paused_until(self) -> float:
        """The monotonic clock time before which nothing passes (0 when open)."""
        return self._until

    def pause_for(self, seconds: float) -> None:
        """Close the gate for ``seconds`` from now (never shortening an earlier pause)."""
        self._until = max(self._until, time.monotonic() + seconds)

    async def wait(self) -> None:
        """Return once the gate is open."""
        # A timed wait, not an Event: the pause can be extended while callers sleep.
        while self._until and (remaining := self._until - time.monotonic()) > 0:
            await self._sleep(remaining * (1.0 + random.uniform(0.0, self._spread)))


class RateLimiter:
    """At most ``rate`` acquisitions per second, spaced evenly (virtual scheduling).

    Each caller is given the next free slot and sleeps until it, so thousands
    of waiters are released one by one instead of in bursts.
    """

    def __init__(self, rate: float) -> None:
        if not isinstance(rate, (int, float)) or not rate > 0 or not math.isfinite(rate):
            raise ConfigurationError(f"a request rate must be a positive number, got {rate!r}")
        self.rate = float(rate)
        self._next_slot = 0.0

    async def acquire(self) -> None:
        """Wait for this caller's slot."""
        now = time.monotonic()
        slot = max(now, self._next_slot)
        self._next_slot = slot + 1.0 / self.rate
        if slot > now:
            await anyio.sleep(slot - now)


class AdaptiveRate:
    """An AIMD pace for polls: unlimited until a 429 storm, then halved, then regrown.

    A storm is a window (1 s) in which at least three polls, and more than
    ``storm`` (5 %) of them, were refused with 429. The first storm caps the
    client at half the rate it was really polling at; each further stormy
    window halves the cap again, down to ``floor`` (at most one decrease per
    window). A calm window grows the cap by ``growth`` (10 %) per second, and
    the cap is lifted once demand no longer reaches it. A trickle of 429s is
    left to each task's own Retry-After.
    """

    def __init__(
        self,
        *,
        floor: float = 1.0,
        storm: float = 0.05,
        growth: float = 0.1,
        window: float = 1.0,
    ) -> None:
        self.floor = floor
        self.storm = storm
        self.growth = growth
        self.window = window
        self._limiter: RateLimiter | None = None
        self._window_start = -math.inf
        self._polls = 0
        self._limited = 0
        self._decreased = False
        self._demand = 0.0

    @property
    def rate(self) -> float | None:
        """The current cap in polls per second, or None while unlimited."""
        return self._limiter.rate if self._limiter is not None else None

    def observe_request(self) -> None:
        """Count one poll sent."""
        self._roll()
        self._polls += 1

    def on_rate_limited(self) -> None:
        """Count one poll refused with 429; halve the cap if this window is a storm."""
        self._roll()
        self._limited += 1
        stormy = self._limited >= 3 and self._limited > self.storm * self._polls
        if stormy and not self._decreased:
            self._decreased = True
            elapsed = max(time.monotonic() - self._window_start, 0.1)
            demand = max(self._demand, self._polls / elapsed)
            current = demand if self._limiter is None else min(self._limiter.rate, demand)
            halved = max(self.floor, current / 2.0)
            if self._limiter is None:
                self._limiter = RateLimiter(halved)
            else:
                self._limiter.rate = halved

    def on_success(self) -> None:
        """Count one poll answered (only rolls the window)."""
        self._roll()

    def _roll(self) -> None:
        now = time.monotonic()
        elapsed = now - self._window_start
        if elapsed < self.window:
            return
        if math.isfinite(elapsed):
            self._demand = self._polls / elapsed
            if not self._decreased and self._limiter is not None:
                grown = self._limiter.rate * (1.0 + self.growth * elapsed)
                if self._demand < 0.5 * grown:
                    self._limiter = None  # the cap no longer binds: lift it
                else:
                    self._limiter.rate = grown
        self._window_start, self._polls, self._limited = now, 0, 0
        self._decreased = False

    async def acquire(self) -> None:
        """Wait for a poll slot when capped; return at once otherwise."""
        if self._limiter is not None:
            await self._limiter.acquire()


class RetryBudget:
    """A client-wide token bucket that keeps retries to a fraction of traffic.

    Each retry costs ``cost`` tokens and each success earns ``refund`` back,
    up to ``capacity``: with the defaults (500, 5, 1) retries are sustained at
    about one per five successes, and a failing service is not hammered.
    """

    def __init__(self, *, capacity: float = 500.0, cost: float = 5.0, refund: float = 1.0) -> None:
        self.capacity = capacity
        self.cost = cost
        self.refund = refund
        self.tokens = capacity
        self.spent = 0

    def try_spend(self) -> bool:
        """Take the cost of one retry; False (and nothing taken) when the budget is empty."""
        if self.tokens < self.cost:
            return False
        self.tokens -= self.cost
        self.spent += 1
        return True

    def earn(self) -> None:
        """Credit one success."""
        self.tokens = min(self.capacity, self.tokens + self.refund)
