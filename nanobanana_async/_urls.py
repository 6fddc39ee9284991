"""Which URLs the SDK will talk to: the API base URL and the image URLs it downloads.

Plain http is allowed only to loopback hosts (the simulator and tests run
there) unless the user opts in, because the API key and the images would
otherwise cross the network in clear text.
"""

from __future__ import annotations

import functools
import ipaddress

import yarl

from ._errors import ConfigurationError, UnsafeURLError
from ._responses import excerpt

__all__ = ["check_base_url", "check_download_url", "is_loopback", "redacted"]


@functools.lru_cache(maxsize=256)  # asked once per download, of a handful of hosts
def is_loopback(host: str | None) -> bool:
    """True for ``localhost`` and loopback IP addresses, where plain http is harmless."""
    if not host:
        return False
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_base_url(value: str | yarl.URL, *, allow_insecure_http: bool) -> yarl.URL:
    """Validate the API base URL; keep its path prefix, drop a trailing slash."""
    try:
        url = yarl.URL(value)
    except (TypeError, ValueError):
        # The text is not echoed: it may hold a password.
        raise ConfigurationError(
            "base_url is not a URL; expected an absolute http(s) URL such as "
            "https://host/kyyReactApiServer"
        ) from None
    if url.user is not None or url.password is not None:
        raise ConfigurationError(
            "base_url must not carry a user name or password; pass the key as api_key"
        )
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError(
            f"base_url {url.human_repr()!r} must be an absolute http(s) URL "
            "such as https://host/kyyReactApiServer"
        )
    if url.query_string or url.fragment:
        raise ConfigurationError("base_url must not have a query string or fragment")
    if url.scheme == "http" and not is_loopback(url.host) and not allow_insecure_http:
        raise ConfigurationError(
            f"base_url {url.human_repr()!r} uses plain http to a non-loopback host, which would "
            "send the API key in clear text; use https, or pass allow_insecure_http=True"
        )
    return url.with_path(url.path.rstrip("/") or "/")


def check_download_url(
    value: str | yarl.URL, *, allow_insecure_http: bool, task_id: str | None = None
) -> yarl.URL:
    """Validate an image URL before fetching it: http(s) only, plain http only to loopback."""
    try:
        url = yarl.URL(value)
    except (TypeError, ValueError):
        raise UnsafeURLError(
            f"image URL {excerpt(str(value).encode())!r} is not a URL", task_id=task_id
        ) from None
    if url.scheme not in ("http", "https") or not url.host:
        raise UnsafeURLError(
            f"image URL scheme {url.scheme!r} is not fetched (only https, or http to loopback)",
            task_id=task_id,
        )
    if url.scheme == "http" and not is_loopback(url.host) and not allow_insecure_http:
        raise UnsafeURLError(
            f"image URL on {url.host} uses plain http; only https is fetched from non-loopback "
            "hosts unless allow_insecure_http=True",
            task_id=task_id,
        )
    return url


def redacted(url: yarl.URL) -> str:
    """Origin and path of a URL for logs: signed query strings stay out."""
    return str(url.with_query(None).with_fragment(None))
