"""Fetching finished images: size-capped, type-checked, and saved atomically.

The file type and extension come from the image's magic bytes, never from
the URL or Content-Type. A save streams into a temp file beside the target
(created with O_EXCL), checks the image is complete, fsyncs it, moves it into
place in one step, and fsyncs the folder; on any failure the temp file is
removed, so an observer never sees a partial image.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import secrets
from pathlib import Path
from typing import IO, Any, Final

import anyio
import attrs

from ._errors import DestinationExistsError, DownloadError, NanoBananaError
from ._http import DownloadBody, HTTPClient
from ._models import Task, validate_task_id

__all__ = ["DEFAULT_MAX_IMAGE_BYTES", "Downloader", "ImageKind", "SavedImage", "sniff_image"]

#: Largest image accepted by default (the service's 4K PNGs are far below this).
DEFAULT_MAX_IMAGE_BYTES: Final = 64 << 20
_WRITE_BATCH: Final = 1 << 20


@attrs.frozen
class SavedImage:
    """Where an image was saved, and the SHA-256 of its bytes."""

    path: Path
    sha256: str
    size: int


@attrs.frozen
class ImageKind:
    """An image format recognised from its first bytes."""

    mime: str
    extension: str


PNG = ImageKind("image/png", ".png")
JPEG = ImageKind("image/jpeg", ".jpg")
WEBP = ImageKind("image/webp", ".webp")
_PNG_END = b"IEND\xaeB`\x82"


def sniff_image(head: bytes) -> ImageKind | None:
    """The image format the bytes start with, or None if they are not PNG, JPEG or WebP."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    return None


def _is_complete(kind: ImageKind, head: bytes, tail: bytes, size: int) -> bool:
    """True when the image's own framing says it ended where the bytes ended."""
    if kind is PNG:
        return tail.endswith(_PNG_END)
    if kind is JPEG:
        return tail.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")
    declared = int.from_bytes(head[4:8], "little") + 8
    return declared == size


class _ImageStream:
    """Checks a download as it streams: type from the first chunk, size cap, completeness."""

    def __init__(self, body: DownloadBody, *, max_bytes: int, task_id: str) -> None:
        self.body = body
        self.max_bytes = max_bytes
        self.task_id = task_id
        self.kind: ImageKind | None = None
        self.size = 0
        self._head = b""
        self._tail = b""
        declared = body.content_length
        if declared is not None and declared > max_bytes:
            raise DownloadError(
                f"the image is {declared} bytes, over the {max_bytes}-byte limit "
                "(raise max_image_bytes to accept it)",
                task_id=task_id,
            )
        if body.content_encoding not in (None, "", "identity"):
            raise DownloadError(
                f"the file host sent a {body.content_encoding!r}-encoded body; only raw images "
                "are accepted",
                task_id=task_id,
            )

    def accept(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise DownloadError(
                f"the image is over the {self.max_bytes}-byte limit; download stopped",
                task_id=self.task_id,
            )
        if self.kind is None:
            self._head += chunk
            if len(self._head) >= 12:
                self._identify()
        self._tail = chunk[-16:] if len(chunk) >= 16 else (self._tail + chunk)[-16:]

    def _identify(self) -> None:
        kind = sniff_image(self._head)
        if kind is None:
            start = self._head[:16]
            raise DownloadError(
                f"the file host did not send a PNG, JPEG or WebP image (it starts with {start!r})",
                task_id=self.task_id,
            )
        self.kind = kind

    def finish(self) -> ImageKind:
        if self.kind is None and self.size < 12:
            raise DownloadError(
                f"the image ended after only {self.size} bytes (truncated)",
                task_id=self.task_id,
                retryable=True,
            )
        if self.kind is None:
            self._identify()
        assert self.kind is not None
        if not _is_complete(self.kind, self._head, self._tail, self.size):
            raise DownloadError(
                f"the {self.kind.mime} image ended early after {self.size} bytes (truncated)",
                task_id=self.task_id,
                retryable=True,
            )
        return self.kind


def _image_url(task: Task) -> str:
    if task.image_url is None:
        raise DownloadError(f"task {task.id} has no image URL to download", task_id=task.id)
    return task.image_url


class Downloader:
    """Reads or saves a completed task's image through the HTTP seam."""

    def __init__(self, http: HTTPClient, *, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> None:
        self._http = http
        self.max_bytes = max_bytes

    async def read(self, task: Task) -> bytes:
        """The whole image in memory, checked for type, size and completeness."""
        chunks: list[bytes] = []
        async with self._http.open_download(
            _image_url(task), task_id=task.id, max_bytes=self.max_bytes
        ) as body:
            stream = _ImageStream(body, max_bytes=self.max_bytes, task_id=task.id)
            async for chunk in body:
                stream.accept(chunk)
                chunks.append(chunk)
            stream.finish()
        return b"".join(chunks)

    async def save(
        self,
        task: Task,
        destination: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        stem: str | None = None,
        adopt_identical: bool = False,
    ) -> SavedImage:
        """Stream the image to ``destination`` (a folder or a file path); say where it went.

        In a folder the file is named ``stem`` (default: the task id) plus the
        extension of the image's real type. Given a ``stem``, ``destination``
        is always a folder, created if missing. With ``adopt_identical``, an
        existing file with exactly these bytes counts as this save (a rerun
        after a crash between saving and journaling it). A filesystem failure
        (full disk, no permission) is a DownloadError naming the folder.
        """
        if stem is not None:
            folder, fixed_name = Path(destination), None
        else:
            folder, fixed_name = _split_destination(destination)
        name_stem = stem if stem is not None else validate_task_id(task.id)
        try:
            return await self._save(
                task, folder, fixed_name or None, name_stem, overwrite, adopt_identical
            )
        except NanoBananaError:
            raise
        except OSError as exc:
            raise DownloadError(
                f"could not write the image in {folder}: {exc.strerror or exc}", task_id=task.id
            ) from exc

    async def _save(
        self,
        task: Task,
        folder: Path,
        fixed_name: str | None,
        name_stem: str,
        overwrite: bool,
        adopt_identical: bool,
    ) -> SavedImage:
        url = _image_url(task)
        await anyio.to_thread.run_sync(lambda: folder.mkdir(parents=True, exist_ok=True))
        if fixed_name is None and adopt_identical:
            # A batch's names are its own (a slug and the request's fingerprint, and the
            # folder is locked while a journaled batch runs): temp files under this name
            # were left by an earlier run that died mid-download, and nothing owns them.
            await anyio.to_thread.run_sync(_remove_stale_temps, folder, name_stem)
        fd, temp = await anyio.to_thread.run_sync(_create_temp, folder, name_stem)
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as handle:
                async with self._http.open_download(
                    url, task_id=task.id, max_bytes=self.max_bytes
                ) as body:
                    stream = await self._stream_to(handle, body, task.id, digest)
                await anyio.to_thread.run_sync(_flush_and_sync, handle)
            kind = stream.finish()
            target = folder / (fixed_name or f"{name_stem}{kind.extension}")
            sha256 = digest.hexdigest()
            adopt = sha256 if adopt_identical else None
            await anyio.to_thread.run_sync(_place, temp, target, overwrite, task.id, adopt)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_remove_quietly, temp)
        return SavedImage(path=target, sha256=sha256, size=stream.size)

    async def _stream_to(
        self, handle: IO[bytes], body: DownloadBody, task_id: str, digest: Any
    ) -> _ImageStream:
        stream = _ImageStream(body, max_bytes=self.max_bytes, task_id=task_id)
        pending: list[bytes] = []
        pending_size = 0
        async for chunk in body:
            stream.accept(chunk)
            digest.update(chunk)
            pending.append(chunk)
            pending_size += len(chunk)
            if pending_size >= _WRITE_BATCH:
                await anyio.to_thread.run_sync(handle.write, b"".join(pending))
                pending, pending_size = [], 0
        stream.finish()
        if pending:
            await anyio.to_thread.run_sync(handle.write, b"".join(pending))
        return stream


def _split_destination(destination: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """A folder and, when a file path was given, the file's name."""
    text = os.fspath(destination)
    path = Path(text)
    if text.endswith(("/", os.sep)) or path.is_dir():
        return path, None
    return path.parent, path.name


def _create_temp(folder: Path, stem: str) -> tuple[int, Path]:
    """A new, exclusively created ``.{stem}.{random}.part`` file; permissions follow the umask."""
    while True:
        temp = folder / f".{stem}.{secrets.token_hex(6)}.part"
        try:
            return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), temp
        except FileExistsError:
            continue


def _remove_stale_temps(folder: Path, stem: str) -> None:
    for stale in folder.glob(f".{glob.escape(stem)}.*.part"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def _flush_and_sync(handle: IO[bytes]) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _place(temp: Path, target: Path, overwrite: bool, task_id: str, adopt: str | None) -> None:
    """Move the finished temp file to ``target`` in one step, never clobbering unless asked.

    ``adopt`` is the new file's SHA-256 when an identical existing file may stand for it.
    """
    if overwrite:
        os.replace(temp, target)
    else:
        try:
            os.link(temp, target)
        except FileExistsError:
            if adopt is not None and _sha256_of(target) == adopt:
                return
            raise DestinationExistsError(str(target), task_id=task_id) from None
        except OSError:
            # Filesystems without hard links: check, then rename (not atomic against a racer).
            if target.exists():
                raise DestinationExistsError(str(target), task_id=task_id) from None
            os.replace(temp, target)
    _sync_folder(target.parent)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
