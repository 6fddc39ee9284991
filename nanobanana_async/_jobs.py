"""How one job runs: create under the retry policy, wait by the poll policy, fetch the image.

The client's single-job calls and every batch job go through one JobRunner,
so a job holds one slot of the client-wide budget from its create until its
image is fetched (or it has failed), and downloads have a limit of their own.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import anyio
import attrs

from ._download import Downloader
from ._errors import NanoBananaError, ResultExpiredError, TaskFailedError, TaskTimeoutError
from ._http import AbandonedCreate, HTTPClient
from ._models import ImageRequest, Outcome, Task, TaskStatus
from ._naming import file_stem
from ._polling import JobKind, PollingPolicy
from ._retry import Retrier

__all__ = ["BatchOptions", "JobRunner"]

T = TypeVar("T")
logger = logging.getLogger("nanobanana_async")


@attrs.frozen
class BatchOptions:
    """How each job of a batch ends: saved under ``save_to``, read into memory, or left as a URL."""

    save_to: Path | None = None
    download: bool = True
    timeout: float | None = None
    overwrite: bool = False


def _log_abandoned(request: ImageRequest, client_key: str, task: Task | None) -> None:
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
        self.jobs = anyio.CapacityLimiter(max_concurrency)
        self.downloads = anyio.CapacityLimiter(max_downloads)

    async def create(
        self, request: ImageRequest, *, on_abandoned: AbandonedCreate | None = None
    ) -> Task:
        """Create one task; the client key minted here stays the same across its attempts."""
        client_key = uuid.uuid4().hex
        grace = self.retrier.policy.cancel_grace
        return await self.retrier.create(
            lambda: self.http.create(
                request,
                client_key=client_key,
                grace=grace,
                on_abandoned=on_abandoned or _log_abandoned,
            )
        )

    async def wait(
        self, task_id: str, kind: JobKind, timeout: float | None, status: TaskStatus | None
    ) -> Task:
        """Poll until terminal; past ``timeout`` raise TaskTimeoutError with the last status."""
        last_status: list[str | None] = [status.value if status is not None else None]
        with anyio.move_on_after(math.inf if timeout is None else timeout):
            return await self._poll_until_done(task_id, kind, last_status)
        assert timeout is not None
        raise TaskTimeoutError(task_id, last_status=last_status[0], timeout=timeout)

    async def _poll_until_done(
        self, task_id: str, kind: JobKind, last_status: list[str | None]
    ) -> Task:
        started = time.monotonic()
        last_pending: float | None = None
        delay = self.polling.first_delay(kind)
        polls = 0
        while True:
            await anyio.sleep(delay)
            task = await self.retrier.poll(
                lambda: self.http.query(task_id), since_create=time.monotonic() - started
            )
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
                    lambda: self.http.query(task.id), since_create=math.inf
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
    ) -> Path:
        """The image on disk, atomically."""

        async def save(current: Task) -> Path:
            return await self.downloader.save(current, destination, overwrite=overwrite, stem=stem)

        async with self.downloads:
            return await self.fetch(task, save)

    async def run(self, index: int, request: ImageRequest, options: BatchOptions) -> Outcome:
        """One batch job from create to a fetched image; every failure becomes the outcome."""
        task: Task | None = None
        try:
            async with self.jobs:
                task = await self.create(request)
                task = await self.wait(
                    task.id, (request.model, request.resolution), options.timeout, task.status
                )
                if task.status is TaskStatus.FAILED:
                    raise TaskFailedError(task)
                if options.save_to is not None:
                    path = await self.save(
                        task,
                        options.save_to,
                        overwrite=options.overwrite,
                        stem=file_stem(index, request.prompt),
                    )
                    return Outcome(request=request, index=index, task=task, path=path)
                if options.download:
                    data = await self.read(task)
                    return Outcome(request=request, index=index, task=task, data=data)
                return Outcome(request=request, index=index, task=task)
        except NanoBananaError as exc:
            return Outcome(request=request, index=index, task=task, error=exc)
