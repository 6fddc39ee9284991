"""What the simulator saw: counters and the request log that tests assert on.

Nothing here stores a header value: a request records only whether it carried
an Authorization or Cookie header, so the API key is never copied.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeAlias

import attrs

Origin: TypeAlias = Literal["api", "files"]
RequestKind: TypeAlias = Literal["create", "poll", "download", "other"]


def _no_connections() -> int:
    return 0


@attrs.frozen
class RecordedRequest:
    """One request as the simulator received it (never its header values)."""

    origin: Origin
    method: str
    path: str
    at: float
    """``time.monotonic()`` when the request arrived."""
    authorization: bool
    """Whether an Authorization header was present."""
    cookie: bool
    """Whether a Cookie header was present."""
    endpoint: RequestKind


@attrs.define
class SimulatorCounters:
    """Running totals of what the simulator served, readable at any time.

    ``creates`` counts tasks created (each one billed), ``create_requests`` every
    POST received including rejected ones, ``unacknowledged_creates`` the
    created tasks whose id never reached the client (the create's answer was
    replaced by a fault, cut short or dropped). A job is *in flight* from its create
    until its image's first full download, or until a poll reported it failed or
    completed without a URL (or its URL turned out expired).
    """

    creates: int = 0
    create_requests: int = 0
    polls: int = 0
    downloads: int = 0
    downloads_completed: int = 0
    auth_failures: int = 0
    bad_requests: int = 0
    file_host_auth_headers: int = 0
    """File-host requests carrying Authorization or Cookie: 0 for a correct SDK."""
    unacknowledged_creates: int = 0
    """Tasks created (and billed) whose create answer, with the id, was not delivered."""
    _in_flight: int = attrs.field(default=0, init=False)
    _peak_in_flight: int = attrs.field(default=0, init=False)
    _peak_connections: int = attrs.field(default=0, init=False)
    _connection_source: Callable[[], int] = attrs.field(
        default=_no_connections, init=False, repr=False, eq=False
    )

    @property
    def open_connections(self) -> int:
        """TCP connections currently open on both origins."""
        current = self._connection_source()
        self._peak_connections = max(self._peak_connections, current)
        return current

    @property
    def peak_connections(self) -> int:
        """The most TCP connections ever open at once on both origins."""
        _ = self.open_connections
        return self._peak_connections

    @property
    def in_flight(self) -> int:
        """Jobs created and not yet finished, as the service sees them."""
        return self._in_flight

    @property
    def peak_in_flight(self) -> int:
        """The most jobs ever in flight at once."""
        return self._peak_in_flight

    def as_dict(self) -> dict[str, int]:
        """Every counter and gauge by name, ready for JSON."""
        return {
            "creates": self.creates,
            "create_requests": self.create_requests,
            "polls": self.polls,
            "downloads": self.downloads,
            "downloads_completed": self.downloads_completed,
            "auth_failures": self.auth_failures,
            "bad_requests": self.bad_requests,
            "file_host_auth_headers": self.file_host_auth_headers,
            "unacknowledged_creates": self.unacknowledged_creates,
            "open_connections": self.open_connections,
            "peak_connections": self.peak_connections,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
        }

    def _attach_connections(self, source: Callable[[], int]) -> None:
        self._connection_source = source

    def _connection_opened(self) -> None:
        self._peak_connections = max(self._peak_connections, self._connection_source())

    def _begin_flight(self) -> None:
        self._in_flight += 1
        self._peak_in_flight = max(self._peak_in_flight, self._in_flight)

    def _end_flight(self) -> None:
        self._in_flight -= 1
