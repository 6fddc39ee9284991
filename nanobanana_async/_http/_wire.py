"""What crosses the wire besides the request itself: streamed bodies and transport failures.

Transport exceptions become typed SDK errors here, built from aiohttp's
exception *type* and text only (never the request it carries, which holds
the API key's header).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import SimpleNamespace

import aiohttp

from .._errors import NetworkError
from .._models import ImageRequest, Task
from ._config import CHUNK

__all__ = ["AbandonedCreate", "DownloadBody", "network_error", "on_headers_sent", "provably_unsent"]


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


def network_error(exc: BaseException, operation: str, *, sent: bool) -> NetworkError:
    if isinstance(exc, aiohttp.ClientSSLError):
        # A certificate the client does not trust will not become trusted on retry.
        return NetworkError(f"TLS failure: {exc}", operation=operation, sent=sent, retryable=False)
    if isinstance(exc, TimeoutError):
        reason = f"timed out ({type(exc).__name__})"
    else:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return NetworkError(reason, operation=operation, sent=sent)


#: Awaited (shielded) when a create's caller is cancelled: (request, key, sent, task or None).
AbandonedCreate = Callable[[ImageRequest, str, bool, Task | None], Awaitable[None]]


def provably_unsent(exc: BaseException, trace: SimpleNamespace) -> bool:
    """True when the request cannot have reached the server."""
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
        return True
    return not trace.headers_sent


async def on_headers_sent(
    _session: aiohttp.ClientSession, ctx: SimpleNamespace, _params: object
) -> None:
    trace = ctx.trace_request_ctx
    if trace is not None:
        trace.headers_sent = True
