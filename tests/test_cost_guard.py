"""The cost guard: ``generate_many(max_jobs=N)`` sends exactly min(N, inputs still to create).

Creates are read from the simulator's own counters. Inputs the journal
answers (saved) or continues (submitted, polled again) cost nothing and do
not count; inputs past the cap come back as ``MaxJobsReachedError`` outcomes
and ``Skipped`` events, nothing is journaled for them, and a rerun goes on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from nanobanana_async import (
    BatchFinished,
    Event,
    MaxJobsReachedError,
    Outcome,
    Skipped,
    TaskTimeoutError,
    UsageError,
)
from nanobanana_async.testing import Simulator

from .helpers import fast_client

pytestmark = pytest.mark.anyio

PROMPTS = [f"a lighthouse at dusk, study {number}" for number in range(10)]


async def run_batch(
    sim: Simulator, tmp_path: Path, prompts: list[str], **options: Any
) -> tuple[list[Outcome], list[Event]]:
    events: list[Event] = []
    async with fast_client(sim, max_concurrency=4) as client:
        client.subscribe(events.append)
        batch = client.generate_many(
            prompts, save_to=tmp_path / "out", journal=tmp_path / "journal.sqlite", **options
        )
        outcomes = [outcome async for outcome in batch]
    return outcomes, events


def capped(outcomes: list[Outcome]) -> list[Outcome]:
    return [outcome for outcome in outcomes if isinstance(outcome.error, MaxJobsReachedError)]


async def test_max_jobs_sends_exactly_that_many_creates_and_skips_the_rest(
    sim: Simulator, tmp_path: Path
) -> None:
    outcomes, events = await run_batch(sim, tmp_path, PROMPTS, max_jobs=3)
    assert sim.counters.creates == 3
    assert sim.counters.create_requests == 3
    assert sum(outcome.error is None for outcome in outcomes) == 3
    assert len(capped(outcomes)) == 7
    assert "max_jobs" in str(capped(outcomes)[0].error)
    skipped = [event for event in events if isinstance(event, Skipped)]
    assert len(skipped) == 7
    assert {event.index for event in skipped} == {outcome.index for outcome in capped(outcomes)}
    finished = [event for event in events if isinstance(event, BatchFinished)]
    assert [(e.outcomes, e.succeeded, e.failed, e.skipped) for e in finished] == [(10, 3, 0, 7)]
    assert len(list((tmp_path / "out").glob("*.png"))) == 3


async def test_a_rerun_with_the_journal_continues_and_counts_only_what_it_sends(
    sim: Simulator, tmp_path: Path
) -> None:
    await run_batch(sim, tmp_path, PROMPTS, max_jobs=3)
    outcomes, _ = await run_batch(sim, tmp_path, PROMPTS, max_jobs=4)
    assert sim.counters.creates == 7
    from_journal = [outcome for outcome in outcomes if outcome.resumed_from == "saved"]
    assert len(from_journal) == 3
    assert len(capped(outcomes)) == 3
    outcomes, _ = await run_batch(sim, tmp_path, PROMPTS, max_jobs=100)
    assert sim.counters.creates == 10
    assert all(outcome.error is None for outcome in outcomes)
    assert len(list((tmp_path / "out").glob("*.png"))) == 10


async def test_max_jobs_zero_sends_nothing_new_but_still_answers_from_the_journal(
    sim: Simulator, tmp_path: Path
) -> None:
    await run_batch(sim, tmp_path, PROMPTS[:4])
    outcomes, _ = await run_batch(sim, tmp_path, PROMPTS, max_jobs=0)
    assert sim.counters.creates == 4
    assert sum(outcome.resumed_from == "saved" for outcome in outcomes) == 4
    assert len(capped(outcomes)) == 6


async def test_tasks_polled_again_on_a_rerun_do_not_count_against_the_cap(
    sim: Simulator, tmp_path: Path
) -> None:
    slow = ["[never] a task that is still processing"]
    outcomes, _ = await run_batch(sim, tmp_path, slow + PROMPTS[:2], timeout=0.3)
    assert [type(outcome.error) for outcome in outcomes if outcome.error] == [TaskTimeoutError]
    assert sim.counters.creates == 3
    polls_before = sim.counters.polls
    outcomes, _ = await run_batch(sim, tmp_path, slow + PROMPTS[:4], timeout=0.3, max_jobs=1)
    assert sim.counters.creates == 4  # one new create: the cap, not the re-polled task
    assert sim.counters.polls > polls_before
    assert len(capped(outcomes)) == 1
    assert sum(outcome.resumed_from == "submitted" for outcome in outcomes) == 1


async def test_resubmitting_uncertain_inputs_counts_against_the_cap(
    sim: Simulator, tmp_path: Path
) -> None:
    from nanobanana_async.testing import ResetConnection

    sim.faults.push("create", ResetConnection(create_first=True))
    outcomes, _ = await run_batch(sim, tmp_path, PROMPTS[:1])
    assert outcomes[0].error is not None
    billed = sim.counters.creates
    outcomes, _ = await run_batch(sim, tmp_path, PROMPTS[:3], resubmit_uncertain=True, max_jobs=1)
    assert sim.counters.creates == billed + 1
    assert len(capped(outcomes)) == 2


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
async def test_a_bad_max_jobs_is_refused_before_anything_is_sent(
    sim: Simulator, bad: object
) -> None:
    async with fast_client(sim) as client:
        with pytest.raises(UsageError, match="max_jobs must be a whole number"):
            client.generate_many(PROMPTS, max_jobs=bad)  # type: ignore[arg-type]
    assert sim.counters.create_requests == 0


async def test_a_resolution_the_basic_model_ignores_is_warned_once_per_batch_and_still_sent(
    sim: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from nanobanana_async import ImageRequest

    requests = [
        ImageRequest(prompt=text, model="nano-banana", resolution="4k") for text in PROMPTS[:5]
    ]
    caplog.set_level(logging.WARNING, logger="nanobanana_async")
    async with fast_client(sim) as client:
        for _ in range(2):
            outcomes = [outcome async for outcome in client.generate_many(requests)]
            assert all(outcome.error is None for outcome in outcomes)
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 2  # one per batch, not one per request
    assert "resolution 4k is ignored by model nano-banana" in warnings[0].getMessage()
    assert [getattr(record, "batch", None) for record in warnings] == [1, 2]
    assert sim.counters.creates == 10


def test_only_the_basic_model_is_said_to_ignore_resolution() -> None:
    from nanobanana_async import MODELS, ImageRequest

    for model in MODELS:
        warned = ImageRequest(prompt="x", model=model, resolution="2k").ignored_settings()
        assert bool(warned) == (model == "nano-banana"), model
    assert ImageRequest(prompt="x", model="nano-banana").ignored_settings() == ()
