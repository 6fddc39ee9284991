"""aiohttp's connection protocol with a read timeout that costs no timer per request.

aiohttp enforces ``sock_read`` (our ``Timeouts.read``: the longest silence
while waiting for or reading an answer) by cancelling and scheduling an
event-loop timer whenever a request is sent and again for every chunk that
arrives: two or more timers per request, each left in the loop's heap until
it would have fired. At a thousand requests a second that churn costs about
a tenth of the SDK's CPU.

``QuietReadProtocol`` keeps the same rule with one timer per connection:
arrivals only move a deadline forward, and the timer, when it fires, either
finds the deadline moved (and sleeps again until it) or raises aiohttp's own
read timeout. It overrides four private methods of aiohttp's
``ResponseHandler``; ``install`` checks they are there and leaves the
connector as it is otherwise, so a future aiohttp degrades to its own timers
rather than breaking.
"""

from __future__ import annotations

import asyncio
import functools
from typing import cast

import aiohttp
from aiohttp.client_proto import ResponseHandler

__all__ = ["QuietReadProtocol", "install"]

_OVERRIDDEN = ("_reschedule_timeout", "_drop_timeout", "_on_read_timeout", "connection_lost")


class QuietReadProtocol(ResponseHandler):
    """A ResponseHandler whose read timeout moves a deadline instead of replacing a timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._read_deadline = 0.0  # loop time by which bytes must arrive; 0: not armed

    def _reschedule_timeout(self) -> None:
        timeout = self._read_timeout
        if not timeout:
            self._read_deadline = 0.0
            return
        loop = self._loop
        deadline = loop.time() + timeout
        self._read_deadline = deadline
        handle = self._read_timeout_handle
        if handle is None or handle.when() > deadline:
            if handle is not None:
                handle.cancel()
            self._read_timeout_handle = loop.call_at(deadline, self._on_read_timeout)

    def _drop_timeout(self) -> None:
        # The timer stays: it fires once, finds nothing armed, and is not renewed.
        self._read_deadline = 0.0

    def _on_read_timeout(self) -> None:
        self._read_timeout_handle = None
        deadline = self._read_deadline
        if not deadline:
            return
        if self._loop.time() < deadline:  # bytes came since the timer was set
            self._read_timeout_handle = self._loop.call_at(deadline, self._on_read_timeout)
            return
        self._read_deadline = 0.0
        super()._on_read_timeout()

    def connection_lost(self, exc: BaseException | None) -> None:
        handle, self._read_timeout_handle = self._read_timeout_handle, None
        if handle is not None:
            handle.cancel()
        super().connection_lost(exc)


def _supported(loop: asyncio.AbstractEventLoop) -> bool:
    """True when aiohttp's protocol still has the methods and fields overridden here."""
    if not all(callable(getattr(ResponseHandler, name, None)) for name in _OVERRIDDEN):
        return False
    probe = ResponseHandler(loop)
    return hasattr(probe, "_read_timeout") and hasattr(probe, "_read_timeout_handle")


def install(connector: aiohttp.TCPConnector) -> bool:
    """Make ``connector`` open its connections with ``QuietReadProtocol``; False if it cannot."""
    factory = getattr(connector, "_factory", None)
    loop = getattr(connector, "_loop", None)
    if not isinstance(factory, functools.partial) or factory.func is not ResponseHandler:
        return False
    if not isinstance(loop, asyncio.AbstractEventLoop) or not _supported(loop):
        return False
    # A subclass builds where aiohttp's protocol did (partial is invariant to mypy).
    connector._factory = cast(
        "functools.partial[ResponseHandler]", functools.partial(QuietReadProtocol, loop=loop)
    )
    return True
