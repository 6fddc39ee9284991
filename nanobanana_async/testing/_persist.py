"""The simulator's optional state file: its task table, kept from one process to the next.

The file is JSON lines: a header line naming the format, then one line per
task, written and flushed before the create is answered, so killing the
process loses at most a create whose answer never left. Times are stored as
wall-clock seconds (the simulator runs on ``time.monotonic()``) and turned back
into this process's monotonic clock on load, so a task whose completion time
passed while no simulator ran loads completed. A last line cut short by a kill
mid-write is dropped; a file that is not a state file of this version, or a
damaged line, is a ConfigurationError naming the file, and the file is left as
it is.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import IO, TypeVar, get_args

from .._errors import ConfigurationError
from ._state import Outcome, SimTask, TaskError

_HEADER_LINE = b'{"format":"nanobanana-simulator-state","version":1}\n'
_OUTCOMES: dict[str, Outcome] = {name: name for name in get_args(Outcome)}
_T = TypeVar("_T")


class _DamagedLineError(ValueError):
    """A task line that parses as JSON but is not a task record."""


class StateFile:
    """Appends every new task to a state file whose earlier tasks were loaded with ``load``."""

    def __init__(self, path: Path, valid_bytes: int) -> None:
        self.path = path
        self._valid_bytes = valid_bytes
        self._file: IO[bytes] | None = None

    @classmethod
    def load(cls, path: Path) -> tuple[StateFile, list[SimTask]]:
        """Read ``path`` (missing or empty: no tasks) and return a writer and its tasks."""
        try:
            with path.open("rb") as file:
                header = file.readline(len(_HEADER_LINE))
                if header != _HEADER_LINE:
                    if not _HEADER_LINE.startswith(header):
                        raise _error(path, "it is not a simulator state file of this version")
                    return cls(path, 0), []  # empty, or a header cut short by a kill
                rest = file.read()
        except FileNotFoundError:
            return cls(path, 0), []
        except OSError as exc:
            raise _error(path, f"it cannot be read ({exc.strerror or exc})") from None
        complete = rest.rfind(b"\n") + 1  # anything after the last newline was cut by a kill
        offset = time.time() - time.monotonic()
        tasks: list[SimTask] = []
        for number, line in enumerate(rest[:complete].split(b"\n")[:-1], start=2):
            try:
                tasks.append(_task_from(json.loads(line), offset))
            except (ValueError, RecursionError) as exc:
                raise _error(path, f"line {number} is damaged ({exc})") from None
        return cls(path, len(header) + complete), tasks

    def append(self, task: SimTask) -> None:
        """Write one new task's line and flush it (the first write drops a cut-short tail)."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab")
            self._file.truncate(self._valid_bytes)
            if self._valid_bytes == 0:
                self._file.write(_HEADER_LINE)
        self._file.write(_line_of(task))
        self._file.flush()

    def close(self) -> None:
        """Close the file if a task was written."""
        if self._file is not None:
            self._file.close()


def _error(path: Path, problem: str) -> ConfigurationError:
    return ConfigurationError(
        f"cannot use {path} as the simulator's state file: {problem}; "
        "delete it or choose another path"
    )


def _line_of(task: SimTask) -> bytes:
    offset = time.time() - time.monotonic()
    record = {
        "id": task.id,
        "request": task.request,
        "model": task.model,
        "resolution": task.resolution,
        "size": task.size,
        "created": task.created,
        "created_at": task.created_at + offset,
        "starts_at": task.starts_at + offset,
        "completes_at": task.completes_at + offset if math.isfinite(task.completes_at) else None,
        "outcome": task.outcome,
        "error": task.error,
    }
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def _field(record: dict[str, object], name: str, kind: type[_T]) -> _T:
    value = record.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _DamagedLineError(f"{name} is {value!r:.60}")
    return value


def _monotonic(record: dict[str, object], name: str, offset: float) -> float:
    value = _field(record, name, float)
    if not math.isfinite(value):
        raise _DamagedLineError(f"{name} is {value!r}")
    return value - offset


def _error_of(value: object) -> TaskError:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and all(isinstance(item, str) for item in value.values()):
        return value
    raise _DamagedLineError(f"error is {value!r:.60}")


def _task_from(record: object, offset: float) -> SimTask:
    """One task from its line, with its times on this process's monotonic clock."""
    if not isinstance(record, dict):
        raise _DamagedLineError("not a JSON object")
    outcome = _field(record, "outcome", str)
    if outcome not in _OUTCOMES:
        raise _DamagedLineError(f"outcome is {outcome!r:.60}")
    resolution = record.get("resolution")
    return SimTask(
        id=_field(record, "id", str),
        request=_field(record, "request", dict),
        model=_field(record, "model", str),
        resolution=None if resolution is None else _field(record, "resolution", str),
        size=_field(record, "size", str),
        created=_field(record, "created", int),
        created_at=_monotonic(record, "created_at", offset),
        starts_at=_monotonic(record, "starts_at", offset),
        completes_at=(
            math.inf
            if record.get("completes_at") is None
            else _monotonic(record, "completes_at", offset)
        ),
        outcome=_OUTCOMES[outcome],
        error=_error_of(record.get("error")),
    )
