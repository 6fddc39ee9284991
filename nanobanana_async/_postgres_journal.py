"""The shared journal: one PostgreSQL database, many named batches, many workers per batch.

Each input is a row keyed by ``(batch, request fingerprint, occurrence)``,
exactly as in the SQLite journal, so the same prompt file loaded twice adds
nothing and an edited line is a new input. Workers coordinate through row
leases: a worker takes an input by stamping its row with its id and a
deadline (``lease_until``, in the database's clock), renews the deadlines of
what it holds while it works, and writes a row only while the lease is its
own. A worker that dies stops renewing; once its deadlines pass, another
worker takes its rows and carries on from what they say (a submitted task is
polled again, never created again; a create cut off mid-flight is
uncertain). The schema is created and versioned here; a database whose
schema is newer than this library knows is refused, never touched. Every
statement reaches the database through ``_postgres_connection.Database``.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Final

import anyio
import attrs

from . import _postgres_sql as sql
from ._errors import ConfigurationError, JournalError
from ._journal import Journal, JournalEntry, JournalState, entry_from_row, row_of
from ._limits import BatchPacing
from ._postgres_connection import Database, is_postgres_url, redact_dsn

if TYPE_CHECKING:
    import asyncpg

__all__ = ["ALIVE_WITHIN", "PostgresJournal"]

#: Seconds between two looks at the batch's shared pace (its 429 pause and request rate).
_TICK: Final = 0.5
#: A worker not heard from for this long no longer counts for the batch's request rate.
ALIVE_WITHIN: Final = 10 * _TICK


class PostgresJournal(Journal):
    """A batch journal in PostgreSQL, shared by every worker of batch ``batch``.

    ``dsn`` is a ``postgresql://user:password@host:port/database`` connection
    string (the password never appears in a repr, log line or error).
    ``lease_seconds`` is how long an input stays with a worker that stops
    renewing it (renewed every third of that while the worker lives).
    ``reconnect_within`` bounds how long a write waits for a database that
    went away (a restart) before the job fails with ``JournalError``.
    ``max_requests_per_second`` sets the batch's request rate: at most that
    many API calls a second across all its workers, split evenly among the
    live ones. It is kept in the batch, so a worker that sets none follows
    it (None: keep what the batch has; 0: lift it).
    """

    def __init__(
        self,
        dsn: str,
        *,
        batch: str,
        lease_seconds: float = 30.0,
        reconnect_within: float = 60.0,
        pool_size: int = 10,
        max_requests_per_second: float | None = None,
    ) -> None:
        if not isinstance(batch, str) or not batch.strip():
            raise ConfigurationError(f"batch must be a non-empty name, got {batch!r}")
        if lease_seconds <= 0 or reconnect_within < 0:
            raise ConfigurationError("lease_seconds must be positive and reconnect_within >= 0")
        rate = max_requests_per_second
        if rate is not None and (
            isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < math.inf
        ):
            raise ConfigurationError(
                "max_requests_per_second must be a positive number (0 lifts the batch's "
                f"rate), got {rate!r}"
            )
        self.max_requests_per_second = rate
        self.batch = batch
        self.lease_seconds = float(lease_seconds)
        self.reconnect_within = float(reconnect_within)
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._shown = f"PostgresJournal({redact_dsn(dsn)!r}, batch={batch!r})"
        self._db = Database(
            dsn, label=self._shown, pool_size=pool_size, reconnect_within=self.reconnect_within
        )

    shared = True

    def __repr__(self) -> str:
        return self._shown

    @staticmethod
    def is_url(target: str) -> bool:
        """True for a ``postgresql://`` (or ``postgres://``) connection string."""
        return is_postgres_url(target)

    @staticmethod
    def redact(dsn: str) -> str:
        """The connection string with its password replaced by ``***``, fit to show."""
        return redact_dsn(dsn)

    # -- opening and closing --------------------------------------------------------

    async def open(self) -> None:
        """Connect, create or check the schema, register the batch and this worker."""
        await self._db.connect()
        try:
            # A database that is not there at the start is said at once, not waited for.
            await self._db.run(self._set_up, retry=False, failing="cannot connect")
        except BaseException:
            await self._db.close()
            raise

    async def _set_up(self, conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", sql.SCHEMA_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS nanobanana_meta (key text PRIMARY KEY, value text)"
            )
            found = await conn.fetchval(
                "SELECT value FROM nanobanana_meta WHERE key = 'schema_version'"
            )
            if found is None:
                await conn.execute(sql.SCHEMA)
                await conn.execute(
                    "INSERT INTO nanobanana_meta VALUES ('schema_version', $1)",
                    str(sql.SCHEMA_VERSION),
                )
            elif int(found) > sql.SCHEMA_VERSION:
                raise JournalError(
                    f"{self!r}: the database holds journal schema {found}, newer than this "
                    f"nanobanana_async knows ({sql.SCHEMA_VERSION}); upgrade nanobanana_async"
                )
            elif int(found) < sql.SCHEMA_VERSION:
                for version in range(int(found) + 1, sql.SCHEMA_VERSION + 1):
                    await conn.execute(sql.MIGRATIONS[version])
                await conn.execute(
                    "UPDATE nanobanana_meta SET value = $1 WHERE key = 'schema_version'",
                    str(sql.SCHEMA_VERSION),
                )
            await conn.execute(
                "INSERT INTO nanobanana_batches (name) VALUES ($1) ON CONFLICT DO NOTHING",
                self.batch,
            )
            await conn.execute(
                "INSERT INTO nanobanana_workers (batch, worker, host, pid) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                self.batch,
                self.worker,
                socket.gethostname(),
                os.getpid(),
            )
            if self.max_requests_per_second is not None:
                await conn.execute(
                    sql.SET_BATCH_RATE, self.batch, self.max_requests_per_second or None
                )

    async def aclose(self) -> None:
        """Leave the batch (what this worker holds goes to the others), and disconnect."""
        if not self._db.is_open:
            return
        with contextlib.suppress(JournalError):
            await self._db.run(self._sign_off, retry=False)
        await self._db.close()

    async def _sign_off(self, conn: asyncpg.Connection) -> None:
        """A stop (the batch done, or cut short): this worker leaves the workers' list.

        Inputs it still holds unfinished (a Ctrl-C) are left with a lease that
        has run out, as a dead worker's would be, so the batch's other workers
        take them over at once rather than finish without them.
        """
        async with conn.transaction():
            await conn.execute(
                "UPDATE nanobanana_inputs SET lease_until = now() - interval '1 second' "
                "WHERE batch = $1 AND lease_owner = $2",
                self.batch,
                self.worker,
            )
            await conn.execute(
                "DELETE FROM nanobanana_workers WHERE batch = $1 AND worker = $2",
                self.batch,
                self.worker,
            )

    @contextlib.asynccontextmanager
    async def working(self, pacing: BatchPacing | None = None) -> AsyncIterator[None]:
        """While a batch works: renew this worker's leases, and share the batch's pace.

        Leases are renewed every third of their length. Twice a second (and
        once before the first create, so a worker joining a paused batch waits
        too): a 429 pause of this worker's creates is written to the batch's
        row, one written there by another worker pauses this one's, and this
        worker's share of the batch's request rate is set.
        """
        async with anyio.create_task_group() as background:
            background.start_soon(self._renew_forever)
            if pacing is not None:
                shared = _SharedPace()
                await self._tick(pacing, shared)
                background.start_soon(self._tick_forever, pacing, shared)
            try:
                yield
            finally:
                background.cancel_scope.cancel()
                if pacing is not None:
                    pacing.limit_requests(None)

    async def _tick_forever(self, pacing: BatchPacing, shared: _SharedPace) -> None:
        while True:
            await anyio.sleep(_TICK)
            await self._tick(pacing, shared)

    async def _tick(self, pacing: BatchPacing, shared: _SharedPace) -> None:
        """Write this worker's pause if new since the last tick; take the batch's pause and rate."""
        gate = pacing.create_pause
        ours = max(gate.until - time.monotonic(), 0.0) if gate.until > shared.pause else 0.0

        async def tick(conn: asyncpg.Connection) -> Any:
            return await conn.fetchrow(sql.TICK, self.batch, ours, self.worker, ALIVE_WITHIN)

        try:
            row = await self._db.run(tick, retry=False)
        except JournalError:
            return  # the database is away: keep the pace as it was, look again next tick
        if row is None:
            return
        remaining, rate, alive = row
        if remaining is not None and remaining > 0:
            gate.pause_for(float(remaining))
        shared.pause = gate.until
        share = None if rate is None else float(rate) / max(int(alive), 1)
        if share != shared.rate:
            shared.rate = share
            pacing.limit_requests(share)

    async def _renew_forever(self) -> None:
        """Every third of a lease: push back the deadlines of every input this worker holds.

        After a failed renewal (the database away), try again every tick: once
        it is back, this worker's leases, run out meanwhile, are renewed before
        other workers (who look every few seconds) take them over.
        """
        while True:
            await anyio.sleep(self.lease_seconds / 3)
            while True:
                try:
                    await self._db.run(self._renew, retry=False)
                    break
                except JournalError:
                    await anyio.sleep(min(_TICK, self.lease_seconds / 3))

    async def _renew(self, conn: asyncpg.Connection) -> None:
        await conn.execute(
            "UPDATE nanobanana_inputs SET lease_until = now() + make_interval(secs => $3) "
            "WHERE batch = $1 AND lease_owner = $2",
            self.batch,
            self.worker,
            self.lease_seconds,
        )
        await conn.execute(
            "UPDATE nanobanana_workers SET seen_at = now() WHERE batch = $1 AND worker = $2",
            self.batch,
            self.worker,
        )

    # -- the store --------------------------------------------------------------------

    async def get(self, request_hash: str, occurrence: int) -> JournalEntry | None:
        """The row of this input, if any."""
        row = await self._db.run(
            lambda conn: conn.fetchrow(
                f"{sql.SELECT} WHERE batch = $1 AND request_hash = $2 AND occurrence = $3",
                self.batch,
                request_hash,
                occurrence,
            )
        )
        return None if row is None else entry_from_row(tuple(row))

    async def put(self, entry: JournalEntry) -> None:
        """Write ``entry``'s row, while the input is this worker's; returns once committed."""
        values = (self.batch, *row_of(entry), self.worker, self.lease_seconds)
        written = await self._db.run(lambda conn: conn.fetchval(sql.PUT, *values))
        if written is None:
            raise JournalError(
                f"{self!r}: input {entry.index} is held by another worker (this worker's "
                "lease on it ran out); its row was not changed"
            )

    async def claim(self, entry: JournalEntry) -> JournalEntry | None:
        """Take this input for this worker; its row (inserted if new), or None if held elsewhere.

        A settled row (saved, failed, uncertain) comes back as it is, with no lease.
        """
        values = (self.batch, *row_of(entry), self.worker, self.lease_seconds)
        row = await self._db.run(lambda conn: conn.fetchrow(sql.CLAIM, *values))
        return None if row is None else entry_from_row(tuple(row))

    async def let_go(self, request_hash: str, occurrence: int) -> None:
        """Give this worker's lease on one input back (it will not work on it after all)."""
        await self._db.run(
            lambda conn: conn.execute(
                "UPDATE nanobanana_inputs SET lease_owner = NULL, lease_until = NULL "
                "WHERE batch = $1 AND request_hash = $2 AND occurrence = $3 "
                "AND lease_owner = $4",
                self.batch,
                request_hash,
                occurrence,
                self.worker,
            )
        )

    async def leftovers(self) -> AsyncIterator[JournalEntry]:
        """Unsettled rows whose worker's lease ran out, taken a block at a time.

        Such a worker died, or stopped short (a Ctrl-C leaves its leases run
        out). While other live workers still hold unsettled rows, wait (they
        may stop too, and then their rows are ours); end when none is left but
        this worker's own. Rows nobody holds are not taken: a worker let them
        go on purpose (its ``max_jobs`` cap was reached).
        """
        while True:
            rows = await self._db.run(self._take_expired)
            for row in rows:
                yield entry_from_row(tuple(row))
            if rows:
                continue
            held = await self._db.run(
                lambda conn: conn.fetchval(
                    "SELECT count(*) FROM nanobanana_inputs WHERE batch = $1 "
                    "AND state NOT IN ('saved', 'failed', 'uncertain') "
                    "AND lease_owner IS NOT NULL AND lease_owner <> $2",
                    self.batch,
                    self.worker,
                )
            )
            if not held:
                return
            await anyio.sleep(min(self.lease_seconds / 4, 2.0))

    async def _take_expired(self, conn: asyncpg.Connection) -> list[Any]:
        lease = self.lease_seconds
        rows: list[Any] = await conn.fetch(sql.TAKE_EXPIRED, self.batch, self.worker, lease)
        return rows

    async def entries(self) -> list[JournalEntry]:
        """Every row of this batch, in input order."""
        rows = await self._db.run(
            lambda conn: conn.fetch(f"{sql.SELECT} WHERE batch = $1 ORDER BY idx", self.batch)
        )
        return [entry_from_row(tuple(row)) for row in rows]

    async def counts(self) -> dict[JournalState, int]:
        """How many rows of this batch are in each state."""
        rows = await self._db.run(
            lambda conn: conn.fetch(
                "SELECT state, count(*) FROM nanobanana_inputs WHERE batch = $1 GROUP BY state",
                self.batch,
            )
        )
        return {JournalState(state): count for state, count in rows}

    async def count_unrequested(self, asked: Mapping[str, int]) -> int:
        """How many rows of this batch the input did not ask for (counted a page at a time)."""
        unrequested = 0
        async for request_hash, occurrence in self._keys():
            unrequested += occurrence >= asked.get(request_hash, 0)
        return unrequested

    async def _keys(self, page: int = 5000) -> AsyncIterator[tuple[str, int]]:
        """Every input's key, a page at a time, so a huge batch is never held in memory."""
        after: tuple[str, int] = ("", -1)
        while True:

            async def read(conn: asyncpg.Connection, after: tuple[str, int] = after) -> Any:
                return await conn.fetch(
                    "SELECT request_hash, occurrence FROM nanobanana_inputs WHERE batch = $1 "
                    "AND (request_hash, occurrence) > ($2, $3) "
                    "ORDER BY request_hash, occurrence LIMIT $4",
                    self.batch,
                    *after,
                    page,
                )

            rows = await self._db.run(read)
            for row in rows:
                yield row[0], row[1]
            if len(rows) < page:
                return
            after = (rows[-1][0], rows[-1][1])


@attrs.define
class _SharedPace:
    """What this worker last took from the batch: its pause (monotonic deadline) and rate share."""

    pause: float = 0.0
    rate: float | None = None
