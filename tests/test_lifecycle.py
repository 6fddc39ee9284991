"""A client used after close, or from another event loop (docs/reliability.md, case 49).

Every call on a closed client raises ClientClosedError, never an asyncio
"different event loop" or "Event loop is closed" error, and sends nothing.

A client belongs to the event loop it is first used in (its sessions and
limits are bound to it). These tests use it from several loops, so they are
plain functions: the simulator runs on a loop of its own in a helper thread
(an anyio blocking portal) and outlives each ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from nanobanana_async import (
    ClientClosedError,
    ImageResult,
    NanoBanana,
    Task,
    TaskStatus,
    UsageError,
)
from nanobanana_async.testing import LatencyProfile, Simulator

from .helpers import fast_client, wait_until

#: Bounds every event loop these tests run.
DEADLINE = 10.0


async def _start_simulator() -> Simulator:
    simulator = Simulator(latency=LatencyProfile.fast(), seed=11)
    await simulator.start()
    return simulator


@pytest.fixture
def portal() -> Iterator[BlockingPortal]:
    """An event loop in a helper thread, for what must outlive the test's own loops."""
    with start_blocking_portal(backend="asyncio") as helper:
        yield helper


@pytest.fixture
def sim(portal: BlockingPortal) -> Iterator[Simulator]:
    """A simulator on the helper thread's loop."""
    simulator = portal.call(_start_simulator)
    try:
        yield simulator
    finally:
        portal.call(simulator.aclose)


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    """``asyncio.run(main())`` on a fresh loop, bounded in time."""

    async def bounded() -> Any:
        with anyio.fail_after(DEADLINE):
            return await main()

    return asyncio.run(bounded())


def every_call(
    client: NanoBanana, task: Task, folder: Path
) -> dict[str, Callable[[], Coroutine[Any, Any, object]]]:
    """Every way to use a client, each as a coroutine function that may raise."""
    result = ImageResult(task, fetcher=client)

    async def iterate_generate_many() -> object:
        return [outcome async for outcome in client.generate_many(["a fox"])]

    async def enter_generate_many() -> object:
        async with client.generate_many(["a fox"], save_to=folder) as outcomes:
            return [outcome async for outcome in outcomes]

    async def enter_client() -> object:
        async with client:
            return None

    calls: dict[str, Callable[[], Coroutine[Any, Any, object]]] = {
        f"generate {i}": lambda: client.generate("another fox") for i in range(6)
    }
    calls |= {
        "submit": lambda: client.submit("another fox"),
        "get_task": lambda: client.get_task(task.id),
        "wait": lambda: client.wait(task.id),
        "read": result.read,
        "save": lambda: result.save(folder),
        "generate_many": iterate_generate_many,
        "async with generate_many": enter_generate_many,
        "async with client": enter_client,
    }
    return calls


async def raised_by(calls: dict[str, Callable[[], Coroutine[Any, Any, object]]]) -> dict[str, Any]:
    """What each call raised (or returned), all of them started at once."""
    names = list(calls)
    results = await asyncio.gather(*(calls[name]() for name in names), return_exceptions=True)
    return dict(zip(names, results, strict=True))


def assert_closed_for_good(
    client: NanoBanana, sim: Simulator, portal: BlockingPortal, requests_before: int
) -> None:
    """Closed: a later call says so and sends nothing; the one create stays one; no socket left."""
    assert client.closed
    with pytest.raises(ClientClosedError, match="client is closed"):
        run(lambda: client.submit("another fox"))
    assert sim.counters.creates == 1
    assert len(sim.requests) == requests_before
    portal.call(wait_until, lambda: sim.counters.open_connections == 0)


def test_a_closed_client_used_in_a_later_event_loop_raises_client_closed_on_every_call(
    sim: Simulator, portal: BlockingPortal, tmp_path: Path
) -> None:
    """Case 49: a module-level client closed by one asyncio.run, used by the next, all at once.

    Every call raises ClientClosedError (saying the client is closed and to
    create a new one) before it waits on anything bound to the first loop:
    the first run has two generates share one job slot, so that slot's
    semaphore is bound to the first loop. Nothing is sent or written.
    """
    client = fast_client(sim, max_concurrency=1)

    async def first() -> ImageResult:
        async with client:
            fox, _ = await asyncio.gather(client.generate("a fox"), client.generate("a hen"))
            return fox

    result = run(first)
    assert client.closed
    assert sim.counters.creates == 2
    requests_before = len(sim.requests)

    raised = run(lambda: raised_by(every_call(client, result.task, tmp_path)))

    for name, error in raised.items():
        assert type(error) is ClientClosedError, (name, error)
        assert "client is closed" in str(error), name
        assert "create a new NanoBanana" in str(error), name
    run(client.aclose)  # still idempotent, in any loop
    assert client.closed
    assert sim.counters.creates == 2
    assert sim.counters.downloads == 0
    assert len(sim.requests) == requests_before
    assert os.listdir(tmp_path) == []
    portal.call(wait_until, lambda: sim.counters.open_connections == 0)


def test_a_client_never_closed_refuses_a_second_event_loop_with_a_usage_error(
    sim: Simulator, portal: BlockingPortal, tmp_path: Path
) -> None:
    """A client used without 'async with' in one asyncio.run, then in another: UsageError.

    Its sessions belong to the first loop, which has ended; every call from
    the second says the client belongs to the event loop it was first used
    in, and sends nothing. ``aclose()`` from the second loop then closes it
    (there is no loop left to close its connections in), and later calls
    raise ClientClosedError. The connection the first loop left open is only
    reclaimed by the garbage collector, as aiohttp's unclosed socket warning.
    """
    client = fast_client(sim)

    async def first() -> Task:
        return await client.wait(await client.submit("a fox"))

    task = run(first)
    assert task.status is TaskStatus.COMPLETED
    requests_before = len(sim.requests)

    raised = run(lambda: raised_by(every_call(client, task, tmp_path)))

    for name, error in raised.items():
        assert type(error) is UsageError, (name, error)
        assert "belongs to the event loop it was first used in" in str(error), name
    assert repr(client).endswith(" open>")  # not closed
    assert len(sim.requests) == requests_before
    assert os.listdir(tmp_path) == []

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(client.aclose)
        gc.collect()
    messages = [str(w.message) for w in caught]
    assert all(issubclass(w.category, ResourceWarning) for w in caught), messages
    # The dead loop's connection is reclaimed by the collector: as its socket or its
    # transport, whichever the collector happens to reach first.
    assert any(m.startswith(("unclosed <socket", "unclosed transport")) for m in messages), messages
    assert not any("Unclosed client session" in m for m in messages), messages
    assert_closed_for_good(client, sim, portal, requests_before)


def test_a_client_whose_loop_still_runs_refuses_calls_and_aclose_from_another_loop(
    sim: Simulator, portal: BlockingPortal
) -> None:
    """A client in use on a live loop (another thread): other loops get UsageError, even aclose.

    Closing it from a foreign loop would touch another loop's connections; it
    stays open until closed in its own loop, after which every loop sees
    ClientClosedError. Nothing is sent from the foreign loop.
    """
    client = fast_client(sim)

    async def submit_there() -> Task:
        return await client.submit("a fox")

    portal.call(submit_there)
    requests_before = len(sim.requests)

    with pytest.raises(UsageError, match="belongs to the event loop it was first used in"):
        run(lambda: client.submit("another fox"))
    with pytest.raises(UsageError, match="belongs to another event loop, which is still open"):
        run(client.aclose)
    assert repr(client).endswith(" open>")  # not closed
    assert len(sim.requests) == requests_before

    portal.call(client.aclose)
    assert_closed_for_good(client, sim, portal, requests_before)
