"""What ``nanobanana run`` shows a person: progress while it runs, and a summary after.

Both are built on the client's events and ``client.stats()``: the events say
how each job ended (and whether the journal answered it from an earlier
run), the stats say what is queued, processing, retrying or paused right
now. On a terminal a rich progress bar is redrawn from them; elsewhere a
plain line every few seconds keeps logs readable. Only counts are kept, so
a run of a million prompts costs no memory here.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from nanobanana_async import (
    Event,
    Failed,
    HeldElsewhere,
    NanoBananaError,
    Outcome,
    RateLimited,
    Retrying,
    Saved,
    Skipped,
    Stats,
    SubmissionUncertainError,
    Submitted,
    Uncertain,
)

from ._cost import Kind, PriceTable, money

__all__ = ["RunReport"]


class _BarAndActivity(Progress):
    """A progress bar with a line of activity under it, so neither squeezes the other."""

    activity: Text = Text()

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        yield self.activity


_PLAIN_EVERY = 5.0
#: Seconds a stats snapshot is reused for the live line (events redraw it as they come).
_STATS_EVERY = 0.2


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class RunReport:
    """Hears a run's events and tells a person how it is going."""

    def __init__(
        self,
        console: Console,
        *,
        total: int | None,
        concurrency: int,
        max_images: int | None = None,
        prices: PriceTable | None = None,
    ) -> None:
        self.console = console
        self.total = total
        self.concurrency = concurrency
        self.max_images = max_images
        self.prices = prices or PriceTable()
        self.started = time.monotonic()
        self.done = 0  # images saved, this run or an earlier one
        self.done_now = 0  # of them, made by this run
        self.failed = 0
        self.not_attempted = 0  # left unsent by --max-images
        self.elsewhere: set[int] = set()  # inputs another worker of a shared batch holds
        self.creates: Counter[Kind] = Counter()  # tasks this run created (billed)
        self.maybe_billed: Counter[Kind] = Counter()  # creates of this run whose answer was lost
        self.settled_before = 0  # inputs the journal answered from an earlier run
        self.reasons: Counter[str] = Counter()
        self.examples: dict[str, str] = {}
        self.resumed: Counter[str] = Counter()
        self.first_error: str | None = None
        self.last_retry: str | None = None
        self._stats: Callable[[], Stats] | None = None
        self._last_plain = self.started
        self._snapshot: Stats | None = None
        self._snapshot_at = 0.0
        self._progress: _BarAndActivity | None = None
        self._bar: TaskID | None = None

    def __enter__(self) -> RunReport:
        if self.console.is_terminal:
            self._progress = _BarAndActivity(
                TextColumn("[bold]images"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"),
                console=self.console,
            )
            self._progress.start()
            self._bar = self._progress.add_task("run", total=self.total, detail="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._snapshot_at = 0.0  # the last frame shows the stats as they end
            self._redraw()
            self._progress.stop()

    def watch(self, stats: Callable[[], Stats]) -> Callable[[Event], None]:
        """The subscriber to register on the run's client (``stats`` is its ``client.stats``)."""
        self._stats = stats
        return self.on_event

    def on_event(self, event: Event) -> None:
        """Count how a job ended, note retries and 429s, and redraw now and then."""
        if event.index is not None and isinstance(event, Saved | Failed | Uncertain | Skipped):
            # A worker that stopped left this input: this run took it over after all.
            self.elsewhere.discard(event.index)
        if isinstance(event, Saved):
            self.done += 1
            if event.resumed:
                self.settled_before += 1
            else:
                self.done_now += 1
        elif isinstance(event, Failed | Uncertain):
            self._failure(event.error)
            if event.resumed:
                self.settled_before += 1
            elif isinstance(event, Uncertain) and event.model is not None:
                self.maybe_billed[event.model, event.resolution] += 1
        elif isinstance(event, Submitted):
            if event.model is not None:
                self.creates[event.model, event.resolution] += 1
            return
        elif isinstance(event, Skipped):
            self.not_attempted += 1
        elif isinstance(event, HeldElsewhere):
            if event.index is not None:
                self.elsewhere.add(event.index)
        elif isinstance(event, Retrying):
            self.last_retry = f"{event.operation}: {event.cause}"
        elif isinstance(event, RateLimited):
            self.last_retry = f"{event.operation}: 429"
        else:
            return
        self._redraw()

    def _failure(self, error: NanoBananaError) -> None:
        self.failed += 1
        reason = type(error).__name__
        self.reasons[reason] += 1
        self.examples.setdefault(reason, str(error))
        if self.first_error is None:
            self.first_error = str(error)

    def bad_line(self, line: int, reason: str) -> None:
        """Say that an input line was skipped, and why; it counts as a failure."""
        self.console.print(f"[yellow]line {line} skipped:[/] {reason}", highlight=False)
        self.failed += 1
        self.reasons["bad input line"] += 1
        self.examples.setdefault("bad input line", f"line {line}: {reason}")

    def record(self, outcome: Outcome) -> None:
        """Note where an outcome came from (the journal's earlier state), for the summary."""
        if outcome.resumed_from is not None:
            self.resumed[outcome.resumed_from] += 1

    # -- what is shown -----------------------------------------------------------

    @property
    def finished(self) -> int:
        """Inputs this run is done with: outcomes, skipped lines, and inputs other workers hold."""
        return self.done + self.failed + self.not_attempted + len(self.elsewhere)

    @property
    def uncertain(self) -> int:
        """Inputs whose create may have been billed without an answer (now or earlier)."""
        return self.reasons[SubmissionUncertainError.__name__]

    @property
    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.started

    def rate(self) -> float:
        """Images per second made by this run (the journal's answers are not work done now)."""
        return self.done_now / max(self.elapsed, 1e-9)

    def eta(self) -> str:
        """Time left at this run's pace, or '?' before there is a pace."""
        if self.total is None or self.done_now == 0:
            return "?"
        left = max(self.total - self.finished, 0)
        return _clock(left / self.rate())

    def headline(self) -> str:
        """Beside the bar: how inputs ended, and time so far and left."""
        parts = [f"[green]{self.done} ok[/]", f"[red]{self.failed} failed[/]"]
        parts.append(f"elapsed {_clock(self.elapsed)}")
        parts.append(f"eta {self.eta()}")
        return " | ".join(parts)

    def activity(self) -> str:
        """Under the bar: what is in flight, the pace, retries and 429s, inputs left unsent."""
        parts = []
        stats = self._recent_stats()
        if stats is not None:
            parts.append(f"queued {stats.queued} | processing {stats.processing}")
        parts.append(f"{self.rate():.1f} images/s")
        if stats is not None and (stats.retries or stats.rate_limited):
            retry = f"retries {stats.retries}"
            if stats.rate_limited:
                retry += f" | 429s {stats.rate_limited} (paused {stats.paused_seconds:.1f} s)"
            if self.last_retry:
                retry += f" | last {self.last_retry}"
            parts.append(f"[yellow]{retry}[/]")
        if self.not_attempted:
            parts.append(f"{self.not_attempted} not attempted (--max-images {self.max_images})")
        if self.elsewhere:
            parts.append(f"{len(self.elsewhere)} with other workers")
        return " | ".join(parts)

    def _recent_stats(self) -> Stats | None:
        """The client's stats, taken at most every 0.2 s (a snapshot sorts latencies)."""
        now = time.monotonic()
        if self._stats is not None and now - self._snapshot_at >= _STATS_EVERY:
            self._snapshot, self._snapshot_at = self._stats(), now
        return self._snapshot

    def _redraw(self) -> None:
        if self._progress is not None and self._bar is not None:
            self._progress.activity = Text.from_markup(self.activity())
            self._progress.update(self._bar, completed=self.finished, detail=self.headline())
            return
        now = time.monotonic()
        if now - self._last_plain >= _PLAIN_EVERY:
            self._last_plain = now
            of = f"/{self.total}" if self.total is not None else ""
            line = f"{self.headline()} | {self.activity()}"
            line = line.replace("[green]", "").replace("[red]", "")
            line = line.replace("[yellow]", "").replace("[/]", "")
            self.console.print(f"progress: {self.finished}{of} | {line}", highlight=False)

    def interrupted(self) -> str:
        """The one line Ctrl-C leaves: the counts so far and how to resume."""
        of = f" of {self.total}" if self.total is not None else ""
        return (
            f"nanobanana: interrupted after {self.finished}{of} inputs "
            f"({self.done} ok, {self.failed} failed); run the same command again to resume: "
            "images already saved are kept and nothing is paid for twice"
        )

    def summary(self, out_dir: Path) -> Table:
        """The end-of-run table: successes, failures by reason, retries, time and rate."""
        table = Table(title="nanobanana run", show_header=False, title_justify="left")
        table.add_column("what", no_wrap=True)
        table.add_column("value", justify="right")
        table.add_row("succeeded", str(self.done))
        table.add_row("failed", str(self.failed))
        for reason, count in self.reasons.most_common():
            table.add_row(f"  {reason}", str(count))
        if self.not_attempted:
            table.add_row(
                f"not attempted (--max-images {self.max_images})", str(self.not_attempted)
            )
        if self.elsewhere:
            table.add_row("left to other workers of the batch", str(len(self.elsewhere)))
        table.add_row("new tasks (billed)", str(sum(self.creates.values())))
        if self.prices:
            spend = self.prices.spend(self.creates)
            table.add_row("spend estimate (--price)", money(spend.total))
            if spend.unpriced:
                unpriced = sum(spend.unpriced.values())
                table.add_row("  creates not priced", f"{unpriced} ({spend.unpriced_kinds()})")
            if self.maybe_billed:
                unseen = self.prices.spend(self.maybe_billed)
                table.add_row(
                    "  maybe billed, answer lost",
                    f"{sum(self.maybe_billed.values())} (up to {money(unseen.total)} more)",
                )
        if self.resumed:
            table.add_row("from the journal", str(sum(self.resumed.values())))
            for state, count in self.resumed.most_common():
                table.add_row(f"  were {state}", str(count))
        stats = self._stats() if self._stats is not None else None
        if stats is not None and stats.retries:
            table.add_row("retries", str(stats.retries))
            for cause, count in sorted(stats.retries_by_cause.items(), key=lambda kv: -kv[1]):
                table.add_row(f"  {cause}", str(count))
        if stats is not None and stats.rate_limited:
            table.add_row(
                "429 answers", f"{stats.rate_limited} ({stats.paused_seconds:.1f} s paused)"
            )
        table.add_row("elapsed", f"{self.elapsed:.1f} s")
        table.add_row("images/s (this run)", f"{self.rate():.2f}")
        table.add_row("output", str(out_dir))
        return table

    def reasons_text(self) -> list[str]:
        """One line per kind of failure, with its count and one example of its message."""
        return [
            f"{count} x {reason}: {self.examples.get(reason, '')}"
            for reason, count in self.reasons.most_common()
        ]
