"""Polling survives faults, paces itself and ends cleanly (docs/reliability.md, cases 14-18).

Status queries are free, so transient failures (5xx, 408, a non-JSON 200, a
reset, a timeout) are retried with jitter, a bounded number of times; a 404 just
after create means "not visible yet"; a 429 storm halves the client's global poll
rate; a wait that runs out raises with the task's id, so it can be resumed.

Each test waits on real simulator tasks while poll faults are injected, and
checks the simulator's record of the polls (how many, and when) as well as
what the SDK returned or raised.
"""

from __future__ import annotations

import itertools
import random
import statistics
import time
from typing import Any

import anyio
import attrs
import pytest

from nanobanana_async import (
    APIError,
    FixedPolling,
    MalformedResponseError,
    NanoBananaError,
    NetworkError,
    RetryPolicy,
    ServerError,
    Task,
    TaskFailedError,
    TaskNotFoundError,
    TaskStatus,
    TaskTimeoutError,
    Timeouts,
)
from nanobanana_async.testing import (
    Delay,
    Fault,
    LatencyProfile,
    ResetConnection,
    Respond,
    Simulator,
)

from .conftest import FAST_RETRY
from .helpers import (
    fast_client,
    png_size,
    retries_logged,
    sdk_tasks,
    wait_until,
)


def _polls_of(sim: Simulator, task_id: str) -> list[float]:
    return [r.at for r in sim.requests if r.endpoint == "poll" and r.path.endswith("/" + task_id)]


# Case 14: transient poll faults are retried with jitter, a bounded number of times.

#: (fault, how many sim requests one SDK attempt may use, error after too many).
_POLL_FAULTS: dict[str, tuple[Fault, int, type[NanoBananaError]]] = {
    "503": (Respond(503, {"error": "busy"}), 1, ServerError),
    "502-html": (Respond(502, "<html><title>502 Bad Gateway</title></html>"), 1, ServerError),
    "500-empty": (Respond(500, None), 1, ServerError),
    "408": (Respond(408, None), 1, APIError),
    "html-200": (Respond(200, "<html>maintenance</html>"), 1, MalformedResponseError),
    # aiohttp itself resends an idempotent GET once after a reset on a reused connection.
    "reset": (ResetConnection(), 2, NetworkError),
    "read-timeout": (Delay(0.5), 1, NetworkError),
}


@pytest.mark.parametrize("kind", list(_POLL_FAULTS))
async def test_transient_poll_faults_are_retried_and_the_task_completes(
    sim: Simulator, debug_logs: pytest.LogCaptureFixture, kind: str
) -> None:
    """Case 14: four poll faults in a row (5xx, 408, HTML 200, reset, timeout): still completes."""
    fault, per_attempt, _ = _POLL_FAULTS[kind]
    sim.latency = LatencyProfile.instant()
    async with fast_client(sim, timeouts=Timeouts(read=0.1)) as client:
        task = await client.submit("a fox")
        for _ in range(4):
            sim.faults.push("poll", fault)
        with anyio.fail_after(10):
            done = await client.wait(task)
    assert done.status is TaskStatus.COMPLETED
    assert sim.faults.pending("poll") == 0
    logged = retries_logged(debug_logs.records, "query")
    assert 1 <= len(logged) <= 4
    assert retries_logged(debug_logs.records) == logged  # no retry of anything else
    # Exactly the four faults plus the one good answer reached the service.
    assert sim.counters.polls == 5
    assert sim.counters.creates == 1
    assert len(logged) * per_attempt >= 4


@pytest.mark.parametrize("kind", list(_POLL_FAULTS))
async def test_persistent_poll_faults_give_up_after_a_bounded_number_of_polls(
    sim: Simulator, kind: str
) -> None:
    """Case 14: retries are bounded: after poll_failures failed attempts the wait raises."""
    fault, per_attempt, error = _POLL_FAULTS[kind]
    limit = FAST_RETRY.poll_failures
    sim.latency = LatencyProfile.instant()
    async with fast_client(sim, timeouts=Timeouts(read=0.1)) as client:
        task = await client.submit("a fox")
        for _ in range(limit * per_attempt):
            sim.faults.push("poll", fault)
        with anyio.fail_after(10), pytest.raises(error):
            await client.wait(task)
        polls = sim.counters.polls
        await anyio.sleep(0.1)
    assert limit <= polls <= limit * per_attempt
    assert sim.counters.polls == polls  # nothing keeps polling after giving up


@pytest.mark.parametrize("kind", list(_POLL_FAULTS))
async def test_each_poll_retry_is_charged_once_to_the_client_wide_retry_budget(
    sim: Simulator, debug_logs: pytest.LogCaptureFixture, kind: str
) -> None:
    """Case 14: a retry budget with room for two retries fails the third poll failure fast."""
    fault, per_attempt, error = _POLL_FAULTS[kind]
    two_retries = attrs.evolve(FAST_RETRY, budget_capacity=2 * FAST_RETRY.budget_cost)
    sim.latency = LatencyProfile.instant()
    async with fast_client(sim, timeouts=Timeouts(read=0.1), retry=two_retries) as client:
        task = await client.submit("a fox")
        for _ in range(FAST_RETRY.poll_failures * per_attempt):
            sim.faults.push("poll", fault)
        with anyio.fail_after(10), pytest.raises(error):
            await client.wait(task)
        polls = sim.counters.polls
        await anyio.sleep(0.1)
    # Exactly two retries, then failing fast, well before poll_failures (5) ran out: an
    # uncharged retry would have left room for a third, one charged twice for only one.
    logged = retries_logged(debug_logs.records)
    assert [(operation, attempt) for operation, attempt, _, _ in logged] == [
        ("query", 1),
        ("query", 2),
    ]
    assert 3 <= polls <= 3 * per_attempt
    assert sim.counters.polls == polls


def test_poll_backoff_is_full_jitter_within_its_ceiling() -> None:
    """Case 14: retry waits are spread uniformly in [floor, min(cap, base * 2**n)]."""
    backoff = RetryPolicy().poll_backoff
    rng = random.Random(14)
    for attempt, ceiling in [(0, 1.0), (2, 4.0), (4, 16.0), (9, 30.0)]:
        delays = [backoff.delay(attempt, rng) for _ in range(500)]
        assert all(backoff.floor <= d <= ceiling for d in delays)
        assert len(set(delays)) > 400  # jittered, not a fixed schedule
        assert min(delays) < ceiling * 0.2
        assert max(delays) > ceiling * 0.8


# Case 15: a 404 just after create means "not visible yet"; one that persists is final.

_NOT_FOUND = Respond(404, {"code": 404, "message": "task not found"})


async def test_a_404_just_after_create_is_treated_as_pending(
    sim: Simulator, debug_logs: pytest.LogCaptureFixture
) -> None:
    """Case 15: 404s inside not_found_grace mean "not visible yet": the task completes."""
    sim.latency = LatencyProfile.instant()
    # No retry budget at all: were these 404s counted as failures, the wait would fail fast.
    no_budget = attrs.evolve(FAST_RETRY, budget_capacity=0.0)
    async with fast_client(sim, retry=no_budget) as client:
        task = await client.submit("a fox")
        for _ in range(3):
            sim.faults.push("poll", _NOT_FOUND)
        with anyio.fail_after(5):
            done = await client.wait(task)
    assert done.status is TaskStatus.COMPLETED
    assert len(_polls_of(sim, task.id)) == 4
    assert retries_logged(debug_logs.records) == []  # "not visible yet" is no failure
    assert sim.counters.creates == 1


async def test_a_persistent_404_raises_task_not_found_after_the_grace(sim: Simulator) -> None:
    """Case 15: a 404 that outlives not_found_grace (0.5 s here) is TaskNotFoundError(id)."""
    grace = FAST_RETRY.not_found_grace
    async with fast_client(sim) as client:
        task = await client.submit("a fox")
        for _ in range(500):
            sim.faults.push("poll", _NOT_FOUND)
        started = time.monotonic()
        with anyio.fail_after(5), pytest.raises(TaskNotFoundError) as caught:
            await client.wait(task)
        elapsed = time.monotonic() - started
        polls = sim.counters.polls
        await anyio.sleep(0.1)
    assert caught.value.task_id == task.id
    assert caught.value.status == 404
    assert grace <= elapsed < grace + 1.0
    # About one poll per 20 ms interval during the grace, then it stopped.
    assert 2 <= polls <= grace / 0.02 + 5
    assert sim.counters.polls == polls
    assert sim.counters.creates == 1


async def test_without_a_grace_the_first_404_is_final(sim: Simulator) -> None:
    """Case 15: with not_found_grace=0 a 404 is TaskNotFoundError at once, after one poll."""
    policy = RetryPolicy(not_found_grace=0.0, poll_backoff=FAST_RETRY.poll_backoff)
    async with fast_client(sim, retry=policy) as client:
        task = await client.submit("a fox")
        sim.faults.push("poll", _NOT_FOUND)
        with anyio.fail_after(5), pytest.raises(TaskNotFoundError):
            await client.wait(task)
    assert sim.counters.polls == 1


# Case 16: a 429 storm lowers the global poll rate; no poll comes before its Retry-After.


async def test_a_429_storm_slows_every_poll_of_the_client_and_honours_retry_after(
    sim: Simulator,
) -> None:
    """Case 16: a 429 storm caps the global poll pace; none is early; wakeups are spread."""
    retry_after = 0.2
    async with fast_client(sim) as client:
        tasks = [await client.submit(f"fox {i} [never]") for i in range(4)]
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                for task in tasks:
                    group.start_soon(client.wait, task)
                await anyio.sleep(0.15)
                uncapped = client.stats().poll_pace  # unlimited until the service complains
                storm_index = len(sim.requests)
                storm_at = time.monotonic()
                for _ in range(8):  # two per task: below the five-failures limit
                    sim.faults.push(
                        "poll",
                        Respond(429, {"error": "slow down"}, headers={"Retry-After": "0.2"}),
                    )
                await wait_until(lambda: client.stats().poll_pace is not None)
                capped = client.stats().poll_pace
                capped_at = time.monotonic()
                await anyio.sleep(0.8)
                group.cancel_scope.cancel()
    polls = [r for r in sim.requests if r.endpoint == "poll"]
    before = [r.at for r in polls if r.at < storm_at]
    limited = [r for r in sim.requests[storm_index:] if r.endpoint == "poll"][:2]
    after = [r.at for r in polls if capped_at + 0.05 <= r.at < capped_at + 0.8]

    assert uncapped is None
    assert capped is not None
    # The global rate dropped for every task, not only those that were told off (AIMD: halved).
    rate_before = len(before) / 0.15
    rate_after = len(after) / 0.75
    assert rate_before > 40
    assert rate_after < rate_before / 2
    assert rate_after <= capped * 1.2 + 2
    # No poll of a rate-limited task arrived before its Retry-After ran out.
    assert len(limited) == 2
    for request in limited:
        task_id = request.path.rsplit("/", 1)[1]
        later = [at for at in _polls_of(sim, task_id) if at > request.at]
        assert later  # it did poll again, later
        assert later[0] >= request.at + retry_after
    # Wakeups are spread out: paced polls do not arrive together.
    gaps = [b - a for a, b in itertools.pairwise(after)]
    assert gaps
    assert statistics.median(gaps) >= 0.5 / capped  # event-loop jitter moves single polls
    assert min(gaps) > 0.001
    assert sim.counters.creates == 4


# Case 17: odd answers are normalised or become typed errors, never a crash.


async def _wait_with_answers(sim: Simulator, answers: list[dict[str, Any]]) -> tuple[Task, Task]:
    """Submit, script the next poll answers (filled with the real id and URL), wait."""
    sim.latency = LatencyProfile.instant()
    async with fast_client(sim) as client:
        task = await client.submit("a fox")
        for answer in answers:
            body = {"id": task.id, "image_url": sim.image_url(task.id), **answer}
            sim.faults.push("poll", Respond(200, body))
        with anyio.fail_after(5):
            done = await client.wait(task, timeout=3)
    return task, done


async def test_completed_without_a_url_is_malformed_not_a_crash(sim: Simulator) -> None:
    """Case 17: completed with no (or an empty) image_url: MalformedResponseError with the id."""
    sim.latency = LatencyProfile.instant()
    async with fast_client(sim) as client:
        for url in (None, "", "   "):
            task = await client.submit("a fox")
            sim.faults.push(
                "poll", Respond(200, {"id": task.id, "status": "completed", "image_url": url})
            )
            polls = sim.counters.polls
            with anyio.fail_after(5), pytest.raises(MalformedResponseError) as caught:
                await client.wait(task)
            assert caught.value.task_id == task.id
            assert "no image_url" in str(caught.value)
            assert sim.counters.polls == polls + 1  # not retried: asking again will not help
    assert sim.counters.downloads == 0


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ("NSFW content detected", "NSFW content detected"),
        ({"message": "upstream model crashed", "code": "model_error"}, "upstream model crashed"),
        ({"code": "E42"}, "E42"),
        (None, "the service gave no reason"),
        ("", "the service gave no reason"),
        (42, "42"),
    ],
    ids=["string", "object", "object-without-message", "null", "empty", "number"],
)
async def test_a_failed_task_raises_task_failed_with_a_message_whatever_the_error_shape(
    sim: Simulator, error: object, message: str
) -> None:
    """Case 17: error as a string, an object, null or junk: TaskFailedError with a message."""
    sim.latency = LatencyProfile.uniform(0.5, 0.5)  # leaves time to script the first poll
    async with fast_client(sim, polling=FixedPolling(0.1)) as client:
        caught: list[TaskFailedError] = []

        async def generate() -> None:
            try:
                await client.generate("a fox")
            except TaskFailedError as exc:
                caught.append(exc)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                group.start_soon(generate)
                await wait_until(lambda: bool(sim.tasks))
                [task_id] = sim.tasks
                sim.faults.push(
                    "poll",
                    Respond(
                        200, {"id": task_id, "status": "failed", "error": error, "image_url": None}
                    ),
                )
    [failure] = caught
    assert failure.task_id == task_id
    assert failure.task.status is TaskStatus.FAILED
    assert message in failure.message
    assert message in str(failure)
    assert sim.counters.polls == 1
    assert sim.counters.downloads == 0


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("COMPLETED", TaskStatus.COMPLETED),
        ("Completed", TaskStatus.COMPLETED),
        (" succeeded ", TaskStatus.COMPLETED),
        ("FAILED", TaskStatus.FAILED),
    ],
)
async def test_mixed_case_statuses_are_normalised(
    sim: Simulator, status: str, expected: TaskStatus
) -> None:
    """Case 17: status spelling and case do not matter; the normalised task is terminal."""
    task, done = await _wait_with_answers(sim, [{"status": status, "error": "why"}])
    assert done.status is expected
    assert done.id == task.id
    assert sim.counters.polls == 1


async def test_a_completed_mixed_case_answer_downloads_normally(sim: Simulator) -> None:
    """Case 17: a "Completed" answer is a normal result end to end: its PNG downloads."""
    _, done = await _wait_with_answers(sim, [{"status": "Completed"}])
    async with fast_client(sim) as client:
        from nanobanana_async import ImageResult

        data = await ImageResult(done, fetcher=client).read()
    png_size(data)
    assert sim.counters.downloads_completed == 1


async def test_unknown_statuses_are_not_terminal(sim: Simulator) -> None:
    """Case 17: unknown statuses (any case) keep the wait going until a real terminal one."""
    _, done = await _wait_with_answers(
        sim, [{"status": "Warming-Up"}, {"status": "RENDERING"}, {"status": 7}]
    )
    assert done.status is TaskStatus.COMPLETED
    assert sim.counters.polls == 4


async def test_an_unknown_status_forever_ends_at_the_deadline_with_that_status(
    sim: Simulator,
) -> None:
    """Case 17: a status that never becomes known is non-terminal until the wait's deadline."""
    sim.latency = LatencyProfile.instant()
    async with fast_client(sim) as client:
        task = await client.submit("a fox")
        for _ in range(200):
            sim.faults.push("poll", Respond(200, {"id": task.id, "status": "Mystery"}))
        with anyio.fail_after(5), pytest.raises(TaskTimeoutError) as caught:
            await client.wait(task, timeout=0.3)
    assert caught.value.last_status == "mystery"
    assert caught.value.task_id == task.id
    assert sim.counters.polls >= 3


# Case 18: a task that never finishes times out with its id and can be waited on again.


async def test_a_task_that_never_finishes_times_out_with_its_id_and_leaks_nothing(
    sim: Simulator,
) -> None:
    """Case 18: TaskTimeoutError (a TimeoutError) with id and status; no task or poll left."""
    async with fast_client(sim) as client:
        task = await client.submit("a fox [never]")
        await anyio.sleep(0.05)
        live_before = sdk_tasks()
        with anyio.fail_after(5), pytest.raises(TimeoutError) as caught:
            await client.wait(task, timeout=0.2)
        error = caught.value
        assert isinstance(error, TaskTimeoutError)
        assert error.task_id == task.id
        assert error.last_status == "processing"
        assert task.id in str(error)
        assert "wait()" in str(error)
        await anyio.sleep(0.05)
        assert sdk_tasks() == live_before
        polls = sim.tasks[task.id].polls
        await anyio.sleep(0.1)
        assert sim.tasks[task.id].polls == polls  # nothing polls in the background

        # wait(id) picks the same task up again (and times out again, with the same id).
        with anyio.fail_after(5), pytest.raises(TaskTimeoutError) as again:
            await client.wait(task.id, timeout=0.1)
    assert again.value.task_id == task.id
    assert sim.tasks[task.id].polls > polls
    assert sim.counters.create_requests == 1


async def test_wait_by_id_resumes_a_timed_out_task_that_finishes_later(sim: Simulator) -> None:
    """Case 18: after a timeout, wait(id) on the same id returns the task once it is done."""
    sim.latency = LatencyProfile.uniform(60.0, 60.0)
    async with fast_client(sim) as client:
        task = await client.submit("a slow fox")
        with anyio.fail_after(5), pytest.raises(TaskTimeoutError):
            await client.wait(task, timeout=0.1)
        sim.tasks[task.id].completes_at = time.monotonic()  # the service finishes it now
        with anyio.fail_after(5):
            done = await client.wait(task.id, timeout=2)
        data = await client.read_image(done)
    assert done.status is TaskStatus.COMPLETED
    assert done.id == task.id
    png_size(data)
    assert sim.counters.creates == 1
    assert sim.counters.create_requests == 1


async def test_a_batch_job_that_never_finishes_keeps_its_id_for_a_later_wait(
    sim: Simulator,
) -> None:
    """Case 18: in generate_many the timed-out outcome carries the task, so it can be resumed."""
    async with fast_client(sim) as client:
        with anyio.fail_after(5):
            outcomes = [
                o async for o in client.generate_many(["a fox [never]", "a cat"], timeout=0.3)
            ]
        [stuck] = [o for o in outcomes if not o.ok]
        assert isinstance(stuck.error, TaskTimeoutError)
        assert stuck.task is not None
        assert stuck.task.id == stuck.error.task_id
        assert stuck.task.id in sim.tasks
        with pytest.raises(TaskTimeoutError):
            await client.wait(stuck.task.id, timeout=0.1)
    assert sum(o.ok for o in outcomes) == 1
    assert sim.counters.creates == 2
