"""The SDK's logger, and which attempt of a call a request is (for the per-request DEBUG line).

Everything logs through the ``nanobanana_async`` logger: INFO for retries,
429s and creates whose fate is unknown; DEBUG for every request, as one
line with the method, origin and path template, status, attempt and
elapsed time (never a header, never the key, never an image URL's query).
"""

from __future__ import annotations

import logging
from contextvars import ContextVar, Token

__all__ = ["end_attempt", "logger", "retry_attempt", "this_attempt"]

logger = logging.getLogger("nanobanana_async")

#: Which attempt of the current call the task is sending (first attempts leave it at 1).
_ATTEMPT: ContextVar[int] = ContextVar("nanobanana_attempt", default=1)


def retry_attempt(number: int) -> Token[int]:
    """Mark the requests the running task sends next as attempt ``number`` (until reset)."""
    return _ATTEMPT.set(number)


def end_attempt(token: Token[int]) -> None:
    """The attempt marked with ``token`` is over."""
    _ATTEMPT.reset(token)


def this_attempt() -> int:
    """The attempt the running task is on."""
    return _ATTEMPT.get()
