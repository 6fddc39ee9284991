"""One writer at a time: an OS-level lock on a journal or an output folder, held for a run.

The lock is an advisory lock on a small lock file beside what it guards
(``flock`` on POSIX, ``msvcrt.locking`` on Windows). The kernel releases it
when the holding process dies, however it dies, so a lock left by a killed
run never blocks the next one. ``flock`` locks belong to an open file, so a
second lock of the same path is refused inside one process too.

The file also says who holds it (process id, host, program, since when), so
the refusal can name the holder. Nothing else is written there.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Final

from ._errors import JournalError, JournalLockedError

__all__ = ["FOLDER_LOCK_NAME", "RunLock", "wait_while_stopping"]

#: The lock file a journaled batch keeps in the folder it saves into.
FOLDER_LOCK_NAME: Final = ".nanobanana.lock"

#: Lock files held by a batch of this process that is being stopped (its consumer left the
#: loop): a new run of the same batch in this process waits for them rather than be refused.
_stopping: dict[str, threading.Event] = {}
_stopping_guard = threading.Lock()

#: Windows locks are mandatory byte ranges: lock one byte far past the holder's
#: details, so a refused run can still read who holds the lock.
_LOCKED_BYTE: Final = 1 << 20

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, _LOCKED_BYTE, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except PermissionError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, _LOCKED_BYTE, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _read_holder(fd: int) -> str | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return _describe(os.read(fd, 4096).decode("utf-8", "replace"))
    except OSError:
        return None


def _describe(text: str) -> str | None:
    """The holder as a person reads it, from the lock file's JSON (None if unreadable)."""
    try:
        info = json.loads(text)
        return (
            f"process {int(info['pid'])} on {info['host']} ({info['program']}, "
            f"since {info['since']})"
        )
    except (ValueError, KeyError, TypeError):
        return None


class RunLock:
    """An exclusive, non-blocking lock guarding ``guarded`` through the file ``path``.

    ``acquire`` raises ``JournalLockedError`` naming ``guarded`` and its holder
    when another run holds it; ``release`` is safe to call twice.
    """

    def __init__(self, path: Path, *, guarded: Path) -> None:
        self.path = path
        self.guarded = guarded
        self._fd: int | None = None

    def __repr__(self) -> str:
        state = "held" if self._fd is not None else "free"
        return f"RunLock({str(self.path)!r}, {state})"

    def acquire(self) -> None:
        """Take the lock now or raise ``JournalLockedError``; blocking file I/O.

        A file system that cannot lock at all (some network mounts) is a
        ``JournalError`` saying so, never a bare ``OSError``.
        """
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise JournalError(f"cannot create the lock file {self.path}: {exc.strerror}") from None
        try:
            locked = _try_lock(fd)
            holder = None if locked else _read_holder(fd)
        except OSError as exc:
            os.close(fd)
            raise JournalError(f"cannot lock {self.path}: {exc.strerror}") from None
        if not locked:
            os.close(fd)
            raise JournalLockedError(str(self.guarded), holder=holder)
        try:
            self._write_holder(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    @staticmethod
    def _write_holder(fd: int) -> None:
        """Say who holds the lock (nothing secret: no arguments, no environment)."""
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "program": Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python",
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(info).encode())

    def stopping(self) -> None:
        """Its run is being stopped: a new run of this process waits for the release."""
        if self._fd is not None:
            with _stopping_guard:
                _stopping.setdefault(_key(self.path), threading.Event())

    def release(self) -> None:
        """Give the lock back (the file stays: unlinking it would race with a new holder)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
            _unlock(fd)
        finally:
            os.close(fd)
            with _stopping_guard:
                released = _stopping.pop(_key(self.path), None)
            if released is not None:
                released.set()


def wait_while_stopping(path: Path, timeout: float) -> None:
    """If a run of this process that is being stopped holds ``path``, wait (bounded) for it.

    Blocking. Leaving an ``async for`` over a batch early stops the batch in
    the background (a create on the wire gets a few seconds' grace); the same
    batch started again at once would otherwise find its own journal locked.
    """
    with _stopping_guard:
        released = _stopping.get(_key(path))
    if released is not None:
        released.wait(timeout)


def _key(path: Path) -> str:
    return os.path.abspath(path)
