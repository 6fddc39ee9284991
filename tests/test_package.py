"""The package as a user meets it: import cost, metadata, --version, help texts, empty input."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import nanobanana_async

from .test_cli import clean_env, output_of
from .test_crash import cli_command

REPO_ROOT = Path(__file__).resolve().parent.parent


def _console(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    """The installed ``nanobanana`` console script (else the module), bounded in time."""
    return subprocess.run(
        [*cli_command(), *args],
        env=clean_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_importing_the_package_loads_neither_sqlite3_nor_rich() -> None:
    probe = (
        "import sys, nanobanana_async; "
        "print(sorted(m for m in ('sqlite3', 'rich') if m in sys.modules))"
    )
    # Not measured by coverage (nox -s tests), whose own data file is SQLite.
    env = {k: v for k, v in os.environ.items() if k != "COVERAGE_PROCESS_CONFIG"}
    found = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    )
    assert found.stdout.strip() == "[]"


def test_the_journal_names_load_on_first_use_under_the_public_module_name() -> None:
    assert nanobanana_async.SQLiteJournal.__module__ == "nanobanana_async"
    assert nanobanana_async.read_journal.__module__ == "nanobanana_async"
    assert "JournalReader" in nanobanana_async.__all__
    assert nanobanana_async.JournalReader.__module__ == "nanobanana_async"


def test_nanobanana_version_names_the_package_version() -> None:
    result = _console("--version")
    assert result.returncode == 0, output_of(result)
    assert result.stdout.strip() == f"nanobanana {nanobanana_async.__version__} (nanobanana-async)"


def test_generate_help_speaks_of_one_image_and_offers_no_concurrency() -> None:
    text = " ".join(_console("generate", "--help").stdout.split())
    assert "Generate one image for PROMPT" in text
    assert "model for the image" in text
    assert "every prompt" not in text
    assert "--concurrency" not in text


def test_every_command_has_a_description_in_its_help() -> None:
    journal = " ".join(_console("journal", "--help").stdout.split())
    assert "Show what the journal of a run holds" in journal
    run = " ".join(_console("run", "--help").stdout.split())
    assert "every prompt (a JSONL line may set its own)" in run
    assert "--log-json FILE" in run


def test_a_prompt_file_without_a_prompt_is_a_usage_error_that_creates_nothing(
    tmp_path: Path,
) -> None:
    for name, text in (("empty.txt", ""), ("comments.txt", "# only a comment\n\n   \n")):
        prompts = tmp_path / name
        prompts.write_text(text, encoding="utf-8")
        out = tmp_path / f"out-{name}"
        result = _console("run", str(prompts), "--simulate", "--out", str(out), cwd=tmp_path)
        lines = output_of(result).strip().splitlines()
        assert result.returncode == 2, lines
        assert len(lines) == 1
        assert "holds no prompt" in lines[0]
        assert not out.exists()


def test_the_package_index_gets_a_licence_and_a_description_of_its_own() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "MIT"
    assert "MIT License" in (REPO_ROOT / "LICENSE").read_text(encoding="utf-8")
    description = (REPO_ROOT / project["readme"]).read_text(encoding="utf-8")
    assert project["readme"] != "README.md"  # the README opens with a checkout's commands
    assert "pip install -e" not in description
    assert 'pip install "nanobanana-async[cli]"' in description


def test_simulate_help_names_the_command_and_explains_each_latency_profile() -> None:
    text = " ".join(_console("simulate", "--help").stdout.split())
    assert text.startswith("usage: nanobanana simulate")
    for profile in ("realistic (", "demo (", "fast (", "instant ("):
        assert profile in text


def test_generate_twice_into_one_folder_on_the_simulator_saves_two_images(tmp_path: Path) -> None:
    """Each start of the built-in simulator gives fresh task ids, so names never clash."""
    out = tmp_path / "G1"
    for _ in range(2):
        result = _console("generate", "a red fox", "--simulate", "--out", str(out), cwd=tmp_path)
        assert result.returncode == 0, output_of(result)
    assert len(list(out.glob("*.png"))) == 2


def test_messages_speak_the_commands_words(tmp_path: Path) -> None:
    """A bad size in a JSONL line and a prompt file given as a journal: no library words."""
    prompts = tmp_path / "bad.jsonl"
    prompts.write_text('{"prompt": "a fox", "size": "7:3"}\n{"prompt": "a cat"}\n', "utf-8")
    run = _console("run", str(prompts), "--simulate", "--out", str(tmp_path / "o"), cwd=tmp_path)
    text = " ".join(output_of(run).split())
    assert "line 1 skipped: invalid size '7:3'" in text
    assert "or leave it unset" in text
    assert "None" not in text
    journal = _console("journal", str(prompts), cwd=tmp_path)
    message = " ".join(output_of(journal).split())
    assert journal.returncode == 2
    assert "is not a nanobanana_async journal" in message
    assert "--journal" not in message
    assert "Traceback" not in message


def test_run_simulate_takes_a_latency_profile_and_seeded_faults(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"a fox number {i}\n" for i in range(12)), encoding="utf-8")
    args = ["run", str(prompts), "--simulate", "--out", str(tmp_path / "o")]
    faults = ["--simulate-latency", "instant", "--simulate-faults", "server_error=0.3"]
    result = _console(*args, *faults, cwd=tmp_path)
    text = " ".join(output_of(result).split())
    assert result.returncode in (0, 1), text
    assert "retries" in text  # 503s on polls are retried, and the summary says so
    assert "Traceback" not in text
    bad = _console(*args, "--simulate-faults", "bogus=1", cwd=tmp_path)
    assert bad.returncode == 2
    assert "expected NAME=NUMBER" in bad.stderr
    unknown = _console(*args, "--simulate-latency", "sluggish", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "invalid choice: 'sluggish'" in unknown.stderr
