"""The values the SDK passes around: requests, tasks, results and batch outcomes.

All are frozen, slotted attrs classes. ``ImageRequest`` validates itself at
construction so a bad request is refused before anything is sent or billed;
``Task.from_response`` is the one place a service answer becomes a Task.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import yarl

from ._errors import InvalidRequestError, MalformedResponseError, NanoBananaError
from ._text import clean_text
from ._vocabulary import (
    DEFAULT_MODEL,
    IGNORES_RESOLUTION,
    MAX_IMAGE_URLS,
    MODELS,
    RESOLUTIONS,
    SIZES,
)

if TYPE_CHECKING:
    from os import PathLike

__all__ = [
    "ImageRequest",
    "ImageResult",
    "Outcome",
    "Task",
    "TaskStatus",
    "task_from_answer",
    "validate_task_id",
]

MAX_TASK_ID_LENGTH = 256
_TASK_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
_WINDOWS_DEVICE_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"{p}{n}" for p in ("COM", "LPT") for n in range(1, 10)}
)
# Unix seconds beyond this are not a plausible creation time (year ~2500).
_MAX_UNIX_TIME = 17_000_000_000


def _one_of(values: Sequence[str]) -> str:
    return "allowed: " + ", ".join(values)


def _lower_if_str(value: object) -> object:
    return value.lower().strip() if isinstance(value, str) else value


def _tuple_of_urls(value: object) -> object:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return value


def _check_prompt(_: object, __: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError("prompt", value, "a non-empty string describing the image")


def _check_model(_: object, __: attrs.Attribute[str], value: object) -> None:
    if value not in MODELS:
        raise InvalidRequestError("model", value, _one_of(MODELS))


def _check_resolution(_: object, __: attrs.Attribute[str | None], value: object) -> None:
    if value is not None and value not in RESOLUTIONS:
        raise InvalidRequestError("resolution", value, _one_of(RESOLUTIONS) + ", or leave it unset")


def _check_size(_: object, __: attrs.Attribute[str | None], value: object) -> None:
    if value is not None and value not in SIZES:
        raise InvalidRequestError("size", value, _one_of(SIZES) + ", or leave it unset")


def _check_image_urls(_: object, __: attrs.Attribute[tuple[str, ...]], value: object) -> None:
    if not isinstance(value, tuple):
        raise InvalidRequestError("image_urls", value, "a list of absolute http(s) URLs")
    if len(value) > MAX_IMAGE_URLS:
        raise InvalidRequestError(
            "image_urls", f"{len(value)} URLs", f"at most {MAX_IMAGE_URLS} reference images"
        )
    for url in value:
        if not _is_absolute_http_url(url):
            raise InvalidRequestError("image_urls", url, "each item an absolute http(s) URL")


def _is_absolute_http_url(url: object) -> bool:
    if not isinstance(url, str):
        return False
    try:
        parsed = yarl.URL(url)
    except (ValueError, TypeError):
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.host)


def _default_model_if_none(value: object) -> object:
    """None stands for the default model, so optional settings can be passed through as they are."""
    return DEFAULT_MODEL if value is None else value


@attrs.frozen
class ImageRequest:
    """One image to generate, validated at construction.

    ``model`` is one of the five documented models (None: the default),
    ``resolution`` one of
    ``1k``/``2k``/``4k`` (any case, stored lower case), ``size`` one of the ten
    aspect ratios, and ``image_urls`` at most six absolute http(s) URLs. A bad
    value raises ``InvalidRequestError`` naming the field and what is allowed.
    """

    prompt: str = attrs.field(validator=_check_prompt)
    model: str = attrs.field(
        default=DEFAULT_MODEL, converter=_default_model_if_none, validator=_check_model
    )
    resolution: str | None = attrs.field(
        default=None, converter=_lower_if_str, validator=_check_resolution
    )
    size: str | None = attrs.field(default=None, validator=_check_size)
    image_urls: tuple[str, ...] = attrs.field(
        default=(), converter=_tuple_of_urls, validator=_check_image_urls
    )

    def to_payload(self) -> dict[str, Any]:
        """The JSON body of the create call: optional fields are left out when unset."""
        body: dict[str, Any] = {"model": self.model, "prompt": self.prompt}
        if self.resolution is not None:
            body["resolution"] = self.resolution
        if self.size is not None:
            body["size"] = self.size
        if self.image_urls:
            body["image_urls"] = list(self.image_urls)
        return body

    def ignored_settings(self) -> tuple[str, ...]:
        """Warnings for settings the service documents it ignores here (the request stays valid).

        Today one: a ``resolution`` for the basic ``nano-banana`` model, which
        always answers at its own size. The request is sent as it is.
        """
        if self.resolution is None or self.model not in IGNORES_RESOLUTION:
            return ()
        return (
            f"resolution {self.resolution} is ignored by model {self.model} (the service "
            "honours it only for the nano-banana-2 and nano-banana-pro families); "
            "the requests are sent as they are",
        )


def as_request(item: object) -> ImageRequest:
    """An ImageRequest as given, or one built from a bare prompt with the default model.

    Anything else is bad input: ``InvalidRequestError``, before anything is sent.
    """
    if isinstance(item, ImageRequest):
        return item
    if isinstance(item, str):
        return ImageRequest(prompt=item)
    raise InvalidRequestError("input", item, "an ImageRequest or a prompt string")


class TaskStatus(enum.StrEnum):
    """Where a task is in its life. ``UNKNOWN`` stands for a status the SDK does not know yet."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    UNKNOWN = "unknown"

    @property
    def is_terminal(self) -> bool:
        """True for ``completed`` and ``failed``: polling stops there."""
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED)


_STATUS_SPELLINGS: Mapping[str, TaskStatus] = {
    "queued": TaskStatus.QUEUED,
    "pending": TaskStatus.QUEUED,
    "processing": TaskStatus.PROCESSING,
    "running": TaskStatus.PROCESSING,
    "in_progress": TaskStatus.PROCESSING,
    "completed": TaskStatus.COMPLETED,
    "succeeded": TaskStatus.COMPLETED,
    "success": TaskStatus.COMPLETED,
    "failed": TaskStatus.FAILED,
    "error": TaskStatus.FAILED,
}


def validate_task_id(value: object) -> str:
    """Return ``value`` if it is a safe task id, else raise ``MalformedResponseError``.

    Ids become URL path segments and file names, so only ASCII letters,
    digits, ``-`` and ``_`` are accepted, at most 256 of them, and never a
    Windows device name. Anything else (``../x``, ``a/b``, control or
    bidirectional characters, percent escapes) is refused before any URL or
    path is built from it.
    """
    if not isinstance(value, str) or not value:
        raise MalformedResponseError(f"task id must be a non-empty string, got {_short(value)}")
    if len(value) > MAX_TASK_ID_LENGTH:
        raise MalformedResponseError(
            f"task id is {len(value)} characters long; at most {MAX_TASK_ID_LENGTH} are accepted"
        )
    if not _TASK_ID_PATTERN.fullmatch(value) or value.upper() in _WINDOWS_DEVICE_NAMES:
        raise MalformedResponseError(
            f"task id {_short(value)} is not safe to use in a URL or file name "
            "(allowed: ASCII letters, digits, '-' and '_')"
        )
    return value


def _short(value: object, limit: int = 60) -> str:
    return clean_text(repr(value), limit)


def _error_text(value: object) -> str | None:
    """The service's failure reason, whether it came as a string, an object or nothing."""
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, str):
        return clean_text(value, 500)
    if isinstance(value, Mapping):
        for key in ("message", "msg", "detail", "error"):
            inner = value.get(key)
            if isinstance(inner, str) and inner:
                code = value.get("code")
                if isinstance(code, (str, int)) and code != "":
                    return clean_text(f"{inner} [{code}]", 500)
                return clean_text(inner, 500)
        return _short(dict(value), 200)
    return _short(value, 200)


def _created(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if not 0 <= value <= _MAX_UNIX_TIME:
        return None
    return int(value)


@attrs.frozen
class Task:
    """A generation task as the service last reported it.

    ``status`` is normalised (case-insensitive; unknown values become
    ``TaskStatus.UNKNOWN`` and ``raw_status`` keeps what was sent). ``created``
    is Unix seconds, ``image_url`` is set once completed, ``error`` holds the
    failure reason once failed.
    """

    id: str
    status: TaskStatus
    model: str | None = None
    created: int | None = None
    image_url: str | None = None
    error: str | None = None
    raw_status: str | None = None

    @property
    def is_terminal(self) -> bool:
        """True once the task has completed or failed."""
        return self.status.is_terminal

    @property
    def created_at(self) -> datetime | None:
        """``created`` as an aware UTC datetime, when the service gave one."""
        return None if self.created is None else datetime.fromtimestamp(self.created, tz=UTC)

    @classmethod
    def from_response(cls, data: object, *, expected_id: str | None = None) -> Task:
        """Build a Task from a create or query answer, tolerating the documented quirks.

        Unknown fields and ``object`` are ignored; a completed task without an
        image URL, a missing or hostile id, or a non-object body raise
        ``MalformedResponseError``.
        """
        return task_from_answer(data, expected_id=expected_id)


def task_from_answer(data: object, *, expected_id: str | None, id_checked: bool = False) -> Task:
    """``Task.from_response``; ``id_checked`` says ``expected_id`` passed ``validate_task_id``.

    A status answer repeats the id it was asked about, so that id is not checked
    again on every poll.
    """
    if type(data) is not dict and not isinstance(data, Mapping):
        raise MalformedResponseError(
            f"expected a JSON object, got {type(data).__name__}", task_id=expected_id
        )
    get = data.get
    given = get("id", expected_id)
    if id_checked and given == expected_id and type(given) is str:
        task_id: str = given
    else:
        task_id = validate_task_id(given)
    raw = get("status")
    if isinstance(raw, str):
        raw_status = raw.strip().lower()
        status = _STATUS_SPELLINGS.get(raw_status, TaskStatus.UNKNOWN)
    else:
        raw_status = _short(raw)
        status = TaskStatus.UNKNOWN
    image_url = get("image_url")
    if image_url is not None and (not isinstance(image_url, str) or not image_url.strip()):
        image_url = None
    if status is TaskStatus.COMPLETED and image_url is None:
        raise MalformedResponseError(
            f"task {task_id} is completed but its answer has no image_url", task_id=task_id
        )
    error = _error_text(get("error"))
    if status is TaskStatus.FAILED and error is None:
        error = "the service gave no reason"
    model = get("model")
    created = get("created")
    return Task(
        id=task_id,
        status=status,
        model=model if isinstance(model, str) else None,
        created=None if created is None else _created(created),
        image_url=image_url,
        error=error,
        raw_status=raw_status,
    )


class ResultFetcher(Protocol):
    """What an ImageResult needs from its client: fetching the image bytes or saving them."""

    async def read_image(self, task: Task) -> bytes: ...

    async def save_image(
        self, task: Task, destination: str | PathLike[str], *, overwrite: bool
    ) -> Path: ...


@attrs.frozen
class ImageResult:
    """A completed task's image, ready to read into memory or save to disk.

    The image lives on the service's file host for about 24 hours; read or
    save it promptly. The result keeps a reference to its client, so use it
    before the client is closed.
    """

    task: Task
    _fetcher: ResultFetcher = attrs.field(repr=False, eq=False, alias="fetcher")

    @property
    def url(self) -> str:
        """Where the file host serves the image (expires about 24 h after completion)."""
        assert self.task.image_url is not None
        return self.task.image_url

    async def read(self) -> bytes:
        """Download the image into memory (size-capped) and return its bytes."""
        return await self._fetcher.read_image(self.task)

    async def save(self, destination: str | PathLike[str], *, overwrite: bool = False) -> Path:
        """Stream the image to disk atomically and return the file's path.

        ``destination`` is a folder (existing, or written with a trailing
        slash), where the file is named after the task id with the extension
        of the image's real type; or a file path, used as given. An existing
        file is never replaced unless ``overwrite=True``.
        """
        return await self._fetcher.save_image(self.task, destination, overwrite=overwrite)


@attrs.frozen
class Outcome:
    """The result of one input of ``generate_many``: exactly one per input.

    ``request`` is the ImageRequest it answers (None only when the input could
    not be made into one; ``error`` then says why), ``index`` the input's
    position, ``task`` the final Task (None if it never got an id), ``path``
    where the image was saved, ``data`` the image bytes when not saved to
    disk, and ``error`` what went wrong, if anything. ``resumed_from`` is the
    journal state a rerun found the input in (``"saved"``, ``"submitted"``,
    ...), or None when the input started fresh.
    """

    request: ImageRequest | None
    index: int
    task: Task | None = None
    path: Path | None = None
    data: bytes | None = attrs.field(default=None, repr=False)
    error: NanoBananaError | None = None
    resumed_from: str | None = None

    @property
    def ok(self) -> bool:
        """True when the image was produced (and saved or downloaded, when asked)."""
        return self.error is None
