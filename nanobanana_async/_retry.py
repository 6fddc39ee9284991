"""The one retry layer: which failures are retried, how long to wait, and Retry-After.

The policy in short: a paid create is retried only when it
provably never reached the service (connect-phase failures, 408) or was
refused with 429; anything after the request left raises
``SubmissionUncertainError`` and is never resent. Status queries and
downloads are free, so transient failures there are retried with
full-jitter backoff: attempt ``n`` waits a uniform time in
``[0, min(cap, base * 2**n)]``, so jobs that fail together do not come back
together. A client-wide budget caps retries; no sleep runs past the
caller's deadline.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Final, TypeVar

import anyio
import attrs

from ._errors import (
    APIError,
    DownloadError,
    DownloadTimeoutError,
    MalformedResponseError,
    NanoBananaError,
    NetworkError,
    RateLimitedError,
    ServerError,
    TaskNotFoundError,
)
from ._limits import Limits, RetryBudget
from ._logs import end_attempt, logger, retry_attempt
from ._observe import JobTrace, Observer

T = TypeVar("T")

#: Longest Retry-After the SDK will sleep for by itself; longer asks surface as RateLimitedError.
MAX_RETRY_AFTER: Final = 60.0


def parse_retry_after(
    headers: Mapping[str, str], *, now: float | None = None, cap: float = 1e9
) -> float | None:
    """Seconds the server asked us to wait, or None when it did not say (or said nonsense).

    Reads ``retry-after-ms`` first, then ``Retry-After`` as seconds, then as
    an HTTP date. The answer is finite and within ``[0, cap]``: a value above
    ``cap`` is returned as ``cap`` so callers can see it was too long.
    """
    seconds: float | None = None
    millis = _header(headers, "retry-after-ms")
    if millis is not None:
        seconds = _finite_number(millis)
        if seconds is not None:
            seconds /= 1000.0
    if seconds is None:
        raw = _header(headers, "retry-after")
        if raw is not None:
            seconds = _finite_number(raw)
            if seconds is None:
                seconds = _seconds_until_http_date(raw, time.time() if now is None else now)
    if seconds is None or seconds < 0:
        return None
    return min(seconds, cap)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.title())
    return value.strip() if isinstance(value, str) else None


def _finite_number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _seconds_until_http_date(text: str, now: float) -> float | None:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    try:
        return max(0.0, when.timestamp() - now)
    except (OverflowError, OSError, ValueError):
        return None


@attrs.frozen
class Backoff:
    """Full-jitter backoff: ``base`` seconds doubling up to ``cap``, never below ``floor``."""

    base: float = 0.5
    cap: float = 8.0
    floor: float = 0.1

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait before retry number ``attempt`` (0 for the first retry)."""
        ceiling = min(self.cap, self.base * 2.0 ** min(attempt, 60))
        draw = (rng or random).uniform(0.0, ceiling)
        return max(self.floor, draw)


@attrs.frozen
class RetryPolicy:
    """How the client retries, per kind of call.

    Creates: ``create_attempts`` tries for failures that provably never left
    the client, spaced by ``create_backoff``; 429s up to
    ``rate_limit_attempts`` tries within ``rate_limit_window`` seconds, each
    pausing every create of the client. Polls: at most ``poll_failures``
    failures in a row, spaced by ``poll_backoff``; a 404 within
    ``not_found_grace`` s of the create means "not visible yet". Downloads:
    ``download_attempts`` tries spaced by ``download_backoff``, all within
    ``download_timeout`` s. A Retry-After up to ``max_retry_after`` s is
    honoured (plus up to 10 % jitter); a longer one raises RateLimitedError.
    ``budget_*`` shape the client-wide retry budget. ``cancel_grace`` is how
    long a cancelled create that was already sent may still finish, so its
    billed task id is not lost. ``sleep`` is a test seam.
    """

    create_attempts: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    create_backoff: Backoff = Backoff(base=0.5, cap=8.0)
    rate_limit_attempts: int = attrs.field(default=6, validator=attrs.validators.ge(1))
    rate_limit_window: float = 120.0
    max_retry_after: float = MAX_RETRY_AFTER
    poll_failures: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    poll_backoff: Backoff = Backoff(base=1.0, cap=30.0)
    not_found_grace: float = attrs.field(default=10.0, validator=attrs.validators.ge(0))
    download_attempts: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    download_backoff: Backoff = Backoff(base=1.0, cap=20.0)
    download_timeout: float = attrs.field(default=600.0, validator=attrs.validators.gt(0))
    budget_capacity: float = 500.0
    budget_cost: float = 5.0
    budget_refund: float = 1.0
    cancel_grace: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))
    sleep: Callable[[float], Awaitable[None]] = attrs.field(default=anyio.sleep, repr=False)


class Retrier:
    """Runs calls under the RetryPolicy, paced by the client's ``Limits``."""

    def __init__(self, policy: RetryPolicy, limits: Limits, observer: Observer) -> None:
        self.policy = policy
        self.limits = limits
        self.observer = observer
        self.budget = RetryBudget(
            capacity=policy.budget_capacity, cost=policy.budget_cost, refund=policy.budget_refund
        )

    def _charge(self, error: NanoBananaError) -> None:
        if not self.budget.try_spend():
            logger.debug("retry budget exhausted; failing fast with %s", type(error).__name__)
            raise error

    def _retry_after(self, error: RateLimitedError, attempt: int, backoff: Backoff) -> float:
        """A 429's wait: Retry-After when sane, backoff when absent, raise when too long."""
        asked = error.retry_after
        if asked is None or asked <= 0:
            self._charge(error)
            return backoff.delay(attempt)
        if asked > self.policy.max_retry_after:
            raise error
        return asked * (1.0 + random.uniform(0.0, 0.1))

    def _backoff(
        self, error: NanoBananaError, failures: int, attempts: int, backoff: Backoff
    ) -> float:
        """The wait after the ``failures``-th failure in a row, charged to the budget.

        Past ``attempts`` (or with the budget spent) the failure is raised instead.
        """
        if failures >= attempts:
            raise error
        self._charge(error)
        return backoff.delay(failures - 1)

    async def _sleep(self, delay: float, error: NanoBananaError) -> None:
        """Wait before a retry, or give up now if the wait would outlast the caller's deadline."""
        if anyio.current_time() + delay >= anyio.current_effective_deadline():
            raise error
        await self.policy.sleep(delay)

    async def create(self, send: Callable[[], Awaitable[T]], *, job: JobTrace | None = None) -> T:
        """Send a create, retrying only what provably never reached the service, and 429s."""
        policy = self.policy
        failures = limited = 0
        first_limited: float | None = None
        limits = self.limits
        while True:
            await limits.before_create()
            attempt = failures + limited + 1
            token = retry_attempt(attempt) if attempt > 1 else None
            try:
                result = await send()
            except RateLimitedError as exc:
                now = anyio.current_time()
                first_limited = now if first_limited is None else first_limited
                limited += 1
                if limited >= policy.rate_limit_attempts or now - first_limited > (
                    policy.rate_limit_window
                ):
                    raise
                delay = self._retry_after(exc, limited - 1, policy.create_backoff)
                if now + delay >= anyio.current_effective_deadline():
                    raise
                self.observer.rate_limited(job, "create", exc, scope="creates")
                self.observer.paused(limits.create_pause.pause_for(delay))
                self.observer.retrying(job, "create", limited, delay, exc)
                continue
            except (NetworkError, APIError) as exc:
                if not _create_never_arrived(exc):
                    raise
                failures += 1
                delay = self._backoff(exc, failures, policy.create_attempts, policy.create_backoff)
                self.observer.retrying(job, "create", failures, delay, exc)
                await self._sleep(delay, exc)
                continue
            finally:
                if token is not None:
                    end_attempt(token)
            self.budget.earn()
            return result

    async def poll(
        self,
        send: Callable[[], Awaitable[T]],
        *,
        since_create: float,
        job: JobTrace | None = None,
    ) -> T | None:
        """Query a task, retrying transient failures; None means "not visible yet" (early 404)."""
        policy = self.policy
        failures = 0
        started = time.monotonic() - since_create
        limits = self.limits
        while True:
            if not limits.poll_unhindered():
                await limits.before_poll()
            self.observer.polled()
            token = retry_attempt(failures + 1) if failures else None
            try:
                result = await send()
            except TaskNotFoundError:
                if time.monotonic() - started < policy.not_found_grace:
                    return None
                raise
            except RateLimitedError as exc:
                limits.poll_pace.on_rate_limited()
                self.observer.rate_limited(job, "query", exc, scope="task")
                failures += 1
                if failures >= policy.poll_failures:
                    raise
                error: NanoBananaError = exc
                delay = self._retry_after(exc, failures - 1, policy.poll_backoff)
            except (NetworkError, ServerError, MalformedResponseError, APIError) as exc:
                if not _poll_may_retry(exc):
                    raise
                failures += 1
                delay = self._backoff(exc, failures, policy.poll_failures, policy.poll_backoff)
                error = exc
            else:
                self.budget.earn()
                return result
            finally:
                if token is not None:
                    end_attempt(token)
            self.observer.retrying(job, "query", failures, delay, error)
            await self._sleep(delay, error)

    async def download(
        self, fetch: Callable[[], Awaitable[T]], *, task_id: str, job: JobTrace | None = None
    ) -> T:
        """Fetch an image, restarting from byte 0 after transient failures, within a deadline."""
        policy = self.policy
        # asyncio's timeout, not an anyio scope: one per image, and anyio's costs several
        # times more CPU (anyio's cancel scopes around it still apply).
        deadline = asyncio.timeout(policy.download_timeout)
        try:
            async with deadline:
                return await self._download_attempts(fetch, job)
        except TimeoutError:
            if not deadline.expired():
                raise
        raise DownloadTimeoutError(
            f"the image download did not finish within {policy.download_timeout:g} s",
            task_id=task_id,
        )

    async def _download_attempts(
        self, fetch: Callable[[], Awaitable[T]], job: JobTrace | None
    ) -> T:
        policy = self.policy
        failures = 0
        while True:
            token = retry_attempt(failures + 1) if failures else None
            try:
                result = await fetch()
            except (NetworkError, ServerError, DownloadError) as exc:
                if isinstance(exc, (DownloadError, NetworkError)) and not exc.retryable:
                    raise
                failures += 1
                delay = self._backoff(
                    exc, failures, policy.download_attempts, policy.download_backoff
                )
                self.observer.retrying(job, "download", failures, delay, exc)
                await self._sleep(delay, exc)
                continue
            finally:
                if token is not None:
                    end_attempt(token)
            self.budget.earn()
            return result


def _create_never_arrived(error: NetworkError | APIError) -> bool:
    """True when a failed create provably did not reach the service (so it was not billed)."""
    if isinstance(error, NetworkError):
        return not error.sent and error.retryable
    return error.status == 408


def _poll_may_retry(error: NanoBananaError) -> bool:
    if isinstance(error, MalformedResponseError):
        return error.transient
    if isinstance(error, NetworkError):
        return error.retryable
    if isinstance(error, ServerError):
        return True
    return isinstance(error, APIError) and error.status == 408
