"""generate_many against the simulator: one outcome per input, bounded, lazy, and clean to leave.

Every test runs a real batch over loopback and checks the simulator's side of
the story (creates, polls, downloads, jobs in flight, connections, request
times) as well as the outcomes the consumer saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import sys
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import pytest

from nanobanana_async import (
    AuthenticationError,
    DestinationExistsError,
    FixedPolling,
    ImageRequest,
    InvalidRequestError,
    MalformedResponseError,
    NanoBanana,
    Outcome,
    OutcomeStream,
    TaskFailedError,
    request_fingerprint,
)
from nanobanana_async.testing import LatencyProfile, Respond, Simulator

from .conftest import FAST_RETRY
from .helpers import part_files, png_size, sdk_tasks

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Slack for tasks that are not per-job: the batch runner, the test, its sampler.
TASK_SLACK = 10


@contextlib.asynccontextmanager
async def open_client(sim: Simulator, **options: Any) -> AsyncIterator[NanoBanana]:
    """A client on ``sim`` polling every 20 ms and retrying without real waits."""
    settings: dict[str, Any] = {"polling": FixedPolling(interval=0.02), "retry": FAST_RETRY}
    settings.update(options)
    async with NanoBanana(api_key=sim.api_key, base_url=sim.base_url, **settings) as nano:
        yield nano


async def wait_for_no_connections(sim: Simulator) -> None:
    """Wait (at most 5 s) until the simulator has seen every connection close."""
    with anyio.fail_after(5):
        while sim.counters.open_connections:  # noqa: ASYNC110 - a gauge, not an event
            await anyio.sleep(0.01)


def prompt_of(sim: Simulator, task_id: str) -> str:
    prompt = sim.tasks[task_id].request["prompt"]
    assert isinstance(prompt, str)
    return prompt


# 1. One outcome per input, whatever happens to each job.


@pytest.mark.usefixtures("no_loop_debug")
async def test_1000_inputs_with_failures_and_poll_faults_give_exactly_one_outcome_each(
    sim: Simulator,
) -> None:
    """1,000 inputs with [fail], [no-url] and 503 polls: indices 0..999 once each, right errors."""
    total = 1000

    def prompt(index: int) -> str:
        marker = {3: " [fail]", 7: " [no-url]"}.get(index % 10, "")
        return f"picture number {index}{marker}"

    def push_poll_faults(count: int) -> None:
        for _ in range(count):
            sim.faults.push("poll", Respond(503, {"error": {"message": "overloaded"}}))

    # 40 poll faults in all, fewer than poll_failures: no job can run out of retries.
    retry = attrs.evolve(FAST_RETRY, poll_failures=50)
    outcomes: dict[int, Outcome] = {}
    duplicates: list[int] = []
    push_poll_faults(10)
    async with open_client(sim, retry=retry) as nano:
        async for outcome in nano.generate_many(prompt(i) for i in range(total)):
            if outcome.index in outcomes:
                duplicates.append(outcome.index)
            outcomes[outcome.index] = outcome
            if len(outcomes) in (250, 500, 750):
                push_poll_faults(10)

    assert duplicates == []
    assert sorted(outcomes) == list(range(total))
    for index, outcome in outcomes.items():
        assert outcome.request is not None
        assert outcome.request.prompt == prompt(index)
        if index % 10 == 3:
            assert isinstance(outcome.error, TaskFailedError), (index, outcome.error)
            assert "content policy" in str(outcome.error).lower()
            assert outcome.task is not None
            assert sim.tasks[outcome.task.id].outcome == "failed"
        elif index % 10 == 7:
            assert isinstance(outcome.error, MalformedResponseError), (index, outcome.error)
            assert outcome.data is None
        else:
            assert outcome.error is None, (index, outcome.error)
            assert outcome.ok
            assert outcome.data is not None
            assert outcome.data.startswith(PNG_SIGNATURE)
            assert outcome.task is not None
            assert prompt_of(sim, outcome.task.id) == prompt(index)

    succeeded = sum(1 for o in outcomes.values() if o.ok)
    assert succeeded == 800
    counters = sim.counters
    assert counters.creates == total
    assert counters.create_requests == total
    assert sim.faults.pending("poll") == 0  # all 40 faults were served, and survived
    assert counters.polls >= total + 40
    assert counters.downloads == succeeded
    assert counters.downloads_completed == succeeded
    assert counters.peak_in_flight <= 32
    assert counters.in_flight == 0


# 2. Lazy input.


@pytest.mark.parametrize(("ordered", "window"), [(False, 8), (True, 16)])
async def test_input_is_pulled_at_most_a_window_ahead_of_the_consumer(
    sim: Simulator, ordered: bool, window: int
) -> None:
    """A slow consumer: the generator is never more than the window (+2) ahead of outcomes seen."""
    total = 120
    pulled = 0
    received = 0
    ahead_when_pulled: list[int] = []
    creates_ahead: list[int] = []

    def prompts() -> Iterator[str]:
        nonlocal pulled
        for index in range(total):
            pulled += 1
            ahead_when_pulled.append(pulled - received)
            yield f"lazy {index}"

    async with open_client(sim, max_concurrency=8) as nano:
        async for _outcome in nano.generate_many(prompts(), ordered=ordered):
            received += 1
            creates_ahead.append(sim.counters.creates - received)
            await anyio.sleep(0.005)

    assert received == total
    assert pulled == total
    # Unordered: max_concurrency ahead; ordered holds back up to twice that for reordering.
    assert max(ahead_when_pulled) <= window + 2
    assert max(creates_ahead) <= window + 2
    assert max(ahead_when_pulled) >= 8  # the bound was really reached, not trivially met
    assert sim.counters.creates == total
    assert sim.counters.peak_in_flight <= 8


async def test_a_paused_consumer_stops_the_pulling_the_creates_and_the_downloads(
    sim: Simulator,
) -> None:
    """The consumer takes one outcome and pauses: input, creates and images all stop short.

    Pulled inputs stay within the outcomes taken plus max_concurrency; the images
    read into memory and not yet taken stay within max_concurrent_downloads.
    """
    sim.latency = LatencyProfile.instant()
    total, slots, downloads = 60, 8, 3
    pulled = 0

    def prompts() -> Iterator[str]:
        nonlocal pulled
        for index in range(total):
            pulled += 1
            yield f"paused consumer {index}"

    received = 0
    during_pause: list[tuple[int, int, int]] = []
    async with open_client(sim, max_concurrency=slots, max_concurrent_downloads=downloads) as nano:
        async for outcome in nano.generate_many(prompts()):
            assert outcome.ok, outcome.error
            received += 1
            if received == 1:
                for _ in range(2):  # two looks, a while apart: nothing moves in between
                    await anyio.sleep(0.4)
                    counters = sim.counters
                    during_pause.append((pulled, counters.creates, counters.downloads_completed))
    assert received == total
    assert during_pause[0] == during_pause[1]
    paused_pulls, paused_creates, paused_downloads = during_pause[0]
    assert slots <= paused_pulls <= 1 + slots
    assert paused_creates <= 1 + slots
    assert paused_downloads == 1 + downloads  # the bound was reached, and held
    assert sim.counters.creates == total


async def test_an_endless_input_is_read_only_as_far_as_the_consumer_goes(sim: Simulator) -> None:
    """An infinite generator: stopping after 30 outcomes pulled about 30 + max_concurrency items."""
    pulled = 0

    def forever() -> Iterator[str]:
        nonlocal pulled
        while True:
            pulled += 1
            yield f"endless {pulled}"

    received = 0
    async with open_client(sim, max_concurrency=8) as nano:
        async for _outcome in nano.generate_many(forever()):
            received += 1
            if received == 30:
                break
        await anyio.sleep(0.1)
        assert pulled <= 30 + 8 + 2
        assert sim.counters.create_requests <= 30 + 8 + 2


# 3. Live tasks stay bounded.


async def _run_sampling_tasks(nano: NanoBanana, total: int) -> tuple[int, int]:
    """Run a batch of ``total`` while sampling the live task count; (outcomes, peak count)."""
    peak = 0
    count = 0
    done = anyio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, len(sdk_tasks()))
            await anyio.sleep(0.001)

    async with anyio.create_task_group() as group:
        group.start_soon(sample)
        inputs = (f"task count {i}" for i in range(total))
        async for _outcome in nano.generate_many(inputs, download=False):
            count += 1
            peak = max(peak, len(sdk_tasks()))
        done.set()
    return count, peak


@pytest.mark.usefixtures("no_loop_debug")
async def test_live_task_count_stays_bounded_and_does_not_grow_with_input_length(
    sim: Simulator,
) -> None:
    """2,000 inputs at max_concurrency=16: SDK tasks stay within 2 x 16 + 10, as for 200 inputs.

    Per slot there is one worker and, while its create is in the air, one shielded
    create helper (_http.HTTPClient.create), hence twice max_concurrency.
    """
    sim.latency = LatencyProfile.instant()
    peaks: dict[int, int] = {}
    async with open_client(sim, max_concurrency=16, polling=FixedPolling(interval=0.005)) as nano:
        for total in (200, 2000):
            count, peaks[total] = await _run_sampling_tasks(nano, total)
            assert count == total

    assert sim.counters.creates == 2200
    assert sim.counters.polls == 2200
    for total, peak in peaks.items():
        assert peak <= 2 * 16 + TASK_SLACK, (total, peaks)
    # The same bound holds at 10x the input (no growth), and was not met trivially.
    assert min(peaks.values()) >= 16, peaks


# 4. One budget per client.


async def test_two_concurrent_batches_share_the_clients_max_concurrency(sim: Simulator) -> None:
    """Two generate_many at once on a max_concurrency=8 client: the service never sees > 8 jobs."""
    sim.latency = LatencyProfile.uniform(0.05, 0.15)
    seen: dict[str, list[Outcome]] = {"a": [], "b": []}

    async def consume(nano: NanoBanana, name: str) -> None:
        async for outcome in nano.generate_many(f"{name} {i}" for i in range(30)):
            seen[name].append(outcome)

    async with open_client(sim, max_concurrency=8) as nano, anyio.create_task_group() as group:
        group.start_soon(consume, nano, "a")
        group.start_soon(consume, nano, "b")

    for name in ("a", "b"):
        assert sorted(o.index for o in seen[name]) == list(range(30))
        assert all(o.ok for o in seen[name])
    assert sim.counters.creates == 60
    assert sim.counters.peak_in_flight == 8
    created = {
        name: [t.created_at for t in sim.tasks.values() if prompt_of(sim, t.id).startswith(name)]
        for name in ("a", "b")
    }
    # The batches really overlapped: each started jobs before the other had finished starting.
    assert min(created["b"]) < max(created["a"])
    assert min(created["a"]) < max(created["b"])


# 5. Leaving early leaks nothing and stops every request.


class LeaveEarlyFeed:
    """40 prompts, counted as they are pulled; every fourth job never finishes.

    The [never] jobs guarantee work in flight whenever the consumer leaves.
    """

    def __init__(self) -> None:
        self.pulled = 0

    def __iter__(self) -> Iterator[str]:
        for index in range(40):
            self.pulled += 1
            yield f"leave early {index}" + (" [never]" if index % 4 == 3 else "")


ExitMode = Callable[[NanoBanana, LeaveEarlyFeed, Path], Awaitable[int]]


async def leave_by_break(nano: NanoBanana, feed: LeaveEarlyFeed, out: Path) -> int:
    received = 0
    async for _outcome in nano.generate_many(feed, save_to=out):
        received += 1
        if received == 3:
            break
    return received


async def leave_by_raising(nano: NanoBanana, feed: LeaveEarlyFeed, out: Path) -> int:
    received = 0

    async def consume() -> None:
        nonlocal received
        async for _outcome in nano.generate_many(feed, save_to=out):
            received += 1
            if received == 3:
                raise RuntimeError("consumer gave up")

    with pytest.raises(RuntimeError, match="consumer gave up"):
        await consume()
    return received


async def leave_by_deadline(nano: NanoBanana, feed: LeaveEarlyFeed, out: Path) -> int:
    received = 0
    with anyio.move_on_after(math.inf) as scope:
        async for _outcome in nano.generate_many(feed, save_to=out):
            received += 1
            if received == 3:  # the deadline passes while the consumer waits for more
                scope.deadline = anyio.current_time() + 0.05
    assert scope.cancelled_caught
    return received


async def leave_by_outside_cancel(nano: NanoBanana, feed: LeaveEarlyFeed, out: Path) -> int:
    received = 0
    three = anyio.Event()

    async def consume(scope: anyio.CancelScope) -> None:
        nonlocal received
        with scope:
            async for _outcome in nano.generate_many(feed, save_to=out):
                received += 1
                if received == 3:
                    three.set()
                    await anyio.sleep(0.05)  # cancelled here, inside the loop body

    scope = anyio.CancelScope()
    async with anyio.create_task_group() as group:
        group.start_soon(consume, scope)
        await three.wait()
        scope.cancel()
    assert scope.cancelled_caught
    return received


async def leave_async_with_by_break(nano: NanoBanana, feed: LeaveEarlyFeed, out: Path) -> int:
    received = 0
    async with nano.generate_many(feed, save_to=out) as outcomes:
        async for _outcome in outcomes:
            received += 1
            if received == 3:
                break
    return received


async def leave_async_with_by_raising(nano: NanoBanana, feed: LeaveEarlyFeed, out: Path) -> int:
    received = 0
    caught: list[BaseException] = []
    # except*: the stream's task group currently wraps the error in an ExceptionGroup
    # (see test_an_error_raised_inside_async_with_generate_many_propagates_unwrapped).
    try:
        async with nano.generate_many(feed, save_to=out) as outcomes:
            async for _outcome in outcomes:
                received += 1
                if received == 3:
                    raise RuntimeError("consumer gave up")
    except* RuntimeError as group:
        caught.extend(group.exceptions)
    assert [str(error) for error in caught] == ["consumer gave up"]
    return received


async def check_clean_exit(
    sim: Simulator,
    nano: NanoBanana,
    out: Path,
    feed: LeaveEarlyFeed,
    before: set[asyncio.Task[Any]],
) -> None:
    """Called right at the exit: no task, input, file, request or socket outlives that point.

    A save whose temp file already existed at the exit may still be moved into
    place (its last steps run in a worker thread, which cannot be interrupted);
    no other file may appear. Request times get a generous margin, since a
    request sent just before the exit is recorded a little later on a busy machine.
    """
    exit_at = time.monotonic()
    pulled_at_exit = feed.pulled
    listing = os.listdir(out)
    saved_at_exit = {name for name in listing if not name.endswith(".part")}
    saving_at_exit = {name.split(".")[1] for name in listing if name.endswith(".part")}
    with anyio.move_on_after(2):
        while sdk_tasks() != before:  # noqa: ASYNC110 - no event marks the last task's end
            await anyio.sleep(0.01)
    assert sdk_tasks() == before
    # Long enough for a surviving job (polls every 20 ms) to show itself.
    await anyio.sleep(0.5)
    # No new job after the exit. One worker already handed the input lock just before the
    # cancel may still pull one item (anyio delivers cancellation at its next checkpoint),
    # but it is never created: creates stay within what was pulled at the exit.
    assert feed.pulled <= pulled_at_exit + 1
    assert sim.counters.create_requests <= pulled_at_exit
    assert part_files(out) == []
    for name in set(os.listdir(out)) - saved_at_exit:
        assert Path(name).stem in saving_at_exit, (name, sorted(listing))
    late_creates = [r for r in sim.requests if r.endpoint == "create" and r.at > exit_at + 0.2]
    assert late_creates == []
    late = [r for r in sim.requests if r.at > exit_at + 0.3]
    assert late == []
    await nano.aclose()
    await wait_for_no_connections(sim)
    assert sim.counters.open_connections == 0


@pytest.mark.parametrize(
    "leave",
    [
        leave_by_break,
        leave_by_raising,
        leave_by_deadline,
        leave_by_outside_cancel,
        leave_async_with_by_break,
        leave_async_with_by_raising,
    ],
)
async def test_leaving_the_loop_early_cancels_jobs_and_leaks_nothing(
    sim: Simulator, tmp_path: Path, leave: ExitMode
) -> None:
    """break, raise, deadline, outside cancel, async-with: no task, .part, request, socket left."""
    sim.latency = LatencyProfile.uniform(0.05, 0.3)
    feed = LeaveEarlyFeed()
    out = tmp_path / "out"
    out.mkdir()
    async with open_client(sim, max_concurrency=8) as nano:
        before = sdk_tasks()
        received = await leave(nano, feed, out)
        await check_clean_exit(sim, nano, out, feed, before)
        assert received >= 3
        assert feed.pulled < 40
        assert sim.counters.in_flight >= 2  # at least the two [never] jobs among the first 8


async def test_breaking_out_of_a_stream_held_in_a_variable_cancels_its_jobs(
    sim: Simulator, tmp_path: Path
) -> None:
    """`stream = generate_many(...)`, `async for ... in stream: break`: jobs stop at the break."""
    sim.latency = LatencyProfile.uniform(0.05, 0.3)
    feed = LeaveEarlyFeed()
    out = tmp_path / "out"
    out.mkdir()
    async with open_client(sim, max_concurrency=8) as nano:
        before = sdk_tasks()
        stream = nano.generate_many(feed, save_to=out)
        received = 0
        async for _outcome in stream:
            received += 1
            if received == 3:
                break
        try:
            await check_clean_exit(sim, nano, out, feed, before)
        finally:
            stream.cancel()
            del stream


async def test_an_error_raised_inside_async_with_generate_many_propagates_unwrapped(
    client: NanoBanana, sim: Simulator
) -> None:
    """`async with generate_many(...)`: an error raised in the body comes out as itself."""

    async def consume() -> None:
        async with client.generate_many([f"unwrapped {i}" for i in range(4)]) as outcomes:
            async for _outcome in outcomes:
                raise RuntimeError("consumer gave up")

    with pytest.raises(RuntimeError, match="consumer gave up"):
        await consume()
    assert sim.counters.creates <= 4


def test_a_started_stream_collected_after_its_event_loop_ended_is_silent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A partly consumed stream dropped once the loop is gone: no error from __del__, no warning."""
    unraisable: list[str] = []
    monkeypatch.setattr(
        sys, "unraisablehook", lambda hook_args: unraisable.append(repr(hook_args.exc_value))
    )

    async def take_one() -> OutcomeStream:
        async with (
            Simulator(latency=LatencyProfile.instant()) as sim,
            open_client(sim, max_concurrency=2) as nano,
        ):
            stream = nano.generate_many([f"dropped {i}" for i in range(4)], download=False)
            first = await anext(stream)
            assert first.ok
            return stream

    stream = anyio.run(take_one, backend="asyncio")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del stream
        gc.collect()
    assert unraisable == []
    assert [str(w.message) for w in caught] == []


# 6. A key the service refuses stops the batch.


async def test_a_bad_key_stops_submissions_and_fails_every_outcome(sim: Simulator) -> None:
    """Wrong key, 200 inputs, max_concurrency=16: about 16 creates tried, 200 auth errors."""
    outcomes: list[Outcome] = []
    async with NanoBanana(
        api_key="sk-wrong",
        base_url=sim.base_url,
        max_concurrency=16,
        polling=FixedPolling(interval=0.02),
        retry=FAST_RETRY,
    ) as nano:
        async for outcome in nano.generate_many(f"bad key {i}" for i in range(200)):
            outcomes.append(outcome)

    assert sorted(o.index for o in outcomes) == list(range(200))
    assert all(isinstance(o.error, AuthenticationError) for o in outcomes)
    assert all(o.request is not None for o in outcomes)
    assert sim.counters.create_requests <= 16 + 2
    assert sim.counters.auth_failures == sim.counters.create_requests
    assert sim.counters.creates == 0
    assert sim.counters.polls == 0
    assert sim.counters.downloads == 0


# 7. Order.


def _two_speed_profile() -> LatencyProfile:
    """nano-banana-pro jobs take 0.4 s, nano-banana jobs 0.01 s: fast ones overtake slow ones."""
    return LatencyProfile(
        base_seconds={"nano-banana-pro": (0.4, 0.4), "nano-banana": (0.01, 0.01)},
    )


def _two_speed_requests(count: int) -> list[ImageRequest]:
    return [
        ImageRequest(prompt=f"order {i}", model="nano-banana-pro" if i % 2 == 0 else "nano-banana")
        for i in range(count)
    ]


@pytest.mark.parametrize("ordered", [False, True])
async def test_ordered_yields_input_order_while_jobs_finish_out_of_order(
    sim: Simulator, ordered: bool
) -> None:
    """Slow even inputs, fast odd ones: completion order by default, input order if ordered."""
    sim.latency = _two_speed_profile()
    requests = _two_speed_requests(24)
    async with open_client(sim, max_concurrency=8) as nano:
        indices = [o.index async for o in nano.generate_many(requests, ordered=ordered)]

    assert sorted(indices) == list(range(24))
    # The service finished the jobs out of input order in both runs.
    finish_order = [
        int(prompt_of(sim, t.id).split()[1])
        for t in sorted(sim.tasks.values(), key=lambda t: t.completes_at)
    ]
    assert finish_order != list(range(24))
    if ordered:
        assert indices == list(range(24))
    else:
        assert indices != list(range(24))
    assert sim.counters.creates == 24


# 8. Where the image ends up.


async def test_without_save_to_outcomes_carry_png_bytes_and_no_path(
    client: NanoBanana, sim: Simulator
) -> None:
    """No save_to: every outcome has the image's PNG bytes in data and path None."""
    outcomes = [o async for o in client.generate_many([f"in memory {i}" for i in range(6)])]
    assert len(outcomes) == 6
    for outcome in outcomes:
        assert outcome.ok
        assert outcome.path is None
        assert outcome.data is not None
        assert png_size(outcome.data)[0] > 0
    assert sim.counters.downloads == 6
    assert sim.counters.downloads_completed == 6


async def test_download_false_leaves_only_the_url(client: NanoBanana, sim: Simulator) -> None:
    """download=False: data and path are None, the task has its image URL, nothing is fetched."""
    outcomes = [
        o async for o in client.generate_many([f"url only {i}" for i in range(6)], download=False)
    ]
    assert len(outcomes) == 6
    for outcome in outcomes:
        assert outcome.ok
        assert outcome.data is None
        assert outcome.path is None
        assert outcome.task is not None
        assert outcome.task.image_url is not None
        assert outcome.task.image_url.startswith(sim.file_host_url)
    assert sim.counters.creates == 6
    assert sim.counters.downloads == 0
    assert [r for r in sim.requests if r.origin == "files"] == []


# 9. File names under save_to.


async def test_saved_files_are_named_by_slug_and_request_inside_save_to(
    client: NanoBanana, sim: Simulator, tmp_path: Path
) -> None:
    """save_to: <slug>-<hash>.png per input, inside save_to, data None, even for ../ prompts."""
    prompts = [f"plain prompt {i}" for i in range(45)]
    prompts[42] = "A Red Fox, at Dawn!"
    prompts[7] = "../../escape/attempt"
    prompts[8] = "/etc/passwd"
    prompts[9] = prompts[42]  # the same request twice: two images, told apart by "-2"
    out = tmp_path / "nested" / "out"
    outcomes = {o.index: o async for o in client.generate_many(prompts, save_to=out)}

    def hash16(prompt: str) -> str:
        return request_fingerprint(ImageRequest(prompt=prompt))[:16]

    assert sorted(outcomes) == list(range(45))
    assert outcomes[9].path == out / f"a-red-fox-at-dawn-{hash16(prompts[42])}.png"
    assert outcomes[42].path == out / f"a-red-fox-at-dawn-{hash16(prompts[42])}-2.png"
    assert outcomes[7].path == out / f"escape-attempt-{hash16(prompts[7])}.png"
    assert outcomes[8].path == out / f"etc-passwd-{hash16(prompts[8])}.png"
    for outcome in outcomes.values():
        assert outcome.ok, outcome.error
        assert outcome.data is None
        assert outcome.path is not None
        assert outcome.path.parent == out
        assert outcome.path.suffix == ".png"
        png_size(outcome.path.read_bytes())
    assert len({o.path for o in outcomes.values()}) == 45
    assert sorted(os.listdir(out)) == sorted(o.path.name for o in outcomes.values() if o.path)
    assert sorted(os.listdir(tmp_path)) == ["nested"]
    assert os.listdir(tmp_path / "nested") == ["out"]
    assert sim.counters.downloads_completed == 45


async def test_an_existing_file_is_not_overwritten(
    client: NanoBanana, sim: Simulator, tmp_path: Path
) -> None:
    """A file already where input 1 saves: DestinationExistsError outcome, the file unchanged."""

    def name(prompt: str) -> str:
        return f"{prompt}-{request_fingerprint(ImageRequest(prompt=prompt))[:16]}.png"

    existing = tmp_path / name("second")
    existing.write_bytes(b"my own precious file")
    outcomes = {
        o.index: o
        async for o in client.generate_many(["first", "second", "third"], save_to=tmp_path)
    }

    assert sorted(outcomes) == [0, 1, 2]
    assert isinstance(outcomes[1].error, DestinationExistsError)
    assert outcomes[1].path is None
    assert existing.read_bytes() == b"my own precious file"
    assert outcomes[0].ok
    assert outcomes[2].ok
    assert sorted(os.listdir(tmp_path)) == sorted(map(name, ["first", "second", "third"]))
    assert sim.counters.creates == 3


# 10. What generate_many accepts.


async def test_async_iterable_of_mixed_items_with_a_non_request_among_them(
    client: NanoBanana, sim: Simulator
) -> None:
    """An async generator of str, ImageRequest and 42: 42 is InvalidRequestError, others run."""
    fancy = ImageRequest(
        prompt="a fancy fox", model="nano-banana-pro", size="16:9", resolution="2k"
    )
    items: list[Any] = ["a plain fox", fancy, 42, "another fox"]

    async def feed() -> AsyncIterator[Any]:
        for item in items:
            await anyio.lowlevel.checkpoint()
            yield item

    outcomes = {o.index: o async for o in client.generate_many(feed())}

    assert sorted(outcomes) == [0, 1, 2, 3]
    bad = outcomes[2]
    assert bad.request is None
    assert isinstance(bad.error, InvalidRequestError)
    assert isinstance(bad.error, ValueError)
    assert bad.task is None
    for index in (0, 1, 3):
        assert outcomes[index].ok, outcomes[index].error
        assert outcomes[index].data is not None
    assert outcomes[0].request == ImageRequest(prompt="a plain fox")
    assert outcomes[1].request is fancy
    assert sim.counters.creates == 3
    assert sim.counters.create_requests == 3
    fancy_task = outcomes[1].task
    assert fancy_task is not None
    sent = sim.tasks[fancy_task.id].request
    assert (sent["model"], sent["size"], sent["resolution"]) == ("nano-banana-pro", "16:9", "2k")


async def test_generate_many_returns_an_outcome_stream(client: NanoBanana) -> None:
    """generate_many returns the public OutcomeStream type, without starting work until iterated."""
    stream = client.generate_many([])
    assert isinstance(stream, OutcomeStream)
    assert [o async for o in stream] == []
