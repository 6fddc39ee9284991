"""The aiohttp sessions of one client: opened lazily, closed once, pools kept apart.

API calls share one pool (``connection_limit``), through a session whose
requests note when a create starts writing (``ApiRequest``); downloads have
a pool of their own, bounded by the client's download slots. Only the API
session carries the key (as a default header, so no request builds it
again); the download session never sees it. No session ever
trusts the environment wholesale: aiohttp would also read ``~/.netrc`` and
add credentials. Proxies from the environment, when the user opts in, are
applied per request.

Sessions, connectors and the client's limits are bound to an event loop, so
a client belongs to the loop it is first used in: a call from any other loop
is refused with a UsageError instead of failing inside asyncio.
"""

from __future__ import annotations

import asyncio
import urllib.request

import aiohttp
import yarl

from .._errors import ClientClosedError, UsageError
from ._config import USER_AGENT, Secret, Timeouts
from ._protocol import install as install_quiet_reads
from ._wire import ApiRequest

__all__ = ["Sessions"]

CLOSED = "the client is closed and cannot be reopened; create a new NanoBanana to continue"
OTHER_LOOP = (
    "this NanoBanana client belongs to the event loop it was first used in and cannot be "
    "used from another one (such as a second asyncio.run); create a NanoBanana in the "
    "coroutine that uses it: 'async with NanoBanana(...) as client'"
)


class Sessions:
    """Owns the client's sessions and connectors."""

    def __init__(
        self,
        *,
        api_key: Secret | None,
        pool_limit: int,
        timeouts: Timeouts,
        trust_env: bool,
        resolver: aiohttp.abc.AbstractResolver | None,
    ) -> None:
        self._pool_limit = pool_limit
        self._timeouts = timeouts
        self._resolver = resolver
        self._api_headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if api_key is not None:
            self._api_headers["Authorization"] = f"Bearer {api_key.reveal()}"
        # Read once, when the client is built; only with trust_env=True.
        self._proxies = urllib.request.getproxies() if trust_env else {}
        self.api_session: aiohttp.ClientSession | None = None
        self.download_session: aiohttp.ClientSession | None = None
        self.closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def check_usable(self) -> None:
        """Refuse a closed client, or a call from another loop than the one the client is in.

        The client's first call binds it to the running loop.
        """
        if self.closed:
            raise ClientClosedError(CLOSED)
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise UsageError(OTHER_LOOP)

    def session(self, *, downloads: bool = False) -> aiohttp.ClientSession:
        """The API session, or the download session (separate pools, separate limits)."""
        self.check_usable()
        if downloads:
            if self.download_session is None:
                self.download_session = self._new_session(
                    self._new_connector(downloads=True),
                    total=None,
                    # Raw bytes only (the type is checked from them), so no compression.
                    headers={
                        "User-Agent": USER_AGENT,
                        "Accept": "image/*",
                        "Accept-Encoding": "identity",
                    },
                )
            return self.download_session
        if self.api_session is None:
            self.api_session = self._new_session(
                self._new_connector(downloads=False),
                total=self._timeouts.total,
                headers=self._api_headers,
                request_class=ApiRequest,
            )
        return self.api_session

    def _new_connector(self, *, downloads: bool) -> aiohttp.TCPConnector:
        # Downloads are bounded by the client's download slots (Limits.downloads), which
        # every download passes, so their pool needs no limit of its own (0: none).
        limit = 0 if downloads else self._pool_limit
        connector = aiohttp.TCPConnector(limit=limit, resolver=self._resolver)
        install_quiet_reads(connector)
        return connector

    def _new_session(
        self,
        connector: aiohttp.BaseConnector,
        *,
        total: float | None,
        headers: dict[str, str],
        request_class: type[aiohttp.ClientRequest] = aiohttp.ClientRequest,
    ) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(
                total=total,
                connect=self._timeouts.pool,
                sock_connect=self._timeouts.connect,
                sock_read=self._timeouts.read,
            ),
            headers=headers,
            # Never True: aiohttp would also read ~/.netrc and add credentials. Proxies
            # from the environment are applied per request instead (see proxy_for).
            trust_env=False,
            request_class=request_class,
        )

    def proxy_for(self, url: yarl.URL) -> str | None:
        """The proxy from the environment for ``url``, when the user opted in with trust_env."""
        if not self._proxies or (url.host and urllib.request.proxy_bypass(url.host)):
            return None
        return self._proxies.get(url.scheme)

    async def aclose(self) -> None:
        """Close every session and connection; safe to call more than once.

        From another loop than the client's own: once that loop has ended, this
        only marks the client closed (its connections went with that loop);
        while that loop is still open, the client must be closed there.
        """
        owner = self._loop
        if (
            not self.closed
            and owner is not None
            and not owner.is_closed()
            and owner is not asyncio.get_running_loop()
        ):
            raise UsageError(
                "this NanoBanana client belongs to another event loop, which is still open; "
                "close it in that loop"
            )
        self.closed = True
        sessions = (self.api_session, self.download_session)
        self.api_session = self.download_session = None
        for session in sessions:
            if session is not None:
                await session.close()
