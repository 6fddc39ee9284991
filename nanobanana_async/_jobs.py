"""How one job runs: create under the retry policy, wait by the poll policy, fetch the image.

The client's single-job calls and every batch job go through one JobRunner,
so a job holds one slot of the client-wide budget from its create until its
image is fetched (or it has failed), and downloads have a limit of their own.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, Protocol, TypeVar

import anyio
import attrs

from ._download import Downloader, SavedImage
from ._errors import (
    MalformedResponseError,
    NanoBananaError,
    ResultExpiredError,
    SubmissionUncertainError,
    TaskFailedError,
    TaskTimeoutError,
)
from ._http import AbandonedCreate, HTTPClient
from ._models import ImageRequest, Outcome, Task, TaskStatus
from ._polling import JobKind, PollingPolicy
from ._retry import Retrier

__all__ = ["BatchOptions", "JobRecorder", "JobRunner"]

T = TypeVar("T")
logger = logging.getLogger("nanobanana_async")


@attrs.frozen
class BatchOptions:
    """How each job of a batch ends: saved under ``save_to``, read into memory, or left as a URL.

    ``image_slots`` bounds how many images a batch holds in memory: a slot is
    taken before an image is read and given back when its outcome reaches
    the consumer, so a slow consumer slows downloads instead of filling RAM.
    """

    save_to: Path | None = None
    download: bool = True
    timeout: float | None = None
    overwrite: bool = False
    image_slots: asyncio.Semaphore | None = attrs.field(default=None, eq=False)


async def _log_abandoned(
    request: ImageRequest, client_key: str, sent: bool, task: Task | None
) -> None:
    if not sent:
        return
    if task is not None:
        logger.warning(
            "a create was cancelled after it was sent; the service created task %s (key %s)",
            task.id,
            client_key,
        )
    else:
        logger.warning(
            "a create was cancelled after it was sent and no answer came in time; it may have "
            "been billed (key %s)",
            client_key,
        )


class JobRunner:
    """Runs jobs for one client: its HTTP seam, retry layer, poll policy and limits."""

    def __init__(
        self,
        *,
        http: HTTPClient,
        downloader: Downloader,
        retrier: Retrier,
        polling: PollingPolicy,
        max_concurrency: int,
        max_downloads: int,
    ) -> None:
        self.http = http
        self.downloader = downloader
        self.retrier = retrier
        self.polling = polling
        # asyncio's semaphores: every job passes both, and anyio's limiters add a
        # trip through the event loop to each acquire.
        self.jobs = asyncio.Semaphore(max_concurrency)
        self.downloads = asyncio.Semaphore(max_downloads)

    async def create(
        self,
        request: ImageRequest,
        *,
        client_key: str | None = None,
        on_abandoned: AbandonedCreate | None = None,
        may_create: Callable[[], bool] = lambda: True,
    ) -> Task:
        """Create one task; its client key (minted if not given) is kept across attempts.

        ``may_create`` is asked before every attempt (a 429 pause or a backoff can
        outlast the batch's reason to send); when it says no, ``CreateWithheldError``.
        """
        key = client_key or secrets.token_hex(16)
        grace = self.retrier.policy.cancel_grace

        async def attempt() -> Task:
            if not may_create():
                raise CreateWithheldError("the batch stopped before this create was sent")
            return await self.http.create(
                request,
                client_key=key,
                grace=grace,
                on_abandoned=on_abandoned or _log_abandoned,
            )

        return await self.retrier.create(attempt)

    async def wait(
        self, task_id: str, kind: JobKind, timeout: float | None, status: TaskStatus | None
    ) -> Task:
        """Poll until terminal; past ``timeout`` raise TaskTimeoutError with the last status."""
        last_status: list[str | None] = [status.value if status is not None else None]
        if timeout is None:
            return await self._poll_until_done(task_id, kind, last_status)
        with anyio.move_on_after(timeout):
            return await self._poll_until_done(task_id, kind, last_status)
        raise TaskTimeoutError(task_id, last_status=last_status[0], timeout=timeout)

    async def _poll_until_done(
        self, task_id: str, kind: JobKind, last_status: list[str | None]
    ) -> Task:
        # The busiest loop of a batch. aiohttp ties the SDK to asyncio, so it sleeps
        # with asyncio directly (anyio's cancel scopes still cancel it).
        started = time.monotonic()
        last_pending: float | None = None
        query = self.http.status_query(task_id)
        delay = self.polling.first_delay(kind)
        polls = 0
        while True:
            await asyncio.sleep(delay)
            task = await self.retrier.poll(query, since_create=time.monotonic() - started)
            if task is None:  # not visible yet, just after create
                delay = self.polling.next_delay(kind, polls)
                continue
            polls += 1
            last_status[0] = task.raw_status or task.status.value
            if task.is_terminal:
                finished = time.monotonic() - started
                self.polling.observe(kind, last_pending=last_pending, finished=finished)
                return task
            last_pending = time.monotonic() - started
            delay = self.polling.next_delay(kind, polls)

    async def fetch(self, task: Task, action: Callable[[Task], Awaitable[T]]) -> T:
        """Download with retries; an expired URL gets one re-poll, never a new create."""
        try:
            return await self.retrier.download(lambda: action(task), task_id=task.id)
        except ResultExpiredError as expired:
            try:
                fresh = await self.retrier.poll(
                    self.http.status_query(task.id), since_create=math.inf
                )
            except NanoBananaError:
                raise expired from None
            if fresh is None or fresh.image_url is None:
                raise
            logger.debug("image URL of task %s expired; retrying with a fresh answer", task.id)
            return await self.retrier.download(lambda: action(fresh), task_id=task.id)

    async def read(self, task: Task) -> bytes:
        """The image in memory."""
        async with self.downloads:
            return await self.fetch(task, self.downloader.read)

    async def save(
        self,
        task: Task,
        destination: str | os.PathLike[str],
        *,
        overwrite: bool,
        stem: str | None = None,
        adopt_identical: bool = False,
    ) -> SavedImage:
        """The image on disk, atomically."""

        async def save(current: Task) -> SavedImage:
            return await self.downloader.save(
                current,
                destination,
                overwrite=overwrite,
                stem=stem,
                adopt_identical=adopt_identical,
            )

        async with self.downloads:
            return await self.fetch(task, save)

    async def run(
        self,
        index: int,
        request: ImageRequest,
        options: BatchOptions,
        *,
        recorder: JobRecorder | None = None,
        resume: Task | None = None,
        stem: str | None = None,
        may_create: Callable[[], bool] = lambda: True,
    ) -> Outcome | None:
        """One batch job from create to a fetched image; every failure becomes the outcome.

        ``recorder`` hears of each step as it happens (the journal); ``resume``
        is the task a previous run already created, so no new create is sent.
        ``stem`` names the saved file. ``may_create`` is asked once a job slot
        is held and again before every create attempt: when it says no, nothing
        is sent and the result is None.
        """
        record = recorder or _NO_RECORD
        task = resume
        try:
            async with self.jobs:
                if task is None:
                    if not may_create():
                        return None
                    task = await self._create_recorded(request, record, may_create)
                if task.status is not TaskStatus.COMPLETED or task.image_url is None:
                    task = await self.wait(
                        task.id, (request.model, request.resolution), options.timeout, task.status
                    )
                    if task.status is TaskStatus.FAILED or options.save_to is None:
                        # A completed image about to be saved is journaled once, as saved: if
                        # the run dies before that, the row still says submitted and a rerun
                        # polls it again, which is free.
                        await record.finished(task)
                if task.status is TaskStatus.FAILED:
                    raise TaskFailedError(task)
                if options.save_to is not None:
                    saved = await self.save(
                        task,
                        options.save_to,
                        overwrite=options.overwrite,
                        stem=stem,
                        adopt_identical=True,
                    )
                    await record.saved(task, saved)
                    return Outcome(request=request, index=index, task=task, path=saved.path)
                if options.download:
                    data = await self._read_into_slot(task, options.image_slots)
                    return Outcome(request=request, index=index, task=task, data=data)
                return Outcome(request=request, index=index, task=task)
        except CreateWithheldError:
            return None
        except NanoBananaError as exc:
            if task is not None:
                await _note_quietly(record, exc)
            return Outcome(request=request, index=index, task=task, error=exc)

    async def _read_into_slot(self, task: Task, slots: asyncio.Semaphore | None) -> bytes:
        """Read an image holding one of the batch's memory slots (kept on success)."""
        if slots is None:
            return await self.read(task)
        await slots.acquire()
        try:
            return await self.read(task)
        except BaseException:
            slots.release()
            raise

    async def _create_recorded(
        self, request: ImageRequest, record: JobRecorder, may_create: Callable[[], bool]
    ) -> Task:
        client_key = secrets.token_hex(16)
        reported = False

        async def cancelled(request: ImageRequest, key: str, sent: bool, task: Task | None) -> None:
            """The job was cancelled mid-create: journal what is known, lose no billed id."""
            nonlocal reported
            reported = True
            await _log_abandoned(request, key, sent, task)
            try:
                if task is not None:
                    await record.submitted(task)
                elif not sent:
                    await record.not_billed(NanoBananaError("cancelled before the create was sent"))
            except NanoBananaError as journal_error:
                logger.warning("could not journal a cancelled create: %s", journal_error)

        try:
            await record.submitting(client_key)
            task = await self.create(
                request, client_key=client_key, on_abandoned=cancelled, may_create=may_create
            )
        except anyio.get_cancelled_exc_class():
            if not reported:  # cancelled between attempts (a pause or backoff): nothing in flight
                with anyio.CancelScope(shield=True):
                    await cancelled(request, client_key, False, None)
            raise
        except NanoBananaError as exc:
            if _may_be_billed(exc):
                await record.uncertain(exc)
            else:
                await record.not_billed(exc)
            raise
        await record.submitted(task)
        return task


async def _note_quietly(record: JobRecorder, error: NanoBananaError) -> None:
    """Record why a created job failed; a journal failure here must not hide that error."""
    try:
        await record.errored(error)
    except NanoBananaError as journal_error:
        logger.warning("could not journal the failure of a job: %s", journal_error)


class CreateWithheldError(NanoBananaError):
    """A batch job's create was not sent: the batch stopped sending before its turn."""


def _may_be_billed(error: NanoBananaError) -> bool:
    """True when a failed create may still have created (and billed) a task."""
    if isinstance(error, SubmissionUncertainError):
        return True
    return isinstance(error, MalformedResponseError) and error.may_be_billed


class JobRecorder(Protocol):
    """Hears of each step of a job, in order (the journal implements it)."""

    async def submitting(self, client_key: str) -> None:
        """The create is about to be sent."""

    async def submitted(self, task: Task) -> None:
        """The service accepted the create."""

    async def not_billed(self, error: NanoBananaError) -> None:
        """The create failed in a way that certainly billed nothing."""

    async def uncertain(self, error: NanoBananaError) -> None:
        """The create may have been billed but its answer was lost."""

    async def finished(self, task: Task) -> None:
        """The task completed or failed."""

    async def saved(self, task: Task, saved: SavedImage) -> None:
        """The image is on disk."""

    async def errored(self, error: NanoBananaError) -> None:
        """A job that has a task failed after its create (its state stays as it was)."""


class _NoRecord:
    """A recorder that keeps nothing: jobs without a journal."""

    async def submitting(self, client_key: str) -> None:
        return None

    async def submitted(self, task: Task) -> None:
        return None

    async def not_billed(self, error: NanoBananaError) -> None:
        return None

    async def uncertain(self, error: NanoBananaError) -> None:
        return None

    async def finished(self, task: Task) -> None:
        return None

    async def saved(self, task: Task, saved: SavedImage) -> None:
        return None

    async def errored(self, error: NanoBananaError) -> None:
        return None


_NO_RECORD: Final = _NoRecord()
