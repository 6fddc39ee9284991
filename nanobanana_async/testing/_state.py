"""The simulator's memory: tasks, their clock-driven status, and the shared settings.

A task's status is derived from the clock when it is asked for (queued before
``starts_at``, processing before ``completes_at``, then terminal), so no timer
or background task exists per task and 100k tasks cost only their records.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal, TypeAlias

import attrs

from ._counters import Origin, RecordedRequest, RequestKind, SimulatorCounters
from ._latency import LatencyProfile

if TYPE_CHECKING:
    from ._persist import StateFile

Outcome: TypeAlias = Literal["completed", "failed", "no_url", "never", "expired"]
TaskStatus: TypeAlias = Literal["queued", "processing", "completed", "failed"]
TaskError: TypeAlias = str | Mapping[str, str] | None

FAILED_MESSAGE = "Content policy violation: the prompt was rejected"
# Checked in order, so "[fail-object]" wins over a plain "[fail]" in the same prompt.
_MARKERS: tuple[tuple[str, Outcome, TaskError], ...] = (
    ("[fail-object]", "failed", {"message": FAILED_MESSAGE, "code": "content_policy"}),
    ("[fail]", "failed", FAILED_MESSAGE),
    ("[no-url]", "no_url", None),
    ("[never]", "never", None),
    ("[expired]", "expired", None),
)


def outcome_for(prompt: str) -> tuple[Outcome, TaskError]:
    """How a job with this prompt ends, from the markers it contains (case-insensitive)."""
    lowered = prompt.lower()
    if "[" in lowered:
        for marker, outcome, error in _MARKERS:
            if marker in lowered:
                return outcome, error
    return "completed", None


@attrs.define(eq=False)
class SimTask:
    """One generation job: what was asked, when it moves on, and how it was queried."""

    id: str
    request: dict[str, object]
    """The JSON body of the create request, as received."""
    model: str
    resolution: str | None
    size: str
    created: int
    """Unix time in seconds, as reported to the client."""
    created_at: float
    """``time.monotonic()`` at creation."""
    starts_at: float
    """Monotonic time when it moves from queued to processing."""
    completes_at: float
    """Monotonic time when it becomes terminal (infinite for ``never``)."""
    outcome: Outcome
    error: TaskError = None
    polls: int = 0
    poll_times: list[float] = attrs.Factory(list)
    """Monotonic time of every poll of this task, to check the client's pace."""
    downloads: int = 0
    downloaded_at: float | None = None
    """Monotonic time its image was first sent in full."""
    in_flight: bool = False

    def status_at(self, now: float) -> TaskStatus:
        """The status a poll at monotonic time ``now`` reports."""
        if now < self.starts_at:
            return "queued"
        if now < self.completes_at:
            return "processing"
        return "failed" if self.outcome == "failed" else "completed"

    @property
    def status(self) -> TaskStatus:
        """The status right now."""
        return self.status_at(time.monotonic())

    @property
    def completed_at(self) -> float | None:
        """Monotonic time it became terminal, or None while it is not yet terminal."""
        return self.completes_at if time.monotonic() >= self.completes_at else None

    @property
    def prompt(self) -> str | None:
        """The prompt it was created with (None if the request has none, as a hand-made record)."""
        prompt = self.request.get("prompt")
        return prompt if isinstance(prompt, str) else None

    @property
    def has_image(self) -> bool:
        """Whether it ends with an image URL (even one that is already expired)."""
        return self.outcome in ("completed", "expired")


@attrs.define(eq=False)
class SimState:
    """Everything the two origins share: settings, tasks, counters and the request log."""

    api_key: str
    latency: LatencyProfile
    rng: random.Random
    url_ttl: float
    balance: int | None
    record_requests: bool = True
    counters: SimulatorCounters = attrs.Factory(SimulatorCounters)
    requests: list[RecordedRequest] = attrs.Factory(list)
    tasks: dict[str, SimTask] = attrs.Factory(dict)
    file_host_url: str = ""
    state_file: StateFile | None = None
    """Where each new task is written before its create is answered (None: memory only)."""

    def record(
        self, origin: Origin, method: str, path: str, headers: Mapping[str, str], kind: RequestKind
    ) -> None:
        """Log one request (presence of credentials only, never their values)."""
        if self.record_requests:
            self.requests.append(
                RecordedRequest(
                    origin=origin,
                    method=method,
                    path=path,
                    at=time.monotonic(),
                    authorization="Authorization" in headers,
                    cookie="Cookie" in headers,
                    endpoint=kind,
                )
            )

    def _new_id(self) -> str:
        while True:
            task_id = f"{self.rng.getrandbits(64):016x}"
            if task_id not in self.tasks:
                return task_id

    def create_task(
        self, body: dict[str, object], model: str, prompt: str, resolution: str | None, size: str
    ) -> SimTask:
        """Create (and bill) a task whose timing is drawn from the current latency profile."""
        now = time.monotonic()
        queued, processing = self.latency.sample_phases(model, resolution, self.rng)
        outcome, error = outcome_for(prompt)
        starts_at = now + queued
        task = SimTask(
            id=self._new_id(),
            request=body,
            model=model,
            resolution=resolution,
            size=size,
            created=int(time.time()),
            created_at=now,
            starts_at=starts_at,
            completes_at=math.inf if outcome == "never" else starts_at + processing,
            outcome=outcome,
            error=error,
        )
        if self.state_file is not None:
            self.state_file.append(task)
        self.tasks[task.id] = task
        self.counters.creates += 1
        if self.balance is not None:
            self.balance -= 1
        return task

    def begin_flight(self, task: SimTask) -> None:
        """The client learnt the task's id: it is now in flight."""
        if not task.in_flight and task.downloaded_at is None:
            task.in_flight = True
            self.counters._begin_flight()

    def end_flight(self, task: SimTask) -> None:
        """The client has what it needs (or knows there is nothing): no longer in flight."""
        if task.in_flight:
            task.in_flight = False
            self.counters._end_flight()

    def image_url(self, task: SimTask) -> str:
        """Where the file host serves this task's image."""
        return f"{self.file_host_url}/files/{task.id}.png"

    def is_expired(self, task: SimTask, now: float) -> bool:
        """Whether the task's image URL no longer works at monotonic time ``now``."""
        return task.outcome == "expired" or now > task.completes_at + self.url_ttl
