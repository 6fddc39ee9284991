"""Run the benchmarks: the SDK against the raw aiohttp baseline, in the same run, as ratios.

Usage::

    python benchmarks/run.py                 # quick profile (a few minutes)
    python benchmarks/run.py --full          # the 10,000-job scenarios (long)
    python benchmarks/run.py --only polling  # one scenario family
    nox -s bench [-- --full]

For every run it starts a fresh benchmark server (``server.py``: the package's
simulator, pinned with ``taskset -c 0``) and one client process (pinned with
``taskset -c 1``): the raw baseline (``baseline_client.py``) or the SDK's
``generate_many`` (``sdk_client.py``). Runs of the sides being compared are
interleaved (the order rotates from pair to pair) and every process is bounded
in time. Clients measure their own wall time, CPU per job, RSS growth and the
sockets left; the server reports polls per job and, per task, when it completed
and when each poll arrived, so the added latency (the first poll at or after
completion minus the completion) and the shortest interval between two polls
of one task are exact.

Scenarios (see ``benchmarks/README.md`` for the targets each one checks):

- ``throughput``: images of about 200 KiB read into memory, both sides
  polling every 0.5 s; quick: 1,000 jobs at cap 100 and 2,000 at cap 1,000,
  jobs of 1 s, 4 pairs each; full: 10,000 jobs at caps 100, 1,000 (one pair
  each) and 10,000 (4 pairs), jobs of 2 s; targets 1, 2, 3 and 5.
- ``rss-scale`` (``--full``): 100,000 jobs at cap 1,000 against 10,000, to
  check that lazy input really holds (target 3).
- ``polling``: job times uniform over 8-30 s, several waves of jobs on one
  client, the SDK's default ``AdaptivePolling`` against ``FixedPolling(2.0)``
  (target 4). In the quick profile the two sides run at the same time, each
  against its own server (waves of 1,000 jobs barely use the CPU; the same
  seed gives both the same job times); the full profile's waves of 2,000 run
  one side after the other, since two such clients on one core delay each
  other's polls.
- ``journal``: a placeholder for the journal's overhead, measured for now by
  ``benchmarks/journal_overhead.py``.

One table is printed, with absolute figures (medians over the pairs) and, for
each compared side, the median of its per-pair ratios to the reference (with
the targets that median is checked against, and the verdict) and their spread
(lowest and highest pair, and how many pairs); the same goes to
``benchmarks/results/latest.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import server_ports, tcp_sockets

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "latest.json"
#: Figures every row carries, and the ones a ratio is given for.
FIGURES = (
    "wall_s",
    "cpu_ms_per_job",
    "cpu_ms_per_job_steady",
    "rss_growth_mb",
    "polls_per_job",
    "latency_p50_s",
    "latency_p99_s",
    "sockets_after",
)
EXTRAS = (
    "peak_tasks",
    "peak_connections",
    "server_cpu_s",
    "time_wait_after_exit",
    "min_poll_interval_s",
    "polls_per_job_warm",
    "latency_p50_s_warm",
    "latency_p99_s_warm",
)
SERVER_START_SECONDS = 30.0


@dataclass(frozen=True)
class Side:
    """One client configuration: a name, its script and its extra arguments."""

    name: str
    script: str
    args: tuple[str, ...] = ()
    #: Where to import nanobanana_async from instead of the working tree (an older commit).
    pythonpath: str | None = None


BASELINE = Side("baseline", "baseline_client.py", ("--poll-interval", "0.5"))
BASELINE_POOL = Side("baseline-pool", "baseline_client.py", ("--poll-interval", "0.5", "--pool"))
SDK = Side("sdk", "sdk_client.py", ("--polling", "fixed:0.5"))
SDK_ADAPTIVE = Side("sdk-adaptive", "sdk_client.py", ("--polling", "adaptive", "--no-download"))
SDK_FIXED2 = Side("sdk-fixed2", "sdk_client.py", ("--polling", "fixed:2", "--no-download"))


@dataclass(frozen=True)
class Scenario:
    """A set of sides run on the same workload, and which side is compared with which."""

    name: str
    n: int
    cap: int
    sides: tuple[Side, ...]
    comparisons: tuple[tuple[str, str], ...]
    job_seconds: tuple[float, float] = (1.75, 2.25)
    waves: int = 1
    concurrent: bool = False
    pairs: int = 1
    time_limit: float = 600.0
    note: str = ""

    @property
    def label(self) -> str:
        """How the scenario is named in the table."""
        return f"{self.name} n={self.n:,} cap={self.cap:,}"


#: Job times of the throughput scenarios: "1 s jobs" and "2 s jobs", +-12.5 %.
ONE_SECOND = (0.875, 1.125)
TWO_SECONDS = (1.75, 2.25)


def _throughput(
    n: int,
    cap: int,
    *,
    pairs: int,
    time_limit: float,
    job_seconds: tuple[float, float] = TWO_SECONDS,
    with_pool: bool = False,
) -> Scenario:
    """SDK against the baseline (and, ``with_pool``, the lazily fed worker-pool baseline)."""
    sides = (BASELINE, SDK, BASELINE_POOL) if with_pool else (BASELINE, SDK)
    compared = [("sdk", "baseline")] + ([("sdk", "baseline-pool")] if with_pool else [])
    return Scenario(
        "throughput",
        n,
        cap,
        sides,
        tuple(compared),
        job_seconds=job_seconds,
        pairs=pairs,
        time_limit=time_limit,
    )


def profile(full: bool, pairs: int | None) -> list[Scenario]:
    """The scenarios of the quick or the full profile."""
    quick_pairs = pairs if pairs is not None else 4
    full_pairs = pairs if pairs is not None else 1
    if not full:
        throughput = [
            _throughput(
                1000,
                100,
                pairs=quick_pairs,
                time_limit=120,
                job_seconds=ONE_SECOND,
                with_pool=True,
            ),
            _throughput(2000, 1000, pairs=quick_pairs, time_limit=120, job_seconds=ONE_SECOND),
        ]
        polling = Scenario(
            "polling",
            1000,
            1000,
            (SDK_ADAPTIVE, SDK_FIXED2),
            (("sdk-adaptive", "sdk-fixed2"),),
            job_seconds=(8.0, 30.0),
            waves=4,
            concurrent=True,
            time_limit=300,
        )
        return [*throughput, polling, _journal()]
    throughput = [
        _throughput(10_000, 100, pairs=full_pairs, time_limit=900, with_pool=True),
        _throughput(10_000, 1000, pairs=full_pairs, time_limit=600),
        _throughput(10_000, 10_000, pairs=pairs if pairs is not None else 4, time_limit=600),
    ]
    scale = Scenario(
        "rss-scale",
        100_000,
        1000,
        (SDK, BASELINE_POOL),
        (("sdk", "baseline-pool"),),
        pairs=1,
        time_limit=1800,
        note="growth checked against the SDK's own n=10,000 cap=1,000 run",
    )
    polling = Scenario(
        "polling",
        2000,
        2000,
        (SDK_ADAPTIVE, SDK_FIXED2),
        (("sdk-adaptive", "sdk-fixed2"),),
        job_seconds=(8.0, 30.0),
        waves=4,
        time_limit=600,
    )
    return [*throughput, scale, polling, _journal()]


def _with_policy(scenario: Scenario, spec: str) -> Scenario:
    """The scenario with its adaptive side using another policy spec (for tuning runs)."""
    sides = tuple(
        Side(side.name, side.script, ("--polling", spec, "--no-download"))
        if side.name == SDK_ADAPTIVE.name
        else side
        for side in scenario.sides
    )
    return dataclasses.replace(scenario, sides=sides)


def _custom(spec: str, pairs: int | None) -> Scenario:
    """``N:CAP`` (2 s jobs) or ``N:CAP:SECONDS`` (jobs of about SECONDS)."""
    n, cap, *seconds = spec.split(":")
    job = TWO_SECONDS
    if seconds:
        mean = float(seconds[0])
        job = (mean * 0.875, mean * 1.125)
    return _throughput(int(n), int(cap), pairs=pairs or 1, time_limit=1800, job_seconds=job)


def events_scenario(before: Path, pairs: int | None) -> Scenario:
    """The SDK now, with and without a subscriber, against the SDK at an earlier commit.

    ``before`` holds that commit's ``nanobanana_async`` (see ``--events-against``).
    """
    sdk_before = Side("sdk-before", SDK.script, SDK.args, pythonpath=str(before))
    subscribed = Side("sdk-subscribed", SDK.script, (*SDK.args, "--subscriber"))
    return Scenario(
        "events",
        1000,
        100,
        (sdk_before, SDK, subscribed),
        (("sdk", "sdk-before"), ("sdk-subscribed", "sdk-before")),
        job_seconds=ONE_SECOND,
        pairs=pairs if pairs is not None else 6,
        time_limit=120,
    )


def checkout(revision: str, into: Path) -> Path:
    """The package as it was at ``revision`` (``git archive``), for the events scenario."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(HERE.parent), "archive", revision, "nanobanana_async"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _journal() -> Scenario:
    return Scenario(
        "journal",
        0,
        0,
        (),
        (),
        note="not part of this table yet; run benchmarks/journal_overhead.py (journal on vs off)",
    )


# --- processes ---------------------------------------------------------------------------------


def _pinned(core: int) -> list[str]:
    """``taskset -c CORE`` where it exists and the machine has two cores, else nothing."""
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(core)]
    return []


def _stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the process we started (by its pid), then SIGKILL if it lingers."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(grace)


def _cpu_of(pid: int) -> float:
    """User plus system CPU seconds of a live process, from /proc/PID/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return math.nan
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=120) as response:  # loopback only
        return json.load(response)


@dataclass
class Server:
    """One benchmark server process and where it listens."""

    process: subprocess.Popen[bytes]
    info: dict[str, Any]
    ready_file: Path

    @classmethod
    @contextlib.contextmanager
    def start(cls, workdir: Path, tag: str, scenario: Scenario) -> Iterator[Server]:
        """Start a fresh server for one run; it is stopped when the block ends."""
        ready = workdir / f"{tag}.ready.json"
        low, high = scenario.job_seconds
        command = [
            *_pinned(0),
            sys.executable,
            str(HERE / "server.py"),
            "--ready-file",
            str(ready),
            "--job-seconds",
            str(low),
            str(high),
            "--max-seconds",
            str(scenario.time_limit + 300),
        ]
        log = (workdir / f"{tag}.server.log").open("wb")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + SERVER_START_SECONDS
            while not ready.exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the benchmark server did not start (see {log.name})")
                time.sleep(0.05)
            info = json.loads(ready.read_text(encoding="utf-8"))
            yield cls(process, info, ready)
        finally:
            _stop(process)
            log.close()

    def report(self) -> dict[str, Any]:
        """Counters, per-task timings and CPU time, read while the server still runs."""
        base = self.info["base_url"]
        return {
            "counters": _get_json(f"{base}/_sim/counters"),
            "tasks": _get_json(f"{base}/_sim/tasks"),
            "server_cpu_s": _cpu_of(self.process.pid),
        }


def _client_command(side: Side, scenario: Scenario, ready: Path, result: Path) -> list[str]:
    return [
        *_pinned(1),
        sys.executable,
        str(HERE / side.script),
        "--ready-file",
        str(ready),
        "--result",
        str(result),
        "-n",
        str(scenario.n),
        "--cap",
        str(scenario.cap),
        *(("--waves", str(scenario.waves)) if scenario.waves > 1 else ()),
        "--max-seconds",
        str(scenario.time_limit),
        *side.args,
    ]


# --- figures -----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0-1) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _task_figures(tasks: list[dict[str, Any]]) -> dict[str, float]:
    """Polls per job, added latency and the shortest poll interval, from the server's records."""
    latencies: list[float] = []
    shortest = math.inf
    polls = 0
    for task in tasks:
        times = task["poll_times"]
        polls += len(times)
        done = task["completes_at"]
        if done is not None:
            notice = next((t for t in times if t >= done), None)
            if notice is not None:
                latencies.append(notice - done)
        for earlier, later in itertools.pairwise(times):
            shortest = min(shortest, later - earlier)
    return {
        "polls_per_job": polls / max(1, len(tasks)),
        "latency_p50_s": percentile(latencies, 0.5),
        "latency_p99_s": percentile(latencies, 0.99),
        "min_poll_interval_s": shortest,
    }


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def measure(
    side: Side, scenario: Scenario, client: dict[str, Any], server: dict[str, Any]
) -> dict[str, Any]:
    """One run's figures: the client's own, plus what the server saw."""
    tasks = sorted(server["tasks"], key=lambda task: task["created_at"])
    counters = server["counters"]
    run: dict[str, Any] = {
        "side": side.name,
        "ok": client.get("ok", False),
        "errors": client.get("errors", {}),
        "wall_s": client.get("wall_s", math.nan),
        "cpu_ms_per_job": client.get("cpu_ms_per_job", math.nan),
        "cpu_ms_per_job_steady": _or_nan(client.get("cpu_ms_per_job_steady")),
        "cpu_slowdown": _or_nan(client.get("cpu_slowdown")),
        "rss_growth_mb": client.get("rss_growth_mb", math.nan),
        "rss_start_mb": client.get("rss_start_mb", math.nan),
        "rss_peak_mb": client.get("rss_peak_mb", math.nan),
        "peak_tasks": client.get("peak_tasks", math.nan),
        "sockets_after": client.get("sockets", {}).get("total", math.nan),
        "sockets_detail": client.get("sockets", {}),
        "peak_connections": counters.get("peak_connections", math.nan),
        "server_cpu_s": server["server_cpu_s"],
        "creates": counters.get("creates", 0),
        "downloads_completed": counters.get("downloads_completed", 0),
    }
    run.update(_task_figures(tasks))
    if scenario.waves > 1:
        size = scenario.n
        waves = [tasks[i * size : (i + 1) * size] for i in range(scenario.waves)]
        run["waves"] = [_task_figures(wave) for wave in waves]
        warm = _task_figures([task for wave in waves[1:] for task in wave])
        run["polls_per_job_warm"] = warm["polls_per_job"]
        run["latency_p50_s_warm"] = warm["latency_p50_s"]
        run["latency_p99_s_warm"] = warm["latency_p99_s"]
    return run


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    """The median of one figure over runs (NaN when no run has it)."""
    values = [run[key] for run in runs if run["ok"] and _finite(run.get(key))]
    return statistics.median(values) if values else math.nan


def ratio(subject: float, reference: float) -> float:
    """subject / reference, NaN when either is missing; 1.0 for 0/0."""
    if not (_finite(subject) and _finite(reference)):
        return math.nan
    if reference == 0:
        return 1.0 if subject == 0 else math.inf
    return subject / reference


# --- running -----------------------------------------------------------------------------------


@dataclass
class Results:
    """Every run, keyed by scenario label and side, in the order they ran."""

    runs: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)

    def add(self, scenario: Scenario, run: dict[str, Any], pair: int) -> None:
        run["pair"] = pair
        self.runs.setdefault(scenario.label, {}).setdefault(run["side"], []).append(run)

    def of(self, scenario: Scenario, side: str) -> list[dict[str, Any]]:
        return self.runs.get(scenario.label, {}).get(side, [])


def _run_one(
    side: Side, scenario: Scenario, workdir: Path, tag: str
) -> tuple[subprocess.Popen[bytes], Server, contextlib.ExitStack, Path]:
    """Start a fresh server and one client against it; the stack stops both."""
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(Server.start(workdir, tag, scenario))
        result = workdir / f"{tag}.result.json"
        log = stack.enter_context((workdir / f"{tag}.client.log").open("wb"))
        command = _client_command(side, scenario, server.ready_file, result)
        env = None
        if side.pythonpath is not None:
            env = {**os.environ, "PYTHONPATH": side.pythonpath}
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        stack.callback(_stop, process)
        return process, server, stack.pop_all(), result
    raise AssertionError("unreachable")


def tag_of(scenario: Scenario, pair: int, side: Side) -> str:
    """The file-name stem of one run's logs and result."""
    return f"{scenario.name}-{scenario.n}-{scenario.cap}-{pair}-{side.name}"


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "    (no client log)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def run_scenario(scenario: Scenario, workdir: Path, results: Results) -> None:
    """All pairs of one scenario, the order of the sides rotating from pair to pair."""
    for pair in range(scenario.pairs):
        shift = pair % len(scenario.sides)
        order = scenario.sides[shift:] + scenario.sides[:shift]
        batches = [order] if scenario.concurrent else [(side,) for side in order]
        for batch in batches:
            with contextlib.ExitStack() as everything:
                t0 = time.monotonic()
                started = []
                for side in batch:
                    launched = _run_one(side, scenario, workdir, tag_of(scenario, pair, side))
                    everything.push(launched[2])
                    started.append((side, *launched))
                _collect(scenario, pair, started, workdir, results, t0)


def _collect(
    scenario: Scenario,
    pair: int,
    started: list[tuple[Side, subprocess.Popen[bytes], Server, contextlib.ExitStack, Path]],
    workdir: Path,
    results: Results,
    t0: float,
) -> None:
    """Wait for each client of a batch, read its figures and the server's, stop its server."""
    for side, process, server, stack, result in started:
        with stack:
            try:
                process.wait(scenario.time_limit + 60)
            except subprocess.TimeoutExpired:
                _stop(process)
            client = (
                json.loads(result.read_text(encoding="utf-8"))
                if result.exists()
                else {"ok": False, "errors": {"no result": 1}}
            )
            run = measure(side, scenario, client, server.report())
            left = tcp_sockets(server_ports(server.info))
            run["time_wait_after_exit"] = left.get("time_wait", 0)
        results.add(scenario, run, pair)
        status = "ok" if run["ok"] else f"FAILED {run['errors']}"
        if not run["ok"]:
            status += "\n" + _tail(workdir / f"{tag_of(scenario, pair, side)}.client.log")
        print(
            f"  {scenario.label:<34} pair {pair + 1}/{scenario.pairs} {side.name:<13} "
            f"wall {run['wall_s']:8.2f} s  cpu {run['cpu_ms_per_job']:6.3f} ms/job  "
            f"rss +{run['rss_growth_mb']:7.1f} MB  polls/job {run['polls_per_job']:5.2f}  "
            f"({time.monotonic() - t0:.0f} s) {status}",
            flush=True,
        )


def summarise(scenarios: list[Scenario], results: Results) -> list[dict[str, Any]]:
    """One row per scenario and side: medians, and per-pair ratio medians for compared sides."""
    rows: list[dict[str, Any]] = []
    for scenario in scenarios:
        if not scenario.sides:
            rows.append(
                {
                    "scenario": scenario.name,
                    "n": None,
                    "cap": None,
                    "side": None,
                    "skipped": True,
                    "note": scenario.note,
                }
            )
            continue
        subjects = {subject for subject, _ in scenario.comparisons}
        shown = sorted(scenario.sides, key=lambda side: side.name in subjects)
        for side in shown:
            runs = results.of(scenario, side.name)
            row: dict[str, Any] = {
                "scenario": scenario.name,
                "n": scenario.n * scenario.waves,
                "cap": scenario.cap,
                "side": side.name,
                "pairs": len(runs),
                "all_ok": all(run["ok"] for run in runs) and bool(runs),
                "errors": _merge_errors(runs),
            }
            for key in (*FIGURES, *EXTRAS):
                row[key] = median_of(runs, key)
            if runs and "waves" in runs[0]:
                row["waves"] = runs[0]["waves"]
            compared = [ref for subject, ref in scenario.comparisons if subject == side.name]
            for index, reference in enumerate(compared):
                ratios = _pair_ratios(runs, results.of(scenario, reference))
                target = (
                    row if index == 0 else row.setdefault("ratio_vs", {}).setdefault(reference, {})
                )
                if index == 0:
                    row["reference"] = reference
                target.update(ratios)
            if scenario.note:
                row["note"] = scenario.note
            rows.append(row)
    return rows


def _merge_errors(runs: list[dict[str, Any]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for run in runs:
        for kind, count in run["errors"].items():
            merged[kind] = merged.get(kind, 0) + count
    return merged


def _pair_ratios(subject: list[dict[str, Any]], reference: list[dict[str, Any]]) -> dict[str, Any]:
    by_pair = {run["pair"]: run for run in reference if run["ok"]}
    ratios: dict[str, Any] = {}
    for key in (*FIGURES, "polls_per_job_warm", "latency_p50_s_warm", "latency_p99_s_warm"):
        values = [
            ratio(run.get(key, math.nan), by_pair[run["pair"]].get(key, math.nan))
            for run in subject
            if run["ok"] and run["pair"] in by_pair
        ]
        finite = [value for value in values if _finite(value)]
        if finite or key in FIGURES:
            ratios[f"ratio_{key}"] = statistics.median(finite) if finite else math.nan
            # The spread: the lowest and highest pair, and how many pairs there were.
            ratios[f"spread_{key}"] = [min(finite), max(finite)] if finite else [math.nan] * 2
            ratios[f"pairs_{key}"] = len(finite)
    return ratios


# --- targets -----------------------------------------------------------------------------------


def _find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for row in rows:
        if all(row.get(key) == value for key, value in match.items()):
            return row
    return None


def check_targets(rows: list[dict[str, Any]], full: bool) -> list[dict[str, Any]]:
    """Each performance target this profile covers: value, limit, pass (medians of pairs)."""
    checks: list[dict[str, Any]] = []

    def check(
        target: str,
        what: str,
        value: float,
        limit: float,
        *,
        at_least: bool = False,
        source: dict[str, Any] | None = None,
        key: str = "",
        row: dict[str, Any] | None = None,
        reference: str = "",
    ) -> None:
        passed = _finite(value) and (value >= limit if at_least else value <= limit)
        item: dict[str, Any] = {
            "target": target,
            "what": what,
            "value": value,
            "limit": limit,
            "at_least": at_least,
            "pass": passed,
        }
        if source is not None and f"spread_{key}" in source:
            item["spread"] = source[f"spread_{key}"]
            item["pairs"] = source[f"pairs_{key}"]
        if row is not None:
            # Which ratio of the table this check reads: row, reference side, figure.
            item.update(
                scenario=row["scenario"],
                n=row["n"],
                cap=row["cap"],
                side=row["side"],
                reference=reference or row.get("reference"),
                figure=key,
            )
        checks.append(item)

    sdk_rows = [row for row in rows if row.get("scenario") == "throughput" and row["side"] == "sdk"]
    for row in sdk_rows:
        cap, n = row["cap"], row["n"]
        where = f"n={n:,} cap={cap:,}"
        check(
            "1",
            f"wall time vs baseline, {where}",
            row["ratio_wall_s"],
            1.15 if cap >= 10_000 else 1.05,
            source=row,
            key="wall_s",
            row=row,
        )
        check(
            "2",
            f"CPU per job vs baseline, {where}",
            row["ratio_cpu_ms_per_job"],
            1.25,
            source=row,
            key="cpu_ms_per_job",
            row=row,
        )
        if cap >= 1000:
            check(
                "3",
                f"RSS growth vs baseline, {where}",
                row["ratio_rss_growth_mb"],
                1.3,
                source=row,
                key="rss_growth_mb",
                row=row,
            )
        pool = row.get("ratio_vs", {}).get("baseline-pool")
        if pool is not None:
            check(
                "3",
                f"RSS growth vs lazily fed worker pool, {where}",
                pool["ratio_rss_growth_mb"],
                1.5,
                source=pool,
                key="rss_growth_mb",
                row=row,
                reference="baseline-pool",
            )
        if cap == max(r["cap"] for r in sdk_rows):
            check(
                "5",
                f"sockets after the run vs baseline, {where}",
                row["ratio_sockets_after"],
                1.1,
                source=row,
                key="sockets_after",
                row=row,
            )
            forbidden = sum(row["errors"].get(kind, 0) for kind in ("EMFILE", "EADDRNOTAVAIL"))
            check("5", f"EMFILE + EADDRNOTAVAIL, {where}", forbidden, 0)
    for side, limit in (("sdk", 1.05), ("sdk-subscribed", 1.10)):
        events = _find(rows, scenario="events", side=side)
        if events is not None:
            check(
                "6",
                f"CPU per job vs the earlier commit, {side}",
                events["ratio_cpu_ms_per_job"],
                limit,
                source=events,
                key="cpu_ms_per_job",
                row=events,
            )
    scale = _find(rows, scenario="rss-scale", side="sdk")
    small = _find(rows, scenario="throughput", side="sdk", cap=1000, n=10_000)
    if scale is not None and small is not None:
        check(
            "3",
            "SDK RSS growth n=100,000 vs n=10,000 (cap 1,000)",
            ratio(scale["rss_growth_mb"], small["rss_growth_mb"]),
            1.2,
        )
    polling = _find(rows, scenario="polling", side="sdk-adaptive")
    if polling is not None:
        check(
            "4",
            "polls per job, adaptive vs fixed 2 s (all waves)",
            polling["ratio_polls_per_job"],
            0.75,
            source=polling,
            key="polls_per_job",
            row=polling,
        )
        check(
            "4",
            "added latency p50, adaptive vs fixed 2 s (all waves)",
            polling["ratio_latency_p50_s"],
            1.05,
            source=polling,
            key="latency_p50_s",
            row=polling,
        )
        check(
            "4",
            "shortest interval between two polls of one task (s)",
            polling["min_poll_interval_s"],
            2.0,
            at_least=True,
        )
    return sorted(checks, key=lambda item: item["target"])


# --- output ------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 2) -> str:
    if not _finite(value):
        return "-"
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 100):
        return f"{int(value):,}"
    return f"{value:.{digits}f}"


def _spread(source: dict[str, Any], key: str) -> str:
    low, high = source.get(f"spread_{key}", [math.nan, math.nan])
    if not (_finite(low) and _finite(high)):
        return "-"
    return f"{_fmt(low, 2)}-{_fmt(high, 2)}"


#: How a figure is named where a ratio row lists the targets it is checked against.
SHORT = {
    "wall_s": "wall",
    "cpu_ms_per_job": "cpu",
    "rss_growth_mb": "rss",
    "sockets_after": "sockets",
    "polls_per_job": "polls",
    "latency_p50_s": "p50",
}


def _verdict(item: dict[str, Any]) -> str:
    return "PASS" if item["pass"] else "FAIL"


def _checked(checks: list[dict[str, Any]], row: dict[str, Any], reference: str) -> str:
    """The targets a ratio row is checked against, e.g. ``T1 wall<=1.05 PASS``."""
    found = [
        f"T{item['target']} {SHORT.get(item['figure'], item['figure'])}"
        f"{'>=' if item['at_least'] else '<='}{item['limit']} {_verdict(item)}"
        for item in checks
        if item.get("figure")
        and item.get("reference") == reference
        and all(item.get(key) == row[key] for key in ("scenario", "n", "cap", "side"))
    ]
    return ", ".join(found)


def render_table(rows: list[dict[str, Any]], checks: list[dict[str, Any]]) -> str:
    """The one table: absolute figures per side, then the ratios of each compared side.

    Under each compared side come its ratio row (the median of the per-pair ratios, with the
    targets that median is checked against in the last column) and its spread row (the lowest
    and the highest per-pair ratio, and how many pairs).
    """
    head = (
        "scenario",
        "n",
        "cap",
        "side",
        "wall s",
        "cpu ms/job",
        "steady cpu",
        "rss +MB",
        "polls/job",
        "lat p50 s",
        "lat p99 s",
        "sockets",
        "checked against (median)",
    )
    keys = (
        "wall_s",
        "cpu_ms_per_job",
        "cpu_ms_per_job_steady",
        "rss_growth_mb",
        "polls_per_job",
        "latency_p50_s",
        "latency_p99_s",
        "sockets_after",
    )
    lines: list[tuple[str, ...]] = [head]
    notes: list[str] = []
    for row in rows:
        if row.get("skipped"):
            lines.append((row["scenario"], "", "", "(placeholder)", *("",) * (len(keys) + 1)))
            notes.append(f"{row['scenario']}: {row['note']}")
            continue
        digits = (2, 3, 3, 1, 2, 3, 3, 0)
        lines.append(
            (
                row["scenario"],
                f"{row['n']:,}",
                f"{row['cap']:,}",
                row["side"],
                *(_fmt(row[key], d) for key, d in zip(keys, digits, strict=True)),
                "",
            )
        )
        if "reference" in row:
            refs = [(row["reference"], row), *list(row.get("ratio_vs", {}).items())]
            for reference, source in refs:
                lines.append(
                    (
                        "",
                        "",
                        "",
                        f"  ratio vs {reference}",
                        *(
                            _fmt(source.get(f"ratio_{key}"), 2) + "x"
                            if _finite(source.get(f"ratio_{key}"))
                            else "-"
                            for key in keys
                        ),
                        _checked(checks, row, reference),
                    )
                )
                pairs = source.get("pairs_cpu_ms_per_job", 0)
                lines.append(
                    (
                        "",
                        "",
                        "",
                        f"    spread, {pairs} pair{'s' if pairs != 1 else ''}",
                        *(_spread(source, key) for key in keys),
                        "",
                    )
                )
        if row["scenario"] == "polling":
            lines.append(
                (
                    "",
                    "",
                    "",
                    "  waves 2+ (warm)",
                    "",
                    "",
                    "",
                    "",
                    _fmt(row.get("polls_per_job_warm")),
                    _fmt(row.get("latency_p50_s_warm"), 3),
                    _fmt(row.get("latency_p99_s_warm"), 3),
                    f"min gap {_fmt(row.get('min_poll_interval_s'), 3)} s",
                    "",
                )
            )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = []
    for number, line in enumerate(lines):
        cells = [
            cell.ljust(widths[i]) if i < 4 or i == len(head) - 1 else cell.rjust(widths[i])
            for i, cell in enumerate(line)
        ]
        text.append("  ".join(cells).rstrip())
        if number == 0:
            text.append("  ".join("-" * width for width in widths))
    text.append("")
    text.extend(notes)
    if checks:
        text.append(
            "targets, each checked on the median of the per-pair ratios;"
            " 'pairs' gives the lowest and highest pair:"
        )
    for item in checks:
        spread = ""
        if "spread" in item:
            low, high = item["spread"]
            spread = f", pairs {_fmt(low, 3)}-{_fmt(high, 3)} over {item['pairs']}"
        text.append(
            f"  target {item['target']}: {_verdict(item)}  {item['what']}:"
            f" {'median' if spread else 'value'} {_fmt(item['value'], 3)}{spread}"
            f" (limit {'>=' if item['at_least'] else '<='} {item['limit']})"
        )
    return "\n".join(text)


def _machine() -> dict[str, Any]:
    import platform

    import aiohttp

    return {
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "cpus": os.cpu_count(),
        "pinned": bool(_pinned(0)),
        "platform": platform.platform(),
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen profile, print the table, write ``results/latest.json``."""
    parser = argparse.ArgumentParser(description="SDK vs raw aiohttp baseline benchmarks.")
    parser.add_argument("--full", action="store_true", help="the 10,000-job scenarios (long)")
    parser.add_argument(
        "--pairs",
        type=int,
        help="pairs per throughput scenario (default 4 quick; full: 1, and 4 at cap 10,000)",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="SCENARIO",
        help="run only these scenarios: throughput, rss-scale, polling",
    )
    parser.add_argument(
        "--throughput",
        action="append",
        metavar="N:CAP",
        help="instead of a profile, throughput runs of N jobs at CAP (baseline and SDK)",
    )
    parser.add_argument(
        "--caps",
        type=int,
        action="append",
        metavar="CAP",
        help="run only the throughput scenarios at these caps (others are kept)",
    )
    parser.add_argument(
        "--adaptive",
        default="adaptive",
        metavar="SPEC",
        help="the polling scenario's SDK policy, e.g. adaptive:history=4096 (default: adaptive)",
    )
    parser.add_argument(
        "--events-against",
        metavar="REV",
        help="instead of a profile: what events cost, against the SDK at git revision REV",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args(argv)
    scenarios = profile(args.full, args.pairs)
    if args.throughput:
        scenarios = [_custom(spec, args.pairs) for spec in args.throughput]
    if args.only:
        scenarios = [s for s in scenarios if s.name in args.only]
    if args.caps:
        scenarios = [s for s in scenarios if s.name != "throughput" or s.cap in args.caps]
    if args.adaptive != "adaptive":
        scenarios = [_with_policy(s, args.adaptive) for s in scenarios]
    results = Results()
    started = time.monotonic()
    print(
        f"benchmarks: {'full' if args.full else 'quick'} profile, pinned={bool(_pinned(0))}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="nanobanana-bench-") as tmp:
        if args.events_against:
            before = checkout(args.events_against, Path(tmp) / "before")
            scenarios = [events_scenario(before, args.pairs)]
        for scenario in scenarios:
            if scenario.sides:
                run_scenario(scenario, Path(tmp), results)
    rows = summarise(scenarios, results)
    checks = check_targets(rows, args.full)
    print()
    print(render_table(rows, checks))
    document = {
        "profile": "full" if args.full else "quick",
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": time.monotonic() - started,
        "machine": _machine(),
        "rows": rows,
        "targets": checks,
        "runs": results.runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    partial = args.output.with_name(args.output.name + ".part")
    partial.write_text(json.dumps(_jsonable(document), indent=1, allow_nan=False), encoding="utf-8")
    os.replace(partial, args.output)
    print(f"\nwritten to {args.output} in {time.monotonic() - started:.0f} s")
    return (
        0
        if all(run["ok"] for side in results.runs.values() for r in side.values() for run in r)
        else 1
    )


if __name__ == "__main__":
    sys.exit(main())
