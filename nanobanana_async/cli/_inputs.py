"""Reading prompt files for ``nanobanana run``: text, JSON Lines or standard input.

Lines are read lazily, so a file of a million prompts is never held in
memory. A line that cannot be made into a request becomes a ``BadLine``
carrying its line number and reason; the batch reports it and goes on.
Input that is not UTF-8 text (a bad byte, a NUL byte) is not a bad line
but the wrong file: ``PromptFileError`` names its first bad line.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import os
import re
import sys
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO, TypeVar, cast

import anyio
import attrs

from nanobanana_async import ImageRequest, InvalidRequestError, NanoBananaError, request_fingerprint

__all__ = [
    "BadLine",
    "PromptFileError",
    "PromptSource",
    "count_prompts",
    "identified",
    "read_in_thread",
    "read_prompts",
]

T = TypeVar("T")

_FIELDS = ("prompt", "model", "resolution", "size", "image_urls")
#: Input is decoded with errors="surrogateescape": a byte that is not UTF-8 becomes
#: U+DC80..U+DCFF, so it is found in its line instead of failing a whole read chunk.
_NOT_TEXT = re.compile("[\x00\udc80-\udcff]")


class PromptFileError(NanoBananaError, ValueError):
    """The prompt input is not UTF-8 text; the message names its first bad line."""


@attrs.frozen
class BadLine:
    """An input line that could not become a request, with its text (for the manifest)."""

    line: int
    reason: str
    text: str = ""


@attrs.frozen
class PromptSource:
    """Where prompts come from and the defaults applied to every line."""

    path: str
    model: str | None = None
    resolution: str | None = None
    size: str | None = None

    @property
    def is_jsonl(self) -> bool:
        """True for ``.jsonl`` / ``.ndjson`` files: one JSON object a line."""
        return self.path.lower().endswith((".jsonl", ".ndjson"))


def read_prompts(source: PromptSource) -> Iterator[tuple[int, ImageRequest | BadLine]]:
    """Yield ``(line number, request or BadLine)`` per meaningful input line, in order.

    Raises ``PromptFileError`` on reaching a line that is not UTF-8 text: standard
    input cannot be checked beforehand, so this is where a bad byte on it is found.
    """
    if source.path == "-":
        # Read as UTF-8 whatever the locale says, through a descriptor of its own: a read
        # blocked on a silent pipe must not hold sys.stdin's lock when the process exits.
        raw = open(os.dup(sys.stdin.fileno()), "rb")  # noqa: SIM115 - closed by the wrapper
        with io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape") as stdin:
            yield from _parse(_text_lines(stdin, "standard input"), source)
        return
    with _open_text(source.path) as handle:
        yield from _parse(_text_lines(handle, f"prompt file {source.path}"), source)


def count_prompts(source: PromptSource) -> int | None:
    """How many lines may hold a prompt (for the progress bar); None for standard input.

    Reading the file also proves it is UTF-8 text (else ``PromptFileError``), so
    the CLI calls this once, before it creates anything.
    """
    if source.path == "-":
        return None
    with _open_text(source.path) as handle:
        lines = _text_lines(handle, f"prompt file {source.path}")
        return sum(1 for _number, raw in lines if _meaningful(raw.strip(), source.is_jsonl))


def _open_text(path: str) -> TextIO:
    return Path(path).open(encoding="utf-8-sig", errors="surrogateescape")


def _text_lines(handle: TextIO, name: str) -> Iterator[tuple[int, str]]:
    """Number the lines of ``handle``; raise ``PromptFileError`` at the first that is not text."""
    for number, line in enumerate(handle, start=1):
        bad = _NOT_TEXT.search(line)
        if bad is not None:
            char = bad.group()
            what = (
                "a NUL byte (a binary file?)"
                if char == "\x00"
                else f"the byte 0x{ord(char) - 0xDC00:02x}"
            )
            raise PromptFileError(f"{name} is not UTF-8 text: line {number} has {what}")
        yield number, line


def _meaningful(text: str, is_jsonl: bool) -> bool:
    return bool(text) and not (text.startswith("#") and not is_jsonl)


def _parse(
    lines: Iterator[tuple[int, str]], source: PromptSource
) -> Iterator[tuple[int, ImageRequest | BadLine]]:
    for number, raw in lines:
        text = raw.strip()
        if not _meaningful(text, source.is_jsonl):
            continue
        try:
            yield number, _request_from(text, source)
        except InvalidRequestError as exc:
            yield number, BadLine(number, str(exc), text)
        except ValueError as exc:
            yield number, BadLine(number, f"not a JSON object: {exc}", text)


def _request_from(text: str, source: PromptSource) -> ImageRequest:
    fields: dict[str, Any] = {
        "model": source.model,
        "resolution": source.resolution,
        "size": source.size,
    }
    if not source.is_jsonl:
        return ImageRequest(prompt=text, **fields)
    data = json.loads(text)
    if not isinstance(data, dict):
        raise InvalidRequestError("line", data, "a JSON object with a 'prompt' field")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise InvalidRequestError("field", unknown[0], "allowed fields: " + ", ".join(_FIELDS))
    if "prompt" not in data:
        raise InvalidRequestError("prompt", None, "every line needs a non-empty 'prompt'")
    fields.update(data)
    return ImageRequest(**fields)


async def read_in_thread(items: Iterator[T], *, ahead: int = 256) -> AsyncIterator[T]:
    """Pull a blocking iterator (standard input) in a thread of its own, ``ahead`` items ahead.

    A pipe whose writer is slow or silent must not freeze the event loop: the
    jobs in flight go on, and Ctrl-C is heard. The thread is a daemon on
    purpose: a read blocked on a silent pipe cannot be interrupted, and must
    not keep the process alive once the run is over. It stops on its own at
    the end of the input, or when handing over fails because the run is over.
    An exception raised by ``items`` is raised here, in order.
    """
    loop = asyncio.get_running_loop()
    send, receive = anyio.create_memory_object_stream[tuple[T | None, Exception | None]](
        max_buffer_size=math.inf
    )
    room = threading.Semaphore(ahead)  # bounds the buffer: one permit per item in it

    def hand_over(message: tuple[T | None, Exception | None]) -> None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            send.send_nowait(message)

    def pump() -> None:
        try:
            try:
                for item in items:
                    room.acquire()
                    loop.call_soon_threadsafe(hand_over, (item, None))
            except Exception as exc:  # the input's own error: the consumer raises it
                loop.call_soon_threadsafe(hand_over, (None, exc))
            loop.call_soon_threadsafe(send.close)
        except RuntimeError:
            return  # the event loop is closed: the run is over, stop reading

    threading.Thread(target=pump, name="nanobanana-stdin", daemon=True).start()
    with receive:
        async for item, error in receive:
            room.release()
            if error is not None:
                raise error
            yield cast(T, item)


def identified(
    lines: Iterable[tuple[int, ImageRequest | BadLine]],
) -> Iterator[tuple[int, ImageRequest | BadLine, str, int]]:
    """Each line with what the journal knows its input by: fingerprint and occurrence.

    Counted in input order, as a batch counts them, so the manifest and the
    dry run look each input up exactly as the run does. A ``BadLine`` gets
    ``("", 0)``.
    """
    occurrences: dict[str, int] = {}
    for line, item in lines:
        if isinstance(item, BadLine):
            yield line, item, "", 0
            continue
        fingerprint = request_fingerprint(item)
        occurrence = occurrences.get(fingerprint, 0)
        occurrences[fingerprint] = occurrence + 1
        yield line, item, fingerprint, occurrence
