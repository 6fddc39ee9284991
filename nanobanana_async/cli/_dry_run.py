"""``nanobanana run --dry-run``: what a run would send, with nothing sent and nothing written.

The whole input is read and validated, and each input is looked up in the
journal (read-only, as the run would look it up: by fingerprint and
occurrence), so the counts are the run's own decisions: saved inputs are
answered from the journal, submitted ones are polled again, failed and
uncertain ones are not sent again (uncertain ones are with
``--resubmit-uncertain``), and everything else is a new create, up to
``--max-images``. No client starts, no key is needed, and the output
folder is neither created nor touched.
"""

from __future__ import annotations

import argparse
import functools
import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
from rich.console import Console
from rich.table import Table

from nanobanana_async import (
    JournalEntry,
    JournalReader,
    JournalState,
    PostgresJournal,
    read_postgres_journal,
)

from ._cost import Kind, PriceTable, kind_label, money
from ._inputs import BadLine, PromptSource, identified, read_prompts
from ._run import EXIT_FAILURES, EXIT_OK, JOURNAL_NAME, default_batch_name

__all__ = ["dry_run_command"]

#: Invalid lines listed one by one before the rest are only counted.
_LISTED_BAD_LINES = 20

_ANSWERED = "already saved"
_FETCH_AGAIN = "saved, file gone (downloaded again)"
_POLL_AGAIN = "submitted earlier (polled again)"
_FAILED = "failed earlier (not sent again)"
_UNCERTAIN = "uncertain (not sent again)"
_RESUBMIT = "uncertain (sent again: --resubmit-uncertain)"
_NEW = "new"


def _state(entry: JournalEntry | None, *, resubmit_uncertain: bool) -> str:
    """What the run would do with an input the journal holds as ``entry``."""
    if entry is None:
        return _NEW
    state = entry.settled_state
    if state is JournalState.PENDING:
        return _NEW
    if state is JournalState.SAVED:
        return _ANSWERED if entry.path and os.path.isfile(entry.path) else _FETCH_AGAIN
    if state in (JournalState.SUBMITTED, JournalState.COMPLETED):
        return _POLL_AGAIN
    if state is JournalState.FAILED:
        return _FAILED
    return _RESUBMIT if resubmit_uncertain else _UNCERTAIN


Lookup = Callable[[str, int], JournalEntry | None]


@contextmanager
def _lookup(args: argparse.Namespace) -> Iterator[Lookup | None]:
    """The journal's look-up by (fingerprint, occurrence), or None when there is no journal yet."""
    if args.journal and PostgresJournal.is_url(args.journal):
        batch = args.batch or default_batch_name(args.prompts)
        read = functools.partial(read_postgres_journal, args.journal, batch, missing_ok=True)
        by_key = {entry.key: entry for entry in anyio.run(read).entries}
        yield (lambda request_hash, occurrence: by_key.get((request_hash, occurrence)))
        return
    journal = Path(args.journal) if args.journal else Path(args.out) / JOURNAL_NAME
    if not journal.is_file():
        yield None
        return
    with JournalReader(journal) as reader:
        yield reader.get


class _Plan:
    """The counts a dry run reports."""

    def __init__(self, max_images: int | None) -> None:
        self.max_images = max_images
        self.states: Counter[str] = Counter()
        self.creates: Counter[Kind] = Counter()
        self.left_by_cap = 0
        self.bad_lines: list[BadLine] = []
        self.warnings: dict[str, None] = {}  # in the order first seen

    @property
    def sent(self) -> int:
        return sum(self.creates.values())

    def create(self, kind: Kind) -> None:
        if self.max_images is not None and self.sent >= self.max_images:
            self.left_by_cap += 1
        else:
            self.creates[kind] += 1


def dry_run_command(args: argparse.Namespace, console: Console) -> int:
    """Print what ``nanobanana run`` would do with these arguments; return the exit code."""
    source = PromptSource(
        args.prompts, model=args.model, resolution=args.resolution, size=args.size
    )
    plan = _Plan(args.max_images)
    with _lookup(args) as get:
        for _line, item, fingerprint, occurrence in identified(read_prompts(source)):
            if isinstance(item, BadLine):
                plan.bad_lines.append(item)
                continue
            plan.warnings.update(dict.fromkeys(item.ignored_settings()))
            entry = None if get is None else get(fingerprint, occurrence)
            state = _state(entry, resubmit_uncertain=args.resubmit_uncertain)
            plan.states[state] += 1
            if state in (_NEW, _RESUBMIT):
                plan.create((item.model, item.resolution))
    prices = PriceTable()
    for table in args.price:
        prices = prices.merged(table)
    console.print(_table(plan, prices, _journal_named(args) if get is not None else None))
    for warning in plan.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    for bad in plan.bad_lines[:_LISTED_BAD_LINES]:
        console.print(f"[yellow]line {bad.line} invalid:[/] {bad.reason}", highlight=False)
    if len(plan.bad_lines) > _LISTED_BAD_LINES:
        console.print(
            f"... and {len(plan.bad_lines) - _LISTED_BAD_LINES} more invalid lines", highlight=False
        )
    console.print("dry run: nothing was sent and nothing was written", highlight=False)
    return EXIT_FAILURES if plan.bad_lines else EXIT_OK


def _journal_named(args: argparse.Namespace) -> str:
    if args.journal and PostgresJournal.is_url(args.journal):
        batch = args.batch or default_batch_name(args.prompts)
        return f"{PostgresJournal.redact(args.journal)} batch {batch}"
    return str(Path(args.journal) if args.journal else Path(args.out) / JOURNAL_NAME)


def _table(plan: _Plan, prices: PriceTable, journal: str | None) -> Table:
    table = Table(title="nanobanana run --dry-run", show_header=False, title_justify="left")
    table.add_column("what", no_wrap=True)
    table.add_column("count", justify="right", no_wrap=True)
    table.add_column("note")
    inputs = sum(plan.states.values()) + len(plan.bad_lines)
    where = f"journal {journal}" if journal is not None else "no journal yet: every input is new"
    table.add_row("inputs", str(inputs), where)
    order = (_ANSWERED, _FETCH_AGAIN, _POLL_AGAIN, _FAILED, _UNCERTAIN, _RESUBMIT, _NEW)
    for state in order:
        if plan.states[state]:
            table.add_row(f"  {state}", str(plan.states[state]), "")
    if plan.bad_lines:
        table.add_row("  invalid lines (skipped)", str(len(plan.bad_lines)), "")
    note = ""
    if plan.max_images is not None:
        note = f"--max-images {plan.max_images}"
        if plan.left_by_cap:
            note += f"; {plan.left_by_cap} left for a rerun"
    table.add_row("creates a run would send", str(plan.sent), note)
    for kind, count in sorted(
        plan.creates.items(), key=lambda item: (item[0][0], item[0][1] or "")
    ):
        price = prices.price(kind)
        cost = "" if price is None else f"{money(price * count)} at {money(price)} each"
        table.add_row(f"  {kind_label(kind)}", str(count), cost)
    if prices:
        spend = prices.spend(plan.creates)
        table.add_row("spend estimate", money(spend.total), "from --price")
        if spend.unpriced:
            unpriced = sum(spend.unpriced.values())
            table.add_row("  creates not priced", str(unpriced), spend.unpriced_kinds())
    return table
