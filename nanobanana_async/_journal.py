"""The durable record of a batch, so a rerun resumes without paying twice: what it stores.

An input is known by what it asks for, never by its position: the
fingerprint of its request (a hash of the create payload) plus which
occurrence of identical requests it is (0 for the first line asking for
exactly this, 1 for the second, ...). So inserting, deleting, reordering or
duplicating lines between runs costs exactly the creates of the inputs that
are new. ``Journal`` is the small store interface a backend implements;
``SQLiteJournal`` (in ``_sqlite_journal``) is the embedded default.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import enum
import hashlib
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Final, Self

import anyio
import attrs

from ._errors import JournalLockedError
from ._limits import BatchPacing
from ._models import ImageRequest

__all__ = [
    "ROW_COLUMNS",
    "URL_LIFETIME",
    "Journal",
    "JournalEntry",
    "JournalState",
    "entry_from_row",
    "request_fingerprint",
    "row_of",
]

#: Image URLs expire about 24 h after the task completes (the service's documented lifetime).
URL_LIFETIME: Final = 24 * 3600.0


class JournalState(enum.StrEnum):
    """Where an input stands, as far as the journal knows."""

    PENDING = "pending"  # known; nothing paid (or a failure that certainly billed nothing)
    SUBMITTING = "submitting"  # the create may be on the wire: its outcome is unknown
    SUBMITTED = "submitted"  # the service accepted it: task_id is set
    COMPLETED = "completed"  # generated: image_url and expires_at are set
    SAVED = "saved"  # on disk: path and sha256 are set
    FAILED = "failed"  # the service reported a final failure, or the task was lost (see error)
    UNCERTAIN = "uncertain"  # the create was sent and its answer lost: may be billed


def request_fingerprint(request: ImageRequest) -> str:
    """A stable hash of what a request asks for (its create payload)."""
    canonical = json.dumps(request.to_payload(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


@attrs.frozen
class JournalEntry:
    """One input's row, keyed by ``(request_hash, occurrence)``.

    ``index`` is the input's position when the row was last written (for
    people and ordering only). Fields beyond ``state`` are filled in as the
    job progresses.
    """

    index: int
    request_hash: str
    request: dict[str, Any]
    state: JournalState
    occurrence: int = 0
    client_key: str | None = None
    task_id: str | None = None
    image_url: str | None = None
    expires_at: float | None = None
    path: str | None = None
    sha256: str | None = None
    error_type: str | None = None
    error: str | None = None
    updated_at: float = attrs.field(factory=time.time)

    @property
    def key(self) -> tuple[str, int]:
        """The input's identity: its request's fingerprint and which occurrence it is."""
        return self.request_hash, self.occurrence

    @property
    def settled_state(self) -> JournalState:
        """The state once no run is writing this row.

        A create cut off mid-flight (``submitting``) is then ``uncertain``: it
        may have been billed with no answer seen. Every other state is itself.
        """
        if self.state is JournalState.SUBMITTING:
            return JournalState.UNCERTAIN
        return self.state

    def evolve(self, **changes: Any) -> JournalEntry:
        """A copy with ``changes`` applied and a fresh ``updated_at``."""
        return attrs.evolve(self, updated_at=time.time(), **changes)


#: A row's columns, in the order ``row_of`` gives and ``entry_from_row`` takes them.
ROW_COLUMNS: Final = (
    "request_hash",
    "occurrence",
    "idx",
    "request",
    "state",
    "client_key",
    "task_id",
    "image_url",
    "expires_at",
    "path",
    "sha256",
    "error_type",
    "error",
    "updated_at",
)


def row_of(entry: JournalEntry) -> tuple[object, ...]:
    """``entry`` as a database row (the request as canonical JSON text)."""
    return (
        entry.request_hash,
        entry.occurrence,
        entry.index,
        json.dumps(entry.request, sort_keys=True),
        entry.state.value,
        entry.client_key,
        entry.task_id,
        entry.image_url,
        entry.expires_at,
        entry.path,
        entry.sha256,
        entry.error_type,
        entry.error,
        entry.updated_at,
    )


def entry_from_row(row: Sequence[Any]) -> JournalEntry:
    """The entry a database row (in ``ROW_COLUMNS`` order) holds."""
    values = dict(zip(ROW_COLUMNS, row, strict=True))
    return JournalEntry(
        index=values.pop("idx"),
        request_hash=values.pop("request_hash"),
        request=json.loads(values.pop("request")),
        state=JournalState(values.pop("state")),
        **values,
    )


class Journal(abc.ABC):
    """The store a batch journals into. Use it as ``async with journal:``.

    Entering is re-entrant: a caller may hold a journal open (and locked)
    around several steps, a batch among them, and only the outermost exit
    closes it. One batch at a time writes to a journal.
    """

    _depth: int = 0
    _batch_running: bool = False
    _opening: asyncio.Lock | None = None

    async def __aenter__(self) -> Self:
        # Serialised, so a second caller arriving while the first opens waits for it
        # instead of opening (and locking) the store a second time.
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._depth == 0:
                await self.open()
            self._depth += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._depth -= 1
        if self._depth == 0:
            with anyio.CancelScope(shield=True):
                await self.aclose()

    def claim_for_batch(self) -> None:
        """Mark the journal as written by a running batch; a second batch is refused."""
        if self._batch_running:
            raise JournalLockedError(repr(self), holder="another batch of this process")
        self._batch_running = True

    def release_from_batch(self) -> None:
        """The batch that claimed the journal has ended."""
        self._batch_running = False

    @abc.abstractmethod
    async def open(self) -> None:
        """Lock, open (creating if new) and check the store; raise JournalError if unusable."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Flush, close and unlock; safe to call twice."""

    @abc.abstractmethod
    async def get(self, request_hash: str, occurrence: int) -> JournalEntry | None:
        """The row of this input, if any."""

    @abc.abstractmethod
    async def put(self, entry: JournalEntry) -> None:
        """Insert or replace the row with ``entry.key``; returns once it is durable."""

    async def claim(self, fresh: JournalEntry) -> JournalEntry | None:
        """Take an input for this run: the row to work from, or None if another worker has it.

        ``fresh`` is the input as a new, pending row; it comes back as it is when
        the store knows nothing of the input. A store shared by several workers
        (PostgreSQL) leases the row to this one; a single-writer store just
        looks it up.
        """
        found = await self.get(fresh.request_hash, fresh.occurrence)
        return fresh if found is None else found

    def leftovers(self) -> AsyncIterator[JournalEntry] | None:
        """Inputs of this batch that other workers left unfinished, once its own input is read.

        None for a store only one batch writes at a time (there is nobody else).
        A shared store yields the unsettled rows whose worker's lease ran out,
        leased to this one, and waits while other live workers still hold some.
        """
        return None

    def working(self, pacing: BatchPacing | None = None) -> AbstractAsyncContextManager[None]:
        """Held around a batch's work.

        A store shared by several workers renews the leases the batch holds and
        shares the batch's pace through ``pacing``: a 429 pause of one worker's
        creates reaches every worker of the batch, and a request rate set for
        the batch is split among its live workers.
        """
        return contextlib.nullcontext()

    #: Written by several workers, possibly on other machines (PostgreSQL): an image one of
    #: them saved is on that worker's disk, so a rerun elsewhere does not fetch it again.
    shared: bool = False

    def stopping(self) -> None:  # noqa: B027 (no-op by default)
        """Its batch is being stopped early (its consumer left); it will close soon.

        A store locked by one run at a time lets a rerun of the same batch in
        this process wait for that close instead of refusing it.
        """

    async def let_go(self, request_hash: str, occurrence: int) -> None:  # noqa: B027 (no-op)
        """This run will not work on the input after all (a shared store frees its lease)."""

    @abc.abstractmethod
    async def entries(self) -> list[JournalEntry]:
        """Every row, in input order."""

    @abc.abstractmethod
    async def counts(self) -> dict[JournalState, int]:
        """How many rows are in each state."""

    async def count_unrequested(self, asked: Mapping[str, int]) -> int:
        """How many rows a batch did not ask for; ``asked`` maps fingerprints to occurrences."""
        return sum(
            entry.occurrence >= asked.get(entry.request_hash, 0) for entry in await self.entries()
        )
