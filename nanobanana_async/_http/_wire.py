"""What crosses the wire besides the request itself: creates in flight, bodies, failures.

Transport exceptions become typed SDK errors here, built from aiohttp's
exception *type* and text only (never the request it carries, which holds
the API key's header).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from contextvars import ContextVar
from typing import Any

import aiohttp
import anyio
import attrs
from aiohttp.connector import Connection

from .._errors import NetworkError
from .._models import Task
from ._config import CHUNK

__all__ = [
    "ApiRequest",
    "CreateCall",
    "CreateFate",
    "CreateTrace",
    "DownloadBody",
    "OpenDownload",
    "network_error",
    "provably_unsent",
]


class CreateTrace:
    """Whether a create has started writing to its connection (if not, it cannot be billed)."""

    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = False


#: The create this task is sending, if any (each create runs in a task of its own).
_SENDING: ContextVar[CreateTrace | None] = ContextVar("nanobanana_create_sending", default=None)


def sending(trace: CreateTrace) -> None:
    """Mark the running task as the sender of the create ``trace`` follows."""
    _SENDING.set(trace)


class ApiRequest(aiohttp.ClientRequest):
    """aiohttp's request, marking a create as sent as it starts writing to its connection.

    Everything before that point (waiting for a connection, connecting) cannot
    reach the service, so a create that fails there is safe to send again.
    (aiohttp's tracing says the same, but costs as much CPU as the rest of
    the create's own code.)
    """

    async def send(self, conn: Connection) -> aiohttp.ClientResponse:
        trace = _SENDING.get()
        if trace is not None:
            trace.sent = True
        return await super().send(conn)


@attrs.frozen
class CreateFate:
    """What is known of a create its caller stopped waiting for.

    ``sent``: whether the request left (if not, nothing was billed). ``task``:
    the task the service created, when its answer came within the grace period.
    """

    sent: bool
    task: Task | None = None


class CreateCall:
    """One create on its way, in a child task so that a sent request may finish.

    Await ``answer()`` for its Task. A caller that stops waiting (cancelled)
    calls ``abandon()``, which gives a sent request a grace period to answer
    and says what became of it as a ``CreateFate``. The child task is always
    awaited by one of the two, so nothing outlives the call. (A plain asyncio
    task: a task group per create cost as much CPU as the rest of the create.)
    """

    __slots__ = ("_attempt", "_trace")

    def __init__(self, send: Coroutine[Any, Any, Task], trace: CreateTrace) -> None:
        self._trace = trace
        self._attempt = asyncio.get_running_loop().create_task(send)

    async def answer(self) -> Task:
        """The service's answer; its own failure is raised as it is."""
        return await asyncio.shield(self._attempt)

    def raised(self, exc: BaseException) -> bool:
        """True when ``exc`` is the create's own failure (not the caller's cancellation)."""
        attempt = self._attempt
        return attempt.done() and not attempt.cancelled() and attempt.exception() is exc

    async def abandon(self, grace: float) -> CreateFate:
        """Stop waiting: a sent request gets ``grace`` seconds (shielded) to answer first."""
        attempt, sent = self._attempt, self._trace.sent
        with anyio.CancelScope(shield=True):
            if sent and grace > 0:
                with anyio.move_on_after(grace):
                    await asyncio.wait([attempt])
            if not attempt.done():
                attempt.cancel()
                await asyncio.wait([attempt])
        if attempt.cancelled() or attempt.exception() is not None:
            return CreateFate(sent=sent)
        return CreateFate(sent=sent, task=attempt.result())


class DownloadBody:
    """An image response being streamed: its declared length and type, and its chunks.

    At most ``limit`` bytes are ever read from the network (the caller's cap
    plus one, so an oversize body is noticed without reading more of it).
    """

    def __init__(
        self, response: aiohttp.ClientResponse, task_id: str | None, limit: int | None = None
    ) -> None:
        self._response = response
        self._task_id = task_id
        self._remaining = limit
        self.content_length: int | None = response.content_length
        self.content_type: str | None = response.headers.get("Content-Type")
        self.content_encoding: str | None = response.headers.get("Content-Encoding")

    def __aiter__(self) -> DownloadBody:
        return self

    async def __anext__(self) -> bytes:
        size = CHUNK if self._remaining is None else min(CHUNK, self._remaining)
        if size <= 0:
            raise StopAsyncIteration
        failure: NetworkError | None = None
        try:
            chunk = await self._response.content.read(size)
        except aiohttp.ClientPayloadError:
            failure = NetworkError("the image download was cut short", operation="download")
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = network_error(exc, "download", sent=True)
        if failure is not None:
            raise failure  # outside the except block: aiohttp's error (and its headers) stay behind
        if not chunk:
            raise StopAsyncIteration
        if self._remaining is not None:
            self._remaining -= len(chunk)
        return chunk


class OpenDownload:
    """``async with``: an image response opened for streaming, released when the block ends.

    (A class rather than an async generator: one is opened per image, and the
    generator's machinery costs more than the rest of this.)
    """

    __slots__ = ("_limit", "_opening", "_response", "_task_id")

    def __init__(
        self,
        opening: Coroutine[Any, Any, aiohttp.ClientResponse],
        task_id: str | None,
        limit: int | None,
    ) -> None:
        self._opening = opening
        self._task_id = task_id
        self._limit = limit
        self._response: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> DownloadBody:
        self._response = await self._opening
        return DownloadBody(self._response, self._task_id, self._limit)

    async def __aexit__(self, *exc_info: object) -> None:
        if self._response is not None:
            self._response.release()


def network_error(exc: BaseException, operation: str, *, sent: bool) -> NetworkError:
    if isinstance(exc, aiohttp.ClientSSLError):
        # A certificate the client does not trust will not become trusted on retry.
        return NetworkError(f"TLS failure: {exc}", operation=operation, sent=sent, retryable=False)
    if isinstance(exc, TimeoutError):
        reason = f"timed out ({type(exc).__name__})"
    else:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return NetworkError(reason, operation=operation, sent=sent)


def provably_unsent(exc: BaseException, trace: CreateTrace) -> bool:
    """True when the request cannot have reached the server."""
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
        return True
    return not trace.sent
