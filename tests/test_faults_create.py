"""The paid create is never duplicated and never fails silently (docs/reliability.md, cases 1-13).

A create that provably never left the client (refused, no DNS answer, a
connect or pool timeout, a 408) is retried, and a 429 is waited out; one that
may have arrived (reset or read timeout after sending, a 5xx, a malformed 2xx)
is never resent, but reported as possibly billed.

Every test drives the client against the loopback simulator (or a port with
nothing listening) and checks the server's side of the story: how many
create requests arrived, how many tasks were created and billed, and when.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from nanobanana_async import (
    APIError,
    AuthenticationError,
    Backoff,
    FixedPolling,
    ImageRequest,
    InsufficientBalanceError,
    InvalidRequestError,
    JournalState,
    MalformedResponseError,
    NanoBanana,
    NetworkError,
    Outcome,
    PermissionDeniedError,
    RateLimitedError,
    RetryPolicy,
    SubmissionUncertainError,
    Task,
    Timeouts,
    read_journal,
)
from nanobanana_async._retry import MAX_RETRY_AFTER, parse_retry_after
from nanobanana_async.testing import (
    Delay,
    Fault,
    LatencyProfile,
    Redirect,
    ResetConnection,
    Respond,
    Simulator,
)

from .conftest import FAST_RETRY, SENTINEL_KEY
from .helpers import fast_client, retries_logged, wait_until


def _create_retries(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str, float]]:
    """(attempt, error type, delay) of every create retry the SDK logged at DEBUG."""
    return [(a, kind, delay) for _, a, kind, delay in retries_logged(caplog.records, "create")]


def _create_times(sim: Simulator) -> list[float]:
    return [r.at for r in sim.requests if r.endpoint == "create"]


def _closed_port() -> int:
    """A loopback port that was bound and released: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# Case 1: a refused connection sent nothing: at most two retries, then "not billed".


@pytest.mark.parametrize("attempts", [1, 3])
async def test_connection_refused_is_retried_at_most_twice_and_reported_not_billed(
    sim: Simulator, debug_logs: pytest.LogCaptureFixture, attempts: int
) -> None:
    """Case 1: refused: retried attempts - 1 (<= 2) times, then NetworkError(sent=False)."""
    policy = RetryPolicy(create_attempts=attempts, create_backoff=Backoff(0.001, 0.01, 0.0))
    async with NanoBanana(
        api_key=sim.api_key, base_url=f"http://127.0.0.1:{_closed_port()}/api", retry=policy
    ) as client:
        with anyio.fail_after(5), pytest.raises(NetworkError) as caught:
            await client.submit("a fox")
    error = caught.value
    assert error.sent is False
    assert error.operation == "create"
    assert "not submitted, not billed" in str(error)
    retries = _create_retries(debug_logs)
    assert [attempt for attempt, _, _ in retries] == list(range(1, attempts))
    assert RetryPolicy().create_attempts == 3  # by default: at most two retries
    assert all(kind == "NetworkError" for _, kind, _ in retries)
    # The real service (the simulator on another port) never heard of it.
    assert sim.counters.create_requests == 0
    assert sim.counters.creates == 0


# Case 2: a DNS failure sent nothing either: retried like a refused connection.


class _NoSuchHost(AbstractResolver):
    """A resolver that knows no names, like a DNS server answering NXDOMAIN."""

    def __init__(self) -> None:
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        raise OSError(socket.EAI_NONAME, "Name or service not known")

    async def close(self) -> None:
        return None


async def test_dns_failure_is_retried_then_reported_not_submitted(
    sim: Simulator, debug_logs: pytest.LogCaptureFixture
) -> None:
    """Case 2: a name that does not resolve (injected resolver): retried, then "not billed"."""
    resolver = _NoSuchHost()
    async with NanoBanana(
        api_key=sim.api_key,
        base_url="http://api.invalid/kyyReactApiServer",
        allow_insecure_http=True,
        resolver=resolver,
        retry=FAST_RETRY,
    ) as client:
        with anyio.fail_after(5), pytest.raises(NetworkError) as caught:
            await client.submit("a fox")
    assert caught.value.sent is False
    assert "not submitted, not billed" in str(caught.value)
    assert "DNS" in str(caught.value) or "Name or service not known" in str(caught.value)
    # Three attempts, each a fresh lookup (failures are not cached), two logged retries.
    assert resolver.lookups == ["api.invalid"] * FAST_RETRY.create_attempts
    assert [a for a, _, _ in _create_retries(debug_logs)] == [1, 2]
    assert sim.counters.create_requests == 0


# Case 3: a pool-wait or connect timeout means "not sent", so its retry is safe: one job.


async def test_a_create_stuck_behind_a_saturated_pool_is_retried_and_billed_once(
    sim: Simulator, debug_logs: pytest.LogCaptureFixture
) -> None:
    """Case 3: waiting for a pool slot times out before sending, so the retry is safe: 1 job."""
    sim.latency = LatencyProfile.instant()
    async with fast_client(sim) as helper:
        existing = await helper.submit("a finished fox")
    # The client under test has one API connection, held by a slow status query.
    # (Downloads have a pool of their own, so they can no longer starve creates.)
    async with fast_client(sim, connection_limit=1, timeouts=Timeouts(pool=0.2)) as client:
        sim.faults.push("poll", Delay(0.35, create_first=False))
        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                group.start_soon(client.get_task, existing.id)
                await wait_until(lambda: sim.counters.polls > 0)
                task = await client.submit("a queued fox")
    retries = _create_retries(debug_logs)
    assert retries, "the first attempt should have timed out waiting for the pool"
    assert all(kind == "NetworkError" for _, kind, _ in retries)
    # Server side: exactly one create request from the client under test, one task.
    create_requests = [r for r in sim.requests if r.endpoint == "create"]
    assert len(create_requests) == 2  # the helper's and ours
    assert sim.counters.creates == 2
    assert task.id in sim.tasks


def _connects_within(port: int, seconds: float) -> bool:
    """Whether a plain TCP connect to ``port`` completes within ``seconds``."""
    with socket.socket() as probe:
        probe.settimeout(seconds)
        try:
            probe.connect(("127.0.0.1", port))
        except TimeoutError:
            return False
        return True


async def test_a_connect_timeout_on_create_counts_as_not_sent_and_is_retried(
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    """Case 3: a full accept queue drops SYNs: the connect timeouts are retried, nothing billed."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
            if _connects_within(port, 0.3):
                pytest.skip("this kernel completes connects to a listener with a full backlog")
            async with NanoBanana(
                api_key="k",
                base_url=f"http://127.0.0.1:{port}/api",
                timeouts=Timeouts(connect=0.2, read=0.3),
                retry=FAST_RETRY,
            ) as client:
                with anyio.fail_after(5), pytest.raises(NetworkError) as caught:
                    await client.submit("a fox")
            # Server side: whatever reached the accept queue carried no request bytes.
            listener.setblocking(False)
            received = b""
            while True:
                try:
                    accepted, _ = listener.accept()
                except BlockingIOError:
                    break
                with accepted:
                    accepted.setblocking(False)
                    with contextlib.suppress(BlockingIOError):
                        received += accepted.recv(65536)
        finally:
            for filler in fillers:
                filler.close()
    assert caught.value.sent is False
    assert "timed out" in str(caught.value)
    assert "not submitted, not billed" in str(caught.value)
    assert [(a, kind) for a, kind, _ in _create_retries(debug_logs)] == [
        (1, "NetworkError"),
        (2, "NetworkError"),
    ]
    assert received == b""


# Cases 4, 5 and 6: sent, then the answer was lost.


async def _submit_uncertain(
    sim: Simulator, fault: Fault, **options: Any
) -> tuple[SubmissionUncertainError, float, float]:
    sim.faults.push("create", fault)
    async with fast_client(sim, **options) as client:
        before = time.time()
        with anyio.fail_after(5), pytest.raises(SubmissionUncertainError) as caught:
            await client.submit(ImageRequest(prompt="a billed fox", size="16:9"))
        after = time.time()
        # Nothing resends it later behind the caller's back either.
        await anyio.sleep(0.1)
    return caught.value, before, after


def _assert_uncertain(error: SubmissionUncertainError, before: float, after: float) -> None:
    assert error.request is not None
    assert error.request.prompt == "a billed fox"
    assert error.request.size == "16:9"
    assert isinstance(error.client_key, str)
    assert len(error.client_key) >= 16
    assert before <= error.submitted_at <= after
    assert "may exist and be billed" in str(error)
    assert "not resubmitted" in str(error)


async def test_reset_after_the_server_created_the_task_is_uncertain_and_never_resent(
    sim: Simulator,
) -> None:
    """Case 4: created, then reset: SubmissionUncertainError with request, key and time; 1 job."""
    error, before, after = await _submit_uncertain(sim, ResetConnection(create_first=True))
    _assert_uncertain(error, before, after)
    assert sim.counters.create_requests == 1
    assert sim.counters.creates == 1


async def test_read_timeout_after_the_request_was_sent_is_uncertain_and_never_resent(
    sim: Simulator,
) -> None:
    """Case 5: the server created the task but answers after sock_read: uncertain, 1 job."""
    error, before, after = await _submit_uncertain(
        sim, Delay(2.0, create_first=True), timeouts=Timeouts(read=0.2)
    )
    _assert_uncertain(error, before, after)
    assert "Timeout" in error.reason or "timed out" in error.reason
    assert sim.counters.create_requests == 1
    assert sim.counters.creates == 1


@pytest.mark.parametrize(
    ("status", "create_first"),
    [(500, False), (502, True), (503, False), (504, True)],
    ids=["500-before-create", "502-after-create", "503-before-create", "504-after-create"],
)
async def test_server_errors_on_create_are_uncertain_with_their_key_and_time(
    sim: Simulator, status: int, create_first: bool
) -> None:
    """Case 6: 5xx before or after the task exists: uncertain, one request, never two jobs."""
    fault = Respond(status, "<html><title>Gateway</title></html>", create_first=create_first)
    error, before, after = await _submit_uncertain(sim, fault)
    _assert_uncertain(error, before, after)
    assert f"HTTP {status}" in error.reason
    assert sim.counters.create_requests == 1
    assert sim.counters.creates == (1 if create_first else 0)


async def test_each_uncertain_submission_gets_its_own_client_key(sim: Simulator) -> None:
    """Cases 4-6: the client key identifies one logical submission, not the client."""
    keys = set()
    async with fast_client(sim) as client:
        for _ in range(3):
            sim.faults.push("create", ResetConnection(create_first=True))
            with pytest.raises(SubmissionUncertainError) as caught:
                await client.submit("a fox")
            keys.add(caught.value.client_key)
    assert len(keys) == 3
    assert sim.counters.create_requests == 3
    assert sim.counters.creates == 3


@pytest.mark.parametrize(
    ("fault", "timeouts"),
    [
        (Delay(2.0, create_first=True), Timeouts(read=0.2)),
        (Respond(502, "<html>Bad gateway</html>", create_first=True), Timeouts()),
        (Respond(200, "<html>Welcome</html>", create_first=True), Timeouts()),
        (Respond(200, {"code": 503, "msg": "busy"}, create_first=True), Timeouts()),
    ],
    ids=["read-timeout", "502-after-create", "html-200", "503-inside-a-200"],
)
async def test_an_uncertain_create_is_journaled_and_not_resent_on_rerun_without_the_flag(
    sim: Simulator, tmp_path: Path, fault: Fault, timeouts: Timeouts
) -> None:
    """Cases 4-6: journal row "uncertain"; a rerun reports it; only resubmit_uncertain resends."""
    # The reset variant is tests/test_journal.py::test_an_uncertain_create_is_reported_and_not_
    # resent_without_the_flag; a malformed 200 (case 10) is treated the same way.
    journal = tmp_path / "journal.sqlite"
    sim.faults.push("create", fault)
    async with fast_client(sim, timeouts=timeouts) as client:

        async def run(**flags: bool) -> Outcome:
            batch = client.generate_many(
                ["a billed fox"], save_to=tmp_path, journal=journal, **flags
            )
            with anyio.fail_after(5):
                [outcome] = [o async for o in batch]
            return outcome

        first = await run()
        assert isinstance(first.error, (SubmissionUncertainError, MalformedResponseError))
        [entry] = read_journal(journal)
        assert entry.state is JournalState.UNCERTAIN
        assert entry.client_key
        assert (sim.counters.create_requests, sim.counters.creates) == (1, 1)

        second = await run()
        assert isinstance(second.error, SubmissionUncertainError)
        assert second.resumed_from == "uncertain"
        assert sim.counters.create_requests == 1  # the rerun sent nothing

        third = await run(resubmit_uncertain=True)
        assert third.ok
        assert (sim.counters.create_requests, sim.counters.creates) == (2, 2)


# Case 7: a sane Retry-After pauses every create; a bad one means backoff, a long one raises.


def _rate_limited(headers: dict[str, str]) -> Respond:
    return Respond(429, {"error": {"message": "slow down"}}, headers=headers)


#: A backoff that always waits exactly 50 ms, so a fallback is recognisable in the logs.
_MARKED_BACKOFF = Backoff(base=0.05, cap=0.05, floor=0.05)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "0.2"}, 0.2),
        ({"retry-after-ms": "150"}, 0.15),
        ({"retry-after-ms": "150", "Retry-After": "30"}, 0.15),
        ({"retry-after-ms": "soon", "Retry-After": "0.2"}, 0.2),
    ],
    ids=["seconds", "milliseconds", "ms-wins", "bad-ms-then-seconds"],
)
async def test_a_valid_retry_after_on_create_is_honoured_then_one_job_is_created(
    sim: Simulator,
    debug_logs: pytest.LogCaptureFixture,
    headers: dict[str, str],
    expected: float,
) -> None:
    """Case 7: Retry-After (seconds or -ms) is waited out, plus <= 10% jitter; 1 job."""
    sim.faults.push("create", _rate_limited(headers))
    # No retry budget at all: a 429 with a usable Retry-After is pacing, not a failure, so it
    # is waited out all the same (were it charged to the budget, submit would fail fast).
    policy = RetryPolicy(create_backoff=_MARKED_BACKOFF, budget_capacity=0.0)
    async with fast_client(sim, retry=policy) as client:
        with anyio.fail_after(5):
            task = await client.submit("a fox")
    [(attempt, kind, delay)] = _create_retries(debug_logs)
    assert (attempt, kind) == (1, "RateLimitedError")
    assert expected <= delay <= expected * 1.1 + 0.01
    first, second = _create_times(sim)
    assert second - first >= expected
    assert sim.counters.create_requests == 2
    assert sim.counters.creates == 1
    assert task.id in sim.tasks


async def test_a_429_without_a_usable_retry_after_is_charged_to_the_retry_budget(
    sim: Simulator, debug_logs: pytest.LogCaptureFixture
) -> None:
    """Case 7: with no Retry-After a 429 is a failure: an empty retry budget fails it fast.

    The counterpart of the test above: the same empty budget, so it really refuses
    every retry it is charged for.
    """
    sim.faults.push("create", _rate_limited({}))
    policy = RetryPolicy(create_backoff=_MARKED_BACKOFF, budget_capacity=0.0)
    async with fast_client(sim, retry=policy) as client:
        with anyio.fail_after(5), pytest.raises(RateLimitedError):
            await client.submit("a fox")
        await anyio.sleep(0.1)
    assert _create_retries(debug_logs) == []
    assert sim.counters.create_requests == 1
    assert sim.counters.creates == 0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Retry-After": "soon"},
        {"Retry-After": "-5"},
        {"Retry-After": "0"},
        {"Retry-After": "nan"},
        {"Retry-After": "inf"},
        {"retry-after-ms": "-100"},
        {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"},
    ],
    ids=["absent", "garbage", "negative", "zero", "nan", "inf", "negative-ms", "past-date"],
)
async def test_a_missing_or_unusable_retry_after_falls_back_to_backoff(
    sim: Simulator, debug_logs: pytest.LogCaptureFixture, headers: dict[str, str]
) -> None:
    """Case 7: garbage, negative, zero, NaN or past Retry-After: the create backoff is used."""
    sim.faults.push("create", _rate_limited(headers))
    async with fast_client(sim, retry=RetryPolicy(create_backoff=_MARKED_BACKOFF)) as client:
        with anyio.fail_after(5):
            await client.submit("a fox")
    [(_, kind, delay)] = _create_retries(debug_logs)
    assert kind == "RateLimitedError"
    assert delay == pytest.approx(0.05)
    first, second = _create_times(sim)
    assert 0.05 <= second - first < 1.0
    assert sim.counters.create_requests == 2
    assert sim.counters.creates == 1


@pytest.mark.parametrize(
    ("headers", "reported"),
    [
        ({"Retry-After": "61"}, 61.0),
        ({"Retry-After": "3600"}, 3600.0),
        ({"retry-after-ms": "90000"}, 90.0),
        ({"Retry-After": "1e30"}, None),
    ],
    ids=["61s", "1h", "90000ms", "1e30"],
)
async def test_a_retry_after_over_the_cap_raises_at_once_with_the_delay(
    sim: Simulator, headers: dict[str, str], reported: float | None
) -> None:
    """Case 7: a Retry-After above 60 s is not slept on: RateLimitedError(retry_after), 0 jobs."""
    sim.faults.push("create", _rate_limited(headers))
    async with fast_client(sim) as client:
        started = time.monotonic()
        with anyio.fail_after(5), pytest.raises(RateLimitedError) as caught:
            await client.submit("a fox")
        elapsed = time.monotonic() - started
    retry_after = caught.value.retry_after
    assert retry_after is not None
    assert retry_after > MAX_RETRY_AFTER
    if reported is not None:
        assert retry_after == reported
    assert elapsed < 1.0
    assert sim.counters.create_requests == 1
    assert sim.counters.creates == 0


def test_retry_after_as_an_http_date_is_read_against_the_given_clock() -> None:
    """Case 7: an HTTP date means "until then"; past dates are 0, naive or broken ones None."""
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC).timestamp()
    later = format_datetime(datetime(2015, 10, 21, 7, 28, 30, tzinfo=UTC), usegmt=True)
    assert later == "Wed, 21 Oct 2015 07:28:30 GMT"
    assert parse_retry_after({"Retry-After": later}, now=now) == 30.0
    assert parse_retry_after({"Retry-After": later}, now=now + 60) == 0.0
    assert parse_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:30"}, now=now) is None
    assert parse_retry_after({"Retry-After": "Someday, 99 Foo 2015"}, now=now) is None
    assert parse_retry_after({"Retry-After": later}, now=now, cap=10) == 10
    assert parse_retry_after({"Retry-After": "1e30"}, now=now, cap=60) == 60
    assert parse_retry_after({"Retry-After": "-1"}, now=now) is None
    assert parse_retry_after({"retry-after-ms": "2500", "Retry-After": later}, now=now) == 2.5
    assert parse_retry_after({}, now=now) is None


async def test_one_429_pauses_every_create_of_the_client(
    sim: Simulator, debug_logs: pytest.LogCaptureFixture
) -> None:
    """Case 7: while one create waits out a Retry-After, another submit sends nothing."""
    sim.faults.push("create", _rate_limited({"Retry-After": "0.3"}))
    async with fast_client(sim) as client:
        tasks: list[Task] = []

        async def submit(prompt: str) -> None:
            tasks.append(await client.submit(prompt))

        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                group.start_soon(submit, "first fox")
                # The retry is logged once the client-wide pause is in place.
                await wait_until(lambda: bool(_create_retries(debug_logs)))
                group.start_soon(submit, "second fox")
    limited, *later = _create_times(sim)
    assert len(later) == 2
    assert all(at >= limited + 0.3 for at in later)
    assert sim.counters.create_requests == 3
    assert sim.counters.creates == 2
    assert {t.id for t in tasks} == set(sim.tasks)


# Case 8: a connection the server dropped while idle never causes a second job.


async def test_a_submit_after_the_server_dropped_the_idle_connection_makes_one_job() -> None:
    """Case 8: the server closes idle connections after 0.5 s; a submit 1 s later: one job."""
    async with (
        Simulator(keepalive_timeout=0.5, latency=LatencyProfile.instant()) as sim,
        fast_client(sim) as client,
    ):
        await client.submit("first fox")
        await anyio.sleep(1.0)
        assert sim.counters.open_connections == 0  # the server really dropped it
        try:
            with anyio.fail_after(5):
                await client.submit("second fox")
        except SubmissionUncertainError:
            assert sim.counters.creates <= 2  # reported, never silently resent
        else:
            assert sim.counters.creates == 2
        assert sim.counters.create_requests == 2


# Case 9: a redirected create is not followed, so the key and the request go nowhere else.


@pytest.mark.parametrize(
    ("status", "target"),
    [(301, "file-host"), (302, "same-origin"), (307, "file-host"), (308, "same-origin")],
)
async def test_a_redirected_create_is_not_followed_anywhere(
    sim: Simulator, status: int, target: str
) -> None:
    """Case 9: the redirect target receives nothing (no request, no key); the error names it."""
    if target == "file-host":
        location = f"{sim.file_host_url}/files/stolen.png"
    else:
        location = f"{sim.base_url}/v1/banana/images"
    sim.faults.push("create", Redirect(status, location))
    async with fast_client(sim) as client:
        with pytest.raises(APIError) as caught:
            await client.submit("a fox")
    assert caught.value.status == status
    assert "127.0.0.1" in str(caught.value)
    assert "redirect" in str(caught.value)
    assert [(r.origin, r.endpoint) for r in sim.requests] == [("api", "create")]
    assert sim.counters.create_requests == 1
    assert sim.counters.creates == 0
    assert sim.counters.file_host_auth_headers == 0


# Case 10: an unusable 2xx to a create is malformed and "may be billed", never resent.


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        (
            "<html><head><title>Welcome</title></head><body>" + "x" * 2000 + "</body></html>",
            "Welcome",
        ),
        ({"status": "queued", "object": "image"}, "queued"),
        ({"id": 12345, "status": "queued"}, "12345"),
        ({"id": "", "status": "queued"}, "queued"),
        ({"id": None, "status": "queued"}, "queued"),
        ({"id": ["a"], "status": "queued"}, "queued"),
    ],
    ids=["html", "no-id", "int-id", "empty-id", "null-id", "list-id"],
)
async def test_an_unusable_200_to_a_create_is_malformed_and_may_be_billed(
    sim: Simulator, body: str | dict[str, object], shown: str
) -> None:
    """Case 10: HTML, no id, a non-string or empty id: MalformedResponseError, may be billed."""
    sim.faults.push("create", Respond(200, body, create_first=True))
    async with fast_client(sim) as client:
        with pytest.raises(MalformedResponseError) as caught:
            await client.submit("a fox")
        await anyio.sleep(0.05)
    error = caught.value
    assert error.may_be_billed
    assert "may have been billed" in str(error)
    assert error.body_excerpt is not None
    assert shown in error.body_excerpt
    assert len(error.body_excerpt) <= 160
    assert sim.counters.create_requests == 1  # never resent
    assert sim.counters.creates == 1
    assert sim.counters.polls == 0


async def test_a_malformed_create_answer_excerpt_redacts_secrets(sim: Simulator) -> None:
    """Case 10: the excerpt of a body that echoes the key or a token hides them."""
    body = {"echo": f"Authorization: Bearer {SENTINEL_KEY}", "note": "api_key=hunter2 token"}
    sim.faults.push("create", Respond(200, body, create_first=True))
    async with fast_client(sim) as client:
        with pytest.raises(MalformedResponseError) as caught:
            await client.submit("a fox")
    excerpt = caught.value.body_excerpt
    assert excerpt is not None
    assert SENTINEL_KEY not in excerpt
    assert SENTINEL_KEY not in str(caught.value)
    assert "hunter2" not in excerpt
    assert sim.counters.create_requests == 1


# Case 11 (an invalid request is refused locally, naming the field: 0 requests sent) is covered
# by tests/test_client.py::test_invalid_request_is_refused_locally_and_reaches_no_server;
# this adds the error's contents.


@pytest.mark.parametrize(
    ("fields", "field", "allowed"),
    [
        ({"prompt": "   "}, "prompt", "non-empty"),
        ({"prompt": "p", "model": "nano-banana-3"}, "model", "nano-banana-pro"),
        ({"prompt": "p", "resolution": "8k"}, "resolution", "1k, 2k, 4k"),
        ({"prompt": "p", "size": "1:2"}, "size", "16:9"),
        (
            {"prompt": "p", "image_urls": [f"https://x.example/{i}.png" for i in range(7)]},
            "image_urls",
            "at most 6",
        ),
        ({"prompt": "p", "image_urls": ["ftp://x.example/a.png"]}, "image_urls", "http(s)"),
    ],
)
async def test_an_invalid_request_names_the_field_and_the_allowed_values_and_sends_nothing(
    client: NanoBanana, sim: Simulator, fields: dict[str, Any], field: str, allowed: str
) -> None:
    """Case 11: the typed error names the field and what is allowed; 0 requests sent."""
    with pytest.raises(InvalidRequestError) as caught:
        await client.submit(ImageRequest(**fields))
    assert caught.value.field == field
    assert allowed in str(caught.value)
    assert allowed in caught.value.allowed
    with pytest.raises(InvalidRequestError):
        await client.generate(**fields)
    assert sim.requests == []
    assert sim.counters.create_requests == 0


# Case 12: a 401/402/403 stops a batch's creates within one concurrency window, unretried.

_BATCH = 1000
_WINDOW = 16


async def _run_batch(sim: Simulator, api_key: str) -> list[Outcome]:
    async with NanoBanana(
        api_key=api_key,
        base_url=sim.base_url,
        max_concurrency=_WINDOW,
        polling=FixedPolling(0.01),
        retry=FAST_RETRY,
    ) as client:
        with anyio.fail_after(30):
            outcomes = [o async for o in client.generate_many(f"fox {i}" for i in range(_BATCH))]
    return outcomes


@pytest.mark.usefixtures("no_loop_debug")
@pytest.mark.parametrize("status", [401, 402, 403])
async def test_a_fatal_answer_stops_a_1000_item_batch_within_one_window(
    status: int, debug_logs: pytest.LogCaptureFixture
) -> None:
    """Case 12: 401/402/403 stop new creates within ~one window; every other outcome fails."""
    expected: type[APIError]
    paid = 0
    async with Simulator(latency=LatencyProfile.instant(), seed=1) as sim:
        api_key = sim.api_key
        if status == 401:
            api_key, expected = "sk-wrong", AuthenticationError
        elif status == 402:
            paid, expected = 5, InsufficientBalanceError
            sim.balance = paid
        else:
            expected = PermissionDeniedError
            for _ in range(4 * _WINDOW):
                sim.faults.push("create", Respond(403, {"error": {"message": "forbidden"}}))
        outcomes = await _run_batch(sim, api_key)
        counters = sim.counters

    assert sorted(o.index for o in outcomes) == list(range(_BATCH))
    failed = [o for o in outcomes if not o.ok]
    assert len(failed) == _BATCH - paid
    assert all(isinstance(o.error, expected) for o in failed)
    assert all(isinstance(o.error, APIError) and o.error.status == status for o in failed)
    assert all(o.task is None for o in failed)
    assert sum(o.ok for o in outcomes) == paid
    # Submissions stopped within about one concurrency window of the fatal answer.
    assert counters.create_requests <= paid + _WINDOW + 2
    assert counters.creates == paid
    assert retries_logged(debug_logs.records) == []  # a fatal answer is never retried
    if status == 401:
        assert counters.auth_failures == counters.create_requests
    if status == 403:
        assert sim.faults.pending("create") >= 4 * _WINDOW - _WINDOW - 2


# Case 13: a create cancelled after its headers left still waits (shielded) for its id.


async def test_a_create_cancelled_after_sending_still_reports_the_created_task_id(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Case 13: cancelled after the headers left, the answer is awaited (shielded) and logged."""
    caplog.set_level(logging.WARNING, logger="nanobanana_async")
    sim.faults.push("create", Delay(0.3, create_first=False))
    policy = RetryPolicy(cancel_grace=2.0, create_backoff=FAST_RETRY.create_backoff)
    async with fast_client(sim, retry=policy) as client:
        started = time.monotonic()
        with anyio.fail_after(5), anyio.move_on_after(0.1) as scope:
            await client.submit("a fox cancelled in flight")
        elapsed = time.monotonic() - started
    assert scope.cancelled_caught
    # The cancel returned once the answer came (the task was created after the 0.3 s delay),
    # well inside the grace period.
    assert 0.25 <= elapsed < 1.5
    assert sim.counters.create_requests == 1
    assert sim.counters.creates == 1
    [task_id] = sim.tasks
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(task_id in message and "cancelled" in message for message in warnings), warnings


async def test_a_create_cancelled_after_sending_with_no_answer_in_the_grace_may_be_billed(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Case 13: no answer within cancel_grace: the warning says it may have been billed."""
    caplog.set_level(logging.WARNING, logger="nanobanana_async")
    sim.faults.push("create", Delay(3.0, create_first=True))
    policy = RetryPolicy(cancel_grace=0.2, create_backoff=FAST_RETRY.create_backoff)
    async with fast_client(sim, retry=policy) as client:
        started = time.monotonic()
        with anyio.fail_after(5), anyio.move_on_after(0.1) as scope:
            await client.submit("a fox cancelled in flight")
        elapsed = time.monotonic() - started
    assert scope.cancelled_caught
    assert elapsed < 0.1 + 0.2 + 0.5  # the cancel + the grace, not the 3 s delay
    assert sim.counters.create_requests == 1
    assert sim.counters.creates == 1  # the service did bill it
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("may have" in message and "billed" in message for message in warnings), warnings


async def test_a_create_cancelled_during_a_rate_limit_pause_sends_nothing_more(
    sim: Simulator, debug_logs: pytest.LogCaptureFixture
) -> None:
    """Case 13: cancelled while waiting on the paused create gate: no request, no warning."""
    caplog = debug_logs
    sim.faults.push("create", _rate_limited({"Retry-After": "2"}))
    async with fast_client(sim) as client:
        with anyio.fail_after(5):
            # The pause ends before fail_after: a pause past the deadline would raise at once.
            async with anyio.create_task_group() as group:
                group.start_soon(client.submit, "a patient fox")
                # The retry is logged once the client-wide pause is in place.
                await wait_until(lambda: bool(_create_retries(caplog)))
                await anyio.sleep(0.1)
                started = time.monotonic()
                group.cancel_scope.cancel()
            elapsed = time.monotonic() - started
    assert elapsed < 0.2
    assert sim.counters.create_requests == 1  # only the rate-limited one
    assert sim.counters.creates == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_create_cancelled_while_waiting_for_the_pool_sends_nothing(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Case 13: cancelled before a connection was free: nothing sent, nothing billed, no warning."""
    caplog.set_level(logging.WARNING, logger="nanobanana_async")
    sim.latency = LatencyProfile.instant()
    async with fast_client(sim) as helper:
        existing = await helper.submit("a finished fox")
    creates_before = sim.counters.create_requests
    async with fast_client(sim, connection_limit=1, timeouts=Timeouts(pool=5.0)) as client:
        sim.faults.push("poll", Delay(1.0, create_first=False))  # holds the only connection
        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                group.start_soon(client.get_task, existing.id)
                await wait_until(lambda: sim.counters.polls > 0)
                started = time.monotonic()
                with anyio.move_on_after(0.2) as scope:
                    await client.submit("a fox that never leaves")
                elapsed = time.monotonic() - started
                group.cancel_scope.cancel()
    assert scope.cancelled_caught
    assert elapsed < 0.6
    assert sim.counters.create_requests == creates_before
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
