"""Downloads and saves: size cap, magic bytes, truncation, atomic no-clobber saves, URL safety."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from nanobanana_async import (
    DestinationExistsError,
    DownloadError,
    FixedPolling,
    ImageResult,
    NanoBanana,
    NetworkError,
    ResultExpiredError,
    Task,
    TaskStatus,
    UnsafeURLError,
)
from nanobanana_async.testing import LatencyProfile, Redirect, Respond, Simulator, Slow, Truncate

from .helpers import png_size


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


async def test_an_image_over_the_size_cap_is_refused_before_its_body_is_read(
    tmp_path: Path,
) -> None:
    """A Content-Length over the cap is refused at once: a 1 KB/s body is not waited for."""
    async with (
        Simulator(image_long_side=512, latency=LatencyProfile.instant()) as sim,
        NanoBanana(
            api_key=sim.api_key,
            base_url=sim.base_url,
            max_image_bytes=100_000,
            polling=FixedPolling(0.01),
        ) as client,
    ):
        result = await client.generate("a fox")
        sim.faults.push("download", Slow(bytes_per_second=1000))
        sim.faults.push("download", Slow(bytes_per_second=1000))
        with anyio.fail_after(5):
            with pytest.raises(DownloadError, match="100000-byte limit"):
                await result.save(tmp_path)
            with pytest.raises(DownloadError, match="100000-byte limit"):
                await result.read()
    assert sim.counters.downloads == 2
    assert sim.counters.downloads_completed == 0
    assert _files(tmp_path) == []


async def test_html_labelled_as_png_is_refused_by_its_magic_bytes(
    client: NanoBanana, sim: Simulator, tmp_path: Path
) -> None:
    """The bytes decide the type, not the Content-Type header."""
    result = await client.generate("a fox")
    sim.faults.push("download", Respond(200, b"<html>nope</html>", content_type="image/png"))
    with pytest.raises(DownloadError, match="did not send a PNG, JPEG or WebP"):
        await result.save(tmp_path)
    assert _files(tmp_path) == []


async def test_a_png_labelled_octet_stream_is_saved_with_the_png_extension(
    client: NanoBanana, sim: Simulator, tmp_path: Path
) -> None:
    """A real PNG served as application/octet-stream from a .bin-looking URL is still a .png."""
    result = await client.generate("a fox")
    png = await result.read()
    sim.faults.push("download", Respond(200, png, content_type="application/octet-stream"))
    path = await result.save(tmp_path / "")
    assert path.suffix == ".png"
    assert path.read_bytes() == png


@pytest.mark.parametrize("content_length", [True, False])
async def test_a_truncated_download_is_restarted_and_saved_whole(
    client: NanoBanana, sim: Simulator, tmp_path: Path, content_length: bool
) -> None:
    """Cut short with or without Content-Length: restarted from byte 0; the file is complete."""
    result = await client.generate("a fox")
    sim.faults.push("download", Truncate(after_bytes=60, content_length=content_length))
    path = await result.save(tmp_path)
    png_size(path.read_bytes())
    assert sim.counters.downloads == 2
    assert _files(tmp_path) == [path.name]


@pytest.mark.parametrize("content_length", [True, False])
async def test_a_download_truncated_every_time_fails_and_leaves_no_partial_file(
    client: NanoBanana, sim: Simulator, tmp_path: Path, content_length: bool
) -> None:
    """After the last attempt the error says what happened, and the folder stays empty."""
    result = await client.generate("a fox")
    attempts = client.retry.download_attempts
    for _ in range(attempts):
        sim.faults.push("download", Truncate(after_bytes=60, content_length=content_length))
    with pytest.raises((NetworkError, DownloadError)) as caught:
        await result.save(tmp_path)
    assert "cut short" in str(caught.value) or "ended early" in str(caught.value)
    assert sim.counters.downloads == attempts
    assert _files(tmp_path) == []


async def test_saving_never_overwrites_an_existing_file_unless_asked(
    client: NanoBanana, tmp_path: Path
) -> None:
    """A second save to the same name fails and keeps the first file; overwrite=True replaces."""
    result = await client.generate("a fox")
    path = await result.save(tmp_path)
    path.write_bytes(b"precious")
    with pytest.raises(DestinationExistsError) as caught:
        await result.save(tmp_path)
    assert isinstance(caught.value, FileExistsError)
    assert path.read_bytes() == b"precious"
    assert _files(tmp_path) == [path.name]
    assert await result.save(tmp_path, overwrite=True) == path
    png_size(path.read_bytes())


async def test_an_expired_image_url_is_reported_with_the_task_id(
    client: NanoBanana, tmp_path: Path
) -> None:
    """A 410 from the file host is ResultExpiredError(task id), and no new create is made."""
    result = await client.generate("a fox [expired]")
    with pytest.raises(ResultExpiredError) as caught:
        await result.save(tmp_path)
    assert caught.value.task_id == result.task.id
    assert _files(tmp_path) == []


async def test_plain_http_image_urls_on_remote_hosts_are_refused_without_a_request(
    client: NanoBanana, sim: Simulator
) -> None:
    """http:// to a non-loopback host is not fetched (no opt-in given)."""
    task = Task(id="abc", status=TaskStatus.COMPLETED, image_url="http://cdn.example/abc.png")
    with pytest.raises(UnsafeURLError, match="plain http"):
        await ImageResult(task, fetcher=client).read()
    task = Task(id="abc", status=TaskStatus.COMPLETED, image_url="file:///etc/passwd")
    with pytest.raises(UnsafeURLError):
        await ImageResult(task, fetcher=client).read()
    assert sim.requests == []


async def test_file_host_redirects_are_followed_without_credentials(
    client: NanoBanana, sim: Simulator, tmp_path: Path
) -> None:
    """A CDN redirect to another path is followed by hand, and no auth header goes along."""
    result = await client.generate("a fox")
    sim.faults.push("download", Redirect(302, sim.image_url(result.task.id)))
    path = await result.save(tmp_path)
    png_size(path.read_bytes())
    downloads = [r for r in sim.requests if r.origin == "files"]
    assert len(downloads) == 2
    assert not any(r.authorization or r.cookie for r in downloads)
    assert sim.counters.file_host_auth_headers == 0
