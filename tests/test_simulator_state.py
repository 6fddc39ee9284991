"""The simulator's ``state_path``: its tasks outlive the process (docs/reliability.md, case 50).

So an interrupted ``nanobanana run --simulate`` resumes like a real run: images
in flight are fetched on the rerun, not failed with TaskNotFoundError.

The simulator tests talk to it over loopback with plain aiohttp; the last test
interrupts a ``nanobanana run --simulate`` subprocess with SIGINT and reruns it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from nanobanana_async import ConfigurationError
from nanobanana_async.testing import LatencyProfile, Simulator

from .helpers import png_size, stop_process
from .test_cli import clean_env, run_cli

STATE_NAME = ".nanobanana-simulator.jsonl"
#: Every job takes 0.3 s, so a task created just before a simulator closes is not done yet.
JOB_SECONDS = 0.3


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def simulator(state: Path) -> Simulator:
    return Simulator(latency=LatencyProfile.uniform(JOB_SECONDS, JOB_SECONDS), state_path=state)


def auth(sim: Simulator) -> dict[str, str]:
    return {"Authorization": f"Bearer {sim.api_key}"}


async def create(session: aiohttp.ClientSession, sim: Simulator, prompt: str) -> str:
    body = {"model": "nano-banana-2", "prompt": prompt, "size": "16:9"}
    async with session.post(f"{sim.base_url}/v1/banana/images", json=body, headers=auth(sim)) as r:
        assert r.status == 200, await r.text()
        task_id: str = (await r.json())["id"]
        return task_id


async def poll(session: aiohttp.ClientSession, sim: Simulator, task_id: str) -> tuple[int, Any]:
    async with session.get(f"{sim.base_url}/v1/result/{task_id}", headers=auth(sim)) as r:
        return r.status, await r.json()


def task_lines(state: Path) -> list[dict[str, Any]]:
    """The task records of a state file (after its header line)."""
    lines = state.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[1:]]


async def test_a_task_created_by_one_simulator_is_served_by_the_next(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    state = tmp_path / "out" / STATE_NAME
    async with simulator(state) as first:
        assert not state.exists()  # nothing is written until a task is created
        fox = await create(session, first, "a red fox")
        failing = await create(session, first, "[fail-object] a cat")
        endless = await create(session, first, "[never] a dog")
        # Each line is on disk as soon as its create is answered, not at close.
        assert [line["id"] for line in task_lines(state)] == [fox, failing, endless]
        _, early = await poll(session, first, fox)
        assert early["status"] != "completed"
        created = early["created"]
    await anyio.sleep(JOB_SECONDS + 0.1)

    async with simulator(state) as second:
        assert second.counters.creates == 0
        assert second.counters.create_requests == 0
        assert set(second.tasks) == {fox, failing, endless}
        status, done = await poll(session, second, fox)
        assert status == 200
        assert done["status"] == "completed"
        assert done["created"] == created
        assert done["image_url"] == second.image_url(fox)
        async with session.get(done["image_url"]) as download:
            assert download.status == 200
            assert png_size(await download.read()) == (64, 36)
        _, failed = await poll(session, second, failing)
        assert failed["status"] == "failed"
        assert failed["error"]["code"] == "content_policy"
        _, running = await poll(session, second, endless)
        assert running["status"] == "processing"
        newer = await create(session, second, "a red fox")
        assert newer not in (fox, failing, endless)
        assert second.counters.creates == 1
        assert second.counters.downloads_completed == 1
    assert [line["id"] for line in task_lines(state)] == [fox, failing, endless, newer]


@pytest.mark.parametrize("remain", [1, 40, None], ids=["first-byte", "mid-line", "no-newline"])
async def test_a_last_line_cut_short_by_a_kill_is_dropped(
    tmp_path: Path, session: aiohttp.ClientSession, remain: int | None
) -> None:
    state = tmp_path / STATE_NAME
    async with simulator(state) as first:
        kept = await create(session, first, "a red fox")
        lost = await create(session, first, "a grey wolf")
    data = state.read_bytes()
    last_line = data.rindex(b"\n", 0, -1) + 1
    state.write_bytes(data[:-1] if remain is None else data[: last_line + remain])

    async with simulator(state) as second:
        assert set(second.tasks) == {kept}
        assert (await poll(session, second, lost))[0] == 404
        newer = await create(session, second, "a blue whale")
    # The cut tail was replaced, not glued to the next line.
    assert [line["id"] for line in task_lines(state)] == [kept, newer]


async def test_a_header_cut_short_is_an_empty_state(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    state = tmp_path / STATE_NAME
    state.write_bytes(b'{"format":"nanobanana-simu')
    async with simulator(state) as sim:
        assert sim.tasks == {}
        task_id = await create(session, sim, "a red fox")
    assert [line["id"] for line in task_lines(state)] == [task_id]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"id,prompt\n1,a red fox\n", "not a simulator state file"),
        (b'{"format":"nanobanana-simulator-state","version":2}\n', "not a simulator state file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "not a simulator state file"),
        (b'{"format":"nanobanana-simulator-state","version":1}\n{"id": \n{}\n', "line 2"),
        (b'{"format":"nanobanana-simulator-state","version":1}\n[1]\n', "line 2"),
    ],
    ids=["csv", "other-version", "binary", "bad-json", "not-a-task"],
)
async def test_a_foreign_or_damaged_file_is_refused_and_left_alone(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    state = tmp_path / STATE_NAME
    state.write_bytes(content)
    sim = simulator(state)
    with pytest.raises(ConfigurationError) as raised:
        await sim.start()
    message = str(raised.value)
    assert str(state) in message
    assert problem in message
    assert state.read_bytes() == content
    await sim.aclose()


PROMPTS = 40
#: Ctrl-C once this many images are saved while at least IN_FLIGHT more tasks exist.
SAVED_BEFORE_INTERRUPT = 3
IN_FLIGHT = 5


def png_files(out: Path) -> list[Path]:
    return sorted(out.glob("*.png"))


def created_tasks(out: Path) -> int:
    try:
        return len(task_lines(out / STATE_NAME))
    except (FileNotFoundError, json.JSONDecodeError):  # not yet, or a line being written
        return 0


def interrupt_when_in_flight(argv: list[str], out: Path) -> None:
    """Start the run, and SIGINT it once a few images exist and several jobs are in flight."""
    with (out.parent / "interrupted.log").open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=clean_env())
        try:
            deadline = time.monotonic() + 30
            while (
                len(png_files(out)) < SAVED_BEFORE_INTERRUPT
                or created_tasks(out) - len(png_files(out)) < IN_FLIGHT
            ):
                assert process.poll() is None, "the run ended before it could be interrupted"
                assert time.monotonic() < deadline, "the run never had jobs in flight"
                time.sleep(0.01)
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
        finally:
            stop_process(process)


def test_an_interrupted_simulated_run_resumes_its_tasks_on_the_rerun(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"a red fox number {n}\n" for n in range(PROMPTS)), encoding="utf-8")
    out = tmp_path / "out"
    args = ["run", str(prompts), "--simulate", "--out", str(out)]
    interrupt_when_in_flight([sys.executable, "-m", "nanobanana_async.cli", *args], out)
    interrupted = len(png_files(out))
    assert interrupted < PROMPTS

    rerun = run_cli(*args)
    output = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, output
    assert len(png_files(out)) == PROMPTS
    for image in png_files(out):
        png_size(image.read_bytes())
    assert "TaskNotFound" not in output
    assert "TaskNotFound" not in (out / "manifest.jsonl").read_text(encoding="utf-8")
    # Tasks in flight at the interruption were fetched, not created again.
    assert created_tasks(out) == PROMPTS
