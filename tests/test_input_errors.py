"""What a batch does with an input that raises, and with a blank prompt.

Fault cases 47-48 of docs/reliability.md.

The user's iterable raising is the user's own error: it ends the stream as
itself, but only after every job already created (paid) has delivered its
image, and without sending the inputs that were pulled and not yet created.
A blank prompt is a bad input, not a broken iterable: one outcome with
InvalidRequestError, and the batch goes on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

import anyio
import pytest

from nanobanana_async import (
    FixedPolling,
    ImageRequest,
    InvalidRequestError,
    JournalState,
    NanoBanana,
    Outcome,
    read_journal,
)
from nanobanana_async.testing import LatencyProfile, Respond, Simulator

from .conftest import FAST_RETRY
from .helpers import wait_until


class BadLine(ValueError):
    """What a user's own parser raises on a line it cannot read."""


async def _collect(stream: AsyncIterable[Outcome], into: list[Outcome]) -> None:
    async for outcome in stream:
        into.append(outcome)


def creates_per_prompt(sim: Simulator) -> Counter[str]:
    return Counter(str(task.request["prompt"]) for task in sim.tasks.values())


async def test_the_inputs_own_exception_ends_the_stream_as_itself_after_paid_jobs_finish(
    sim: Simulator, tmp_path: Path
) -> None:
    """Created jobs deliver their images; the pulled-but-unsent input is dropped; no more pulls."""
    # Two long jobs hold two of the three slots, so of the batch's three workers one
    # creates at once, one waits for a slot and the third pulls the bad line.
    sim.latency = LatencyProfile(
        base_seconds={"nano-banana-pro": (1.0, 1.0)}, default_seconds=(0.1, 0.1)
    )
    pulls = 0

    async def prompts() -> AsyncIterator[str]:
        nonlocal pulls
        for text in ("paid before the error", "pulled, never sent"):
            pulls += 1
            yield text
        pulls += 1
        await wait_until(lambda: sim.counters.creates == 3)  # the first one's create is out
        raise BadLine("line 3 of prompts.txt is not a prompt")

    outcomes: list[Outcome] = []
    async with (
        NanoBanana(
            api_key=sim.api_key,
            base_url=sim.base_url,
            polling=FixedPolling(0.02),
            retry=FAST_RETRY,
            max_concurrency=3,
        ) as client,
        anyio.create_task_group() as group,
    ):
        for _ in range(2):
            group.start_soon(
                client.generate, ImageRequest(prompt="blocker", model="nano-banana-pro")
            )
        await wait_until(lambda: sim.counters.creates == 2)
        stream = client.generate_many(prompts(), save_to=tmp_path, journal=tmp_path / "j.sqlite")
        with pytest.raises(BadLine) as caught:
            await _collect(stream, outcomes)

    assert type(caught.value) is BadLine
    assert "line 3" in str(caught.value)
    assert pulls == 3
    assert [(o.index, o.ok) for o in outcomes] == [(0, True)]
    assert outcomes[0].path is not None
    assert outcomes[0].path.is_file()
    assert creates_per_prompt(sim) == Counter(["blocker", "blocker", "paid before the error"])
    rows = list(read_journal(tmp_path / "j.sqlite"))
    assert [(r.request["prompt"], r.state) for r in rows] == [
        ("paid before the error", JournalState.SAVED)
    ]


async def test_an_input_raising_at_once_sends_nothing_and_raises_unwrapped(
    client: NanoBanana, sim: Simulator
) -> None:
    """A sync iterable that fails on its first item: the error itself, no request at all."""

    def prompts() -> list[str]:
        raise BadLine("empty file")

    def lazily() -> object:
        yield from prompts()

    with pytest.raises(BadLine):
        async for _ in client.generate_many(lazily()):  # type: ignore[arg-type]
            pass
    assert len(sim.requests) == 0


async def test_blank_prompts_among_strings_are_invalid_outcomes_and_the_batch_goes_on(
    client: NanoBanana, sim: Simulator
) -> None:
    """Case 48: '', spaces, a tab: InvalidRequestError each, nothing sent; the rest run."""
    inputs = ["a fox", "   ", "", "another fox", "\t"]
    outcomes = {o.index: o async for o in client.generate_many(inputs)}
    assert sorted(outcomes) == [0, 1, 2, 3, 4]
    for index in (1, 2, 4):
        error = outcomes[index].error
        assert isinstance(error, InvalidRequestError), error
        assert "prompt" in str(error)
    assert outcomes[0].ok
    assert outcomes[3].ok
    assert creates_per_prompt(sim) == Counter(["a fox", "another fox"])
    assert sim.counters.create_requests == 2


async def test_an_input_error_during_a_429_pause_withholds_the_waiting_create(
    client: NanoBanana, sim: Simulator
) -> None:
    """A create waiting out Retry-After when the input raises is not sent after the pause."""
    sim.faults.push(
        "create", Respond(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "1"})
    )

    async def prompts() -> AsyncIterator[str]:
        yield "a fox behind a rate limit"
        await wait_until(lambda: sim.counters.create_requests == 1)
        raise BadLine("line 2 is not a prompt")

    outcomes: list[Outcome] = []
    with pytest.raises(BadLine):
        await _collect(client.generate_many(prompts(), download=False), outcomes)
    await anyio.sleep(1.2)  # past the Retry-After: nothing may go out now
    assert outcomes == []
    assert sim.counters.create_requests == 1
    assert sim.counters.creates == 0


async def test_submit_and_generate_many_refuse_a_non_request_alike_and_send_nothing(
    client: NanoBanana, sim: Simulator
) -> None:
    """One rule for both: an input that is neither a prompt nor an ImageRequest is bad input."""
    with pytest.raises(InvalidRequestError, match="an ImageRequest or a prompt string"):
        await client.submit(42)  # type: ignore[arg-type]
    outcomes = [o async for o in client.generate_many([42])]  # type: ignore[list-item]
    assert isinstance(outcomes[0].error, InvalidRequestError)
    assert "an ImageRequest or a prompt string" in str(outcomes[0].error)
    assert len(sim.requests) == 0
