"""The file host: a separate origin serving each completed task's PNG.

It is a plain download host, like a CDN: it needs no credentials, and it counts
requests that carry an Authorization or Cookie header anyway, because a correct
SDK never sends them here.
"""

from __future__ import annotations

import time

from aiohttp import web

from ._delivery import Delivery, Reply, json_reply
from ._faults import Delay, FaultQueues, Redirect, ResetConnection, Respond, Slow, Truncate
from ._png import ImageCache
from ._state import SimState

_PREFIX = "/files/"
_SUFFIX = ".png"
_NOT_FOUND = json_reply(404, {"error": "not found"})
_EXPIRED = json_reply(410, {"error": "expired"})


class FileHost:
    """The request handler of the file-host origin (``GET /files/{id}.png``)."""

    def __init__(
        self, state: SimState, faults: FaultQueues, delivery: Delivery, images: ImageCache
    ) -> None:
        self._state = state
        self._faults = faults
        self._delivery = delivery
        self._images = images

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        """Serve one download, or a 404 for anything else."""
        path = request.path
        if request.method == "GET" and path.startswith(_PREFIX):
            return await self._download(request, path[len(_PREFIX) :])
        self._state.record("files", request.method, path, request.headers, "other")
        return web.Response(status=404, body=_NOT_FOUND.body, content_type="application/json")

    async def _download(self, request: web.BaseRequest, name: str) -> web.StreamResponse:
        state = self._state
        counters = state.counters
        headers = request.headers
        counters.downloads += 1
        if "Authorization" in headers or "Cookie" in headers:
            counters.file_host_auth_headers += 1
        state.record("files", request.method, request.path, headers, "download")
        fault = self._faults.pop("download")
        delivery = self._delivery
        if isinstance(fault, Respond | Redirect | ResetConnection):
            return delivery.replace(request, fault)
        if isinstance(fault, Delay) and not await delivery.pause(request, fault.seconds):
            return delivery.drop(request)
        mangler = fault if isinstance(fault, Truncate | Slow) else None
        task_id = name.removesuffix(_SUFFIX)
        task = state.tasks.get(task_id)
        now = time.monotonic()
        if task is None or not task.has_image or task.status_at(now) != "completed":
            response, _ = await delivery.send(request, _NOT_FOUND, mangler)
            return response
        task.downloads += 1
        if state.is_expired(task, now):
            # The client's job ends here (it may re-poll once, then give up).
            state.end_flight(task)
            response, _ = await delivery.send(request, _EXPIRED, mangler)
            return response
        image = Reply(200, self._images.for_task(task.id, task.size, task.prompt), "image/png")
        response, delivered = await delivery.send(request, image, mangler, confirm=True)
        if delivered:
            counters.downloads_completed += 1
            if task.downloaded_at is None:
                task.downloaded_at = time.monotonic()
            state.end_flight(task)
        return response
