"""The one place that sends HTTP: URLs, auth, timeouts, capped reads and error mapping.

Only this module imports aiohttp. It owns one ``ClientSession`` per client,
opened lazily inside the running loop and closed once. The API key travels
as a per-request header on the two API calls (create and query), never as a
session default and never on a download, whatever host an image URL names.
Nothing here follows redirects for the API; downloads follow them by hand,
https only.
"""

from __future__ import annotations

import logging
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any, Final

import aiohttp
import anyio
import attrs
import yarl

from ._errors import (
    APIError,
    ClientClosedError,
    ConfigurationError,
    DownloadError,
    MalformedResponseError,
    NanoBananaError,
    NetworkError,
    ResultExpiredError,
    ServerError,
    SubmissionUncertainError,
    UnsafeURLError,
)
from ._models import ImageRequest, Task, validate_task_id
from ._responses import error_from_response, excerpt, looks_like_error, task_payload
from ._urls import check_download_url, redacted

__all__ = ["DEFAULT_BASE_URL", "DownloadBody", "HTTPClient", "Timeouts"]

logger = logging.getLogger("nanobanana_async")

DEFAULT_BASE_URL: Final = "https://zcbservice.aizfw.cn/kyyReactApiServer"
API_KEY_ENV: Final = "NANOBANANA_API_KEY"
#: Largest JSON answer read from the API; the real ones are a few hundred bytes.
MAX_JSON_BYTES: Final = 1 << 20
MAX_DOWNLOAD_REDIRECTS: Final = 5
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_EXPIRED: Final = frozenset({403, 404, 410})
_CHUNK: Final = 1 << 16
_USER_AGENT: Final = "nanobanana-async/0.1"


@attrs.frozen
class Timeouts:
    """Per-phase network timeouts in seconds.

    ``connect`` bounds opening a socket, ``pool`` bounds waiting for a free
    connection plus connecting (a create that times out there was never sent,
    so it may be retried), ``read`` bounds any silence while reading an
    answer, ``total`` bounds one whole API call. Downloads use ``connect``,
    ``pool`` and ``read`` but no total: a large image on a slow link is fine
    as long as bytes keep arriving.
    """

    connect: float = 10.0
    read: float = 30.0
    total: float = 60.0
    pool: float = 30.0


class _Secret:
    """Holds the API key so that no repr, log line or error can show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<redacted>"

    __str__ = __repr__


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
        size = _CHUNK if self._remaining is None else min(_CHUNK, self._remaining)
        if size <= 0:
            raise StopAsyncIteration
        failure: NetworkError | None = None
        try:
            chunk = await self._response.content.read(size)
        except aiohttp.ClientPayloadError:
            failure = NetworkError("the image download was cut short", operation="download")
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = _network_error(exc, "download", sent=True)
        if failure is not None:
            raise failure  # outside the except block: aiohttp's error (and its headers) stay behind
        if not chunk:
            raise StopAsyncIteration
        if self._remaining is not None:
            self._remaining -= len(chunk)
        return chunk


def _network_error(exc: BaseException, operation: str, *, sent: bool) -> NetworkError:
    if isinstance(exc, aiohttp.ClientSSLError):
        # A certificate the client does not trust will not become trusted on retry.
        return NetworkError(f"TLS failure: {exc}", operation=operation, sent=sent, retryable=False)
    if isinstance(exc, TimeoutError):
        reason = f"timed out ({type(exc).__name__})"
    else:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return NetworkError(reason, operation=operation, sent=sent)


#: Called when a create's caller was cancelled after the request left: (request, key, task).
AbandonedCreate = Callable[[ImageRequest, str, Task | None], None]


def _provably_unsent(exc: BaseException, trace: SimpleNamespace) -> bool:
    """True when the request cannot have reached the server."""
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
        return True
    return not trace.headers_sent


async def _on_headers_sent(
    _session: aiohttp.ClientSession, ctx: SimpleNamespace, _params: object
) -> None:
    trace = ctx.trace_request_ctx
    if trace is not None:
        trace.headers_sent = True


class HTTPClient:
    """Sends the service's three kinds of request over one lazily opened session."""

    def __init__(
        self,
        *,
        base_url: yarl.URL,
        api_key: str | None,
        pool_limit: int,
        timeouts: Timeouts,
        trust_env: bool,
        download_limit: int = 16,
        allow_insecure_http: bool,
        idempotency_header: str | None = None,
        resolver: aiohttp.abc.AbstractResolver | None = None,
    ) -> None:
        self.base_url = base_url
        self._resolver = resolver
        self._idempotency_header = idempotency_header
        self._key = _Secret(api_key) if api_key else None
        self._pool_limit = pool_limit
        self._timeouts = timeouts
        # Read once, when the client is built; only with trust_env=True.
        self._proxies = urllib.request.getproxies() if trust_env else {}
        self._allow_insecure_http = allow_insecure_http
        self._download_limit = download_limit
        self._api_session: aiohttp.ClientSession | None = None
        self._traced_session: aiohttp.ClientSession | None = None
        self._download_session: aiohttp.ClientSession | None = None
        self._closed = False
        self._create_url = base_url.joinpath("v1", "banana", "images")
        self._result_url = base_url.joinpath("v1", "result")

    @property
    def closed(self) -> bool:
        """True once ``aclose()`` has run."""
        return self._closed

    def _session(self, *, downloads: bool = False) -> aiohttp.ClientSession:
        """The API session, or the download session (separate pools, separate limits)."""
        if self._closed:
            raise ClientClosedError("the client is closed; create a new NanoBanana to continue")
        if downloads:
            if self._download_session is None:
                self._download_session = self._new_session(
                    self._new_connector(downloads=True), total=None
                )
            return self._download_session
        if self._api_session is None:
            self._api_session = self._new_session(
                self._new_connector(downloads=False), total=self._timeouts.total
            )
        return self._api_session

    def _create_session(self) -> aiohttp.ClientSession:
        """The API pool seen through a session that reports when request headers have left.

        Only creates need to know (it decides whether a failed create may have been
        billed); tracing every poll would cost CPU for nothing, so creates use this
        second session over the same connector.
        """
        api = self._session()
        if self._traced_session is None:
            trace = aiohttp.TraceConfig()
            trace.on_request_headers_sent.append(_on_headers_sent)
            self._traced_session = self._new_session(
                api.connector, total=self._timeouts.total, owner=False, trace=trace
            )
        return self._traced_session

    def _new_connector(self, *, downloads: bool) -> aiohttp.TCPConnector:
        limit = self._download_limit if downloads else self._pool_limit
        return aiohttp.TCPConnector(limit=limit, resolver=self._resolver)

    def _new_session(
        self,
        connector: aiohttp.BaseConnector | None,
        *,
        total: float | None,
        owner: bool = True,
        trace: aiohttp.TraceConfig | None = None,
    ) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=connector,
            connector_owner=owner,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(
                total=total,
                connect=self._timeouts.pool,
                sock_connect=self._timeouts.connect,
                sock_read=self._timeouts.read,
            ),
            headers={"User-Agent": _USER_AGENT},
            # Never True: aiohttp would also read ~/.netrc and add credentials. Proxies
            # from the environment are applied per request instead (see _proxy_for).
            trust_env=False,
            trace_configs=[trace] if trace is not None else None,
        )

    def _proxy_for(self, url: yarl.URL) -> str | None:
        """The proxy from the environment for ``url``, when the user opted in with trust_env."""
        if not self._proxies or (url.host and urllib.request.proxy_bypass(url.host)):
            return None
        return self._proxies.get(url.scheme)

    def _auth_headers(self) -> dict[str, str]:
        if self._key is None:
            raise ConfigurationError(
                f"no API key: pass api_key= to NanoBanana or set the {API_KEY_ENV} "
                "environment variable"
            )
        return {"Authorization": f"Bearer {self._key.reveal()}", "Accept": "application/json"}

    async def _read_capped(self, response: aiohttp.ClientResponse, operation: str) -> bytes:
        declared = response.content_length
        if declared is not None and declared > MAX_JSON_BYTES:
            raise MalformedResponseError(
                f"the {operation} answer declares {declared} bytes, over the "
                f"{MAX_JSON_BYTES}-byte limit",
                may_be_billed=operation == "create",
            )
        body = await response.content.read(MAX_JSON_BYTES + 1)
        while len(body) <= MAX_JSON_BYTES:
            more = await response.content.read(MAX_JSON_BYTES + 1 - len(body))
            if not more:
                break
            body += more
        if len(body) > MAX_JSON_BYTES:
            raise MalformedResponseError(
                f"the {operation} answer is larger than {MAX_JSON_BYTES} bytes",
                may_be_billed=operation == "create",
            )
        if self._key is not None:
            # A service that echoes the key back must not get it into our errors.
            body = body.replace(self._key.reveal().encode(), b"<redacted>")
        return body

    async def create(
        self,
        request: ImageRequest,
        *,
        client_key: str,
        grace: float,
        on_abandoned: AbandonedCreate | None = None,
    ) -> Task:
        """Send one paid create; ``SubmissionUncertainError`` if it may be billed unseen.

        If the caller is cancelled after the request left, the answer is still
        awaited for up to ``grace`` seconds (shielded) and handed to
        ``on_abandoned`` (the Task, or None if no answer came), so a billed
        task id is not lost. Cancelled before sending, nothing is billed.
        """
        trace = SimpleNamespace(headers_sent=False)
        answer: list[Task | Exception] = []
        finished = anyio.Event()
        shield = anyio.CancelScope(shield=True)
        abandoned = False

        async def attempt() -> None:
            with shield:
                try:
                    answer.append(await self._create_once(request, client_key, trace))
                except Exception as exc:  # handed back to the caller below
                    answer.append(exc)
            finished.set()

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(attempt)
                try:
                    await finished.wait()
                except anyio.get_cancelled_exc_class():
                    if trace.headers_sent:
                        abandoned = True
                        shield.deadline = anyio.current_time() + grace
                    else:
                        shield.cancel()
                    raise
        finally:
            if abandoned and on_abandoned is not None:
                first = answer[0] if answer else None
                on_abandoned(request, client_key, first if isinstance(first, Task) else None)
        result = answer[0]
        if isinstance(result, Exception):
            raise result
        return result

    async def _create_once(
        self, request: ImageRequest, client_key: str, trace: SimpleNamespace
    ) -> Task:
        session = self._create_session()
        headers = self._auth_headers()
        if self._idempotency_header:
            headers[self._idempotency_header] = client_key
        sent_at = time.time()
        started = time.monotonic()

        def uncertain(reason: str) -> SubmissionUncertainError:
            return SubmissionUncertainError(
                reason, request=request, submitted_at=sent_at, client_key=client_key
            )

        try:
            async with session.post(
                self._create_url,
                json=request.to_payload(),
                headers=headers,
                allow_redirects=False,
                trace_request_ctx=trace,
                proxy=self._proxy_for(self._create_url),
            ) as response:
                status, answer_headers = response.status, response.headers
                body = await self._read_capped(response, "create")
        except (aiohttp.ClientError, TimeoutError) as exc:
            if _provably_unsent(exc, trace):
                failure: NanoBananaError | None = _network_error(exc, "create", sent=False)
            else:
                failure = uncertain(f"{type(exc).__name__} after the request was sent")
        except MalformedResponseError as exc:
            failure = uncertain(exc.message)
        else:
            failure = None
        if failure is not None:
            raise failure  # outside the except block: aiohttp's error (and its headers) stay behind
        self._log("POST", self._create_url, status, started)
        if status in _REDIRECTS:
            location = yarl.URL(answer_headers.get("Location", ""))
            raise APIError(
                f"the service redirected the create to {location.host or 'an unknown host'}; "
                "paid requests never follow redirects: check base_url",
                status=status,
                operation="create",
            )
        if 500 <= status <= 599:
            error = error_from_response(status, body, answer_headers, operation="create")
            raise uncertain(f"the service answered HTTP {status}: {error.message}")
        return self._task_from(status, body, answer_headers, operation="create")

    async def query(self, task_id: str) -> Task:
        """One status query for ``task_id`` (free and idempotent)."""
        validate_task_id(task_id)
        session = self._session()
        headers = self._auth_headers()
        url = self._result_url.joinpath(task_id)
        started = time.monotonic()
        try:
            async with session.get(
                url, headers=headers, allow_redirects=False, proxy=self._proxy_for(url)
            ) as response:
                status, answer_headers = response.status, response.headers
                body = await self._read_capped(response, "query")
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure: NetworkError | None = _network_error(exc, "query", sent=True)
        else:
            failure = None
        if failure is not None:
            raise failure  # outside the except block: aiohttp's error (and its headers) stay behind
        self._log("GET", url, status, started)
        if status in _REDIRECTS:
            raise APIError(
                "the service redirected a task query; the key is only sent to the API origin",
                status=status,
                operation="query",
                task_id=task_id,
            )
        return self._task_from(status, body, answer_headers, operation="query", task_id=task_id)

    def _task_from(
        self,
        status: int,
        body: bytes,
        headers: Mapping[str, str],
        *,
        operation: str,
        task_id: str | None = None,
    ) -> Task:
        if not 200 <= status <= 299:
            raise error_from_response(status, body, headers, operation=operation, task_id=task_id)
        data: Any = task_payload(body, operation=operation, task_id=task_id)
        if isinstance(data, Mapping):
            reported = looks_like_error(data)
            if reported is not None:
                raise error_from_response(
                    reported, body, headers, operation=operation, task_id=task_id
                )
        try:
            task = Task.from_response(data, expected_id=task_id if operation == "query" else None)
        except MalformedResponseError as exc:
            raise MalformedResponseError(
                exc.message,
                body_excerpt=excerpt(body),
                may_be_billed=operation == "create",
                task_id=exc.task_id or task_id,
            ) from None
        if task_id is not None and task.id != task_id:
            raise MalformedResponseError(
                f"asked for task {task_id} but the answer is about task {task.id}", task_id=task_id
            )
        return task

    @asynccontextmanager
    async def open_download(
        self, url: str, *, task_id: str | None = None, max_bytes: int | None = None
    ) -> AsyncIterator[DownloadBody]:
        """Open an image URL for streaming: no key or cookies, no compression, redirects by hand."""
        session = self._session(downloads=True)
        target = check_download_url(
            url, allow_insecure_http=self._allow_insecure_http, task_id=task_id
        )
        for _hop in range(MAX_DOWNLOAD_REDIRECTS + 1):
            started = time.monotonic()
            failure: NetworkError | None = None
            try:
                response = await session.get(
                    target,
                    headers={"Accept-Encoding": "identity", "Accept": "image/*"},
                    allow_redirects=False,
                    auto_decompress=False,
                    proxy=self._proxy_for(target),
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure = _network_error(exc, "download", sent=True)
            if failure is not None:
                raise failure  # outside the except block: aiohttp's error stays behind
            try:
                self._log("GET", target, response.status, started)
                if response.status in _REDIRECTS:
                    target = self._next_hop(target, response.headers.get("Location"), task_id)
                    continue
                if response.status in _EXPIRED:
                    raise ResultExpiredError(task_id or "?", status=response.status)
                if response.status != 200:
                    raise self._download_status_error(response, task_id)
                limit = None if max_bytes is None else max_bytes + 1
                yield DownloadBody(response, task_id, limit)
                return
            finally:
                response.release()
        raise DownloadError(
            f"the image URL redirected more than {MAX_DOWNLOAD_REDIRECTS} times", task_id=task_id
        )

    def _next_hop(self, current: yarl.URL, location: str | None, task_id: str | None) -> yarl.URL:
        if not location:
            raise DownloadError("the file host sent a redirect without a Location", task_id=task_id)
        try:
            target = current.join(yarl.URL(location))
        except ValueError:
            raise DownloadError(
                "the file host sent an unusable redirect", task_id=task_id
            ) from None
        if current.scheme == "https" and target.scheme == "http":
            raise UnsafeURLError(
                f"the file host redirected from https to plain http on {target.host}; refused",
                task_id=task_id,
            )
        return check_download_url(
            target, allow_insecure_http=self._allow_insecure_http, task_id=task_id
        )

    @staticmethod
    def _download_status_error(
        response: aiohttp.ClientResponse, task_id: str | None
    ) -> NanoBananaError:
        status = response.status
        if status >= 500 or status in (408, 429):
            return ServerError(
                f"the file host answered HTTP {status}",
                status=status,
                operation="download",
                task_id=task_id,
            )
        return DownloadError(f"the file host answered HTTP {status}", task_id=task_id)

    def _log(self, method: str, url: yarl.URL, status: int, started: float) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            elapsed = (time.monotonic() - started) * 1000
            logger.debug("%s %s -> %d in %.1f ms", method, redacted(url), status, elapsed)

    async def aclose(self) -> None:
        """Close both sessions and their connections; safe to call more than once."""
        self._closed = True
        # The traced session borrows the API connector: close it before its owner.
        sessions = (self._traced_session, self._api_session, self._download_session)
        self._traced_session = self._api_session = self._download_session = None
        for session in sessions:
            if session is not None:
                await session.close()
