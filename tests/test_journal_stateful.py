"""Case 40: a Hypothesis state machine submits, crashes and resumes journaled batches.

Whatever order of growing the input, running a batch to the end, and
cutting a batch off after a few outcomes Hypothesis tries, the service never
creates more tasks than there are inputs, and no journal row is ever lost.
The simulator and the client live on an event loop in a helper thread (an
anyio blocking portal), so one service outlives every step of a machine.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from nanobanana_async import FixedPolling, JournalState, NanoBanana
from nanobanana_async._journal import read_entries
from nanobanana_async.testing import LatencyProfile, Simulator

from .conftest import FAST_RETRY


async def _start_simulator() -> Simulator:
    simulator = Simulator(latency=LatencyProfile.uniform(0.0, 0.03), seed=3)
    await simulator.start()
    return simulator


class ResumableBatches(RuleBasedStateMachine):
    """Inputs only grow; batches run over all of them, sometimes cut off part-way."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="nb-stateful-"))
        self.journal = self.folder / "journal.sqlite"
        self.prompts: list[str] = []
        self.rows_seen = 0
        self.completed_runs = 0
        self._portal_cm = start_blocking_portal(backend="asyncio")
        self.portal: BlockingPortal = self._portal_cm.__enter__()
        self.sim = self.portal.call(_start_simulator)

    def teardown(self) -> None:
        try:
            self.portal.call(self.sim.aclose)
        finally:
            self._portal_cm.__exit__(None, None, None)
            shutil.rmtree(self.folder, ignore_errors=True)

    async def _batch(self, stop_after: int | None) -> int:
        received = 0
        async with NanoBanana(
            api_key=self.sim.api_key,
            base_url=self.sim.base_url,
            polling=FixedPolling(0.01),
            retry=FAST_RETRY,
            max_concurrency=4,
        ) as client:
            stream = client.generate_many(
                list(self.prompts), save_to=self.folder, journal=self.journal
            )
            async with stream:
                async for _outcome in stream:
                    received += 1
                    if stop_after is not None and received >= stop_after:
                        break
        return received

    @rule(count=st.integers(min_value=1, max_value=6))
    def add_inputs(self, count: int) -> None:
        """The prompt file grows (earlier lines never change)."""
        start = len(self.prompts)
        self.prompts += [f"state machine fox {start + i}" for i in range(count)]

    @precondition(lambda self: bool(self.prompts))
    @rule()
    def run_to_the_end(self) -> None:
        """A full (re)run: afterwards every input has its image."""
        received = self.portal.call(self._batch, None)
        assert received == len(self.prompts)
        entries = list(read_entries(self.journal))
        assert [e.index for e in entries] == list(range(len(self.prompts)))
        assert all(e.state is JournalState.SAVED for e in entries), [
            (e.index, e.state.value, e.error) for e in entries
        ]
        assert len(list(self.folder.glob("*.png"))) == len(self.prompts)
        self.completed_runs += 1

    @precondition(lambda self: len(self.prompts) > 1)
    @rule(stop_after=st.integers(min_value=1, max_value=4))
    def crash_part_way(self, stop_after: int) -> None:
        """A run cut off after a few outcomes: jobs in flight are cancelled mid-way."""
        self.portal.call(self._batch, stop_after)

    @invariant()
    def never_more_creates_than_inputs(self) -> None:
        """Resuming never pays for an input twice."""
        assert self.sim.counters.creates <= len(self.prompts)

    @invariant()
    def no_journal_row_is_lost(self) -> None:
        """Rows only ever accumulate."""
        if self.journal.exists():
            rows = len(list(read_entries(self.journal)))
            assert rows >= self.rows_seen
            self.rows_seen = rows


TestResumableBatches = ResumableBatches.TestCase
TestResumableBatches.settings = settings(
    max_examples=12,
    stateful_step_count=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
