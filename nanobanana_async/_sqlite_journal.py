"""The embedded journal: one SQLite file, one writer, group commit.

Stdlib ``sqlite3`` in WAL mode, every write committed off the event loop,
with concurrent writes grouped into one transaction (group commit) so a
thousand jobs in flight cost a handful of commits, not a thousand. Opening
takes an OS lock first (``_lock``), before the file is read, created or
migrated, so a second writer is refused before it can touch anything.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import anyio

from ._errors import JournalError
from ._journal import Journal, JournalEntry, JournalState, entry_from_row, row_of
from ._lock import FOLDER_LOCK_NAME, RunLock, wait_while_stopping

__all__ = ["SCHEMA_VERSION", "JournalReader", "SQLiteJournal", "read_journal"]

#: Marks a SQLite file as ours (PRAGMA application_id), so a foreign file is never touched.
APPLICATION_ID: Final = 0x4E42_4A31  # "NBJ1"
#: 1: rows keyed by input position. 2: rows keyed by (request fingerprint, occurrence).
SCHEMA_VERSION: Final = 2
#: How long a run waits for the locks of a batch of this process that is being stopped.
_STOPPING_WAIT: Final = 30.0

_TABLE: Final = """
CREATE TABLE {name} (
    request_hash TEXT NOT NULL,
    occurrence INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    request TEXT NOT NULL,
    state TEXT NOT NULL,
    client_key TEXT, task_id TEXT, image_url TEXT, expires_at REAL,
    path TEXT, sha256 TEXT, error_type TEXT, error TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (request_hash, occurrence)
)
"""
_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
{_TABLE.format(name="inputs")};
CREATE INDEX inputs_by_position ON inputs (idx);
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {SCHEMA_VERSION};
"""
# Version 1 keyed rows by position; an input's occurrence is its rank among the
# rows of the same request in position order, which is what a rerun of the same
# file computes, so a migrated journal resumes exactly as before.
# Built from constants only, hence the noqa.
_MIGRATE_FROM_1: Final = f"""
{_TABLE.format(name="inputs_v2")};
INSERT INTO inputs_v2 (request_hash, occurrence, idx, request, state, client_key, task_id,
    image_url, expires_at, path, sha256, error_type, error, updated_at)
SELECT request_hash, row_number() OVER (PARTITION BY request_hash ORDER BY idx) - 1, idx,
    request, state, client_key, task_id, image_url, expires_at, path, sha256, error_type,
    error, updated_at
FROM inputs;
DROP TABLE inputs;
ALTER TABLE inputs_v2 RENAME TO inputs;
CREATE INDEX inputs_by_position ON inputs (idx);
PRAGMA user_version = {SCHEMA_VERSION};
"""  # noqa: S608
# Spelled out (not built from ROW_COLUMNS) so every statement is a literal.
_UPSERT: Final = (
    "INSERT OR REPLACE INTO inputs (request_hash, occurrence, idx, request, state, client_key, "
    "task_id, image_url, expires_at, path, sha256, error_type, error, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# read_journal's pages, in input order; version 1 gets occurrences as its migration would.
_PAGE: Final = (
    "SELECT request_hash, occurrence, idx, request, state, client_key, task_id, image_url, "
    "expires_at, path, sha256, error_type, error, updated_at, rowid FROM inputs "
    "WHERE (idx, rowid) > (?, ?) ORDER BY idx, rowid LIMIT ?"
)
_PAGE_V1: Final = (
    "SELECT * FROM (SELECT request_hash, "
    "row_number() OVER (PARTITION BY request_hash ORDER BY idx) - 1, idx, request, state, "
    "client_key, task_id, image_url, expires_at, path, sha256, error_type, error, updated_at, "
    "rowid AS r FROM inputs) WHERE (idx, r) > (?, ?) ORDER BY idx, r LIMIT ?"
)
_SELECT: Final = (
    "SELECT request_hash, occurrence, idx, request, state, client_key, task_id, image_url, "
    "expires_at, path, sha256, error_type, error, updated_at FROM inputs"
)


class _Op:
    """One queued piece of work for the journal's connection, and its result."""

    __slots__ = ("done", "error", "result", "work")

    def __init__(self, work: Callable[[sqlite3.Connection], Any]) -> None:
        self.work = work
        self.done = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None


def _check_header(path: Path) -> None:
    with path.open("rb") as handle:
        header = handle.read(16)
    if header != b"SQLite format 3\x00":
        raise JournalError(
            f"{path} exists but is not a nanobanana_async journal (not a SQLite "
            "file); it was left untouched: choose another journal path"
        )


def _check_ours(path: Path, conn: sqlite3.Connection) -> int:
    """The journal's schema version; JournalError if the file is not a journal we can read."""
    (application_id,) = conn.execute("PRAGMA application_id").fetchone()
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if application_id != APPLICATION_ID:
        raise JournalError(
            f"{path} is a SQLite file but not a nanobanana_async journal; it was "
            "left untouched: choose another journal path"
        )
    if version not in (1, SCHEMA_VERSION):
        raise JournalError(
            f"{path} is a journal of schema version {version}, written by a newer "
            f"nanobanana_async; this version reads versions 1 and {SCHEMA_VERSION}: upgrade"
        )
    conn.execute("SELECT count(*) FROM inputs").fetchone()
    return int(version)


class SQLiteJournal(Journal):
    """The embedded journal: one SQLite file (WAL), e.g. ``out/.nanobanana-journal.sqlite``.

    Opening it locks it (``PATH.lock``) and, when ``folder`` is given, the
    folder the batch saves into (``FOLDER/.nanobanana.lock``), for as long as
    it is open: a second writer, in this process or another, gets
    ``JournalLockedError`` naming the holder. A journal of the previous schema
    is migrated in place (under the lock). A file that exists but is not a
    journal of this library (or is corrupted) raises ``JournalError`` and is
    left exactly as it was. ``commits`` counts the transactions written
    (concurrent writes share one).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, folder: str | os.PathLike[str] | None = None
    ) -> None:
        self.path = Path(path)
        self.folder = Path(folder) if folder is not None else None
        self._locks: list[RunLock] = []
        self._conn: sqlite3.Connection | None = None
        self._queue: list[_Op] = []
        self._busy = False
        self._thread = anyio.CapacityLimiter(1)
        self.commits = 0
        # While the file holds no row, look-ups need no trip to it: every write goes
        # through this object, and the first one clears the flag.
        self._empty = False

    def __repr__(self) -> str:
        return f"SQLiteJournal({str(self.path)!r})"

    async def open(self) -> None:
        """Lock, then open or create the file and check it is a journal of this library."""
        if self._conn is None:
            connect = self._lock_and_connect
            self._conn, self._empty = await anyio.to_thread.run_sync(connect, limiter=self._thread)

    def _lock_and_connect(self) -> tuple[sqlite3.Connection, bool]:
        """Take the locks (folder first), then connect; on failure give back only what this took."""
        taken: list[RunLock] = []
        try:
            if self.folder is not None:
                self.folder.mkdir(parents=True, exist_ok=True)
                taken.append(RunLock(self.folder / FOLDER_LOCK_NAME, guarded=self.folder))
                wait_while_stopping(taken[-1].path, _STOPPING_WAIT)
                taken[-1].acquire()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            taken.append(RunLock(self.path.with_name(self.path.name + ".lock"), guarded=self.path))
            wait_while_stopping(taken[-1].path, _STOPPING_WAIT)
            taken[-1].acquire()
            conn = self._connect()
        except BaseException:
            for lock in reversed(taken):
                lock.release()
            raise
        self._locks = taken
        (has_rows,) = conn.execute("SELECT EXISTS (SELECT 1 FROM inputs)").fetchone()
        return conn, not has_rows

    def _unlock(self) -> None:
        while self._locks:
            self._locks.pop().release()

    def stopping(self) -> None:
        """Its batch is being stopped: a rerun of it in this process waits for the locks."""
        for lock in self._locks:
            lock.stopping()

    def _connect(self) -> sqlite3.Connection:
        existed = self.path.exists() and self.path.stat().st_size > 0
        if existed:
            _check_header(self.path)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            version = _check_ours(self.path, conn) if existed else None
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            if version is None:
                conn.executescript(_SCHEMA)
                conn.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('created_by', 'nanobanana_async')"
                )
            elif version == 1:
                conn.executescript(f"BEGIN IMMEDIATE; {_MIGRATE_FROM_1} COMMIT;")
        except sqlite3.DatabaseError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
            raise JournalError(f"{self.path} is not a usable journal: {exc}") from None
        except BaseException:
            conn.close()
            raise
        return conn

    async def aclose(self) -> None:
        """Flush queued writes, close the file and give the locks back."""
        if self._conn is None:
            return
        await self._run(lambda conn: None)
        conn, self._conn = self._conn, None

        def close() -> None:
            try:
                # Out of WAL mode once the run is over: the -wal and -shm files go, and
                # read-only readers (the manifest, 'nanobanana journal', a dry run) then
                # read the file alone, creating nothing beside it. A reader open right
                # now keeps it in WAL mode; the next run switches back to WAL anyway.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA journal_mode = DELETE")
                conn.close()
            finally:
                self._unlock()

        await anyio.to_thread.run_sync(close, limiter=self._thread)

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

    async def get(self, request_hash: str, occurrence: int) -> JournalEntry | None:
        """The row of this input, if any."""
        if self._empty:
            return None

        def work(conn: sqlite3.Connection) -> JournalEntry | None:
            query = f"{_SELECT} WHERE request_hash = ? AND occurrence = ?"
            row = conn.execute(query, (request_hash, occurrence)).fetchone()
            return None if row is None else entry_from_row(row)

        result: JournalEntry | None = await self._run(work)
        return result

    async def put(self, entry: JournalEntry) -> None:
        """Insert or replace ``entry``'s row; returns once committed."""
        values = row_of(entry)
        self._empty = False  # from now on, look-ups must ask the file
        await self._run(lambda conn: conn.execute(_UPSERT, values))

    async def entries(self) -> list[JournalEntry]:
        """Every row, in input order."""

        def work(conn: sqlite3.Connection) -> list[JournalEntry]:
            cursor = conn.execute(f"{_SELECT} ORDER BY idx, rowid")
            return [entry_from_row(row) for row in cursor]

        result: list[JournalEntry] = await self._run(work)
        return result

    async def counts(self) -> dict[JournalState, int]:
        """How many rows are in each state."""

        def work(conn: sqlite3.Connection) -> dict[JournalState, int]:
            rows = conn.execute("SELECT state, count(*) FROM inputs GROUP BY state")
            return {JournalState(state): count for state, count in rows}

        result: dict[JournalState, int] = await self._run(work)
        return result

    async def count_unrequested(self, asked: Mapping[str, int]) -> int:
        """How many rows a batch did not ask for (read key by key, never all in memory)."""

        def work(conn: sqlite3.Connection) -> int:
            rows = conn.execute("SELECT request_hash, occurrence FROM inputs")
            return sum(occurrence >= asked.get(key, 0) for key, occurrence in rows)

        result: int = await self._run(work)
        return result


class JournalReader:
    """A read-only view of a journal file, for tools: look-ups by input and paged reads.

    Opens the file read-only and never writes to it, so it may be read while a
    run holds the journal; everything it reads comes from one snapshot. A
    journal of schema version 1 is read as it is (occurrences derived as its
    migration would) without being migrated.
    Blocking; use it as ``with JournalReader(path) as reader:``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        file = Path(path)
        if not file.is_file():
            raise JournalError(f"no journal at {file}")
        _check_header(file)
        self.path = file
        self._conn = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True)
        try:
            self.version = _check_ours(file, self._conn)
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise JournalError(f"{file} is not a usable journal: {exc}") from None
        except BaseException:
            self._conn.close()
            raise
        # One read transaction for the reader's life: every page and look-up sees the
        # same snapshot, even while a run rewrites rows (WAL readers never block it).
        self._conn.execute("BEGIN")

    def __enter__(self) -> JournalReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        self._conn.close()

    def get(self, request_hash: str, occurrence: int) -> JournalEntry | None:
        """The row of this input, if any."""
        if self.version != SCHEMA_VERSION:
            return next(
                (e for e in self if e.key == (request_hash, occurrence)), None
            )  # a version-1 journal is read once before its first run migrates it
        query = f"{_SELECT} WHERE request_hash = ? AND occurrence = ?"
        row = self._conn.execute(query, (request_hash, occurrence)).fetchone()
        return None if row is None else entry_from_row(row)

    def __iter__(self) -> Iterator[JournalEntry]:
        """Every row in input order, read a page at a time."""
        query = _PAGE if self.version == SCHEMA_VERSION else _PAGE_V1
        last: tuple[int, int] = (-1, -1)
        while True:
            rows = self._conn.execute(query, (*last, 1000)).fetchall()
            if not rows:
                return
            for row in rows:
                yield entry_from_row(row[:-1])
            last = (rows[-1][2], rows[-1][-1])


def read_journal(path: str | os.PathLike[str]) -> Iterator[JournalEntry]:
    """Every row of a journal file in input order, read page by page (blocking; for tools)."""
    with JournalReader(path) as reader:
        yield from reader
