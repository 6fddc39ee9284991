"""Events and stats: the exact sequence a job reports, and subscribers that cannot harm a job.

Each test runs on the simulator and compares what the client reported with
what the simulator counted.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from nanobanana_async import (
    BatchFinished,
    BatchStarted,
    Completed,
    Event,
    EventsDropped,
    Failed,
    NanoBanana,
    RateLimited,
    Retrying,
    Saved,
    StatusChanged,
    SubmissionUncertainError,
    Submitted,
    TaskStatus,
    Uncertain,
    UsageError,
)
from nanobanana_async.testing import LatencyProfile, ResetConnection, Respond, Simulator

from .helpers import fast_client

pytestmark = pytest.mark.anyio

#: Queued for 0.1 s, then processing for 0.2 s: polls every 20 ms see both states.
STAGED = LatencyProfile(queue_seconds=0.1, default_seconds=(0.2, 0.2))


def _kinds(events: list[Event]) -> list[str]:
    return [type(event).__name__ for event in events]


def _job_events(events: list[Event], index: int) -> list[str]:
    return [type(event).__name__ for event in events if event.index == index]


async def test_a_batch_job_reports_submitted_processing_completed_saved_between_batch_events(
    sim: Simulator,
) -> None:
    sim.latency = STAGED
    seen: list[Event] = []
    async with fast_client(sim) as client:
        client.subscribe(seen.append)
        outcomes = [o async for o in client.generate_many(["a fox"])]
    assert outcomes[0].ok
    assert _kinds(seen) == [
        "BatchStarted",
        "Submitted",
        "StatusChanged",
        "Completed",
        "Saved",
        "BatchFinished",
    ]
    started, submitted, moved, completed, saved, finished = seen
    assert isinstance(started, BatchStarted)
    assert started.batch == 1
    assert isinstance(submitted, Submitted)
    assert outcomes[0].task is not None
    assert submitted.task_id == outcomes[0].task.id
    assert (submitted.batch, submitted.index) == (1, 0)
    assert outcomes[0].request is not None
    assert submitted.model == outcomes[0].request.model
    assert isinstance(moved, StatusChanged)
    assert moved.status is TaskStatus.PROCESSING
    assert isinstance(completed, Completed)
    assert completed.latency is not None
    assert completed.latency >= 0.3
    assert isinstance(saved, Saved)
    assert saved.path is None
    assert saved.size == len(outcomes[0].data or b"")
    assert isinstance(finished, BatchFinished)
    assert (finished.outcomes, finished.succeeded, finished.failed) == (1, 1, 0)
    assert all(a.at <= b.at for a, b in itertools.pairwise(seen))
    assert sim.counters.creates == 1


async def test_a_saved_job_names_its_file_and_a_second_batch_gets_the_next_number(
    sim: Simulator, tmp_path: Path
) -> None:
    sim.latency = LatencyProfile.instant()
    seen: list[Event] = []
    async with fast_client(sim) as client:
        client.subscribe(seen.append)
        async for _ in client.generate_many(["a fox"]):
            pass
        first = [o async for o in client.generate_many(["a cat"], save_to=tmp_path)]
    saved = [event for event in seen if isinstance(event, Saved)]
    assert [event.batch for event in saved] == [1, 2]
    assert saved[1].path == first[0].path
    assert first[0].path is not None
    assert saved[1].size == first[0].path.stat().st_size


async def test_a_retried_poll_reports_retrying_with_its_cause_then_goes_on(
    sim: Simulator,
) -> None:
    sim.latency = LatencyProfile.instant()
    seen: list[Event] = []
    async with fast_client(sim) as client:
        client.subscribe(seen.append)
        sim.faults.push("poll", Respond(503, {"error": {"message": "busy"}}))
        outcomes = [o async for o in client.generate_many(["a fox"])]
    assert outcomes[0].ok
    assert _kinds(seen) == [
        "BatchStarted",
        "Submitted",
        "Retrying",
        "Completed",
        "Saved",
        "BatchFinished",
    ]
    retry = seen[2]
    assert isinstance(retry, Retrying)
    assert (retry.operation, retry.attempt, retry.cause) == ("query", 1, "ServerError")
    assert retry.task_id == seen[1].task_id
    assert retry.index == 0
    assert "busy" in retry.message
    assert sim.counters.polls == 2
    assert client.stats().retries == 1
    assert client.stats().retries_by_cause == {"ServerError": 1}


async def test_a_rate_limited_batch_reports_the_pause_of_every_create(sim: Simulator) -> None:
    sim.latency = LatencyProfile.instant()
    seen: list[Event] = []
    async with fast_client(sim) as client:
        client.subscribe(seen.append)
        sim.faults.push(
            "create",
            Respond(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "0.2"}),
        )
        outcomes = [o async for o in client.generate_many(["a fox"])]
        stats = client.stats()
    assert outcomes[0].ok
    assert _kinds(seen)[:4] == ["BatchStarted", "RateLimited", "Retrying", "Submitted"]
    limited = seen[1]
    assert isinstance(limited, RateLimited)
    assert (limited.operation, limited.scope, limited.index) == ("create", "creates", 0)
    assert limited.retry_after == pytest.approx(0.2)
    assert limited.task_id is None
    assert stats.rate_limited == 1
    assert 0.2 <= stats.paused_seconds <= 0.3
    assert sim.counters.create_requests == 2  # the refused one and the accepted one
    assert sim.counters.creates == 1
    assert stats.submitted == 1


async def test_a_failed_task_ends_its_job_with_failed_and_the_reason(sim: Simulator) -> None:
    sim.latency = LatencyProfile.instant()
    seen: list[Event] = []
    async with fast_client(sim) as client:
        client.subscribe(seen.append)
        outcomes = [o async for o in client.generate_many(["a fox [fail]"])]
        stats = client.stats()
    assert not outcomes[0].ok
    assert _kinds(seen) == ["BatchStarted", "Submitted", "Failed", "BatchFinished"]
    failed = seen[2]
    assert isinstance(failed, Failed)
    assert failed.error is outcomes[0].error
    assert failed.task_id == seen[1].task_id
    finished = seen[-1]
    assert isinstance(finished, BatchFinished)
    assert (finished.succeeded, finished.failed) == (0, 1)
    assert (stats.submitted, stats.failed, stats.saved, stats.completed) == (1, 1, 0, 0)


async def test_an_uncertain_create_ends_its_job_with_uncertain_only(sim: Simulator) -> None:
    sim.latency = LatencyProfile.instant()
    seen: list[Event] = []
    async with fast_client(sim) as client:
        client.subscribe(seen.append)
        sim.faults.push("create", ResetConnection(create_first=True))
        outcomes = [o async for o in client.generate_many(["a fox"])]
        stats = client.stats()
    assert not outcomes[0].ok
    assert _kinds(seen) == ["BatchStarted", "Uncertain", "BatchFinished"]
    uncertain = seen[1]
    assert isinstance(uncertain, Uncertain)
    assert uncertain.error is outcomes[0].error
    assert (stats.uncertain, stats.failed, stats.submitted) == (1, 0, 0)
    assert sim.counters.creates == 1


async def test_a_raising_subscriber_is_logged_once_and_harms_no_job(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    sim.latency = LatencyProfile.instant()
    calls = 0

    def broken(event: Event) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("subscriber bug")

    seen: list[Event] = []
    caplog.set_level(logging.WARNING, logger="nanobanana_async")
    async with fast_client(sim) as client:
        client.subscribe(broken)
        client.subscribe(seen.append)
        outcomes = [o async for o in client.generate_many([f"fox {i}" for i in range(5)])]
    assert all(outcome.ok for outcome in outcomes)
    assert calls == len(seen) > 5  # called for every event, before the next subscriber
    warnings = [r for r in caplog.records if "subscriber" in r.getMessage()]
    assert len(warnings) == 1
    assert sim.counters.creates == 5


async def test_an_async_subscriber_gets_every_event_of_a_batch_in_order(sim: Simulator) -> None:
    sim.latency = LatencyProfile.instant()
    got: list[Event] = []
    done = anyio.Event()

    async def record(event: Event) -> None:
        await anyio.lowlevel.checkpoint()
        got.append(event)
        if isinstance(event, BatchFinished):
            done.set()

    async with fast_client(sim) as client:
        client.subscribe(record)
        async for _ in client.generate_many([f"fox {i}" for i in range(3)]):
            pass
        with anyio.fail_after(5):
            await done.wait()
    assert _kinds(got)[0] == "BatchStarted"
    assert _kinds(got)[-1] == "BatchFinished"
    assert _kinds(got).count("Saved") == 3


async def test_an_async_subscriber_outside_the_client_block_is_refused(sim: Simulator) -> None:
    async def record(event: Event) -> None:
        pass

    client = fast_client(sim)
    with pytest.raises(UsageError, match="async with"):
        client.subscribe(record)
    await client.aclose()


async def test_an_events_reader_sees_the_batch_and_ends_when_the_client_closes(
    sim: Simulator,
) -> None:
    sim.latency = LatencyProfile.instant()
    async with fast_client(sim) as client:
        events = client.events()
        async for _ in client.generate_many(["a fox", "a cat"]):
            pass
    with anyio.fail_after(5):
        got = [event async for event in events]
    kinds = _kinds(got)
    assert kinds[0] == "BatchStarted"
    assert kinds[-1] == "BatchFinished"
    assert kinds.count("Submitted") == kinds.count("Saved") == 2


async def test_a_slow_events_reader_is_told_how_many_it_lost_and_never_slows_the_jobs(
    sim: Simulator,
) -> None:
    sim.latency = LatencyProfile.instant()
    async with fast_client(sim, max_concurrency=8) as client:
        events = client.events(buffer=5)
        with anyio.fail_after(20):
            outcomes = [o async for o in client.generate_many([f"fox {i}" for i in range(20)])]
        first = await events.__anext__()
        rest = [await events.__anext__() for _ in range(5)]
        await events.aclose()
    assert all(outcome.ok for outcome in outcomes)
    assert isinstance(first, EventsDropped)
    # 20 jobs x (Submitted, Completed, Saved) + 2 batch events, 5 kept.
    assert first.count == 20 * 3 + 2 - 5
    assert _kinds(rest)[-1] == "BatchFinished"


async def test_an_unsubscribed_subscriber_hears_nothing_more(sim: Simulator) -> None:
    sim.latency = LatencyProfile.instant()
    seen: list[Event] = []
    async with fast_client(sim) as client:
        stop = client.subscribe(seen.append)
        await client.generate("a fox")
        count = len(seen)
        stop()
        stop()
        await client.generate("a cat")
    assert count > 0
    assert len(seen) == count


async def test_single_calls_report_their_task_and_stats_count_them(sim: Simulator) -> None:
    sim.latency = LatencyProfile.instant()
    seen: list[Event] = []
    async with fast_client(sim) as client:
        client.subscribe(seen.append)
        result = await client.generate("a fox", model="nano-banana")
        data = await result.read()
        stats = client.stats()
    assert _kinds(seen) == ["Submitted", "Completed", "Saved"]
    assert {event.task_id for event in seen} == {result.task.id}
    assert all(event.index is None and event.batch is None for event in seen)
    assert stats.submitted == stats.completed == stats.saved == 1
    assert stats.polls == sim.counters.polls
    assert stats.bytes_downloaded == len(data)
    assert stats.in_flight == 0
    assert stats.latency[("nano-banana", None)].count == 1


async def test_stats_repr_shows_its_counters_and_nothing_is_paid_for_listening(
    sim: Simulator,
) -> None:
    sim.latency = LatencyProfile.instant()
    async with NanoBanana(api_key=sim.api_key, base_url=sim.base_url) as client:
        stats = client.stats()
    text = repr(stats)
    for name in ("submitted=0", "completed=0", "failed=0", "uncertain=0", "in_flight=0"):
        assert name in text
    assert sim.api_key not in text


async def test_events_and_stats_agree_with_the_simulator_over_a_faulty_500_job_run(
    sim: Simulator,
) -> None:
    """Seeded resets, 503s, 429s and cut downloads: every count matches the simulator's own."""
    sim.latency = LatencyProfile(default_seconds=(0.0, 0.05))
    sim.faults.set_rates(seed=7, reset=0.03, server_error=0.03, rate_limit=0.03, truncate=0.03)
    seen: list[Event] = []
    async with fast_client(sim, max_concurrency=50) as client:
        client.subscribe(seen.append)
        with anyio.fail_after(120):
            outcomes = [o async for o in client.generate_many([f"fox {i}" for i in range(500)])]
        stats = client.stats()
    injected = sim.faults.injected
    kinds = _kinds(seen)
    assert len(outcomes) == 500
    assert kinds.count("Saved") + kinds.count("Failed") + kinds.count("Uncertain") == 500
    assert kinds.count("Saved") == sum(o.ok for o in outcomes) == stats.saved
    assert (
        kinds.count("Uncertain")
        == stats.uncertain
        == sum(isinstance(o.error, SubmissionUncertainError) for o in outcomes)
    )
    assert kinds.count("Submitted") == stats.submitted
    assert len(sim.tasks) == stats.submitted + injected.create_resets_billed
    # aiohttp itself resends a GET once when a reused connection turns out closed.
    assert stats.polls <= sim.counters.polls <= stats.polls + injected.poll_resets
    assert (
        kinds.count("RateLimited")
        == stats.rate_limited
        == (injected.create_rate_limits + injected.poll_rate_limits)
    )
    assert kinds.count("Retrying") == stats.retries > 0
    assert sum(stats.retries_by_cause.values()) == stats.retries
    assert stats.in_flight == 0
    assert injected.total > 20


async def test_stats_count_the_jobs_queued_and_processing_while_a_batch_runs(
    sim: Simulator,
) -> None:
    # Every create is answered within milliseconds; each state lasts far longer than a poll.
    sim.latency = LatencyProfile(queue_seconds=0.6, default_seconds=(0.4, 0.4))
    states: list[tuple[int, int, int]] = []
    async with fast_client(sim) as client:

        def snapshot(event: Event) -> None:
            stats = client.stats()
            states.append((stats.in_flight, stats.queued, stats.processing))

        client.subscribe(snapshot)
        outcomes = [o async for o in client.generate_many([f"fox {i}" for i in range(4)])]
        final = client.stats()
    assert all(outcome.ok for outcome in outcomes)
    assert max(queued for _, queued, _ in states) == 4
    assert max(processing for _, _, processing in states) == 4
    assert all(queued + processing <= in_flight for in_flight, queued, processing in states)
    assert (final.in_flight, final.queued, final.processing) == (0, 0, 0)


async def test_a_closed_events_reader_is_let_go_by_the_client(sim: Simulator) -> None:
    """A web app opens one reader per request: closed readers must not pile up in the client."""
    import gc
    import weakref

    async with fast_client(sim) as client:
        refs = []
        for _ in range(3):
            async with client.events() as events:
                refs.append(weakref.ref(events))
            del events
        gc.collect()
        assert [ref() for ref in refs] == [None, None, None]
        seen: list[Event] = []
        client.subscribe(seen.append)
        await client.generate("a fox")
    assert "Completed" in _kinds(seen)
