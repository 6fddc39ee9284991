"""Reading prompt files for ``nanobanana run``: text, JSON Lines or standard input.

Lines are read lazily, so a file of a million prompts is never held in
memory. A line that cannot be made into a request becomes a ``BadLine``
carrying its line number and reason; the batch reports it and goes on.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import attrs

from .._errors import InvalidRequestError
from .._models import ImageRequest

__all__ = ["BadLine", "PromptSource", "count_prompts", "read_prompts"]

_FIELDS = ("prompt", "model", "resolution", "size", "image_urls")


@attrs.frozen
class BadLine:
    """An input line that could not become a request."""

    line: int
    reason: str


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
    """Yield ``(line number, request or BadLine)`` per meaningful input line, in order."""
    if source.path == "-":
        yield from _parse(sys.stdin, source)
        return
    with Path(source.path).open(encoding="utf-8-sig") as handle:
        yield from _parse(handle, source)


def count_prompts(source: PromptSource) -> int | None:
    """How many lines may hold a prompt (for the progress bar); None for standard input."""
    if source.path == "-":
        return None
    with Path(source.path).open(encoding="utf-8-sig") as handle:
        return sum(1 for raw in handle if _meaningful(raw.strip(), source))


def _meaningful(text: str, source: PromptSource) -> bool:
    return bool(text) and not (text.startswith("#") and not source.is_jsonl)


def _parse(handle: TextIO, source: PromptSource) -> Iterator[tuple[int, ImageRequest | BadLine]]:
    for number, raw in enumerate(handle, start=1):
        text = raw.strip()
        if not _meaningful(text, source):
            continue
        try:
            yield number, _request_from(text, source)
        except InvalidRequestError as exc:
            yield number, BadLine(number, str(exc))
        except ValueError as exc:
            yield number, BadLine(number, f"not a JSON object: {exc}")


def _request_from(text: str, source: PromptSource) -> ImageRequest:
    fields: dict[str, Any] = {
        key: value
        for key, value in (
            ("model", source.model),
            ("resolution", source.resolution),
            ("size", source.size),
        )
        if value is not None
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
