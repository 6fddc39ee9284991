"""The journal: a rerun resumes without paying twice, and a foreign file is never touched."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from nanobanana_async import (
    FixedPolling,
    ImageRequest,
    JournalEntry,
    JournalError,
    JournalState,
    NanoBanana,
    Outcome,
    SQLiteJournal,
    SubmissionUncertainError,
    TaskFailedError,
    read_journal,
    request_fingerprint,
)
from nanobanana_async.testing import Delay, LatencyProfile, ResetConnection, Simulator

from .conftest import FAST_RETRY, SENTINEL_KEY
from .helpers import png_size
from .journal_backends import JournalBackend

PROMPTS = [f"a fox number {i}" for i in range(12)]


async def _run(
    client: NanoBanana,
    out: Path,
    prompts: list[str],
    backend: JournalBackend,
    *,
    resubmit_uncertain: bool = False,
) -> list[Outcome]:
    """One journaled batch into ``out``; outcomes in input order."""
    batch = client.generate_many(
        prompts,
        save_to=out,
        journal=backend.journal(out),
        resubmit_uncertain=resubmit_uncertain,
    )
    return sorted([o async for o in batch], key=lambda o: o.index)


async def test_rerunning_a_finished_batch_sends_no_create_and_no_download(
    client: NanoBanana, sim: Simulator, tmp_path: Path, journal_backend: JournalBackend
) -> None:
    """Every saved input comes back ok with its existing path and zero requests."""
    first = await _run(client, tmp_path, PROMPTS, journal_backend)
    assert all(o.ok for o in first)
    before = len(sim.requests)
    assert sim.counters.creates == len(PROMPTS)

    second = await _run(client, tmp_path, PROMPTS, journal_backend)
    assert len(sim.requests) == before
    assert sim.counters.creates == len(PROMPTS)
    assert sim.counters.downloads == len(PROMPTS)
    assert [o.path for o in second] == [o.path for o in first]
    assert {o.resumed_from for o in second} == {"saved"}


async def test_a_saved_file_that_went_missing_is_downloaded_again_not_recreated(
    client: NanoBanana, sim: Simulator, tmp_path: Path
) -> None:
    """Deleting an image and rerunning fetches it again from its task: one download, no create.

    (A shared journal's saved image may be on another worker's machine, so it
    is not fetched again: test_postgres_journal.py tests that side.)
    """
    backend = JournalBackend("sqlite")
    first = await _run(client, tmp_path, PROMPTS[:3], backend)
    lost = first[1].path
    assert lost is not None
    lost.unlink()
    second = await _run(client, tmp_path, PROMPTS[:3], backend)
    assert second[1].ok
    png_size(lost.read_bytes())
    assert sim.counters.creates == 3
    assert sim.counters.downloads == 4


async def test_a_submitted_task_is_polled_again_on_rerun_without_a_new_create(
    sim: Simulator, tmp_path: Path, journal_backend: JournalBackend
) -> None:
    """A run stopped while waiting leaves 'submitted'; the rerun polls that task to the end."""
    sim.latency = LatencyProfile.uniform(0.6, 0.6)
    async with NanoBanana(
        api_key=sim.api_key, base_url=sim.base_url, polling=FixedPolling(0.05), retry=FAST_RETRY
    ) as client:
        with anyio.move_on_after(0.3):
            await _run(client, tmp_path, PROMPTS[:4], journal_backend)
        states = {e.state for e in await journal_backend.entries(tmp_path)}
        assert states == {JournalState.SUBMITTED}
        second = await _run(client, tmp_path, PROMPTS[:4], journal_backend)
    assert all(o.ok for o in second), [repr(o.error) for o in second]
    assert {o.resumed_from for o in second} == {"submitted"}
    assert sim.counters.creates == 4


async def test_an_uncertain_create_is_reported_and_not_resent_without_the_flag(
    client: NanoBanana, sim: Simulator, tmp_path: Path, journal_backend: JournalBackend
) -> None:
    """Reset after create: uncertain in the journal; reruns report it; only the flag resends."""
    sim.faults.push("create", ResetConnection(create_first=True))
    first = await _run(client, tmp_path, PROMPTS[:1], journal_backend)
    assert isinstance(first[0].error, SubmissionUncertainError)
    (entry,) = await journal_backend.entries(tmp_path)
    assert entry.state is JournalState.UNCERTAIN
    assert entry.client_key is not None
    assert sim.counters.creates == 1

    second = await _run(client, tmp_path, PROMPTS[:1], journal_backend)
    assert isinstance(second[0].error, SubmissionUncertainError)
    assert second[0].resumed_from == "uncertain"
    assert sim.counters.create_requests == 1
    said = str(second[0].error)  # the first run's reason, told once, not nested in its message
    assert said.count("answer was lost") == 1, said
    assert entry.error is not None
    assert entry.error in said

    third = await _run(client, tmp_path, PROMPTS[:1], journal_backend, resubmit_uncertain=True)
    assert third[0].ok
    assert sim.counters.create_requests == 2


async def test_a_create_cut_off_mid_flight_is_journaled_as_submitting_and_treated_uncertain(
    sim: Simulator, tmp_path: Path, journal_backend: JournalBackend
) -> None:
    """Cancelled with the answer not yet back: the row says the create may be on the wire."""
    sim.faults.push("create", Delay(5.0, create_first=True))
    policy = FAST_RETRY.__class__(cancel_grace=0.05)
    async with NanoBanana(
        api_key=sim.api_key, base_url=sim.base_url, polling=FixedPolling(0.02), retry=policy
    ) as client:
        with anyio.move_on_after(0.3):
            await _run(client, tmp_path, PROMPTS[:1], journal_backend)
        (entry,) = await journal_backend.entries(tmp_path)
        assert entry.state is JournalState.SUBMITTING
        second = await _run(client, tmp_path, PROMPTS[:1], journal_backend)
    assert isinstance(second[0].error, SubmissionUncertainError)
    assert sim.counters.create_requests == 1


async def test_a_failed_task_is_reported_from_the_journal_without_paying_again(
    client: NanoBanana, sim: Simulator, tmp_path: Path, journal_backend: JournalBackend
) -> None:
    """The service's refusal is final: the rerun reports TaskFailedError with no request."""
    first = await _run(client, tmp_path, ["a fox [fail]"], journal_backend)
    before = len(sim.requests)
    again = await _run(client, tmp_path, ["a fox [fail]"], journal_backend)
    assert isinstance(again[0].error, TaskFailedError)
    assert str(again[0].error) == str(first[0].error)  # the reason once, not nested
    assert str(again[0].error).count("Content policy") == 1
    assert len(sim.requests) == before


async def test_inputs_stopped_by_a_fatal_error_are_journaled_pending_and_sent_on_rerun(
    sim: Simulator, tmp_path: Path, journal_backend: JournalBackend
) -> None:
    """No balance: the batch stops, rows stay pending (nothing billed), a rerun completes them."""
    sim.balance = 2
    async with NanoBanana(
        api_key=sim.api_key,
        base_url=sim.base_url,
        polling=FixedPolling(0.02),
        retry=FAST_RETRY,
        max_concurrency=1,
    ) as client:
        first = await _run(client, tmp_path, PROMPTS[:6], journal_backend)
        assert sum(o.ok for o in first) == 2
        states = [e.state for e in await journal_backend.entries(tmp_path)]
        assert states.count(JournalState.PENDING) == 4
        sim.balance = None
        second = await _run(client, tmp_path, PROMPTS[:6], journal_backend)
    assert all(o.ok for o in second)
    assert sim.counters.creates == 6


async def test_a_foreign_file_is_refused_and_left_byte_for_byte_unchanged(
    client: NanoBanana, tmp_path: Path
) -> None:
    """A text file or someone else's SQLite database at the journal path: JournalError."""
    text = tmp_path / "notes.sqlite"
    text.write_bytes(b"my precious notes")
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    other_bytes = other.read_bytes()
    for path, original in ((text, b"my precious notes"), (other, other_bytes)):
        with pytest.raises(JournalError, match="not a nanobanana_async journal"):
            async for _ in client.generate_many(["a fox"], save_to=tmp_path, journal=path):
                pass
        assert path.read_bytes() == original


async def test_a_corrupted_journal_gives_a_clear_error_and_is_not_overwritten(
    tmp_path: Path,
) -> None:
    """A journal whose pages were damaged is refused, not rebuilt over."""
    path = tmp_path / "j.sqlite"
    async with SQLiteJournal(path) as journal:
        await journal.put(
            JournalEntry(index=0, request_hash="h", request={}, state=JournalState.PENDING)
        )
    damaged = bytearray(path.read_bytes())
    damaged[100:4096] = b"\xff" * (4096 - 100)
    path.write_bytes(bytes(damaged))
    with pytest.raises(JournalError):
        async with SQLiteJournal(path):
            pass
    assert path.read_bytes() == bytes(damaged)


async def test_the_journal_never_stores_the_api_key(
    sim: Simulator, tmp_path: Path, journal_backend: JournalBackend
) -> None:
    """Scan the journal files (and WAL) for the sentinel key after a run with failures."""
    async with NanoBanana(
        api_key=SENTINEL_KEY, base_url=sim.base_url, polling=FixedPolling(0.02), retry=FAST_RETRY
    ) as client:
        sim.faults.push("create", ResetConnection(create_first=True))
        await _run(client, tmp_path, [*PROMPTS[:3], "x [fail]"], journal_backend)
    for file in tmp_path.iterdir():
        assert SENTINEL_KEY.encode() not in file.read_bytes(), file


async def test_concurrent_writes_are_grouped_into_few_transactions(tmp_path: Path) -> None:
    """A thousand concurrent puts all land, in far fewer commits than puts."""
    journal = SQLiteJournal(tmp_path / "j.sqlite")
    async with journal, anyio.create_task_group() as group:
        for index in range(1000):
            entry = JournalEntry(
                index=index,
                request_hash=f"h{index % 10}",
                occurrence=index // 10,
                request={"i": index},
                state=JournalState.PENDING,
            )
            group.start_soon(journal.put, entry)
    assert len(list(read_journal(tmp_path / "j.sqlite"))) == 1000
    assert journal.commits < 100


def test_the_request_fingerprint_ignores_nothing_that_is_sent() -> None:
    """Any field that changes the create body changes the fingerprint."""
    base = ImageRequest(prompt="a fox")
    assert request_fingerprint(base) == request_fingerprint(ImageRequest(prompt="a fox"))
    for other in (
        ImageRequest(prompt="a fox!"),
        ImageRequest(prompt="a fox", size="1:1"),
        ImageRequest(prompt="a fox", model="nano-banana"),
        ImageRequest(prompt="a fox", resolution="2k"),
    ):
        assert request_fingerprint(other) != request_fingerprint(base)


async def test_reading_a_journal_while_a_run_rewrites_it_sees_each_row_once(
    tmp_path: Path,
) -> None:
    """Pages come from one snapshot: rows moved or rewritten meanwhile are read exactly once."""
    path = tmp_path / "j.sqlite"
    async with SQLiteJournal(path) as journal:
        for i in range(1500):
            await journal.put(
                JournalEntry(
                    index=i, request_hash=f"h{i}", request={}, state=JournalState.SUBMITTED
                )
            )
        reader = read_journal(path)
        seen = [next(reader) for _ in range(1000)]  # the first page
        moved_back = JournalEntry(
            index=1100, request_hash="h10", request={}, state=JournalState.SAVED
        )
        moved_forward = JournalEntry(
            index=5, request_hash="h1200", request={}, state=JournalState.SAVED
        )
        await journal.put(moved_back)
        await journal.put(moved_forward)
        seen += list(reader)
    assert sorted(e.request_hash for e in seen) == sorted(f"h{i}" for i in range(1500))
