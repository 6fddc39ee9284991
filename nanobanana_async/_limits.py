"""How many run at once, and how fast: every limit of a client, in one place.

``Limits`` holds them all: the job slots (``max_concurrency``), the download
slots, the images a batch may hold in memory, the pause every create obeys
after a 429, the optional request rate and the adaptive poll pace. They are
shared by every job of a client, so one 429 slows the whole client down
instead of each job hammering the service on its own schedule.

Every job passes several of them, so they are asyncio's semaphores (anyio's
limiters add a trip through the event loop to each acquire; anyio's cancel
scopes still cancel them) and they read ``time.monotonic()`` (the clock of
asyncio's loop, and so of anyio's deadlines) directly.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Final

import anyio
import attrs

from ._errors import ConfigurationError

__all__ = [
    "AdaptiveRate",
    "BatchPacing",
    "ImageHold",
    "Limits",
    "PauseGate",
    "RateLimiter",
    "RetryBudget",
    "positive_int",
]

DEFAULT_MAX_CONCURRENCY: Final = 32
DEFAULT_MAX_DOWNLOADS: Final = 16


def positive_int(name: str, value: object) -> int:
    """``value`` if it is a positive int; ConfigurationError naming ``name`` otherwise."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
    return value


class Limits:
    """Every limit of one client: what may run at once, and how fast requests go.

    - ``jobs``: ``max_concurrency`` job slots, client-wide. ``generate``
      holds one from its create until the task's final status;
      ``generate_many`` holds one per job until its image is saved or read
      into memory; ``submit`` and ``wait`` take none.
    - ``downloads``: ``max_downloads`` image downloads at once (every
      download goes through it; the download pool has no limit of its own).
    - ``held_images()``: for one batch that reads images into memory, at most
      ``max_downloads`` images read but not yet taken by the consumer.
    - ``read_ahead(ordered)``: how far a batch may pull its input ahead of
      the outcomes its consumer has taken.
    - ``create_pause``: after a 429, every create waits it out.
    - ``requests``: at most ``max_requests_per_second`` API calls (optional).
    - ``poll_pace``: polls slow down by themselves in a storm of 429s.
    """

    def __init__(
        self,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        max_downloads: int = DEFAULT_MAX_DOWNLOADS,
        max_requests_per_second: float | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.max_concurrency = positive_int("max_concurrency", max_concurrency)
        self.max_downloads = positive_int("max_concurrent_downloads", max_downloads)
        self.jobs = asyncio.Semaphore(self.max_concurrency)
        self.downloads = asyncio.Semaphore(self.max_downloads)
        self.create_pause = PauseGate(sleep=sleep)
        self._own_rate = max_requests_per_second
        self.requests = (
            RateLimiter(max_requests_per_second) if max_requests_per_second is not None else None
        )
        self.poll_pace = AdaptiveRate()

    def limit_requests(self, share: float | None) -> None:
        """Hold API calls to ``share`` per second too (a shared batch's part), or lift it (None).

        The client's own ``max_requests_per_second``, if lower, still wins.
        """
        rates = [rate for rate in (self._own_rate, share) if rate is not None]
        if not rates:
            self.requests = None
        elif self.requests is None:
            self.requests = RateLimiter(min(rates))
        else:
            self.requests.rate = min(rates)

    def pacing(self) -> BatchPacing:
        """What a journal shared by several workers adjusts while a batch works."""
        return BatchPacing(create_pause=self.create_pause, limit_requests=self.limit_requests)

    def read_ahead(self, *, ordered: bool) -> int:
        """Inputs a batch may pull beyond the outcomes its consumer has taken.

        In order, twice as many: a slow job at the head must not stall the rest.
        """
        return self.max_concurrency * (2 if ordered else 1)

    def held_images(self) -> ImageHold:
        """A bound on the images one batch holds in memory for its consumer."""
        return ImageHold(self.max_downloads)

    async def before_create(self) -> None:
        """Wait out a 429 pause and the request rate before a create is sent."""
        await self.create_pause.wait()
        if self.requests is not None:
            await self.requests.acquire()

    def poll_unhindered(self) -> bool:
        """Count a status query that may go at once; False when it must ``await before_poll()``.

        The usual case (no request rate set, no 429 storm) costs no trip through a coroutine.
        """
        pace = self.poll_pace
        if self.requests is not None or pace.rate is not None:
            return False
        pace.observe_request()
        return True

    async def before_poll(self) -> None:
        """Wait for the poll pace and the request rate before a status query is sent."""
        pace = self.poll_pace
        await pace.acquire()
        if self.requests is not None:
            await self.requests.acquire()
        pace.observe_request()


class ImageHold:
    """Images read into memory that the consumer has not taken yet, at most ``size``.

    A job takes a place before it reads an image (keeping it on success), and
    the batch gives it back when the outcome reaches the consumer, so a slow
    consumer slows downloads instead of filling memory.
    """

    __slots__ = ("_places",)

    def __init__(self, size: int) -> None:
        self._places = asyncio.Semaphore(size)

    async def take(self) -> None:
        """Wait for a place for one more image."""
        await self._places.acquire()

    def give_back(self) -> None:
        """One image has left (reached the consumer, or was never read)."""
        self._places.release()


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
    def until(self) -> float:
        """When the gate opens (``time.monotonic()`` seconds; in the past: it is open)."""
        return self._until

    def pause_for(self, seconds: float) -> float:
        """Close the gate for ``seconds`` from now (never shortening an earlier pause).

        Returns how much longer the gate is now closed than it was.
        """
        now = time.monotonic()
        before = max(self._until, now)
        self._until = max(self._until, now + seconds)
        return self._until - before

    async def wait(self) -> None:
        """Return once the gate is open."""
        # A timed wait, not an Event: the pause can be extended while callers sleep.
        while self._until and (remaining := self._until - time.monotonic()) > 0:
            await self._sleep(remaining * (1.0 + random.uniform(0.0, self._spread)))


@attrs.frozen
class BatchPacing:
    """The pace a batch's workers share: the 429 pause of creates, and the request rate.

    ``limit_requests(share)`` holds this client's API calls to ``share`` per
    second (None lifts it).
    """

    create_pause: PauseGate
    limit_requests: Callable[[float | None], None]


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

    def try_spend(self) -> bool:
        """Take the cost of one retry; False (and nothing taken) when the budget is empty."""
        if self.tokens < self.cost:
            return False
        self.tokens -= self.cost
        return True

    def earn(self) -> None:
        """Credit one success."""
        self.tokens = min(self.capacity, self.tokens + self.refund)
