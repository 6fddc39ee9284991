"""What a person does between runs, through the real ``nanobanana run``.

Fault cases 41-46 and 52 of docs/reliability.md.

An input is known by what it asks for, so editing the prompt file between runs
pays only for new requests; one run at a time per output folder; Ctrl-C leaves
a manifest and journal that agree, and a rerun converges.

Each test starts a standalone simulator process and points the installed
command at it, so "paid once" is read from the simulator's own task table
(creates per prompt), and the folder is checked file by file. Every process
is bounded in time and stopped by its pid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from .test_cli import EXAMPLE_PROMPTS, example_prompts, flat, image_name
from .test_crash import Sim, cli_command, simulator

pytestmark = pytest.mark.slow

RUN_TIMEOUT = 60.0


def run(sim: Sim, prompts: Path, out: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cli_command(), "run", str(prompts), "--out", str(out), *flags],
        env=sim.env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def start(
    sim: Sim, prompts: Path, out: Path, log: Path, *, concurrency: int = 8
) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(
            [
                *cli_command(),
                "run",
                str(prompts),
                "--out",
                str(out),
                "--concurrency",
                f"{concurrency}",
            ],
            env=sim.env(),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def prompt_file(path: Path, texts: list[str]) -> Path:
    """A plain prompt file, one text a line."""
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


def manifest(out: Path) -> list[dict[str, Any]]:
    lines = (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def journal_json(sim: Sim, out: Path) -> dict[str, Any]:
    result = subprocess.run(
        [*cli_command(), "journal", str(out), "--json"],
        env=sim.env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=True,
    )
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def pngs(out: Path) -> set[str]:
    return {path.name for path in out.glob("*.png")}


def assert_folder_matches_manifest(out: Path) -> list[dict[str, Any]]:
    """Every saved row's file exists, and every image on disk is a saved row's file."""
    rows = manifest(out)
    saved = {Path(row["path"]).name for row in rows if row["status"] == "saved"}
    assert saved == pngs(out)
    return rows


def test_a_line_added_at_the_top_costs_one_create_and_the_rerun_exits_0(
    tmp_path: Path,
) -> None:
    """Case 41 as reported: 22 prompts done, one line added on top, rerun: only it is paid."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(EXAMPLE_PROMPTS.read_text(encoding="utf-8"), encoding="utf-8")
    out = tmp_path / "out"
    with simulator(tmp_path / "sim") as sim:
        first = run(sim, prompts, out)
        assert first.returncode == 0, first.stdout + first.stderr
        prompts.write_text(
            "a heron standing in fog\n" + prompts.read_text(encoding="utf-8"), encoding="utf-8"
        )
        second = run(sim, prompts, out)
        text = second.stdout + second.stderr
        assert second.returncode == 0, text
        assert "Conflict" not in text
        expected = Counter([*example_prompts(), "a heron standing in fog"])
        assert sim.creates_per_prompt() == expected
        rows = assert_folder_matches_manifest(out)
        assert [row["status"] for row in rows] == ["saved"] * 23
        assert rows[0]["path"] == str(out / image_name("a heron standing in fog"))
        assert journal_json(sim, out)["counts"] == {"saved": 23}


def test_an_edited_middle_line_is_one_create_and_the_old_entry_is_reported_not_failed(
    tmp_path: Path,
) -> None:
    """Case 43: exit 0, one new create, 'not asked for' reported, the old image kept."""
    texts = example_prompts()
    prompts = prompt_file(tmp_path / "prompts.txt", texts)
    out = tmp_path / "out"
    with simulator(tmp_path / "sim") as sim:
        assert run(sim, prompts, out).returncode == 0
        old = texts[10]
        texts[10] = "a lighthouse drawn in chalk"
        prompt_file(prompts, texts)
        again = run(sim, prompts, out)
        text = flat(again.stdout + again.stderr)
        assert again.returncode == 0, text
        assert "1 journal entry is not asked for by this input" in text
        assert sim.creates_per_prompt() == Counter([*example_prompts(), texts[10]])
        assert image_name(old) in pngs(out)
        rows = manifest(out)
        assert [row["status"] for row in rows] == ["saved"] * 22
        assert len(pngs(out)) == 23


def test_a_second_run_on_the_same_folder_is_refused_at_once_and_the_first_finishes(
    tmp_path: Path,
) -> None:
    """Case 45: the second exits 2 naming the folder and the holder; 60 inputs, 60 creates."""
    texts = [f"a crowded folder {i}" for i in range(60)]
    prompts = prompt_file(tmp_path / "p60.txt", texts)
    out = tmp_path / "TW"
    with simulator(tmp_path / "sim") as sim:
        # Ten waves of six jobs: the first run lasts long enough for the second to meet it.
        first = start(sim, prompts, out, tmp_path / "first.log", concurrency=6)
        try:
            deadline = time.monotonic() + 30
            while sim.counters()["creates"] == 0:
                assert first.poll() is None, (tmp_path / "first.log").read_text()
                assert time.monotonic() < deadline
                time.sleep(0.02)
            second = run(sim, prompts, out)
            assert first.wait(timeout=RUN_TIMEOUT) == 0, (tmp_path / "first.log").read_text()
        finally:
            if first.poll() is None:
                first.kill()
                first.wait(timeout=10)
        text = flat(second.stdout + second.stderr)
        assert second.returncode == 2, text
        assert "Traceback" not in text
        assert f"{out} is in use by process {first.pid}" in text
        assert sim.creates_per_prompt() == Counter(texts)
        assert len(pngs(out)) == 60
        rerun = run(sim, prompts, out)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert sim.counters()["creates"] == 60


def test_ctrl_c_says_what_was_done_writes_a_true_manifest_and_the_rerun_converges(
    tmp_path: Path,
) -> None:
    """Cases 46 and 52: one line with counts and how to resume; manifest and journal agree."""
    texts = [f"an interrupted owl {i}" for i in range(80)]
    prompts = prompt_file(tmp_path / "prompts.txt", texts)
    out = tmp_path / "out"
    log = tmp_path / "run.log"
    with simulator(tmp_path / "sim") as sim:
        process = start(sim, prompts, out, log)
        try:
            deadline = time.monotonic() + 30
            while len(pngs(out)) < 5:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline
                time.sleep(0.02)
            os.kill(process.pid, signal.SIGINT)
            assert process.wait(timeout=30) == 130
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        text = log.read_text(encoding="utf-8")
        assert "Traceback" not in text
        interrupted = [line for line in text.splitlines() if "interrupted" in line]
        assert len(interrupted) == 1, text
        assert "of 80 inputs" in interrupted[0]
        assert "run the same command again to resume" in flat(text)

        rows = assert_folder_matches_manifest(out)
        assert len(rows) == 80
        report = journal_json(sim, out)
        assert report["counts"].get("saved", 0) == len(pngs(out))
        assert report["uncertain"] == []
        assert 5 <= len(pngs(out)) < 80

        rerun = run(sim, prompts, out)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert sim.creates_per_prompt() == Counter(texts)
        assert [row["status"] for row in assert_folder_matches_manifest(out)] == ["saved"] * 80
        before = sim.counters()
        assert run(sim, prompts, out).returncode == 0
        after = sim.counters()
        assert after["create_requests"] == before["create_requests"]
        assert after["downloads"] == before["downloads"]


def test_a_quiet_stdin_pipe_does_not_freeze_the_run_and_ctrl_c_is_heard(
    tmp_path: Path,
) -> None:
    """Two lines, then a silent (open) pipe: both images arrive; SIGINT ends it with one line."""
    out = tmp_path / "out"
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"a fox on a quiet pipe\na cat on a quiet pipe\n")
        with simulator(tmp_path / "sim") as sim:
            process = subprocess.Popen(
                [*cli_command(), "run", "-", "--out", str(out)],
                env=sim.env(),
                stdin=read_end,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            os.close(read_end)
            read_end = -1
            try:
                deadline = time.monotonic() + 30
                while len(pngs(out)) < 2:
                    assert process.poll() is None
                    assert time.monotonic() < deadline, "the run froze on the quiet pipe"
                    time.sleep(0.05)
                process.send_signal(signal.SIGINT)
                _, stderr = process.communicate(timeout=20)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.communicate(timeout=10)
            assert process.returncode == 130, stderr
            assert "Traceback" not in stderr
            assert "Fatal Python error" not in stderr
            lines = stderr.strip().splitlines()
            assert len(lines) == 1, stderr
            assert "interrupted after 2 inputs" in lines[0]
            assert sim.creates_per_prompt() == Counter(
                ["a fox on a quiet pipe", "a cat on a quiet pipe"]
            )
    finally:
        os.close(write_end)
        if read_end != -1:
            os.close(read_end)
