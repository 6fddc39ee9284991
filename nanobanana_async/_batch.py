"""What generate_many does with each input: answer it from the journal, or run its job.

The batch engine (``_scheduler``) calls a ``BatchJob`` for every input it
pulls; the job looks the input up in the journal (if any), names its file,
and runs it through the client's JobRunner.
"""

from __future__ import annotations

import attrs

from ._errors import MaxJobsReachedError, SubmissionUncertainError
from ._feed import BatchInput
from ._jobs import JobOptions, JobRunner
from ._logs import logger
from ._models import ImageRequest, Outcome
from ._naming import file_stem
from ._observe import JobTrace, Observer
from ._resume import BatchJournal, Resume
from ._scheduler import SendGate

__all__ = ["BatchJob"]


#: The plan of an input no journal knows: run it from its create.
_AFRESH = Resume()


def _report_settled(observer: Observer, job: JobTrace, outcome: Outcome) -> None:
    """An input the journal answers: the job ends as it ended in the run that settled it."""
    if outcome.task is not None:
        job.task_id = outcome.task.id
    if outcome.error is None:
        size = None if outcome.data is None else len(outcome.data)
        observer.saved(job, outcome.path, size, resumed=True)
    elif isinstance(outcome.error, SubmissionUncertainError):
        observer.uncertain(job, outcome.error, resumed=True)
    else:
        observer.failed(job, outcome.error, resumed=True)


class BatchJob:
    """The job function of one generate_many call."""

    __slots__ = ("_batch", "_journal", "_options", "_runner", "_warned")

    def __init__(
        self, runner: JobRunner, options: JobOptions, journal: BatchJournal | None, *, batch: int
    ) -> None:
        self._runner = runner
        self._options = options
        self._journal = journal
        self._batch = batch
        self._warned: set[str] = set()

    def _warn_ignored(self, request: ImageRequest) -> None:
        """Log each setting the service ignores once per batch (the request is still sent)."""
        for warning in request.ignored_settings():
            if warning not in self._warned:
                self._warned.add(warning)
                logger.warning("%s", warning, extra={"batch": self._batch})

    async def __call__(self, pulled: BatchInput, gate: SendGate) -> Outcome | None:
        """The input's outcome; None when it was dropped unsent because its input raised."""
        index, request = pulled.index, pulled.request
        observer = self._runner.observer
        if request is None:
            assert pulled.error is not None
            observer.failed(
                JobTrace(model=None, resolution=None, batch=self._batch, index=index), pulled.error
            )
            return Outcome(request=None, index=index, error=pulled.error)
        job = JobTrace(
            model=request.model, resolution=request.resolution, batch=self._batch, index=index
        )
        if request.resolution is not None:
            self._warn_ignored(request)
        plan = _AFRESH
        if self._journal is not None:
            plan = await self._journal.plan(index, request, pulled.fingerprint, pulled.occurrence)
            if plan.outcome is not None:
                _report_settled(observer, job, plan.outcome)
                return plan.outcome
            if plan.elsewhere:  # another worker sharing the journal has it
                pulled.elsewhere = True
                observer.held_elsewhere(job)
                return None
        if plan.task is None and not gate.take_create():
            assert gate.max_creates is not None
            await plan.recorder.let_go()
            capped = MaxJobsReachedError(gate.max_creates)
            observer.skipped(job, capped)
            return Outcome(request=request, index=index, error=capped)
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
            job=job,
        )
        if outcome is None:  # withheld before its create was sent
            if gate.fatal is None:
                await plan.recorder.let_go()
                return None
            await plan.recorder.not_billed(gate.fatal)
            observer.failed(job, gate.fatal)
            return Outcome(request=request, index=index, error=gate.fatal)
        if plan.resumed_from is not None:
            outcome = attrs.evolve(outcome, resumed_from=plan.resumed_from)
        return outcome
