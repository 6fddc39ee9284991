"""Reading a PostgreSQL batch for tools: its rows and its workers, with nothing written.

The manifest, the contact sheet, ``nanobanana journal`` and a dry run read a
batch this way, without registering as a worker or touching a lease.
"""

from __future__ import annotations

import attrs

from . import _postgres_sql as sql
from ._errors import JournalError
from ._journal import JournalEntry, entry_from_row
from ._postgres_connection import import_asyncpg, redact_dsn
from ._postgres_journal import ALIVE_WITHIN

__all__ = ["BatchWorker", "PostgresBatch", "read_postgres_journal"]


@attrs.frozen
class BatchWorker:
    """A worker of a batch, and how many unsettled inputs it holds under a live lease."""

    worker: str
    host: str
    pid: int
    seen_ago: float
    holding: int


@attrs.frozen
class PostgresBatch:
    """What a PostgreSQL batch holds: its rows (in input order), its workers, and its pace.

    ``in_flight`` holds the keys (``JournalEntry.key``) of unfinished inputs
    a live worker holds: a ``submitting`` one among them is a create on the
    wire, not an uncertain one. ``max_requests_per_second`` is the batch's
    request rate (None: none set), split among its live workers;
    ``creates_paused_for`` is how many more seconds a 429 seen by one of them
    pauses every worker's creates (0: none).
    """

    entries: list[JournalEntry]
    workers: list[BatchWorker]
    in_flight: frozenset[tuple[str, int]] = frozenset()
    max_requests_per_second: float | None = None
    creates_paused_for: float = 0.0

    @property
    def live_workers(self) -> int:
        """Workers heard from lately: the ones the batch's request rate is split among."""
        return sum(worker.seen_ago < ALIVE_WITHIN for worker in self.workers)


async def read_postgres_journal(dsn: str, batch: str, *, missing_ok: bool = False) -> PostgresBatch:
    """A batch's rows, workers and pace, read without registering as a worker.

    For tools (the manifest, ``nanobanana journal``, a dry run): nothing is
    written. A database or batch with no journal yet is an error, or, with
    ``missing_ok``, an empty batch.
    """
    asyncpg = import_asyncpg()
    shown = redact_dsn(dsn)
    try:
        conn = await asyncpg.connect(dsn, timeout=30)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        detail = str(exc).replace(dsn, shown)
        raise JournalError(f"cannot read {shown}: {type(exc).__name__}: {detail}") from None
    try:
        if await conn.fetchval("SELECT to_regclass('nanobanana_meta')") is None:
            if missing_ok:
                return PostgresBatch([], [])
            raise JournalError(f"{shown} holds no nanobanana journal")
        pace = await conn.fetchrow(
            "SELECT max_requests_per_second, "
            "greatest(extract(epoch FROM creates_paused_until - now())::float8, 0) "
            "FROM nanobanana_batches WHERE name = $1",
            batch,
        )
        if pace is None:
            if missing_ok:
                return PostgresBatch([], [])
            raise JournalError(f"{shown} has no batch {batch!r}")
        rows = await conn.fetch(f"{sql.SELECT} WHERE batch = $1 ORDER BY idx", batch)
        held = await conn.fetch(
            "SELECT request_hash, occurrence FROM nanobanana_inputs WHERE batch = $1 "
            "AND lease_until > now() AND state NOT IN ('saved', 'failed', 'uncertain')",
            batch,
        )
        workers = await conn.fetch(
            "SELECT w.worker, w.host, w.pid, extract(epoch FROM now() - w.seen_at), "
            "(SELECT count(*) FROM nanobanana_inputs i WHERE i.batch = w.batch "
            "AND i.lease_owner = w.worker AND i.lease_until > now() "
            "AND i.state NOT IN ('saved', 'failed', 'uncertain')) "
            "FROM nanobanana_workers w WHERE w.batch = $1 ORDER BY w.started_at",
            batch,
        )
    except asyncpg.PostgresError as exc:
        raise JournalError(f"cannot read {shown}: {type(exc).__name__}: {exc}") from None
    finally:
        await conn.close()
    entries = [entry_from_row(tuple(row)) for row in rows]
    holders = [
        BatchWorker(worker=w[0], host=w[1], pid=w[2], seen_ago=float(w[3]), holding=w[4])
        for w in workers
    ]
    in_flight = frozenset((row[0], row[1]) for row in held)
    return PostgresBatch(entries, holders, in_flight, pace[0], float(pace[1] or 0.0))
