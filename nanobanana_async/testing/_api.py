"""The API origin: create a task, query it, and the simulator's own introspection routes.

Routing is a couple of string comparisons on the path (no router, no
middleware) so each request costs O(1) and nothing is logged per request.
"""

from __future__ import annotations

import hmac
import json
import math
import time

from aiohttp import web

from ._delivery import Delivery, Reply, json_reply
from ._faults import Delay, Fault, FaultQueues, Redirect, ResetConnection, Respond, Slow, Truncate
from ._state import SimState, SimTask
from ._validation import Invalid, validate_create

#: The service's query answer spells some models differently from the create request.
_REPORTED_MODEL = {"nano-banana-2": "NanoBanana2"}
_CREATE = "/v1/banana/images"
_RESULT = "/v1/result/"
_COUNTERS = "/_sim/counters"
_TASKS = "/_sim/tasks"
_FAULTS = "/_sim/faults"

_UNAUTHORIZED = json_reply(
    401,
    {
        "error": {
            "message": "Invalid or missing API key",
            "type": "authentication_error",
            "code": "invalid_api_key",
        }
    },
)
_NO_BALANCE = json_reply(
    402, {"error": {"message": "Insufficient balance", "type": "insufficient_balance"}}
)
_NOT_JSON = json_reply(
    400,
    {
        "error": {
            "message": "the request body must be valid JSON",
            "type": "invalid_request_error",
            "code": "invalid_json",
        }
    },
)
_TASK_NOT_FOUND = json_reply(404, {"code": 404, "message": "task not found"})
_NOT_FOUND = json_reply(404, {"code": 404, "message": "not found"})


def _mangler(fault: Fault | None) -> Truncate | Slow | None:
    return fault if isinstance(fault, Truncate | Slow) else None


def _monotonic_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def task_summary(task: SimTask, now: float) -> dict[str, object]:
    """One task's record for ``/_sim/tasks`` (monotonic times of the simulator's machine)."""
    return {
        "id": task.id,
        "prompt": task.request.get("prompt"),
        "model": task.model,
        "resolution": task.resolution,
        "size": task.size,
        "outcome": task.outcome,
        "status": task.status_at(now),
        "created_at": task.created_at,
        "starts_at": task.starts_at,
        "completes_at": _monotonic_or_none(task.completes_at),
        "polls": task.polls,
        "poll_times": task.poll_times,
        "downloads": task.downloads,
        "downloaded_at": task.downloaded_at,
    }


class ApiOrigin:
    """The request handler of the API origin (``{base_path}/v1/...`` plus ``/_sim/...``)."""

    def __init__(
        self, state: SimState, faults: FaultQueues, delivery: Delivery, base_path: str
    ) -> None:
        self._state = state
        self._faults = faults
        self._delivery = delivery
        self._base = base_path
        self._key = state.api_key.encode()

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        """Dispatch one request by method and path."""
        path = request.path
        if path.startswith(self._base):
            rest = path[len(self._base) :]
            method = request.method
            if rest == _CREATE and method == "POST":
                return await self._create(request)
            if rest.startswith(_RESULT) and method == "GET":
                return await self._poll(request, rest[len(_RESULT) :])
            if rest in (_COUNTERS, _TASKS, _FAULTS) and method == "GET":
                return self._introspect(request, rest)
        self._state.record("api", request.method, path, request.headers, "other")
        return web.Response(status=404, body=_NOT_FOUND.body, content_type="application/json")

    def _authorized(self, request: web.BaseRequest) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._key)

    async def _create(self, request: web.BaseRequest) -> web.StreamResponse:
        state = self._state
        state.counters.create_requests += 1
        state.record("api", request.method, request.path, request.headers, "create")
        fault = self._faults.pop("create")
        delivery = self._delivery
        if isinstance(fault, Redirect):
            return delivery.replace(request, fault)
        if isinstance(fault, Respond | ResetConnection) and not fault.create_first:
            return delivery.replace(request, fault)
        if (
            isinstance(fault, Delay)
            and not fault.create_first
            and not await delivery.pause(request, fault.seconds)
        ):
            return delivery.drop(request)
        reply, task = await self._process_create(request)
        if isinstance(fault, Respond | ResetConnection):
            self._unacknowledged(task)
            return delivery.replace(request, fault)
        if (
            isinstance(fault, Delay)
            and fault.create_first
            and not await delivery.pause(request, fault.seconds)
        ):
            self._unacknowledged(task)
            return delivery.drop(request)
        response, delivered = await delivery.send(request, reply, _mangler(fault))
        if delivered and task is not None:
            state.begin_flight(task)
        else:
            self._unacknowledged(task)
        return response

    def _unacknowledged(self, task: SimTask | None) -> None:
        """A task was created but the client will never read its id."""
        if task is not None:
            self._state.counters.unacknowledged_creates += 1

    async def _process_create(self, request: web.BaseRequest) -> tuple[Reply, SimTask | None]:
        state = self._state
        if not self._authorized(request):
            state.counters.auth_failures += 1
            return _UNAUTHORIZED, None
        try:
            body = json.loads(await request.read())
        except (ValueError, RecursionError):
            state.counters.bad_requests += 1
            return _NOT_JSON, None
        fields = validate_create(body)
        if isinstance(fields, Invalid):
            state.counters.bad_requests += 1
            return json_reply(400, fields.body()), None
        if state.balance is not None and state.balance <= 0:
            return _NO_BALANCE, None
        task = state.create_task(body, fields.model, fields.prompt, fields.resolution, fields.size)
        created = {
            "id": task.id,
            "object": "image",
            "created": task.created,
            "model": task.model,
            "status": "queued",
            "amount": 0.04,
        }
        return json_reply(200, created), task

    async def _poll(self, request: web.BaseRequest, task_id: str) -> web.StreamResponse:
        state = self._state
        state.counters.polls += 1
        state.record("api", request.method, request.path, request.headers, "poll")
        now = time.monotonic()
        task = state.tasks.get(task_id)
        if task is not None:
            task.polls += 1
            task.poll_times.append(now)
        fault = self._faults.pop("poll")
        delivery = self._delivery
        if isinstance(fault, Respond | Redirect | ResetConnection):
            return delivery.replace(request, fault)
        if isinstance(fault, Delay):
            if not await delivery.pause(request, fault.seconds):
                return delivery.drop(request)
            now = time.monotonic()
        finished = False
        if not self._authorized(request):
            state.counters.auth_failures += 1
            reply = _UNAUTHORIZED
        elif task is None:
            reply = _TASK_NOT_FOUND
        else:
            reply, finished = self._status_reply(task, now)
        response, delivered = await delivery.send(request, reply, _mangler(fault))
        if delivered and finished and task is not None:
            state.end_flight(task)
        return response

    def _status_reply(self, task: SimTask, now: float) -> tuple[Reply, bool]:
        """The query answer, and whether it tells the client there is nothing to download."""
        status = task.status_at(now)
        image_url = None
        if status == "completed" and task.has_image:
            image_url = self._state.image_url(task)
        payload = {
            "id": task.id,
            "object": "image.generation",
            "created": task.created,
            "model": _REPORTED_MODEL.get(task.model, task.model),
            "status": status,
            "image_url": image_url,
            "error": task.error if status == "failed" else None,
        }
        finished = status == "failed" or (status == "completed" and image_url is None)
        return json_reply(200, payload), finished

    def _introspect(self, request: web.BaseRequest, route: str) -> web.StreamResponse:
        state = self._state
        state.record("api", request.method, request.path, request.headers, "other")
        if route == _COUNTERS:
            return web.json_response(state.counters.as_dict())
        if route == _FAULTS:
            return web.json_response(self._faults.injected.as_dict())
        now = time.monotonic()
        return web.json_response([task_summary(task, now) for task in state.tasks.values()])
