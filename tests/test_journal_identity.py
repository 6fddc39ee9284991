"""The journal knows an input by what it asks for, and copes with older and newer versions.

Fault cases 41-43 of docs/reliability.md.

Each test runs journaled batches against the simulator and counts the creates
per prompt from the simulator's own task table, so "paid once" is read from
the service's side, never from the SDK's return values alone.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from nanobanana_async import (
    ImageRequest,
    JournalError,
    JournalState,
    NanoBanana,
    Outcome,
    SQLiteJournal,
    read_journal,
    request_fingerprint,
)
from nanobanana_async.testing import Simulator

from .helpers import png_size
from .journal_backends import JournalBackend

PROMPTS = [f"a fox number {i}" for i in range(12)]


async def _run(
    client: NanoBanana, out: Path, prompts: list[str], backend: JournalBackend
) -> tuple[list[Outcome], int]:
    """One journaled batch into ``out``: outcomes in input order, and its not_requested count."""
    stream = client.generate_many(prompts, save_to=out, journal=backend.journal(out))
    async with stream:
        outcomes = sorted([o async for o in stream], key=lambda o: o.index)
    assert stream.not_requested is not None
    return outcomes, stream.not_requested


def creates_per_prompt(sim: Simulator) -> Counter[str]:
    """How many tasks the service created for each prompt (each one billed)."""
    return Counter(str(task.request["prompt"]) for task in sim.tasks.values())


def images(out: Path) -> set[str]:
    return {path.name for path in out.glob("*.png")}


async def test_a_line_inserted_at_the_top_costs_one_create_and_nothing_else(
    client: NanoBanana, sim: Simulator, tmp_path: Path, journal_backend: JournalBackend
) -> None:
    """Case 41: every earlier input is answered from the journal; only the new one is paid."""
    first, _ = await _run(client, tmp_path, PROMPTS, journal_backend)
    assert all(o.ok for o in first)
    downloads = sim.counters.downloads_completed

    again, not_requested = await _run(
        client, tmp_path, ["a brand new heron", *PROMPTS], journal_backend
    )
    assert all(o.ok for o in again), [o.error for o in again if o.error]
    assert creates_per_prompt(sim) == Counter([*PROMPTS, "a brand new heron"])
    assert sim.counters.downloads_completed == downloads + 1
    assert {o.resumed_from for o in again[1:]} == {"saved"}
    assert again[0].resumed_from is None
    assert [o.path for o in again[1:]] == [o.path for o in first]  # names did not move
    assert not_requested == 0
    assert len(images(tmp_path)) == len(PROMPTS) + 1


async def test_deleted_reordered_and_duplicated_lines_pay_only_for_the_new_duplicate(
    client: NanoBanana, sim: Simulator, tmp_path: Path, journal_backend: JournalBackend
) -> None:
    """Case 42: a duplicated line is one more image; deleted ones are merely not asked for."""
    await _run(client, tmp_path, PROMPTS, journal_backend)
    edited = list(reversed(PROMPTS[3:]))  # lines 0-2 deleted, the rest reordered
    edited.insert(4, PROMPTS[7])  # one line duplicated

    again, not_requested = await _run(client, tmp_path, edited, journal_backend)
    assert all(o.ok for o in again)
    assert creates_per_prompt(sim) == Counter([*PROMPTS, PROMPTS[7]])
    assert not_requested == 3
    assert sum(o.resumed_from == "saved" for o in again) == len(edited) - 1
    paths = [o.path for o in again]
    assert len(set(paths)) == len(edited), "the duplicate has a file of its own"
    assert len(images(tmp_path)) == len(PROMPTS) + 1

    third, _ = await _run(client, tmp_path, edited, journal_backend)
    assert {o.resumed_from for o in third} == {"saved"}
    assert sim.counters.creates == len(PROMPTS) + 1


async def test_an_edited_line_is_a_new_input_and_the_old_image_stays(
    client: NanoBanana, sim: Simulator, tmp_path: Path, journal_backend: JournalBackend
) -> None:
    """Case 43: one create for the edited request; the old one stays on disk and journaled."""
    first, _ = await _run(client, tmp_path, PROMPTS[:3], journal_backend)
    old_path = first[1].path
    assert old_path is not None
    edited = [PROMPTS[0], "a completely different cat", PROMPTS[2]]

    again, not_requested = await _run(client, tmp_path, edited, journal_backend)
    assert all(o.ok for o in again)
    assert again[1].resumed_from is None
    assert again[1].path != old_path
    assert creates_per_prompt(sim) == Counter([*PROMPTS[:3], "a completely different cat"])
    assert not_requested == 1
    png_size(old_path.read_bytes())
    rows = {entry.request["prompt"]: entry for entry in await journal_backend.entries(tmp_path)}
    assert rows[PROMPTS[1]].state is JournalState.SAVED
    assert rows[PROMPTS[1]].path == str(old_path)


async def test_identical_requests_are_told_apart_by_occurrence_in_input_order(
    client: NanoBanana, sim: Simulator, tmp_path: Path, journal_backend: JournalBackend
) -> None:
    """Three identical lines are three inputs: occurrences 0, 1, 2; a rerun pays nothing."""
    prompts = ["same", "other", "same", "same"]
    first, _ = await _run(client, tmp_path, prompts, journal_backend)
    assert all(o.ok for o in first)
    entries = await journal_backend.entries(tmp_path)
    same = request_fingerprint(ImageRequest(prompt="same"))
    assert sorted(e.occurrence for e in entries if e.request_hash == same) == [0, 1, 2]
    assert creates_per_prompt(sim) == Counter(prompts)

    fewer, not_requested = await _run(client, tmp_path, ["same", "other"], journal_backend)
    assert {o.resumed_from for o in fewer} == {"saved"}
    assert not_requested == 2
    assert sim.counters.creates == 4


def _write_v1_journal(path: Path, rows: list[tuple[int, str, Path]]) -> None:
    """A journal as the previous version wrote it: rows keyed by input position."""
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE inputs (
            idx INTEGER PRIMARY KEY, request_hash TEXT NOT NULL, request TEXT NOT NULL,
            state TEXT NOT NULL, client_key TEXT, task_id TEXT, image_url TEXT,
            expires_at REAL, path TEXT, sha256 TEXT, error_type TEXT, error TEXT,
            updated_at REAL NOT NULL
        );
        PRAGMA application_id = 1312967217;
        PRAGMA user_version = 1;
        """
    )
    for index, prompt, file in rows:
        request = ImageRequest(prompt=prompt)
        conn.execute(
            "INSERT INTO inputs VALUES (?, ?, ?, 'saved', NULL, ?, NULL, NULL, ?, 'x', NULL, "
            "NULL, 0)",
            (
                index,
                request_fingerprint(request),
                json.dumps(request.to_payload()),
                f"task{index:04d}",
                str(file),
            ),
        )
    conn.commit()
    conn.close()


async def test_a_version_1_journal_is_read_as_it_is_and_migrated_on_its_next_run(
    client: NanoBanana, sim: Simulator, tmp_path: Path
) -> None:
    """Old rows keep their meaning: the same file reruns with no create; duplicates map in order."""
    prompts = ["old fox", "old owl", "old fox"]
    files = [tmp_path / f"0000{i}-{p.replace(' ', '-')}.png" for i, p in enumerate(prompts)]
    for file in files:
        file.write_bytes(b"an image saved by the previous version")
    journal = tmp_path / "journal.sqlite"
    _write_v1_journal(
        journal, [(i, p, f) for i, (p, f) in enumerate(zip(prompts, files, strict=True))]
    )

    seen = list(read_journal(journal))  # a tool reads it without migrating it
    assert [(e.index, e.occurrence) for e in seen] == [(0, 0), (1, 0), (2, 1)]
    with sqlite3.connect(journal) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)
    conn.close()

    outcomes, not_requested = await _run(client, tmp_path, prompts, JournalBackend("sqlite"))
    assert [o.path for o in outcomes] == files
    assert {o.resumed_from for o in outcomes} == {"saved"}
    assert len(sim.requests) == 0
    assert not_requested == 0
    with sqlite3.connect(journal) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (2,)
    conn.close()


async def test_a_journal_from_a_newer_version_is_refused_and_left_alone(tmp_path: Path) -> None:
    """Schema version 3 is not guessed at: a clear error, the file byte for byte unchanged."""
    path = tmp_path / "journal.sqlite"
    async with SQLiteJournal(path):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 3")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(JournalError, match="newer nanobanana_async"):
        async with SQLiteJournal(path):
            pass
    assert path.read_bytes() == before
