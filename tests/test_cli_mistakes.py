"""A user's mistake on the command line is exit 2 and one line, never a traceback.

Fault case 51 of docs/reliability.md.

Input that is not UTF-8 text, an ``--out`` or ``--journal`` that cannot be
used, a prompt file that is missing, unreadable or a folder: each is refused
with exit 2 and one line naming the problem, never a traceback. Every run
passes ``--simulate``, whose simulator keeps its state in ``--out``: the
folder not existing afterwards (and nothing on standard output, not even the
simulator's banner) proves nothing started, so nothing was sent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .test_cli import EXAMPLE_PROMPTS, REPO_ROOT, RUN_TIMEOUT, clean_env, output_of, run_cli

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
ROOT_IGNORES_MODES = (
    "root reads and writes regardless of file modes, so chmod cannot make this mistake; "
    "the --out/--journal under a regular file tests cover the same refusal"
)


def files_in(folder: Path) -> set[str]:
    """Every path under ``folder``, relative to it."""
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def assert_refused(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit 2, nothing on stdout, one error line on stderr holding every fragment; returns it."""
    text = output_of(result)
    assert result.returncode == 2, text
    assert "Traceback" not in text
    assert result.stdout == "", text
    lines = result.stderr.splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith("nanobanana: error: "), text
    for fragment in fragments:
        assert fragment in lines[0], text
    return lines[0]


def run_refused(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI with ``--simulate``; assert it created nothing under ``tmp_path``."""
    before = files_in(tmp_path)
    result = run_cli(*args, "--simulate")
    assert files_in(tmp_path) == before, output_of(result)
    return result


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [
        ("prompts.txt", b"a red fox\n# a comment\n\na \xff fox\na calm lake\n", 4),
        ("prompts.jsonl", b'{"prompt": "a red fox"}\n{"prompt": "caf\xe9"}\n', 2),
    ],
)
def test_one_bad_byte_in_a_prompt_file_is_refused_naming_its_line(
    tmp_path: Path, name: str, content: bytes, line: int
) -> None:
    """One byte that is not UTF-8: exit 2, 'not UTF-8 text: line N has the byte 0x..'."""
    prompts = tmp_path / name
    prompts.write_bytes(content)
    result = run_refused(tmp_path, "run", str(prompts), "--out", str(tmp_path / "out"))
    bad = content.splitlines()[line - 1]
    byte = next(b for b in bad if b >= 0x80)
    assert_refused(
        result, f"prompt file {prompts} is not UTF-8 text: line {line} has the byte 0x{byte:02x}"
    )


def test_a_binary_file_as_prompts_is_refused_as_not_text(tmp_path: Path) -> None:
    """The Python executable as a prompt file: exit 2, not UTF-8 text at line 1."""
    binary = Path(sys.executable).resolve()
    result = run_refused(tmp_path, "run", str(binary), "--out", str(tmp_path / "out"))
    assert_refused(result, f"prompt file {binary} is not UTF-8 text: line 1 has ")


def test_a_nul_byte_marks_a_prompt_file_as_not_text(tmp_path: Path) -> None:
    """A NUL byte is valid UTF-8 but a sign of a binary file: exit 2 naming its line."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"a red fox\nan odd \x00 line\n")
    result = run_refused(tmp_path, "run", str(prompts), "--out", str(tmp_path / "out"))
    assert_refused(result, "is not UTF-8 text: line 2 has a NUL byte")


def test_the_first_bad_line_of_a_million_line_file_is_named_exactly(tmp_path: Path) -> None:
    """A bad byte on line 1,000,000 (far past the first read chunk) is named by that number."""
    prompts = tmp_path / "prompts.txt"
    with prompts.open("wb") as handle:
        handle.writelines(b"prompt %d\n" % number for number in range(1, 1_000_000))
        handle.write(b"the last \x80 one\n")
    result = run_refused(tmp_path, "run", str(prompts), "--out", str(tmp_path / "out"))
    assert_refused(result, "line 1000000 has the byte 0x80")


def test_a_bad_byte_on_standard_input_ends_the_run_with_exit_2_naming_its_line(
    tmp_path: Path,
) -> None:
    """stdin is checked as it is read: exit 2, one error line, nothing read past the bad line."""
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "nanobanana_async.cli", "run", "-", "--out", str(out), "--simulate"],
        input=b"a red fox\n\xfe\nnever read\n",
        env=clean_env(),
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr
    assert stderr.splitlines() == [
        "nanobanana: error: standard input is not UTF-8 text: line 2 has the byte 0xfe"
    ]
    # Line 1 may have been sent before line 2 was read; line 3 never was.
    images = [path.name for path in out.glob("*.png")]
    assert len(images) <= 1, images
    assert not [name for name in images if "never" in name], images


@pytest.mark.parametrize("command", [["run", str(EXAMPLE_PROMPTS)], ["generate", "a red fox"]])
def test_out_naming_a_regular_file_is_refused_and_the_file_left_alone(
    tmp_path: Path, command: list[str]
) -> None:
    """--out FILE: exit 2, '--out FILE exists and is not a folder'; the file is unchanged."""
    taken = tmp_path / "notes.txt"
    taken.write_text("mine\n", encoding="utf-8")
    result = run_refused(tmp_path, *command, "--out", str(taken))
    assert_refused(result, f"--out {taken} exists and is not a folder")
    assert taken.read_text(encoding="utf-8") == "mine\n"


@pytest.mark.parametrize("command", [["run", str(EXAMPLE_PROMPTS)], ["generate", "a red fox"]])
def test_out_under_a_regular_file_is_refused_as_not_creatable(
    tmp_path: Path, command: list[str]
) -> None:
    """--out FILE/sub cannot be created: exit 2 naming FILE, nothing created."""
    taken = tmp_path / "notes.txt"
    taken.write_text("mine\n", encoding="utf-8")
    result = run_refused(tmp_path, *command, "--out", str(taken / "sub"))
    assert_refused(result, f"--out {taken / 'sub'} cannot be created: {taken} is not a folder")


@pytest.mark.skipif(AS_ROOT, reason=ROOT_IGNORES_MODES)
def test_out_in_a_folder_without_write_permission_is_refused(tmp_path: Path) -> None:
    """--out under a read-only folder: exit 2, 'no write permission in' that folder."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        result = run_refused(tmp_path, "run", str(EXAMPLE_PROMPTS), "--out", str(locked / "out"))
    finally:
        locked.chmod(0o755)
    assert_refused(result, f"no write permission in {locked}")


def test_a_missing_prompt_file_is_refused(tmp_path: Path) -> None:
    """A prompt file that does not exist: exit 2, 'prompt file X does not exist'."""
    missing = tmp_path / "nothing.txt"
    result = run_refused(tmp_path, "run", str(missing), "--out", str(tmp_path / "out"))
    assert_refused(result, f"prompt file {missing} does not exist")


def test_a_folder_as_prompt_file_is_refused(tmp_path: Path) -> None:
    """A folder given as the prompt file: exit 2, 'is a folder, not a file'."""
    folder = tmp_path / "prompts"
    folder.mkdir()
    result = run_refused(tmp_path, "run", str(folder), "--out", str(tmp_path / "out"))
    assert_refused(result, f"prompt file {folder} is a folder, not a file")


@pytest.mark.skipif(AS_ROOT, reason=ROOT_IGNORES_MODES)
def test_an_unreadable_prompt_file_is_refused(tmp_path: Path) -> None:
    """A prompt file without read permission: exit 2, 'cannot be read'."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\n", encoding="utf-8")
    prompts.chmod(0o200)
    result = run_refused(tmp_path, "run", str(prompts), "--out", str(tmp_path / "out"))
    assert_refused(result, f"prompt file {prompts} cannot be read")


def test_a_journal_naming_a_folder_is_refused(tmp_path: Path) -> None:
    """--journal FOLDER: exit 2, 'journal FOLDER is a folder, not a file'."""
    folder = tmp_path / "journals"
    folder.mkdir()
    prompts = str(EXAMPLE_PROMPTS)
    result = run_refused(
        tmp_path, "run", prompts, "--out", str(tmp_path / "out"), "--journal", str(folder)
    )
    assert_refused(result, f"journal {folder} is a folder, not a file")


def test_a_journal_under_a_regular_file_is_refused(tmp_path: Path) -> None:
    """--journal FILE/run.sqlite: exit 2, cannot be created because FILE is not a folder."""
    taken = tmp_path / "notes.txt"
    taken.write_text("mine\n", encoding="utf-8")
    journal = taken / "run.sqlite"
    prompts = str(EXAMPLE_PROMPTS)
    result = run_refused(
        tmp_path, "run", prompts, "--out", str(tmp_path / "out"), "--journal", str(journal)
    )
    assert_refused(result, f"journal {journal} cannot be created: {taken} is not a folder")


@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [
        ("--max-requests-per-second", "-1", "0 or more"),
        ("--max-requests-per-second", "fast", "0 or more"),
        ("--max-requests-per-second", "inf", "0 or more"),
        ("--lease-seconds", "0", "more than 0"),
        ("--lease-seconds", "nan", "more than 0"),
    ],
)
def test_a_rate_or_lease_that_is_not_a_fitting_number_is_refused(
    tmp_path: Path, option: str, value: str, allowed: str
) -> None:
    out = str(tmp_path / "out")
    result = run_refused(tmp_path, "run", str(EXAMPLE_PROMPTS), "--out", out, option, value)
    assert result.returncode == 2, output_of(result)
    assert result.stderr == (
        f"nanobanana run: error: argument {option}: expected a number, {allowed}, got "
        f"{value!r} (see 'nanobanana run --help')\n"
    )


@pytest.mark.parametrize(
    ("options", "named"),
    [(("--batch", "nightly"), "--batch"), (("--lease-seconds", "10"), "--lease-seconds")],
)
def test_a_postgresql_option_without_a_postgresql_journal_is_refused(
    tmp_path: Path, options: tuple[str, str], named: str
) -> None:
    out = str(tmp_path / "out")
    result = run_refused(tmp_path, "run", str(EXAMPLE_PROMPTS), "--out", out, *options)
    line = assert_refused(result, named, "PostgreSQL journal (--journal postgresql://...)")
    assert "Traceback" not in line


def test_journal_with_a_batch_name_for_a_sqlite_journal_is_refused(tmp_path: Path) -> None:
    result = run_cli("journal", str(tmp_path), "--batch", "nightly")
    assert_refused(result, "--batch names a batch in a PostgreSQL journal")
