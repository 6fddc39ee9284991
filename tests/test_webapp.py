"""The example web app (``examples/webapp``), served on loopback against the simulator.

The app runs as a web app does: one client for the process, many handlers
sharing it, and a handler cancelled when its browser goes away (aiohttp's
``handler_cancellation``, which the test server turns on as ``run_app`` does
in the example).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp.test_utils import TestServer

from examples.webapp import make_app
from examples.webapp.app import CLIENT
from nanobanana_async import FixedPolling, NanoBanana
from nanobanana_async.testing import LatencyProfile, Simulator

from .conftest import FAST_RETRY
from .helpers import wait_until

pytestmark = pytest.mark.anyio

PNG = b"\x89PNG\r\n\x1a\n"


@asynccontextmanager
async def serve(sim: Simulator) -> AsyncIterator[TestServer]:
    """The app on 127.0.0.1, its one client on ``sim``; stopped (client closed) at the end."""

    def open_client() -> NanoBanana:
        return NanoBanana(
            api_key=sim.api_key,
            base_url=sim.base_url,
            polling=FixedPolling(0.05),
            retry=FAST_RETRY,
            max_concurrency=64,
        )

    server = TestServer(make_app(open_client), host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def _read_events(response: aiohttp.ClientResponse) -> list[tuple[str, dict[str, Any]]]:
    """Server-sent events until ``done``, as (kind, data)."""
    events: list[tuple[str, dict[str, Any]]] = []
    kind = ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((kind, json.loads(line.removeprefix("data: "))))
            if kind == "done":
                break
    return events


async def test_a_batch_page_gets_each_image_as_it_arrives_a_failure_with_its_reason_and_done(
    sim: Simulator,
) -> None:
    sim.latency = LatencyProfile(default_seconds=(0.05, 0.2))
    async with serve(sim) as server, aiohttp.ClientSession() as browser:
        prompts = "a red fox\na blue whale [fail]\na lighthouse at dusk\n"
        started = await browser.post(server.make_url("/batches"), data={"prompts": prompts})
        assert started.status == 201
        batch = await started.json()
        with anyio.fail_after(20):
            async with browser.get(server.make_url(f"/batches/{batch['id']}/events")) as stream:
                assert stream.headers["Content-Type"] == "text/event-stream"
                events = await _read_events(stream)
            kinds = [kind for kind, _ in events]
            assert kinds[-1] == "done"
            assert events[-1][1] == {"succeeded": 2, "failed": 1}
            assert kinds.count("submitted") == 3
            images = [data for kind, data in events if kind == "image"]
            assert sorted(data["index"] for data in images) == [0, 2]
            for data in images:
                async with browser.get(server.make_url(data["url"])) as image:
                    assert image.status == 200
                    assert (await image.read()).startswith(PNG)
            [failed] = [data for kind, data in events if kind == "failed"]
            assert failed["index"] == 1
            assert failed["reason"].startswith("TaskFailedError")
            # A batch runs once: a second events request is refused, nothing is sent again.
            again = await browser.get(server.make_url(f"/batches/{batch['id']}/events"))
            assert again.status == 409
    assert sim.counters.create_requests == 3


async def test_bad_batch_forms_are_refused_with_a_reason_and_nothing_is_sent(
    sim: Simulator,
) -> None:
    async with serve(sim) as server, aiohttp.ClientSession() as browser:
        empty = await browser.post(server.make_url("/batches"), data={"prompts": " \n "})
        assert empty.status == 400
        assert "at least one prompt" in (await empty.json())["error"]
        many = "\n".join(f"fox {i}" for i in range(50))
        too_many = await browser.post(server.make_url("/batches"), data={"prompts": many})
        assert too_many.status == 400
        assert "at most" in (await too_many.json())["error"]
        missing = await browser.get(server.make_url("/batches/nope/events"))
        assert missing.status == 404
    assert sim.counters.create_requests == 0


async def test_a_hundred_concurrent_requests_with_a_quarter_leaving_midway(
    sim: Simulator,
) -> None:
    """75 get their image; the 25 that leave cost at most one create each; slots all return."""
    sim.latency = LatencyProfile(default_seconds=(0.3, 0.6))
    async with serve(sim) as server:
        client = server.app[CLIENT]
        url = server.make_url("/generate")
        results: dict[int, bytes | str] = {}

        async def visitor(number: int, leaves: bool) -> None:
            async with aiohttp.ClientSession() as browser:
                request = browser.post(url, json={"prompt": f"visitor {number}"})
                if not leaves:
                    async with request as response:
                        results[number] = await response.read()
                    return
                with anyio.move_on_after(0.15 + 0.01 * (number % 10)):
                    async with request as response:
                        await response.read()
                results[number] = "left"

        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for number in range(100):
                    group.start_soon(visitor, number, number % 4 == 0)
            # The handlers of the visitors who left are cancelled; their slots come back.
            await wait_until(lambda: client.stats().in_flight == 0)
        stats = client.stats()

    stayed = [number for number in range(100) if number % 4]
    images = [results[n] for n in stayed]
    assert all(isinstance(image, bytes) and image.startswith(PNG) for image in images)
    assert [results[n] for n in range(0, 100, 4)] == ["left"] * 25
    prompts = [task.request["prompt"] for task in sim.tasks.values()]
    assert len(prompts) == len(set(prompts))  # no visitor's create was ever sent twice
    assert 75 <= len(prompts) <= 100
    assert sim.counters.create_requests == len(prompts)
    assert stats.in_flight == 0
    assert stats.saved == 75
    # Nothing of the app is left running once it has stopped.
    await asyncio.sleep(0)
    leftovers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    assert not [task for task in leftovers if "webapp" in repr(task.get_coro())]
