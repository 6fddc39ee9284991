"""The response parsers take any bytes and never crash (docs/reliability.md, case 40).

The parsers are pure functions over bytes, statuses and headers
(``_responses.decode_json`` / ``task_payload`` / ``error_from_response``,
``Task.from_response`` and ``_retry.parse_retry_after``), so Hypothesis
drives them directly: arbitrary JSON (huge numbers, deep nesting, hostile
ids), raw bytes (NaN and Infinity literals, a BOM, invalid UTF-8, other
encodings), and arbitrary Retry-After headers. The only exceptions allowed
out are the SDK's own typed ones. ``NANOBANANA_FUZZ_EXAMPLES=5000`` searches
harder than the quick default.

The stateful half (submit, crash, resume, with "creates <=
inputs" and "no journal row lost" as invariants) is in
``test_journal_stateful.py``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nanobanana_async import (
    APIError,
    MalformedResponseError,
    RateLimitedError,
    Task,
    TaskStatus,
)
from nanobanana_async._responses import (
    EXCERPT_LENGTH,
    decode_json,
    error_from_response,
    excerpt,
    looks_like_error,
    task_payload,
)
from nanobanana_async._retry import parse_retry_after

FUZZ = settings(
    max_examples=int(os.environ.get("NANOBANANA_FUZZ_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Text the service could send and json can carry: no lone surrogates (those are a known bug,
# see test_lone_surrogates_in_service_text_neither_crash_nor_poison_messages below).
text = st.text(st.characters(codec="utf-8"), max_size=40)
#: Integers up to 4,000 digits: json.dumps and int() refuse more than 4,300.
huge_ints = st.integers(min_value=-(10**4000), max_value=10**4000)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | huge_ints
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=20,
)
valid_ids = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
hostile_ids = st.sampled_from(
    ["../../x", "a/b", "", ".", "..", "CON", "nul", "a\x00b", "x" * 300, "a\u202eb", "%2e%2e"]
)
statuses = st.sampled_from(
    ["queued", "PENDING", "processing", "Completed", "succeeded", "failed", "error", "weird", ""]
)
task_like = st.fixed_dictionaries(
    {},
    optional={
        "id": valid_ids | hostile_ids | json_values,
        "status": statuses | json_values,
        "created": huge_ints | st.floats() | json_values,
        "image_url": st.just("https://cdn.example/x.png") | json_values,
        "error": text | json_values,
        "model": text | json_values,
        "object": text,
        "code": st.integers(0, 999) | json_values,
        "message": text,
    },
)


def _nested(depth: int, opener: bytes, closer: bytes, inner: bytes = b"") -> bytes:
    return opener * depth + inner + closer * depth


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


raw_literals = st.sampled_from(
    [
        b'{"id":"abc","status":"completed","image_url":"https://x/y.png","created":NaN}',
        b'{"id":"abc","status":"queued","created":Infinity}',
        b'{"id":"abc","status":"queued","created":-Infinity}',
        b'{"id":"abc","status":"queued","created":1e999}',
        b'{"id":NaN}',
        b"[NaN, Infinity]",
        b"NaN",
        b'{"id":"abc","status":"queued","created":' + b"9" * 5000 + b"}",
        b'{"id":' + b"1" * 5000 + b"}",
        b"\xef\xbb\xbf" + b'{"id":"abc","status":"queued"}',
        b'\xef\xbb\xbf{"id":"abc","status":"completed"}',
        '{"id":"abc","status":"queued"}'.encode("utf-16"),
        '{"id":"abc","status":"queued"}'.encode("utf-32"),
        b'{"id":"ab\xffc","status":"queued"}',
        b'{"id":"abc","status":"qu\xc3"}',
        b"\x00\x00\x00",
        b"",
        b"   \r\n ",
        b"<html><title>502 Bad Gateway</title></html>",
        b'{"id":"abc"',
        b'{"id":"abc","status":"queued"}{"id":"def"}',
    ]
)
deep = st.integers(1, 3000).flatmap(
    lambda n: st.sampled_from(
        [
            _nested(n, b"[", b"]"),
            _nested(n, b'{"a":', b"}", b"1"),
            b'{"id":"abc","status":' + _nested(n, b"[", b"]") + b"}",
            b'{"id":"abc","status":"failed","error":' + _nested(n, b'{"m":', b"}", b"1") + b"}",
            b'{"id":' + _nested(n, b"[", b"]") + b"}",
        ]
    )
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A JSON body with one byte replaced, inserted or cut short."""
    body = bytearray(_json_bytes(draw(task_like)))
    position = draw(st.integers(0, max(0, len(body) - 1)))
    action = draw(st.sampled_from(["replace", "insert", "cut"]))
    byte = draw(st.integers(0, 255))
    if action == "replace" and body:
        body[position] = byte
    elif action == "insert":
        body.insert(position, byte)
    else:
        del body[position:]
    return bytes(body)


bodies = (
    st.binary(max_size=120)
    | st.builds(_json_bytes, json_values)
    | st.builds(_json_bytes, task_like)
    | st.builds(lambda v: b"\xef\xbb\xbf" + _json_bytes(v), task_like)
    | st.builds(lambda v: json.dumps(v).encode("utf-16"), task_like)
    | raw_literals
    | deep
    | mutated()
)


def check_task(task: Task) -> None:
    """What a Task that came out of a parser promises."""
    assert isinstance(task.id, str)
    assert isinstance(task.status, TaskStatus)
    assert task.created is None or 0 <= task.created <= 17_000_000_000
    if task.status is TaskStatus.COMPLETED:
        assert isinstance(task.image_url, str)
    if task.status is TaskStatus.FAILED:
        assert isinstance(task.error, str)
    assert task.raw_status is None or isinstance(task.raw_status, str)
    repr(task)


@FUZZ
@given(body=bodies)
@example(body=_nested(sys.getrecursionlimit() * 2, b"[", b"]"))
def test_decode_json_returns_a_value_or_raises_value_error(body: bytes) -> None:
    """Case 40: any bytes: decode_json gives a value or ValueError (never Recursion/Overflow)."""
    with contextlib.suppress(ValueError):
        decode_json(body)


@FUZZ
@given(body=bodies, operation=st.sampled_from(["create", "query"]), expected=valid_ids | st.none())
def test_any_body_becomes_a_task_or_a_malformed_response(
    body: bytes, operation: str, expected: str | None
) -> None:
    """Case 40: task_payload + Task.from_response: a Task or MalformedResponseError only."""
    refused: MalformedResponseError | None = None
    try:
        data = task_payload(body, operation=operation, task_id=expected)
        task = Task.from_response(data, expected_id=expected)
    except MalformedResponseError as exc:
        refused = exc
    else:
        check_task(task)
    if refused is not None:
        assert str(refused)
        assert refused.body_excerpt is None or len(refused.body_excerpt) <= EXCERPT_LENGTH


@FUZZ
@given(data=task_like | json_values, expected=valid_ids | st.none())
def test_any_json_value_becomes_a_task_or_a_malformed_response(
    data: Any, expected: str | None
) -> None:
    """Case 40: Task.from_response over arbitrary JSON values, hostile ids and huge created."""
    try:
        task = Task.from_response(data, expected_id=expected)
    except MalformedResponseError:
        return
    check_task(task)
    if isinstance(data, dict) and "id" in data:
        assert task.id == data["id"]


headers = st.dictionaries(
    st.sampled_from(["Content-Type", "content-type", "Retry-After", "retry-after", "X-Other"]),
    st.sampled_from(["text/html", "application/json", "2", "-1", "1e30", "nan", "soon"]) | text,
    max_size=3,
)


@FUZZ
@given(
    status=st.integers(100, 599),
    body=bodies,
    answer_headers=headers,
    operation=st.sampled_from(["create", "query", "download"]),
    task_id=valid_ids | st.none(),
)
def test_error_from_response_always_returns_a_typed_api_error(
    status: int,
    body: bytes,
    answer_headers: dict[str, str],
    operation: str,
    task_id: str | None,
) -> None:
    """Case 40: any status, body and headers: an APIError carrying that status, never a crash."""
    error = error_from_response(status, body, answer_headers, operation=operation, task_id=task_id)
    assert isinstance(error, APIError)
    assert error.status == status
    assert str(error)
    repr(error)
    if isinstance(error, RateLimitedError) and error.retry_after is not None:
        assert math.isfinite(error.retry_after)
        assert error.retry_after >= 0


@FUZZ
@given(data=task_like | st.dictionaries(text, json_values, max_size=5))
def test_looks_like_error_says_none_or_an_error_status(data: dict[str, Any]) -> None:
    """Case 40: a 2xx object without an id is an error only with a 4xx/5xx-like status."""
    reported = looks_like_error(data)
    assert reported is None or 400 <= reported <= 599


@FUZZ
@given(body=bodies, limit=st.integers(4, 400))
def test_excerpts_are_short_and_printable(body: bytes, limit: int) -> None:
    """Case 40: an excerpt of anything is at most ``limit`` printable characters."""
    shown = excerpt(body, limit)
    assert len(shown) <= limit
    assert shown.isprintable()


retry_after_values = (
    text
    | st.integers().map(str)
    | st.floats().map(repr)
    | st.floats().map(str)
    | st.sampled_from(["", " ", "1e309", "-0", "+5", "0x10", "1_000", "inf", "NaN", "١٢٣", "3 "])
    | st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ).map(lambda when: format_datetime(when, usegmt=True))
    | st.datetimes().map(lambda when: format_datetime(when))
)
retry_after_headers = st.dictionaries(
    st.sampled_from(
        ["Retry-After", "retry-after", "RETRY-AFTER", "retry-after-ms", "Retry-After-Ms", "X"]
    ),
    retry_after_values,
    max_size=3,
)


@FUZZ
@given(
    answer_headers=retry_after_headers,
    now=st.floats(min_value=-1e12, max_value=1e12),
    cap=st.floats(min_value=0, max_value=1e12),
)
@example(answer_headers={"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"}, now=0.0, cap=60.0)
@example(answer_headers={"retry-after-ms": "1e308", "Retry-After": "2"}, now=0.0, cap=60.0)
@example(answer_headers={"Retry-After": "1e309"}, now=0.0, cap=60.0)
def test_parse_retry_after_is_none_or_a_finite_wait_within_the_cap(
    answer_headers: dict[str, str], now: float, cap: float
) -> None:
    """Case 40: any Retry-After headers: None, or a finite number of seconds in [0, cap]."""
    wait = parse_retry_after(answer_headers, now=now, cap=cap)
    assert wait is None or (math.isfinite(wait) and 0 <= wait <= cap), wait


def test_a_retry_after_date_in_the_past_or_future_is_measured_from_now() -> None:
    """Case 40: HTTP dates are read against ``now``: past ones are 0, future ones the gap."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    earlier = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"Retry-After": later}, now=now.timestamp()) == 30
    assert parse_retry_after({"Retry-After": earlier}, now=now.timestamp()) == 0


@pytest.mark.parametrize(
    "body",
    [
        b'{"message":"quota \\ud800 exceeded"}',
        b'{"error":{"message":"\\udfff"}}',
        b'{"error":"bad \\ud83d key"}',
    ],
)
def test_lone_surrogates_in_service_text_neither_crash_nor_poison_messages(body: bytes) -> None:
    """Case 40: an error message with a lone surrogate: an APIError whose text is valid UTF-8."""
    error = error_from_response(400, body, {}, operation="create")
    assert isinstance(error, APIError)
    str(error).encode("utf-8")
    failed = Task.from_response(
        {"id": "abc", "status": "failed", "error": json.loads(body).get("error") or "\ud800"}
    )
    assert failed.error is not None
    failed.error.encode("utf-8")
