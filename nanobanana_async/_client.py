"""The NanoBanana client: its lifecycle and the one-job calls submit, get_task, wait, generate."""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self

import anyio

from ._batch import BatchJob
from ._download import DEFAULT_MAX_IMAGE_BYTES, Downloader
from ._errors import (
    ConfigurationError,
    InvalidRequestError,
    MalformedResponseError,
    TaskFailedError,
    UsageError,
)
from ._http import API_KEY_ENV, DEFAULT_BASE_URL, HTTPClient, Timeouts
from ._jobs import JobOptions, JobRunner
from ._journal import Journal
from ._limits import DEFAULT_MAX_CONCURRENCY, DEFAULT_MAX_DOWNLOADS, Limits, positive_int
from ._models import (
    ImageRequest,
    ImageResult,
    Task,
    TaskStatus,
    as_request,
    validate_task_id,
)
from ._observe import DEFAULT_EVENT_BUFFER, EventStream, JobTrace, Observer, Subscriber
from ._polling import AdaptivePolling, PollingPolicy
from ._resume import BatchJournal
from ._retry import Retrier, RetryPolicy
from ._scheduler import OutcomeStream
from ._stats import Stats
from ._urls import check_base_url

if TYPE_CHECKING:
    from aiohttp.abc import AbstractResolver
    from anyio.abc import TaskGroup

__all__ = ["NanoBanana"]

BASE_URL_ENV: Final = "NANOBANANA_BASE_URL"
DEFAULT_CONNECTION_LIMIT: Final = 100


def _result_job(task: Task) -> JobTrace:
    """The events of an ImageResult's read or save name its task."""
    return JobTrace(model=task.model, resolution=None, task_id=task.id)


def _caller_task_id(value: object) -> str:
    """A task id the caller passed: refused as bad input (not a bad answer) if unsafe."""
    try:
        return validate_task_id(value)
    except MalformedResponseError as exc:
        raise InvalidRequestError("task_id", value, str(exc)) from None


class NanoBanana:
    """An async client for the Nano Banana service; use it as ``async with NanoBanana() as c``.

    ``api_key`` defaults to ``$NANOBANANA_API_KEY``; ``base_url`` to
    ``$NANOBANANA_BASE_URL`` and then the documented service URL.
    ``max_concurrency`` is the number of job slots, shared by every call on
    this client: ``generate`` holds one from its create until the task's
    final status (its image is read later, through the download limit);
    ``generate_many`` holds one per job until its image is saved or read
    into memory; ``submit`` and ``wait`` are one-call primitives that take
    no slot. ``connection_limit`` bounds connections to the API (a pool
    separate from the job slots). Downloads have a pool of their own, at most
    ``max_concurrent_downloads`` at once, so slow downloads cannot starve
    submissions; a batch reading images into memory holds at most that many
    that its consumer has not taken yet.
    ``polling`` decides when waiting jobs poll (``AdaptivePolling()`` by
    default) and ``retry`` what is retried and how (``RetryPolicy()``).
    ``max_requests_per_second`` caps API calls for users who know their
    quota (by default the client adapts to 429s). ``idempotency_header``
    names a header to carry each submission's client key, for a service that
    deduplicates on it (none is sent by default). Plain ``http://`` is refused
    to non-loopback hosts unless ``allow_insecure_http=True``; proxy variables
    are honoured only with ``trust_env=True``; ``resolver`` is an aiohttp DNS
    resolver to use instead of the system's.

    A client belongs to the event loop it is first used in (a call from
    another raises ``UsageError``); once closed, every call raises
    ``ClientClosedError``: create a new client instead.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        polling: PollingPolicy | None = None,
        retry: RetryPolicy | None = None,
        connection_limit: int = DEFAULT_CONNECTION_LIMIT,
        timeouts: Timeouts | None = None,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        max_concurrent_downloads: int = DEFAULT_MAX_DOWNLOADS,
        max_requests_per_second: float | None = None,
        idempotency_header: str | None = None,
        allow_insecure_http: bool = False,
        trust_env: bool = False,
        resolver: AbstractResolver | None = None,
    ) -> None:
        positive_int("connection_limit", connection_limit)
        positive_int("max_image_bytes", max_image_bytes)
        if polling is not None and not isinstance(polling, PollingPolicy):
            raise ConfigurationError(
                "polling must be a PollingPolicy such as AdaptivePolling() or "
                f"FixedPolling(interval=...), got {type(polling).__name__}"
            )
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        url = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        self.base_url = check_base_url(url, allow_insecure_http=allow_insecure_http)
        self.polling: PollingPolicy = polling if polling is not None else AdaptivePolling()
        self.retry = retry if retry is not None else RetryPolicy()
        self._limits = Limits(
            max_concurrency=max_concurrency,
            max_downloads=max_concurrent_downloads,
            max_requests_per_second=max_requests_per_second,
            sleep=self.retry.sleep,
        )
        self.max_concurrency = self._limits.max_concurrency
        pace = self._limits.poll_pace
        self._observer = Observer(poll_pace=lambda: pace.rate)
        self._http = HTTPClient(
            base_url=self.base_url,
            api_key=key or None,
            pool_limit=connection_limit,
            timeouts=timeouts or Timeouts(),
            trust_env=trust_env,
            allow_insecure_http=allow_insecure_http,
            idempotency_header=idempotency_header,
            resolver=resolver,
        )
        self._runner = JobRunner(
            http=self._http,
            downloader=Downloader(self._http, max_bytes=max_image_bytes),
            retrier=Retrier(self.retry, self._limits, self._observer),
            polling=self.polling,
            limits=self._limits,
            observer=self._observer,
        )
        self._task_group: TaskGroup | None = None

    def __repr__(self) -> str:
        state = "closed" if self._http.closed else "open"
        return (
            f"<NanoBanana base_url={str(self.base_url)!r} max_concurrency={self.max_concurrency} "
            f"polling={self.polling!r} {state}>"
        )

    async def __aenter__(self) -> Self:
        self._http.check_usable()
        if self._task_group is not None:
            raise UsageError("this NanoBanana client is already open in an 'async with' block")
        group = anyio.create_task_group()
        await group.__aenter__()
        self._task_group = group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        group, self._task_group = self._task_group, None
        try:
            if group is not None:
                group.cancel_scope.cancel()
                # Batches never raise into this group, so the body's own exception (if
                # any) propagates as it is, not wrapped in an ExceptionGroup.
                await group.__aexit__(None, None, None)
            return None
        finally:
            with anyio.CancelScope(shield=True):
                await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool. Safe to call twice; the client cannot be used afterwards.

        Called from another event loop than the client's, it raises ``UsageError``
        while the client's own loop is still open (close it there). Readers of
        ``events()`` stop once they have read what they hold.
        """
        await self._http.aclose()
        self._observer.close()

    def subscribe(
        self,
        subscriber: Subscriber,
        *,
        buffer: int = DEFAULT_EVENT_BUFFER,
    ) -> Callable[[], None]:
        """Call ``subscriber`` with every event from now on; returns a callable that unsubscribes.

        A plain function runs in the task that reports the event, so keep it
        quick. An ``async def`` runs in a task of the client's own (subscribe it
        inside ``async with``), reading from a buffer of ``buffer`` events: if
        it falls behind, it loses the oldest and gets ``EventsDropped``. Either
        may raise without harming any job: the first error of each subscriber
        is logged, and it stays subscribed.
        """
        return self._observer.subscribe(subscriber, host=self._task_group, buffer=buffer)

    def events(self, *, buffer: int = DEFAULT_EVENT_BUFFER) -> EventStream:
        """The client's events from now on, as an async iterator (``async for event in ...``).

        Up to ``buffer`` unread events are kept; a reader that falls further
        behind loses the oldest and is next given ``EventsDropped(count=...)``.
        The stream ends when the client closes; leave it early with
        ``async with client.events() as events`` or ``await events.aclose()``.
        """
        return self._observer.open_stream(buffer)

    def stats(self) -> Stats:
        """A snapshot of the client's counters: jobs, polls, retries, 429s, bytes, latency."""
        return self._observer.stats.snapshot()

    @property
    def closed(self) -> bool:
        """True once the client has been closed."""
        return self._http.closed

    async def submit(self, request: ImageRequest | str) -> Task:
        """Create one task (a paid generation) and return it as the service accepted it.

        A bare string is a prompt for the default model. Invalid requests are
        refused locally with ``InvalidRequestError``. A create whose answer was
        lost raises ``SubmissionUncertainError`` and is never resent.
        """
        self._http.check_usable()
        return await self._runner.create(as_request(request))

    async def get_task(self, task_id: str) -> Task:
        """Query a task's status once."""
        self._http.check_usable()
        return await self._http.query(_caller_task_id(task_id))

    async def wait(self, task: Task | str, *, timeout: float | None = None) -> Task:
        """Poll until the task completes or fails, and return the final Task whatever its status.

        ``timeout`` (seconds) bounds the whole wait; past it ``TaskTimeoutError``
        carries the id and last status, and the task may still finish: call
        ``wait`` again to resume.
        """
        self._http.check_usable()
        if isinstance(task, Task):
            return await self._runner.wait(
                task.id, model=task.model, timeout=timeout, status=task.status
            )
        return await self._runner.wait(_caller_task_id(task), timeout=timeout)

    async def generate(
        self,
        prompt: ImageRequest | str,
        *,
        model: str | None = None,
        resolution: str | None = None,
        size: str | None = None,
        image_urls: Iterable[str] = (),
        timeout: float | None = None,
    ) -> ImageResult:
        """Submit one image, wait for it, and return the result to ``read()`` or ``save()``.

        Raises ``TaskFailedError`` (with the task id and the service's reason)
        when generation fails, and ``TaskTimeoutError`` past ``timeout``.
        """
        self._http.check_usable()  # before the job slot: a semaphore of the client's own loop
        if isinstance(prompt, ImageRequest):
            request = prompt
        else:
            request = ImageRequest(
                prompt=prompt,
                model=model,
                resolution=resolution,
                size=size,
                image_urls=tuple(image_urls),
            )
        task = await self._runner.generate(request, timeout=timeout)
        if task.status is TaskStatus.FAILED:
            raise TaskFailedError(task)
        return ImageResult(task, fetcher=self)

    def generate_many(
        self,
        requests: Iterable[ImageRequest | str] | AsyncIterable[ImageRequest | str],
        *,
        save_to: str | os.PathLike[str] | None = None,
        ordered: bool = False,
        download: bool = True,
        timeout: float | None = None,
        overwrite: bool = False,
        journal: str | os.PathLike[str] | Journal | None = None,
        resubmit_uncertain: bool = False,
        max_jobs: int | None = None,
    ) -> OutcomeStream:
        """Generate an image for every input and stream back one ``Outcome`` per input.

        ``requests`` is a sync or async iterable of ``ImageRequest`` or prompt
        strings, read lazily (about ``max_concurrency`` ahead). Outcomes come in
        completion order, or input order with ``ordered=True``. With
        ``save_to`` each image is saved there as ``{prompt-slug}-{hash}.{ext}``
        (``hash``: the start of the request's fingerprint; a repeated identical
        request gets ``-2``, ``-3``, ...), a name that does not change when the
        input's lines move; otherwise its bytes are on ``outcome.data`` (or only
        the URL on ``outcome.task`` with ``download=False``). A failed job is an
        outcome with ``error``, never an exception that ends the stream; an
        exception raised by ``requests`` itself ends it once the jobs already
        created have delivered their outcomes (inputs pulled but not yet sent
        are dropped). ``timeout`` bounds each job's wait.

        ``journal`` (a path to a SQLite file, or a ``Journal``) records every
        step durably, so rerunning the same call after a crash resumes it:
        inputs are known by what they ask for, not their position, so lines
        may be inserted, deleted, reordered or duplicated between runs and
        only new inputs are sent. Saved inputs come back from the journal
        without a request, submitted ones are re-polled, and inputs whose
        create may have been billed unseen come back as
        ``SubmissionUncertainError`` unless ``resubmit_uncertain``. A journal
        path is locked, with the ``save_to`` folder, while the batch runs: a
        second batch on either gets ``JournalLockedError``.

        ``max_jobs`` is a cost guard: this call sends at most that many creates
        (one per input that needs a new task; inputs the journal answers, and
        tasks it re-polls, cost nothing and do not count). Inputs past the cap
        come back as ``MaxJobsReachedError`` outcomes (``Skipped`` events) with
        nothing sent, and a rerun with the journal continues with them.
        """
        if max_jobs is not None and (
            isinstance(max_jobs, bool) or not isinstance(max_jobs, int) or max_jobs < 0
        ):
            raise UsageError(
                f"max_jobs must be a whole number of creates, 0 or more (or None for no cap), "
                f"got {max_jobs!r}"
            )
        self._http.check_usable()
        limits = self._limits
        held_images = limits.held_images() if save_to is None and download else None
        options = JobOptions(
            save_to=Path(save_to) if save_to is not None else None,
            download=download,
            timeout=timeout,
            overwrite=overwrite,
            held_images=held_images,
        )
        store: Journal | None = None
        if journal is not None:
            if isinstance(journal, Journal):
                store = journal
            else:
                from ._sqlite_journal import SQLiteJournal  # sqlite3 only when a journal is used

                store = SQLiteJournal(journal, folder=save_to)
        batch_journal = (
            BatchJournal(store, resubmit_uncertain=resubmit_uncertain)
            if store is not None
            else None
        )
        batch = self._observer.new_batch()
        return OutcomeStream(
            requests,
            BatchJob(self._runner, options, batch_journal, batch=batch),
            workers=limits.max_concurrency,
            read_ahead=limits.read_ahead(ordered=ordered),
            ordered=ordered,
            host=self._host_group,
            journal=store,
            identify=store is not None or save_to is not None,
            held_images=held_images,
            observer=self._observer,
            batch=batch,
            max_creates=max_jobs,
            pacing=limits.pacing(),
        )

    def _host_group(self) -> TaskGroup | None:
        """The task group of the client's ``async with`` block (batches run in it), if open."""
        return self._task_group

    async def read_image(self, task: Task) -> bytes:
        """Download a completed task's image into memory (used by ``ImageResult.read``)."""
        self._http.check_usable()
        job = _result_job(task)
        data = await self._runner.read(task, job)
        self._observer.saved(job, None, len(data))
        return data

    async def save_image(
        self, task: Task, destination: str | os.PathLike[str], *, overwrite: bool = False
    ) -> Path:
        """Save a completed task's image to disk (used by ``ImageResult.save``)."""
        self._http.check_usable()
        job = _result_job(task)
        saved = await self._runner.save(task, destination, overwrite=overwrite, job=job)
        self._observer.saved(job, saved.path, saved.size)
        return saved.path
