"""The simulator keeps the service's create/query contract, and its faults and counters work.

These tests talk to it over loopback with plain aiohttp: they check the server,
so they do not depend on the SDK.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import ssl
import struct
import subprocess
import sys
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
import yarl

from nanobanana_async.testing import (
    Delay,
    FaultRates,
    LatencyProfile,
    RawFaultServer,
    RawReply,
    Redirect,
    ResetConnection,
    Respond,
    SimTask,
    Simulator,
    Slow,
    Truncate,
    http_response,
)

from .helpers import decode_png

REPO_ROOT = Path(__file__).resolve().parent.parent
IEND = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """Overrides conftest's ``sim``: instant jobs, so one poll sees the end of a job."""
    async with Simulator(latency=LatencyProfile.instant()) as simulator:
        yield simulator


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def auth(sim: Simulator) -> dict[str, str]:
    return {"Authorization": f"Bearer {sim.api_key}"}


async def create(
    session: aiohttp.ClientSession, sim: Simulator, prompt: str = "a red fox", **fields: Any
) -> dict[str, Any]:
    body = {"model": "nano-banana-2", "prompt": prompt, **fields}
    async with session.post(f"{sim.base_url}/v1/banana/images", json=body, headers=auth(sim)) as r:
        assert r.status == 200, await r.text()
        created: dict[str, Any] = await r.json()
        return created


async def poll(session: aiohttp.ClientSession, sim: Simulator, task_id: str) -> dict[str, Any]:
    async with session.get(f"{sim.base_url}/v1/result/{task_id}", headers=auth(sim)) as r:
        assert r.status == 200, await r.text()
        result: dict[str, Any] = await r.json()
        return result


async def wait_terminal(
    session: aiohttp.ClientSession, sim: Simulator, task_id: str
) -> dict[str, Any]:
    with anyio.fail_after(5):
        while True:
            result = await poll(session, sim, task_id)
            if result["status"] in ("completed", "failed"):
                return result
            await anyio.sleep(0.02)


async def connections_closed(sim: Simulator) -> None:
    """Wait (at most 2 s) until the simulator has no open connection left."""
    with anyio.fail_after(2):
        while True:
            if not sim.counters.open_connections:
                return
            await anyio.sleep(0.01)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a simulated PNG, after checking it chunk by chunk."""
    width, height, _rows = decode_png(data)
    return width, height


async def test_task_goes_from_queued_to_completed_and_serves_a_16_9_png(
    session: aiohttp.ClientSession,
) -> None:
    """Create answers queued with extras, the poll reaches completed, and the PNG is 16:9."""
    async with Simulator(latency=LatencyProfile.fast()) as sim:
        created = await create(session, sim, size="16:9", resolution="2k")
        assert created["status"] == "queued"
        assert created["object"] == "image"
        assert created["amount"] == 0.04
        assert len(created["id"]) >= 12
        result = await wait_terminal(session, sim, created["id"])
        assert result["status"] == "completed"
        assert result["model"] == "NanoBanana2"
        assert result["error"] is None
        assert result["image_url"].startswith(sim.file_host_url + "/")
        async with session.get(result["image_url"]) as r:
            assert r.status == 200
            assert r.content_type == "image/png"
            data = await r.read()
            assert r.content_length == len(data)
        width, height = png_size(data)
        assert max(width, height) == 64
        assert abs(width * 9 - height * 16) <= 16
        assert sim.counters.creates == 1
        assert sim.counters.downloads_completed == 1


def test_status_is_derived_from_the_clock() -> None:
    """A task is queued before starts_at, processing before completes_at, then terminal."""
    task = SimTask(
        id="abc123def456",
        request={},
        model="nano-banana",
        resolution=None,
        size="1:1",
        created=0,
        created_at=10.0,
        starts_at=11.0,
        completes_at=13.0,
        outcome="failed",
    )
    assert [task.status_at(t) for t in (10.5, 12.0, 13.0)] == ["queued", "processing", "failed"]


async def test_other_models_are_reported_as_sent(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """Only nano-banana-2 is respelled on query; the others come back as requested."""
    created = await create(session, sim, model="nano-banana-pro")
    assert (await poll(session, sim, created["id"]))["model"] == "nano-banana-pro"


async def test_missing_or_wrong_key_is_401_and_counted(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """Create and query without the right bearer key get 401 and bump auth_failures."""
    url = f"{sim.base_url}/v1/banana/images"
    body = {"model": "nano-banana", "prompt": "x"}
    async with session.post(url, json=body) as r:
        assert r.status == 401
        assert (await r.json())["error"]["type"] == "authentication_error"
    async with session.post(url, json=body, headers={"Authorization": "Bearer nope"}) as r:
        assert r.status == 401
    async with session.get(f"{sim.base_url}/v1/result/x", headers={"Authorization": "x"}) as r:
        assert r.status == 401
    assert sim.counters.auth_failures == 3
    assert sim.counters.creates == 0
    assert sim.counters.create_requests == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "x"}, "model"),
        ({"model": "nano-banana-3", "prompt": "x"}, "model"),
        ({"model": "nano-banana"}, "prompt"),
        ({"model": "nano-banana", "prompt": "   "}, "prompt"),
        ({"model": "nano-banana", "prompt": 5}, "prompt"),
        ({"model": "nano-banana", "prompt": "x", "resolution": "2K"}, "resolution"),
        ({"model": "nano-banana", "prompt": "x", "size": "2:1"}, "size"),
        ({"model": "nano-banana", "prompt": "x", "image_urls": ["u"] * 7}, "image_urls"),
        ({"model": "nano-banana", "prompt": "x", "image_urls": "u"}, "image_urls"),
        ({"model": "nano-banana", "prompt": "x", "image_urls": [1]}, "image_urls"),
        (["not", "an", "object"], "body"),
    ],
)
async def test_invalid_field_is_400_naming_it_and_creates_nothing(
    sim: Simulator, session: aiohttp.ClientSession, body: object, field: str
) -> None:
    """Each validation failure is a 400 whose code and message name the field."""
    url = f"{sim.base_url}/v1/banana/images"
    async with session.post(url, json=body, headers=auth(sim)) as r:
        assert r.status == 400
        error = (await r.json())["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == f"invalid_{field}"
    assert field in error["message"]
    assert sim.counters.creates == 0
    assert sim.counters.bad_requests == 1


async def test_body_that_is_not_json_is_400(sim: Simulator, session: aiohttp.ClientSession) -> None:
    """A body that does not parse as JSON is rejected before anything is created."""
    url = f"{sim.base_url}/v1/banana/images"
    async with session.post(url, data=b"{nope", headers=auth(sim)) as r:
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "invalid_json"
    assert sim.counters.creates == 0


async def test_valid_optional_fields_and_unknown_extras_are_accepted(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """Every documented option is accepted, and unknown request fields are ignored."""
    created = await create(
        session, sim, resolution="4k", size="21:9", image_urls=["u"] * 6, extra=True
    )
    assert sim.tasks[created["id"]].size == "21:9"


async def test_unknown_task_is_404_on_both_origins(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """Querying or downloading an id that was never created gives 404."""
    async with session.get(f"{sim.base_url}/v1/result/0123456789ab", headers=auth(sim)) as r:
        assert r.status == 404
        assert await r.json() == {"code": 404, "message": "task not found"}
    async with session.get(sim.image_url("0123456789ab")) as r:
        assert r.status == 404


async def test_exhausted_balance_gives_402(session: aiohttp.ClientSession) -> None:
    """With a balance, each create uses one and the next create at zero gets 402."""
    async with Simulator(balance=1) as sim:
        await create(session, sim)
        async with session.post(
            f"{sim.base_url}/v1/banana/images",
            json={"model": "nano-banana", "prompt": "x"},
            headers=auth(sim),
        ) as r:
            assert r.status == 402
            assert (await r.json())["error"]["type"] == "insufficient_balance"
        assert sim.balance == 0
        assert sim.counters.creates == 1
        sim.balance = None
        await create(session, sim)
        assert sim.counters.creates == 2


@pytest.mark.parametrize(
    ("prompt", "status", "has_url", "error"),
    [
        ("x [fail]", "failed", False, "Content policy violation: the prompt was rejected"),
        (
            "x [FAIL-object]",
            "failed",
            False,
            {
                "message": "Content policy violation: the prompt was rejected",
                "code": "content_policy",
            },
        ),
        ("x [no-url]", "completed", False, None),
        ("x [never]", "processing", False, None),
        ("x [expired]", "completed", True, None),
        ("x", "completed", True, None),
    ],
)
async def test_prompt_markers_decide_how_the_job_ends(
    sim: Simulator,
    session: aiohttp.ClientSession,
    prompt: str,
    status: str,
    has_url: bool,
    error: object,
) -> None:
    """Markers in the prompt produce failures, missing URLs, endless jobs and expired URLs."""
    result = await poll(session, sim, (await create(session, sim, prompt))["id"])
    assert result["status"] == status
    assert (result["image_url"] is not None) == has_url
    assert result["error"] == error


async def test_expired_marker_and_url_ttl_give_410(session: aiohttp.ClientSession) -> None:
    """An [expired] task's URL and any URL past url_ttl answer 410 with an error body."""
    async with Simulator(latency=LatencyProfile.instant(), url_ttl=0.0) as sim:
        for prompt in ("x [expired]", "plain"):
            result = await poll(session, sim, (await create(session, sim, prompt))["id"])
            await anyio.sleep(0.01)
            async with session.get(result["image_url"]) as r:
                assert r.status == 410
                assert await r.json() == {"error": "expired"}
        assert sim.counters.downloads_completed == 0


async def test_respond_fault_with_create_first_bills_the_task(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """A 502 after the server created the task still counts one billed create."""
    sim.faults.push("create", Respond(502, "<html>Bad Gateway</html>", create_first=True))
    url = f"{sim.base_url}/v1/banana/images"
    async with session.post(
        url, json={"model": "nano-banana", "prompt": "x"}, headers=auth(sim)
    ) as r:
        assert r.status == 502
        assert r.content_type == "text/html"
        assert "Bad Gateway" in await r.text()
    assert sim.counters.creates == 1
    assert len(sim.tasks) == 1
    assert sim.counters.in_flight == 0


async def test_respond_fault_without_create_first_creates_nothing(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """A gateway answer in front of the service (JSON body, headers) creates no task."""
    fault = Respond(429, {"code": 429, "msg": "slow down"}, headers={"Retry-After": "2"})
    sim.faults.push("create", fault)
    url = f"{sim.base_url}/v1/banana/images"
    async with session.post(
        url, json={"model": "nano-banana", "prompt": "x"}, headers=auth(sim)
    ) as r:
        assert r.status == 429
        assert r.headers["Retry-After"] == "2"
        assert await r.json() == {"code": 429, "msg": "slow down"}
    assert sim.counters.creates == 0
    assert sim.counters.create_requests == 1


async def test_faults_are_consumed_in_order_per_endpoint(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """Each request to an endpoint takes the next fault queued for that endpoint only."""
    task_id = (await create(session, sim))["id"]
    sim.faults.push("poll", Respond(500))
    sim.faults.push("poll", Respond(503, b"", content_type="text/plain"))
    assert sim.faults.pending("poll") == 2
    assert sim.faults.pending("create") == 0
    statuses = []
    for _ in range(3):
        async with session.get(f"{sim.base_url}/v1/result/{task_id}", headers=auth(sim)) as r:
            statuses.append(r.status)
            await r.read()
    assert statuses == [500, 503, 200]
    assert sim.faults.pending("poll") == 0


async def test_reset_connection_on_create_is_a_disconnect_after_billing(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """With create_first the task exists, yet the client only sees its connection drop."""
    sim.faults.push("create", ResetConnection(create_first=True))
    url = f"{sim.base_url}/v1/banana/images"
    with pytest.raises(aiohttp.ClientConnectionError):
        async with session.post(
            url, json={"model": "nano-banana", "prompt": "x"}, headers=auth(sim)
        ):
            pass
    assert sim.counters.creates == 1
    assert sim.counters.in_flight == 0


async def test_delay_fault_times_out_the_client_after_the_task_was_created(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """A delayed create answer trips the client's read timeout; the task already exists."""
    sim.faults.push("create", Delay(5.0))
    url = f"{sim.base_url}/v1/banana/images"
    timeout = aiohttp.ClientTimeout(sock_read=0.1)
    body = {"model": "nano-banana", "prompt": "x"}
    with pytest.raises(aiohttp.SocketTimeoutError):
        async with session.post(url, json=body, headers=auth(sim), timeout=timeout):
            pass
    assert sim.counters.creates == 1


async def test_delay_without_create_first_creates_nothing_once_the_client_left(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """With create_first=False the task is created after the wait, only if the client stayed."""
    sim.faults.push("create", Delay(0.3, create_first=False))
    url = f"{sim.base_url}/v1/banana/images"
    timeout = aiohttp.ClientTimeout(sock_read=0.05)
    body = {"model": "nano-banana", "prompt": "x"}
    with pytest.raises(aiohttp.SocketTimeoutError):
        async with session.post(url, json=body, headers=auth(sim), timeout=timeout):
            pass
    await anyio.sleep(0.4)
    assert sim.counters.create_requests == 1
    assert sim.counters.creates == 0


async def test_short_delay_answers_normally(sim: Simulator, session: aiohttp.ClientSession) -> None:
    """A delay shorter than the client's patience only slows the normal answer down."""
    sim.faults.push("poll", Delay(0.05))
    task_id = (await create(session, sim))["id"]
    assert (await poll(session, sim, task_id))["status"] == "completed"
    assert sim.counters.in_flight == 1


async def test_truncated_download_with_content_length_is_a_payload_error(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """A body cut short of its Content-Length fails the read and is not counted complete."""
    result = await poll(session, sim, (await create(session, sim))["id"])
    sim.faults.push("download", Truncate(100))
    with pytest.raises(aiohttp.ClientPayloadError):
        async with session.get(result["image_url"]) as r:
            await r.read()
    assert sim.counters.downloads == 1
    assert sim.counters.downloads_completed == 0
    assert sim.counters.in_flight == 1


async def test_truncated_download_without_content_length_looks_complete(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """A close-delimited body cut short reads fine: only the missing IEND tells."""
    result = await poll(session, sim, (await create(session, sim))["id"])
    sim.faults.push("download", Truncate(100, content_length=False))
    async with session.get(result["image_url"]) as r:
        assert r.status == 200
        assert r.content_length is None
        data = await r.read()
    assert len(data) == 100
    assert data.startswith(b"\x89PNG")
    assert not data.endswith(IEND)
    async with session.get(result["image_url"]) as r:
        assert (await r.read()).endswith(IEND)
    assert sim.counters.downloads_completed == 1


async def test_slow_download_delivers_everything_eventually(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """A slow body arrives whole, just late."""
    result = await poll(session, sim, (await create(session, sim))["id"])
    sim.faults.push("download", Slow(bytes_per_second=400_000))
    async with session.get(result["image_url"]) as r:
        data = await r.read()
    png_size(data)
    assert sim.counters.downloads_completed == 1


async def test_slow_download_stops_when_the_client_leaves(sim: Simulator) -> None:
    """A client that gives up on a trickling body leaves no connection behind."""
    async with aiohttp.ClientSession() as client_session:
        result = await poll(client_session, sim, (await create(client_session, sim))["id"])
        sim.faults.push("download", Slow(bytes_per_second=100))
        with pytest.raises(TimeoutError):
            async with client_session.get(
                result["image_url"], timeout=aiohttp.ClientTimeout(total=0.2)
            ) as r:
                await r.read()
    await connections_closed(sim)
    assert sim.counters.downloads_completed == 0


async def test_redirect_fault_on_create_and_on_download(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """A redirected create creates nothing; a redirected download can be followed."""
    sim.faults.push("create", Redirect(307, "http://127.0.0.1:9/elsewhere"))
    url = f"{sim.base_url}/v1/banana/images"
    body = {"model": "nano-banana", "prompt": "x"}
    async with session.post(url, json=body, headers=auth(sim), allow_redirects=False) as r:
        assert r.status == 307
        assert r.headers["Location"] == "http://127.0.0.1:9/elsewhere"
    assert sim.counters.creates == 0
    result = await poll(session, sim, (await create(session, sim))["id"])
    sim.faults.push("download", Redirect(302, result["image_url"]))
    async with session.get(result["image_url"]) as r:
        assert r.status == 200
        png_size(await r.read())
    assert sim.counters.downloads == 2


async def test_file_host_counts_authorization_and_cookie_headers(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """Downloads carrying credentials are counted; the log keeps presence, never values."""
    url = (await poll(session, sim, (await create(session, sim))["id"]))["image_url"]
    for headers in ({}, auth(sim), {"Cookie": "session=1"}):
        async with session.get(url, headers=headers) as r:
            await r.read()
    assert sim.counters.file_host_auth_headers == 2
    downloads = [req for req in sim.requests if req.endpoint == "download"]
    assert [(req.authorization, req.cookie) for req in downloads] == [
        (False, False),
        (True, False),
        (False, True),
    ]
    assert all(req.origin == "files" for req in downloads)
    assert sim.api_key not in repr(sim.requests)


async def test_requests_are_recorded_in_arrival_order(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """Every request to either origin is logged with its endpoint, in order."""
    task_id = (await create(session, sim))["id"]
    result = await poll(session, sim, task_id)
    async with session.get(result["image_url"]) as r:
        await r.read()
    async with session.get(f"{sim.base_url}/nowhere") as r:
        assert r.status == 404
    assert [(req.origin, req.endpoint) for req in sim.requests] == [
        ("api", "create"),
        ("api", "poll"),
        ("files", "download"),
        ("api", "other"),
    ]
    times = [req.at for req in sim.requests]
    assert times == sorted(times)
    task = sim.tasks[task_id]
    assert task.polls == 1
    assert len(task.poll_times) == 1
    assert task.downloads == 1


async def test_open_connections_return_to_zero_after_the_session_closes(
    sim: Simulator,
) -> None:
    """The connection gauge sees both origins and drops to 0 once the client is gone."""
    async with aiohttp.ClientSession() as client_session:
        result = await poll(client_session, sim, (await create(client_session, sim))["id"])
        async with client_session.get(result["image_url"]) as r:
            await r.read()
        assert sim.counters.open_connections == 2
    await connections_closed(sim)
    assert sim.counters.peak_connections == 2


async def test_in_flight_lasts_until_download_or_a_final_poll(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """Jobs count as in flight from create until downloaded, or until a failure is polled."""
    ids = [(await create(session, sim))["id"] for _ in range(3)]
    failing = (await create(session, sim, "x [fail]"))["id"]
    assert sim.counters.in_flight == 4
    await poll(session, sim, failing)
    assert sim.counters.in_flight == 3
    for task_id in ids:
        result = await poll(session, sim, task_id)
        for _ in range(2):
            async with session.get(result["image_url"]) as r:
                await r.read()
    assert sim.counters.in_flight == 0
    assert sim.counters.peak_in_flight == 4
    assert sim.counters.downloads_completed == 6


async def test_counters_endpoint_reports_without_auth(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """GET /_sim/counters serves the counters as JSON for a simulator in another process."""
    task_id = (await create(session, sim))["id"]
    async with session.get(f"{sim.base_url}/_sim/counters") as r:
        counters = await r.json()
    assert counters["creates"] == 1
    assert counters["create_requests"] == 1
    assert counters["in_flight"] == 1
    assert counters["open_connections"] >= 1
    async with session.get(f"{sim.base_url}/_sim/tasks") as r:
        tasks = await r.json()
    assert [task["id"] for task in tasks] == [task_id]


async def test_base_path_is_configurable(session: aiohttp.ClientSession) -> None:
    """The API answers under another prefix (the /kyyAiPower variant) and not the default."""
    async with Simulator(base_path="/kyyAiPower/") as sim:
        assert sim.base_url.endswith("/kyyAiPower")
        await create(session, sim)
        default = sim.base_url.replace("/kyyAiPower", "/kyyReactApiServer")
        async with session.post(f"{default}/v1/banana/images", headers=auth(sim)) as r:
            assert r.status == 404


async def test_same_seed_gives_the_same_ids(session: aiohttp.ClientSession) -> None:
    """Runs with one seed reproduce ids and job times; another seed differs."""
    runs = []
    for seed in (7, 7, 8):
        async with Simulator(seed=seed) as sim:
            task = sim.tasks[(await create(session, sim))["id"]]
            runs.append((task.id, task.completes_at - task.created_at))
    assert runs[0][0] == runs[1][0] != runs[2][0]
    assert runs[0][1] == pytest.approx(runs[1][1])


async def test_image_long_side_sets_the_png_size(session: aiohttp.ClientSession) -> None:
    """image_long_side controls the long side; a portrait size makes it the height."""
    async with Simulator(latency=LatencyProfile.instant(), image_long_side=120) as sim:
        result = await poll(session, sim, (await create(session, sim, size="3:4"))["id"])
        async with session.get(result["image_url"]) as r:
            assert png_size(await r.read()) == (90, 120)


async def test_lifecycle_is_idempotent_and_urls_need_a_start() -> None:
    """URLs are unavailable before start; aclose can be called twice; restart is refused."""
    sim = Simulator()
    with pytest.raises(RuntimeError):
        _ = sim.base_url
    await sim.start()
    assert sim.base_url.startswith("http://127.0.0.1:")
    assert yarl.URL(sim.file_host_url).port != yarl.URL(sim.base_url).port
    await sim.aclose()
    await sim.aclose()
    with pytest.raises(RuntimeError):
        await sim.start()


def test_latency_profiles_have_the_documented_shape() -> None:
    """Profiles draw from the documented ranges and reject nonsense."""
    rng = random.Random(1)
    realistic = LatencyProfile.realistic()
    for _ in range(50):
        assert 15 <= realistic.sample("nano-banana-pro", "1k", rng) <= 25
        assert 50 <= realistic.sample("nano-banana-pro", "4k", rng) <= 90
        assert realistic.sample("nano-banana", "1k", rng) < 15
        assert 0.01 <= LatencyProfile.fast().sample("nano-banana-pro", "4k", rng) <= 0.2
        assert 0.2 <= LatencyProfile.demo().sample("nano-banana-2", "2k", rng) <= 4.5
        assert 8 <= LatencyProfile.uniform(8, 30).sample("nano-banana-pro", "4k", rng) <= 30
    assert LatencyProfile.instant().sample("nano-banana-pro", "4k", rng) == 0
    with pytest.raises(ValueError, match="default_seconds"):
        LatencyProfile.uniform(5, 1)
    with pytest.raises(ValueError, match="scale"):
        LatencyProfile(scale=-1)


async def _read_all(stream: anyio.abc.ByteReceiveStream | None) -> bytes:
    assert stream is not None
    chunks = []
    try:
        while True:
            chunks.append(await stream.receive())
    except anyio.EndOfStream:
        pass
    return b"".join(chunks)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


async def test_standalone_module_serves_and_stops_on_sigterm(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """`python -m nanobanana_async.testing --ready-file` listens, answers, and exits on SIGTERM."""
    ready = tmp_path / "ready.json"
    command = [sys.executable, "-m", "nanobanana_async.testing", "--latency", "instant"]
    command += ["--api-key", "sub-key", "--ready-file", str(ready)]
    async with await anyio.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_child_env()
    ) as process:
        try:
            with anyio.fail_after(15):
                while not ready.exists():
                    assert process.returncode is None, "the simulator exited early"
                    await anyio.sleep(0.02)
            info = json.loads(ready.read_text())
            assert info["api_key"] == "sub-key"
            headers = {"Authorization": "Bearer sub-key"}
            body = {"model": "nano-banana", "prompt": "x"}
            async with session.post(
                f"{info['base_url']}/v1/banana/images", json=body, headers=headers
            ) as r:
                assert r.status == 200
            async with session.get(f"{info['base_url']}/_sim/counters") as r:
                assert (await r.json())["creates"] == 1
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(10):
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
        output = (await _read_all(process.stdout)).decode()
    assert f"export NANOBANANA_BASE_URL={info['base_url']}" in output
    assert "export NANOBANANA_API_KEY=sub-key" in output


async def _run_user_suite(folder: Path) -> subprocess.CompletedProcess[bytes]:
    """Run ``folder/test_user.py`` as a user's own anyio suite with only this plugin loaded."""
    (folder / "pytest.ini").write_text(
        "[pytest]\nanyio_mode = auto\nfilterwarnings =\n    error\n", encoding="utf-8"
    )
    env = _child_env()
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "anyio.pytest_plugin"]
    command += ["-p", "nanobanana_async.testing.pytest_plugin", "test_user.py"]
    with anyio.fail_after(60):
        return await anyio.run_process(command, cwd=folder, env=env, check=False)


async def test_pytest_fixture_yields_a_started_simulator(tmp_path: Path) -> None:
    """The plugin's nanobanana_simulator fixture works for a user's anyio test suite."""
    (tmp_path / "test_user.py").write_text(
        "import pytest\n"
        "from nanobanana_async.testing import Simulator\n\n"
        "@pytest.fixture\n"
        "def anyio_backend():\n"
        "    return 'asyncio'\n\n"
        "async def test_it(nanobanana_simulator):\n"
        "    assert isinstance(nanobanana_simulator, Simulator)\n"
        "    assert nanobanana_simulator.base_url.startswith('http://127.0.0.1:')\n",
        encoding="utf-8",
    )
    completed = await _run_user_suite(tmp_path)
    assert completed.returncode == 0, completed.stdout.decode() + completed.stderr.decode()
    assert b"1 passed" in completed.stdout


async def test_pytest_client_fixture_and_marker_shape_a_users_test_suite(tmp_path: Path) -> None:
    """nanobanana_client polls fast; the marker sets the latency and the faults."""
    (tmp_path / "test_user.py").write_text(
        "import pytest\n"
        "from nanobanana_async import NanoBanana, Retrying\n\n"
        "@pytest.fixture\n"
        "def anyio_backend():\n"
        "    return 'asyncio'\n\n"
        "async def test_generate(nanobanana_client, nanobanana_simulator):\n"
        "    assert isinstance(nanobanana_client, NanoBanana)\n"
        "    result = await nanobanana_client.generate('a fox')\n"
        "    assert (await result.read()).startswith(b'\\x89PNG')\n"
        "    assert nanobanana_simulator.counters.creates == 1\n\n"
        "@pytest.mark.nanobanana(latency='instant', fault_rates={'server_error': 0.5}, seed=3)\n"
        "async def test_marked(nanobanana_client, nanobanana_simulator):\n"
        "    seen = []\n"
        "    nanobanana_client.subscribe(seen.append)\n"
        "    async for outcome in nanobanana_client.generate_many(['a', 'b', 'c', 'd']):\n"
        "        pass\n"
        "    assert nanobanana_simulator.faults.rates.server_error == 0.5\n"
        "    assert nanobanana_simulator.faults.injected.total > 0\n\n"
        "@pytest.mark.nanobanana(latency='sluggish')\n"
        "async def test_bad_marker(nanobanana_simulator):\n"
        "    pass\n",
        encoding="utf-8",
    )
    completed = await _run_user_suite(tmp_path)
    output = completed.stdout.decode() + completed.stderr.decode()
    assert "2 passed" in output, output
    assert "1 error" in output, output
    assert "latency='sluggish'" in output


# Seeded random faults (FaultQueues.set_rates) and the counters that go with them.


async def _poll_outcome(session: aiohttp.ClientSession, sim: Simulator, task_id: str) -> str:
    """What one poll got: "ok", "reset" or the error status."""
    try:
        async with session.get(f"{sim.base_url}/v1/result/{task_id}", headers=auth(sim)) as r:
            await r.read()
            return "ok" if r.status == 200 else str(r.status)
    except aiohttp.ClientConnectionError:
        return "reset"


async def _poll_sequence(seed: int, count: int) -> tuple[list[str], dict[str, int], int, int]:
    async with Simulator(latency=LatencyProfile.instant()) as sim, aiohttp.ClientSession() as s:
        task_id = (await create(s, sim))["id"]
        sim.faults.set_rates(seed=seed, reset=0.2, server_error=0.2, rate_limit=0.2)
        seen = [await _poll_outcome(s, sim, task_id) for _ in range(count)]
        return seen, sim.faults.injected.as_dict(), sim.tasks[task_id].polls, sim.counters.polls


async def test_random_faults_are_reproducible_per_seed_and_counted() -> None:
    """Same seed, same fault sequence; another seed differs; injected counts match what was seen."""
    first, injected, task_polls, polls = await _poll_sequence(seed=11, count=60)
    assert (first, injected) == (await _poll_sequence(seed=11, count=60))[:2]
    assert first != (await _poll_sequence(seed=12, count=60))[0]
    assert first.count("503") == injected["poll_server_errors"] > 0
    assert first.count("429") == injected["poll_rate_limits"] > 0
    # aiohttp resends a GET once after a reset (3.10, #7297), so a reset is seen only when
    # the resend is reset too; the server saw every attempt.
    assert 0 < first.count("reset") < injected["poll_resets"]
    assert first.count("ok") == polls - sum(injected.values()) > 0
    assert polls == 60 + injected["poll_resets"] - first.count("reset")
    # Every poll that reached the server is a poll of the task, replaced by a fault or not.
    assert task_polls == polls


async def test_random_429_carries_the_configured_retry_after(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """A drawn 429 on create says Retry-After as configured and creates nothing."""
    sim.faults.set_rates(seed=1, rate_limit=1.0, retry_after=0.25)
    url = f"{sim.base_url}/v1/banana/images"
    async with session.post(
        url, json={"model": "nano-banana", "prompt": "x"}, headers=auth(sim)
    ) as r:
        assert r.status == 429
        assert r.headers["Retry-After"] == "0.25"
        assert (await r.json())["error"]["type"] == "rate_limit_error"
    assert sim.counters.creates == 0
    assert sim.faults.injected.create_rate_limits == 1


async def test_random_create_resets_bill_a_share_and_count_unacknowledged_creates(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """Create resets with create_first=0.5: billed ones are tasks whose id nobody received."""
    sim.faults.set_rates(seed=3, reset=1.0, create_first=0.5)
    url = f"{sim.base_url}/v1/banana/images"
    for _ in range(40):
        with pytest.raises(aiohttp.ClientConnectionError):
            async with session.post(
                url, json={"model": "nano-banana", "prompt": "x"}, headers=auth(sim)
            ) as r:
                await r.read()
    injected = sim.faults.injected
    assert injected.create_resets == 40
    assert 5 < injected.create_resets_billed < 35
    assert sim.counters.creates == injected.create_resets_billed
    assert sim.counters.unacknowledged_creates == injected.create_resets_billed
    assert sim.counters.in_flight == 0
    assert injected.total == 40


async def test_random_truncations_cut_downloads_with_and_without_content_length(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """truncate=1.0: every download is cut after 12-40 bytes; none counts as completed."""
    url = (await poll(session, sim, (await create(session, sim))["id"]))["image_url"]
    sim.faults.set_rates(seed=5, truncate=1.0)
    kinds = set()
    for _ in range(20):
        try:
            async with session.get(url) as r:
                data = await r.read()
        except aiohttp.ClientPayloadError:
            kinds.add("short of Content-Length")
        else:
            assert 12 <= len(data) <= 40
            assert not data.endswith(IEND)
            kinds.add("close-delimited")
    assert kinds == {"short of Content-Length", "close-delimited"}
    assert sim.faults.injected.download_truncations == 20
    assert sim.counters.downloads_completed == 0


async def test_scheduled_faults_come_before_random_ones_and_rates_can_be_cleared(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """A pushed fault wins over the rates; clear_rates stops injection but keeps the counts."""
    task_id = (await create(session, sim))["id"]
    rates = sim.faults.set_rates(seed=1, server_error=1.0)
    assert sim.faults.rates == rates
    assert isinstance(rates, FaultRates)
    sim.faults.push("poll", Respond(418))
    assert await _poll_outcome(session, sim, task_id) == "418"
    assert await _poll_outcome(session, sim, task_id) == "503"
    sim.faults.clear_rates()
    assert _rates_of(sim) is None
    assert await _poll_outcome(session, sim, task_id) == "ok"
    assert sim.faults.injected.poll_server_errors == 1
    async with session.get(f"{sim.base_url}/_sim/faults") as r:
        assert (await r.json())["poll_server_errors"] == 1


def _rates_of(sim: Simulator) -> FaultRates | None:
    return sim.faults.rates


@pytest.mark.parametrize(
    "rates",
    [
        {"reset": -0.1},
        {"truncate": 1.5},
        {"reset": 0.6, "server_error": 0.5},
        {"retry_after": float("nan")},
    ],
)
def test_fault_rates_are_validated(rates: dict[str, Any]) -> None:
    """Probabilities must lie in [0, 1] and add up to at most 1 per endpoint."""
    with pytest.raises(ValueError, match=r"must|add up"):
        FaultRates(seed=0, **rates)


async def test_polls_replaced_by_a_fault_still_count_for_the_task(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """A poll answered by a fault (503, reset, delay) reached the server: polls and poll_times."""
    task_id = (await create(session, sim))["id"]
    sim.faults.push("poll", Respond(503))
    sim.faults.push("poll", ResetConnection())
    outcomes = [await _poll_outcome(session, sim, task_id) for _ in range(3)]
    assert outcomes == ["503", "ok", "ok"]  # aiohttp resent the reset GET once, by itself
    task = sim.tasks[task_id]
    assert task.polls == 4
    assert len(task.poll_times) == 4
    assert sim.counters.polls == 4


async def test_unacknowledged_creates_count_answers_lost_after_billing(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """502 after create, a reset after create, a cut create answer: 3 billed, 3 unacknowledged."""
    url = f"{sim.base_url}/v1/banana/images"
    body = {"model": "nano-banana", "prompt": "x"}
    sim.faults.push("create", Respond(502, create_first=True))
    sim.faults.push("create", ResetConnection(create_first=True))
    sim.faults.push("create", Truncate(5))
    sim.faults.push("create", Respond(503))  # before creating: nothing billed
    for _ in range(4):
        with contextlib.suppress(aiohttp.ClientError):
            async with session.post(url, json=body, headers=auth(sim)) as r:
                await r.read()
    await create(session, sim)
    assert sim.counters.creates == 4
    assert sim.counters.unacknowledged_creates == 3
    assert sim.counters.in_flight == 1


async def test_standalone_module_injects_random_faults(tmp_path: Path) -> None:
    """`--fault-rates server_error=1` makes every create a 503; /_sim/faults counts them."""
    ready = tmp_path / "ready.json"
    command = [sys.executable, "-m", "nanobanana_async.testing", "--latency", "instant"]
    command += ["--fault-rates", "server_error=1", "--fault-seed", "4", "--ready-file", str(ready)]
    async with await anyio.open_process(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_child_env()
    ) as process:
        try:
            with anyio.fail_after(15):
                while not ready.exists():
                    assert process.returncode is None, "the simulator exited early"
                    await anyio.sleep(0.02)
            info = json.loads(ready.read_text())
            async with aiohttp.ClientSession() as client_session:
                headers = {"Authorization": f"Bearer {info['api_key']}"}
                body = {"model": "nano-banana", "prompt": "x"}
                for _ in range(2):
                    async with client_session.post(
                        f"{info['base_url']}/v1/banana/images", json=body, headers=headers
                    ) as r:
                        assert r.status == 503
                async with client_session.get(f"{info['base_url']}/_sim/faults") as r:
                    assert (await r.json())["create_server_errors"] == 2
        finally:
            process.terminate()
            with anyio.fail_after(10):
                await process.wait()


def test_standalone_module_rejects_unknown_fault_kinds() -> None:
    """A misspelt fault kind is a usage error naming the allowed kinds."""
    completed = subprocess.run(
        [sys.executable, "-m", "nanobanana_async.testing", "--fault-rates", "resets=0.1"],
        capture_output=True,
        text=True,
        timeout=30,
        env=_child_env(),
        check=False,
    )
    assert completed.returncode == 2
    assert "server_error" in completed.stderr


# RawFaultServer: protocol faults below HTTP.


async def _raw_get(url: str, **kwargs: Any) -> bytes:
    async with aiohttp.ClientSession() as client_session, client_session.get(url, **kwargs) as r:
        return await r.read()


async def test_raw_server_bad_status_line_is_a_client_response_error() -> None:
    """A status line that is not HTTP fails aiohttp's parser; the request was read and logged."""
    async with RawFaultServer(RawReply.bad_status_line()) as server:
        with anyio.fail_after(5), pytest.raises(aiohttp.ClientResponseError, match="status"):
            await _raw_get(server.url + "/v1/result/abc", headers={"Authorization": "Bearer k"})
    assert server.connections == 1
    assert server.open_connections == 0
    [request] = server.requests
    assert (request.method, request.target) == ("GET", "/v1/result/abc")
    assert request.authorization
    assert "Bearer" not in repr(server.requests)  # names only, never values
    assert server.bytes_received > 0
    assert server.errors == []


async def test_raw_server_broken_chunking_fails_the_read() -> None:
    """A chunk size that is not hex fails aiohttp's parser."""
    async with RawFaultServer(RawReply.broken_chunked()) as server:
        with anyio.fail_after(5), pytest.raises(aiohttp.ClientError, match="chunk size"):
            await _raw_get(server.url + "/x")
    assert server.connections == 1


@pytest.mark.parametrize("sent", [0, 10, 40])
async def test_raw_server_resets_after_n_bytes_of_the_answer(sent: int) -> None:
    """reset_after(n): n bytes of a 200, then an RST; a POST sees a connection error."""
    async with (
        RawFaultServer(RawReply.reset_after(sent)) as server,
        aiohttp.ClientSession() as client_session,
    ):
        with anyio.fail_after(5), pytest.raises(aiohttp.ClientConnectionError):
            async with client_session.post(server.url + "/x", json={"a": 1}) as r:
                await r.read()
    assert server.connections == 1
    assert len(server.requests) == 1
    assert server.requests[0].method == "POST"


async def test_aiohttp_resends_a_reset_get_once_by_itself() -> None:
    """An idempotent GET reset before any answer is resent once by aiohttp: two connections."""
    async with RawFaultServer(RawReply.reset_after(0)) as server:
        with anyio.fail_after(5), pytest.raises(aiohttp.ClientConnectionError):
            await _raw_get(server.url + "/x")
    assert server.connections == 2


async def test_raw_server_replies_follow_the_script_then_repeat_the_last() -> None:
    """Connection n gets reply n; after the script the last reply repeats; a POST body is read."""
    ok = RawReply.answer(200, b'{"fine":true}')
    async with (
        RawFaultServer(RawReply.reset_after(0), ok) as server,
        aiohttp.ClientSession() as client_session,
    ):
        with pytest.raises(aiohttp.ClientError):
            async with client_session.post(server.url + "/a", data=b"x" * 5000) as r:
                await r.read()
        for _ in range(2):
            async with client_session.post(server.url + "/b", data=b"y" * 5000) as r:
                assert r.status == 200
                assert await r.json() == {"fine": True}
    assert server.connections == 3
    assert [r.connection for r in server.requests] == [1, 2, 3]
    assert server.bytes_received >= 3 * 5000
    assert http_response(204).startswith(b"HTTP/1.1 204 No Content\r\n")


async def test_raw_server_hang_keeps_the_client_waiting_until_its_timeout() -> None:
    """hang(): the request is read, nothing comes back; closing the server ends the connection."""
    async with RawFaultServer(RawReply.hang()) as server:
        with anyio.fail_after(5), pytest.raises(TimeoutError):
            await _raw_get(server.url + "/x", timeout=aiohttp.ClientTimeout(sock_read=0.2))
    assert server.open_connections == 0
    assert len(server.requests) == 1


async def test_raw_server_counts_failed_tls_handshakes(tmp_path: Path) -> None:
    """With an ssl_context, a client that refuses the certificate is one failed handshake."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    command = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    command += ["-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2"]
    command += ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    await anyio.run_process(command)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    async with RawFaultServer(RawReply.answer(200, b"{}"), ssl_context=context) as server:
        assert server.url.startswith("https://127.0.0.1:")
        with anyio.fail_after(5), pytest.raises(aiohttp.ClientConnectorCertificateError):
            await _raw_get(server.url + "/x")
        trusting = ssl.create_default_context(cafile=str(cert))
        with anyio.fail_after(5):
            assert await _raw_get(server.url + "/y", ssl=trusting) == b"{}"
    assert server.connections == 2
    assert server.tls_failures == 1
    assert [r.target for r in server.requests] == ["/y"]


async def test_a_fault_kind_can_be_kept_to_some_endpoints(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """on={"rate_limit": ["create"]}: creates get 429s, polls never do."""
    sim.faults.set_rates(seed=1, rate_limit=1.0, on={"rate_limit": ["create"]})
    url = f"{sim.base_url}/v1/banana/images"
    async with session.post(
        url, json={"model": "nano-banana", "prompt": "x"}, headers=auth(sim)
    ) as r:
        assert r.status == 429
    sim.faults.clear_rates()
    task_id = (await create(session, sim))["id"]
    sim.faults.set_rates(seed=1, rate_limit=1.0, on={"rate_limit": ["create"]})
    assert [await _poll_outcome(session, sim, task_id) for _ in range(5)] == ["ok"] * 5
    assert sim.faults.injected.as_dict()["create_rate_limits"] == 1
    with pytest.raises(ValueError, match="only on create, poll"):
        FaultRates(seed=0, rate_limit=0.1, on={"rate_limit": ["download"]})
    with pytest.raises(ValueError, match="unknown fault kind"):
        FaultRates(seed=0, on={"timeouts": ["poll"]})
