"""Each documented error body shape maps to its typed error; create failures never double-bill."""

from __future__ import annotations

import socket

import pytest

from nanobanana_async import (
    APIError,
    AuthenticationError,
    BadRequestError,
    InsufficientBalanceError,
    MalformedResponseError,
    NanoBanana,
    NetworkError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    SubmissionUncertainError,
    TaskNotFoundError,
)
from nanobanana_async.testing import Redirect, ResetConnection, Respond, Simulator

CREATE_ERRORS: list[tuple[Respond, type[APIError], str]] = [
    (Respond(401, {"error": "Invalid API key"}), AuthenticationError, "Invalid API key"),
    (
        Respond(401, {"error": {"message": "key revoked", "type": "auth_error"}}),
        AuthenticationError,
        "key revoked",
    ),
    (
        Respond(402, {"error": {"message": "Insufficient balance", "type": "billing"}}),
        InsufficientBalanceError,
        "Insufficient balance",
    ),
    (Respond(403, {"code": 403, "msg": "forbidden model"}), PermissionDeniedError, "forbidden"),
    (Respond(403, {"code": 403, "message": "余额不足"}), InsufficientBalanceError, "余额不足"),
    (
        Respond(400, {"error": {"message": "size is invalid", "code": "invalid_size"}}),
        BadRequestError,
        "size is invalid",
    ),
    (Respond(400, {"message": "quota exceeded"}), InsufficientBalanceError, "quota exceeded"),
    (Respond(429, {"error": "slow"}, headers={"Retry-After": "600"}), RateLimitedError, "600 s"),
    (Respond(404, None), APIError, "base URL"),
    (Respond(418, "I am a teapot", content_type="text/plain"), APIError, "teapot"),
]


@pytest.mark.parametrize(("fault", "error_type", "text"), CREATE_ERRORS)
async def test_create_error_bodies_map_to_typed_errors_with_the_service_message(
    client: NanoBanana, sim: Simulator, fault: Respond, error_type: type[APIError], text: str
) -> None:
    """JSON `error` strings and objects, `code`+`msg` objects and text all map by status."""
    sim.faults.push("create", fault)
    with pytest.raises(error_type) as caught:
        await client.submit("a fox")
    error = caught.value
    assert type(error) is error_type
    assert error.status == fault.status
    assert text in str(error)
    assert sim.counters.create_requests == 1
    assert sim.counters.creates == 0


async def test_a_retry_after_beyond_the_cap_raises_at_once_with_the_delay(
    client: NanoBanana, sim: Simulator
) -> None:
    """A 429 asking for more than max_retry_after (60 s) is not slept on: RateLimitedError."""
    sim.faults.push("create", Respond(429, {"error": "slow"}, headers={"Retry-After": "300"}))
    with pytest.raises(RateLimitedError) as caught:
        await client.submit("a fox")
    assert caught.value.retry_after == 300.0
    assert sim.counters.create_requests == 1


QUERY_ERRORS: list[tuple[Respond, type[Exception], str]] = [
    (
        Respond(502, "<html><head><title>502 Bad Gateway</title></head></html>"),
        ServerError,
        "502 Bad Gateway",
    ),
    (Respond(503, None), ServerError, "empty body"),
    (Respond(200, {"code": 401, "msg": "token invalid"}), AuthenticationError, "token invalid"),
    (Respond(404, {"code": 404, "message": "task not found"}), TaskNotFoundError, "not found"),
    (Respond(200, {"id": "../etc", "status": "queued"}), MalformedResponseError, "not safe"),
    (Respond(200, "<html>maintenance</html>"), MalformedResponseError, "not JSON"),
]


@pytest.mark.parametrize(("fault", "error_type", "text"), QUERY_ERRORS)
async def test_query_error_bodies_map_to_typed_errors(
    client: NanoBanana, sim: Simulator, fault: Respond, error_type: type[Exception], text: str
) -> None:
    """Gateway HTML, empty bodies and 200-with-error-code answers to a query are typed."""
    task = await client.submit("a fox")
    sim.faults.push("poll", fault)
    with pytest.raises(error_type, match=text):
        await client.get_task(task.id)
    assert sim.counters.polls == 1


async def test_unknown_task_id_is_task_not_found_with_the_id(client: NanoBanana) -> None:
    """The simulator's own 404 for an unknown id becomes TaskNotFoundError(id)."""
    with pytest.raises(TaskNotFoundError) as caught:
        await client.get_task("doesnotexist")
    assert caught.value.task_id == "doesnotexist"
    assert caught.value.status == 404


async def test_wrong_key_is_an_authentication_error_counted_by_the_service(sim: Simulator) -> None:
    """The simulator rejects the key; the SDK says so with a typed error and no retry."""
    async with NanoBanana(api_key="wrong-key", base_url=sim.base_url) as client:
        with pytest.raises(AuthenticationError):
            await client.submit("a fox")
    assert sim.counters.auth_failures == 1
    assert sim.counters.creates == 0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
@pytest.mark.parametrize("create_first", [False, True])
async def test_server_error_on_create_is_uncertain_and_never_resent(
    client: NanoBanana, sim: Simulator, status: int, create_first: bool
) -> None:
    """A 5xx to a create may hide a billed task: SubmissionUncertainError, one request only."""
    sim.faults.push("create", Respond(status, "<html>oops</html>", create_first=create_first))
    with pytest.raises(SubmissionUncertainError) as caught:
        await client.submit("a fox")
    assert caught.value.request is not None
    assert caught.value.request.prompt == "a fox"
    assert sim.counters.create_requests == 1
    assert sim.counters.creates == (1 if create_first else 0)


async def test_reset_after_create_is_uncertain_and_not_retried(
    client: NanoBanana, sim: Simulator
) -> None:
    """The server created the task, then dropped the connection: one job, reported uncertain."""
    sim.faults.push("create", ResetConnection(create_first=True))
    with pytest.raises(SubmissionUncertainError, match="may exist and be billed"):
        await client.submit("a fox")
    assert sim.counters.creates == 1
    assert sim.counters.create_requests == 1


async def test_malformed_create_answer_says_it_may_be_billed(
    client: NanoBanana, sim: Simulator
) -> None:
    """A 200 without a usable id is MalformedResponseError with may_be_billed and an excerpt."""
    sim.faults.push("create", Respond(200, {"status": "queued"}, create_first=True))
    with pytest.raises(MalformedResponseError) as caught:
        await client.submit("a fox")
    assert caught.value.may_be_billed
    assert caught.value.body_excerpt is not None
    assert "queued" in caught.value.body_excerpt
    assert sim.counters.create_requests == 1


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_redirected_create_is_not_followed_and_names_the_host(
    client: NanoBanana, sim: Simulator, status: int
) -> None:
    """A redirect on a paid create raises naming the Location host; nothing follows it."""
    sim.faults.push("create", Redirect(status, "https://elsewhere.example/v1/banana/images"))
    with pytest.raises(APIError, match=r"elsewhere\.example") as caught:
        await client.submit("a fox")
    assert caught.value.status == status
    assert sim.counters.create_requests == 1
    assert sim.counters.creates == 0


async def test_connection_refused_on_create_says_not_submitted_not_billed() -> None:
    """A port with nothing listening: NetworkError(sent=False) that says nothing was billed."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with NanoBanana(api_key="k", base_url=f"http://127.0.0.1:{port}/api") as client:
        with pytest.raises(NetworkError) as caught:
            await client.submit("a fox")
    assert caught.value.sent is False
    assert "not submitted, not billed" in str(caught.value)


def test_error_classes_are_exported_under_the_public_names() -> None:
    """Every documented error class is importable from the package and shares one base."""
    import nanobanana_async as nb

    names = [
        "InvalidRequestError",
        "AuthenticationError",
        "InsufficientBalanceError",
        "PermissionDeniedError",
        "RateLimitedError",
        "TaskNotFoundError",
        "ServerError",
        "NetworkError",
        "MalformedResponseError",
        "TaskFailedError",
        "TaskTimeoutError",
        "SubmissionUncertainError",
        "ResultExpiredError",
    ]
    classes = [getattr(nb, name) for name in names]
    assert all(issubclass(cls, nb.NanoBananaError) for cls in classes)
    assert issubclass(nb.InvalidRequestError, ValueError)
    assert issubclass(nb.TaskTimeoutError, TimeoutError)
    assert [cls.__name__ for cls in classes] == names
    assert all(cls.__module__ == "nanobanana_async" for cls in classes)
