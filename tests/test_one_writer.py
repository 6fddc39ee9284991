"""One writer per journal and output folder, in one process, and the lock's life.

Fault case 45 of docs/reliability.md (the command line's side is in test_cli_everyday).

Two batches on one journal (or one folder) would pay twice for the same
inputs; the second is refused before it opens the journal or sends anything.
The lock is the kernel's: a process killed while holding it leaves a file
behind but no lock, so the next run starts at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from nanobanana_async import (
    FixedPolling,
    JournalLockedError,
    NanoBanana,
    SQLiteJournal,
)
from nanobanana_async._lock import RunLock
from nanobanana_async.testing import LatencyProfile, Simulator

from .conftest import FAST_RETRY
from .helpers import wait_until

PROMPTS = [f"a lonely writer {i}" for i in range(8)]


async def _drain(client: NanoBanana, out: Path, journal: Path) -> int:
    stream = client.generate_many(PROMPTS, save_to=out, journal=journal)
    return sum([o.ok async for o in stream])


async def test_a_second_batch_on_the_same_journal_is_refused_and_the_first_finishes(
    sim: Simulator, tmp_path: Path
) -> None:
    """Same journal path, another folder: JournalLockedError naming it and this process."""
    sim.latency = LatencyProfile.uniform(0.3, 0.3)
    journal = tmp_path / "shared.sqlite"
    async with NanoBanana(
        api_key=sim.api_key, base_url=sim.base_url, polling=FixedPolling(0.02), retry=FAST_RETRY
    ) as client:
        first_ok: list[int] = []

        async def first() -> None:
            first_ok.append(await _drain(client, tmp_path / "a", journal))

        async with anyio.create_task_group() as group:
            group.start_soon(first)
            await wait_until(lambda: sim.counters.creates == len(PROMPTS))  # lock held, creates out
            creates = sim.counters.create_requests
            with pytest.raises(JournalLockedError) as refused:
                await _drain(client, tmp_path / "b", journal)
            assert sim.counters.create_requests == creates
    assert str(journal) in str(refused.value)
    assert f"process {os.getpid()}" in str(refused.value)
    assert first_ok == [len(PROMPTS)]
    assert sim.counters.creates == len(PROMPTS)
    assert not (tmp_path / "b").exists() or not list((tmp_path / "b").glob("*.png"))


async def test_a_second_batch_into_the_same_folder_is_refused_even_with_its_own_journal(
    sim: Simulator, tmp_path: Path
) -> None:
    """Same folder, another journal: refused, naming the folder; nothing sent for it."""
    sim.latency = LatencyProfile.uniform(0.3, 0.3)
    async with (
        NanoBanana(
            api_key=sim.api_key, base_url=sim.base_url, polling=FixedPolling(0.02), retry=FAST_RETRY
        ) as client,
        anyio.create_task_group() as group,
    ):
        group.start_soon(_drain, client, tmp_path, tmp_path / "one.sqlite")
        await wait_until(lambda: sim.counters.creates == len(PROMPTS))
        with pytest.raises(JournalLockedError, match="in use by process") as refused:
            await _drain(client, tmp_path, tmp_path / "two.sqlite")
    assert str(tmp_path) in str(refused.value)
    assert not (tmp_path / "two.sqlite").exists()
    assert sim.counters.creates == len(PROMPTS)


async def test_one_journal_object_serves_one_batch_at_a_time(
    client: NanoBanana, sim: Simulator, tmp_path: Path
) -> None:
    """The same SQLiteJournal handed to two concurrent batches: the second is refused."""
    sim.latency = LatencyProfile.uniform(0.3, 0.3)
    journal = SQLiteJournal(tmp_path / "j.sqlite", folder=tmp_path)
    async with journal, anyio.create_task_group() as group:
        group.start_soon(_run_with, client, tmp_path, journal)
        await wait_until(lambda: sim.counters.creates == len(PROMPTS))
        with pytest.raises(JournalLockedError, match="another batch"):
            async for _ in client.generate_many(["x"], save_to=tmp_path, journal=journal):
                pass
    assert sim.counters.creates == len(PROMPTS)


async def _run_with(client: NanoBanana, out: Path, journal: SQLiteJournal) -> None:
    async for outcome in client.generate_many(PROMPTS, save_to=out, journal=journal):
        assert outcome.ok


async def test_the_lock_is_released_when_the_batch_ends_so_a_rerun_starts_at_once(
    client: NanoBanana, sim: Simulator, tmp_path: Path
) -> None:
    """Back-to-back runs on one folder and journal, the first cut off early: both may run."""
    journal = tmp_path / "j.sqlite"
    with anyio.move_on_after(0.05):
        await _drain(client, tmp_path, journal)
    assert await _drain(client, tmp_path, journal) == len(PROMPTS)
    assert sim.counters.creates == len(PROMPTS)


_HOLD_AND_WAIT = textwrap.dedent(
    """
    import sys, time
    from nanobanana_async._lock import RunLock
    from pathlib import Path
    lock = RunLock(Path(sys.argv[1]), guarded=Path(sys.argv[2]))
    lock.acquire()
    print("held", flush=True)
    time.sleep(60)
    """
)


def test_a_lock_left_by_a_killed_process_never_blocks_the_next_run(tmp_path: Path) -> None:
    """SIGKILL the holder: its lock file stays, naming it, but the lock itself is gone."""
    lock_file = tmp_path / ".nanobanana.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_AND_WAIT, str(lock_file), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(JournalLockedError, match=f"process {holder.pid}"):
            _lock_now(lock_file, tmp_path)
    finally:
        holder.kill()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()
    assert lock_file.exists()
    _lock_now(lock_file, tmp_path)  # no error: the kernel released the dead holder's lock


def _lock_now(lock_file: Path, guarded: Path) -> None:
    lock = RunLock(lock_file, guarded=guarded)
    lock.acquire()
    lock.release()


async def test_a_journal_held_open_around_two_batches_answers_the_second_from_the_first(
    client: NanoBanana, sim: Simulator, tmp_path: Path
) -> None:
    """One SQLiteJournal kept open (it started empty) for two runs: the second pays nothing."""
    journal = SQLiteJournal(tmp_path / "j.sqlite", folder=tmp_path)
    async with journal:
        await _run_with(client, tmp_path, journal)
        resumed = [
            o.resumed_from
            async for o in client.generate_many(PROMPTS, save_to=tmp_path, journal=journal)
        ]
    assert resumed == ["saved"] * len(PROMPTS)
    assert sim.counters.creates == len(PROMPTS)


async def test_two_batches_opening_one_journal_at_once_keep_the_winners_locks(
    client: NanoBanana, sim: Simulator, tmp_path: Path
) -> None:
    """The refused batch gives back nothing of the running one's: a third writer is refused."""
    sim.latency = LatencyProfile.uniform(0.3, 0.3)
    journal = SQLiteJournal(tmp_path / "j.sqlite", folder=tmp_path)
    refusals: list[BaseException] = []

    async def one_batch() -> None:
        try:
            await _run_with(client, tmp_path, journal)
        except JournalLockedError as exc:
            refusals.append(exc)

    async with anyio.create_task_group() as group:
        group.start_soon(one_batch)
        group.start_soon(one_batch)
        await wait_until(lambda: sim.counters.creates == len(PROMPTS))
        with pytest.raises(JournalLockedError):
            _lock_now(tmp_path / ".nanobanana.lock", tmp_path)
        with pytest.raises(JournalLockedError):
            _lock_now(tmp_path / "j.sqlite.lock", tmp_path / "j.sqlite")
    assert len(refusals) == 1
    assert sim.counters.creates == len(PROMPTS)


async def test_leaving_a_batch_early_then_starting_it_again_waits_for_it_rather_than_refuse(
    sim: Simulator, tmp_path: Path
) -> None:
    """``break`` stops a batch in the background; the same batch started at once waits for it."""
    sim.latency = LatencyProfile.uniform(0.3, 0.3)
    journal = tmp_path / "journal.sqlite"
    async with NanoBanana(
        api_key=sim.api_key, base_url=sim.base_url, polling=FixedPolling(0.02), retry=FAST_RETRY
    ) as client:
        async for outcome in client.generate_many(PROMPTS, save_to=tmp_path, journal=journal):
            assert outcome.ok
            break  # every other job is still running, its input's row still being written
        with anyio.fail_after(30):
            assert await _drain(client, tmp_path, journal) == len(PROMPTS)
    assert sim.counters.creates == len(PROMPTS)
