"""Leaving, cancelling and closing leak nothing and wait for nothing.

Fault cases 35-37 of docs/reliability.md.

tests/test_batch.py already covers leaving a batch early (break, raise,
deadline, cancel scope, ``async with``) while jobs poll. These tests add the
moment that matters most for files: an image download *in flight*, with its
``.part`` file open, when the consumer leaves; the client's lifecycle in
process; and cancellation while the retry layer sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from nanobanana_async import (
    Backoff,
    ClientClosedError,
    FixedPolling,
    ImageResult,
    NanoBanana,
    NetworkError,
    RateLimitedError,
    RetryPolicy,
)
from nanobanana_async.testing import LatencyProfile, Respond, Simulator, Slow, Truncate

from .conftest import FAST_RETRY
from .helpers import part_files, retries_logged, sdk_tasks

#: Slow enough that a 64 px PNG (a few hundred bytes) takes over a second to arrive.
TRICKLE = Slow(bytes_per_second=200)
#: How soon a cancelled wait must give control back.
PROMPT = 0.5
LONG = Backoff(base=30.0, cap=30.0, floor=30.0)


@contextlib.asynccontextmanager
async def open_client(sim: Simulator, **options: Any) -> AsyncIterator[NanoBanana]:
    settings: dict[str, Any] = {"polling": FixedPolling(interval=0.02), "retry": FAST_RETRY}
    settings.update(options)
    async with NanoBanana(api_key=sim.api_key, base_url=sim.base_url, **settings) as nano:
        yield nano


def images(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if not name.startswith("."))


async def eventually(condition: Callable[[], bool], within: float = 3.0) -> None:
    """Wait until ``condition()`` holds, at most ``within`` seconds."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - polling a gauge, not an event
            await anyio.sleep(0.005)


def downloading(sim: Simulator, out: Path) -> Callable[[], bool]:
    """True while an image download is in flight with its temp file on disk."""
    counters = sim.counters
    return lambda: bool(part_files(out)) and counters.downloads > counters.downloads_completed


# Case 35: leaving with a download in flight.

Leave = Callable[[NanoBanana, Simulator, Path], Awaitable[None]]
PROMPTS = ["first one fails [fail]", "b", "c", "d", "e", "f"]


async def leave_by_break(nano: NanoBanana, sim: Simulator, out: Path) -> None:
    async for _outcome in nano.generate_many(PROMPTS, save_to=out):
        await eventually(downloading(sim, out))
        break


async def leave_by_raising(nano: NanoBanana, sim: Simulator, out: Path) -> None:
    async def consume() -> None:
        async for _outcome in nano.generate_many(PROMPTS, save_to=out):
            await eventually(downloading(sim, out))
            raise RuntimeError("consumer gave up")

    with pytest.raises(RuntimeError, match="consumer gave up"):
        await consume()


async def leave_by_outside_cancel(nano: NanoBanana, sim: Simulator, out: Path) -> None:
    seen_download = anyio.Event()

    async def consume() -> None:
        async for _outcome in nano.generate_many(PROMPTS, save_to=out):
            await eventually(downloading(sim, out))
            seen_download.set()
            await anyio.sleep_forever()  # a consumer busy elsewhere

    async with anyio.create_task_group() as group:
        group.start_soon(consume)
        await seen_download.wait()
        group.cancel_scope.cancel()


@pytest.mark.parametrize("leave", [leave_by_break, leave_by_raising, leave_by_outside_cancel])
async def test_leaving_a_batch_mid_download_removes_the_part_file_and_leaks_nothing(
    sim: Simulator, tmp_path: Path, leave: Leave
) -> None:
    """Case 35: break/raise/outside cancel while images trickle in: no .part, task or socket."""
    sim.latency = LatencyProfile.instant()
    for _ in PROMPTS:
        sim.faults.push("download", TRICKLE)
    out = tmp_path / "out"
    out.mkdir()
    async with open_client(sim, max_concurrency=4) as nano:
        before = sdk_tasks()
        with anyio.fail_after(10):
            await leave(nano, sim, out)
        left_at = time.monotonic()
        # The downloads in flight are cancelled and their temp files removed at once.
        await eventually(lambda: part_files(out) == [], within=PROMPT)
        await anyio.sleep(0.3)
        assert sdk_tasks() == before
        assert part_files(out) == []
        assert images(out) == []
        assert sim.counters.downloads >= 1
        assert sim.counters.downloads_completed == 0
        assert [r for r in sim.requests if r.at > left_at + 0.1] == []
        assert sim.counters.creates <= 4 + 1  # one window of jobs, plus the failed one
    with anyio.fail_after(5):
        while sim.counters.open_connections:  # noqa: ASYNC110 - a gauge
            await anyio.sleep(0.01)


async def test_cancelling_a_single_save_mid_download_leaves_no_file(
    sim: Simulator, tmp_path: Path
) -> None:
    """Case 35: ImageResult.save cancelled while the image trickles in: no file, no .part."""
    sim.latency = LatencyProfile.instant()
    async with open_client(sim) as nano:
        result = await nano.generate("a fox")
        sim.faults.push("download", TRICKLE)
        before = sdk_tasks()
        async with anyio.create_task_group() as group:
            group.start_soon(result.save, f"{tmp_path}/")
            await eventually(downloading(sim, tmp_path))
            cancelled_at = anyio.current_time()
            group.cancel_scope.cancel()
        assert anyio.current_time() - cancelled_at < PROMPT
        assert os.listdir(tmp_path) == []
        assert sdk_tasks() == before
        assert sim.counters.downloads_completed == 0
    with anyio.fail_after(5):
        while sim.counters.open_connections:  # noqa: ASYNC110 - a gauge
            await anyio.sleep(0.01)


# Case 36: the client's lifecycle.


async def test_a_client_dropped_unclosed_is_reported_as_an_unclosed_client_session(
    sim: Simulator,
) -> None:
    """Case 36: in process (tests/test_client.py has the subprocess version): the warning fires.

    The leaked session is reported both as a ResourceWarning and to the loop's
    exception handler.
    """
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context["message"]))
    try:
        nano = NanoBanana(api_key=sim.api_key, base_url=sim.base_url)
        await nano.submit("a fox")
        assert sim.counters.open_connections == 1
        session = nano._http._sessions.api_session
        assert session is not None
        # aiohttp's keep-alive timer holds the connector for up to 15 s after the session is
        # gone; keep it to close it below, so its own warning does not land in a later test.
        connector = session.connector
        assert connector is not None
        del session
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del nano
            gc.collect()
        await connector.close()
    finally:
        loop.set_exception_handler(previous)
    warned = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert any(m.startswith("Unclosed client session") for m in warned), warned
    assert "Unclosed client session" in reported
    with anyio.fail_after(5):
        while sim.counters.open_connections:  # noqa: ASYNC110 - a gauge
            await anyio.sleep(0.01)


async def test_a_client_never_used_needs_no_close(sim: Simulator) -> None:
    """Case 36: the session opens lazily, so a client that sent nothing leaks nothing."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nano = NanoBanana(api_key=sim.api_key, base_url=sim.base_url)
        assert not nano.closed
        del nano
        gc.collect()
    assert [str(w.message) for w in caught] == []
    assert sim.requests == []


async def test_aclose_is_idempotent_even_when_called_concurrently(sim: Simulator) -> None:
    """Case 36: aclose twice, at once, after 'async with', or never opened: all fine."""
    unused = NanoBanana(api_key=sim.api_key, base_url=sim.base_url)
    await unused.aclose()
    await unused.aclose()
    async with open_client(sim) as nano:
        await nano.submit("a fox")
        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(nano.aclose)
        assert nano.closed
    await nano.aclose()
    assert unused.closed
    with anyio.fail_after(5):
        while sim.counters.open_connections:  # noqa: ASYNC110 - a gauge
            await anyio.sleep(0.01)


async def test_every_call_after_close_raises_client_closed_and_sends_nothing(
    sim: Simulator, tmp_path: Path
) -> None:
    """Case 36: submit, get_task, wait, generate, read, save, async with: ClientClosedError."""
    sim.latency = LatencyProfile.instant()
    nano = NanoBanana(api_key=sim.api_key, base_url=sim.base_url, polling=FixedPolling(0.02))
    task = await nano.wait(await nano.submit("a fox"))
    await nano.aclose()
    requests_before = len(sim.requests)
    result = ImageResult(task, fetcher=nano)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: nano.submit("another fox"),
        lambda: nano.get_task(task.id),
        lambda: nano.wait(task.id),
        lambda: nano.generate("another fox"),
        result.read,
        lambda: result.save(tmp_path),
        lambda: nano.__aenter__(),
    ]
    for call in calls:
        with pytest.raises(ClientClosedError, match="closed"):
            await call()
    with pytest.raises(ClientClosedError, match="closed"):
        nano.generate_many(["x", "y"])
    assert len(sim.requests) == requests_before
    assert os.listdir(tmp_path) == []


async def test_closing_the_client_under_a_running_job_ends_it_with_a_clear_error(
    sim: Simulator,
) -> None:
    """Case 36: aclose while generate polls: the job ends at once with ClientClosedError."""
    sim.latency = LatencyProfile.uniform(5.0, 5.0)
    nano = NanoBanana(api_key=sim.api_key, base_url=sim.base_url, polling=FixedPolling(0.02))
    caught: list[BaseException] = []

    async def job() -> None:
        try:
            await nano.generate("a slow fox")
        except ClientClosedError as exc:
            caught.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(job)
            await eventually(lambda: sim.counters.polls >= 2)
            await nano.aclose()
    assert len(caught) == 1
    polls = sim.counters.polls
    await anyio.sleep(0.1)
    assert sim.counters.polls == polls
    with anyio.fail_after(5):
        while sim.counters.open_connections:  # noqa: ASYNC110 - a gauge
            await anyio.sleep(0.01)


async def test_an_error_escaping_async_with_client_is_raised_as_itself() -> None:
    """Case 36: an SDK error leaving the client's 'async with' block is not wrapped in a group."""
    base_url = f"http://127.0.0.1:{closed_port()}/api"
    with pytest.raises(NetworkError):
        async with NanoBanana(api_key="k", base_url=base_url, retry=FAST_RETRY) as nano:
            await nano.submit("a fox")


def closed_port() -> int:
    """A loopback port that was bound and released: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Case 37: cancelling a sleep of the retry layer returns at once.


async def cancel_while_sleeping(
    call: Callable[[], Awaitable[object]], asleep: Callable[[], bool]
) -> float:
    """Run ``call``; once ``asleep()`` holds (and a little later), cancel; the seconds it took.

    The bound is far above the 30 s waits: the retry layer gives up at once on a wait that
    would outlast the caller's deadline, which would hide the sleep under test.
    """

    async def run() -> None:
        await call()

    with anyio.fail_after(300):
        async with anyio.create_task_group() as group:
            group.start_soon(run)
            await eventually(asleep)
            await anyio.sleep(0.1)  # well inside the sleep now
            cancelled_at = anyio.current_time()
            group.cancel_scope.cancel()
        return anyio.current_time() - cancelled_at


def rate_limited(seconds: int) -> Respond:
    return Respond(429, {"error": "slow down"}, headers={"Retry-After": str(seconds)})


async def test_cancel_during_a_create_retry_after_returns_at_once(
    sim: Simulator, debug_logs: pytest.LogCaptureFixture
) -> None:
    """Case 37: a 429 with Retry-After 30 on create, then cancel: back in < 0.5 s, nothing sent."""
    sim.faults.push("create", rate_limited(30))
    async with open_client(sim) as nano:
        took = await cancel_while_sleeping(
            lambda: nano.submit("a fox"), lambda: sim.counters.create_requests == 1
        )
        # The client-wide pause outlives the cancelled caller: a fresh create sends nothing.
        # (Waiting out the pause, or refusing at once with RateLimitedError, are both fine.)
        with anyio.move_on_after(0.3), contextlib.suppress(RateLimitedError):
            await nano.submit("another fox")
        assert sim.counters.create_requests == 1
    # The client was waiting out the service's 30 s (plus jitter) when it was cancelled.
    [(_, _, error, delay)] = retries_logged(debug_logs.records, "create")
    assert error == "RateLimitedError"
    assert 30 <= delay <= 33.01
    assert took < PROMPT
    await anyio.sleep(0.1)
    assert sim.counters.create_requests == 1
    assert sim.counters.creates == 0


async def test_cancel_during_a_poll_retry_after_returns_at_once(sim: Simulator) -> None:
    """Case 37: a 429 with Retry-After 30 on a poll, then cancel: back in < 0.5 s, no more polls."""
    async with open_client(sim) as nano:
        task = await nano.submit("a fox")
        sim.faults.push("poll", rate_limited(30))
        took = await cancel_while_sleeping(lambda: nano.wait(task), lambda: sim.counters.polls == 1)
    assert took < PROMPT
    await anyio.sleep(0.1)
    assert sim.counters.polls == 1
    assert sim.tasks[task.id].polls == 1


async def test_cancel_during_a_long_poll_backoff_returns_at_once(
    sim: Simulator, debug_logs: pytest.LogCaptureFixture
) -> None:
    """Case 37: a 503 on a poll with a 30 s poll backoff, then cancel: back in < 0.5 s."""
    retry = attrs.evolve(FAST_RETRY, poll_backoff=LONG)
    async with open_client(sim, retry=retry) as nano:
        task = await nano.submit("a fox")
        sim.faults.push("poll", Respond(503))
        took = await cancel_while_sleeping(lambda: nano.wait(task), lambda: sim.counters.polls == 1)
    # Exactly one retry was decided (the 30 s one being slept on), for the 503.
    assert retries_logged(debug_logs.records) == [("query", 1, "ServerError", 30.0)]
    assert took < PROMPT
    assert sim.counters.polls == 1


async def test_cancel_during_a_long_create_backoff_returns_at_once(sim: Simulator) -> None:
    """Case 37: a 408 on create (retryable: not received) with a 30 s backoff, then cancel."""
    retry = attrs.evolve(FAST_RETRY, create_backoff=LONG)
    sim.faults.push("create", Respond(408))
    async with open_client(sim, retry=retry) as nano:
        took = await cancel_while_sleeping(
            lambda: nano.submit("a fox"), lambda: sim.counters.create_requests == 1
        )
    assert took < PROMPT
    assert sim.counters.create_requests == 1
    assert sim.counters.creates == 0


async def test_cancel_during_a_long_download_backoff_returns_at_once_without_a_file(
    sim: Simulator, tmp_path: Path
) -> None:
    """Case 37: a truncated download with a 30 s download backoff, then cancel: no file left."""
    sim.latency = LatencyProfile.instant()
    retry = attrs.evolve(FAST_RETRY, download_backoff=LONG)
    async with open_client(sim, retry=retry) as nano:
        result = await nano.generate("a fox")
        sim.faults.push("download", Truncate(30))
        took = await cancel_while_sleeping(
            lambda: result.save(f"{tmp_path}/"), lambda: sim.counters.downloads == 1
        )
    assert took < PROMPT
    assert os.listdir(tmp_path) == []
    assert sim.counters.downloads == 1


async def test_cancel_a_batch_whose_creates_are_paused_by_retry_after_returns_at_once(
    sim: Simulator,
) -> None:
    """Case 37: one 429 (Retry-After 30) pauses every create of a batch; cancelling is immediate."""
    sim.faults.push("create", rate_limited(30))
    async with open_client(sim, max_concurrency=4) as nano:

        async def consume() -> None:
            async for _outcome in nano.generate_many(f"fox {i}" for i in range(20)):
                pass

        took = await cancel_while_sleeping(consume, lambda: sim.counters.create_requests >= 1)
    assert took < PROMPT
    # Only what was on the wire when the 429 came back: the pause held every other create.
    assert sim.counters.create_requests <= 4
    created = sim.counters.creates
    await anyio.sleep(0.2)
    assert sim.counters.creates == created


def test_long_backoff_constant_is_really_long() -> None:
    """Case 37: the 30 s backoff used above never draws a short wait (its floor is the cap)."""
    assert all(LONG.delay(n) == 30.0 for n in range(5))
    assert RetryPolicy().max_retry_after >= 30  # so a Retry-After of 30 s is honoured
