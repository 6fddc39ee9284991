"""Settings of the HTTP seam that need no aiohttp: defaults, timeouts, and the key's wrapper."""

from __future__ import annotations

from typing import Final

import attrs

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_BASE_URL",
    "MAX_DOWNLOAD_REDIRECTS",
    "MAX_JSON_BYTES",
    "Timeouts",
]

DEFAULT_BASE_URL: Final = "https://zcbservice.aizfw.cn/kyyReactApiServer"
#: The environment variable the API key is read from when none is passed.
API_KEY_ENV: Final = "NANOBANANA_API_KEY"
#: Largest JSON answer read from the API; the real ones are a few hundred bytes.
MAX_JSON_BYTES: Final = 1 << 20
MAX_DOWNLOAD_REDIRECTS: Final = 5
REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
EXPIRED: Final = frozenset({403, 404, 410})
#: Most bytes taken from a download's buffer at once (it holds far less; bigger reads mean
#: fewer trips through the event loop per image).
CHUNK: Final = 1 << 20
USER_AGENT: Final = "nanobanana-async/0.1"


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


class Secret:
    """Holds the API key so that no repr, log line or error can show it."""

    __slots__ = ("_encoded", "_value")

    def __init__(self, value: str) -> None:
        self._value = value
        self._encoded = value.encode()

    def reveal(self) -> str:
        return self._value

    def redact(self, body: bytes) -> bytes:
        """``body`` with every copy of the key replaced by ``<redacted>``."""
        return body.replace(self._encoded, b"<redacted>")

    def __repr__(self) -> str:
        return "<redacted>"

    __str__ = __repr__
