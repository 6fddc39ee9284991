"""The exception hierarchy: every failure the SDK reports, typed so ``except`` tells them apart.

::

    NanoBananaError
    ├── InvalidRequestError (ValueError)       bad input, refused locally: nothing sent or billed
    ├── ConfigurationError (ValueError)        a bad client setting (base URL, limits, missing key)
    ├── UsageError (RuntimeError)              the SDK was used in a way it cannot serve
    │   └── ClientClosedError                  the client was used after aclose()
    ├── APIError                               the service answered with an error status
    │   ├── BadRequestError                    400: the service rejected the request
    │   ├── AuthenticationError                401: the key is missing or wrong
    │   ├── InsufficientBalanceError           402, or a message about balance
    │   ├── PermissionDeniedError              403
    │   ├── TaskNotFoundError                  404 on a task query
    │   ├── RateLimitedError                   429; carries ``retry_after``
    │   └── ServerError                        5xx
    ├── NetworkError (ConnectionError)         transport failure; says whether the request left
    ├── SubmissionUncertainError               a create was sent, its answer lost: may be billed
    ├── MaxJobsReachedError                    not attempted: the batch's max_jobs cap was spent
    ├── MalformedResponseError                 an answer the SDK cannot trust (bad JSON, bad id)
    ├── TaskFailedError                        the generation failed; carries the final Task
    ├── TaskTimeoutError (TimeoutError)        waiting for a task ran past its deadline
    ├── ResultExpiredError                     the image URL expired before it was downloaded
    ├── JournalError                           the batch journal cannot be used
    │   └── JournalLockedError                 another run holds the journal or the output folder
    └── DownloadError                          the image could not be fetched or stored safely
        ├── DownloadTimeoutError (TimeoutError)  the download stalled past its deadline
        ├── UnsafeURLError                     an image URL the SDK refuses to fetch (scheme, host)
        └── DestinationExistsError             the target file exists (also a FileExistsError)

Errors carry what a user needs to act (HTTP status, task id, the service's
message, the retry delay) and never the API key: the HTTP seam builds every
message itself and never chains an exception that holds request headers.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._models import ImageRequest, Task


class NanoBananaError(Exception):
    """Base class of every error raised by nanobanana_async."""


class InvalidRequestError(NanoBananaError, ValueError):
    """A request failed local validation; nothing was sent and nothing was billed."""

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"invalid {field} {shown}: {allowed}")


class ConfigurationError(NanoBananaError, ValueError):
    """A client setting is missing or unusable (for example no API key, or a bad base URL)."""


class UsageError(NanoBananaError, RuntimeError):
    """The SDK was called in a way it cannot serve; the message says what to do instead."""


class ClientClosedError(UsageError):
    """The client was used after ``aclose()`` or after its ``async with`` block ended."""


class APIError(NanoBananaError):
    """The service answered a request with an error status.

    ``status`` is the HTTP status, ``message`` the service's own words (or a
    short excerpt of a non-JSON body), ``code`` its error code when it gave one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        operation: str = "request",
        task_id: str | None = None,
    ) -> None:
        self.message = message
        self.status = status
        self.code = code
        self.operation = operation
        self.task_id = task_id
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = f" for task {self.task_id}" if self.task_id else ""
        code = f" [{self.code}]" if self.code else ""
        return f"{self.operation}{where} failed with HTTP {self.status}{code}: {self.message}"


class BadRequestError(APIError):
    """400: the service rejected the request's content."""


class AuthenticationError(APIError):
    """401: the API key is missing, malformed or not accepted."""


class InsufficientBalanceError(APIError):
    """402, or an error message about balance or quota: the account cannot pay for more images."""


class PermissionDeniedError(APIError):
    """403: the key is valid but not allowed to do this."""


class TaskNotFoundError(APIError):
    """404 on a task query: the service does not know this task id."""


class RateLimitedError(APIError):
    """429: too many requests. ``retry_after`` is the wait in seconds the service asked for."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 429,
        code: str | None = None,
        operation: str = "request",
        task_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=status, code=code, operation=operation, task_id=task_id)

    def _describe(self) -> str:
        base = super()._describe()
        if self.retry_after is None:
            return base
        return f"{base} (retry after {self.retry_after:g} s)"


class ServerError(APIError):
    """5xx: the service or a gateway in front of it failed."""


class NetworkError(NanoBananaError, ConnectionError):
    """The request failed in transport (refused, reset, DNS, TLS or a timeout).

    ``sent`` tells whether the request may have reached the server. For a
    create, ``sent=False`` means nothing was submitted and nothing was billed.
    ``retryable`` is False for failures a retry cannot fix (a bad certificate).
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str = "request",
        sent: bool = True,
        retryable: bool = True,
    ) -> None:
        self.operation = operation
        self.sent = sent
        self.retryable = retryable
        if operation == "create" and not sent:
            message = f"{message}; not submitted, not billed"
        super().__init__(f"{operation} failed: {message}")


class SubmissionUncertainError(NanoBananaError):
    """A create request was sent but its answer was lost: the task may exist and be billed.

    The SDK never resubmits such a request by itself. ``request`` is what was
    sent, ``submitted_at`` the Unix time it was sent, and ``client_key`` the
    key the SDK minted for this submission (kept across its attempts).
    """

    def __init__(
        self,
        reason: str,
        *,
        request: ImageRequest | None = None,
        submitted_at: float | None = None,
        client_key: str | None = None,
    ) -> None:
        self.reason = reason
        self.request = request
        self.submitted_at = time.time() if submitted_at is None else submitted_at
        self.client_key = client_key
        super().__init__(
            f"create was sent but its answer was lost ({reason}): the task may exist and be "
            "billed; it was not resubmitted"
        )


class MaxJobsReachedError(NanoBananaError):
    """Not attempted: the batch had sent its ``max_jobs`` creates before this input's turn.

    Nothing was sent or billed for it. A rerun with the same journal sends it
    (and counts its create against that run's own cap).
    """

    def __init__(self, max_jobs: int) -> None:
        self.max_jobs = max_jobs
        creates = "create" if max_jobs == 1 else "creates"
        super().__init__(
            f"not attempted: this batch already sent its {max_jobs} {creates} (max_jobs); "
            "nothing was sent for this input, and a rerun with the journal sends it"
        )


class MalformedResponseError(NanoBananaError):
    """The service answered something the SDK cannot trust or use.

    ``may_be_billed`` is set when this was the answer to a create: the task may
    exist even though no usable id came back. ``body_excerpt`` is a short,
    redacted piece of what arrived. ``transient`` is set when the answer was
    not JSON at all (typically a gateway page), so asking again may help.
    """

    def __init__(
        self,
        message: str,
        *,
        body_excerpt: str | None = None,
        may_be_billed: bool = False,
        task_id: str | None = None,
        transient: bool = False,
    ) -> None:
        self.message = message
        self.body_excerpt = body_excerpt
        self.may_be_billed = may_be_billed
        self.task_id = task_id
        self.transient = transient
        text = message
        if may_be_billed:
            text += " (the create may have been billed)"
        if body_excerpt:
            text += f"; body starts: {body_excerpt!r}"
        super().__init__(text)


class TaskFailedError(NanoBananaError):
    """The service reports that generating this task's image failed. ``task`` is the final Task."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.task_id = task.id
        self.message = task.error or "no reason given"
        super().__init__(f"task {task.id} failed: {self.message}")


class TaskTimeoutError(NanoBananaError, TimeoutError):
    """Waiting for a task ran past its deadline; ``wait(task_id)`` can resume later."""

    def __init__(self, task_id: str, *, last_status: str | None, timeout: float) -> None:
        self.task_id = task_id
        self.last_status = last_status
        self.timeout = timeout
        seen = last_status if last_status is not None else "not yet polled"
        super().__init__(
            f"task {task_id} did not finish within {timeout:g} s (last status: {seen}); "
            "it may still complete: call wait() with its id to resume"
        )


class ResultExpiredError(NanoBananaError):
    """The task's image URL expired (about 24 h after completion) before it was downloaded."""

    def __init__(self, task_id: str, *, status: int | None = None) -> None:
        self.task_id = task_id
        self.status = status
        got = f" (file host answered HTTP {status})" if status else ""
        super().__init__(f"the image of task {task_id} is no longer available{got}")


class DownloadError(NanoBananaError):
    """The image could not be downloaded or stored safely. ``task_id`` names the task when known.

    ``retryable`` is True when a fresh attempt may succeed (a truncated body).
    """

    def __init__(
        self, message: str, *, task_id: str | None = None, retryable: bool = False
    ) -> None:
        self.message = message
        self.task_id = task_id
        self.retryable = retryable
        where = f"task {task_id}: " if task_id else ""
        super().__init__(f"{where}{message}")


class DownloadTimeoutError(DownloadError, TimeoutError):
    """The image download, retries included, ran past its deadline (a stalled file host)."""


class UnsafeURLError(DownloadError):
    """An image URL the SDK refuses to fetch: plain http to a non-loopback host, or not http(s)."""


class DestinationExistsError(DownloadError, FileExistsError):
    """The file an image would be saved to already exists, and ``overwrite`` was not asked for."""

    def __init__(self, path: str, *, task_id: str | None = None) -> None:
        self.path = path
        super().__init__(
            f"{path} already exists; pass overwrite=True to replace it", task_id=task_id
        )


class JournalError(NanoBananaError):
    """The journal cannot be used: not a journal, corrupted, or from an incompatible version."""


class JournalLockedError(JournalError):
    """Another run (in this process or another) holds the journal or the output folder.

    One writer per journal and folder: two runs at once would pay twice for
    the same inputs and overwrite each other's files. ``path`` is what is
    locked; ``holder`` describes the process holding it, when known.
    """

    def __init__(self, path: str, *, holder: str | None) -> None:
        self.path = path
        self.holder = holder
        by = f" by {holder}" if holder else ""
        super().__init__(
            f"{path} is in use{by}; wait for that run to finish (or stop it), or use "
            "another folder or journal"
        )


#: Errors that doom every job of a batch: new submissions stop when one is seen.
FATAL_ERRORS: tuple[type[NanoBananaError], ...] = (
    AuthenticationError,
    ConfigurationError,
    InsufficientBalanceError,
    PermissionDeniedError,
)
