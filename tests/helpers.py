"""Small helpers shared by the tests: reading PNG headers and walking exception chains."""

from __future__ import annotations

import struct
from collections.abc import Iterator


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (asserting it is a complete PNG)."""
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), data[:16]
    assert data[12:16] == b"IHDR"
    assert data.endswith(b"IEND\xaeB`\x82")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def exception_chain(error: BaseException) -> Iterator[BaseException]:
    """The error and every cause or context chained behind it."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def everything_said_by(error: BaseException) -> str:
    """str, repr and attribute values of an error and its whole chain, as one text."""
    parts: list[str] = []
    for item in exception_chain(error):
        parts += [str(item), repr(item), repr(item.args)]
        for name in dir(item):
            if name.startswith("__"):
                continue
            try:
                parts.append(repr(getattr(item, name)))
            except Exception as exc:  # a property that cannot be read is fine
                parts.append(type(exc).__name__)
    return "\n".join(parts)
