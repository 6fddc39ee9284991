"""What the client reports as it works: one frozen event per thing that happened.

Every event has ``at`` (``time.monotonic()`` seconds), and, where they apply,
``batch`` (which ``generate_many`` call, numbered from 1 per client),
``index`` (the input's position in that batch), ``task_id``, ``model`` and
``resolution``. A job of a batch ends with exactly one of ``Saved``,
``Failed`` or ``Uncertain``, or is ``Skipped`` before it starts (its batch's
``max_jobs`` creates were spent); each batch opens with ``BatchStarted`` and
closes with ``BatchFinished``. ``as_json()`` gives any event as a JSON-ready
dict, with errors as their type and message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from ._errors import NanoBananaError
from ._models import TaskStatus

__all__ = [
    "BatchFinished",
    "BatchStarted",
    "Completed",
    "Event",
    "EventsDropped",
    "Failed",
    "HeldElsewhere",
    "RateLimited",
    "Retrying",
    "Saved",
    "Skipped",
    "StatusChanged",
    "Submitted",
    "Uncertain",
]


@attrs.frozen(kw_only=True)
class Event:
    """Something the client saw happen, at monotonic time ``at``."""

    at: float
    batch: int | None = None
    index: int | None = None
    task_id: str | None = None
    model: str | None = None
    resolution: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The event as a dict of JSON types, its class name under ``"event"``."""
        data: dict[str, Any] = {"event": type(self).__name__}
        for field in attrs.fields(type(self)):
            data[field.name] = _json_value(getattr(self, field.name))
        return data


def _json_value(value: object) -> object:
    if isinstance(value, NanoBananaError):
        return {"type": type(value).__name__, "message": str(value)}
    if isinstance(value, TaskStatus):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value


@attrs.frozen(kw_only=True)
class Submitted(Event):
    """The service accepted a create: the task exists (and is billed)."""


@attrs.frozen(kw_only=True)
class StatusChanged(Event):
    """A poll saw the task move to ``status`` (queued or processing)."""

    status: TaskStatus


@attrs.frozen(kw_only=True)
class Retrying(Event):
    """``operation`` (create, query or download) failed on ``attempt`` and runs again.

    ``delay`` is the wait before the next attempt; ``cause`` names the error
    type and ``message`` says what went wrong.
    """

    operation: str
    attempt: int
    delay: float
    cause: str
    message: str


@attrs.frozen(kw_only=True)
class RateLimited(Event):
    """The service answered 429. ``scope`` is what waits: ``"creates"`` (all of the
    client's creates pause) or ``"task"`` (this task's next poll or download).

    ``retry_after`` is the service's Retry-After in seconds, when it sent one.
    """

    operation: str
    scope: str
    retry_after: float | None


@attrs.frozen(kw_only=True)
class Completed(Event):
    """A poll saw the task completed; ``latency`` is seconds since its create was sent."""

    latency: float | None


@attrs.frozen(kw_only=True)
class Failed(Event):
    """The job ended without an image; ``error`` says why.

    ``resumed``: the journal answered it from an earlier run (nothing was sent now).
    """

    error: NanoBananaError
    resumed: bool = False


@attrs.frozen(kw_only=True)
class Saved(Event):
    """The job's image was saved at ``path``, or read into memory (``path`` None).

    ``size`` is its length in bytes (None when it was left at its URL with
    ``download=False``). ``resumed``: the journal answered it from an earlier
    run, whose image is already in place.
    """

    path: Path | None
    size: int | None
    resumed: bool = False


@attrs.frozen(kw_only=True)
class Uncertain(Event):
    """The create may have been billed but its answer was lost; never resent by itself.

    ``resumed``: an earlier run lost the answer, and the journal says so now.
    """

    error: NanoBananaError
    resumed: bool = False


@attrs.frozen(kw_only=True)
class Skipped(Event):
    """An input left unsent: its batch had already sent its ``max_jobs`` creates.

    Nothing was sent or billed for it; ``error`` (a ``MaxJobsReachedError``) says so.
    """

    error: NanoBananaError


@attrs.frozen(kw_only=True)
class HeldElsewhere(Event):
    """An input of a shared (PostgreSQL) journal's batch that another live worker holds.

    This batch leaves it to that worker and gives it no outcome; should that
    worker stop before finishing it, this one takes it over and its outcome
    then comes late.
    """


@attrs.frozen(kw_only=True)
class EventsDropped(Event):
    """A reader of ``client.events()`` fell behind: ``count`` older events were lost."""

    count: int


@attrs.frozen(kw_only=True)
class BatchStarted(Event):
    """A ``generate_many`` call began pulling its input."""


@attrs.frozen(kw_only=True)
class BatchFinished(Event):
    """A ``generate_many`` call produced its last outcome.

    ``outcomes`` counts them: ``succeeded`` with an image, ``skipped`` left
    unsent by its ``max_jobs`` cap, ``failed`` without an image for any other
    reason.
    """

    outcomes: int
    succeeded: int
    failed: int
    skipped: int = 0
