"""The ``nanobanana`` command, run as a real subprocess against the simulator.

Each run is bounded by a timeout and gets an environment without
NANOBANANA_API_KEY / NANOBANANA_BASE_URL unless a test sets them. ``--simulate``
uses the demo profile with adaptive polling (first poll after 2 s), so a run
takes a few seconds: the file keeps the number of runs small.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from nanobanana_async import ImageRequest, request_fingerprint
from nanobanana_async._naming import file_stem

from .conftest import SENTINEL_KEY
from .helpers import stop_process

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_PROMPTS = REPO_ROOT / "examples" / "prompts.txt"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RUN_TIMEOUT = 60.0
#: The run's own files in DIR (journal, locks, simulator state) all start with this.
JOURNAL_PREFIX = ".nanobanana"


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment without the SDK's variables or terminal hints, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key
        not in ("NANOBANANA_API_KEY", "NANOBANANA_BASE_URL", "COLUMNS", "LINES", "FORCE_COLOR")
    }
    env.update(extra or {})
    return env


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, command: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m nanobanana_async.cli ARGS`` (or ``command ARGS``) and capture its output."""
    argv = [*(command or [sys.executable, "-m", "nanobanana_async.cli"]), *args]
    return subprocess.run(
        argv,
        env=clean_env(env),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def output_of(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def flat(text: str) -> str:
    """Text with runs of whitespace made single spaces (rich wraps long lines at 80 columns)."""
    return " ".join(text.split())


def squeezed(text: str) -> str:
    """Text with all whitespace removed: finds paths and keys that rich wrapped mid-word."""
    return re.sub(r"\s+", "", text)


def read_manifest(out: Path) -> list[dict[str, Any]]:
    lines = (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def image_name(prompt: str, occurrence: int = 0) -> str:
    """The file a run saves for ``prompt`` (a plain text line, default model)."""
    key = request_fingerprint(ImageRequest(prompt=prompt))
    return f"{file_stem(prompt, key, occurrence)}.png"


def example_prompts() -> list[str]:
    lines = EXAMPLE_PROMPTS.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@contextlib.contextmanager
def simulator_process(workdir: Path, api_key: str, latency: str = "instant") -> Iterator[str]:
    """A standalone simulator subprocess accepting ``api_key``; yields its base URL.

    It is stopped (by its pid) when the block ends, whatever happened.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    ready = workdir / "ready.json"
    with (workdir / "simulator.log").open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nanobanana_async.testing",
                "--ready-file",
                str(ready),
                "--api-key",
                api_key,
                "--latency",
                latency,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=clean_env(),
        )
        try:
            deadline = time.monotonic() + 30
            while not ready.exists():
                assert process.poll() is None, "the simulator exited before it was ready"
                assert time.monotonic() < deadline, "the simulator did not become ready"
                time.sleep(0.02)
            info = json.loads(ready.read_text(encoding="utf-8"))
            yield str(info["base_url"])
        finally:
            stop_process(process)


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), path
    assert data.endswith(b"IEND\xaeB`\x82"), path


def test_run_simulate_writes_one_png_per_prompt_and_a_full_manifest(tmp_path: Path) -> None:
    """run examples/prompts.txt --simulate: exit 0, 22 PNGs, 22 manifest lines, a summary."""
    out = tmp_path / "out"
    result = run_cli("run", str(EXAMPLE_PROMPTS), "--simulate", "--out", str(out))
    text = output_of(result)
    assert result.returncode == 0, text
    assert "Traceback" not in text
    assert "succeeded" in text
    assert re.search(r"succeeded\W+22\b", text), text

    prompts = example_prompts()
    assert len(prompts) == 22
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 22
    for png in pngs:
        assert_png(png)
    written = sorted(p.name for p in out.iterdir() if not p.name.startswith(JOURNAL_PREFIX))
    assert written == sorted([*(p.name for p in pngs), "index.html", "manifest.jsonl"])

    rows = read_manifest(out)
    assert len(rows) == 22
    assert [row["index"] for row in rows] == list(range(22))
    for row, prompt in zip(rows, prompts, strict=True):
        assert row["prompt"] == prompt
        assert row["status"] == "saved"
        assert isinstance(row["task_id"], str)
        assert row["task_id"]
        path = Path(row["path"])
        assert path.parent == out
        assert path.name == image_name(prompt)
        assert path.exists()
    assert len({row["task_id"] for row in rows}) == 22


@pytest.fixture(scope="module")
def failing_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One --simulate run of a good prompt, a [fail] prompt and a [no-url] prompt."""
    folder = tmp_path_factory.mktemp("failing")
    prompts = folder / "prompts.txt"
    prompts.write_text(
        "a calm lake at noon\na forbidden picture [fail]\na broken answer [no-url]\n",
        encoding="utf-8",
    )
    out = folder / "out"
    return run_cli("run", str(prompts), "--simulate", "--out", str(out)), out


def test_run_with_a_failing_prompt_exits_1_and_names_the_reason(
    failing_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """A [fail] prompt: exit 1, the summary and manifest say TaskFailedError / content policy."""
    result, out = failing_run
    text = output_of(result)
    assert result.returncode == 1, text
    assert "Traceback" not in text
    assert "TaskFailedError" in text
    assert "MalformedResponseError" in text
    assert "2 of 3 inputs failed" in flat(text)

    rows = {row["index"]: row for row in read_manifest(out)}
    assert sorted(rows) == [0, 1, 2]
    assert rows[0]["status"] == "saved"
    assert rows[1]["status"] == "failed"
    assert rows[1]["error_type"] == "TaskFailedError"
    assert "content policy" in rows[1]["error"].lower()
    assert rows[1]["task_id"]
    assert [p.name for p in out.glob("*.png")] == [image_name("a calm lake at noon")]


def test_every_failed_input_has_its_reason_in_the_manifest(
    failing_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """Each input the summary counts as failed has a failed status and an error in the manifest."""
    _result, out = failing_run
    rows = {row["index"]: row for row in read_manifest(out)}
    assert rows[2]["status"] != "saved"
    assert rows[2]["error_type"] == "MalformedResponseError", rows[2]
    assert rows[2]["error"], rows[2]


@pytest.fixture(scope="module")
def bad_lines_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One --simulate run of a .jsonl with an invalid size (line 2) and a non-JSON line (line 3)."""
    folder = tmp_path_factory.mktemp("bad-lines")
    prompts = folder / "prompts.jsonl"
    prompts.write_text(
        '{"prompt": "a good one"}\n'
        '{"prompt": "a bad size", "size": "7:7"}\n'
        "this line is not json\n"
        '{"prompt": "another good one", "size": "16:9"}\n',
        encoding="utf-8",
    )
    out = folder / "out"
    return run_cli("run", str(prompts), "--simulate", "--out", str(out)), out


def test_bad_input_lines_are_reported_with_their_line_number_and_skipped(
    bad_lines_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """A .jsonl with an invalid size and a non-JSON line: both reported by line, skipped, exit 1."""
    result, out = bad_lines_run
    text = flat(output_of(result))
    assert result.returncode == 1, text
    assert "Traceback" not in text
    assert "line 2 skipped: invalid size '7:7'" in text
    assert "line 3 skipped: not a JSON object" in text
    assert "line 1 skipped" not in text
    assert "line 4 skipped" not in text
    assert "2 of 4 inputs failed" in text

    rows = read_manifest(out)
    assert len(rows) == 4  # one per input line
    by_line = {row["line"]: row for row in rows}
    assert sorted(by_line) == [1, 2, 3, 4]
    assert by_line[1]["status"] == by_line[4]["status"] == "saved"
    assert by_line[2]["status"] == by_line[3]["status"] == "invalid"
    assert by_line[2]["task_id"] is None
    assert by_line[3]["task_id"] is None
    assert "size" in by_line[2]["error"]
    # Nothing was sent for the bad lines: exactly the two good images exist.
    assert len(list(out.glob("*.png"))) == 2


def test_the_manifest_lists_inputs_in_input_order_including_skipped_lines(
    bad_lines_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """manifest.jsonl rows follow the input file's line order, skipped lines in their place."""
    _result, out = bad_lines_run
    assert [row["line"] for row in read_manifest(out)] == [1, 2, 3, 4]


def test_without_simulate_or_a_key_exits_2_naming_the_variable(tmp_path: Path) -> None:
    """No --simulate, no NANOBANANA_API_KEY: exit 2, an error naming the variable, no traceback."""
    result = run_cli("run", str(EXAMPLE_PROMPTS), "--out", str(tmp_path / "out"))
    text = output_of(result)
    assert result.returncode == 2, text
    assert "Traceback" not in text
    assert "NANOBANANA_API_KEY" in text
    assert flat(text).startswith("nanobanana: error: no API key")
    assert not (tmp_path / "out").exists()  # nothing created for a run that cannot start


def test_the_missing_key_error_is_a_single_line_when_not_on_a_terminal(tmp_path: Path) -> None:
    """Not a terminal, no COLUMNS: the missing-key error is exactly one line of output."""
    result = run_cli("generate", "a red fox", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    lines = [line for line in output_of(result).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "NANOBANANA_API_KEY" in lines[0]


def test_a_rejected_key_exits_2_with_one_error_line_and_never_shows_the_key(
    tmp_path: Path,
) -> None:
    """Wrong key against a simulator subprocess: run and generate exit 2, one error line, no key."""
    with simulator_process(tmp_path / "sim", api_key="the-right-key") as base_url:
        env = {"NANOBANANA_API_KEY": SENTINEL_KEY, "NANOBANANA_BASE_URL": base_url}
        run = run_cli("run", str(EXAMPLE_PROMPTS), "--out", str(tmp_path / "run"), env=env)
        one = run_cli("generate", "a red fox", "--out", str(tmp_path / "one"), env=env)

    for result in (run, one):
        text = output_of(result)
        assert result.returncode == 2, text
        assert "Traceback" not in text
        assert SENTINEL_KEY not in squeezed(text)
        errors = [line for line in text.splitlines() if line.startswith("nanobanana: error:")]
        assert len(errors) == 1, text
        assert "401" in flat(text) or "key" in flat(text).lower()
    # generate prints only the error.
    assert flat(output_of(one)).startswith("nanobanana: error:")
    assert not list((tmp_path / "one").iterdir())
    rows = read_manifest(tmp_path / "run")
    assert len(rows) == 22
    assert {row["error_type"] for row in rows} == {"AuthenticationError"}
    assert not list((tmp_path / "run").glob("*.png"))


def test_generate_simulate_saves_one_png_with_the_installed_command(tmp_path: Path) -> None:
    """The installed `nanobanana generate "a red fox" --simulate --out DIR`: one PNG, exit 0."""
    executable = shutil.which("nanobanana")
    if executable is None:
        pytest.skip("the nanobanana console script is not installed on PATH")
    out = tmp_path / "out"
    result = run_cli("generate", "a red fox", "--simulate", "--out", str(out), command=[executable])
    text = output_of(result)
    assert result.returncode == 0, text
    assert "Traceback" not in text
    files = list(out.iterdir())
    assert len(files) == 1
    assert files[0].suffix == ".png"
    assert_png(files[0])
    assert f"saved{files[0]}" in squeezed(text)


def test_the_key_never_appears_in_output_manifest_or_files(tmp_path: Path) -> None:
    """Sentinel key accepted by a simulator subprocess: absent from output, manifest and images."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(
        "a quiet harbour\na rejected picture [fail]\na broken answer [no-url]\n", encoding="utf-8"
    )
    out = tmp_path / "out"
    with simulator_process(tmp_path / "sim", api_key=SENTINEL_KEY) as base_url:
        env = {"NANOBANANA_API_KEY": SENTINEL_KEY, "NANOBANANA_BASE_URL": base_url}
        result = run_cli("run", str(prompts), "--out", str(out), env=env)

    text = output_of(result)
    assert result.returncode == 1, text
    assert "Traceback" not in text
    assert SENTINEL_KEY not in squeezed(text)
    rows = {row["index"]: row for row in read_manifest(out)}
    assert [rows[i]["status"] for i in range(2)] == ["saved", "failed"]
    assert rows[1]["error_type"] == "TaskFailedError"
    for path in out.iterdir():
        assert SENTINEL_KEY.encode() not in path.read_bytes(), path
