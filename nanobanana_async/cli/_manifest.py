"""``DIR/manifest.jsonl``: one line per input, rebuilt whole from the journal after each run.

The journal is the record of truth, so the manifest is derived from it
(paged, never all in memory) alongside a second read of the prompt file,
which supplies line numbers, skipped lines and inputs edited since the
journal recorded them. Status names are the journal's states.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._journal import JournalEntry, JournalState, read_entries, request_fingerprint
from ._inputs import BadLine, PromptSource, read_prompts

__all__ = ["write_manifest"]


def _row(line: int | None, index: int | None, prompt: str | None) -> dict[str, Any]:
    return {
        "index": index,
        "line": line,
        "prompt": prompt,
        "task_id": None,
        "status": "pending",
        "path": None,
        "error": None,
        "error_type": None,
    }


def _from_entry(row: dict[str, Any], entry: JournalEntry) -> dict[str, Any]:
    # A create cut off mid-flight is, for a person, simply in doubt: "uncertain".
    state = JournalState.UNCERTAIN if entry.state is JournalState.SUBMITTING else entry.state
    row.update(
        task_id=entry.task_id,
        status=state.value,
        path=entry.path,
        error=entry.error,
        error_type=entry.error_type,
    )
    return row


def manifest_rows(source: PromptSource, journal: Path) -> Iterator[dict[str, Any]]:
    """The manifest's rows, in input order."""
    entries = read_entries(journal)
    pending = next(entries, None)
    if source.path == "-":  # standard input cannot be read twice: the journal alone speaks
        while pending is not None:
            yield _from_entry(_row(None, pending.index, pending.request.get("prompt")), pending)
            pending = next(entries, None)
        return
    index = 0
    for line, item in read_prompts(source):
        if isinstance(item, BadLine):
            row = _row(line, None, None)
            row.update(status="invalid", error=item.reason, error_type="InvalidRequestError")
            yield row
            continue
        while pending is not None and pending.index < index:
            pending = next(entries, None)
        row = _row(line, index, item.prompt)
        if pending is not None and pending.index == index:
            if pending.request_hash == request_fingerprint(item):
                row = _from_entry(row, pending)
            else:
                row.update(status="conflict", error="the journal holds another request here")
        index += 1
        yield row


def write_manifest(out_dir: Path, source: PromptSource, journal: Path) -> Path:
    """Rewrite ``out_dir/manifest.jsonl`` atomically; return its path."""
    path = out_dir / "manifest.jsonl"
    temp = path.with_name(path.name + ".part")
    with temp.open("w", encoding="utf-8") as handle:
        for row in manifest_rows(source, journal):
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    temp.replace(path)
    return path
