"""A web app on one NanoBanana client: a batch page fed by server-sent events, and one-image calls.

The process opens one client when it starts and closes it when it stops
(``cleanup_ctx``); every request handler shares it, so its connection pool
and job slots bound the whole app, however many browsers are connected.

- ``GET /`` serves the page. Its form posts prompts to ``POST /batches`` and
  then opens ``GET /batches/{id}/events``, a stream of server-sent events:
  ``submitted``, ``status``, ``retrying`` and ``rate-limited`` while jobs run,
  ``image`` (with the URL of the image) or ``failed`` (with the reason) as
  each one ends, and ``done`` at the end.
- ``POST /generate`` (``prompt`` in a form or JSON) answers with one PNG.

**What a browser that goes away costs.** The app runs with aiohttp's
``handler_cancellation``, so a closed tab or a dropped connection cancels its
handler, and with it every job the handler started. For a job whose create
was already sent, the image was paid for: the SDK waits a few seconds
(``RetryPolicy.cancel_grace``) for the service to answer, so the task id is
logged at WARNING, but the image is never fetched. A batch whose page is
closed stops the same way: finished images stay available, unsent prompts
are never sent. Nothing is ever sent twice.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio
import attrs
from aiohttp import web

from nanobanana_async import (
    BatchFinished,
    Event,
    EventStream,
    Failed,
    NanoBanana,
    NanoBananaError,
    OutcomeStream,
    RateLimited,
    Retrying,
    Saved,
    StatusChanged,
    Submitted,
    Uncertain,
)

__all__ = ["CLIENT", "MAX_PROMPTS", "make_app"]

#: Prompts one batch may hold: a page for a few images, not a bulk tool.
MAX_PROMPTS = 12
MAX_PROMPT_LENGTH = 2000
PAGE = Path(__file__).with_name("index.html")


@attrs.define
class _Batch:
    """Prompts posted from the page, and the images of their run (kept while the app lives)."""

    prompts: list[str]
    images: dict[int, bytes] = attrs.field(factory=dict)
    stored: dict[int, anyio.Event] = attrs.field(factory=dict)
    started: bool = False

    def slot(self, index: int) -> anyio.Event:
        return self.stored.setdefault(index, anyio.Event())


CLIENT = web.AppKey("client", NanoBanana)
BATCHES = web.AppKey("batches", dict[str, _Batch])


def make_app(open_client: Callable[[], AbstractAsyncContextManager[NanoBanana]]) -> web.Application:
    """The app; ``open_client()`` gives the process's one client (opened at startup)."""
    app = web.Application()

    async def one_client(app: web.Application) -> AsyncIterator[None]:
        async with open_client() as client:
            app[CLIENT] = client
            app[BATCHES] = {}
            yield

    app.cleanup_ctx.append(one_client)
    app.router.add_get("/", _page)
    app.router.add_post("/batches", _start_batch)
    app.router.add_get("/batches/{id}/events", _batch_events)
    app.router.add_get("/batches/{id}/images/{index}", _batch_image)
    app.router.add_post("/generate", _generate)
    return app


async def _page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(PAGE)


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


async def _prompts_of(request: web.Request) -> list[str]:
    if request.content_type == "application/json":
        body = await request.json()
        text = body.get("prompts", "") if isinstance(body, dict) else ""
    else:
        text = (await request.post()).get("prompts", "")
    if not isinstance(text, str):
        raise _bad("prompts must be text, one prompt per line")
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise _bad("give at least one prompt, one per line")
    if len(prompts) > MAX_PROMPTS:
        raise _bad(f"at most {MAX_PROMPTS} prompts per batch, got {len(prompts)}")
    if any(len(prompt) > MAX_PROMPT_LENGTH for prompt in prompts):
        raise _bad(f"a prompt may be at most {MAX_PROMPT_LENGTH} characters")
    return prompts


async def _start_batch(request: web.Request) -> web.Response:
    """Register a batch; its page then opens its events, which run it."""
    prompts = await _prompts_of(request)
    batch_id = secrets.token_urlsafe(8)
    request.app[BATCHES][batch_id] = _Batch(prompts)
    return web.json_response({"id": batch_id, "prompts": prompts}, status=201)


def _message(kind: str, data: Mapping[str, object]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


async def _batch_events(request: web.Request) -> web.StreamResponse:
    """Run the batch and stream what happens to it as server-sent events (once per batch)."""
    batch = request.app[BATCHES].get(request.match_info["id"])
    if batch is None:
        raise web.HTTPNotFound(text="no such batch")
    if batch.started:
        raise web.HTTPConflict(text="this batch is already running or finished")
    batch.started = True
    client = request.app[CLIENT]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    async with (
        client.events() as events,
        client.generate_many(batch.prompts) as outcomes,
        anyio.create_task_group() as group,
    ):
        group.start_soon(_keep_images, outcomes, batch)
        await _forward(events, outcomes.batch, batch, response, request.match_info["id"])
    return response


async def _keep_images(outcomes: OutcomeStream, batch: _Batch) -> None:
    async for outcome in outcomes:
        if outcome.data is not None:
            batch.images[outcome.index] = outcome.data
        batch.slot(outcome.index).set()


async def _forward(
    events: EventStream, number: int, batch: _Batch, response: web.StreamResponse, batch_id: str
) -> None:
    """Write this batch's events to the page until its BatchFinished."""
    async for event in events:
        if event.batch != number:
            continue
        message = await _as_message(event, batch, batch_id)
        if message is not None:
            await response.write(message)
        if isinstance(event, BatchFinished):
            return


async def _as_message(event: Event, batch: _Batch, batch_id: str) -> bytes | None:
    base = {"index": event.index, "task_id": event.task_id}
    if isinstance(event, Submitted):
        return _message("submitted", base)
    if isinstance(event, StatusChanged):
        return _message("status", {**base, "status": event.status.value})
    if isinstance(event, Retrying):
        return _message("retrying", {**base, "operation": event.operation, "cause": event.cause})
    if isinstance(event, RateLimited):
        return _message("rate-limited", {**base, "retry_after": event.retry_after})
    if isinstance(event, Saved) and event.index is not None:
        await batch.slot(event.index).wait()  # the bytes come with the outcome, just after
        url = f"/batches/{batch_id}/images/{event.index}"
        return _message("image", {**base, "url": url, "prompt": batch.prompts[event.index]})
    if isinstance(event, Failed | Uncertain):
        reason = f"{type(event.error).__name__}: {event.error}"
        prompt = batch.prompts[event.index] if event.index is not None else None
        return _message("failed", {**base, "reason": reason, "prompt": prompt})
    if isinstance(event, BatchFinished):
        return _message("done", {"succeeded": event.succeeded, "failed": event.failed})
    return None


async def _batch_image(request: web.Request) -> web.Response:
    batch = request.app[BATCHES].get(request.match_info["id"])
    try:
        index = int(request.match_info["index"])
    except ValueError:
        raise web.HTTPNotFound() from None
    if batch is None or index not in batch.images:
        raise web.HTTPNotFound(text="no such image")
    return web.Response(body=batch.images[index], content_type="image/png")


async def _generate(request: web.Request) -> web.Response:
    """One image per request; a client that leaves cancels it (see the module docstring)."""
    if request.content_type == "application/json":
        body = await request.json()
        prompt = body.get("prompt") if isinstance(body, dict) else None
    else:
        prompt = (await request.post()).get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _bad("give a prompt")
    client = request.app[CLIENT]
    try:
        result = await client.generate(prompt.strip())
        data = await result.read()
    except NanoBananaError as exc:
        return web.json_response({"error": type(exc).__name__, "reason": str(exc)}, status=502)
    return web.Response(body=data, content_type="image/png")
