"""Downloads carry no credentials, stay bounded and save atomically.

Fault cases 19-29 of docs/reliability.md.

An image is fetched without the key or a cookie, over https (plain http only on
loopback or by opt-in), never past the size cap, restarted from byte 0 when cut
short, and written to a temp file that is renamed into place; an expired URL gets
one re-poll for a fresh one, never a new create.

The simulator's file host plays the CDN. Where a case needs a host the
simulator does not have (a third host behind a CDN redirect, an endless
stream), a tiny aiohttp.web app on 127.0.0.1 plays it and records what it
received.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import socket
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import attrs
import pytest
import yarl
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from nanobanana_async import (
    Backoff,
    DestinationExistsError,
    DownloadError,
    DownloadTimeoutError,
    ImageRequest,
    ImageResult,
    NanoBanana,
    ResultExpiredError,
    RetryPolicy,
    Task,
    TaskStatus,
    Timeouts,
    UnsafeURLError,
)
from nanobanana_async._http import DownloadBody
from nanobanana_async._urls import check_download_url, is_loopback
from nanobanana_async.testing import (
    LatencyProfile,
    Redirect,
    Respond,
    Simulator,
    Slow,
    Truncate,
)

from .conftest import FAST_RETRY, SENTINEL_KEY
from .helpers import fast_client, png_size, wait_until

_DOWNLOAD_RETRY = re.compile(r"download attempt (\d+) failed \((\w+)\)")


@pytest.fixture
async def fast_sim(sim: Simulator) -> Simulator:
    """The shared simulator with jobs that are done at their first poll."""
    sim.latency = LatencyProfile.instant()
    return sim


def _files(folder: Path) -> list[str]:
    return sorted(os.listdir(folder)) if folder.exists() else []


def _parts(folder: Path) -> list[str]:
    return [name for name in _files(folder) if name.endswith(".part")]


def _download_retries(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The error type of every "download attempt N failed" DEBUG line, in order."""
    return [m[2] for r in caplog.records if (m := _DOWNLOAD_RETRY.search(r.getMessage()))]


# A host of our own on loopback: the "third host" behind a CDN redirect.

_BLOCK = b"\0" * 65536


@attrs.define
class ThirdHost:
    """A recording web server: ``/hop`` redirects (setting a cookie), ``/img`` serves ``body``."""

    url: str = ""
    body: bytes = b""
    content_type: str = "image/png"
    requests: list[tuple[str, dict[str, str]]] = attrs.Factory(list)
    streamed: int = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, dict(request.headers)))
        if request.path == "/hop":
            response = web.Response(status=302, headers={"Location": "/img.png"})
            response.set_cookie("cdn_session", "abc123")
            return response
        if request.path in ("/img.png", "/fresh.png"):
            return web.Response(body=self.body, headers={"Content-Type": self.content_type})
        if request.path == "/endless.png":
            return await self._endless(request)
        return web.Response(status=404)

    async def _endless(self, request: web.Request) -> web.StreamResponse:
        """A PNG signature then 200 MB of zeros, chunked (no Content-Length), written lazily."""
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        await response.prepare(request)
        try:
            await response.write(b"\x89PNG\r\n\x1a\n")
            for _ in range(3200):
                await response.write(_BLOCK)
                self.streamed += len(_BLOCK)
        except ConnectionError:
            pass  # the client hung up, as it should
        return response

    def header_values(self) -> list[str]:
        return [value for _, headers in self.requests for value in headers.values()]


@pytest.fixture
async def third_host() -> AsyncIterator[ThirdHost]:
    host = ThirdHost()
    server = web.Server(host.handle, access_log=None)  # type: ignore[arg-type]
    runner = web.ServerRunner(server, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        yield host
    finally:
        await runner.cleanup()


class _Resolver(AbstractResolver):
    """Resolves every name to 127.0.0.1 (no real DNS) and records the lookups."""

    def __init__(self) -> None:
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        return None


# Case 19: no Authorization, Cookie or key reaches a file host, through any redirect.


async def test_no_credentials_reach_the_file_host_or_a_third_host_behind_a_redirect(
    client: NanoBanana, fast_sim: Simulator, third_host: ThirdHost, tmp_path: Path
) -> None:
    """Case 19: API -> CDN -> third host (which sets a cookie): no Authorization, Cookie or key."""
    sim = fast_sim
    result = await client.generate("a fox")
    third_host.body = await result.read()
    sim.faults.push("download", Redirect(302, f"{third_host.url}/hop"))
    sim.faults.push("download", Redirect(307, f"{third_host.url}/hop"))
    path = await result.save(tmp_path)
    data = await result.read()

    assert path.read_bytes() == third_host.body == data
    assert [p for p, _ in third_host.requests] == ["/hop", "/img.png"] * 2
    for _, headers in third_host.requests:
        lowered = {name.lower() for name in headers}
        assert "authorization" not in lowered
        assert "cookie" not in lowered  # not even the CDN's own cookie
        assert "proxy-authorization" not in lowered
        assert headers.get("Accept-Encoding") == "identity"
    assert not any(SENTINEL_KEY in value for value in third_host.header_values())
    file_requests = [r for r in sim.requests if r.origin == "files"]
    assert len(file_requests) == 3
    assert not any(r.authorization or r.cookie for r in file_requests)
    assert sim.counters.file_host_auth_headers == 0
    assert all(r.authorization for r in sim.requests if r.origin == "api")


# Case 20: an http image URL or https->http hop is refused, unless loopback or opted in.


async def test_a_redirect_to_plain_http_on_a_remote_host_is_refused_before_fetching(
    fast_sim: Simulator, tmp_path: Path
) -> None:
    """Case 20: CDN -> http://cdn.example: UnsafeURLError, no DNS lookup, nothing fetched."""
    sim = fast_sim
    resolver = _Resolver()
    async with fast_client(sim, resolver=resolver) as client:
        result = await client.generate("a fox")
        sim.faults.push("download", Redirect(302, "http://cdn.example/x.png"))
        with pytest.raises(UnsafeURLError, match="plain http") as caught:
            await result.save(tmp_path)
    assert caught.value.task_id == result.task.id
    assert resolver.lookups == []  # refused before even resolving the name
    assert sim.counters.downloads == 1
    assert sim.counters.polls == 1  # no re-poll: this is not an expired URL
    assert _files(tmp_path) == []


def test_an_https_to_http_hop_is_refused_even_to_loopback() -> None:
    """Case 20: the redirect rule itself: https -> http is refused; https -> https is kept."""
    http = NanoBanana(api_key="k")._http
    secure = yarl.URL("https://cdn.example/a.png")
    for location in ("http://127.0.0.1:8080/a.png", "http://cdn.example/a.png"):
        with pytest.raises(UnsafeURLError, match="https to plain http"):
            http._next_hop(secure, location, "t1")
    assert http._next_hop(secure, "//other.example/b.png", "t1") == yarl.URL(
        "https://other.example/b.png"
    )
    assert http._next_hop(secure, "/b.png", "t1") == yarl.URL("https://cdn.example/b.png")
    with pytest.raises(UnsafeURLError):
        http._next_hop(secure, "file:///etc/passwd", "t1")


def test_plain_http_is_allowed_to_loopback_hosts_only_unless_opted_in() -> None:
    """Case 20: loopback names and addresses may use http; anything else needs the opt-in."""
    for host in ("localhost", "127.0.0.1", "127.1.2.3", "[::1]"):
        assert is_loopback(yarl.URL(f"http://{host}/x.png").host)
        check_download_url(f"http://{host}/x.png", allow_insecure_http=False)
    for host in ("cdn.example", "10.0.0.1", "localhost.evil.example", "0.0.0.0"):
        with pytest.raises(UnsafeURLError):
            check_download_url(f"http://{host}/x.png", allow_insecure_http=False)
        assert check_download_url(f"http://{host}/x.png", allow_insecure_http=True).host == host


async def test_plain_http_to_a_named_host_is_fetched_only_with_the_opt_in(
    sim: Simulator, third_host: ThirdHost
) -> None:
    """Case 20: http://cdn.example (resolved to loopback by a test resolver) needs the opt-in."""
    third_host.body = b"\x89PNG\r\n\x1a\n" + b"\0" * 64 + b"IEND\xaeB`\x82"
    port = yarl.URL(third_host.url).port
    task = Task(
        id="abc", status=TaskStatus.COMPLETED, image_url=f"http://cdn.example:{port}/img.png"
    )
    refusing = _Resolver()
    async with fast_client(sim, resolver=refusing) as client:
        with pytest.raises(UnsafeURLError):
            await ImageResult(task, fetcher=client).read()
    assert refusing.lookups == []
    assert third_host.requests == []

    opted_in = _Resolver()
    async with fast_client(sim, resolver=opted_in, allow_insecure_http=True) as client:
        data = await ImageResult(task, fetcher=client).read()
    assert data == third_host.body
    assert opted_in.lookups == ["cdn.example"]
    [(_, headers)] = third_host.requests
    assert headers["Host"] == f"cdn.example:{port}"
    assert "Authorization" not in headers
    assert sim.requests == []


# Cases 21-22: a body cut short (with or without a length) is restarted; never a partial file.


@attrs.define
class _Observer:
    """Lists a folder as fast as it can; checks every non-temp file it sees is a whole PNG."""

    folder: Path
    seen: set[str] = attrs.Factory(set)
    partial: list[str] = attrs.Factory(list)

    async def watch(self) -> None:
        while True:
            for name in _files(self.folder):
                self.seen.add(name)
                if name.startswith(".") and name.endswith(".part"):
                    continue
                try:
                    png_size((self.folder / name).read_bytes())
                except FileNotFoundError:
                    continue
                except AssertionError:
                    self.partial.append(name)
            await anyio.sleep(0.001)


@pytest.mark.parametrize("content_length", [True, False], ids=["with-length", "close-delimited"])
async def test_a_truncated_download_is_restarted_and_no_partial_file_is_ever_visible(
    client: NanoBanana,
    fast_sim: Simulator,
    tmp_path: Path,
    debug_logs: pytest.LogCaptureFixture,
    content_length: bool,
) -> None:
    """Cases 21-22: cut short (with or without length): restarted; the target is never partial."""
    sim = fast_sim
    result = await client.generate("a fox")
    png = await result.read()
    sim.faults.push("download", Truncate(after_bytes=len(png) // 2, content_length=content_length))
    sim.faults.push("download", Slow(bytes_per_second=len(png) / 0.3))
    folder = tmp_path / "out"
    folder.mkdir()
    observer = _Observer(folder)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(observer.watch)
            path = await result.save(folder)
            await anyio.sleep(0.01)
            group.cancel_scope.cancel()

    assert path.read_bytes() == png
    assert observer.partial == []
    assert any(name.endswith(".part") for name in observer.seen)  # it did watch mid-download
    assert _files(folder) == [path.name]
    # Which layer caught it: the transport when the length was announced, the PNG trailer if not.
    assert _download_retries(debug_logs) == ["NetworkError" if content_length else "DownloadError"]
    assert sim.counters.downloads == 3  # the read, the cut one, the restart
    assert sim.counters.downloads_completed == 2


async def test_a_png_missing_its_trailer_is_caught_even_when_the_length_matches(
    client: NanoBanana, fast_sim: Simulator, tmp_path: Path
) -> None:
    """Case 22: the transport says "complete" but the PNG has no IEND: restarted from byte 0."""
    sim = fast_sim
    result = await client.generate("a fox")
    png = await result.read()
    sim.faults.push("download", Respond(200, png[:-12], content_type="image/png"))
    path = await result.save(tmp_path)
    assert path.read_bytes() == png
    assert sim.counters.downloads == 3


def _jpeg(size: int = 2000, *, complete: bool = True) -> bytes:
    body = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * (size // 256)
    return body + (b"\xff\xd9" if complete else b"")


def _webp(size: int = 2000, *, declared_extra: int = 0) -> bytes:
    payload = b"VP8 " + bytes(size)
    return b"RIFF" + (len(payload) + 4 + declared_extra).to_bytes(4, "little") + b"WEBP" + payload


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (_jpeg(complete=False), "image/jpeg"),
        (_webp(declared_extra=500), "image/webp"),
        (b"\x89PNG\r\n\x1a\n" + bytes(500), "image/png"),
    ],
    ids=["jpeg-no-FFD9", "webp-short", "png-no-IEND"],
)
async def test_an_image_that_ends_early_is_never_saved(
    client: NanoBanana, fast_sim: Simulator, tmp_path: Path, body: bytes, content_type: str
) -> None:
    """Case 22: JPEG without FFD9, WebP shorter than its RIFF size, PNG without IEND: refused."""
    sim = fast_sim
    result = await client.generate("a fox")
    attempts = FAST_RETRY.download_attempts
    for _ in range(attempts):
        sim.faults.push("download", Respond(200, body, content_type=content_type))
    with pytest.raises(DownloadError, match="ended early") as caught:
        await result.save(tmp_path)
    assert caught.value.task_id == result.task.id
    assert sim.counters.downloads == attempts
    assert _files(tmp_path) == []


# Case 23: an oversize image is refused at the cap and memory stays flat (a Content-Length
# over the cap is refused before the body: see also
# tests/test_download.py::test_an_image_over_the_size_cap_is_refused_before_its_body_is_read)


async def test_an_announced_oversize_image_is_refused_without_reading_its_slow_body(
    tmp_path: Path,
) -> None:
    """Case 23: Content-Length over the cap at 100 B/s: refused at once, nothing written."""
    async with (
        Simulator(image_long_side=256, latency=LatencyProfile.instant()) as sim,
        fast_client(sim, max_image_bytes=10_000) as client,
    ):
        task = await client.submit("a fox")
        done = await client.wait(task)
        sim.faults.push("download", Slow(bytes_per_second=100))
        started = time.monotonic()
        with anyio.fail_after(5), pytest.raises(DownloadError, match="10000-byte limit"):
            await ImageResult(done, fetcher=client).save(tmp_path)
        elapsed = time.monotonic() - started
    assert elapsed < 1.0
    assert sim.counters.downloads == 1  # over the cap is final, not retried
    assert sim.counters.downloads_completed == 0
    assert _files(tmp_path) == []


@pytest.fixture
def chunks_taken(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the body chunks the SDK took from every download stream."""
    taken: list[int] = []
    original = DownloadBody.__anext__

    async def counting(self: DownloadBody) -> bytes:
        chunk = await original(self)
        taken.append(len(chunk))
        return chunk

    monkeypatch.setattr(DownloadBody, "__anext__", counting)
    return taken


async def test_a_stream_without_length_stops_at_the_cap_with_flat_memory(
    sim: Simulator, third_host: ThirdHost, tmp_path: Path, chunks_taken: list[int]
) -> None:
    """Case 23: 200 MB with no Content-Length stops just past a 1 MB cap; memory stays flat."""
    cap = 1 << 20
    task = Task(id="big", status=TaskStatus.COMPLETED, image_url=f"{third_host.url}/endless.png")
    async with fast_client(sim, max_image_bytes=cap) as client:
        tracemalloc.start()
        try:
            with anyio.fail_after(10), pytest.raises(DownloadError, match="limit") as caught:
                await ImageResult(task, fetcher=client).save(tmp_path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert "download stopped" in str(caught.value)
    assert cap < sum(chunks_taken) <= cap + 65536  # at most one read past the cap
    assert peak < 8 * cap  # the simulator, aiohttp's buffers and ours: far below 200 MB
    await anyio.sleep(0.1)
    assert third_host.streamed < 32 * cap  # the sender was stopped, not drained
    assert len(third_host.requests) == 1  # over the cap is final, not retried
    assert _files(tmp_path) == []


async def test_a_stream_without_length_takes_at_most_cap_plus_one_bytes(
    chunks_taken: list[int],
) -> None:
    """Case 23: a close-delimited body over the cap is read no further than cap + 1 bytes."""
    cap = 100_000
    async with (
        Simulator(image_long_side=512, latency=LatencyProfile.instant()) as sim,
        fast_client(sim, max_image_bytes=cap) as client,
    ):
        result = await client.generate("a big fox")
        sim.faults.push("download", Truncate(after_bytes=1 << 30, content_length=False))
        with pytest.raises(DownloadError, match="limit"):
            await result.read()
    assert sum(chunks_taken) <= cap + 1


async def test_a_close_delimited_body_over_the_cap_is_refused_cleanly(
    tmp_path: Path, chunks_taken: list[int]
) -> None:
    """Case 23: the simulator's whole image, close-delimited, over a 100 KB cap: a clear error."""
    cap = 100_000
    async with (
        Simulator(image_long_side=512, latency=LatencyProfile.instant()) as sim,
        fast_client(sim, max_image_bytes=cap) as client,
    ):
        result = await client.generate("a big fox")
        sim.faults.push("download", Truncate(after_bytes=1 << 30, content_length=False))
        with pytest.raises(DownloadError, match=f"over the {cap}-byte limit; download stopped"):
            await result.save(tmp_path)
    assert sum(chunks_taken) <= cap + 65536
    assert sim.counters.downloads == 1
    assert _files(tmp_path) == []


# Case 24: a gzip bomb is read no further than the size cap and fails clearly.


@functools.cache
def _gzip_bomb(megabytes: int) -> bytes:
    """``megabytes`` MB of zeros, gzip-compressed block by block (never all in memory)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [packer.compress(b"\0" * (1 << 20)) for _ in range(megabytes)]
    return b"".join(parts) + packer.flush()


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "GZIP"])
async def test_a_compressed_body_is_refused_unread(
    client: NanoBanana,
    fast_sim: Simulator,
    tmp_path: Path,
    chunks_taken: list[int],
    encoding: str,
) -> None:
    """Case 24: a 64 MB-zeros gzip bomb labelled image/png: refused before a byte is read."""
    sim = fast_sim
    bomb = _gzip_bomb(64)
    assert len(bomb) < 1 << 20
    result = await client.generate("a fox")
    sim.faults.push(
        "download",
        Respond(200, bomb, headers={"Content-Encoding": encoding}, content_type="image/png"),
    )
    tracemalloc.start()
    try:
        with pytest.raises(DownloadError, match="encoded body") as caught:
            await result.save(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.task_id == result.task.id
    assert sum(chunks_taken) == 0
    assert peak < 16 << 20  # nothing near the 64 MB it would inflate to
    assert sim.counters.downloads == 1  # not retried
    assert _files(tmp_path) == []


async def test_a_gzip_stream_without_an_encoding_header_is_not_an_image(
    client: NanoBanana, fast_sim: Simulator, tmp_path: Path
) -> None:
    """Case 24: the same bomb sent as raw bytes: magic bytes say it is not an image."""
    sim = fast_sim
    result = await client.generate("a fox")
    sim.faults.push("download", Respond(200, _gzip_bomb(8), content_type="image/png"))
    with pytest.raises(DownloadError, match="did not send a PNG, JPEG or WebP"):
        await result.save(tmp_path)
    assert sim.counters.downloads == 1
    assert _files(tmp_path) == []


# Case 25: the magic bytes, not the label, decide the type and the extension (HTML labelled
# image/png, and a PNG labelled octet-stream, are covered by
# tests/test_download.py::test_html_labelled_as_png_is_refused_by_its_magic_bytes and
# ::test_a_png_labelled_octet_stream_is_saved_with_the_png_extension); other formats:


@pytest.mark.parametrize(
    ("body", "label", "extension"),
    [
        (_jpeg(), "application/octet-stream", ".jpg"),
        (_jpeg(), "image/png", ".jpg"),
        (_webp(), "application/octet-stream", ".webp"),
        (_webp(), "image/jpeg", ".webp"),
    ],
    ids=["jpeg-as-octet-stream", "jpeg-as-png", "webp-as-octet-stream", "webp-as-jpeg"],
)
async def test_magic_bytes_pick_the_extension_whatever_the_label(
    client: NanoBanana,
    fast_sim: Simulator,
    tmp_path: Path,
    body: bytes,
    label: str,
    extension: str,
) -> None:
    """Case 25: JPEG and WebP bytes are saved as .jpg and .webp, not as the URL or label say."""
    sim = fast_sim
    result = await client.generate("a fox")
    assert result.url.endswith(".png")
    sim.faults.push("download", Respond(200, body, content_type=label))
    path = await result.save(tmp_path)
    assert path.name == f"{result.task.id}{extension}"
    assert path.read_bytes() == body
    assert _files(tmp_path) == [path.name]
    assert sim.counters.downloads == 1


# Case 26: an expired URL gets one re-poll, then ResultExpiredError; never a new create.


@pytest.mark.parametrize("status", [403, 404, 410])
async def test_an_expired_url_gets_one_repoll_then_result_expired_and_no_new_create(
    client: NanoBanana, fast_sim: Simulator, tmp_path: Path, status: int
) -> None:
    """Case 26: 403/404/410 from the file host: one re-poll, then ResultExpiredError(id)."""
    sim = fast_sim
    result = await client.generate("a fox")
    polls = sim.counters.polls
    for _ in range(2):
        sim.faults.push("download", Respond(status, {"error": "expired"}))
    with pytest.raises(ResultExpiredError) as caught:
        await result.save(tmp_path)
    assert caught.value.task_id == result.task.id
    assert caught.value.status == status
    assert sim.counters.polls == polls + 1
    assert sim.counters.downloads == 2
    assert sim.counters.create_requests == 1
    assert sim.counters.creates == 1
    assert _files(tmp_path) == []


async def test_an_expired_url_recovers_when_the_repoll_gives_a_working_url(
    client: NanoBanana, fast_sim: Simulator, third_host: ThirdHost, tmp_path: Path
) -> None:
    """Case 26: the re-poll's fresh URL (another host here) is used and the save succeeds."""
    sim = fast_sim
    result = await client.generate("a fox")
    third_host.body = await result.read()
    sim.faults.push("download", Respond(410, {"error": "expired"}))
    sim.faults.push(
        "poll",
        Respond(
            200,
            {
                "id": result.task.id,
                "status": "completed",
                "image_url": f"{third_host.url}/fresh.png",
            },
        ),
    )
    path = await result.save(tmp_path)
    assert path.read_bytes() == third_host.body
    assert [p for p, _ in third_host.requests] == ["/fresh.png"]
    assert sim.counters.polls == 2  # the wait's poll and the one re-poll
    assert sim.counters.create_requests == 1


async def test_an_expired_url_in_a_batch_is_an_outcome_that_keeps_the_task(
    fast_sim: Simulator, tmp_path: Path
) -> None:
    """Case 26: in generate_many the expired outcome carries the task id and URL; 1 create."""
    sim = fast_sim
    async with fast_client(sim) as client:
        outcomes = [o async for o in client.generate_many(["a fox [expired]"], save_to=tmp_path)]
    [outcome] = outcomes
    assert isinstance(outcome.error, ResultExpiredError)
    assert outcome.task is not None
    assert outcome.task.id == outcome.error.task_id
    assert outcome.task.image_url == sim.image_url(outcome.task.id)
    assert sim.counters.create_requests == 1
    assert sim.counters.polls == 2
    assert _files(tmp_path) == []


# Case 27: a save that fails midway leaves no destination and no temp file behind.


async def test_cancelling_a_save_mid_download_leaves_no_file(
    client: NanoBanana, fast_sim: Simulator, tmp_path: Path
) -> None:
    """Case 27: cancelled mid-stream: no destination, no temp file; the server saw it stop."""
    sim = fast_sim
    result = await client.generate("a fox")
    png = await result.read()
    sim.faults.push("download", Slow(bytes_per_second=len(png) / 2.0))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(result.save, tmp_path)
            await wait_until(lambda: bool(_parts(tmp_path)) and sim.counters.downloads == 2)
            await anyio.sleep(0.2)
            group.cancel_scope.cancel()
    assert _files(tmp_path) == []
    assert sim.counters.downloads_completed == 1  # only the earlier read
    path = await result.save(tmp_path)  # the same result saves fine afterwards
    assert path.read_bytes() == png


@pytest.fixture
def disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make fsync fail with ENOSPC, as a full disk does.

    Tests run as root, so a read-only folder would not stop the writes; an
    injected error is the faithful way to fail mid-save here.
    """

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)


@pytest.mark.usefixtures("disk_full")
async def test_a_full_disk_mid_save_leaves_no_file_and_no_temp(
    client: NanoBanana, fast_sim: Simulator, tmp_path: Path
) -> None:
    """Case 27: ENOSPC while saving: the error surfaces, no destination and no temp file."""
    sim = fast_sim
    result = await client.generate("a fox")
    existing = tmp_path / "fox.png"
    existing.write_bytes(b"keep me")
    # Raised as the OSError itself today; a DownloadError that names the cause would do too.
    for destination, overwrite in ((existing, True), (tmp_path, False)):
        with pytest.raises((OSError, DownloadError)) as caught:
            await result.save(destination, overwrite=overwrite)
        error = caught.value
        cause = error if isinstance(error, OSError) else error.__cause__
        assert isinstance(cause, OSError)
        assert cause.errno == errno.ENOSPC
    assert _files(tmp_path) == ["fox.png"]
    assert existing.read_bytes() == b"keep me"  # unchanged
    assert sim.counters.downloads_completed == 2
    assert sim.counters.create_requests == 1


@pytest.mark.usefixtures("disk_full")
async def test_a_full_disk_in_a_batch_is_an_outcome_that_keeps_the_task(
    fast_sim: Simulator, tmp_path: Path
) -> None:
    """Case 27: in generate_many a failed save is an outcome with the task id and URL."""
    sim = fast_sim
    async with fast_client(sim) as client:
        outcomes = [o async for o in client.generate_many(["a fox", "a cat"], save_to=tmp_path)]
    assert len(outcomes) == 2
    for outcome in outcomes:
        assert outcome.error is not None
        assert outcome.task is not None
        assert outcome.task.image_url == sim.image_url(outcome.task.id)
    assert _parts(tmp_path) == []
    assert sim.counters.create_requests == 2


# Case 28: a stalled download is detected, retried, then DownloadTimeoutError; no leak.


async def test_a_stalled_download_is_retried_then_times_out_and_leaks_no_connection(
    fast_sim: Simulator, tmp_path: Path, debug_logs: pytest.LogCaptureFixture
) -> None:
    """Case 28: 1 byte/s: stalls hit the read timeout, are retried, then DownloadTimeoutError."""
    sim = fast_sim
    no_wait = Backoff(0.001, 0.01, 0.0)
    policy = RetryPolicy(
        download_timeout=0.5, download_backoff=no_wait, poll_backoff=no_wait, create_backoff=no_wait
    )
    async with fast_client(sim, timeouts=Timeouts(read=0.2), retry=policy) as client:
        result = await client.generate("a fox")
        for _ in range(10):
            sim.faults.push("download", Slow(bytes_per_second=1))
        started = time.monotonic()
        with anyio.fail_after(5), pytest.raises(TimeoutError) as caught:
            await result.save(tmp_path)
        elapsed = time.monotonic() - started
    assert isinstance(caught.value, DownloadTimeoutError)
    assert caught.value.task_id == result.task.id
    assert 0.5 <= elapsed < 1.5
    assert sim.counters.downloads >= 2
    assert _download_retries(debug_logs)[:1] == ["NetworkError"]
    assert sim.counters.downloads_completed == 0
    assert _files(tmp_path) == []
    await wait_until(lambda: sim.counters.open_connections == 0)


async def test_a_slow_but_steady_download_is_not_a_stall(
    fast_sim: Simulator, tmp_path: Path
) -> None:
    """Case 28: bytes keep coming (for longer than the read timeout in total): it completes."""
    sim = fast_sim
    async with fast_client(sim, timeouts=Timeouts(read=0.2)) as client:
        result = await client.generate("a fox")
        png = await result.read()
        sim.faults.push("download", Slow(bytes_per_second=len(png) / 0.6))
        path = await result.save(tmp_path)
    assert path.read_bytes() == png
    assert sim.counters.downloads == 2


# Case 29: a name clash never overwrites unless asked, and writes are atomic (an existing
# file is kept unless overwrite=True: covered by
# tests/test_download.py::test_saving_never_overwrites_an_existing_file_unless_asked)


async def test_two_concurrent_saves_to_one_path_give_one_file_and_one_clear_error(
    client: NanoBanana, fast_sim: Simulator, tmp_path: Path
) -> None:
    """Case 29: two saves race for one file name: one wins, the other DestinationExistsError."""
    sim = fast_sim
    first = await client.generate(ImageRequest(prompt="a fox", size="16:9"))
    second = await client.generate(ImageRequest(prompt="a cat", size="1:1"))
    target = tmp_path / "pet.png"
    results: list[Path | BaseException] = []

    async def save(result: ImageResult) -> None:
        try:
            results.append(await result.save(target))
        except DestinationExistsError as exc:
            results.append(exc)

    for _ in range(2):
        sim.faults.push("download", Slow(bytes_per_second=100_000))
    async with anyio.create_task_group() as group:
        group.start_soon(save, first)
        group.start_soon(save, second)
    [winner] = [r for r in results if isinstance(r, Path)]
    [loser] = [r for r in results if isinstance(r, DestinationExistsError)]
    assert winner == target
    assert isinstance(loser, FileExistsError)
    assert str(target) in str(loser)
    data = target.read_bytes()
    png_size(data)
    assert data in (await first.read(), await second.read())
    assert _files(tmp_path) == ["pet.png"]
    assert sim.counters.downloads_completed == 4


async def test_concurrent_overwrites_leave_one_whole_file(
    client: NanoBanana, fast_sim: Simulator, tmp_path: Path
) -> None:
    """Case 29: with overwrite=True racing saves both succeed and the file is always whole."""
    sim = fast_sim
    result = await client.generate("a fox")
    png = await result.read()
    (tmp_path / f"{result.task.id}.png").write_bytes(b"old")
    paths: list[Path] = []

    async def save() -> None:
        paths.append(await result.save(tmp_path, overwrite=True))

    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(save)
    assert len(set(paths)) == 1
    assert paths[0].read_bytes() == png
    assert _files(tmp_path) == [paths[0].name]
    assert sim.counters.downloads_completed == 4


async def test_saving_twice_into_a_folder_keeps_the_first_file(
    client: NanoBanana, fast_sim: Simulator, tmp_path: Path
) -> None:
    """Case 29: the second save of a task into the same folder is refused; nothing is lost."""
    sim = fast_sim
    result = await client.generate("a fox")
    path = await result.save(tmp_path)
    before = path.read_bytes()
    with pytest.raises(DestinationExistsError) as caught:
        await result.save(tmp_path)
    assert caught.value.task_id == result.task.id
    assert path.read_bytes() == before
    assert _files(tmp_path) == [path.name]
    assert sim.counters.downloads_completed == 2
