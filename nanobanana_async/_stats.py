"""``client.stats()``: the client's running counters, and the snapshot value they are read into.

Counting is a few integer additions per job, whether or not anyone reads
them; a snapshot copies them and computes latency quantiles from the last
1,024 completed jobs of each model and resolution.
"""

from __future__ import annotations

import collections
import statistics
from collections.abc import Callable, Mapping
from types import MappingProxyType

import attrs

from ._models import TaskStatus

__all__ = ["Latency", "Stats", "StatsRecorder"]

#: Completed jobs kept per model and resolution for the latency quantiles.
LATENCY_SAMPLES = 1024

Kind = tuple[str | None, str | None]


@attrs.frozen
class Latency:
    """Seconds from a create being sent to its task seen completed, over ``count`` recent jobs."""

    count: int
    p50: float
    p95: float
    p99: float


@attrs.frozen
class Stats:
    """A snapshot of one client's work so far (cheap: call it every second if you like).

    Counts of jobs and tasks: ``submitted`` (creates the service accepted),
    ``completed`` (tasks seen completed), ``saved`` (images saved or read into
    memory by batch jobs and results), ``failed`` (jobs that ended without an
    image), ``uncertain`` (creates whose fate is unknown), ``skipped`` (inputs a
    batch's ``max_jobs`` cap left unsent), ``held_elsewhere`` (inputs of a
    shared journal's batch left to the other worker holding them), ``in_flight`` (jobs
    of ``generate`` and ``generate_many`` running now; ``queued`` and
    ``processing`` of them are tasks last seen in that state, the rest are
    being created or downloaded). ``polls`` counts status
    queries sent, ``retries`` every retry (``retries_by_cause`` by error type),
    ``rate_limited`` the 429 answers, ``paused_seconds`` the time creates were
    held back by them. ``bytes_downloaded`` counts image bytes, ``poll_pace``
    is the current cap on polls per second (None: uncapped), and ``latency``
    gives quantiles per ``(model, resolution)``.
    """

    submitted: int
    completed: int
    saved: int
    failed: int
    uncertain: int
    skipped: int
    held_elsewhere: int
    in_flight: int
    queued: int
    processing: int
    polls: int
    retries: int
    rate_limited: int
    paused_seconds: float
    bytes_downloaded: int
    batches: int
    poll_pace: float | None
    retries_by_cause: Mapping[str, int] = attrs.field(repr=False)
    latency: Mapping[tuple[str | None, str | None], Latency] = attrs.field(repr=False)

    @property
    def polls_per_job(self) -> float | None:
        """Status queries per submitted task, or None before the first one."""
        return self.polls / self.submitted if self.submitted else None


class StatsRecorder:
    """The running counters behind ``Stats`` (written by the observer only)."""

    def __init__(self, *, poll_pace: Callable[[], float | None]) -> None:
        self._poll_pace = poll_pace
        self.submitted = 0
        self.completed_count = 0
        self.saved = 0
        self.failed = 0
        self.uncertain = 0
        self.skipped = 0
        self.held_elsewhere = 0
        self.in_flight = 0
        self.queued = 0
        self.processing = 0
        self.polls = 0
        self.retries = 0
        self.rate_limited = 0
        self.paused_seconds = 0.0
        self.bytes_downloaded = 0
        self.batches_started = 0
        self._causes: collections.Counter[str] = collections.Counter()
        self._latencies: dict[Kind, collections.deque[float]] = {}

    def completed(self, model: str | None, resolution: str | None, latency: float | None) -> None:
        self.completed_count += 1
        if latency is None:
            return
        samples = self._latencies.get((model, resolution))
        if samples is None:
            samples = self._latencies[model, resolution] = collections.deque(maxlen=LATENCY_SAMPLES)
        samples.append(latency)

    def enter(self, status: TaskStatus | None) -> None:
        """A job's task is now in ``status`` (only queued and processing are counted)."""
        if status is TaskStatus.QUEUED:
            self.queued += 1
        elif status is TaskStatus.PROCESSING:
            self.processing += 1

    def leave(self, status: TaskStatus | None) -> None:
        """A job's task is no longer in ``status``."""
        if status is TaskStatus.QUEUED:
            self.queued -= 1
        elif status is TaskStatus.PROCESSING:
            self.processing -= 1

    def retried(self, cause: str) -> None:
        self.retries += 1
        self._causes[cause] += 1

    def snapshot(self) -> Stats:
        return Stats(
            submitted=self.submitted,
            completed=self.completed_count,
            saved=self.saved,
            failed=self.failed,
            uncertain=self.uncertain,
            skipped=self.skipped,
            held_elsewhere=self.held_elsewhere,
            in_flight=self.in_flight,
            queued=self.queued,
            processing=self.processing,
            polls=self.polls,
            retries=self.retries,
            rate_limited=self.rate_limited,
            paused_seconds=self.paused_seconds,
            bytes_downloaded=self.bytes_downloaded,
            batches=self.batches_started,
            poll_pace=self._poll_pace(),
            retries_by_cause=MappingProxyType(dict(self._causes)),
            latency=MappingProxyType(
                {kind: _quantiles(samples) for kind, samples in self._latencies.items() if samples}
            ),
        )


def _quantiles(samples: collections.deque[float]) -> Latency:
    if len(samples) == 1:
        only = samples[0]
        return Latency(count=1, p50=only, p95=only, p99=only)
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return Latency(count=len(samples), p50=cuts[49], p95=cuts[94], p99=cuts[98])
