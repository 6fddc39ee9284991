"""Many jobs in flat memory, and a seeded soak of mixed faults (docs/reliability.md, cases 38-39).

A lazy input is read only about the concurrency ahead, with flat memory and
connections within their limits; under a fault mix every input gets one
outcome, no create is duplicated and retries stay within the retry budget.

Both run small by default (1,000 and 500 jobs) so the suite stays quick; set
``NANOBANANA_FULL_LOAD=1`` for the full sizes (10,000 and 3,000 jobs). The
load test talks to a simulator in a separate process, so tracemalloc sees
only the client's memory; the soak runs the simulator in process, because it
compares the client's outcomes task by task with what the simulator created
and which faults it injected.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from nanobanana_async import (
    DownloadError,
    FixedPolling,
    NanoBanana,
    NanoBananaError,
    NetworkError,
    Outcome,
    RateLimitedError,
    ServerError,
    SubmissionUncertainError,
)
from nanobanana_async.testing import LatencyProfile, Simulator

from .conftest import FAST_RETRY
from .helpers import retries_logged, stop_process

REPO_ROOT = Path(__file__).resolve().parent.parent
FULL = os.environ.get("NANOBANANA_FULL_LOAD") == "1"
LOAD_JOBS = 10_000 if FULL else 1_000
SOAK_JOBS = 3_000 if FULL else 500
CONCURRENCY = 32
CONNECTION_LIMIT = 16


@pytest.fixture
def simulator_process(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A standalone simulator (instant jobs) in its own process; stopped by its pid."""
    ready = tmp_path / "ready.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NANOBANANA_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "nanobanana_async.testing", "--latency", "instant"]
    command += ["--ready-file", str(ready)]
    with (tmp_path / "simulator.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 20
            while not ready.exists():
                assert process.poll() is None, "the simulator exited before it was ready"
                assert time.monotonic() < deadline, "the simulator did not become ready"
                time.sleep(0.02)
            yield json.loads(ready.read_text(encoding="utf-8"))
        finally:
            stop_process(process)


def get_json(url: str) -> dict[str, Any]:
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url, timeout=10) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


def traced_now() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


@pytest.mark.slow
@pytest.mark.usefixtures("no_loop_debug")
async def test_many_lazy_prompts_run_with_bounded_read_ahead_memory_and_connections(
    simulator_process: dict[str, str],
) -> None:
    """Case 38: 1,000 (10,000 full) lazy prompts: read ≈ concurrency ahead, flat memory, limits.

    Images are left as URLs (download=False): with one origin, aiohttp's pool limit is a
    limit on open sockets (API calls and downloads have separate pools).
    """
    pulled = received = max_ahead = duplicates = 0
    seen = bytearray(LOAD_JOBS)
    errors: Counter[str] = Counter()
    memory: dict[str, int] = {}

    def prompts() -> Iterator[str]:
        nonlocal pulled, max_ahead
        for index in range(LOAD_JOBS):
            pulled += 1
            max_ahead = max(max_ahead, pulled - received)
            yield f"load test picture {index}"

    started = time.monotonic()
    tracemalloc.start()
    try:
        with anyio.fail_after(300 if FULL else 60):
            async with NanoBanana(
                api_key=simulator_process["api_key"],
                base_url=simulator_process["base_url"],
                max_concurrency=CONCURRENCY,
                connection_limit=CONNECTION_LIMIT,
                polling=FixedPolling(interval=0.01),
                retry=FAST_RETRY,
            ) as nano:
                async for outcome in nano.generate_many(prompts(), download=False):
                    received += 1
                    duplicates += seen[outcome.index]
                    seen[outcome.index] = 1
                    if outcome.error is not None:
                        errors[type(outcome.error).__name__] += 1
                    if received == LOAD_JOBS // 5:
                        memory["20%"] = traced_now()
                    elif received == LOAD_JOBS * 3 // 5:
                        memory["60%"] = traced_now()  # mid-run too: a full window in flight
                memory["100%"] = traced_now()
    finally:
        tracemalloc.stop()
    elapsed = time.monotonic() - started
    await anyio.sleep(0.2)  # let the simulator see the client's connections close
    counters = get_json(simulator_process["base_url"] + "/_sim/counters")

    assert received == LOAD_JOBS
    assert duplicates == 0
    assert seen.count(0) == 0
    assert errors == Counter()
    # Input is pulled at most about one window ahead of what the consumer has seen (and the
    # window was really used: the first outcomes may come back before all 32 slots filled).
    assert CONCURRENCY // 2 <= max_ahead <= CONCURRENCY + 2
    # Flat memory: later jobs add (almost) nothing to what the first 20 % left behind.
    assert memory["60%"] - memory["20%"] < 128 * 1024, (memory, elapsed)
    assert memory["100%"] - memory["20%"] < 128 * 1024, (memory, elapsed)
    assert counters["creates"] == LOAD_JOBS
    assert counters["create_requests"] == LOAD_JOBS
    assert counters["polls"] >= LOAD_JOBS
    assert counters["peak_connections"] <= CONNECTION_LIMIT
    assert counters["open_connections"] <= 1  # only the counters request itself


async def test_open_connections_stay_within_the_api_and_download_pool_limits(
    sim: Simulator,
) -> None:
    """Case 38: API calls and downloads have pools of their own; neither exceeds its limit."""
    sim.latency = LatencyProfile.uniform(0.0, 0.02)
    async with NanoBanana(
        api_key=sim.api_key,
        base_url=sim.base_url,
        max_concurrency=16,
        connection_limit=4,
        max_concurrent_downloads=3,
        polling=FixedPolling(interval=0.01),
        retry=FAST_RETRY,
    ) as nano:
        outcomes = [o async for o in nano.generate_many(f"two origins {i}" for i in range(100))]
    assert all(o.ok for o in outcomes)
    assert sim.counters.downloads_completed == 100
    assert sim.counters.peak_connections <= 4 + 3


# Case 39: a seeded soak of mixed faults.

SOAK_RATES: dict[str, Any] = {
    "reset": 0.05,
    "server_error": 0.05,
    "rate_limit": 0.02,
    "truncate": 0.01,
}
#: The main soak keeps 429s to creates; the full mix, 429s on polls included,
#: is the test after it.
CREATE_429_ONLY: dict[str, Any] = {"on": {"rate_limit": ["create"]}}
#: Errors an outcome may carry in the soak, beyond SubmissionUncertainError.
RETRY_EXHAUSTED = (NetworkError, ServerError, RateLimitedError, DownloadError)


@attrs.define
class SoakReport:
    outcomes: dict[int, Outcome]
    elapsed: float


@pytest.mark.slow
@pytest.mark.usefixtures("no_loop_debug")
async def test_a_seeded_fault_mix_gives_one_outcome_each_no_duplicate_create_and_bounded_retries(
    tmp_path: Path, debug_logs: pytest.LogCaptureFixture
) -> None:
    """Case 39: 5% resets, 5% 503, 2% 429 (on creates), 1% truncations, 500 (3,000) jobs."""
    total = SOAK_JOBS
    prompts = [f"soak picture {index}" for index in range(total)]
    outcomes: dict[int, Outcome] = {}
    duplicates: list[int] = []
    async with Simulator(
        latency=LatencyProfile.uniform(0.0, 0.03), seed=39, image_long_side=8, record_requests=False
    ) as sim:
        sim.faults.set_rates(seed=39, **SOAK_RATES, **CREATE_429_ONLY)
        started = time.monotonic()
        with anyio.fail_after(120 if FULL else 20):
            async with NanoBanana(
                api_key=sim.api_key,
                base_url=sim.base_url,
                max_concurrency=CONCURRENCY,
                polling=FixedPolling(interval=0.01),
                retry=FAST_RETRY,
            ) as nano:
                async for outcome in nano.generate_many(prompts, save_to=tmp_path):
                    if outcome.index in outcomes:
                        duplicates.append(outcome.index)
                    outcomes[outcome.index] = outcome
            elapsed = time.monotonic() - started
        injected = sim.faults.injected
        counters = sim.counters
        with anyio.fail_after(5):
            while counters.open_connections:  # noqa: ASYNC110 - a gauge
                await anyio.sleep(0.01)

        # One outcome per input.
        assert duplicates == []
        assert sorted(outcomes) == list(range(total))

        # No duplicate create: one create request per input, plus one resend per 429.
        assert counters.create_requests == total + injected.create_rate_limits
        never_created = injected.create_server_errors + (
            injected.create_resets - injected.create_resets_billed
        )
        assert counters.creates == total - never_created
        created_prompts = [str(task.request["prompt"]) for task in sim.tasks.values()]
        assert len(set(created_prompts)) == len(created_prompts)

        # Every task id is in at most one outcome, and every id the client holds is real.
        ids = [o.task.id for o in outcomes.values() if o.task is not None]
        assert len(set(ids)) == len(ids)
        assert set(ids) <= set(sim.tasks)

        # Every create that was billed unseen is an uncertain outcome; so is every other create
        # whose answer was lost (reset before creating, or a 503): the client cannot tell.
        uncertain = {
            i for i, o in outcomes.items() if isinstance(o.error, SubmissionUncertainError)
        }
        assert len(uncertain) == injected.create_resets + injected.create_server_errors
        unseen = set(sim.tasks) - set(ids)
        assert len(unseen) == injected.create_resets_billed == counters.unacknowledged_creates
        by_prompt = {o.request.prompt: i for i, o in outcomes.items() if o.request is not None}
        for task_id in unseen:
            assert by_prompt[str(sim.tasks[task_id].request["prompt"])] in uncertain

        # Retries are paid for by injected faults only: each retry the client decided (and
        # logged) answers one fault. A 429 (here only on creates, with a usable Retry-After)
        # is waited out as pacing; every other retry is a failure charged to the budget.
        retries = retries_logged(debug_logs.records)
        paced = [operation for operation, _, error, _ in retries if error == "RateLimitedError"]
        charged = len(retries) - len(paced)
        assert set(paced) <= {"create"}
        assert len(paced) <= injected.create_rate_limits
        retryable_faults = (
            injected.poll_resets
            + injected.poll_server_errors
            + injected.download_resets
            + injected.download_truncations
        )
        assert charged <= retryable_faults
        # ... and within the client-wide budget: it starts full, each charged retry costs
        # budget_cost and each answered call earns budget_refund back.
        answered = counters.create_requests + counters.polls + counters.downloads
        budget = FAST_RETRY.budget_capacity + FAST_RETRY.budget_refund * answered
        assert charged * FAST_RETRY.budget_cost <= budget

        # Whatever failed, failed for an injected reason; nothing was left half-saved.
        others = Counter(
            type(o.error).__name__
            for i, o in outcomes.items()
            if o.error is not None and i not in uncertain
        )
        for i, outcome in outcomes.items():
            if outcome.error is not None and i not in uncertain:
                assert isinstance(outcome.error, RETRY_EXHAUSTED), (i, outcome.error)
            assert isinstance(outcome.error, NanoBananaError | None)
        ok = [o for o in outcomes.values() if o.ok]
        assert len(ok) >= total - len(uncertain) - max(5, total // 50), others
        assert all(o.path is not None and o.path.exists() for o in ok)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            o.path.name for o in ok if o.path is not None
        )
        assert injected.total > total * 0.05  # the mix really was applied
        assert elapsed < (120 if FULL else 20)


@pytest.mark.slow
@pytest.mark.usefixtures("no_loop_debug")
async def test_the_checklist_fault_mix_with_429s_on_polls_finishes_in_bounded_time() -> None:
    """Case 39: the exact mix (2% 429 on creates and polls): 200 jobs well within 2 s."""
    async with Simulator(
        latency=LatencyProfile.uniform(0.0, 0.03), seed=39, image_long_side=8, record_requests=False
    ) as sim:
        sim.faults.set_rates(seed=39, **SOAK_RATES)
        # Without 429s on polls the same run takes under a second (see the soak above).
        with anyio.fail_after(2):
            async with NanoBanana(
                api_key=sim.api_key,
                base_url=sim.base_url,
                max_concurrency=CONCURRENCY,
                polling=FixedPolling(interval=0.01),
                retry=FAST_RETRY,
            ) as nano:
                outcomes = [o async for o in nano.generate_many(f"mix {i}" for i in range(200))]
    assert len(outcomes) == 200
    assert sim.faults.injected.poll_rate_limits > 0
