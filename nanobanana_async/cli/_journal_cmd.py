"""``nanobanana journal``: what a batch's journal says, for people (a table) or scripts (JSON)."""

from __future__ import annotations

import argparse
import functools
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import anyio
import attrs
from rich.console import Console
from rich.table import Table

from nanobanana_async import (
    BatchWorker,
    JournalEntry,
    JournalError,
    JournalState,
    PostgresBatch,
    PostgresJournal,
    read_journal,
    read_postgres_journal,
)

__all__ = ["journal_command", "resolve_journal"]

_ATTENTION = (JournalState.FAILED, JournalState.UNCERTAIN, JournalState.SUBMITTING)
#: States a rerun continues from; a row in one of them with an error stopped there last run.
_RESUMABLE = (JournalState.PENDING, JournalState.SUBMITTED, JournalState.COMPLETED)
_FINAL_NAMES = frozenset({JournalState.FAILED.value, JournalState.UNCERTAIN.value})


def resolve_journal(target: str) -> Path:
    """A journal file, given the file itself or the output folder it sits in."""
    from ._run import JOURNAL_NAME

    path = Path(target)
    return path / JOURNAL_NAME if path.is_dir() else path


def _brief(entry: JournalEntry) -> dict[str, Any]:
    state = entry.settled_state
    return {
        "index": entry.index,
        "prompt": entry.request.get("prompt"),
        "state": state.value,
        "task_id": entry.task_id,
        "client_key": entry.client_key,
        "error": entry.error,
    }


def _read(args: argparse.Namespace) -> tuple[str, Iterable[JournalEntry], PostgresBatch | None]:
    """Where the journal is (as shown), its rows, and for PostgreSQL the whole batch."""
    if not PostgresJournal.is_url(args.target):
        if args.batch:
            raise JournalError(
                "--batch names a batch in a PostgreSQL journal (postgresql://...); "
                "a SQLite journal holds one batch"
            )
        path = resolve_journal(args.target)
        return str(path), read_journal(path), None
    if not args.batch:
        raise JournalError("with a PostgreSQL journal, --batch NAME says which batch to show")
    batch = anyio.run(functools.partial(read_postgres_journal, args.target, args.batch))
    return f"{PostgresJournal.redact(args.target)} batch {args.batch}", batch.entries, batch


def journal_command(args: argparse.Namespace, console: Console) -> int:
    """Print state counts, then failed, uncertain and unfinished inputs; exit 0 (2: unreadable).

    For a PostgreSQL batch, also each worker and how many inputs it holds under a live lease.
    """
    where, entries, batch = _read(args)
    counts: Counter[str] = Counter()
    attention: list[dict[str, Any]] = []
    in_flight = batch.in_flight if batch is not None else frozenset()
    for entry in entries:
        counts[entry.state.value] += 1
        if in_flight and entry.key in in_flight:
            continue  # a live worker is on it: nothing needs anyone's attention yet
        if entry.state in _ATTENTION or (entry.state in _RESUMABLE and entry.error):
            attention.append(_brief(entry))
    if args.json:
        report = {
            "journal": where,
            "total": sum(counts.values()),
            "counts": dict(sorted(counts.items())),
            "failed": [row for row in attention if row["state"] == "failed"],
            "uncertain": [row for row in attention if row["state"] == "uncertain"],
            "unfinished": [row for row in attention if row["state"] not in _FINAL_NAMES],
        }
        if batch is not None:
            report["workers"] = [attrs.asdict(worker) for worker in batch.workers]
            report["max_requests_per_second"] = batch.max_requests_per_second
            report["creates_paused_for"] = round(batch.creates_paused_for, 3)
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    console.print(f"journal {where}", highlight=False)
    table = Table(title_justify="left")
    table.add_column("state")
    table.add_column("inputs", justify="right")
    for state in JournalState:
        if counts[state.value]:
            table.add_row(state.value, str(counts[state.value]))
    table.add_row("total", str(sum(counts.values())))
    console.print(table)
    if batch is not None:
        _print_batch(batch, console)
    for row in attention:
        console.print(
            f"{row['state']}: input {row['index']} {row['prompt']!r} "
            f"task={row['task_id'] or '-'}: {row['error'] or 'no answer seen'}",
            highlight=False,
            markup=False,
        )
    if any(row["state"] not in _FINAL_NAMES for row in attention):
        console.print(
            "unfinished inputs stopped on an error last run; a rerun continues them at no "
            "extra cost",
            highlight=False,
        )
    if any(row["state"] == "uncertain" for row in attention):
        console.print(
            "uncertain inputs may have been billed; rerun with --resubmit-uncertain to send "
            "them again anyway",
            highlight=False,
        )
    return 0


def _print_batch(batch: PostgresBatch, console: Console) -> None:
    """A PostgreSQL batch's workers and its shared pace."""
    if batch.workers:
        console.print(_workers_table(batch.workers))
    rate = batch.max_requests_per_second
    if rate is not None:
        alive = batch.live_workers
        share = f", {rate / alive:g} for each of its {alive} live workers" if alive else ""
        console.print(f"request rate: {rate:g} API calls a second for the batch{share}")
    if batch.creates_paused_for > 0:
        console.print(
            f"creates paused for {batch.creates_paused_for:.1f} s more (a 429 seen by a worker)"
        )


def _workers_table(workers: list[BatchWorker]) -> Table:
    table = Table(title="workers", title_justify="left")
    for column in ("worker", "host", "pid"):
        table.add_column(column)
    table.add_column("last seen", justify="right")
    table.add_column("inputs held", justify="right")
    for worker in workers:
        table.add_row(
            worker.worker,
            worker.host,
            str(worker.pid),
            f"{worker.seen_ago:.0f} s ago",
            str(worker.holding),
        )
    return table
