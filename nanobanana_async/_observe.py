"""Where jobs report what happens: counted always, turned into events only when someone listens.

The client owns one ``Observer``. Jobs, the retry layer and the batch engine
call its report methods (``submitted``, ``retrying``, ``saved``...): each
bumps the counters behind ``client.stats()`` and, only when a subscriber or
an ``events()`` reader is registered, builds the event and hands it on. Sync
subscribers run in the reporting task; async ones, and ``events()`` readers,
read from a bounded buffer of their own, so a slow one loses its oldest
events (and is told how many) instead of slowing the jobs.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

from anyio.abc import TaskGroup

from ._errors import NanoBananaError, RateLimitedError, UsageError
from ._events import (
    BatchFinished,
    BatchStarted,
    Completed,
    Event,
    EventsDropped,
    Failed,
    HeldElsewhere,
    RateLimited,
    Retrying,
    Saved,
    Skipped,
    StatusChanged,
    Submitted,
    Uncertain,
)
from ._models import Task, TaskStatus
from ._stats import StatsRecorder

__all__ = ["DEFAULT_EVENT_BUFFER", "EventStream", "JobTrace", "Observer", "Subscriber"]

from ._logs import logger

#: Events an ``events()`` reader or an async subscriber may fall behind by before losing some.
DEFAULT_EVENT_BUFFER = 10_000

#: A plain or ``async`` callable taking each event (its return value is ignored).
Subscriber = Callable[[Event], object] | Callable[[Event], Awaitable[object]]


class JobTrace:
    """One job as its events name it: batch and index, the request's kind, its task once known."""

    __slots__ = ("batch", "index", "live", "model", "resolution", "sent_at", "status", "task_id")

    def __init__(
        self,
        *,
        model: str | None,
        resolution: str | None,
        batch: int | None = None,
        index: int | None = None,
        task_id: str | None = None,
    ) -> None:
        self.batch = batch
        self.index = index
        self.model = model
        self.resolution = resolution
        self.task_id = task_id
        self.sent_at: float | None = None
        self.status: TaskStatus | None = None
        self.live = False  # a job of generate or generate_many, counted in the stats' states

    def fields(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "index": self.index,
            "task_id": self.task_id,
            "model": self.model,
            "resolution": self.resolution,
        }


class EventStream:
    """``client.events()``: the client's events from the moment it was called, as an async iterator.

    Holds at most ``buffer`` unread events; past that the oldest are dropped
    and the next read returns ``EventsDropped(count=...)`` first. Ends when the
    client closes; ``aclose()`` (or leaving ``async with``) stops it sooner, and
    is how a reader that stops early lets go of it (the client holds it until then).
    """

    def __init__(self, observer: Observer, buffer: int) -> None:
        if not isinstance(buffer, int) or isinstance(buffer, bool) or buffer < 1:
            raise UsageError(f"events(buffer=...) must be a positive int, got {buffer!r}")
        self._observer = observer
        self._events: collections.deque[Event] = collections.deque(maxlen=buffer)
        self._dropped = 0
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def push(self, event: Event) -> None:
        """Buffer one event (called by the observer, in the reporting task)."""
        if self._closed:
            return
        events = self._events
        if len(events) == events.maxlen:
            self._dropped += 1
        events.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def end(self) -> None:
        """No more events will come: readers drain what is buffered, then stop."""
        self._closed = True
        self._observer._forget(self)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._dropped:
                count, self._dropped = self._dropped, 0
                return EventsDropped(at=time.monotonic(), count=count)
            if self._events:
                return self._events.popleft()
            if self._closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def aclose(self) -> None:
        """Stop reading: unregister, and drop what was not read."""
        self.end()
        self._events.clear()
        self._dropped = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class Observer:
    """The client's counters and its event subscribers; jobs report here."""

    def __init__(self, *, poll_pace: Callable[[], float | None]) -> None:
        self.stats = StatsRecorder(poll_pace=poll_pace)
        self._sinks: list[Callable[[Event], None]] = []
        self._streams: list[EventStream] = []
        self._failing: set[int] = set()
        self.listening = False
        self._batches = 0

    # -- registration ---------------------------------------------------------------

    def _add_sink(self, sink: Callable[[Event], None]) -> None:
        self._sinks.append(sink)
        self.listening = True

    def _remove_sink(self, sink: Callable[[Event], None]) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)
        self.listening = bool(self._sinks)

    def subscribe(
        self, subscriber: Subscriber, *, host: TaskGroup | None, buffer: int
    ) -> Callable[[], None]:
        """Register ``subscriber``; the returned callable unregisters it (safe to call twice)."""
        if not callable(subscriber):
            raise UsageError(f"subscribe() takes a callable, got {type(subscriber).__name__}")
        is_async = inspect.iscoroutinefunction(subscriber) or (
            not inspect.isroutine(subscriber)
            and inspect.iscoroutinefunction(type(subscriber).__call__)
        )
        if not is_async:
            sink = self._guarded(subscriber)
            self._add_sink(sink)
            return lambda: self._remove_sink(sink)
        if host is None:
            raise UsageError(
                "an async subscriber runs in the client's task group: subscribe it inside "
                "'async with NanoBanana(...) as client'"
            )
        stream = self.open_stream(buffer)
        host.start_soon(self._pump, stream, subscriber)
        return stream.end

    def open_stream(self, buffer: int) -> EventStream:
        stream = EventStream(self, buffer)
        self._streams.append(stream)
        self._add_sink(stream.push)
        return stream

    def _forget(self, stream: EventStream) -> None:
        """An ended stream: no more events for it, and no reference kept to it."""
        self._remove_sink(stream.push)
        if stream in self._streams:
            self._streams.remove(stream)

    async def _pump(self, stream: EventStream, subscriber: Subscriber) -> None:
        async for event in stream:
            try:
                await cast("Awaitable[object]", subscriber(event))
            except Exception:
                self._report_failure(subscriber)

    def _guarded(self, subscriber: Callable[[Event], Any]) -> Callable[[Event], None]:
        def deliver(event: Event) -> None:
            try:
                subscriber(event)
            except Exception:
                self._report_failure(subscriber)

        return deliver

    def _report_failure(self, subscriber: object) -> None:
        if id(subscriber) in self._failing:
            return
        self._failing.add(id(subscriber))
        logger.warning(
            "event subscriber %r raised; it stays subscribed and further errors from it are "
            "not logged",
            subscriber,
            exc_info=True,
        )

    def close(self) -> None:
        """The client closed: every events() reader ends once it has read what it holds."""
        for stream in tuple(self._streams):
            stream.end()

    def _emit(self, event: Event) -> None:
        for sink in tuple(self._sinks):
            sink(event)

    # -- reports from jobs ---------------------------------------------------------

    def new_batch(self) -> int:
        """A number for the next ``generate_many`` call of this client."""
        self._batches += 1
        return self._batches

    def batch_started(self, batch: int) -> None:
        self.stats.batches_started += 1
        if self.listening:
            self._emit(BatchStarted(at=time.monotonic(), batch=batch))

    def batch_finished(self, batch: int, *, outcomes: int, succeeded: int, skipped: int) -> None:
        if self.listening:
            self._emit(
                BatchFinished(
                    at=time.monotonic(),
                    batch=batch,
                    outcomes=outcomes,
                    succeeded=succeeded,
                    failed=outcomes - succeeded - skipped,
                    skipped=skipped,
                )
            )

    def job_started(self, job: JobTrace) -> None:
        job.live = True
        self.stats.in_flight += 1
        self.stats.enter(job.status)

    def job_ended(self, job: JobTrace) -> None:
        job.live = False
        self.stats.in_flight -= 1
        self.stats.leave(job.status)

    def _moved(self, job: JobTrace, status: TaskStatus) -> None:
        if job.live:
            self.stats.leave(job.status)
            self.stats.enter(status)
        job.status = status

    def sending(self, job: JobTrace) -> None:
        job.sent_at = time.monotonic()

    def submitted(self, job: JobTrace, task: Task) -> None:
        job.task_id = task.id
        self.stats.submitted += 1
        done = task.status is TaskStatus.COMPLETED
        if not done:
            self._moved(job, task.status)
        if self.listening:
            self._emit(Submitted(at=time.monotonic(), **job.fields()))
        if done:
            self.status_seen(job, task)  # done already in its create's answer

    def polled(self) -> None:
        self.stats.polls += 1

    def status_seen(self, job: JobTrace, task: Task) -> None:
        """A poll's answer: StatusChanged when it moved, Completed once done."""
        status = task.status
        if status is job.status:
            return
        self._moved(job, status)
        if status is TaskStatus.COMPLETED:
            now = time.monotonic()
            latency = None if job.sent_at is None else now - job.sent_at
            self.stats.completed(job.model, job.resolution, latency)
            if self.listening:
                self._emit(Completed(at=now, latency=latency, **job.fields()))
        elif status is not TaskStatus.FAILED and self.listening:
            self._emit(StatusChanged(at=time.monotonic(), status=status, **job.fields()))

    def retrying(
        self,
        job: JobTrace | None,
        operation: str,
        attempt: int,
        delay: float,
        error: NanoBananaError,
    ) -> None:
        self.stats.retried(type(error).__name__)
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "%s attempt %d failed (%s); retrying in %.2f s",
                operation,
                attempt,
                type(error).__name__,
                delay,
            )
        if self.listening:
            self._emit(
                Retrying(
                    at=time.monotonic(),
                    operation=operation,
                    attempt=attempt,
                    delay=delay,
                    cause=type(error).__name__,
                    message=str(error),
                    **(job.fields() if job is not None else {}),
                )
            )

    def rate_limited(
        self, job: JobTrace | None, operation: str, error: RateLimitedError, *, scope: str
    ) -> None:
        self.stats.rate_limited += 1
        if logger.isEnabledFor(logging.INFO):
            wait = (
                "no Retry-After"
                if error.retry_after is None
                else f"Retry-After {error.retry_after:g} s"
            )
            waits = "every create of the client waits" if scope == "creates" else "this task waits"
            logger.info("the service answered 429 to a %s (%s); %s", operation, wait, waits)
        if self.listening:
            self._emit(
                RateLimited(
                    at=time.monotonic(),
                    operation=operation,
                    scope=scope,
                    retry_after=error.retry_after,
                    **(job.fields() if job is not None else {}),
                )
            )

    def paused(self, seconds: float) -> None:
        self.stats.paused_seconds += seconds

    def downloaded(self, size: int) -> None:
        self.stats.bytes_downloaded += size

    def saved(
        self, job: JobTrace, path: Path | None, size: int | None, *, resumed: bool = False
    ) -> None:
        self.stats.saved += 1
        if self.listening:
            self._emit(
                Saved(at=time.monotonic(), path=path, size=size, resumed=resumed, **job.fields())
            )

    def failed(self, job: JobTrace, error: NanoBananaError, *, resumed: bool = False) -> None:
        self.stats.failed += 1
        if self.listening:
            self._emit(Failed(at=time.monotonic(), error=error, resumed=resumed, **job.fields()))

    def skipped(self, job: JobTrace, error: NanoBananaError) -> None:
        self.stats.skipped += 1
        if self.listening:
            self._emit(Skipped(at=time.monotonic(), error=error, **job.fields()))

    def held_elsewhere(self, job: JobTrace) -> None:
        self.stats.held_elsewhere += 1
        if self.listening:
            self._emit(HeldElsewhere(at=time.monotonic(), **job.fields()))

    def uncertain(self, job: JobTrace, error: NanoBananaError, *, resumed: bool = False) -> None:
        self.stats.uncertain += 1
        if not resumed:
            logger.info("a create may have been billed without its answer: %s", error)
        if self.listening:
            self._emit(Uncertain(at=time.monotonic(), error=error, resumed=resumed, **job.fields()))
