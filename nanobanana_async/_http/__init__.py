"""The HTTP seam: the only package that imports aiohttp and sends requests.

It owns the client's sessions, opened lazily inside the running loop and
closed once; the client belongs to the loop it is first used in. The API
key travels as a per-request header on the two API calls (create and
query), never as a session default and never on a download, whatever host
an image URL names. Nothing here follows redirects for the API; downloads
follow them by hand, https only.
"""

from ._client import HTTPClient
from ._config import API_KEY_ENV, DEFAULT_BASE_URL, MAX_JSON_BYTES, Timeouts
from ._wire import CreateCall, CreateFate, DownloadBody

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_BASE_URL",
    "MAX_JSON_BYTES",
    "CreateCall",
    "CreateFate",
    "DownloadBody",
    "HTTPClient",
    "Timeouts",
]
