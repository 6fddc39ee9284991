"""The one seam between the PostgreSQL journal and its database: a pool, bounded reconnects.

Every statement the journal runs goes through ``Database.run``: a connection
lost to a restart or the network is retried for a bounded time (each
statement is idempotent, so running it again is safe), and every error is
said in our own words with the connection string's password hidden.
asyncpg is imported on first use, so ``import nanobanana_async`` works
without it; the ``postgres`` extra installs it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio
import yarl

from ._errors import ConfigurationError, JournalError

if TYPE_CHECKING:
    import asyncpg

__all__ = ["Database", "import_asyncpg", "is_postgres_url", "redact_dsn"]

T = TypeVar("T")
_HIDDEN: Final = "***"


def redact_dsn(dsn: str) -> str:
    """The connection string with any password replaced by ``***`` (for reprs and errors)."""
    try:
        url = yarl.URL(dsn)
    except (TypeError, ValueError):
        return "postgresql://***"
    if url.password is not None:
        url = url.with_password(_HIDDEN)
    if "password" in url.query:
        url = url.update_query({"password": _HIDDEN})
    return str(url)


def is_postgres_url(target: str) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) connection string."""
    return target.startswith(("postgresql://", "postgres://"))


def import_asyncpg() -> Any:
    """asyncpg, or a ConfigurationError naming the extra that installs it."""
    try:
        import asyncpg
    except ImportError:
        raise ConfigurationError(
            "the PostgreSQL journal needs asyncpg: pip install 'nanobanana-async[postgres]'"
        ) from None
    return asyncpg


class Database:
    """A small connection pool to ``dsn``, and the only way statements reach it.

    ``label`` names the owner in errors (it must not hold the password);
    ``reconnect_within`` bounds how long a statement waits for a database
    that went away before it fails with ``JournalError``.
    """

    def __init__(self, dsn: str, *, label: str, pool_size: int, reconnect_within: float) -> None:
        self._dsn = dsn
        self._label = label
        self._pool_size = pool_size
        self.reconnect_within = reconnect_within
        self._pool: asyncpg.Pool | None = None

    @property
    def is_open(self) -> bool:
        """Whether ``connect`` was called and ``close`` not yet."""
        return self._pool is not None

    async def connect(self) -> None:
        """Make the pool (connections are opened as statements need them)."""
        asyncpg = import_asyncpg()
        try:
            # No floor of idle connections: a pool keeping one logs a traceback of its own
            # while the database restarts.
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=0,
                max_size=self._pool_size,
                command_timeout=30,
                max_inactive_connection_lifetime=30,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise self.error("cannot connect", exc) from None

    async def close(self) -> None:
        """Close the pool: politely for up to 5 s, then by force."""
        pool, self._pool = self._pool, None
        if pool is not None:
            with anyio.move_on_after(5, shield=True):
                await pool.close()
            pool.terminate()

    async def run(
        self,
        work: Callable[[Any], Awaitable[T]],
        *,
        retry: bool = True,
        failing: str = "lost the database",
    ) -> T:
        """Run ``work`` on a pooled connection; a lost connection is retried (bounded).

        Without ``retry``, one attempt: a lost connection fails at once, said
        as ``failing``.
        """
        asyncpg = import_asyncpg()
        if self._pool is None:
            raise JournalError(f"{self._label} is not open; use 'async with journal:'")
        # What a database going away (a restart, a lost network) looks like from here;
        # InternalClientError is a connection that died in the middle of a statement.
        lost: tuple[type[BaseException], ...] = (
            OSError,
            TimeoutError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,
            asyncpg.CannotConnectNowError,
            asyncpg.ConnectionDoesNotExistError,
            asyncpg.AdminShutdownError,
            asyncpg.ConnectionFailureError,
        )
        deadline = anyio.current_time() + (self.reconnect_within if retry else 0.0)
        delay = 0.1
        while True:
            try:
                async with self._pool.acquire() as conn:
                    return await work(conn)
            except lost as exc:
                if anyio.current_time() + delay > deadline:
                    raise self.error(failing, exc) from None
            except asyncpg.PostgresError as exc:
                raise self.error("failed", exc) from None
            await anyio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def error(self, what: str, exc: BaseException) -> JournalError:
        """A JournalError in our own words: the connection string only ever redacted."""
        detail = str(exc).replace(self._dsn, redact_dsn(self._dsn))
        return JournalError(f"{self._label} {what}: {type(exc).__name__}: {detail}")
