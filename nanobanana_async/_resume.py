"""A batch's side of the journal: what a rerun does with each input, and what each job records.

Write-ahead discipline: an input's row says ``submitting`` (committed)
before its create is sent, and the task id is committed as soon as the
answer arrives, so a crash at any point leaves a row that says exactly what
is known. On a rerun, saved inputs are answered from the journal (no
request), submitted and completed ones continue from their task (re-poll,
re-download), and inputs whose create may have been billed unseen are not
sent again unless ``resubmit_uncertain`` is set.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Final, Protocol

import anyio
import attrs

from ._download import SavedImage
from ._errors import (
    NanoBananaError,
    SubmissionUncertainError,
    TaskFailedError,
    TaskNotFoundError,
)
from ._journal import URL_LIFETIME, Journal, JournalEntry, JournalState
from ._models import ImageRequest, Outcome, Task, TaskStatus

__all__ = ["NO_RECORD", "BatchJournal", "JobRecorder", "Resume"]


class JobRecorder(Protocol):
    """Hears of each step of a job, in order (the journal's EntryRecorder implements it)."""

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

    async def let_go(self) -> None:
        """Nothing more will be done for this input in this run (it was not sent)."""


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

    async def let_go(self) -> None:
        return None


NO_RECORD: Final[JobRecorder] = _NoRecord()


@attrs.frozen
class Resume:
    """What to do with one input: answer it now, or run it (from a known task or afresh)."""

    outcome: Outcome | None = None
    task: Task | None = None
    recorder: JobRecorder = NO_RECORD
    resumed_from: str | None = None
    #: Another worker sharing the journal has this input: this run leaves it alone.
    elsewhere: bool = False


class EntryRecorder:
    """Writes one job's steps into its journal row (a JobRecorder)."""

    def __init__(self, journal: Journal, entry: JournalEntry) -> None:
        self._journal = journal
        self._entry = entry

    async def _put(self, **changes: object) -> None:
        self._entry = self._entry.evolve(**changes)
        await self._journal.put(self._entry)

    async def submitting(self, client_key: str) -> None:
        """Committed before the create goes out."""
        await self._put(state=JournalState.SUBMITTING, client_key=client_key, error_type=None)

    async def submitted(self, task: Task) -> None:
        """Committed as soon as the task id is known."""
        await self._put(state=JournalState.SUBMITTED, task_id=task.id)

    async def not_billed(self, error: NanoBananaError) -> None:
        """Back to pending: a rerun may send it again at no double cost."""
        await self._put(
            state=JournalState.PENDING, error_type=type(error).__name__, error=str(error)
        )

    async def uncertain(self, error: NanoBananaError) -> None:
        """The create may be billed: never sent again without the user's say-so.

        The row keeps why the answer was lost (not the whole message, which a
        rerun's own ``SubmissionUncertainError`` would nest).
        """
        reason = error.reason if isinstance(error, SubmissionUncertainError) else str(error)
        await self._put(state=JournalState.UNCERTAIN, error_type=type(error).__name__, error=reason)

    async def finished(self, task: Task) -> None:
        """Completed (with its URL's expiry) or failed (with the service's reason)."""
        if task.status is TaskStatus.COMPLETED:
            await self._put(
                state=JournalState.COMPLETED,
                image_url=task.image_url,
                expires_at=time.time() + URL_LIFETIME,
            )
        else:
            await self._put(
                state=JournalState.FAILED, error_type=TaskFailedError.__name__, error=task.error
            )

    async def errored(self, error: NanoBananaError) -> None:
        """Say why this run stopped there; the state stays, so a rerun continues from it.

        A task the service no longer knows (a persistent 404) is final: a rerun
        would only meet the same 404, so the row says failed. A failed task's row
        already holds the service's own reason (``finished``), kept as it is.
        """
        if isinstance(error, TaskFailedError):
            return
        changes: dict[str, object] = {"error_type": type(error).__name__, "error": str(error)}
        if isinstance(error, TaskNotFoundError):
            changes["state"] = JournalState.FAILED
        await self._put(**changes)

    async def let_go(self) -> None:
        """Unsent after all (a cap, a fatal stop): a shared journal frees the input's lease."""
        await self._journal.let_go(self._entry.request_hash, self._entry.occurrence)

    async def saved(self, task: Task, saved: SavedImage) -> None:
        """On disk, with the file's hash."""
        await self._put(
            state=JournalState.SAVED,
            image_url=task.image_url,
            path=str(saved.path),
            sha256=saved.sha256,
            error_type=None,
            error=None,
        )


_ELSEWHERE: Final = Resume(elsewhere=True)


class BatchJournal:
    """Decides, input by input, how a (re)run proceeds, given what the journal holds."""

    def __init__(self, journal: Journal, *, resubmit_uncertain: bool) -> None:
        self.journal = journal
        self.resubmit_uncertain = resubmit_uncertain

    async def plan(
        self, index: int, request: ImageRequest, fingerprint: str, occurrence: int
    ) -> Resume:
        """Look up this input (by what it asks for) and say what to do with it."""
        fresh = JournalEntry(
            index=index,
            request_hash=fingerprint,
            occurrence=occurrence,
            request=request.to_payload(),
            state=JournalState.PENDING,
        )
        entry = await self.journal.claim(fresh)
        if entry is None:
            return _ELSEWHERE
        if entry.state is JournalState.PENDING:
            return Resume(recorder=EntryRecorder(self.journal, fresh))
        if entry.index != index:
            entry = attrs.evolve(entry, index=index)  # its next write records where it is now
        return await self._resume(index, request, entry)

    async def _resume(self, index: int, request: ImageRequest, entry: JournalEntry) -> Resume:
        state = entry.state
        recorder = EntryRecorder(self.journal, entry)

        def answer(*, error: NanoBananaError | None = None, path: Path | None = None) -> Resume:
            task = _task_of(entry)
            outcome = Outcome(
                request=request,
                index=index,
                task=task,
                path=path,
                error=error,
                resumed_from=state.value,
            )
            return Resume(outcome=outcome)

        if state is JournalState.SAVED:
            if entry.path is not None:
                path = Path(entry.path)
                # A shared journal's image may be on the disk of the worker that saved it.
                if self.journal.shared or await anyio.to_thread.run_sync(path.is_file):
                    return answer(path=path)
            state = JournalState.COMPLETED  # the file went missing: fetch it again
        if state in (JournalState.COMPLETED, JournalState.SUBMITTED):
            return Resume(task=_task_of(entry), recorder=recorder, resumed_from=entry.state.value)
        if state is JournalState.FAILED:
            if entry.error_type == TaskNotFoundError.__name__:
                lost = "the service did not know this task on a previous run"
                return answer(
                    error=TaskNotFoundError(
                        lost, status=404, operation="query", task_id=entry.task_id
                    )
                )
            failed = Task(
                id=entry.task_id or "unknown", status=TaskStatus.FAILED, error=entry.error
            )
            return answer(error=TaskFailedError(failed))
        # SUBMITTING or UNCERTAIN: the create may have been billed with no answer seen.
        if self.resubmit_uncertain:
            return Resume(recorder=recorder, resumed_from=state.value)
        if state is JournalState.SUBMITTING:  # cut off mid-create: say so in the row too
            entry = entry.evolve(state=JournalState.UNCERTAIN, error=entry.error or "cut off")
            await self.journal.put(entry)
        error = SubmissionUncertainError(
            f"a previous run sent this create and never saw its answer: {entry.error or state}",
            request=request,
            submitted_at=entry.updated_at,
            client_key=entry.client_key,
        )
        return answer(error=error)


def _task_of(entry: JournalEntry) -> Task | None:
    if entry.task_id is None:
        return None
    if entry.image_url is not None:
        return Task(id=entry.task_id, status=TaskStatus.COMPLETED, image_url=entry.image_url)
    return Task(id=entry.task_id, status=TaskStatus.UNKNOWN)
