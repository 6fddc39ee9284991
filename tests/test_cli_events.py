"""``nanobanana run --log-json``, and the summary built on the client's events and stats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .test_cli import flat, output_of, run_cli


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_log_json_appends_every_event_of_each_run_and_a_rerun_marks_the_journal_answers(
    tmp_path: Path,
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a calm lake\na red fox [fail]\na blue whale\n", encoding="utf-8")
    out, log = tmp_path / "out", tmp_path / "events.jsonl"
    first = run_cli("run", str(prompts), "--simulate", "--out", str(out), "--log-json", str(log))
    text = flat(output_of(first))
    assert first.returncode == 1, text
    assert "Traceback" not in text
    # Every failure reason on screen, with its count and message.
    assert "failed: 1 x TaskFailedError:" in text
    assert "content policy" in text.lower()
    assert "images/s (this run)" in text

    events = _events(log)
    kinds = [event["event"] for event in events]
    assert kinds[0] == "BatchStarted"
    assert kinds[-1] == "BatchFinished"
    assert kinds.count("Submitted") == 3
    assert kinds.count("Saved") == 2
    failed = [event for event in events if event["event"] == "Failed"]
    assert len(failed) == 1
    assert failed[0]["error"]["type"] == "TaskFailedError"
    assert failed[0]["index"] == 1
    assert failed[0]["task_id"]
    saved = [event for event in events if event["event"] == "Saved"]
    assert {Path(event["path"]).parent for event in saved} == {out}
    assert not any(event["resumed"] for event in saved)
    assert events[-1]["outcomes"] == 3
    assert events[-1]["succeeded"] == 2

    second = run_cli("run", str(prompts), "--simulate", "--out", str(out), "--log-json", str(log))
    assert second.returncode == 1, output_of(second)
    rerun = _events(log)[len(events) :]
    rerun_kinds = [event["event"] for event in rerun]
    assert rerun_kinds.count("Submitted") == 0  # nothing sent again
    assert [event["resumed"] for event in rerun if event["event"] in ("Saved", "Failed")] == [
        True,
        True,
        True,
    ]
    # The rate counts only this run's work: the journal answered every input.
    assert "images/s (this run) │ 0.00" in flat(output_of(second))


def test_a_log_json_path_in_a_missing_folder_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a calm lake\n", encoding="utf-8")
    out = tmp_path / "out"
    result = run_cli(
        "run",
        str(prompts),
        "--simulate",
        "--out",
        str(out),
        "--log-json",
        str(tmp_path / "missing" / "events.jsonl"),
    )
    text = output_of(result)
    assert result.returncode == 2, text
    assert "Traceback" not in text
    assert "--log-json" in text
    assert "does not exist" in text
    assert not out.exists()


def test_the_manifest_records_each_inputs_request_state_reason_and_path(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    lines = [
        {"prompt": "a red fox", "model": "nano-banana-pro", "resolution": "2k", "size": "16:9"},
        {"prompt": "a cat", "size": "7:3"},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\nnot json at all\n"
    prompts.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    result = run_cli("run", str(prompts), "--simulate", "--out", str(out))
    assert result.returncode == 1, output_of(result)
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    fox, cat, junk = rows
    assert (fox["prompt"], fox["model"], fox["resolution"], fox["size"]) == (
        "a red fox",
        "nano-banana-pro",
        "2k",
        "16:9",
    )
    assert fox["status"] == "saved"
    assert fox["path"] is not None
    assert (out / Path(fox["path"]).name).exists()
    assert (cat["prompt"], cat["size"], cat["status"], cat["line"]) == (
        "a cat",
        "7:3",
        "invalid",
        2,
    )
    assert "size" in cat["error"]
    assert (junk["prompt"], junk["status"], junk["line"]) == ("not json at all", "invalid", 3)
