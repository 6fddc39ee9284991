"""What one job does: create under the retry policy, wait by the poll policy, fetch the image.

Every call of the client and every job of a batch goes through one
JobRunner, which takes its slots from the client's ``Limits``: ``generate``
holds a job slot from its create until the task's final status,
``run`` (a batch job) until its image is saved or read into memory, and
``submit``/``wait`` take none. Downloads pass the download slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

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
from ._http import CreateFate, HTTPClient
from ._limits import ImageHold, Limits
from ._logs import logger
from ._models import ImageRequest, Outcome, Task, TaskStatus
from ._observe import JobTrace, Observer
from ._polling import PollingPolicy
from ._resume import NO_RECORD, JobRecorder
from ._retry import Retrier

__all__ = ["CreateWithheldError", "JobOptions", "JobRunner"]

T = TypeVar("T")


def _always() -> bool:
    return True


@attrs.frozen
class JobOptions:
    """How each job of a batch ends: saved under ``save_to``, read into memory, or left as a URL.

    ``held_images`` bounds the images read into memory that the consumer has
    not taken yet (only when they are read into memory).
    """

    save_to: Path | None = None
    download: bool = True
    timeout: float | None = None
    overwrite: bool = False
    held_images: ImageHold | None = attrs.field(default=None, eq=False)


class CreateWithheldError(NanoBananaError):
    """A batch job's create was not sent: the batch stopped sending before its turn."""


class JobRunner:
    """Runs jobs for one client: its HTTP seam, retry layer, poll policy and limits."""

    def __init__(
        self,
        *,
        http: HTTPClient,
        downloader: Downloader,
        retrier: Retrier,
        polling: PollingPolicy,
        limits: Limits,
        observer: Observer,
    ) -> None:
        self.http = http
        self.downloader = downloader
        self.retrier = retrier
        self.polling = polling
        self.limits = limits
        self.observer = observer

    async def create(
        self,
        request: ImageRequest,
        *,
        record: JobRecorder = NO_RECORD,
        may_create: Callable[[], bool] = _always,
        job: JobTrace | None = None,
    ) -> Task:
        """Create one task; ``record`` hears of each step, so no billed task id is lost.

        One client key is minted and kept across attempts. ``may_create`` is
        asked before every attempt (a 429 pause or a backoff can outlast a
        batch's reason to send): when it says no, ``CreateWithheldError``.
        ``job`` names the events it reports (``Submitted``, ``Uncertain``).
        """
        if job is None:
            job = JobTrace(model=request.model, resolution=request.resolution)
        observer = self.observer
        key = secrets.token_hex(16)
        grace = self.retrier.policy.cancel_grace
        abandoned = False

        async def attempt() -> Task:
            nonlocal abandoned
            if not may_create():
                raise CreateWithheldError("the batch stopped before this create was sent")
            observer.sending(job)
            call = self.http.start_create(request, client_key=key)
            try:
                return await call.answer()
            except BaseException as exc:
                if call.raised(exc):
                    raise
                abandoned = True  # the caller stopped waiting while the create was out
                fate = await call.abandon(grace)
                with anyio.CancelScope(shield=True):
                    await _record_abandoned(record, key, fate)
                raise

        try:
            await record.submitting(key)
            task = await self.retrier.create(attempt, job=job)
        except anyio.get_cancelled_exc_class():
            if not abandoned:  # cancelled before or between attempts: nothing in flight
                with anyio.CancelScope(shield=True):
                    await _record_abandoned(record, key, CreateFate(sent=False))
            raise
        except NanoBananaError as exc:
            if _may_be_billed(exc):
                observer.uncertain(job, exc)
                await record.uncertain(exc)
            else:
                await record.not_billed(exc)
            raise
        observer.submitted(job, task)
        await record.submitted(task)
        return task

    async def wait(
        self,
        task_id: str,
        *,
        model: str | None = None,
        resolution: str | None = None,
        timeout: float | None = None,
        status: TaskStatus | None = None,
        job: JobTrace | None = None,
    ) -> Task:
        """Poll until terminal; past ``timeout`` raise TaskTimeoutError with the last status.

        ``model`` and ``resolution`` tell the poll policy what kind of job this is;
        ``job`` names the events the polls report (``StatusChanged``, ``Completed``).
        """
        if job is None:
            job = JobTrace(model=model, resolution=resolution, task_id=task_id)
            job.status = status
        observer = self.observer
        kind = (model, resolution)
        last_status = status.value if status is not None else None
        polling, retrier = self.polling, self.retrier
        query = self.http.status_query(task_id)
        bound = contextlib.nullcontext() if timeout is None else anyio.move_on_after(timeout)
        with bound:
            # The busiest loop of a batch. aiohttp ties the SDK to asyncio, so it sleeps
            # with asyncio directly (anyio's cancel scopes still cancel it).
            started = time.monotonic()
            last_pending: float | None = None
            delay = polling.first_delay(kind)
            polls = 0
            while True:
                await asyncio.sleep(delay)
                task = await retrier.poll(query, since_create=time.monotonic() - started, job=job)
                if task is None:  # not visible yet, just after create
                    delay = polling.next_delay(kind, polls)
                    continue
                polls += 1
                if task.status is not job.status:
                    observer.status_seen(job, task)
                last_status = task.raw_status or task.status.value
                if task.is_terminal:
                    finished = time.monotonic() - started
                    polling.observe(kind, last_pending=last_pending, finished=finished)
                    return task
                last_pending = time.monotonic() - started
                delay = polling.next_delay(kind, polls)
        raise TaskTimeoutError(task_id, last_status=last_status, timeout=timeout)

    async def generate(self, request: ImageRequest, *, timeout: float | None) -> Task:
        """Create and wait for one task, holding a job slot until its final status.

        A failed task or a failure other than an uncertain create is reported as ``Failed``.
        """
        job = JobTrace(model=request.model, resolution=request.resolution)
        observer = self.observer
        observer.job_started(job)
        try:
            async with self.limits.jobs:
                task = await self.create(request, job=job)
                task = await self.wait(
                    task.id,
                    model=request.model,
                    resolution=request.resolution,
                    timeout=timeout,
                    status=task.status,
                    job=job,
                )
            if task.status is TaskStatus.FAILED:
                observer.failed(job, TaskFailedError(task))
            return task
        except NanoBananaError as exc:
            if not _may_be_billed(exc):
                observer.failed(job, exc)
            raise
        finally:
            observer.job_ended(job)

    async def fetch(
        self, task: Task, action: Callable[[Task], Awaitable[T]], job: JobTrace | None = None
    ) -> T:
        """Download through a download slot, with retries; an expired URL gets one re-poll."""
        async with self.limits.downloads:
            try:
                return await self.retrier.download(lambda: action(task), task_id=task.id, job=job)
            except ResultExpiredError as expired:
                try:
                    fresh = await self.retrier.poll(
                        self.http.status_query(task.id), since_create=math.inf, job=job
                    )
                except NanoBananaError:
                    raise expired from None
                if fresh is None or fresh.image_url is None:
                    raise
                logger.debug("image URL of task %s expired; retrying with a fresh answer", task.id)
                return await self.retrier.download(lambda: action(fresh), task_id=task.id, job=job)

    async def read(self, task: Task, job: JobTrace | None = None) -> bytes:
        """The image in memory."""
        data = await self.fetch(task, self.downloader.read, job)
        self.observer.downloaded(len(data))
        return data

    async def save(
        self,
        task: Task,
        destination: str | os.PathLike[str],
        *,
        overwrite: bool,
        stem: str | None = None,
        adopt_identical: bool = False,
        job: JobTrace | None = None,
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

        saved = await self.fetch(task, save, job)
        self.observer.downloaded(saved.size)
        return saved

    async def run(
        self,
        index: int,
        request: ImageRequest,
        options: JobOptions,
        *,
        record: JobRecorder = NO_RECORD,
        resume: Task | None = None,
        stem: str | None = None,
        may_create: Callable[[], bool] = _always,
        job: JobTrace | None = None,
    ) -> Outcome | None:
        """One batch job from create to a saved or read image; every failure becomes the outcome.

        ``record`` hears of each step as it happens (the journal); ``resume``
        is the task a previous run already created, so no new create is sent.
        ``stem`` names the saved file. ``may_create`` is asked once a job slot
        is held and again before every create attempt: when it says no, nothing
        is sent and the result is None. The job's events name ``job``; it ends
        with exactly one of ``Saved``, ``Failed`` or ``Uncertain`` (none when
        nothing was sent).
        """
        if job is None:
            job = JobTrace(model=request.model, resolution=request.resolution, index=index)
        observer = self.observer
        task = resume
        if task is not None:
            job.task_id, job.status = task.id, task.status
        observer.job_started(job)
        try:
            async with self.limits.jobs:
                if task is None:
                    if not may_create():
                        return None
                    task = await self.create(request, record=record, may_create=may_create, job=job)
                if task.status is not TaskStatus.COMPLETED or task.image_url is None:
                    task = await self.wait(
                        task.id,
                        model=request.model,
                        resolution=request.resolution,
                        timeout=options.timeout,
                        status=task.status,
                        job=job,
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
                        job=job,
                    )
                    await record.saved(task, saved)
                    observer.saved(job, saved.path, saved.size)
                    return Outcome(request=request, index=index, task=task, path=saved.path)
                if options.download:
                    data = await self._read_held(task, options.held_images, job)
                    observer.saved(job, None, len(data))
                    return Outcome(request=request, index=index, task=task, data=data)
                observer.saved(job, None, None)  # left at its URL (download=False)
                return Outcome(request=request, index=index, task=task)
        except CreateWithheldError:
            return None
        except NanoBananaError as exc:
            if not _may_be_billed(exc):  # an uncertain create was reported as such
                observer.failed(job, exc)
            if task is not None:
                await _note_quietly(record, exc)
            return Outcome(request=request, index=index, task=task, error=exc)
        finally:
            observer.job_ended(job)

    async def _read_held(self, task: Task, held: ImageHold | None, job: JobTrace) -> bytes:
        """Read an image into one of the batch's places for images in memory (kept on success)."""
        if held is None:
            return await self.read(task, job)
        await held.take()
        try:
            return await self.read(task, job)
        except BaseException:
            held.give_back()
            raise


async def _record_abandoned(record: JobRecorder, client_key: str, fate: CreateFate) -> None:
    """A create its caller stopped waiting for: log it, and journal what is known of it."""
    if fate.sent:
        if fate.task is not None:
            logger.warning(
                "a create was cancelled after it was sent; the service created task %s (key %s)",
                fate.task.id,
                client_key,
            )
        else:
            logger.warning(
                "a create was cancelled after it was sent and no answer came in time; it may "
                "have been billed (key %s)",
                client_key,
            )
    try:
        if fate.task is not None:
            await record.submitted(fate.task)
        elif not fate.sent:
            await record.not_billed(NanoBananaError("cancelled before the create was sent"))
        # Sent with no answer: the row stays "submitting", which a rerun treats as uncertain.
    except NanoBananaError as journal_error:
        logger.warning("could not journal a cancelled create: %s", journal_error)


async def _note_quietly(record: JobRecorder, error: NanoBananaError) -> None:
    """Record why a created job failed; a journal failure here must not hide that error."""
    try:
        await record.errored(error)
    except NanoBananaError as journal_error:
        logger.warning("could not journal the failure of a job: %s", journal_error)


def _may_be_billed(error: NanoBananaError) -> bool:
    """True when a failed create may still have created (and billed) a task."""
    if isinstance(error, SubmissionUncertainError):
        return True
    return isinstance(error, MalformedResponseError) and error.may_be_billed
