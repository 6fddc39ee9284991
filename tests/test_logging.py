"""Logging: a DEBUG line per request; INFO for retries, 429s, uncertain creates; never the key."""

from __future__ import annotations

import json
import logging
import re

import anyio
import attrs
import pytest

from nanobanana_async import Event
from nanobanana_async.testing import LatencyProfile, ResetConnection, Respond, Simulator

from .conftest import FAST_RETRY, SENTINEL_KEY
from .helpers import fast_client

pytestmark = pytest.mark.anyio

_REQUEST = re.compile(r"^(GET|POST) (\S+) -> (\d{3}) in [\d.]+ ms \(attempt (\d+)\)$")


def _requests_logged(records: list[logging.LogRecord]) -> list[tuple[str, str, int, int]]:
    found = []
    for record in records:
        match = _REQUEST.match(record.getMessage())
        if match and record.levelno == logging.DEBUG:
            found.append((match[1], match[2], int(match[3]), int(match[4])))
    return found


async def test_every_request_is_one_debug_line_with_its_path_template_status_and_attempt(
    sim: Simulator, debug_logs: pytest.LogCaptureFixture
) -> None:
    sim.latency = LatencyProfile.instant()
    async with fast_client(sim) as client:
        sim.faults.push("poll", Respond(503, {"error": {"message": "busy"}}))
        result = await client.generate("a fox")
        await result.read()
    lines = _requests_logged(debug_logs.records)
    query = f"{sim.base_url}/v1/result/{{task_id}}"
    assert lines[0] == ("POST", f"{sim.base_url}/v1/banana/images", 200, 1)
    assert lines[1:3] == [("GET", query, 503, 1), ("GET", query, 200, 2)]
    method, url, status, attempt = lines[3]
    assert (method, status, attempt) == ("GET", 200, 1)
    assert url.startswith(sim.file_host_url)
    assert "?" not in url
    assert len(lines) == 4 == sim.counters.create_requests + sim.counters.polls + 1
    assert result.task.id not in " ".join(url for _, url, _, _ in lines[:3])


async def test_a_retry_a_429_and_an_uncertain_create_are_logged_at_info(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    sim.latency = LatencyProfile.instant()
    caplog.set_level(logging.INFO, logger="nanobanana_async")
    async with fast_client(sim) as client:
        sim.faults.push("poll", Respond(429, {"error": "slow"}, headers={"Retry-After": "0"}))
        await client.generate("a fox")
        sim.faults.push("create", ResetConnection(create_first=True))
        with pytest.raises(Exception, match="sent"):
            await client.generate("a cat")
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("429 to a query" in line for line in info)
    assert any(line.startswith("query attempt 1 failed (RateLimitedError)") for line in info)
    assert any("may have been billed" in line for line in info)
    assert not [r for r in caplog.records if r.levelno == logging.DEBUG]


async def test_no_log_record_or_event_of_a_faulty_run_holds_the_key(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Resets, 5xx, 429s and cut downloads over 150 jobs, every log level and every event."""
    assert sim.api_key == SENTINEL_KEY
    sim.latency = LatencyProfile(default_seconds=(0.0, 0.05))
    sim.faults.set_rates(seed=3, reset=0.05, server_error=0.05, rate_limit=0.05, truncate=0.05)
    caplog.set_level(logging.DEBUG, logger="nanobanana_async")
    lines: list[str] = []

    def as_json_line(event: Event) -> None:
        lines.append(json.dumps(event.as_json()))

    retry = attrs.evolve(FAST_RETRY, poll_failures=8, download_attempts=8, budget_capacity=1e5)
    async with fast_client(sim, max_concurrency=30, retry=retry) as client:
        client.subscribe(as_json_line)
        with anyio.fail_after(60):
            async for _ in client.generate_many([f"fox {i}" for i in range(150)]):
                pass
    assert sim.faults.injected.total > 10
    assert len(caplog.records) > 300
    assert len(lines) > 450
    for record in caplog.records:
        text = caplog.handler.format(record) + repr(record.args) + repr(record.__dict__)
        assert SENTINEL_KEY not in text
    for line in lines:
        assert SENTINEL_KEY not in line
