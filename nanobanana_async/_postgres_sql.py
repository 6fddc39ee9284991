"""The SQL of the PostgreSQL journal: its schema and every statement it runs, as constants.

Statements take the batch's name as ``$1``; the ones that write a row take
the worker's id and the lease's length in seconds last, so a write lands
only while the row is free, the writer's own, or its holder's lease has run
out. Kept apart from the journal's logic so each reads on its own.
"""

from __future__ import annotations

from typing import Final

from ._journal import ROW_COLUMNS

__all__ = [
    "CLAIM",
    "COLUMN_LIST",
    "MIGRATIONS",
    "PUT",
    "SCHEMA",
    "SCHEMA_LOCK",
    "SCHEMA_VERSION",
    "SELECT",
    "SET_BATCH_RATE",
    "TAKE_EXPIRED",
    "TICK",
]

#: 1: batches, inputs with leases, workers. 2: a batch's shared request rate.
SCHEMA_VERSION: Final = 2

#: Any number will do, as long as it is always the same: it serialises schema set-up.
SCHEMA_LOCK: Final = 0x4E42_4A31

SCHEMA: Final = """
CREATE TABLE nanobanana_batches (
    name text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    creates_paused_until timestamptz,
    max_requests_per_second double precision
);
CREATE TABLE nanobanana_inputs (
    batch text NOT NULL REFERENCES nanobanana_batches (name) ON DELETE CASCADE,
    request_hash text NOT NULL,
    occurrence integer NOT NULL,
    idx bigint NOT NULL,
    request text NOT NULL,
    state text NOT NULL,
    client_key text, task_id text, image_url text, expires_at double precision,
    path text, sha256 text, error_type text, error text,
    updated_at double precision NOT NULL,
    lease_owner text,
    lease_until timestamptz,
    PRIMARY KEY (batch, request_hash, occurrence)
);
CREATE INDEX nanobanana_inputs_by_position ON nanobanana_inputs (batch, idx);
CREATE TABLE nanobanana_workers (
    batch text NOT NULL REFERENCES nanobanana_batches (name) ON DELETE CASCADE,
    worker text NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (batch, worker)
);
"""
#: What brings a database at version ``n - 1`` to version ``n`` (``SCHEMA`` is the latest).
MIGRATIONS: Final = {
    2: "ALTER TABLE nanobanana_batches ADD COLUMN max_requests_per_second double precision",
}

COLUMN_LIST: Final = ", ".join(ROW_COLUMNS)
SELECT: Final = f"SELECT {COLUMN_LIST} FROM nanobanana_inputs"  # noqa: S608 (constants)
# Writes only while the row is free, this worker's, or its holder's lease has run out;
# a settled row gives its lease back.
PUT: Final = f"""
INSERT INTO nanobanana_inputs (batch, {COLUMN_LIST}, lease_owner, lease_until)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
    $16, now() + make_interval(secs => $17))
ON CONFLICT (batch, request_hash, occurrence) DO UPDATE SET
    idx = EXCLUDED.idx, request = EXCLUDED.request, state = EXCLUDED.state,
    client_key = EXCLUDED.client_key, task_id = EXCLUDED.task_id,
    image_url = EXCLUDED.image_url, expires_at = EXCLUDED.expires_at, path = EXCLUDED.path,
    sha256 = EXCLUDED.sha256, error_type = EXCLUDED.error_type, error = EXCLUDED.error,
    updated_at = EXCLUDED.updated_at,
    lease_owner = CASE WHEN EXCLUDED.state IN ('saved', 'failed', 'uncertain')
        THEN NULL ELSE EXCLUDED.lease_owner END,
    lease_until = CASE WHEN EXCLUDED.state IN ('saved', 'failed', 'uncertain')
        THEN NULL ELSE EXCLUDED.lease_until END
WHERE nanobanana_inputs.lease_owner IS NULL OR nanobanana_inputs.lease_owner = $16
    OR nanobanana_inputs.lease_until < now()
RETURNING 1
"""  # noqa: S608 (constants)
# Take an input for this worker: insert it (pending) if new, else stamp the lease on it
# unless another worker holds a live one. Settled rows are returned without a lease.
CLAIM: Final = f"""
INSERT INTO nanobanana_inputs (batch, {COLUMN_LIST}, lease_owner, lease_until)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
    $16, now() + make_interval(secs => $17))
ON CONFLICT (batch, request_hash, occurrence) DO UPDATE SET
    idx = EXCLUDED.idx,
    lease_owner = CASE WHEN nanobanana_inputs.state IN ('saved', 'failed', 'uncertain')
        THEN nanobanana_inputs.lease_owner ELSE EXCLUDED.lease_owner END,
    lease_until = CASE WHEN nanobanana_inputs.state IN ('saved', 'failed', 'uncertain')
        THEN nanobanana_inputs.lease_until ELSE EXCLUDED.lease_until END
WHERE nanobanana_inputs.state IN ('saved', 'failed', 'uncertain')
    OR nanobanana_inputs.lease_owner IS NULL OR nanobanana_inputs.lease_owner = $16
    OR nanobanana_inputs.lease_until < now()
RETURNING {COLUMN_LIST}
"""  # noqa: S608 (constants)


# A block of rows whose holder's lease ran out, leased to this worker; rows other workers
# are taking at this moment are skipped, not waited for.
TAKE_EXPIRED: Final = f"""
UPDATE nanobanana_inputs SET lease_owner = $2, lease_until = now() + make_interval(secs => $3)
WHERE (batch, request_hash, occurrence) IN (
    SELECT batch, request_hash, occurrence FROM nanobanana_inputs
    WHERE batch = $1 AND state NOT IN ('saved', 'failed', 'uncertain')
        AND lease_owner IS NOT NULL AND lease_until < now()
    ORDER BY idx LIMIT 32 FOR UPDATE SKIP LOCKED)
RETURNING {COLUMN_LIST}
"""  # noqa: S608 (constants)


# Twice a second while a batch works: mark this worker ($3) alive, push its 429 pause ($2
# seconds from now, 0 for none), and read the batch's pause (seconds left), its request
# rate, and how many workers were alive in the last $4 seconds (this one included).
TICK: Final = """
WITH alive AS (
    UPDATE nanobanana_workers SET seen_at = now() WHERE batch = $1 AND worker = $3
), batch AS (
    UPDATE nanobanana_batches SET creates_paused_until = CASE WHEN $2::float8 > 0
        THEN greatest(coalesce(creates_paused_until, now()),
            now() + make_interval(secs => $2::float8))
        ELSE creates_paused_until END
    WHERE name = $1
    RETURNING creates_paused_until, max_requests_per_second
)
SELECT extract(epoch FROM creates_paused_until - now())::float8, max_requests_per_second,
    (SELECT count(*) FROM nanobanana_workers WHERE batch = $1
        AND (worker = $3 OR seen_at > now() - make_interval(secs => $4::float8)))
FROM batch
"""

# The batch's request rate, for every worker ($2: calls per second; NULL lifts it).
SET_BATCH_RATE: Final = "UPDATE nanobanana_batches SET max_requests_per_second = $2 WHERE name = $1"
