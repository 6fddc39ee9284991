"""nanobanana_async: an asyncio-first client for the Nano Banana image-generation service.

One ``NanoBanana`` client shares one connection pool and a bounded job budget,
so many generation jobs can be submitted, polled and downloaded at once::

    async with NanoBanana() as client:
        result = await client.generate("a red fox", model="nano-banana-2", size="16:9")
        path = await result.save("out/")

Import public names from here; the ``_modules`` behind them are private.
For contributors, one module answers each question: what one job does
(``_jobs``), how many run at once and how fast (``_limits``), when to retry
(``_retry``), when to poll (``_polling``), how bytes reach disk
(``_download``), how a batch streams (``_scheduler``, running ``_batch``'s
job for each input), what a rerun resumes (``_resume`` over ``_journal``),
what the client reports as it works (``_observe``: events from ``_events``,
counters for ``_stats``), and how requests are sent (``_http``, the only
package that uses aiohttp).
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

from ._client import NanoBanana
from ._download import ImageKind, sniff_image
from ._errors import (
    FATAL_ERRORS,
    APIError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ConfigurationError,
    DestinationExistsError,
    DownloadError,
    DownloadTimeoutError,
    InsufficientBalanceError,
    InvalidRequestError,
    JournalError,
    JournalLockedError,
    MalformedResponseError,
    MaxJobsReachedError,
    NanoBananaError,
    NetworkError,
    PermissionDeniedError,
    RateLimitedError,
    ResultExpiredError,
    ServerError,
    SubmissionUncertainError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
    UnsafeURLError,
    UsageError,
)
from ._events import (
    BatchFinished,
    BatchStarted,
    Completed,
    Event,
    EventsDropped,
    Failed,
    HeldElsewhere,
    RateLimited,
    Retrying,
    Saved,
    Skipped,
    StatusChanged,
    Submitted,
    Uncertain,
)
from ._http import API_KEY_ENV, DEFAULT_BASE_URL, Timeouts
from ._journal import Journal, JournalEntry, JournalState, request_fingerprint
from ._models import ImageRequest, ImageResult, Outcome, Task, TaskStatus
from ._observe import EventStream
from ._polling import AdaptivePolling, FixedPolling, PollingPolicy
from ._postgres_journal import PostgresJournal
from ._postgres_reader import BatchWorker, PostgresBatch, read_postgres_journal
from ._retry import Backoff, RetryPolicy
from ._scheduler import OutcomeStream
from ._stats import Latency, Stats

if _TYPE_CHECKING:
    from ._sqlite_journal import JournalReader, SQLiteJournal, read_journal
from ._vocabulary import MODELS, RESOLUTIONS, SIZES

__version__ = "0.1.0"

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_BASE_URL",
    "FATAL_ERRORS",
    "MODELS",
    "RESOLUTIONS",
    "SIZES",
    "APIError",
    "AdaptivePolling",
    "AuthenticationError",
    "Backoff",
    "BadRequestError",
    "BatchFinished",
    "BatchStarted",
    "BatchWorker",
    "ClientClosedError",
    "Completed",
    "ConfigurationError",
    "DestinationExistsError",
    "DownloadError",
    "DownloadTimeoutError",
    "Event",
    "EventStream",
    "EventsDropped",
    "Failed",
    "FixedPolling",
    "HeldElsewhere",
    "ImageKind",
    "ImageRequest",
    "ImageResult",
    "InsufficientBalanceError",
    "InvalidRequestError",
    "Journal",
    "JournalEntry",
    "JournalError",
    "JournalLockedError",
    "JournalReader",
    "JournalState",
    "Latency",
    "MalformedResponseError",
    "MaxJobsReachedError",
    "NanoBanana",
    "NanoBananaError",
    "NetworkError",
    "Outcome",
    "OutcomeStream",
    "PermissionDeniedError",
    "PollingPolicy",
    "PostgresBatch",
    "PostgresJournal",
    "RateLimited",
    "RateLimitedError",
    "ResultExpiredError",
    "RetryPolicy",
    "Retrying",
    "SQLiteJournal",
    "Saved",
    "ServerError",
    "Skipped",
    "Stats",
    "StatusChanged",
    "SubmissionUncertainError",
    "Submitted",
    "Task",
    "TaskFailedError",
    "TaskNotFoundError",
    "TaskStatus",
    "TaskTimeoutError",
    "Timeouts",
    "Uncertain",
    "UnsafeURLError",
    "UsageError",
    "__version__",
    "read_journal",
    "read_postgres_journal",
    "request_fingerprint",
    "sniff_image",
]

#: Public names whose module imports sqlite3, loaded on first use.
_SQLITE_NAMES = frozenset({"JournalReader", "SQLiteJournal", "read_journal"})


def _public(value: object) -> None:
    """Reprs, tracebacks and docs name the public package, not the private module."""
    if getattr(value, "__module__", "").startswith("nanobanana_async._"):
        value.__module__ = __name__


def __getattr__(name: str) -> object:
    if name in _SQLITE_NAMES:
        from . import _sqlite_journal

        value = getattr(_sqlite_journal, name)
        _public(value)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


for _name in __all__:
    if _name not in _SQLITE_NAMES:
        _public(globals()[_name])
del _name
