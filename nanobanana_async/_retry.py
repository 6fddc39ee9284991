"""Retry policy: which delays to wait between attempts, and how to read Retry-After.

Backoff is "full jitter": attempt ``n`` waits a uniform random time in
``[0, min(cap, base * 2**n)]`` (never below a small floor), so thousands of
jobs that fail together do not come back together.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

import attrs

#: Longest Retry-After the SDK will sleep for by itself; longer asks surface as RateLimitedError.
MAX_RETRY_AFTER = 60.0


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
    """How the client retries the calls that are safe to repeat.

    ``poll_backoff`` spaces retries of a failed status query, at most
    ``max_poll_failures`` in a row before the wait gives up with the last
    error. A 404 within ``not_found_grace`` seconds of the create is read as
    "not visible yet". Creates are never retried once they may have reached
    the service. Tests pass tiny backoffs here instead of patching sleeps.
    """

    poll_backoff: Backoff = Backoff(base=1.0, cap=30.0)
    max_poll_failures: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    not_found_grace: float = attrs.field(default=10.0, validator=attrs.validators.ge(0))
