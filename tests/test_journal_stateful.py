"""A Hypothesis state machine edits the input, crashes and resumes batches.

Fault cases 40 and 44 of docs/reliability.md.

Between runs the prompt list is edited as a person edits a file: lines
inserted anywhere (new ones or copies of existing ones), deleted, moved,
changed. Runs go to the end or are cut off after a few outcomes. Whatever the
order, the service never creates a task for an input twice, an input being a
(request, occurrence) pair; after a full run every current line has its own
image, the journal's saved rows point at files that exist, and no journal row
is ever lost. The simulator and the client live on an event loop in a helper
thread (an anyio blocking portal), so one service outlives every step.

CI runs a small number of examples; ``NANOBANANA_FULL_LOAD=1`` (``nox -s
tests``) runs many more, with longer edit histories.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from nanobanana_async import FixedPolling, JournalState, NanoBanana, read_journal
from nanobanana_async.testing import LatencyProfile, Simulator

from .conftest import FAST_RETRY

FULL_LOAD = os.environ.get("NANOBANANA_FULL_LOAD") == "1"


async def _start_simulator() -> Simulator:
    simulator = Simulator(latency=LatencyProfile.uniform(0.0, 0.03), seed=3)
    await simulator.start()
    return simulator


class EditedResumableBatches(RuleBasedStateMachine):
    """A prompt file edited between (sometimes interrupted) runs into one folder."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="nb-stateful-"))
        self.journal = self.folder / "journal.sqlite"
        self.prompts: list[str] = []
        self.fresh = 0
        #: For each prompt, the most copies of it any version of the input held.
        self.most_copies: Counter[str] = Counter()
        self.rows_seen = 0
        self._portal_cm = start_blocking_portal(backend="asyncio")
        self.portal: BlockingPortal = self._portal_cm.__enter__()
        self.sim = self.portal.call(_start_simulator)

    def teardown(self) -> None:
        try:
            self.portal.call(self.sim.aclose)
        finally:
            self._portal_cm.__exit__(None, None, None)
            shutil.rmtree(self.folder, ignore_errors=True)

    def _edited(self) -> None:
        self.most_copies |= Counter(self.prompts)

    def _new_prompt(self) -> str:
        self.fresh += 1
        return f"state machine fox {self.fresh}"

    async def _batch(self, stop_after: int | None) -> list[Path | None]:
        paths: list[Path | None] = []
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
                async for outcome in stream:
                    assert outcome.ok, outcome.error
                    paths.append(outcome.path)
                    if stop_after is not None and len(paths) >= stop_after:
                        break
        return paths

    def _creates(self) -> Counter[str]:
        return Counter(str(task.request["prompt"]) for task in self.sim.tasks.values())

    @rule(count=st.integers(min_value=1, max_value=4), at=st.integers(min_value=0))
    def insert_new_lines(self, count: int, at: int) -> None:
        """New prompts anywhere in the file (the top included)."""
        where = at % (len(self.prompts) + 1)
        self.prompts[where:where] = [self._new_prompt() for _ in range(count)]
        self._edited()

    @precondition(lambda self: bool(self.prompts))
    @rule(line=st.integers(min_value=0), at=st.integers(min_value=0))
    def duplicate_a_line(self, line: int, at: int) -> None:
        """A copy of an existing line: one more input asking for the same request."""
        copy = self.prompts[line % len(self.prompts)]
        self.prompts.insert(at % (len(self.prompts) + 1), copy)
        self._edited()

    @precondition(lambda self: bool(self.prompts))
    @rule(line=st.integers(min_value=0))
    def delete_a_line(self, line: int) -> None:
        """A line removed: its input is simply no longer asked for."""
        del self.prompts[line % len(self.prompts)]

    @precondition(lambda self: len(self.prompts) > 1)
    @rule(order=st.randoms(use_true_random=False))
    def reorder_lines(self, order: random.Random) -> None:
        """The lines shuffled."""
        order.shuffle(self.prompts)

    @precondition(lambda self: bool(self.prompts))
    @rule(line=st.integers(min_value=0))
    def edit_a_line(self, line: int) -> None:
        """A line's text changed: a new request in its place."""
        self.prompts[line % len(self.prompts)] = self._new_prompt()
        self._edited()

    @precondition(lambda self: bool(self.prompts))
    @rule()
    def run_to_the_end(self) -> None:
        """A full (re)run: afterwards every current line has an image of its own."""
        paths = self.portal.call(self._batch, None)
        assert len(paths) == len(self.prompts)
        assert all(path is not None and path.is_file() for path in paths)
        assert len(set(paths)) == len(self.prompts), "two lines share one image"
        creates = self._creates()
        for prompt, copies in Counter(self.prompts).items():
            assert creates[prompt] >= copies, prompt
        for entry in read_journal(self.journal):
            if entry.state is JournalState.SAVED:
                assert entry.path is not None
                assert Path(entry.path).is_file(), entry

    @precondition(lambda self: len(self.prompts) > 1)
    @rule(stop_after=st.integers(min_value=1, max_value=4))
    def crash_part_way(self, stop_after: int) -> None:
        """A run cut off after a few outcomes: jobs in flight are cancelled mid-way."""
        self.portal.call(self._batch, stop_after)

    @invariant()
    def never_a_second_create_for_one_input(self) -> None:
        """A prompt is paid at most once per copy of it the input ever held."""
        for prompt, count in self._creates().items():
            assert count <= self.most_copies[prompt], (prompt, count)

    @invariant()
    def no_journal_row_is_lost(self) -> None:
        """Rows only ever accumulate."""
        if self.journal.exists():
            rows = len(list(read_journal(self.journal)))
            assert rows >= self.rows_seen
            self.rows_seen = rows


TestEditedResumableBatches = EditedResumableBatches.TestCase
TestEditedResumableBatches.settings = settings(
    max_examples=60 if FULL_LOAD else 12,
    stateful_step_count=20 if FULL_LOAD else 10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
