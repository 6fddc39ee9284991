"""The client against the simulator: round trips, validation, waiting, settings, closing."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from nanobanana_async import (
    AdaptivePolling,
    ClientClosedError,
    ConfigurationError,
    FixedPolling,
    ImageRequest,
    InvalidRequestError,
    MalformedResponseError,
    NanoBanana,
    ServerError,
    TaskFailedError,
    TaskStatus,
    TaskTimeoutError,
)
from nanobanana_async.testing import LatencyProfile, Respond, Simulator

from .helpers import png_size


async def test_submit_get_task_wait_round_trip(client: NanoBanana, sim: Simulator) -> None:
    """submit returns the accepted task, get_task queries it, wait returns it completed."""
    task = await client.submit(ImageRequest(prompt="a red fox", resolution="2k", size="16:9"))
    assert task.status in (TaskStatus.QUEUED, TaskStatus.PROCESSING)
    assert sim.counters.creates == 1
    sim_task = sim.tasks[task.id]
    assert sim_task.request["resolution"] == "2k"
    assert sim_task.request["size"] == "16:9"

    again = await client.get_task(task.id)
    assert again.id == task.id
    assert sim.counters.polls == 1

    done = await client.wait(task.id)
    assert done.status is TaskStatus.COMPLETED
    assert done.image_url is not None
    assert done.image_url.startswith(sim.file_host_url)
    assert sim.counters.creates == 1


async def test_generate_then_save_and_read_give_the_same_real_png(
    client: NanoBanana, sim: Simulator, tmp_path: Path
) -> None:
    """generate + save writes a PNG of the requested aspect ratio; read returns the same bytes."""
    result = await client.generate("a red fox", model="nano-banana-2", size="16:9")
    path = await result.save(tmp_path)
    assert path.parent == tmp_path
    assert path.name == f"{result.task.id}.png"
    data = path.read_bytes()
    width, height = png_size(data)
    assert abs(width / height - 16 / 9) < 0.05
    assert await result.read() == data
    assert sim.counters.creates == 1
    assert sim.counters.downloads_completed == 2
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


async def test_save_to_an_explicit_file_path_uses_that_name(
    client: NanoBanana, tmp_path: Path
) -> None:
    """A destination that is not a folder is the file's own path."""
    result = await client.generate("a red fox")
    target = tmp_path / "nested" / "fox.png"
    assert await result.save(target) == target
    png_size(target.read_bytes())


@pytest.mark.parametrize(
    "bad",
    [
        {"prompt": ""},
        {"prompt": "p", "model": "nano-banana-3"},
        {"prompt": "p", "resolution": "8k"},
        {"prompt": "p", "size": "1:2"},
        {"prompt": "p", "image_urls": [f"https://x/{i}.png" for i in range(7)]},
    ],
)
async def test_invalid_request_is_refused_locally_and_reaches_no_server(
    client: NanoBanana, sim: Simulator, bad: dict[str, object]
) -> None:
    """Each invalid field raises InvalidRequestError with 0 requests at the simulator."""
    fields = dict(bad)
    prompt = fields.pop("prompt")
    with pytest.raises(InvalidRequestError):
        await client.generate(prompt, **fields)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError):
        await client.submit(ImageRequest(prompt=prompt, **fields))  # type: ignore[arg-type]
    assert sim.requests == []
    assert sim.counters.create_requests == 0


async def test_failed_generation_raises_task_failed_with_id_and_reason(
    client: NanoBanana, sim: Simulator
) -> None:
    """generate raises TaskFailedError carrying the task and the service's message."""
    with pytest.raises(TaskFailedError) as caught:
        await client.generate("a fox [fail]")
    error = caught.value
    assert error.task.id in sim.tasks
    assert error.task.status is TaskStatus.FAILED
    assert "Content policy" in str(error)
    assert sim.counters.downloads == 0


async def test_wait_returns_a_failed_task_instead_of_raising(client: NanoBanana) -> None:
    """wait returns the terminal Task whatever its status."""
    task = await client.submit("a fox [fail-object]")
    done = await client.wait(task)
    assert done.status is TaskStatus.FAILED
    assert done.error is not None
    assert "content_policy" in done.error


async def test_completed_task_without_url_surfaces_as_malformed(
    client: NanoBanana, sim: Simulator
) -> None:
    """A completed answer with no image_url is a MalformedResponseError with the task id."""
    with pytest.raises(MalformedResponseError) as caught:
        await client.generate("a fox [no-url]")
    assert caught.value.task_id in sim.tasks
    assert sim.counters.downloads == 0


async def test_wait_timeout_raises_within_deadline_with_id_and_last_status(
    client: NanoBanana, sim: Simulator
) -> None:
    """A task that never finishes: TaskTimeoutError (a TimeoutError) near the deadline."""
    task = await client.submit("a fox [never]")
    started = time.monotonic()
    with pytest.raises(TaskTimeoutError) as caught:
        await client.wait(task.id, timeout=0.3)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0
    error = caught.value
    assert isinstance(error, TimeoutError)
    assert error.task_id == task.id
    assert error.last_status == "processing"
    assert task.id in str(error)
    assert "processing" in str(error)
    assert sim.tasks[task.id].polls >= 1
    await anyio.sleep(0.1)  # a poll already on the wire at the deadline may still land
    polls = sim.tasks[task.id].polls
    await anyio.sleep(0.2)
    assert sim.tasks[task.id].polls == polls  # nothing keeps polling after the timeout


async def test_wait_can_resume_after_a_timeout(client: NanoBanana, sim: Simulator) -> None:
    """The same id can be waited on again and completes once the job is done."""
    sim.latency = LatencyProfile.uniform(0.4, 0.4)
    task = await client.submit("slow fox")
    with pytest.raises(TaskTimeoutError):
        await client.wait(task.id, timeout=0.1)
    done = await client.wait(task.id, timeout=5)
    assert done.status is TaskStatus.COMPLETED
    assert sim.counters.creates == 1


async def test_transient_poll_failures_are_retried_until_the_task_completes(
    client: NanoBanana, sim: Simulator
) -> None:
    """503s and a gateway page on polls are retried; the job completes with one create."""
    task = await client.submit("a fox")
    sim.faults.push("poll", Respond(503, {"error": "busy"}))
    sim.faults.push("poll", Respond(200, "<html><title>Gateway</title></html>"))
    done = await client.wait(task, timeout=20)
    assert done.status is TaskStatus.COMPLETED
    assert sim.counters.polls >= 3
    assert sim.counters.creates == 1


async def test_persistent_poll_failures_give_up_after_a_bounded_number_of_tries(
    client: NanoBanana, sim: Simulator
) -> None:
    """Five failures in a row end the wait with the last error."""
    task = await client.submit("a fox")
    for _ in range(5):
        sim.faults.push("poll", Respond(500, {"error": "down"}))
    with anyio.fail_after(60):
        with pytest.raises(ServerError):
            await client.wait(task)
    assert sim.counters.polls == 5


async def test_missing_key_is_a_clear_error_naming_the_variable_at_first_request(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No key anywhere: constructing works, the first call explains NANOBANANA_API_KEY."""
    monkeypatch.delenv("NANOBANANA_API_KEY", raising=False)
    async with NanoBanana(base_url=sim.base_url) as client:
        with pytest.raises(ConfigurationError, match="NANOBANANA_API_KEY"):
            await client.submit("a fox")
    assert sim.requests == []


async def test_key_and_base_url_come_from_the_environment(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NANOBANANA_API_KEY and NANOBANANA_BASE_URL configure a client built with no arguments."""
    monkeypatch.setenv("NANOBANANA_API_KEY", sim.api_key)
    monkeypatch.setenv("NANOBANANA_BASE_URL", sim.base_url)
    async with NanoBanana(polling=FixedPolling(0.02)) as client:
        assert str(client.base_url) == sim.base_url
        task = await client.submit("a fox")
    assert sim.tasks[task.id]
    assert sim.counters.auth_failures == 0


async def test_base_url_path_prefix_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """A base URL with another prefix (/kyyAiPower) still reaches the API."""
    async with Simulator(base_path="/kyyAiPower", latency=LatencyProfile.instant()) as sim:
        assert sim.base_url.endswith("/kyyAiPower")
        async with NanoBanana(
            api_key=sim.api_key, base_url=sim.base_url + "/", polling=FixedPolling(0.01)
        ) as client:
            await client.generate("a fox")
        assert sim.counters.creates == 1


@pytest.mark.parametrize(
    ("base_url", "complaint"),
    [
        ("ftp://example.com/api", "http(s)"),
        ("http://example.com/kyyReactApiServer", "plain http"),
        ("https://user:pw@example.com/api", "user name or password"),
        ("https://example.com/api?x=1", "query"),
        ("not a url", "http(s)"),
    ],
)
def test_unsafe_or_unusable_base_urls_are_refused(base_url: str, complaint: str) -> None:
    """Non-loopback http, userinfo, queries and non-http schemes are configuration errors."""
    with pytest.raises(ConfigurationError, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        NanoBanana(api_key="k", base_url=base_url)


def test_plain_http_to_a_remote_host_is_allowed_only_when_asked() -> None:
    """allow_insecure_http=True is the explicit opt-in."""
    client = NanoBanana(api_key="k", base_url="http://example.com/api", allow_insecure_http=True)
    assert client.base_url.host == "example.com"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_concurrency": 0},
        {"max_concurrency": "8"},
        {"connection_limit": -1},
        {"polling": 2.0},
    ],
)
def test_bad_client_settings_are_refused_with_a_teaching_message(kwargs: dict[str, object]) -> None:
    """Limits and policies are validated when the client is built."""
    with pytest.raises(ConfigurationError):
        NanoBanana(api_key="k", **kwargs)  # type: ignore[arg-type]


def test_poll_policies_validate_their_settings() -> None:
    """A zero interval or an out-of-range quantile is refused at construction."""
    with pytest.raises(ConfigurationError):
        FixedPolling(interval=0)
    with pytest.raises(ConfigurationError):
        AdaptivePolling(quantile=1.5)


async def test_aclose_twice_is_fine_and_use_after_close_is_a_clear_error(sim: Simulator) -> None:
    """aclose is idempotent; a closed client refuses work with ClientClosedError."""
    client = NanoBanana(api_key=sim.api_key, base_url=sim.base_url)
    await client.submit("a fox")
    await client.aclose()
    await client.aclose()
    assert client.closed
    with pytest.raises(ClientClosedError):
        await client.submit("another fox")
    assert sim.counters.creates == 1
    await anyio.sleep(0.05)
    assert sim.counters.open_connections == 0


async def test_context_manager_closes_every_connection(sim: Simulator, tmp_path: Path) -> None:
    """After `async with`, the simulator sees no open connection on either origin."""
    async with NanoBanana(
        api_key=sim.api_key, base_url=sim.base_url, polling=FixedPolling(0.02)
    ) as client:
        result = await client.generate("a fox")
        await result.save(tmp_path)
        assert sim.counters.open_connections >= 1
    await anyio.sleep(0.05)
    assert sim.counters.open_connections == 0


LEAKY_SCRIPT = """
import anyio
from nanobanana_async import NanoBanana
from nanobanana_async.testing import Simulator

async def main():
    async with Simulator() as sim:
        client = NanoBanana(api_key=sim.api_key, base_url=sim.base_url)
        await client.submit("a fox")
        del client

anyio.run(main)
"""


def test_a_client_never_closed_is_reported_as_an_unclosed_session() -> None:
    """Forgetting aclose() shows up as aiohttp's "Unclosed client session" warning."""
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", LEAKY_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Unclosed client session" in done.stderr


async def test_adaptive_polling_waits_two_seconds_before_the_first_poll_when_cold(
    sim: Simulator,
) -> None:
    """The default policy honours the service's pace: no poll sooner than 2 s after create."""
    sim.latency = LatencyProfile.instant()
    async with NanoBanana(api_key=sim.api_key, base_url=sim.base_url) as client:
        task = await client.submit("a fox")
        done = await client.wait(task)
    assert done.status is TaskStatus.COMPLETED
    sim_task = sim.tasks[task.id]
    assert len(sim_task.poll_times) == 1
    assert sim_task.poll_times[0] - sim_task.created_at >= 2.0
