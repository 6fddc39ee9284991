"""Client-wide pacing: a pause all creates obey, request-rate limits, and a retry budget.

These are shared by every job of a client, so one 429 slows the whole client
down instead of each job hammering the service on its own schedule.
"""

from __future__ import annotations

import math
import random
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
        """The anyio clock time before which nothing passes (0 when open)."""
        return self._until

    def pause_for(self, seconds: float) -> None:
        """Close the gate for ``seconds`` from now (never shortening an earlier pause)."""
        self._until = max(self._until, anyio.current_time() + seconds)

    async def wait(self) -> None:
        """Return once the gate is open."""
        # A timed wait, not an Event: the pause can be extended while callers sleep.
        while (remaining := self._until - anyio.current_time()) > 0:
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
        now = anyio.current_time()
        slot = max(now, self._next_slot)
        self._next_slot = slot + 1.0 / self.rate
        if slot > now:
            await anyio.sleep(slot - now)


class AdaptiveRate:
    """An AIMD pace for polls: unlimited until a 429, halved on each 429, regrown on success.

    ``observe_request`` feeds a one-second window of the current poll rate, so
    the first 429 halves what the client was really doing. A burst of 429s
    answering polls sent at the same pace halves it once, not once per 429:
    decreases are at least ``cooldown`` seconds apart.
    """

    def __init__(self, *, floor: float = 1.0, step: float = 1.0, cooldown: float = 1.0) -> None:
        self.floor = floor
        self.step = step
        self.cooldown = cooldown
        self._last_decrease = -math.inf
        self._limiter: RateLimiter | None = None
        self._window_start = 0.0
        self._window_count = 0
        self._recent_rate = 0.0

    @property
    def rate(self) -> float | None:
        """The current cap in polls per second, or None while unlimited."""
        return self._limiter.rate if self._limiter is not None else None

    def observe_request(self) -> None:
        """Count one poll into the rate window."""
        now = anyio.current_time()
        if now - self._window_start >= 1.0:
            elapsed = max(now - self._window_start, 1.0)
            self._recent_rate = self._window_count / elapsed
            self._window_start, self._window_count = now, 0
        self._window_count += 1

    def on_rate_limited(self) -> None:
        """Halve the pace (multiplicative decrease), at most once per cooldown."""
        now = anyio.current_time()
        if now - self._last_decrease < self.cooldown:
            return
        self._last_decrease = now
        current = self.rate if self.rate is not None else max(self._recent_rate, self._window_count)
        new_rate = max(self.floor, current / 2.0)
        if self._limiter is None:
            self._limiter = RateLimiter(new_rate)
        else:
            self._limiter.rate = new_rate

    def on_success(self) -> None:
        """Grow the pace back (additive increase); lift the cap once it is far above demand."""
        if self._limiter is None:
            return
        self._limiter.rate += self.step / max(self._limiter.rate, 1.0)
        if self._limiter.rate > 4 * max(self._recent_rate, self.floor) + 100:
            self._limiter = None

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
