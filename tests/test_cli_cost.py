"""``nanobanana run --max-images``, ``--dry-run``, ``--price`` and ``--max-requests-per-second``.

Creates and polls are read from a standalone simulator's own counters, so
"never sends more than it says" is what the service saw, including on
reruns that resume from the journal.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from .test_crash import Sim, cli_command, simulator

pytestmark = pytest.mark.slow

RUN_TIMEOUT = 60.0
PROMPTS = [f"a paper boat on a pond, take {number}" for number in range(10)]


@pytest.fixture
def sim(tmp_path: Path) -> Any:
    with simulator(tmp_path / "sim") as running:
        yield running


def nanobanana(
    sim: Sim, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cli_command(), *args],
        env=sim.env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def prompt_file(tmp_path: Path, texts: list[str] = PROMPTS) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


def statuses(out: Path) -> list[str]:
    lines = (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["status"] for line in lines]


def figure(output: str, label: str) -> str:
    """The value in the row of the summary or dry-run table that starts with ``label``."""
    found = re.search(rf"{re.escape(label)}\s*│\s*([^│]+?)\s*│", output)
    assert found is not None, f"no {label!r} row in:\n{output}"
    return found.group(1)


def folder_state(folder: Path) -> dict[str, str]:
    """Every file of ``folder`` (hidden ones too) with a hash of its bytes."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.iterdir())
        if path.is_file()
    }


def test_max_images_sends_that_many_exits_3_and_a_rerun_continues(sim: Sim, tmp_path: Path) -> None:
    prompts, out = prompt_file(tmp_path), tmp_path / "out"
    first = nanobanana(sim, "run", str(prompts), "--out", str(out), "--max-images", "3")
    assert first.returncode == 3, first.stderr
    assert sim.settled_counters()["creates"] == 3
    assert figure(first.stdout, "not attempted (--max-images 3)") == "7"
    assert "run the same command again to continue" in first.stdout
    assert sorted(statuses(out)) == ["not_attempted"] * 7 + ["saved"] * 3
    assert len(list(out.glob("*.png"))) == 3

    second = nanobanana(sim, "run", str(prompts), "--out", str(out), "--max-images", "4")
    assert second.returncode == 3, second.stderr
    assert sim.settled_counters()["creates"] == 7
    assert figure(second.stdout, "new tasks (billed)") == "4"

    last = nanobanana(sim, "run", str(prompts), "--out", str(out), "--max-images", "50")
    assert last.returncode == 0, last.stderr
    assert sim.settled_counters()["creates"] == 10
    assert statuses(out) == ["saved"] * 10


def test_dry_run_sends_nothing_writes_nothing_and_needs_no_key(sim: Sim, tmp_path: Path) -> None:
    prompts, out = prompt_file(tmp_path), tmp_path / "out"
    keyless = {key: value for key, value in sim.env().items() if key != "NANOBANANA_API_KEY"}
    result = nanobanana(
        sim, "run", str(prompts), "--out", str(out), "--dry-run", "--max-images", "4", env=keyless
    )
    assert result.returncode == 0, result.stderr
    assert figure(result.stdout, "creates a run would send") == "4"
    assert figure(result.stdout, "  new") == "10"
    assert "6 left for a rerun" in result.stdout
    assert "nothing was sent and nothing was written" in result.stdout
    assert not out.exists()
    counters = sim.settled_counters()
    assert counters["create_requests"] == counters["polls"] == counters["downloads"] == 0


def test_dry_run_after_a_capped_run_says_exactly_what_the_rerun_then_sends(
    sim: Sim, tmp_path: Path
) -> None:
    prompts, out = prompt_file(tmp_path), tmp_path / "out"
    assert nanobanana(sim, "run", str(prompts), "--out", str(out), "--max-images", "3").returncode
    before = folder_state(out)
    counters = sim.settled_counters()

    dry = nanobanana(
        sim, "run", str(prompts), "--out", str(out), "--dry-run", "--price", "nano-banana-2=0.1"
    )
    assert dry.returncode == 0, dry.stderr
    assert figure(dry.stdout, "already saved") == "3"
    assert figure(dry.stdout, "creates a run would send") == "7"
    assert figure(dry.stdout, "spend estimate") == "0.70"
    assert folder_state(out) == before, "a dry run changed the output folder"
    assert sim.settled_counters() == counters

    real = nanobanana(sim, "run", str(prompts), "--out", str(out), "--price", "nano-banana-2=0.1")
    assert real.returncode == 0, real.stderr
    assert sim.settled_counters()["creates"] - counters["creates"] == 7
    assert figure(real.stdout, "spend estimate (--price)") == "0.70"


def test_dry_run_lists_invalid_lines_and_warnings_and_exits_1(sim: Sim, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    rows = [
        {"prompt": "an old television", "model": "nano-banana", "resolution": "4k"},
        {"prompt": "a comet", "model": "nano-banana-pro", "resolution": "4k"},
        {"prompt": "", "model": "nano-banana"},
    ]
    prompts.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    result = nanobanana(
        sim,
        "run",
        str(prompts),
        "--out",
        str(tmp_path / "out"),
        "--dry-run",
        "--price",
        "nano-banana-pro=0.12,nano-banana-pro:4k=0.24",
    )
    assert result.returncode == 1, result.stderr
    assert "line 3 invalid" in result.stdout
    assert "resolution 4k is ignored by model nano-banana" in result.stdout
    assert figure(result.stdout, "  nano-banana-pro 4k") == "1"
    assert figure(result.stdout, "spend estimate") == "0.24"
    assert figure(result.stdout, "  creates not priced") == "1"
    assert re.search(r"creates not priced.*nano-banana 4k", result.stdout)
    assert "Traceback" not in result.stdout + result.stderr
    assert sim.settled_counters()["create_requests"] == 0


def test_a_run_warns_once_about_a_resolution_the_model_ignores_and_still_sends_it(
    sim: Sim, tmp_path: Path
) -> None:
    prompts, out = prompt_file(tmp_path, PROMPTS[:4]), tmp_path / "out"
    result = nanobanana(
        sim, "run", str(prompts), "--out", str(out), "--model", "nano-banana", "--resolution", "2k"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("resolution 2k is ignored by model nano-banana") == 1
    assert sim.settled_counters()["creates"] == 4


@pytest.mark.parametrize(
    ("price", "says"),
    [
        ("nano-banana-3=0.1", "unknown model 'nano-banana-3'"),
        ("nano-banana-pro=cheap", "must be a number, 0 or more"),
        ("nano-banana-pro:8k=0.1", "unknown resolution '8k'"),
        ("prices.toml", "price file prices.toml cannot be read"),
    ],
)
def test_a_bad_price_is_a_usage_error_that_says_what_is_allowed(
    sim: Sim, tmp_path: Path, price: str, says: str
) -> None:
    prompts, out = prompt_file(tmp_path), tmp_path / "out"
    result = nanobanana(sim, "run", str(prompts), "--out", str(out), "--price", price)
    assert result.returncode == 2
    assert says in result.stderr
    assert result.stderr.count("\n") == 1, "a mistake is one line, not the usage of every option"
    assert "(see 'nanobanana run --help')" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert sim.settled_counters()["create_requests"] == 0


def test_prices_from_a_toml_file_feed_the_summary(sim: Sim, tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text('nano-banana-2 = 0.05\n"nano-banana-2:4k" = 0.5\n', encoding="utf-8")
    prompts, out = prompt_file(tmp_path, PROMPTS[:3]), tmp_path / "out"
    result = nanobanana(
        sim, "run", str(prompts), "--out", str(out), "--resolution", "4k", "--price", str(prices)
    )
    assert result.returncode == 0, result.stderr
    assert figure(result.stdout, "new tasks (billed)") == "3"
    assert figure(result.stdout, "spend estimate (--price)") == "1.50"


def test_max_requests_per_second_holds_the_run_to_that_rate(sim: Sim, tmp_path: Path) -> None:
    prompts, out = prompt_file(tmp_path), tmp_path / "out"
    rate = 6
    started = time.monotonic()
    run = nanobanana(
        sim, "run", str(prompts), "--out", str(out), "--max-requests-per-second", str(rate)
    )
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stdout + run.stderr
    counters = sim.settled_counters()
    calls = counters["create_requests"] + counters["polls"]
    assert counters["creates"] == len(PROMPTS)
    # Evenly spaced from the first call: the last can go no sooner than this.
    assert elapsed >= (calls - 1) / rate, (calls, elapsed)
