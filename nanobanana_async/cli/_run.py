"""``nanobanana run`` and ``nanobanana generate``: prompts in, a folder of images out."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
from rich.console import Console

from nanobanana_async import (
    FATAL_ERRORS,
    DestinationExistsError,
    Event,
    ImageRequest,
    Journal,
    JournalEntry,
    JournalError,
    NanoBanana,
    NanoBananaError,
    PostgresJournal,
    SQLiteJournal,
    read_postgres_journal,
)

from . import report_error
from ._contact_sheet import CONTACT_SHEET
from ._cost import PriceTable
from ._inputs import BadLine, PromptSource, read_in_thread, read_prompts
from ._manifest import write_manifest
from ._report import RunReport

__all__ = [
    "EXIT_CAPPED",
    "EXIT_FAILURES",
    "EXIT_OK",
    "EXIT_USAGE",
    "JOURNAL_NAME",
    "generate_command",
    "run_command",
]

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2
#: Nothing failed, but --max-images left inputs unsent: a rerun goes on with them.
EXIT_CAPPED = 3
MANIFEST = "manifest.jsonl"
#: Seconds between manifest refreshes while a run goes on (more for a huge input).
MANIFEST_EVERY = 5.0
JOURNAL_NAME = ".nanobanana-journal.sqlite"
T = TypeVar("T")
#: Where ``--simulate`` keeps its simulated tasks, so a rerun finds them.
SIMULATOR_STATE = ".nanobanana-simulator.jsonl"


@asynccontextmanager
async def open_client(args: argparse.Namespace, console: Console) -> AsyncIterator[NanoBanana]:
    """A client on the real service, or on an in-process simulator with ``--simulate``."""
    if args.simulate:
        from nanobanana_async.testing import LatencyProfile, Simulator

        async with Simulator(
            latency=LatencyProfile.named(args.simulate_latency),
            image_long_side=512,
            # A run resumes against the same simulated tasks; one image needs no state.
            state_path=Path(args.out) / SIMULATOR_STATE if args.command == "run" else None,
            # Fresh task ids on every start, as the service gives (a fixed seed repeats them).
            seed=None,
        ) as simulator:
            if args.simulate_faults:
                simulator.faults.set_rates(seed=0, **args.simulate_faults)
            console.print(f"simulator serving on {simulator.base_url}", highlight=False)
            async with NanoBanana(
                api_key=simulator.api_key,
                base_url=simulator.base_url,
                max_concurrency=_concurrency(args),
                max_requests_per_second=_own_rate(args),
            ) as client:
                yield client
        return
    async with NanoBanana(
        base_url=args.base_url,
        max_concurrency=_concurrency(args),
        max_requests_per_second=_own_rate(args),
    ) as client:
        yield client


def _concurrency(args: argparse.Namespace) -> int:
    """``--concurrency`` for a run; one job for ``generate``, which has no such option."""
    return int(getattr(args, "concurrency", 1))


def _own_rate(args: argparse.Namespace) -> float | None:
    """The client's ``max_requests_per_second``: none when a PostgreSQL batch keeps it."""
    rate = getattr(args, "max_requests_per_second", None)
    journal = getattr(args, "journal", None)
    if not rate or (journal is not None and PostgresJournal.is_url(journal)):
        return None
    return float(rate)


async def run_command(args: argparse.Namespace, console: Console) -> int:
    """Generate every prompt of a file into ``--out``; return the exit code.

    The journal (and with it the output folder) is locked before anything is
    written, so a second run on the same folder or journal is refused at once.
    The manifest is written as the run starts, refreshed while it runs, and
    written again however it stops (Ctrl-C included).
    """
    source = PromptSource(
        args.prompts, model=args.model, resolution=args.resolution, size=args.size
    )
    out = Path(args.out)
    where = _JournalChoice(args)
    prices = PriceTable()
    for table in args.price:
        prices = prices.merged(table)
    report = RunReport(
        console,
        total=args.prompt_count,
        concurrency=args.concurrency,
        max_images=args.max_images,
        prices=prices,
    )

    async def requests() -> AsyncIterator[ImageRequest]:
        lines = read_prompts(source)
        # Standard input may be a pipe that goes quiet: it is read in a thread of its own.
        numbered = read_in_thread(lines) if source.path == "-" else _as_async(lines)
        async for _line, item in numbered:
            if isinstance(item, BadLine):
                report.bad_line(item.line, item.reason)
                continue
            yield item

    manifest = _Manifest(out, source, where)
    not_requested: int | None = None
    asyncio.get_running_loop().set_exception_handler(_quiet_about_lost_connections)
    async with (
        where.open(out) as journal,
        _event_log(args) as log,
        _warnings_shown(console),
    ):
        await manifest.write()
        try:
            async with open_client(args, console) as client:
                client.subscribe(report.watch(client.stats))
                if log is not None:
                    client.subscribe(log)
                with report:
                    batch = client.generate_many(
                        requests(),
                        save_to=out,
                        ordered=args.ordered,
                        journal=journal,
                        resubmit_uncertain=args.resubmit_uncertain,
                        max_jobs=args.max_images,
                    )
                    async with batch:
                        async for outcome in batch:
                            report.record(outcome)
                            await manifest.refresh_if_due()
                    not_requested = batch.not_requested
        except anyio.get_cancelled_exc_class():
            print(report.interrupted(), file=sys.stderr)
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await manifest.write()
    console.print(report.summary(out))
    for line in report.reasons_text():
        console.print(f"[red]failed:[/] {line}", highlight=False)
    if not_requested:
        entries = (
            "1 journal entry is" if not_requested == 1 else f"{not_requested} journal entries are"
        )
        console.print(
            f"{entries} not asked for by this input (lines edited or removed since); "
            f"their images stay in {out}",
            highlight=False,
        )
    if report.uncertain:
        console.print(
            f"{report.uncertain} inputs may have been billed without an answer; "
            f"'{where.show_command(out)}' lists them. They are not sent again unless you rerun "
            "with --resubmit-uncertain (which may pay for them twice)",
            highlight=False,
        )
    if report.not_attempted:
        console.print(
            f"{report.not_attempted} inputs not attempted: --max-images {args.max_images} "
            "creates were sent; run the same command again to continue",
            highlight=False,
        )
    console.print(
        f"contact sheet: {out / CONTACT_SHEET}  manifest: {out / MANIFEST}  journal: {where}",
        highlight=False,
    )
    return _exit_code(report, console)


def _quiet_about_lost_connections(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A connection lost with nobody waiting on it (a database restarting) is not news.

    asyncpg leaves such a future behind when the server closes an idle
    connection; asyncio would print it as an error with a traceback. Anything
    else goes to asyncio's own handler.
    """
    error = context.get("exception")
    if isinstance(error, ConnectionError) and "never retrieved" in context.get("message", ""):
        logging.getLogger("nanobanana_async").debug("a lost connection, unclaimed: %s", error)
        return
    loop.default_exception_handler(context)


@asynccontextmanager
async def _warnings_shown(console: Console) -> AsyncIterator[None]:
    """The SDK's warnings (settings the service ignores) on the console while a run goes on."""
    handler = _ConsoleWarnings(console)
    logger = logging.getLogger("nanobanana_async")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


class _ConsoleWarnings(logging.Handler):
    """Prints WARNING records and worse as one yellow line each."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.WARNING)
        self._console = console

    def emit(self, record: logging.LogRecord) -> None:
        self._console.print(f"[yellow]warning:[/] {record.getMessage()}", highlight=False)


@asynccontextmanager
async def _event_log(args: argparse.Namespace) -> AsyncIterator[Callable[[Event], None] | None]:
    """With ``--log-json FILE``: a subscriber appending each event to FILE as one JSON line."""
    if not args.log_json:
        yield None
        return
    opening = functools.partial(open, args.log_json, "a", encoding="utf-8")
    sink = await anyio.to_thread.run_sync(opening)

    def write(event: Event) -> None:
        sink.write(json.dumps(event.as_json(), ensure_ascii=False) + "\n")

    try:
        yield write
    finally:
        sink.close()


async def _as_async(items: Iterator[T]) -> AsyncIterator[T]:
    for item in items:
        yield item


class _JournalChoice:
    """Which journal a run keeps: a SQLite file (DIR/.nanobanana-journal.sqlite by default),
    or a batch in PostgreSQL (``--journal postgresql://... --batch NAME``, shared by workers).
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.dsn: str | None = None
        self.path: Path | None = None
        self.rate: float | None = getattr(args, "max_requests_per_second", None)
        if args.journal is not None and PostgresJournal.is_url(args.journal):
            self.dsn = args.journal
            self.batch = args.batch or default_batch_name(args.prompts)
            self.lease_seconds: float = args.lease_seconds
        else:
            self.path = Path(args.journal) if args.journal else Path(args.out) / JOURNAL_NAME

    def __str__(self) -> str:
        if self.dsn is not None:
            return f"{PostgresJournal.redact(self.dsn)} (batch {self.batch})"
        return str(self.path)

    def show_command(self, out: Path) -> str:
        """The command that lists what the journal holds (the password left out)."""
        if self.dsn is not None:
            return f"nanobanana journal {PostgresJournal.redact(self.dsn)} --batch {self.batch}"
        return f"nanobanana journal {out if self.path == out / JOURNAL_NAME else self.path}"

    def open(self, out: Path) -> Journal:
        """The journal, to open with ``async with`` (a SQLite one also locks ``out``).

        With PostgreSQL, leases decide who writes which image, so several
        workers may share ``out``: it is not locked.
        """
        if self.dsn is not None:
            return PostgresJournal(
                self.dsn,
                batch=self.batch,
                lease_seconds=self.lease_seconds,
                max_requests_per_second=self.rate,
            )
        assert self.path is not None
        return SQLiteJournal(self.path, folder=out)

    async def rows(self, *, patient: bool) -> Path | list[JournalEntry] | None:
        """What the manifest is rebuilt from: the SQLite file, or the batch's rows.

        A database that is away (a restart) is waited for when ``patient`` (the
        first and last manifest), for as long as the journal itself would wait;
        otherwise None: the refresh is skipped, the last manifest stays.
        """
        if self.dsn is None:
            assert self.path is not None
            return self.path
        deadline = time.monotonic() + (_REACHABLE_WITHIN if patient else 0.0)
        while True:
            try:
                entries = (await read_postgres_journal(self.dsn, self.batch)).entries
            except JournalError:
                if time.monotonic() >= deadline:
                    if patient:
                        raise
                    return None
                await anyio.sleep(1.0)
            else:
                return entries


#: Seconds the manifest waits for a PostgreSQL journal that went away (as the journal does).
_REACHABLE_WITHIN = 60.0


def default_batch_name(prompts: str) -> str:
    """``--batch`` when not given: the prompt file's stem (``stdin`` for standard input)."""
    return "stdin" if prompts == "-" else Path(prompts).stem


class _Manifest:
    """Keeps DIR/manifest.jsonl current: rewritten every few seconds while outcomes arrive.

    A rewrite reads the whole prompt file and journal, so for a huge input the
    pause between rewrites grows to keep them under ~5 % of the run's time.
    """

    def __init__(self, out: Path, source: PromptSource, journal: _JournalChoice) -> None:
        self._out, self._source, self._journal = out, source, journal
        self._due = time.monotonic() + MANIFEST_EVERY

    async def write(self, *, live: bool = False) -> None:
        """Rewrite it now; ``live`` while the batch runs (creates on the wire are not in doubt)."""
        started = time.monotonic()
        rows = await self._journal.rows(patient=not live)
        if rows is not None:
            write = functools.partial(write_manifest, self._out, self._source, rows, live=live)
            await anyio.to_thread.run_sync(write)
        took = time.monotonic() - started
        self._due = time.monotonic() + max(MANIFEST_EVERY, 20 * took)

    async def refresh_if_due(self) -> None:
        """Rewrite it if the last rewrite is old enough."""
        if time.monotonic() >= self._due:
            await self.write(live=True)


def _exit_code(report: RunReport, console: Console) -> int:
    if report.failed == 0:
        return EXIT_CAPPED if report.not_attempted else EXIT_OK
    fatal = {name.__name__ for name in FATAL_ERRORS}
    if report.done == 0 and report.reasons and set(report.reasons) <= fatal:
        report_error(report.first_error)
        return EXIT_USAGE
    console.print(
        f"{report.failed} of {report.finished} inputs failed; see {MANIFEST} for each reason",
        highlight=False,
    )
    return EXIT_FAILURES


async def generate_command(args: argparse.Namespace, console: Console) -> int:
    """Generate one image and save it into ``--out``."""
    request = ImageRequest(
        prompt=args.prompt, model=args.model, resolution=args.resolution, size=args.size
    )
    async with open_client(args, console) as client:
        try:
            result = await client.generate(request, timeout=args.timeout)
            path = await result.save(Path(args.out) / "")
        except DestinationExistsError as exc:
            report_error(f"{exc.path} already exists; nanobanana never replaces an image")
            return EXIT_FAILURES
        except NanoBananaError as exc:
            report_error(exc)
            return EXIT_USAGE if isinstance(exc, FATAL_ERRORS) else EXIT_FAILURES
    console.print(f"saved {path} (task {result.task.id})", highlight=False)
    return EXIT_OK
