"""The PostgreSQL journal on its own: schema, named batches, leases, and a password kept secret.

The resume, content-identity and uncertain-create behaviour it shares with
the SQLite journal is tested against both stores in ``test_journal.py`` and
``test_journal_identity.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from nanobanana_async import (
    ConfigurationError,
    JournalEntry,
    JournalError,
    JournalState,
    PostgresJournal,
    request_fingerprint,
)
from nanobanana_async.testing import Simulator

from .helpers import fast_client, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

PROMPTS = [f"a heron in the reeds, plate {number}" for number in range(6)]


def pending(prompt: str, index: int = 0) -> JournalEntry:
    from nanobanana_async import ImageRequest

    request = ImageRequest(prompt=prompt)
    return JournalEntry(
        index=index,
        request_hash=request_fingerprint(request),
        request=request.to_payload(),
        state=JournalState.PENDING,
    )


async def saved_in(sim: Simulator, out: Path, journal: PostgresJournal) -> int:
    async with fast_client(sim) as client:
        outcomes = [o async for o in client.generate_many(PROMPTS, save_to=out, journal=journal)]
    return sum(outcome.ok for outcome in outcomes)


async def test_one_database_holds_many_named_batches_apart(
    sim: Simulator, tmp_path: Path, postgres_dsn: str
) -> None:
    assert await saved_in(sim, tmp_path / "a", PostgresJournal(postgres_dsn, batch="a")) == 6
    assert await saved_in(sim, tmp_path / "b", PostgresJournal(postgres_dsn, batch="b")) == 6
    assert sim.counters.creates == 12  # the same prompts in another batch are other inputs
    again = PostgresJournal(postgres_dsn, batch="a")
    assert await saved_in(sim, tmp_path / "a", again) == 6
    assert sim.counters.creates == 12
    async with again:
        assert await again.counts() == {JournalState.SAVED: 6}


async def test_a_schema_newer_than_this_library_is_refused_and_left_alone(
    postgres_dsn: str,
) -> None:
    import asyncpg

    async with PostgresJournal(postgres_dsn, batch="x"):
        pass
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute("UPDATE nanobanana_meta SET value = '99' WHERE key = 'schema_version'")
        with pytest.raises(JournalError, match="schema 99, newer than this"):
            async with PostgresJournal(postgres_dsn, batch="x"):
                pass
        version = await conn.fetchval(
            "SELECT value FROM nanobanana_meta WHERE key = 'schema_version'"
        )
        assert version == "99"
    finally:
        await conn.close()


async def test_an_input_leased_to_a_live_worker_is_not_taken_by_another(
    postgres_dsn: str,
) -> None:
    first, second = two_workers(postgres_dsn, first_lease=30)
    entry = pending("a kingfisher")
    async with first, second:
        mine = await first.claim(entry)
        assert mine is not None
        assert mine.state is JournalState.PENDING
        assert await second.claim(entry) is None
        with pytest.raises(JournalError, match="held by another worker"):
            await second.put(entry.evolve(state=JournalState.SUBMITTING, client_key="k"))
        await first.put(entry.evolve(state=JournalState.SUBMITTING, client_key="k"))
        await first.let_go(entry.request_hash, entry.occurrence)
        taken = await second.claim(entry)
        assert taken is not None
        assert taken.state is JournalState.SUBMITTING  # what the first worker left


def two_workers(dsn: str, *, first_lease: float) -> tuple[PostgresJournal, PostgresJournal]:
    """Two workers of one batch; the first one's leases last ``first_lease`` seconds."""
    first = PostgresJournal(dsn, batch="shared", lease_seconds=first_lease)
    return first, PostgresJournal(dsn, batch="shared", lease_seconds=30)


async def test_a_lease_that_ran_out_goes_to_the_next_worker(postgres_dsn: str) -> None:
    dead, alive = two_workers(postgres_dsn, first_lease=0.3)
    entry = pending("a stork")
    async with dead, alive:
        assert await dead.claim(entry) is not None
        assert await alive.claim(entry) is None
        await anyio.sleep(0.5)  # the first worker never renewed: as if it had died
        assert await alive.claim(entry) is not None
        with pytest.raises(JournalError, match="held by another worker"):
            await dead.put(entry.evolve(state=JournalState.SUBMITTING, client_key="k"))


async def test_a_live_worker_keeps_its_leases_past_their_length(postgres_dsn: str) -> None:
    worker, other = two_workers(postgres_dsn, first_lease=0.3)
    entry = pending("an egret")
    async with worker, other:
        assert await worker.claim(entry) is not None
        async with worker.working():
            await anyio.sleep(1.0)
            assert await other.claim(entry) is None


async def test_the_password_never_appears_in_a_repr_or_an_error(
    postgres_server: Any, postgres_dsn: str, tmp_path: Path
) -> None:
    password = postgres_server.password
    journal = PostgresJournal(postgres_dsn, batch="b")
    assert password not in repr(journal)
    assert "***" in repr(journal)
    wrong = postgres_dsn.replace(password, password + "-wrong")
    with pytest.raises(JournalError) as refused:
        async with PostgresJournal(wrong, batch="b"):
            pass
    said = f"{refused.value} {refused.value!r} {refused.value.__cause__!r}"
    assert password not in said
    assert "password authentication failed" in said
    nowhere = postgres_dsn.replace(f":{postgres_server.port}/", ":9/")
    with pytest.raises(JournalError) as unreachable:
        async with PostgresJournal(nowhere, batch="b", reconnect_within=0):
            pass
    assert password not in f"{unreachable.value} {unreachable.value!r}"


def test_without_asyncpg_the_package_imports_and_the_journal_says_which_extra(
    tmp_path: Path,
) -> None:
    """asyncpg hidden from the interpreter: import works, opening says what to install."""
    script = tmp_path / "no_asyncpg.py"
    script.write_text(
        "import sys, anyio\n"
        "sys.modules['asyncpg'] = None\n"
        "import nanobanana_async as nb\n"
        "journal = nb.PostgresJournal('postgresql://u:p@127.0.0.1:9/db', batch='b')\n"
        "async def main():\n"
        "    async with journal:\n"
        "        pass\n"
        "try:\n"
        "    anyio.run(main)\n"
        "except nb.ConfigurationError as exc:\n"
        "    print(exc)\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'nanobanana-async[postgres]'" in result.stdout


@pytest.mark.parametrize("batch", ["", "   ", None])
def test_a_batch_needs_a_name(batch: Any) -> None:
    with pytest.raises(ConfigurationError, match="batch must be a non-empty name"):
        PostgresJournal("postgresql://u@127.0.0.1/db", batch=batch)


async def test_uses_by_a_client_leave_no_live_lease_behind(
    sim: Simulator, tmp_path: Path, postgres_dsn: str
) -> None:
    import asyncpg

    journal = PostgresJournal(postgres_dsn, batch="tidy")
    async with fast_client(sim) as client:
        stream = client.generate_many(
            [*PROMPTS, "x [never]"], save_to=tmp_path, journal=journal, timeout=0.5
        )
        outcomes = [outcome async for outcome in stream]
    assert sum(outcome.ok for outcome in outcomes) == 6
    conn = await asyncpg.connect(postgres_dsn)
    try:
        held = await conn.fetchval(
            "SELECT count(*) FROM nanobanana_inputs WHERE lease_until > now()"
        )
    finally:
        await conn.close()
    assert held == 0


async def test_the_suites_own_server_listens_on_loopback_only_and_not_as_root(
    postgres_server: Any, postgres_dsn: str
) -> None:
    import os

    import asyncpg

    conn = await asyncpg.connect(postgres_dsn)
    try:
        assert await conn.fetchval("SHOW listen_addresses") == "127.0.0.1"
    finally:
        await conn.close()
    pid_file = postgres_server.data / "postmaster.pid"
    server_pid = pid_file.read_text(encoding="utf-8").split()[0]
    if os.geteuid() == 0:
        owner = Path(f"/proc/{server_pid}").stat().st_uid
        assert owner != 0, "PostgreSQL must run as an unprivileged user"


async def leave_as_a_dead_worker_would(dsn: str, *, for_seconds: float) -> None:
    """Every unsettled row of batch 'shared' held by a worker that stopped renewing."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "UPDATE nanobanana_inputs SET lease_owner = 'dead-host:1:abc', "
            "lease_until = now() + make_interval(secs => $1) "
            "WHERE batch = 'shared' AND state NOT IN ('saved', 'failed', 'uncertain')",
            for_seconds,
        )
    finally:
        await conn.close()


@pytest.mark.parametrize("ordered", [False, True])
async def test_inputs_a_dead_worker_held_are_finished_by_a_live_one_once_its_lease_runs_out(
    sim: Simulator, tmp_path: Path, postgres_dsn: str, ordered: bool
) -> None:
    prompts = [f"a lantern festival, frame {number}" for number in range(10)]
    async with fast_client(sim) as client:
        # The dead worker had sent 3 creates (their tasks exist) and taken 3 more inputs.
        dead = PostgresJournal(postgres_dsn, batch="shared")
        async with dead:
            for index, prompt in enumerate(prompts[:6]):
                row = await dead.claim(pending(prompt, index))
                assert row is not None
                if index < 3:
                    task = await client.submit(prompt)
                    await dead.put(row.evolve(state=JournalState.SUBMITTED, task_id=task.id))
        await leave_as_a_dead_worker_would(postgres_dsn, for_seconds=0.6)
        assert sim.counters.creates == 3

        live = PostgresJournal(postgres_dsn, batch="shared", lease_seconds=5)
        stream = client.generate_many(prompts, save_to=tmp_path, journal=live, ordered=ordered)
        outcomes = [outcome async for outcome in stream]

    assert sorted(outcome.index for outcome in outcomes) == list(range(10))
    assert all(outcome.ok for outcome in outcomes)
    assert sim.counters.creates == 10  # the 3 submitted were polled again, not created again
    assert sum(outcome.resumed_from == "submitted" for outcome in outcomes) == 3
    if ordered:  # this worker's own inputs in order; the ones it took over after them
        own = [outcome.index for outcome in outcomes[:4]]
        assert own == [6, 7, 8, 9]
    async with live:
        assert await live.counts() == {JournalState.SAVED: 10}


async def test_a_create_a_dead_worker_cut_off_is_uncertain_and_not_sent_again(
    sim: Simulator, tmp_path: Path, postgres_dsn: str
) -> None:
    dead = PostgresJournal(postgres_dsn, batch="shared")
    async with dead:
        row = await dead.claim(pending("a paper kite"))
        assert row is not None
        await dead.put(row.evolve(state=JournalState.SUBMITTING, client_key="k"))
    await leave_as_a_dead_worker_would(postgres_dsn, for_seconds=0.3)
    live = PostgresJournal(postgres_dsn, batch="shared", lease_seconds=5)
    async with fast_client(sim) as client:
        stream = client.generate_many(["a paper kite"], save_to=tmp_path, journal=live)
        outcomes = [outcome async for outcome in stream]
    assert sim.counters.create_requests == 0
    assert [type(outcome.error).__name__ for outcome in outcomes] == ["SubmissionUncertainError"]
    async with live:
        assert await live.counts() == {JournalState.UNCERTAIN: 1}


async def test_an_input_another_worker_holds_is_reported_then_taken_over_when_its_lease_ends(
    sim: Simulator, tmp_path: Path, postgres_dsn: str
) -> None:
    from nanobanana_async import Event, HeldElsewhere, Saved

    other = PostgresJournal(postgres_dsn, batch="shared", lease_seconds=1.0)
    async with other:  # holds the first input, then stops renewing: as if it hung and died
        assert await other.claim(pending(PROMPTS[0])) is not None
        seen: list[Event] = []
        journal = PostgresJournal(postgres_dsn, batch="shared")
        async with fast_client(sim) as client:
            client.subscribe(seen.append)
            stream = client.generate_many(PROMPTS[:2], save_to=tmp_path, journal=journal)
            outcomes = [outcome async for outcome in stream]
            stats = client.stats()
    assert sorted(outcome.index for outcome in outcomes if outcome.ok) == [0, 1]
    told = [(type(event).__name__, event.index) for event in seen]
    assert told.index(("HeldElsewhere", 0)) < told.index(("Saved", 0))
    assert sum(isinstance(event, HeldElsewhere) for event in seen) == 1
    assert sum(isinstance(event, Saved) for event in seen) == 2
    assert stats.held_elsewhere == 1
    assert sim.counters.creates == 2


async def test_inputs_a_worker_stopped_short_held_go_to_the_others_without_waiting_out_its_lease(
    sim: Simulator, tmp_path: Path, postgres_dsn: str
) -> None:
    stopped = PostgresJournal(postgres_dsn, batch="shared", lease_seconds=60)
    saved: list[int] = []

    async def other_worker() -> None:
        saved.append(await saved_in(sim, tmp_path, PostgresJournal(postgres_dsn, batch="shared")))

    with anyio.fail_after(15):  # far less than the stopped worker's lease
        # The first worker holds an input it never finishes, then a Ctrl-C closes it.
        async with anyio.create_task_group() as workers, stopped:
            assert await stopped.claim(pending(PROMPTS[0])) is not None
            workers.start_soon(other_worker)
            await wait_until(lambda: sim.counters.creates == len(PROMPTS) - 1)
    assert saved == [len(PROMPTS)]  # the other worker, past that input, came back for it
    assert sim.counters.creates == len(PROMPTS)


async def test_a_create_on_the_wire_is_shown_in_flight_not_uncertain(postgres_dsn: str) -> None:
    from nanobanana_async import read_postgres_journal

    worker = PostgresJournal(postgres_dsn, batch="shared")
    sending = pending(PROMPTS[0]).evolve(state=JournalState.SUBMITTING, client_key="k")
    async with worker:
        assert await worker.claim(pending(PROMPTS[0])) is not None
        await worker.put(sending)
        live = await read_postgres_journal(postgres_dsn, "shared")
    after = await read_postgres_journal(postgres_dsn, "shared")  # its worker stopped
    assert live.in_flight == {sending.key}
    assert after.in_flight == frozenset()
    assert after.entries[0].settled_state is JournalState.UNCERTAIN


async def test_a_database_that_is_not_there_at_the_start_is_said_at_once() -> None:
    journal = PostgresJournal("postgresql://u:secret@127.0.0.1:9/none", batch="b")
    with anyio.fail_after(10), pytest.raises(JournalError, match="cannot connect") as caught:
        await journal.open()
    assert "secret" not in str(caught.value)


async def test_an_input_of_its_own_whose_lease_ran_out_is_worked_on_once_not_twice(
    sim: Simulator, tmp_path: Path, postgres_dsn: str
) -> None:
    # A run that died left every input pending under its lease: each comes up both in this
    # worker's own input and among the leftovers it takes over.
    dead = PostgresJournal(postgres_dsn, batch="shared")
    async with dead:
        for index, prompt in enumerate(PROMPTS):
            assert await dead.claim(pending(prompt, index)) is not None
    await leave_as_a_dead_worker_would(postgres_dsn, for_seconds=0)
    for _ in range(3):
        journal = PostgresJournal(postgres_dsn, batch="shared")
        assert await saved_in(sim, tmp_path, journal) == len(PROMPTS)
        assert sim.counters.create_requests == len(PROMPTS)  # one create per input


async def test_a_worker_with_its_own_folder_does_not_fetch_again_what_another_saved(
    sim: Simulator, tmp_path: Path, postgres_dsn: str
) -> None:
    first = PostgresJournal(postgres_dsn, batch="shared")
    assert await saved_in(sim, tmp_path / "machine-a", first) == len(PROMPTS)
    downloads = sim.counters.downloads
    # Another machine does not see the first one's disk.
    (tmp_path / "machine-a").rename(tmp_path / "elsewhere")
    later = PostgresJournal(postgres_dsn, batch="shared")
    async with fast_client(sim) as client:
        stream = client.generate_many(PROMPTS, save_to=tmp_path / "machine-b", journal=later)
        outcomes = [outcome async for outcome in stream]
    assert {outcome.resumed_from for outcome in outcomes} == {"saved"}
    assert all(outcome.path and outcome.path.parent.name == "machine-a" for outcome in outcomes)
    assert sim.counters.downloads == downloads  # nothing fetched again
    assert not (tmp_path / "machine-b").exists() or not any((tmp_path / "machine-b").iterdir())
