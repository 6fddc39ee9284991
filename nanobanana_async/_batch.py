"""What generate_many does with each input: answer it from the journal, or run its job.

The batch engine (``_scheduler``) calls a ``BatchJob`` for every input it
pulls; the job looks the input up in the journal (if any), names its file,
and runs it through the client's JobRunner.
"""

from __future__ import annotations

import attrs

from ._jobs import JobOptions, JobRunner
from ._models import Outcome
from ._naming import file_stem
from ._resume import BatchJournal, Resume
from ._scheduler import BatchInput, SendGate

__all__ = ["BatchJob"]


#: The plan of an input no journal knows: run it from its create.
_AFRESH = Resume()


class BatchJob:
    """The job function of one generate_many call."""

    __slots__ = ("_journal", "_options", "_runner")

    def __init__(
        self, runner: JobRunner, options: JobOptions, journal: BatchJournal | None
    ) -> None:
        self._runner = runner
        self._options = options
        self._journal = journal

    async def __call__(self, pulled: BatchInput, gate: SendGate) -> Outcome | None:
        """The input's outcome; None when it was dropped unsent because its input raised."""
        index, request = pulled.index, pulled.request
        if request is None:
            return Outcome(request=None, index=index, error=pulled.error)
        plan = _AFRESH
        if self._journal is not None:
            plan = await self._journal.plan(index, request, pulled.fingerprint, pulled.occurrence)
            if plan.outcome is not None:
                return plan.outcome
        options = self._options
        stem = None
        if options.save_to is not None:
            stem = file_stem(request.prompt, pulled.fingerprint, pulled.occurrence)
        outcome = await self._runner.run(
            index,
            request,
            options,
            record=plan.recorder,
            resume=plan.task,
            stem=stem,
            may_create=gate.may_create,
        )
        if outcome is None:  # withheld before its create was sent
            if gate.fatal is None:
                return None
            await plan.recorder.not_billed(gate.fatal)
            return Outcome(request=request, index=index, error=gate.fatal)
        if plan.resumed_from is not None:
            outcome = attrs.evolve(outcome, resumed_from=plan.resumed_from)
        return outcome
