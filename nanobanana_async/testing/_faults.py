"""Fault injection: what can go wrong, and the per-endpoint queues that schedule it.

A test pushes faults onto an endpoint's FIFO queue; each request to that
endpoint takes the next one (if any) and misbehaves accordingly. Every fault is
a small frozen value, so scripts read like the incident they reproduce. New
fault kinds only need a class here and a branch in ``_delivery``.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal, TypeAlias, get_args

import attrs

Endpoint: TypeAlias = Literal["create", "poll", "download"]
ENDPOINTS: tuple[Endpoint, ...] = get_args(Endpoint)


def _headers(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType({str(k): str(v) for k, v in value.items()})


@attrs.frozen
class Respond:
    """Answer with exactly this status, body and headers instead of the normal response.

    A mapping body is sent as JSON, a str as text/html (unless ``content_type``
    says otherwise), bytes as they are, None as an empty body. On create,
    ``create_first=True`` creates (and bills) the task before answering: the
    "server created it, then the gateway returned 502" case.
    """

    status: int
    body: bytes | str | Mapping[str, object] | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_headers)
    content_type: str | None = None
    create_first: bool = False

    def __attrs_post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status code, got {self.status}")


@attrs.frozen
class ResetConnection:
    """Abort the TCP connection with a reset and no response at all.

    On create, ``create_first=True`` creates (and bills) the task first, so the
    client cannot know whether it was charged.
    """

    create_first: bool = False


@attrs.frozen
class Delay:
    """Wait ``seconds`` before answering normally: a read timeout after the request was sent.

    On create with ``create_first=True`` (the default) the task exists before
    the wait. With ``create_first=False`` the task is created after the wait,
    and only if the client is still connected by then.
    """

    seconds: float = attrs.field(validator=attrs.validators.ge(0))
    create_first: bool = True


@attrs.frozen
class Truncate:
    """Start the normal response, send only ``after_bytes`` bytes of its body, then close.

    With ``content_length=True`` the header announces the full length, so the
    client can see the shortfall. With False the body is close-delimited (no
    Content-Length, no chunking): only the content itself can tell it is short.
    """

    after_bytes: int = attrs.field(validator=attrs.validators.ge(0))
    content_length: bool = True


@attrs.frozen
class Slow:
    """Send the normal response at ``bytes_per_second``; stops if the client leaves."""

    bytes_per_second: float

    def __attrs_post_init__(self) -> None:
        if not self.bytes_per_second > 0:
            raise ValueError("bytes_per_second must be > 0")


@attrs.frozen
class Redirect:
    """Answer with a redirect: ``status`` (301, 302, 303, 307, 308) and a Location header."""

    status: int
    location: str

    def __attrs_post_init__(self) -> None:
        if not 300 <= self.status <= 399:
            raise ValueError(f"redirect status must be 3xx, got {self.status}")


Fault: TypeAlias = Respond | ResetConnection | Delay | Truncate | Slow | Redirect
_FAULT_TYPES = (Respond, ResetConnection, Delay, Truncate, Slow, Redirect)


class FaultQueues:
    """One FIFO queue of scheduled faults per endpoint ("create", "poll", "download")."""

    def __init__(self) -> None:
        self._queues: dict[str, collections.deque[Fault]] = {
            endpoint: collections.deque() for endpoint in ENDPOINTS
        }

    def push(self, endpoint: Endpoint, fault: Fault) -> None:
        """Schedule ``fault`` for a later request to ``endpoint``, after those already queued."""
        if endpoint not in self._queues:
            raise ValueError(f"endpoint must be one of {', '.join(ENDPOINTS)}, got {endpoint!r}")
        if not isinstance(fault, _FAULT_TYPES):
            raise TypeError(f"not a simulator fault: {fault!r}")
        self._queues[endpoint].append(fault)

    def pop(self, endpoint: Endpoint) -> Fault | None:
        """Take the next fault for ``endpoint``, or None when none is scheduled."""
        queue = self._queues[endpoint]
        return queue.popleft() if queue else None

    def pending(self, endpoint: Endpoint) -> int:
        """How many faults are still waiting for ``endpoint``."""
        return len(self._queues[endpoint])

    def clear(self) -> None:
        """Drop every scheduled fault."""
        for queue in self._queues.values():
            queue.clear()
