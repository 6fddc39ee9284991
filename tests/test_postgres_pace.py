"""The pace a batch's workers share through PostgreSQL: 429 pauses, the request rate, the schema.

A 429 seen by one worker pauses the creates of every worker of the batch; a
request rate set for the batch is split evenly among its live workers.
"""

from __future__ import annotations

import bisect
import time
from pathlib import Path

import anyio
import asyncpg
import pytest

from nanobanana_async import ConfigurationError, NanoBanana, PostgresJournal
from nanobanana_async._limits import Limits
from nanobanana_async.testing import Respond, Simulator

from .helpers import fast_client, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

PROMPTS = [f"a heron in the reeds, plate {number}" for number in range(40)]


def rate_of(limits: Limits) -> float | None:
    return None if limits.requests is None else limits.requests.rate


async def test_a_429_pause_of_one_worker_pauses_the_creates_of_every_worker(
    postgres_dsn: str,
) -> None:
    first = PostgresJournal(postgres_dsn, batch="shared")
    second = PostgresJournal(postgres_dsn, batch="shared")
    paused, told = Limits(), Limits()
    async with first, second, first.working(paused.pacing()), second.working(told.pacing()):
        paused.create_pause.pause_for(3.0)  # what a 429 with Retry-After: 3 does to the first
        await anyio.sleep(1.5)  # a few looks at the batch's row
        left = told.create_pause.until - time.monotonic()
    assert 0.5 < left < 3.0, left


async def test_a_worker_joining_a_batch_paused_by_a_429_waits_before_its_first_create(
    sim: Simulator, tmp_path: Path, postgres_dsn: str
) -> None:
    sim.faults.push(
        "create", Respond(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "2"})
    )
    refused_at: list[float] = []
    async with fast_client(sim) as first_client, fast_client(sim) as second_client:

        async def first() -> None:
            journal = PostgresJournal(postgres_dsn, batch="shared")
            stream = first_client.generate_many(PROMPTS[:1], save_to=tmp_path, journal=journal)
            assert [outcome.ok async for outcome in stream] == [True]

        async with anyio.create_task_group() as workers:
            workers.start_soon(first)
            await wait_until(lambda: sim.counters.create_requests > 0)
            refused_at.append(time.monotonic())  # the simulator's clock
            await anyio.sleep(0.8)  # the first worker has shared its pause by now
            journal = PostgresJournal(postgres_dsn, batch="shared")
            stream = second_client.generate_many(PROMPTS[1:3], save_to=tmp_path, journal=journal)
            assert [outcome.ok async for outcome in stream] == [True, True]
    second = [t for t in sim.tasks.values() if t.request["prompt"] in PROMPTS[1:3]]
    assert len(second) == 2
    assert min(task.created_at for task in second) >= refused_at[0] + 1.5


async def test_the_batch_request_rate_is_split_evenly_among_its_live_workers(
    postgres_dsn: str,
) -> None:
    setter = PostgresJournal(postgres_dsn, batch="shared", max_requests_per_second=30)
    follower = PostgresJournal(postgres_dsn, batch="shared")  # sets nothing: follows the batch
    third = PostgresJournal(postgres_dsn, batch="shared")
    limits = [Limits(), Limits(), Limits(max_requests_per_second=4)]
    async with setter, follower, third:
        await stale_worker_row(postgres_dsn)  # a worker that died a minute ago does not count
        async with setter.working(limits[0].pacing()), follower.working(limits[1].pacing()):
            async with third.working(limits[2].pacing()):
                await wait_until(lambda: [rate_of(one) for one in limits] == [10, 10, 4])
            # The third stopped working: its share goes to the two left, and its own limit
            # (lower than any share) is all that is left on its client.
            await wait_until(lambda: [rate_of(one) for one in limits] == [15, 15, 4], timeout=8)
        assert [rate_of(one) for one in limits] == [None, None, 4]


async def stale_worker_row(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO nanobanana_workers (batch, worker, host, pid, seen_at) "
            "VALUES ('shared', 'dead-host:1:abc', 'dead-host', 1, now() - interval '1 minute')"
        )
    finally:
        await conn.close()


async def test_two_workers_together_keep_under_the_batch_request_rate(
    sim: Simulator, tmp_path: Path, postgres_dsn: str
) -> None:
    rate = 20.0
    started = time.monotonic()
    async with fast_client(sim) as first, fast_client(sim) as second:

        async def work(client: NanoBanana, prompts: list[str]) -> None:
            journal = PostgresJournal(postgres_dsn, batch="shared", max_requests_per_second=rate)
            stream = client.generate_many(prompts, save_to=tmp_path, journal=journal)
            assert all([outcome.ok async for outcome in stream])

        async with anyio.create_task_group() as workers:
            workers.start_soon(work, first, PROMPTS[:20])
            workers.start_soon(work, second, PROMPTS[20:])
    elapsed = time.monotonic() - started
    calls = sim.counters.create_requests + sim.counters.polls
    assert sim.counters.creates == len(PROMPTS)
    # Each worker takes half the rate; before their first look at each other, one may run
    # at the whole rate for half a second (its first tick): that many calls come free.
    assert elapsed >= (calls - rate * 0.5 - 2) / rate, (calls, elapsed)
    # Nor in bursts, once the workers have seen each other: no second holds much more than
    # the rate (a stalled event loop may wake a few calls together).
    arrivals = sorted(r.at for r in sim.requests if r.endpoint in ("create", "poll"))
    steady = [at for at in arrivals if at >= arrivals[0] + 1.0]
    assert busiest_second(steady) <= rate * 1.4, busiest_second(steady)


def busiest_second(arrivals: list[float]) -> int:
    """The most arrivals in any one-second window."""
    return max(bisect.bisect_left(arrivals, at + 1.0) - i for i, at in enumerate(arrivals))


@pytest.mark.parametrize("rate", [-1, float("nan"), float("inf"), "fast", True])
def test_a_batch_rate_must_be_a_positive_number(rate: object) -> None:
    with pytest.raises(ConfigurationError, match="max_requests_per_second must be a positive"):
        PostgresJournal("postgresql://u@127.0.0.1/db", batch="b", max_requests_per_second=rate)  # type: ignore[arg-type]


async def test_a_rate_of_zero_lifts_the_batch_rate(postgres_dsn: str) -> None:
    async with PostgresJournal(postgres_dsn, batch="shared", max_requests_per_second=5):
        pass
    limits = Limits()
    lifter = PostgresJournal(postgres_dsn, batch="shared", max_requests_per_second=0)
    async with lifter, lifter.working(limits.pacing()):
        assert limits.requests is None


async def test_a_database_of_the_first_schema_is_brought_up_to_date_and_keeps_its_rows(
    sim: Simulator, tmp_path: Path, postgres_dsn: str
) -> None:
    async with fast_client(sim) as client:
        journal = PostgresJournal(postgres_dsn, batch="old")
        assert all(
            [
                o.ok
                async for o in client.generate_many(PROMPTS[:3], save_to=tmp_path, journal=journal)
            ]
        )
    conn = await asyncpg.connect(postgres_dsn)
    try:  # back to what schema 1 was
        await conn.execute("ALTER TABLE nanobanana_batches DROP COLUMN max_requests_per_second")
        await conn.execute("UPDATE nanobanana_meta SET value = '1' WHERE key = 'schema_version'")
        async with PostgresJournal(postgres_dsn, batch="old", max_requests_per_second=7) as again:
            assert len(await again.entries()) == 3
        version = await conn.fetchval(
            "SELECT value FROM nanobanana_meta WHERE key = 'schema_version'"
        )
        rate = await conn.fetchval(
            "SELECT max_requests_per_second FROM nanobanana_batches WHERE name = 'old'"
        )
    finally:
        await conn.close()
    assert (version, rate) == ("2", 7.0)
