"""The Simulator: two loopback listeners (API origin and file host) and their lifecycle."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, Self

from aiohttp import web

from ._api import ApiOrigin
from ._counters import RecordedRequest, SimulatorCounters
from ._delivery import Delivery
from ._faults import FaultQueues
from ._files import FileHost
from ._latency import LatencyProfile
from ._persist import StateFile
from ._png import ImageCache
from ._state import SimState, SimTask

HOST = "127.0.0.1"
#: How long closing waits for a request still being answered before cutting it off.
_SHUTDOWN_TIMEOUT = 2.0

_Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class _CountingServer(web.Server):
    """aiohttp's low-level server, reporting every new connection (for peak_connections)."""

    def __init__(self, handler: _Handler, on_connect: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._on_connect = on_connect

    def connection_made(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self._on_connect()


def _normalise_base_path(base_path: str) -> str:
    stripped = base_path.strip().strip("/")
    if any(part in ("", ".", "..") for part in stripped.split("/")) and stripped:
        raise ValueError(f"base_path must be a plain path like /kyyReactApiServer: {base_path!r}")
    if any(ch in stripped for ch in "?#% \t"):
        raise ValueError(f"base_path must be a plain path like /kyyReactApiServer: {base_path!r}")
    return f"/{stripped}" if stripped else ""


class Simulator:
    """A faithful fake of the Nano Banana service on 127.0.0.1, for tests, demos and benchmarks.

    It serves the API (``base_url``) and a separate file host
    (``file_host_url``, a different origin), validates like the service, moves
    tasks through queued, processing and a terminal status on a seeded
    latency profile, serves real PNGs, injects scheduled faults
    (``faults.push``) and counts everything in ``counters``. Use it as an async
    context manager, or call ``start()`` and ``aclose()``.

    Each image shows the first words of its task's prompt on a band at the
    bottom, and its colours come from the prompt, so saved images say which
    prompt they answer. ``caption_images=False`` serves one of 8 plain
    pictures per size instead, cached whole: the cheapest to serve (the
    benchmarks use it).

    With ``state_path``, its tasks outlive the process: each task is appended
    to that JSON-lines file before its create is answered, and a simulator
    started later on the same file knows those tasks again (their status
    follows the wall clock, their images come from its own file host). The
    counters still count only this instance's requests. A file that is not
    such a state file raises ConfigurationError on ``start()``.
    """

    def __init__(
        self,
        *,
        api_key: str = "sim-key",
        latency: LatencyProfile | None = None,
        seed: int | None = 0,
        base_path: str = "/kyyReactApiServer",
        image_long_side: int = 64,
        url_ttl: float = 86400.0,
        balance: int | None = None,
        port: int = 0,
        file_port: int = 0,
        keepalive_timeout: float = 75.0,
        record_requests: bool = True,
        caption_images: bool = True,
        state_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if not api_key or any(ch.isspace() for ch in api_key):
            raise ValueError("api_key must be a non-empty string without whitespace")
        if not url_ttl >= 0:
            raise ValueError("url_ttl must be >= 0 seconds")
        self._base_path = _normalise_base_path(base_path)
        self._ports = (port, file_port)
        self._keepalive_timeout = keepalive_timeout
        self._state_path = None if state_path is None else Path(state_path)
        self._state = SimState(
            api_key=api_key,
            latency=latency if latency is not None else LatencyProfile.fast(),
            rng=random.Random(seed),
            url_ttl=url_ttl,
            balance=balance,
            record_requests=record_requests,
        )
        self._state.counters._attach_connections(self._open_connections)
        self._faults = FaultQueues()
        self._images = ImageCache(image_long_side, captions=caption_images)
        self._servers: list[web.Server] = []
        self._runners: list[web.BaseRunner] = []
        self._closing: asyncio.Event | None = None
        self._phase: Literal["new", "started", "closed"] = "new"
        self._base_url: str | None = None
        self._file_host_url: str | None = None

    def __repr__(self) -> str:
        where = self._base_url or "not listening"
        return f"<Simulator {self._phase} {where}>"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start listening on both origins (loopback only)."""
        if self._phase != "new":
            raise RuntimeError(f"Simulator cannot start: it is already {self._phase}")
        self._phase = "started"
        self._closing = closing = asyncio.Event()
        delivery = Delivery(closing)
        state = self._state
        try:
            if self._state_path is not None:
                state.state_file, loaded = StateFile.load(self._state_path)
                state.tasks.update((task.id, task) for task in loaded)
            file_port = await self._listen(
                FileHost(state, self._faults, delivery, self._images), self._ports[1]
            )
            self._file_host_url = state.file_host_url = f"http://{HOST}:{file_port}"
            api = ApiOrigin(state, self._faults, delivery, self._base_path)
            api_port = await self._listen(api, self._ports[0])
            self._base_url = f"http://{HOST}:{api_port}{self._base_path}"
        except BaseException:
            await self.aclose()
            raise

    async def _listen(self, handler: _Handler, port: int) -> int:
        server = _CountingServer(
            handler,
            self._state.counters._connection_opened,
            access_log=None,
            keepalive_timeout=self._keepalive_timeout,
        )
        runner = web.ServerRunner(server, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        self._runners.append(runner)
        await runner.setup()
        self._servers.append(server)
        await web.TCPSite(runner, HOST, port).start()
        return int(runner.addresses[0][1])

    async def aclose(self) -> None:
        """Stop listening and close every connection; safe to call more than once."""
        if self._phase == "closed":
            return
        self._phase = "closed"
        if self._closing is not None:
            self._closing.set()
        runners, self._runners = self._runners, []
        try:
            for runner in reversed(runners):
                await runner.cleanup()
        finally:
            self._servers.clear()
            if self._state.state_file is not None:
                self._state.state_file.close()

    def _open_connections(self) -> int:
        return sum(len(server.connections) for server in self._servers)

    @property
    def base_url(self) -> str:
        """The API origin plus base path, without a trailing slash."""
        if self._base_url is None:
            raise RuntimeError("the Simulator is not started")
        return self._base_url

    @property
    def file_host_url(self) -> str:
        """The file host's origin (a different port from the API: a different origin)."""
        if self._file_host_url is None:
            raise RuntimeError("the Simulator is not started")
        return self._file_host_url

    @property
    def api_key(self) -> str:
        """The bearer key the API origin accepts."""
        return self._state.api_key

    @property
    def base_path(self) -> str:
        """The API's path prefix, such as ``/kyyReactApiServer`` (may be empty)."""
        return self._base_path

    @property
    def counters(self) -> SimulatorCounters:
        """Live counters of everything served."""
        return self._state.counters

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request to either origin, in arrival order (empty if recording is off)."""
        return self._state.requests

    @property
    def tasks(self) -> dict[str, SimTask]:
        """Every task created, by id (with those loaded from ``state_path``)."""
        return self._state.tasks

    @property
    def faults(self) -> FaultQueues:
        """Per-endpoint queues of scheduled faults: ``sim.faults.push("create", fault)``."""
        return self._faults

    @property
    def latency(self) -> LatencyProfile:
        """The profile that times tasks created from now on."""
        return self._state.latency

    @latency.setter
    def latency(self, profile: LatencyProfile) -> None:
        self._state.latency = profile

    @property
    def balance(self) -> int | None:
        """Creates left before 402 (None: unlimited). Each successful create uses one."""
        return self._state.balance

    @balance.setter
    def balance(self, value: int | None) -> None:
        self._state.balance = value

    def image_url(self, task_id: str) -> str:
        """The file-host URL of a task's image (whether or not the task exists)."""
        return f"{self.file_host_url}/files/{task_id}.png"
