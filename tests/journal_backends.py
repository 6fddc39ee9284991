"""The journal's resume tests run against both stores: SQLite (embedded) and PostgreSQL (shared).

``journal_backend`` is parametrised over the two; a test asks it what to pass
as ``generate_many(journal=...)`` for an output folder, and reads the rows
back through the store's own interface.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nanobanana_async import Journal, JournalEntry, PostgresJournal, read_journal


class JournalBackend:
    """One store under test: ``journal(out)`` for a batch, ``entries(out)`` to read it back."""

    def __init__(self, name: str, dsn: str | None = None) -> None:
        self.name = name
        self._dsn = dsn

    def __repr__(self) -> str:
        return self.name

    def journal(self, out: Path) -> Path | Journal:
        """A fresh handle on the same journal each call, as a rerun would open it."""
        if self._dsn is None:
            return out / "journal.sqlite"
        return PostgresJournal(self._dsn, batch=f"tests-{out.name}")

    async def entries(self, out: Path) -> list[JournalEntry]:
        """Every row, in input order."""
        store = self.journal(out)
        if isinstance(store, Path):
            return list(read_journal(store))
        async with store:
            return await store.entries()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def journal_backend(request: pytest.FixtureRequest) -> JournalBackend:
    """SQLite, then PostgreSQL (a fresh database of the suite's own server)."""
    if request.param == "sqlite":
        return JournalBackend("sqlite")
    dsn: str = request.getfixturevalue("postgres_dsn")
    return JournalBackend("postgres", dsn)
