"""Fault injection: what can go wrong, and the per-endpoint queues that schedule it.

A test pushes faults onto an endpoint's FIFO queue; each request to that
endpoint takes the next one (if any) and misbehaves accordingly. Every fault is
a small frozen value, so scripts read like the incident they reproduce. New
fault kinds only need a class here and a branch in ``_delivery``.

For soak tests, ``set_rates`` adds seeded random faults on top: a request that
finds its endpoint's queue empty draws one from the rates, and ``injected``
counts what was drawn.
"""

from __future__ import annotations

import collections
import math
import random
from collections.abc import Collection, Mapping
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


_OVERLOADED: Mapping[str, object] = MappingProxyType(
    {"error": {"message": "simulated overload", "type": "server_error"}}
)
_RATE_LIMITED: Mapping[str, object] = MappingProxyType(
    {"error": {"message": "simulated rate limit", "type": "rate_limit_error"}}
)


def _probability(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        raise ValueError(f"{attribute.name} must be a probability in [0, 1], got {value!r}")


#: Where each kind of random fault can happen.
FAULT_KINDS: Mapping[str, tuple[Endpoint, ...]] = MappingProxyType(
    {
        "reset": ("create", "poll", "download"),
        "server_error": ("create", "poll"),
        "rate_limit": ("create", "poll"),
        "truncate": ("download",),
    }
)


def _endpoints_by_kind(value: Mapping[str, object]) -> Mapping[str, tuple[Endpoint, ...]]:
    chosen: dict[str, tuple[Endpoint, ...]] = {}
    for kind, endpoints in value.items():
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(FAULT_KINDS)}")
        if isinstance(endpoints, str) or not isinstance(endpoints, (list, tuple, set, frozenset)):
            raise TypeError(f"on[{kind!r}] must be a collection of endpoints")
        unknown = set(endpoints) - set(FAULT_KINDS[kind])
        if unknown:
            raise ValueError(f"{kind} faults happen only on {', '.join(FAULT_KINDS[kind])}")
        chosen[kind] = tuple(e for e in FAULT_KINDS[kind] if e in endpoints)
    return MappingProxyType(chosen)


_RATE_NAMES = frozenset(
    {"reset", "server_error", "rate_limit", "truncate", "retry_after", "create_first"}
)


@attrs.frozen
class FaultRates:
    """Per-request probabilities of random faults, drawn from RNGs seeded by ``seed``.

    ``reset`` aborts the connection on create, poll and download (on create,
    a share ``create_first`` of them creates and bills the task first, so its
    answer is lost); ``server_error`` answers 503 on create (before creating)
    and poll; ``rate_limit`` answers 429 with ``Retry-After: retry_after`` on
    create (before creating) and poll; ``truncate`` cuts a download short
    after 12-40 bytes, with or without a Content-Length (half each). ``on``
    narrows a kind to some of its endpoints, e.g. ``{"rate_limit": ["create"]}``.

    Each endpoint has its own RNG, so the n-th request to an endpoint draws
    the same fault for the same seed whatever the other endpoints saw.
    """

    seed: int
    reset: float = attrs.field(default=0.0, validator=_probability)
    server_error: float = attrs.field(default=0.0, validator=_probability)
    rate_limit: float = attrs.field(default=0.0, validator=_probability)
    truncate: float = attrs.field(default=0.0, validator=_probability)
    retry_after: float = 0.05
    create_first: float = attrs.field(default=0.5, validator=_probability)
    on: Mapping[str, tuple[Endpoint, ...]] = attrs.field(factory=dict, converter=_endpoints_by_kind)

    def __attrs_post_init__(self) -> None:
        if not (math.isfinite(self.retry_after) and self.retry_after >= 0):
            raise ValueError(f"retry_after must be finite and >= 0, got {self.retry_after!r}")
        for endpoint in ENDPOINTS:
            total = sum(rate for _, rate in self.kinds(endpoint))
            if total > 1.0:
                raise ValueError(f"fault rates for {endpoint} add up to {total:g}, over 1")

    @staticmethod
    def parse(text: str) -> dict[str, float]:
        """``"reset=0.05,server_error=0.05"`` as keyword arguments for ``FaultQueues.set_rates``.

        Names: reset, server_error, rate_limit, truncate, retry_after and
        create_first (``-`` may stand for ``_``); ValueError says what is wrong.
        """
        rates: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, value = item.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in _RATE_NAMES:
                raise ValueError(
                    f"{item!r}: expected NAME=NUMBER with NAME one of "
                    f"{', '.join(sorted(_RATE_NAMES))}"
                )
            try:
                rates[name] = float(value)
            except ValueError:
                raise ValueError(f"{item!r}: {value!r} is not a number") from None
        return rates

    def kinds(self, endpoint: Endpoint) -> tuple[tuple[str, float], ...]:
        """The fault kinds that apply to ``endpoint``, with their probabilities."""
        rates = {
            "reset": self.reset,
            "server_error": self.server_error,
            "rate_limit": self.rate_limit,
            "truncate": self.truncate,
        }
        return tuple(
            (kind, rates[kind])
            for kind, natural in FAULT_KINDS.items()
            if endpoint in self.on.get(kind, natural)
        )


@attrs.define
class InjectedFaults:
    """How many random faults (from ``set_rates``) were served, per endpoint and kind.

    Scheduled faults (``push``) are not counted here. ``create_resets``
    counts every reset create, ``create_resets_billed`` those that created
    the task first: tasks that exist although the client never got their id.
    """

    create_resets: int = 0
    create_resets_billed: int = 0
    create_server_errors: int = 0
    create_rate_limits: int = 0
    poll_resets: int = 0
    poll_server_errors: int = 0
    poll_rate_limits: int = 0
    download_resets: int = 0
    download_truncations: int = 0

    @property
    def total(self) -> int:
        """Every random fault served (billed create resets are counted once)."""
        return sum(self.as_dict().values()) - self.create_resets_billed

    def as_dict(self) -> dict[str, int]:
        """Every count by name, ready for JSON."""
        return attrs.asdict(self)


class _RandomFaults:
    """Draws faults from FaultRates with one seeded RNG per endpoint, and counts them."""

    def __init__(self, rates: FaultRates, injected: InjectedFaults) -> None:
        self.rates = rates
        self._injected = injected
        self._rngs = {e: random.Random(f"{rates.seed}:{e}") for e in ENDPOINTS}

    def draw(self, endpoint: Endpoint) -> Fault | None:
        rng = self._rngs[endpoint]
        roll = rng.random()
        for kind, rate in self.rates.kinds(endpoint):
            if roll < rate:
                return self._make(endpoint, kind, rng)
            roll -= rate
        return None

    def _make(self, endpoint: Endpoint, kind: str, rng: random.Random) -> Fault:
        injected = self._injected
        rates = self.rates
        if kind == "reset":
            if endpoint == "create":
                billed = rng.random() < rates.create_first
                injected.create_resets += 1
                injected.create_resets_billed += billed
                return ResetConnection(create_first=billed)
            if endpoint == "poll":
                injected.poll_resets += 1
            else:
                injected.download_resets += 1
            return ResetConnection()
        if kind == "truncate":
            injected.download_truncations += 1
            return Truncate(rng.randint(12, 40), content_length=rng.random() < 0.5)
        if kind == "server_error":
            if endpoint == "create":
                injected.create_server_errors += 1
            else:
                injected.poll_server_errors += 1
            return Respond(503, _OVERLOADED)
        if endpoint == "create":
            injected.create_rate_limits += 1
        else:
            injected.poll_rate_limits += 1
        return Respond(429, _RATE_LIMITED, headers={"Retry-After": f"{rates.retry_after:g}"})


class FaultQueues:
    """One FIFO queue of scheduled faults per endpoint ("create", "poll", "download").

    Optionally also seeded random faults (``set_rates``) for requests that
    find their queue empty.
    """

    def __init__(self) -> None:
        self._queues: dict[str, collections.deque[Fault]] = {
            endpoint: collections.deque() for endpoint in ENDPOINTS
        }
        self._random: _RandomFaults | None = None
        self._injected = InjectedFaults()

    def push(self, endpoint: Endpoint, fault: Fault) -> None:
        """Schedule ``fault`` for a later request to ``endpoint``, after those already queued."""
        if endpoint not in self._queues:
            raise ValueError(f"endpoint must be one of {', '.join(ENDPOINTS)}, got {endpoint!r}")
        if not isinstance(fault, _FAULT_TYPES):
            raise TypeError(f"not a simulator fault: {fault!r}")
        self._queues[endpoint].append(fault)

    def pop(self, endpoint: Endpoint) -> Fault | None:
        """Take the next fault for ``endpoint``: a scheduled one, else a random draw, else None."""
        queue = self._queues[endpoint]
        if queue:
            return queue.popleft()
        if self._random is not None:
            return self._random.draw(endpoint)
        return None

    def set_rates(
        self,
        *,
        seed: int,
        reset: float = 0.0,
        server_error: float = 0.0,
        rate_limit: float = 0.0,
        truncate: float = 0.0,
        retry_after: float = 0.05,
        create_first: float = 0.5,
        on: Mapping[str, Collection[Endpoint]] | None = None,
    ) -> FaultRates:
        """Inject seeded random faults from now on (see FaultRates); replaces earlier rates.

        ``sim.faults.set_rates(seed=1, reset=0.05, server_error=0.05,
        rate_limit=0.02, truncate=0.01)``; ``on={"rate_limit": ["create"]}``
        keeps a kind to some endpoints. Scheduled faults still come first.
        The ``injected`` counts go on accumulating.
        """
        rates = FaultRates(
            seed=seed,
            reset=reset,
            server_error=server_error,
            rate_limit=rate_limit,
            truncate=truncate,
            retry_after=retry_after,
            create_first=create_first,
            on=on or {},
        )
        self._random = _RandomFaults(rates, self._injected)
        return rates

    def clear_rates(self) -> None:
        """Stop injecting random faults (the ``injected`` counts are kept)."""
        self._random = None

    @property
    def rates(self) -> FaultRates | None:
        """The random fault rates in force, or None."""
        return self._random.rates if self._random is not None else None

    @property
    def injected(self) -> InjectedFaults:
        """Live counts of the random faults served so far."""
        return self._injected

    def pending(self, endpoint: Endpoint) -> int:
        """How many faults are still waiting for ``endpoint``."""
        return len(self._queues[endpoint])

    def clear(self) -> None:
        """Drop every scheduled fault."""
        for queue in self._queues.values():
            queue.clear()
