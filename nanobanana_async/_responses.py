"""Turning raw service answers into Python values or typed errors.

Pure functions over bytes, status codes and headers, so they can be fuzzed
without a server. The service's error bodies are undocumented: a JSON
``{"error": "..."}`` or ``{"error": {"message", "code", "type"}}``, a
``{"code", "message"|"msg"}`` object, a gateway's HTML page, or nothing at
all. Each maps to the error class its status (or message) calls for.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from typing import Any

from ._errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    InsufficientBalanceError,
    MalformedResponseError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    TaskNotFoundError,
)
from ._retry import parse_retry_after
from ._text import clean_text

#: Longest excerpt of an unexpected body kept in an error message.
EXCERPT_LENGTH = 160

_BALANCE_WORDS = re.compile(r"balance|quota|credit|insufficient|余额|欠费", re.IGNORECASE)
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<[^>]+>")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


#: One strict decoder for every body (``json.loads`` with options would build one per call).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def decode_json(body: bytes) -> Any:
    """Parse a UTF-8 JSON body strictly (no NaN or Infinity); ValueError when it is not JSON.

    JSON on the wire is UTF-8 (RFC 8259); a leading byte-order mark is tolerated.
    Invalid UTF-8 raises ``UnicodeDecodeError``, itself a ValueError.
    """
    text = body.decode()
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text or text.isspace():
        raise ValueError("empty body")
    try:
        return _DECODER.decode(text)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


def excerpt(body: bytes, limit: int = EXCERPT_LENGTH) -> str:
    """A short, printable, redacted piece of a body for an error message."""
    return clean_text(body[: limit * 4].decode("utf-8", errors="replace"), limit)


def _html_summary(body: bytes) -> str:
    match = _TITLE.search(body[:65536])
    if match:
        title = " ".join(html.unescape(match.group(1).decode("utf-8", "replace")).split())
        if title:
            return f"an HTML page from a gateway: {title[:EXCERPT_LENGTH]}"
    text = " ".join(_TAGS.sub(" ", body[:4096].decode("utf-8", "replace")).split())
    return f"an HTML page from a gateway: {excerpt(text.encode())}" if text else "an HTML page"


def error_details(body: bytes, content_type: str | None) -> tuple[str | None, str | None]:
    """The service's ``(message, code)`` from an error body of any known shape."""
    try:
        data = decode_json(body)
    except ValueError:
        data = None
    if isinstance(data, Mapping):
        return _details_from_mapping(data)
    if data is not None:
        return excerpt(json.dumps(data).encode()), None
    stripped = body.lstrip()[:64].lower()
    if (content_type or "").startswith("text/html") or stripped.startswith(
        (b"<!doctype", b"<html")
    ):
        return _html_summary(body), None
    if not body.strip():
        return None, None
    return excerpt(body), None


def _details_from_mapping(data: Mapping[Any, Any]) -> tuple[str | None, str | None]:
    error = data.get("error")
    code = _code_text(data.get("code"))
    if isinstance(error, Mapping):
        message = _first_text(error, ("message", "msg", "detail"))
        code = _code_text(error.get("code")) or _code_text(error.get("type")) or code
        return message, code
    if isinstance(error, str) and error:
        return clean_text(error, 500), code
    message = _first_text(data, ("message", "msg", "detail", "error_message"))
    if message is not None:
        return message, code
    return excerpt(json.dumps(data, default=str).encode()), code


def _first_text(data: Mapping[Any, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return clean_text(value, 500)
    return None


def _code_text(value: object) -> str | None:
    if isinstance(value, bool) or value is None or value == "":
        return None
    if isinstance(value, (str, int)):
        return str(value)[:64]
    return None


def looks_like_error(data: Mapping[Any, Any]) -> int | None:
    """For a 2xx JSON body without an id: the HTTP-like status it reports, if it is an error.

    Some gateways answer 200 with ``{"code": 401, "msg": "..."}``; such a body
    is treated as the error it describes.
    """
    if "id" in data:
        return None
    code = data.get("code")
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return code
    if data.get("error") not in (None, "", {}):
        return 400
    return None


def error_from_response(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    operation: str,
    task_id: str | None = None,
) -> APIError:
    """The typed error for an error answer: status first, then the message's meaning."""
    content_type = headers.get("Content-Type") or headers.get("content-type")
    message, code = error_details(body, content_type)
    text = message or f"HTTP {status} with an empty body"
    kwargs: dict[str, Any] = {"status": status, "code": code, "operation": operation}
    if task_id is not None:
        kwargs["task_id"] = task_id
    balance = message is not None and bool(_BALANCE_WORDS.search(message))
    if status == 401:
        return AuthenticationError(text, **kwargs)
    if status == 402 or (balance and status in (400, 403)):
        return InsufficientBalanceError(text, **kwargs)
    if status == 403:
        return PermissionDeniedError(text, **kwargs)
    if status == 404 and operation == "query":
        return TaskNotFoundError(text, **kwargs)
    if status == 429:
        return RateLimitedError(text, retry_after=parse_retry_after(headers), **kwargs)
    if 500 <= status <= 599:
        return ServerError(text, **kwargs)
    if status in (400, 409, 413, 422):
        return BadRequestError(text, **kwargs)
    if status == 404:
        text += " (is the base URL right?)"
    return APIError(text, **kwargs)


def malformed(
    message: str,
    *,
    operation: str,
    body_excerpt: str | None = None,
    task_id: str | None = None,
    transient: bool = False,
) -> MalformedResponseError:
    """An unusable answer to ``operation``; one to a create may have been billed."""
    return MalformedResponseError(
        message,
        body_excerpt=body_excerpt,
        may_be_billed=operation == "create",
        task_id=task_id,
        transient=transient,
    )


def task_payload(body: bytes, *, operation: str, task_id: str | None = None) -> Any:
    """The JSON of a 2xx answer; a non-JSON body raises MalformedResponseError."""
    try:
        return decode_json(body)
    except ValueError as exc:
        raise malformed(
            f"the {operation} answer is not JSON ({exc})",
            operation=operation,
            body_excerpt=excerpt(body) or None,
            task_id=task_id,
            transient=True,
        ) from None
