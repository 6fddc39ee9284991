"""Helpers shared by the benchmark processes: what a client measures about itself.

Every client process (the raw baseline and the SDK) measures the same things
the same way, so only the code under test differs:

- wall time and CPU time (``getrusage(RUSAGE_SELF)``, user + system) over the
  measured window, which starts after imports and session creation and ends
  when the last job has finished;
- RSS growth: peak RSS (``VmHWM`` in ``/proc/self/status``) minus the RSS at the
  start of the window;
- the peak number of live asyncio tasks, sampled once a second;
- sockets left when the work is done, read from ``/proc/net/tcp*``.

Results go to a JSON file named on the command line, never to stdout only, so
the orchestrator (``run.py``) can read them whatever the process printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import resource
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: TCP states in /proc/net/tcp, by their hex code.
_TCP_STATES = {
    "01": "established",
    "02": "syn_sent",
    "03": "syn_recv",
    "04": "fin_wait1",
    "05": "fin_wait2",
    "06": "time_wait",
    "07": "close",
    "08": "close_wait",
    "09": "last_ack",
    "0A": "listen",
    "0B": "closing",
}


def _status_kib(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM), in KiB; 0 where unavailable."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    if field == "VmHWM":  # no /proc: ru_maxrss is the peak in KiB on Linux
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return 0


def rss_mb() -> float:
    """Current resident set size in MiB."""
    return _status_kib("VmRSS") / 1024.0


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    return _status_kib("VmHWM") / 1024.0


def cpu_seconds() -> float:
    """User plus system CPU time used by this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def tcp_sockets(ports: Iterable[int]) -> dict[str, int]:
    """TCP sockets (system-wide) touching the server's ports, by state.

    Counts the client side of every connection to one of ``ports`` (any state
    but LISTEN), and the server side only in TIME_WAIT (its ESTABLISHED side
    mirrors the client's). A fresh server on fresh ports per run keeps runs
    apart.
    """
    wanted = set(ports)
    counts: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as lines:
                next(lines, None)
                for line in lines:
                    fields = line.split()
                    if len(fields) < 4:
                        continue
                    local_port = int(fields[1].rsplit(":", 1)[1], 16)
                    remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                    state = _TCP_STATES.get(fields[3], fields[3])
                    client_side = remote_port in wanted and state != "listen"
                    server_wait = local_port in wanted and state == "time_wait"
                    if client_side or server_wait:
                        counts[state] = counts.get(state, 0) + 1
        except OSError:
            continue
    counts["total"] = sum(counts.values())
    return counts


def classify_error(exc: BaseException) -> str:
    """A short name for a failure, singling out the two the targets forbid."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        number = getattr(current, "errno", None)
        text = str(current)
        if number == errno.EMFILE or "Too many open files" in text:
            return "EMFILE"
        if number == errno.EADDRNOTAVAIL or "Cannot assign requested address" in text:
            return "EADDRNOTAVAIL"
        current = current.__cause__ or current.__context__
    return type(exc).__name__


class Window:
    """The measured window of one client run: call ``start()``, do the work, then ``stop()``."""

    def __init__(self) -> None:
        self.rss_start_mb = 0.0
        self.peak_tasks = 0
        self._wall0 = 0.0
        self._cpu0 = 0.0
        self.wall_s = 0.0
        self.cpu_s = 0.0
        self._sampler: asyncio.Task[None] | None = None
        self.probes: list[int] = []

    async def _sample_tasks(self) -> None:
        ticks = 0
        while True:
            if ticks % 4 == 0:
                self.peak_tasks = max(self.peak_tasks, len(asyncio.all_tasks()))
            self.probes.append(_speed_probe())
            ticks += 1
            await asyncio.sleep(0.25)

    def start(self) -> None:
        """Begin measuring (call after imports and session creation)."""
        self.rss_start_mb = rss_mb()
        self._sampler = asyncio.get_running_loop().create_task(self._sample_tasks())
        self._cpu0 = cpu_seconds()
        self._wall0 = time.monotonic()

    async def stop(self) -> None:
        """End measuring: wall and CPU time are frozen here."""
        self.wall_s = time.monotonic() - self._wall0
        self.cpu_s = cpu_seconds() - self._cpu0
        if self._sampler is not None:
            self.peak_tasks = max(self.peak_tasks, len(asyncio.all_tasks()))
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler

    def figures(self, jobs: int) -> dict[str, Any]:
        """The window's figures, per job where that is how the targets read them."""
        peak = peak_rss_mb()
        return {
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "cpu_ms_per_job": 1000.0 * self.cpu_s / max(1, jobs),
            "rss_start_mb": self.rss_start_mb,
            "rss_peak_mb": peak,
            "rss_growth_mb": max(0.0, peak - self.rss_start_mb),
            "peak_tasks": self.peak_tasks,
            **_slowdown(self.probes, self.cpu_s, jobs),
        }


def _speed_probe() -> int:
    """Thread CPU nanoseconds of a fixed piece of pure-Python work (about 0.1 ms)."""
    table: dict[int, int] = {}
    start = time.thread_time_ns()
    for i in range(2000):
        table[i & 255] = i * 3
    return time.thread_time_ns() - start


def _slowdown(probes: list[int], cpu_s: float, jobs: int) -> dict[str, Any]:
    """How much slower than its fastest the CPU ran in the window, and CPU/job corrected for it."""
    if len(probes) < 4:
        return {"cpu_slowdown": None, "cpu_ms_per_job_steady": None}
    slowdown = (sum(probes) / len(probes)) / min(probes)
    return {
        "cpu_slowdown": slowdown,
        "cpu_ms_per_job_steady": 1000.0 * cpu_s / max(1, jobs) / slowdown,
    }


def server_ports(info: dict[str, Any]) -> list[int]:
    """The API and file-host ports named in the server's ready file."""
    from urllib.parse import urlsplit

    ports = []
    for key in ("base_url", "file_host_url"):
        port = urlsplit(info[key]).port
        if port is not None:
            ports.append(port)
    return ports


def client_parser(doc: str, *, jobs_help: str, cap_help: str) -> argparse.ArgumentParser:
    """The options every client process takes: server, result file, workload, time limit."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--ready-file", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("-n", type=int, required=True, help=jobs_help)
    parser.add_argument("--cap", type=int, required=True, help=cap_help)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    return parser


def read_ready_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The server's ``{base_url, file_host_url, api_key}``."""
    return dict(json.loads(Path(path).read_text(encoding="utf-8")))


def write_result(path: str | os.PathLike[str], result: dict[str, Any]) -> None:
    """Write one run's result as JSON, atomically."""
    target = Path(path)
    partial = target.with_name(target.name + ".part")
    partial.write_text(json.dumps(result, indent=1), encoding="utf-8")
    os.replace(partial, target)
