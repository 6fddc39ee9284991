"""A durable record of a batch, so a rerun resumes without paying twice.

One row per input, keyed by the input's index and checked against a hash of
its request, so an edited prompt file is detected instead of silently mixed.
``Journal`` is the small store interface (get, put, entries, counts) a
second backend can implement; ``SQLiteJournal`` is the embedded default:
stdlib ``sqlite3`` in WAL mode, every write committed off the event loop,
with concurrent writes grouped into one transaction (group commit) so a
thousand jobs in flight cost a handful of commits, not a thousand.
"""

from __future__ import annotations

import abc
import enum
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import anyio
import attrs

from ._errors import JournalError
from ._models import ImageRequest

__all__ = [
    "Journal",
    "JournalEntry",
    "JournalState",
    "SQLiteJournal",
    "read_entries",
    "request_fingerprint",
]

#: Marks a SQLite file as ours (PRAGMA application_id), so a foreign file is never touched.
APPLICATION_ID: Final = 0x4E42_4A31  # "NBJ1"
SCHEMA_VERSION: Final = 1
#: Image URLs expire about 24 h after completion (API.md).
URL_LIFETIME: Final = 24 * 3600.0


class JournalState(enum.StrEnum):
    """Where an input stands, as far as the journal knows."""

    PENDING = "pending"  # known; nothing paid (or a failure that certainly billed nothing)
    SUBMITTING = "submitting"  # the create may be on the wire: its outcome is unknown
    SUBMITTED = "submitted"  # the service accepted it: task_id is set
    COMPLETED = "completed"  # generated: image_url and expires_at are set
    SAVED = "saved"  # on disk: path and sha256 are set
    FAILED = "failed"  # the service reported a final failure (reason in error)
    UNCERTAIN = "uncertain"  # the create was sent and its answer lost: may be billed


def request_fingerprint(request: ImageRequest) -> str:
    """A stable hash of what a request asks for (its create payload)."""
    canonical = json.dumps(request.to_payload(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


@attrs.frozen
class JournalEntry:
    """One input's row. Fields beyond ``state`` are filled in as the job progresses."""

    index: int
    request_hash: str
    request: dict[str, Any]
    state: JournalState
    client_key: str | None = None
    task_id: str | None = None
    image_url: str | None = None
    expires_at: float | None = None
    path: str | None = None
    sha256: str | None = None
    error_type: str | None = None
    error: str | None = None
    updated_at: float = attrs.field(factory=time.time)

    def evolve(self, **changes: Any) -> JournalEntry:
        """A copy with ``changes`` applied and a fresh ``updated_at``."""
        return attrs.evolve(self, updated_at=time.time(), **changes)


class Journal(abc.ABC):
    """The store a batch journals into. Use it as ``async with journal:``."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self.aclose()

    @abc.abstractmethod
    async def open(self) -> None:
        """Open (creating if new) and check the store; raise JournalError if it is not ours."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Flush and close; safe to call twice."""

    @abc.abstractmethod
    async def get(self, index: int) -> JournalEntry | None:
        """The row of input ``index``, if any."""

    @abc.abstractmethod
    async def put(self, entry: JournalEntry) -> None:
        """Insert or replace a row; returns once it is durable."""

    @abc.abstractmethod
    async def entries(self) -> list[JournalEntry]:
        """Every row, in input order."""

    @abc.abstractmethod
    async def counts(self) -> dict[JournalState, int]:
        """How many rows are in each state."""


_COLUMNS: Final = (
    "idx",
    "request_hash",
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
_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inputs (
    idx INTEGER PRIMARY KEY,
    request_hash TEXT NOT NULL,
    request TEXT NOT NULL,
    state TEXT NOT NULL,
    client_key TEXT, task_id TEXT, image_url TEXT, expires_at REAL,
    path TEXT, sha256 TEXT, error_type TEXT, error TEXT,
    updated_at REAL NOT NULL
);
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {SCHEMA_VERSION};
"""
# Spelled out (not built from _COLUMNS) so every statement is a literal.
_UPSERT: Final = (
    "INSERT OR REPLACE INTO inputs (idx, request_hash, request, state, client_key, task_id, "
    "image_url, expires_at, path, sha256, error_type, error, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT: Final = (
    "SELECT idx, request_hash, request, state, client_key, task_id, image_url, expires_at, "
    "path, sha256, error_type, error, updated_at FROM inputs"
)


def _row(entry: JournalEntry) -> tuple[object, ...]:
    return (
        entry.index,
        entry.request_hash,
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


def _entry(row: Sequence[Any]) -> JournalEntry:
    values = dict(zip(_COLUMNS, row, strict=True))
    return JournalEntry(
        index=values.pop("idx"),
        request_hash=values.pop("request_hash"),
        request=json.loads(values.pop("request")),
        state=JournalState(values.pop("state")),
        **values,
    )


class _Op:
    """One queued piece of work for the journal's connection, and its result."""

    __slots__ = ("done", "error", "result", "work")

    def __init__(self, work: Callable[[sqlite3.Connection], Any]) -> None:
        self.work = work
        self.done = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class SQLiteJournal(Journal):
    """The embedded journal: one SQLite file (WAL), e.g. ``out/.nanobanana-journal.sqlite``.

    A file that exists but is not a journal of this library (or is corrupted)
    raises ``JournalError`` and is left exactly as it was. ``commits`` counts
    the transactions written (concurrent writes share one).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._queue: list[_Op] = []
        self._busy = False
        self._thread = anyio.CapacityLimiter(1)
        self.commits = 0
        # Inputs past the highest index on file when opened have no row: no need to ask.
        self._last_index_on_file = -1

    def __repr__(self) -> str:
        return f"SQLiteJournal({str(self.path)!r})"

    async def open(self) -> None:
        """Open or create the file and check it is a journal of this library."""
        if self._conn is None:
            self._conn = await anyio.to_thread.run_sync(self._connect, limiter=self._thread)
            (last,) = self._conn.execute("SELECT coalesce(max(idx), -1) FROM inputs").fetchone()
            self._last_index_on_file = last

    def _connect(self) -> sqlite3.Connection:
        existed = self.path.exists() and self.path.stat().st_size > 0
        if existed:
            self._check_foreign_file()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            if existed:
                self._check_ours(conn)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            if not existed:
                conn.executescript(_SCHEMA)
                conn.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('created_by', 'nanobanana_async')"
                )
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise JournalError(f"{self.path} is not a usable journal: {exc}") from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_foreign_file(self) -> None:
        with self.path.open("rb") as handle:
            header = handle.read(16)
        if header != b"SQLite format 3\x00":
            raise JournalError(
                f"{self.path} exists but is not a nanobanana_async journal (not a SQLite "
                "file); it was left untouched: choose another --journal path"
            )

    def _check_ours(self, conn: sqlite3.Connection) -> None:
        (application_id,) = conn.execute("PRAGMA application_id").fetchone()
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if application_id != APPLICATION_ID:
            raise JournalError(
                f"{self.path} is a SQLite file but not a nanobanana_async journal; it was "
                "left untouched: choose another --journal path"
            )
        if version != SCHEMA_VERSION:
            raise JournalError(
                f"{self.path} is a journal of schema version {version}; this version of "
                f"nanobanana_async reads version {SCHEMA_VERSION}"
            )
        conn.execute("SELECT count(*) FROM inputs").fetchone()

    async def aclose(self) -> None:
        """Flush queued writes and close the file."""
        if self._conn is None:
            return
        await self._run(lambda conn: None)
        conn, self._conn = self._conn, None
        await anyio.to_thread.run_sync(conn.close, limiter=self._thread)

    async def _run(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """Queue ``work``; whoever finds the journal idle commits everything queued at once."""
        if self._conn is None:
            raise JournalError("the journal is not open; use 'async with journal:'")
        op = _Op(work)
        self._queue.append(op)
        if not self._busy:
            self._busy = True
            try:
                # Shielded: a cancelled caller must not strand the writes queued behind it.
                with anyio.CancelScope(shield=True):
                    while self._queue:
                        batch, self._queue = self._queue, []
                        await anyio.to_thread.run_sync(self._apply, batch, limiter=self._thread)
                        for queued in batch:
                            queued.done.set()
            finally:
                self._busy = False
        await op.done.wait()
        if op.error is not None:
            raise op.error
        return op.result

    def _apply(self, batch: list[_Op]) -> None:
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in batch:
                try:
                    op.result = op.work(conn)
                except sqlite3.Error as exc:
                    op.error = JournalError(f"journal {self.path}: {exc}")
            conn.execute("COMMIT")
            self.commits += 1
        except sqlite3.Error as exc:
            error = JournalError(f"journal {self.path} could not commit: {exc}")
            for op in batch:
                op.error = op.error or error
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    async def get(self, index: int) -> JournalEntry | None:
        """The row of input ``index``, if any."""
        if index > self._last_index_on_file:
            return None  # this run is the first to reach it, and writes go through this object

        def work(conn: sqlite3.Connection) -> JournalEntry | None:
            row = conn.execute(f"{_SELECT} WHERE idx = ?", (index,)).fetchone()
            return None if row is None else _entry(row)

        result: JournalEntry | None = await self._run(work)
        return result

    async def put(self, entry: JournalEntry) -> None:
        """Insert or replace ``entry``'s row; returns once committed."""
        values = _row(entry)
        await self._run(lambda conn: conn.execute(_UPSERT, values))

    async def entries(self) -> list[JournalEntry]:
        """Every row, in input order."""

        def work(conn: sqlite3.Connection) -> list[JournalEntry]:
            cursor = conn.execute(f"{_SELECT} ORDER BY idx")
            return [_entry(row) for row in cursor]

        result: list[JournalEntry] = await self._run(work)
        return result

    async def counts(self) -> dict[JournalState, int]:
        """How many rows are in each state."""

        def work(conn: sqlite3.Connection) -> dict[JournalState, int]:
            rows = conn.execute("SELECT state, count(*) FROM inputs GROUP BY state")
            return {JournalState(state): count for state, count in rows}

        result: dict[JournalState, int] = await self._run(work)
        return result


def read_entries(path: str | os.PathLike[str], *, page: int = 1000) -> Iterator[JournalEntry]:
    """Every row of a journal file in input order, read page by page (blocking; for tools).

    Opens the file read-only and checks it is a journal; never writes to it.
    """
    file = Path(path)
    if not file.is_file():
        raise JournalError(f"no journal at {file}")
    SQLiteJournal(file)._check_foreign_file()
    conn = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True)
    try:
        try:
            SQLiteJournal(file)._check_ours(conn)
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{file} is not a usable journal: {exc}") from None
        last = -1
        while True:
            rows = conn.execute(f"{_SELECT} WHERE idx > ? ORDER BY idx LIMIT ?", (last, page))
            batch = [_entry(row) for row in rows]
            if not batch:
                return
            yield from batch
            last = batch[-1].index
    finally:
        conn.close()
