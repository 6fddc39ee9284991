"""The aiohttp sessions of one client: opened lazily, closed once, pools kept apart.

API calls share one pool (``connection_limit``); creates see it through a
second session that reports when request headers have left (only creates
need that, and tracing every poll would cost CPU for nothing); downloads
have a pool of their own (``max_concurrent_downloads``). Only the API
sessions carry the key (as a default header, so no request builds it
again); the download session never sees it. No session ever
trusts the environment wholesale: aiohttp would also read ``~/.netrc`` and
add credentials. Proxies from the environment, when the user opts in, are
applied per request.
"""

from __future__ import annotations

import urllib.request

import aiohttp
import yarl

from .._errors import ClientClosedError
from ._config import USER_AGENT, Secret, Timeouts
from ._wire import on_headers_sent

__all__ = ["Sessions"]


class Sessions:
    """Owns the client's sessions and connectors."""

    def __init__(
        self,
        *,
        api_key: Secret | None,
        pool_limit: int,
        download_limit: int,
        timeouts: Timeouts,
        trust_env: bool,
        resolver: aiohttp.abc.AbstractResolver | None,
    ) -> None:
        self._pool_limit = pool_limit
        self._download_limit = download_limit
        self._timeouts = timeouts
        self._resolver = resolver
        self._api_headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if api_key is not None:
            self._api_headers["Authorization"] = f"Bearer {api_key.reveal()}"
        # Read once, when the client is built; only with trust_env=True.
        self._proxies = urllib.request.getproxies() if trust_env else {}
        self.api_session: aiohttp.ClientSession | None = None
        self.traced_session: aiohttp.ClientSession | None = None
        self.download_session: aiohttp.ClientSession | None = None
        self.closed = False

    def session(self, *, downloads: bool = False) -> aiohttp.ClientSession:
        """The API session, or the download session (separate pools, separate limits)."""
        if self.closed:
            raise ClientClosedError("the client is closed; create a new NanoBanana to continue")
        if downloads:
            if self.download_session is None:
                self.download_session = self._new_session(
                    self._new_connector(downloads=True),
                    total=None,
                    headers={"User-Agent": USER_AGENT},
                )
            return self.download_session
        if self.api_session is None:
            self.api_session = self._new_session(
                self._new_connector(downloads=False),
                total=self._timeouts.total,
                headers=self._api_headers,
            )
        return self.api_session

    def create_session(self) -> aiohttp.ClientSession:
        """The API pool seen through a session that reports when request headers have left.

        Only creates need to know (it decides whether a failed create may have been
        billed); tracing every poll would cost CPU for nothing, so creates use this
        second session over the same connector.
        """
        api = self.session()
        if self.traced_session is None:
            trace = aiohttp.TraceConfig()
            trace.on_request_headers_sent.append(on_headers_sent)
            self.traced_session = self._new_session(
                api.connector,
                total=self._timeouts.total,
                headers=self._api_headers,
                owner=False,
                trace=trace,
            )
        return self.traced_session

    def _new_connector(self, *, downloads: bool) -> aiohttp.TCPConnector:
        limit = self._download_limit if downloads else self._pool_limit
        return aiohttp.TCPConnector(limit=limit, resolver=self._resolver)

    def _new_session(
        self,
        connector: aiohttp.BaseConnector | None,
        *,
        total: float | None,
        headers: dict[str, str],
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
            headers=headers,
            # Never True: aiohttp would also read ~/.netrc and add credentials. Proxies
            # from the environment are applied per request instead (see proxy_for).
            trust_env=False,
            trace_configs=[trace] if trace is not None else None,
        )

    def proxy_for(self, url: yarl.URL) -> str | None:
        """The proxy from the environment for ``url``, when the user opted in with trust_env."""
        if not self._proxies or (url.host and urllib.request.proxy_bypass(url.host)):
            return None
        return self._proxies.get(url.scheme)

    async def aclose(self) -> None:
        """Close every session and connection; safe to call more than once."""
        self.closed = True
        # The traced session borrows the API connector: close it before its owner.
        sessions = (self.traced_session, self.api_session, self.download_session)
        self.traced_session = self.api_session = self.download_session = None
        for session in sessions:
            if session is not None:
                await session.close()
