"""What ``nanobanana run`` shows a person: progress while it runs, and a summary after.

On a terminal, a rich progress bar (done, failed, rate, ETA); elsewhere, a
plain line every few seconds so logs stay readable. Only counts are kept,
so a run of a million prompts costs no memory here.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from nanobanana_async import Outcome

__all__ = ["RunReport"]

_PLAIN_EVERY = 5.0


def _reason(outcome: Outcome) -> str:
    return type(outcome.error).__name__ if outcome.error is not None else "ok"


class RunReport:
    """Collects outcomes as they arrive and tells a person how the run is going."""

    def __init__(self, console: Console, *, total: int | None, concurrency: int) -> None:
        self.console = console
        self.total = total
        self.concurrency = concurrency
        self.started = time.monotonic()
        self.done = 0
        self.failed = 0
        self.reasons: Counter[str] = Counter()
        self.resumed: Counter[str] = Counter()
        self.first_error: str | None = None
        self._last_plain = self.started
        self._progress: Progress | None = None
        self._bar: TaskID | None = None

    def __enter__(self) -> RunReport:
        if self.console.is_terminal:
            self._progress = Progress(
                TextColumn("[bold]images"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._progress.start()
            self._bar = self._progress.add_task("run", total=self.total, detail="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def bad_line(self, line: int, reason: str) -> None:
        """Say that an input line was skipped, and why; it counts as a failure."""
        self.console.print(f"[yellow]line {line} skipped:[/] {reason}", highlight=False)
        self.failed += 1
        self.reasons["bad input line"] += 1

    def record(self, outcome: Outcome) -> None:
        """Count one outcome."""
        if outcome.ok:
            self.done += 1
        else:
            self.failed += 1
            self.reasons[_reason(outcome)] += 1
            if self.first_error is None:
                self.first_error = str(outcome.error)
        if outcome.resumed_from is not None:
            self.resumed[outcome.resumed_from] += 1
        self._show_progress()

    def _show_progress(self) -> None:
        finished = self.done + self.failed
        rate = finished / max(time.monotonic() - self.started, 1e-9)
        if self._progress is not None and self._bar is not None:
            detail = f"[green]{self.done} ok[/] [red]{self.failed} failed[/] {rate:.1f}/s"
            self._progress.update(self._bar, completed=finished, detail=detail)
            return
        now = time.monotonic()
        if now - self._last_plain >= _PLAIN_EVERY:
            self._last_plain = now
            of = f"/{self.total}" if self.total is not None else ""
            self.console.print(
                f"progress: {finished}{of} finished, {self.done} ok, {self.failed} failed, "
                f"{rate:.1f} images/s",
                highlight=False,
            )

    def interrupted(self) -> str:
        """The one line Ctrl-C leaves: the counts so far and how to resume."""
        of = f" of {self.total}" if self.total is not None else ""
        return (
            f"nanobanana: interrupted after {self.done + self.failed}{of} inputs "
            f"({self.done} ok, {self.failed} failed); run the same command again to resume: "
            "images already saved are kept and nothing is paid for twice"
        )

    @property
    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.started

    def summary(self, out_dir: Path) -> Table:
        """The end-of-run table: successes, failures by reason, time and rate."""
        table = Table(title="nanobanana run", show_header=False, title_justify="left")
        table.add_column("what")
        table.add_column("value", justify="right")
        table.add_row("succeeded", str(self.done))
        table.add_row("failed", str(self.failed))
        for reason, count in self.reasons.most_common():
            table.add_row(f"  {reason}", str(count))
        if self.resumed:
            table.add_row("from the journal", str(sum(self.resumed.values())))
            for state, count in self.resumed.most_common():
                table.add_row(f"  were {state}", str(count))
        table.add_row("elapsed", f"{self.elapsed:.1f} s")
        rate = self.done / max(self.elapsed, 1e-9)
        table.add_row("images/s", f"{rate:.2f}")
        table.add_row("output", str(out_dir))
        return table
