"""The API key stays secret, and hostile answers build no URL and no path."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest

from nanobanana_async import (
    FixedPolling,
    ImageResult,
    InvalidRequestError,
    MalformedResponseError,
    NanoBanana,
    NanoBananaError,
    ResultExpiredError,
    Task,
    TaskStatus,
)
from nanobanana_async.testing import Delay, ResetConnection, Respond, Simulator

from .conftest import FAST_RETRY, SENTINEL_KEY
from .helpers import everything_said_by


async def test_file_host_never_receives_authorization_or_cookies(
    client: NanoBanana, sim: Simulator, tmp_path: Path
) -> None:
    """generate + save + read + a batch: the file host's auth-header counter stays 0."""
    result = await client.generate("a fox")
    await result.save(tmp_path)
    await result.read()
    async for outcome in client.generate_many(["one", "two", "three"], save_to=tmp_path):
        assert outcome.ok
    file_requests = [r for r in sim.requests if r.origin == "files"]
    assert len(file_requests) == 5
    assert sim.counters.file_host_auth_headers == 0
    api_requests = [r for r in sim.requests if r.origin == "api"]
    assert all(r.authorization for r in api_requests)


async def test_a_download_on_the_api_origin_still_carries_no_key(
    client: NanoBanana, sim: Simulator
) -> None:
    """Even when an image URL points at the API host itself, the key is not sent there."""
    task = Task(id="abc", status=TaskStatus.COMPLETED, image_url=sim.base_url + "/files/abc.png")
    with pytest.raises(ResultExpiredError):
        await ImageResult(task, fetcher=client).read()
    download, repoll = sim.requests
    assert (download.origin, download.endpoint) == ("api", "other")
    assert download.authorization is False
    assert repoll.endpoint == "poll"  # one re-poll for a fresh URL, never a new create
    assert sim.counters.create_requests == 0


async def _collect_errors(sim: Simulator, client: NanoBanana) -> list[NanoBananaError]:
    """Provoke one error of each kind the key could leak into."""
    errors: list[NanoBananaError] = []
    scripted = [
        ("create", Respond(401, {"error": f"invalid key {SENTINEL_KEY}"})),
        ("create", Respond(502, f"<html>{SENTINEL_KEY}</html>", create_first=True)),
        ("create", ResetConnection(create_first=True)),
        ("create", Respond(200, {"id": "../x", "echo": f"Bearer {SENTINEL_KEY}"})),
        ("create", Respond(400, {"code": 400, "msg": f"Authorization: Bearer {SENTINEL_KEY}"})),
    ]
    for endpoint, fault in scripted:
        sim.faults.push(endpoint, fault)  # type: ignore[arg-type]
        try:
            await client.submit("a fox")
        except NanoBananaError as exc:
            errors.append(exc)
    for prompt in ("a fox [fail]", "a fox [no-url]", "a fox [expired]"):
        try:
            result = await client.generate(prompt)
            await result.read()
        except NanoBananaError as exc:
            errors.append(exc)
    task = await client.submit("a fox [never]")
    try:
        await client.wait(task, timeout=0.1)
    except NanoBananaError as exc:
        errors.append(exc)
    return errors


async def test_the_key_appears_in_no_error_repr_log_or_saved_file(
    sim: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Sentinel key: absent from repr(client), every error (with causes), DEBUG logs and files."""
    caplog.set_level(logging.DEBUG)
    async with NanoBanana(
        api_key=SENTINEL_KEY, base_url=sim.base_url, polling=FixedPolling(0.02), retry=FAST_RETRY
    ) as client:
        assert SENTINEL_KEY not in repr(client)
        assert SENTINEL_KEY not in repr(client._http.__dict__)
        errors = await _collect_errors(sim, client)
        result = await client.generate("a fox")
        path = await result.save(tmp_path)
        async for outcome in client.generate_many(["x", "y [fail]"], save_to=tmp_path):
            if outcome.error is not None:
                errors.append(outcome.error)
    assert len(errors) >= 9
    for error in errors:
        assert SENTINEL_KEY not in everything_said_by(error), type(error)
    messages = [record.getMessage() for record in caplog.records]
    assert any(record.name == "nanobanana_async" for record in caplog.records)
    assert not any(SENTINEL_KEY in message for message in messages)
    for saved in tmp_path.iterdir():
        assert SENTINEL_KEY.encode() not in saved.read_bytes()
    assert path.exists()


async def test_a_hostile_task_id_from_the_service_builds_no_url(
    client: NanoBanana, sim: Simulator, tmp_path: Path
) -> None:
    """A create answer with a path-like id is malformed (may be billed) and is never polled."""
    sim.faults.push("create", Respond(200, {"id": "../../admin", "status": "queued"}))
    with pytest.raises(MalformedResponseError) as caught:
        await client.generate("a fox")
    assert caught.value.may_be_billed
    assert sim.counters.polls == 0
    assert [r.endpoint for r in sim.requests] == ["create"]


@pytest.mark.parametrize("task_id", ["../x", "a/b", "..", "%2e%2e", "CON", "x\u202e", "x" * 300])
async def test_hostile_ids_passed_by_the_caller_send_no_request(
    client: NanoBanana, sim: Simulator, task_id: str
) -> None:
    """get_task and wait refuse the id as bad input (naming task_id) before any URL is built."""
    with pytest.raises(InvalidRequestError, match="task_id"):
        await client.get_task(task_id)
    with pytest.raises(InvalidRequestError, match="task_id"):
        await client.wait(task_id)
    assert sim.requests == []


async def test_a_hostile_id_in_a_completed_task_builds_no_file_path(
    client: NanoBanana, tmp_path: Path
) -> None:
    """Saving a task whose id is path-like is refused before a file is created."""
    task = Task(id="../../escape", status=TaskStatus.COMPLETED, image_url="https://cdn/x.png")
    with pytest.raises(MalformedResponseError):
        await ImageResult(task, fetcher=client).save(tmp_path)
    assert list(tmp_path.parent.glob("escape*")) == []
    assert list(tmp_path.iterdir()) == []


async def test_a_slow_create_answer_is_bounded_by_the_read_timeout(sim: Simulator) -> None:
    """A create whose answer never comes is uncertain once the read timeout passes."""
    from nanobanana_async import SubmissionUncertainError, Timeouts

    sim.faults.push("create", Delay(5.0, create_first=True))
    async with NanoBanana(
        api_key=sim.api_key, base_url=sim.base_url, timeouts=Timeouts(read=0.2)
    ) as client:
        with anyio.fail_after(3):
            with pytest.raises(SubmissionUncertainError):
                await client.submit("a fox")
    assert sim.counters.creates == 1
