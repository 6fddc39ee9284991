"""The read timeout bounds silence, not the length of an answer, on API calls and downloads.

The SDK's connections keep aiohttp's rule (``Timeouts.read`` is the longest
wait for the next bytes of an answer) with one timer per connection instead
of one per request and per chunk. These tests pin the rule down on the
simulator: an answer that keeps trickling in is never cut, one that goes
quiet is, and a connection reused after a slow answer keeps its bound.
"""

from __future__ import annotations

import aiohttp
import anyio
import attrs
import pytest

from nanobanana_async import NetworkError, TaskStatus, Timeouts
from nanobanana_async._http import _protocol
from nanobanana_async.testing import Delay, LatencyProfile, Simulator, Slow

from .conftest import FAST_RETRY
from .helpers import fast_client, retries_logged

pytestmark = pytest.mark.anyio


async def test_this_aiohttp_accepts_the_one_timer_read_protocol() -> None:
    """A newer aiohttp without the hooks would fall back to its own timers: noticed here."""
    connector = aiohttp.TCPConnector()
    try:
        assert _protocol.install(connector)
    finally:
        await connector.close()


async def test_a_poll_answer_that_keeps_trickling_in_longer_than_the_read_timeout_is_kept(
    sim: Simulator, debug_logs: pytest.LogCaptureFixture
) -> None:
    """Bytes every 50 ms for well over the 0.2 s read timeout: one poll, no retry."""
    sim.latency = LatencyProfile.instant()
    async with fast_client(sim, timeouts=Timeouts(read=0.2)) as client:
        task = await client.submit("a fox")
        sim.faults.push("poll", Slow(bytes_per_second=200))
        with anyio.fail_after(10):
            seen = await client.get_task(task.id)
    assert seen.id == task.id
    assert sim.faults.pending("poll") == 0
    assert sim.counters.polls == 1
    assert retries_logged(debug_logs.records) == []


async def test_a_poll_answer_that_goes_quiet_midway_times_out(sim: Simulator) -> None:
    """One byte, then a 1 s silence, with a 0.2 s read timeout: cut as a timeout."""
    sim.latency = LatencyProfile.instant()
    async with fast_client(sim, timeouts=Timeouts(read=0.2)) as client:
        task = await client.submit("a fox")
        sim.faults.push("poll", Slow(bytes_per_second=1))
        with anyio.fail_after(3), pytest.raises(NetworkError, match="timed out"):
            await client.get_task(task.id)  # one query, no retry
    assert sim.counters.polls == 1


async def test_a_connection_reused_after_a_slow_answer_still_times_out_a_silent_one(
    sim: Simulator,
) -> None:
    """The moved deadline of one answer does not stretch the bound of the next on that socket."""
    sim.latency = LatencyProfile.instant()
    no_retry = attrs.evolve(FAST_RETRY, poll_failures=1)
    async with fast_client(
        sim, timeouts=Timeouts(read=0.3), connection_limit=1, retry=no_retry
    ) as client:
        task = await client.submit("a fox")
        sim.faults.push("poll", Slow(bytes_per_second=150))
        await client.get_task(task.id)
        sim.faults.push("poll", Delay(5.0))
        with anyio.fail_after(3), pytest.raises(NetworkError, match="timed out"):
            await client.get_task(task.id)
    assert sim.counters.creates == 1


async def test_a_completed_task_polled_through_slow_answers_still_completes(
    sim: Simulator,
) -> None:
    """Every poll trickles in for longer than the read timeout; the job still ends well."""
    sim.latency = LatencyProfile.instant()
    async with fast_client(sim, timeouts=Timeouts(read=0.15)) as client:
        for _ in range(3):
            sim.faults.push("poll", Slow(bytes_per_second=300))
        with anyio.fail_after(20):
            result = await client.generate("a fox")
    assert result.task.status is TaskStatus.COMPLETED
    assert sim.counters.creates == 1
