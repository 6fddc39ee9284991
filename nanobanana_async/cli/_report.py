"""What ``nanobanana run`` shows a person: progress while it runs, a summary and a manifest after.

On a terminal, a rich progress bar (done, failed, in flight, rate, ETA);
elsewhere, a plain line every few seconds so logs stay readable. The
manifest has one JSON line per input, rewritten whole at the end.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

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

from .._models import Outcome

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
        self.rows: list[dict[str, Any]] = []
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
        """Say that an input line was skipped, and why."""
        self.console.print(f"[yellow]line {line} skipped:[/] {reason}", highlight=False)

    def record(
        self, outcome: Outcome, *, line: int | None = None, prompt: str | None = None
    ) -> None:
        """Count one outcome and keep its manifest row."""
        if outcome.ok:
            self.done += 1
        else:
            self.failed += 1
            self.reasons[_reason(outcome)] += 1
        task = outcome.task
        self.rows.append(
            {
                "index": outcome.index,
                "line": line,
                "prompt": prompt if prompt is not None else _prompt(outcome),
                "task_id": task.id if task is not None else None,
                "status": "saved" if outcome.ok else "failed",
                "path": str(outcome.path) if outcome.path is not None else None,
                "error": str(outcome.error) if outcome.error is not None else None,
                "error_type": type(outcome.error).__name__ if outcome.error is not None else None,
            }
        )
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
        table.add_row("elapsed", f"{self.elapsed:.1f} s")
        rate = self.done / max(self.elapsed, 1e-9)
        table.add_row("images/s", f"{rate:.2f}")
        table.add_row("output", str(out_dir))
        return table

    def write_manifest(self, path: Path) -> None:
        """Write one JSON line per input, in input order, replacing any earlier manifest."""
        temp = path.with_name(path.name + ".part")
        ordered = sorted(self.rows, key=lambda row: (row["index"] is None, row["index"] or 0))
        with temp.open("w", encoding="utf-8") as handle:
            for row in ordered:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        temp.replace(path)


def _prompt(outcome: Outcome) -> str | None:
    return outcome.request.prompt if outcome.request is not None else None
