"""Small helpers shared by the tests: PNG headers, exception chains, clients, waiting, tasks."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import struct
import subprocess
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio

from nanobanana_async import FixedPolling, NanoBanana
from nanobanana_async.testing import Simulator


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (asserting it is a complete PNG)."""
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), data[:16]
    assert data[12:16] == b"IHDR"
    assert data.endswith(b"IEND\xaeB`\x82")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """An 8-bit RGB PNG checked chunk by chunk (CRCs, one IDAT, Adler-32): width, height, rows.

    Each row keeps its leading filter byte.
    """
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, kinds, idat = 8, [], b""
    width = height = 0
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        payload = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + payload), kind
        kinds.append(kind)
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", payload[:10])
            assert (depth, colour) == (8, 2)
        elif kind == b"IDAT":
            idat += payload
        offset += 12 + length
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]
    raw = zlib.decompress(idat)  # checks the Adler-32 trailer too
    stride = 1 + 3 * width
    assert len(raw) == height * stride
    return width, height, [raw[y * stride : (y + 1) * stride] for y in range(height)]


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


def fast_client(sim: Simulator, **options: Any) -> NanoBanana:
    """A client on ``sim`` that polls every 20 ms and retries without waiting (override freely)."""
    from .conftest import FAST_RETRY

    settings: dict[str, Any] = {"polling": FixedPolling(0.02), "retry": FAST_RETRY}
    settings.update(options)
    return NanoBanana(api_key=sim.api_key, base_url=sim.base_url, **settings)


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (bounded) until ``condition()`` holds; for counters that have no event to wait on."""
    with anyio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110 - polling a counter, not an event
            await anyio.sleep(0.005)


_ASYNCIO_DIR = Path(asyncio.__file__).resolve().parent
_AIOHTTP_DIR = Path(aiohttp.__file__).resolve().parent


@functools.cache
def _in_server_plumbing(filename: str) -> bool:
    path = Path(filename).resolve()
    return path.is_relative_to(_AIOHTTP_DIR) or path.is_relative_to(_ASYNCIO_DIR)


def sdk_tasks() -> set[asyncio.Task[Any]]:
    """Live tasks of the test and the SDK.

    Left out: tasks whose coroutine is aiohttp's or asyncio's own, such as the
    simulator's request handlers and the loop's accepts of new connections.
    """
    tasks = set()
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        if code is None or not _in_server_plumbing(code.co_filename):
            tasks.add(task)
    return tasks


def part_files(folder: Path) -> list[str]:
    """Temporary ``*.part`` files in ``folder`` (hidden ones included)."""
    return sorted(name for name in os.listdir(folder) if name.endswith(".part"))


def stop_process(process: subprocess.Popen[Any]) -> None:
    """Stop a process this test started (by its own handle): terminate, then kill if it lingers."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


_RETRYING = re.compile(r"(\w+) attempt (\d+) failed \((\w+)\); retrying in ([\d.]+) s")


def retries_logged(
    records: list[logging.LogRecord], operation: str | None = None
) -> list[tuple[str, int, str, float]]:
    """(operation, attempt, error type, delay) of every retry the SDK logged at DEBUG.

    Each retry is logged once, as it is decided, so this is the client's own
    account of how many times it retried and why.
    """
    found = []
    for record in records:
        match = _RETRYING.search(record.getMessage())
        if match and (operation is None or match[1] == operation):
            found.append((match[1], int(match[2]), match[3], float(match[4])))
    return found
