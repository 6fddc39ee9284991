"""Several ``nanobanana run`` workers on one PostgreSQL batch: one dies, or the database restarts.

Three worker processes share a prompt file's batch through the suite's own
PostgreSQL server and one standalone simulator; two of them save into one
folder, the third into its own. What is checked is what a user would check:
the simulator's own task table (one paid create per prompt), the files on
disk (one image per prompt), and ``nanobanana journal --json`` agreeing
with both. 2,000 prompts by default and in CI; 10,000 under ``nox -s tests``
(``NANOBANANA_FULL_LOAD``); ``NANOBANANA_WORKER_PROMPTS`` sets any size.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .pg_server import PostgresServer
from .test_crash import Sim, cli_command, simulator

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

_FULL = os.environ.get("NANOBANANA_FULL_LOAD") == "1"
PROMPTS = int(os.environ.get("NANOBANANA_WORKER_PROMPTS", "10000" if _FULL else "2000"))
#: Short, so the killed worker's inputs are taken over within seconds.
LEASE = 3.0
#: How long the workers of one test may take, in all (about 40 s per 2,000 prompts here).
DEADLINE = 240.0 * max(1.0, PROMPTS / 2000)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    with simulator(tmp_path / "sim") as running:
        yield running


def prompt_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    lines = (f"a lighthouse keeper's logbook, page {number}" for number in range(PROMPTS))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def start_worker(
    sim: Sim, prompts: Path, out: Path, dsn: str, log: Path, *flags: str, lease: float = LEASE
) -> subprocess.Popen[bytes]:
    argv = [
        *cli_command(),
        "run",
        str(prompts),
        "--out",
        str(out),
        "--journal",
        dsn,
        "--batch",
        "logbook",
        "--concurrency",
        "64",
        "--lease-seconds",
        str(lease),
        *flags,
    ]
    with log.open("wb") as sink:
        return subprocess.Popen(argv, env=sim.env(), stdout=sink, stderr=subprocess.STDOUT)


def wait_all(workers: list[subprocess.Popen[bytes]]) -> list[int]:
    deadline = time.monotonic() + DEADLINE
    codes = []
    for worker in workers:
        try:
            codes.append(worker.wait(timeout=max(deadline - time.monotonic(), 1)))
        except subprocess.TimeoutExpired:
            for other in workers:
                if other.poll() is None:
                    other.kill()
                    other.wait(timeout=10)
            raise
    return codes


def show_journal(sim: Sim, dsn: str, batch: str, *flags: str) -> str:
    """What ``nanobanana journal DSN --batch BATCH [FLAGS]`` prints (it must succeed)."""
    return subprocess.run(
        [*cli_command(), "journal", dsn, "--batch", batch, *flags],
        env=sim.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


def journal_report(sim: Sim, dsn: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(show_journal(sim, dsn, "logbook", "--json"))
    return report


def saved_rows(dsn: str) -> list[tuple[str, str, str | None, str | None]]:
    """(request hash, state, path, lease owner) of every row, straight from the database."""
    import anyio
    import asyncpg

    async def read() -> list[Any]:
        conn = await asyncpg.connect(dsn)
        try:
            rows: list[Any] = await conn.fetch(
                "SELECT request_hash, state, path, lease_owner FROM nanobanana_inputs "
                "WHERE batch = 'logbook'"
            )
            return rows
        except asyncpg.UndefinedTableError:  # no worker has set the schema up yet
            return []
        finally:
            await conn.close()

    return [tuple(row) for row in anyio.run(read)]


def check_paid_once_and_saved_once(
    sim: Sim, dsn: str, folders: list[Path], *, victim_folder: Path | None = None
) -> set[str]:
    """No prompt created twice; every saved input has its one image; returns the uncertain.

    A create on the wire when its worker died may have been billed with no
    answer seen: that input is uncertain, never sent again by itself, and
    counted once at most by the simulator. An image the killed worker had
    put in its folder but not yet journaled is saved again by whoever takes
    its input over; that stray copy may stay in the killed worker's folder
    (nothing was paid twice for it).
    """
    creates = sim.creates_per_prompt()
    assert set(creates.values()) == {1}, "a prompt was created twice"
    rows = saved_rows(dsn)
    assert len(rows) == PROMPTS
    assert {state for _, state, _, _ in rows} <= {"saved", "uncertain"}
    uncertain = {key for key, state, _, _ in rows if state == "uncertain"}
    assert len(creates) >= PROMPTS - len(uncertain)
    journaled = [Path(path or "") for _, state, path, _ in rows if state == "saved"]
    assert len(journaled) == PROMPTS - len(uncertain) == len(set(journaled))
    assert all(path.is_file() for path in journaled)
    images = {path for folder in set(folders) for path in folder.glob("*.png")}
    strays = images - set(journaled)
    assert all(path.parent == victim_folder for path in strays), strays
    assert len(strays) <= 64  # at most the images the killed worker had in flight
    report = journal_report(sim, dsn)
    assert report["total"] == PROMPTS
    assert report["counts"].get("saved", 0) == len(journaled)
    assert len(report["uncertain"]) == len(uncertain)
    return uncertain


def summary_figure(output: str, row: str) -> int:
    """The number in the run summary's row ``row`` (0 when the row is not shown)."""
    found = re.search(rf"^│ {re.escape(row)} +│ +(\d+) │", output, re.MULTILINE)
    return int(found.group(1)) if found else 0


def wait_for_saved(dsn: str, at_least: int, workers: list[subprocess.Popen[bytes]]) -> None:
    """Until ``at_least`` images are journaled; fails at once if every worker has stopped."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if sum(state == "saved" for _, state, _, _ in saved_rows(dsn)) >= at_least:
            return
        if all(worker.poll() is not None for worker in workers):
            raise AssertionError("every worker stopped before the test could act")
        time.sleep(0.2)
    raise AssertionError(f"fewer than {at_least} images saved in time")


def test_three_workers_share_a_batch_and_finish_what_a_killed_one_held(
    sim: Sim, tmp_path: Path, postgres_dsn: str, postgres_server: PostgresServer
) -> None:
    prompts = prompt_file(tmp_path)
    shared, own = tmp_path / "shared", tmp_path / "own"
    outs = [shared, shared, own]
    workers = [
        start_worker(sim, prompts, out, postgres_dsn, tmp_path / f"worker{n}.log")
        for n, out in enumerate(outs)
    ]
    victim = workers[0]
    try:
        wait_for_saved(postgres_dsn, PROMPTS // 4, workers)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        held = {
            key
            for key, state, _, owner in saved_rows(postgres_dsn)
            if owner and owner.split(":")[1] == str(victim.pid) and state != "saved"
        }
        codes = wait_all(workers[1:])
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=10)
    logs = "\n".join((tmp_path / f"worker{n}.log").read_text() for n in (1, 2))
    assert set(codes) <= {0, 1}, logs  # 1: inputs the kill left uncertain are reported
    assert held, "the killed worker held nothing unfinished: the test proved nothing"
    uncertain = check_paid_once_and_saved_once(
        sim, postgres_dsn, [shared, own], victim_folder=shared
    )
    finished = {key for key, state, _, _ in saved_rows(postgres_dsn) if state == "saved"}
    assert held <= finished | uncertain  # everything it held was finished by the others
    assert len(uncertain) <= 64  # at most its creates in flight (its --concurrency)
    assert postgres_server.password not in logs
    elsewhere = "left to other workers of the batch"
    for n in (1, 2):  # each survivor accounts for every input: its own, or another's
        summary = (tmp_path / f"worker{n}.log").read_text()
        accounted = sum(summary_figure(summary, row) for row in ("succeeded", "failed", elsewhere))
        assert accounted == PROMPTS, summary
        assert summary_figure(summary, elsewhere) > 0, summary

    # Sending the uncertain ones again is the user's explicit choice, as with SQLite.
    rerun = start_worker(
        sim, prompts, own, postgres_dsn, tmp_path / "rerun.log", "--resubmit-uncertain"
    )
    assert wait_all([rerun]) == [0], (tmp_path / "rerun.log").read_text()
    assert {state for _, state, _, _ in saved_rows(postgres_dsn)} == {"saved"}
    assert max(sim.creates_per_prompt().values()) <= 2


def test_workers_ride_out_a_database_restart_and_pay_nothing_twice(
    sim: Sim, tmp_path: Path, postgres_dsn: str, postgres_server: PostgresServer
) -> None:
    prompts = prompt_file(tmp_path)
    outs = [tmp_path / f"out{n}" for n in range(3)]
    # Leases longer than the restart: no worker takes another's inputs while it is down.
    workers = [
        start_worker(sim, prompts, out, postgres_dsn, tmp_path / f"worker{n}.log", lease=30)
        for n, out in enumerate(outs)
    ]
    try:
        wait_for_saved(postgres_dsn, PROMPTS // 4, workers)
        postgres_server.restart()
        codes = wait_all(workers)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=10)
    logs = "\n".join((tmp_path / f"worker{n}.log").read_text() for n in range(3))
    if codes != [0, 0, 0]:
        # A worker that stopped cleanly on a journal error resumes on a rerun.
        assert set(codes) <= {0, 1, 2}, logs
        rerun = start_worker(sim, prompts, outs[0], postgres_dsn, tmp_path / "rerun.log")
        assert wait_all([rerun]) in ([0], [1]), (tmp_path / "rerun.log").read_text()
    uncertain = check_paid_once_and_saved_once(sim, postgres_dsn, outs)
    assert not uncertain, "no worker died: no create should be in doubt"


def test_the_command_line_on_a_postgresql_batch_never_shows_the_password(
    sim: Sim, tmp_path: Path, postgres_dsn: str, postgres_server: PostgresServer
) -> None:
    prompts = tmp_path / "harbour.txt"
    prompts.write_text("".join(f"a harbour at dusk, boat {n}\n" for n in range(20)))
    out = tmp_path / "out"

    def nanobanana(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli_command(), *args],
            env=sim.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    said = []
    run = nanobanana("run", str(prompts), "--out", str(out), "--journal", postgres_dsn)
    said.append(run.stdout + run.stderr)
    assert run.returncode == 0, run.stderr
    assert "(batch harbour)" in run.stdout  # --batch defaults to the file's name
    dry = nanobanana("run", str(prompts), "--out", str(out), "--journal", postgres_dsn, "--dry-run")
    said.append(dry.stdout + dry.stderr)
    assert dry.returncode == 0
    assert "already saved" in dry.stdout
    shown = nanobanana("journal", postgres_dsn, "--batch", "harbour")
    said.append(shown.stdout + shown.stderr)
    assert shown.returncode == 0
    assert "saved" in shown.stdout
    assert "20" in shown.stdout
    unnamed = nanobanana("journal", postgres_dsn)
    said.append(unnamed.stdout + unnamed.stderr)
    assert unnamed.returncode == 2
    assert "--batch NAME" in unnamed.stderr
    wrong = postgres_dsn.replace(postgres_server.password, "not-the-password")
    refused = nanobanana("run", str(prompts), "--out", str(out), "--journal", wrong)
    said.append(refused.stdout + refused.stderr)
    assert refused.returncode == 2
    assert "password authentication failed" in refused.stderr
    assert sim.settled_counters()["creates"] == 20
    everything = "\n".join(said)
    assert postgres_server.password not in everything
    assert "Traceback" not in everything
    assert "***" in everything


def test_a_batch_request_rate_given_on_the_command_line_holds_and_is_shown(
    sim: Sim, tmp_path: Path, postgres_dsn: str
) -> None:
    prompts = tmp_path / "slow.txt"
    prompts.write_text("".join(f"a snail on a leaf, frame {n}\n" for n in range(12)))
    rate = 8
    argv = [*cli_command(), "run", str(prompts), "--out", str(tmp_path / "out")]
    started = time.monotonic()
    run = subprocess.run(
        [*argv, "--journal", postgres_dsn, "--max-requests-per-second", str(rate)],
        env=sim.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stdout + run.stderr
    counters = sim.settled_counters()
    calls = counters["create_requests"] + counters["polls"]
    assert counters["creates"] == 12
    assert elapsed >= (calls - 1) / rate, (calls, elapsed)  # one worker: the whole rate
    shown = show_journal(sim, postgres_dsn, "slow")
    assert "request rate: 8 API calls a second for the batch" in shown
    as_json = json.loads(show_journal(sim, postgres_dsn, "slow", "--json"))
    assert as_json["max_requests_per_second"] == rate
