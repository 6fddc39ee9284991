"""``DIR/manifest.jsonl``: one line per input, rebuilt whole from the journal.

The journal is the record of truth, so the manifest is derived from it
alongside a second read of the prompt file, which supplies line numbers and
skipped lines: each line's input is looked up in the journal by what it asks
for (its request's fingerprint and occurrence), as the run itself does.
Status names are the journal's states, plus ``not_attempted`` for an input
the run stopped before sending (Ctrl-C, ``--max-images``): a rerun sends it.
``nanobanana run`` writes it when it starts, every few seconds while it runs
and when it stops, however it stops; ``DIR/index.html``, the contact sheet
(see ``_contact_sheet``), is written from the same rows each time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from nanobanana_async import JournalEntry, JournalReader, JournalState

from ._contact_sheet import ContactSheet
from ._inputs import BadLine, PromptSource, identified, read_prompts

__all__ = ["NOT_ATTEMPTED", "manifest_rows", "write_manifest"]


#: The status of an input nothing was sent for, once the run has stopped.
NOT_ATTEMPTED = "not_attempted"
#: Longest invalid line kept in the manifest (its prompt, or the line itself).
_LINE_EXCERPT = 500


def _row(line: int | None, index: int | None, request: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "index": index,
        "line": line,
        "prompt": request.get("prompt"),
        "model": request.get("model"),
        "resolution": request.get("resolution"),
        "size": request.get("size"),
        "task_id": None,
        "status": "pending",
        "path": None,
        "error": None,
        "error_type": None,
    }


def _from_entry(row: dict[str, Any], entry: JournalEntry, *, live: bool) -> dict[str, Any]:
    # While the run goes on, "submitting" is a create on the wire; once it has stopped,
    # the row's settled state says what a person should read.
    state = entry.state if live else entry.settled_state
    status = state.value
    if not live and state is JournalState.PENDING and entry.error is None:
        status = NOT_ATTEMPTED
    row.update(
        task_id=entry.task_id,
        status=status,
        path=entry.path,
        error=entry.error,
        error_type=entry.error_type,
    )
    return row


class _ReadEntries:
    """Rows already read (a PostgreSQL batch), looked up as a ``JournalReader`` looks them up."""

    def __init__(self, entries: Sequence[JournalEntry]) -> None:
        self._entries = entries
        self._by_key = {entry.key: entry for entry in entries}

    def __enter__(self) -> _ReadEntries:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __iter__(self) -> Iterator[JournalEntry]:
        return iter(self._entries)

    def get(self, request_hash: str, occurrence: int) -> JournalEntry | None:
        return self._by_key.get((request_hash, occurrence))


def manifest_rows(
    source: PromptSource, journal: Path | Sequence[JournalEntry], *, live: bool = False
) -> Iterator[dict[str, Any]]:
    """The manifest's rows, in input order (``live``: written while the run goes on).

    ``journal`` is a SQLite journal's path, or the rows of a PostgreSQL batch.
    """
    opened = JournalReader(journal) if isinstance(journal, Path) else _ReadEntries(journal)
    with opened as reader:
        if source.path == "-":  # standard input cannot be read twice: the journal alone speaks
            for entry in reader:
                row = _row(None, entry.index, entry.request)
                yield _from_entry(row, entry, live=live)
            return
        index = 0
        for line, item, fingerprint, occurrence in identified(read_prompts(source)):
            if isinstance(item, BadLine):
                row = _row(line, None, _what_it_asked(item.text))
                row.update(status="invalid", error=item.reason, error_type="InvalidRequestError")
                yield row
                continue
            row = _row(line, index, item.to_payload())
            found = reader.get(fingerprint, occurrence)
            if found is not None:
                _from_entry(row, found, live=live)
            elif not live:
                row["status"] = NOT_ATTEMPTED
            yield row
            index += 1


def _what_it_asked(text: str) -> dict[str, Any]:
    """The fields an invalid line named, as far as they can be read (else its text as prompt)."""
    try:
        fields = json.loads(text)
    except ValueError:
        fields = None
    if isinstance(fields, dict):
        return {
            key: value[:_LINE_EXCERPT] if isinstance(value, str) else value
            for key, value in fields.items()
            if key in ("prompt", "model", "resolution", "size")
        }
    return {"prompt": text[:_LINE_EXCERPT]}


def write_manifest(
    out_dir: Path,
    source: PromptSource,
    journal: Path | Sequence[JournalEntry],
    *,
    live: bool = False,
) -> Path:
    """Rewrite ``out_dir/manifest.jsonl`` and ``out_dir/index.html`` atomically.

    Both come from one pass over the rows, which are streamed, not held.
    Returns the manifest's path.
    """
    path = out_dir / "manifest.jsonl"
    temp = path.with_name(f"{path.name}.{os.getpid()}.part")  # per process: see ContactSheet
    with temp.open("w", encoding="utf-8") as handle, ContactSheet(out_dir) as sheet:
        for row in manifest_rows(source, journal, live=live):
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            sheet.add(row)
        sheet.write()
    temp.replace(path)
    return path
