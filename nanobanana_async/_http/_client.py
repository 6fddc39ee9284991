"""HTTPClient: the service's three requests (create, query, image download) over the sessions.

Create and query carry the key and never follow redirects; a create whose
fate is unknown raises SubmissionUncertainError, never a second attempt
from here. Downloads carry no key or cookie, follow redirects by hand
(https only, at most five hops) and stream their body.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import yarl

from .._errors import (
    APIError,
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
from .._logs import logger, this_attempt
from .._models import ImageRequest, Task, task_from_answer, validate_task_id
from .._responses import error_from_response, excerpt, looks_like_error, malformed, task_payload
from .._urls import check_download_url, redacted
from ._config import (
    API_KEY_ENV,
    EXPIRED,
    MAX_DOWNLOAD_REDIRECTS,
    MAX_JSON_BYTES,
    REDIRECTS,
    Secret,
    Timeouts,
)
from ._sessions import Sessions
from ._wire import CreateCall, CreateTrace, OpenDownload, network_error, provably_unsent, sending

__all__ = ["HTTPClient"]


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
        allow_insecure_http: bool,
        idempotency_header: str | None = None,
        resolver: aiohttp.abc.AbstractResolver | None = None,
    ) -> None:
        self.base_url = base_url
        self._idempotency_header = idempotency_header
        self._key = Secret(api_key) if api_key else None
        self._allow_insecure_http = allow_insecure_http
        self._sessions = Sessions(
            api_key=self._key,
            pool_limit=pool_limit,
            timeouts=timeouts,
            trust_env=trust_env,
            resolver=resolver,
        )
        self._create_url = base_url.joinpath("v1", "banana", "images")
        self._result_url = base_url.joinpath("v1", "result")
        self._query_template = f"{self._result_url}/{{task_id}}"

    @property
    def closed(self) -> bool:
        """True once ``aclose()`` has run."""
        return self._sessions.closed

    def check_usable(self) -> None:
        """Raise ClientClosedError once closed, UsageError from another loop than the client's."""
        self._sessions.check_usable()

    def _require_key(self) -> None:
        """The API sessions send the key themselves; without one, fail before any request."""
        if self._key is None:
            raise ConfigurationError(
                f"no API key: pass api_key= to NanoBanana or set the {API_KEY_ENV} "
                "environment variable"
            )

    async def _read_capped(self, response: aiohttp.ClientResponse, operation: str) -> bytes:
        declared = response.content_length
        if declared is not None and declared > MAX_JSON_BYTES:
            raise malformed(
                f"the {operation} answer declares {declared} bytes, over the "
                f"{MAX_JSON_BYTES}-byte limit",
                operation=operation,
            )
        body = await response.content.read(MAX_JSON_BYTES + 1)
        # A body that came whole in one read (as the declared length says) needs no second.
        while (declared is None or len(body) < declared) and len(body) <= MAX_JSON_BYTES:
            more = await response.content.read(MAX_JSON_BYTES + 1 - len(body))
            if not more:
                break
            body += more
        if len(body) > MAX_JSON_BYTES:
            raise malformed(
                f"the {operation} answer is larger than {MAX_JSON_BYTES} bytes",
                operation=operation,
            )
        if self._key is not None:
            # A service that echoes the key back must not get it into our errors.
            body = self._key.redact(body)
        return body

    def start_create(self, request: ImageRequest, *, client_key: str) -> CreateCall:
        """Send one paid create; await the call's ``answer()`` for its Task.

        A create whose fate is unknown raises ``SubmissionUncertainError``,
        never a second attempt from here. A caller that stops waiting asks the
        call's ``abandon()`` what became of it.
        """
        trace = CreateTrace()
        return CreateCall(self._create_once(request, client_key, trace), trace)

    async def _create_once(
        self, request: ImageRequest, client_key: str, trace: CreateTrace
    ) -> Task:
        self._require_key()
        sending(trace)  # this task's own context: only this create's request sees it
        session = self._sessions.session()
        headers = {self._idempotency_header: client_key} if self._idempotency_header else None
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
                proxy=self._sessions.proxy_for(self._create_url),
            ) as response:
                status, answer_headers = response.status, response.headers
                body = await self._read_capped(response, "create")
        except (aiohttp.ClientError, TimeoutError) as exc:
            if provably_unsent(exc, trace):
                failure: NanoBananaError | None = network_error(exc, "create", sent=False)
            else:
                failure = uncertain(f"{type(exc).__name__} after the request was sent")
        except MalformedResponseError as exc:
            failure = uncertain(exc.message)
        else:
            failure = None
        if failure is not None:
            raise failure  # outside the except block: aiohttp's error (and its headers) stay behind
        self._log("POST", self._create_url, status, started)
        if status in REDIRECTS:
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
        try:
            return self._task_from(status, body, answer_headers, operation="create")
        except ServerError as exc:
            # A 200 whose body reports a 5xx: as with a real one, the task may exist.
            raise uncertain(
                f"the service answered 200 reporting {exc.status}: {exc.message}"
            ) from None

    async def query(self, task_id: str) -> Task:
        """One status query for ``task_id`` (free and idempotent)."""
        return await self.status_query(task_id)()

    def status_query(self, task_id: str) -> Callable[[], Awaitable[Task]]:
        """The status query of one task, ready to send as often as needed.

        The id is checked and its URL built once here, not on every poll.
        """
        url = self._result_url.joinpath(validate_task_id(task_id))
        return functools.partial(self._query, task_id, url)

    async def _query(self, task_id: str, url: yarl.URL) -> Task:
        self._require_key()
        session = self._sessions.session()
        started = time.monotonic()
        try:
            async with session.get(
                url, allow_redirects=False, proxy=self._sessions.proxy_for(url)
            ) as response:
                status, answer_headers = response.status, response.headers
                body = await self._read_capped(response, "query")
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure: NetworkError | None = network_error(exc, "query", sent=True)
        else:
            failure = None
        if failure is not None:
            raise failure  # outside the except block: aiohttp's error (and its headers) stay behind
        self._log("GET", self._query_template, status, started)
        if status in REDIRECTS:
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
            # A query's id was checked when its URL was built (status_query).
            task = task_from_answer(data, expected_id=task_id, id_checked=task_id is not None)
        except MalformedResponseError as exc:
            raise malformed(
                exc.message,
                operation=operation,
                body_excerpt=excerpt(body),
                task_id=exc.task_id or task_id,
            ) from None
        if task_id is not None and task.id != task_id:
            raise MalformedResponseError(
                f"asked for task {task_id} but the answer is about task {task.id}", task_id=task_id
            )
        return task

    def open_download(
        self, url: str, *, task_id: str | None = None, max_bytes: int | None = None
    ) -> OpenDownload:
        """Open an image URL for streaming: no key or cookies, no compression, redirects by hand.

        Use it as ``async with http.open_download(url) as body``; the response is
        released when the block ends.
        """
        limit = None if max_bytes is None else max_bytes + 1
        return OpenDownload(self._download_response(url, task_id), task_id, limit)

    async def _download_response(self, url: str, task_id: str | None) -> aiohttp.ClientResponse:
        """The image's 200 response, after following redirects by hand (https only, at most 5)."""
        session = self._sessions.session(downloads=True)
        target = check_download_url(
            url, allow_insecure_http=self._allow_insecure_http, task_id=task_id
        )
        for _hop in range(MAX_DOWNLOAD_REDIRECTS + 1):
            started = time.monotonic()
            failure: NetworkError | None = None
            try:
                response = await session.get(
                    target,
                    allow_redirects=False,
                    auto_decompress=False,
                    proxy=self._sessions.proxy_for(target),
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure = network_error(exc, "download", sent=True)
            if failure is not None:
                raise failure  # outside the except block: aiohttp's error stays behind
            try:
                self._log("GET", target, response.status, started)
                status = response.status
                if status == 200:
                    return response
                if status in REDIRECTS:
                    target = self._next_hop(target, response.headers.get("Location"), task_id)
                    continue
                if status in EXPIRED:
                    raise ResultExpiredError(task_id or "?", status=status)
                raise self._download_status_error(response, task_id)
            finally:
                if response.status != 200:
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

    def _log(self, method: str, where: yarl.URL | str, status: int, started: float) -> None:
        """One DEBUG line per request: method, origin and path (template), status, attempt, time."""
        if logger.isEnabledFor(logging.DEBUG):
            elapsed = (time.monotonic() - started) * 1000
            shown = redacted(where) if isinstance(where, yarl.URL) else where
            logger.debug(
                "%s %s -> %d in %.1f ms (attempt %d)",
                method,
                shown,
                status,
                elapsed,
                this_attempt(),
            )

    async def aclose(self) -> None:
        """Close every session and connection; safe to call more than once."""
        await self._sessions.aclose()
