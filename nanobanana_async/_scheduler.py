"""Running many jobs: lazy input, bounded workers, one outcome per input, streamed back.

The engine is handed a job function and its limits, never the client: a
fixed set of worker tasks pull inputs one at a time and hand each to the job
function, so a million-line input is never held in memory and the number of
live tasks does not grow with it. Outcomes travel to the consumer through a
memory object stream; the consumer never runs inside the batch's task group
(PEP 789). Leaving the loop, raising in it or cancelling it cancels the
batch at once.

Read-ahead is bounded: inputs pulled never exceed the outcomes the consumer
has taken plus ``read_ahead``, so a consumer that pauses stops the pulling
and the creates.

Every job passes the window, the feed and the stream, so they use asyncio's
lock and semaphore and anyio's non-blocking calls: anyio's blocking ones add
a trip through the event loop each (anyio's cancel scopes still apply).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncGenerator, Awaitable, Callable
from types import TracebackType
from typing import Final, Self

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from ._errors import (
    FATAL_ERRORS,
    MaxJobsReachedError,
    NanoBananaError,
    UsageError,
)
from ._feed import BatchInput, InputFeed, Inputs
from ._journal import Journal
from ._limits import BatchPacing, ImageHold
from ._models import Outcome
from ._observe import Observer

__all__ = ["JobFunction", "OutcomeStream", "SendGate"]

#: Seconds a cancelled consumer waits, at most, for its batch to wind down.
_WIND_DOWN: Final = 30.0


def _unwrapped(exc: Exception) -> Exception:
    """An error out of a task group as itself, not in an ExceptionGroup.

    Several jobs failing at once on the same kind of SDK error (a journal that
    went away for good, say) is reported as the first of them.
    """
    while isinstance(exc, ExceptionGroup):
        if len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
            continue
        flat = exc.exceptions
        if all(isinstance(error, NanoBananaError) for error in flat):
            kinds = {type(error) for error in flat}
            if len(kinds) == 1:
                return flat[0]
        break
    return exc


class SendGate:
    """Whether a batch may still send creates, and how many more.

    Two things close it: a fatal error (bad key, no balance: every remaining
    input gets it as its outcome) and an exception raised by the input itself
    (inputs pulled but not yet sent are dropped; jobs already created run to
    their outcome; then the consumer gets the exception). ``max_creates``
    caps the inputs it lets create at all (None: no cap); an input refused by
    the cap is left unsent, and the batch goes on answering the others.
    """

    __slots__ = ("_feed", "creates_left", "fatal", "max_creates")

    def __init__(self, feed: InputFeed, max_creates: int | None = None) -> None:
        self._feed = feed
        self.fatal: NanoBananaError | None = None
        self.max_creates = max_creates
        self.creates_left = max_creates

    def may_create(self) -> bool:
        """False once nothing new may be sent."""
        return self.fatal is None and self._feed.error is None

    def take_create(self) -> bool:
        """Count one input's create against the cap; False when the cap is spent."""
        left = self.creates_left
        if left is None:
            return True
        if left == 0:
            return False
        self.creates_left = left - 1
        return True


class _Hole:
    """Sent in place of an outcome for an input dropped unsent (no outcome will come)."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


class _Late:
    """An outcome of an input left over by another worker: delivered at once, even in order."""

    __slots__ = ("outcome",)

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


#: What travels from the batch to its consumer.
_Item = Outcome | _Hole | _Late

#: What a batch runs for each input: an outcome, or None for an input dropped unsent.
JobFunction = Callable[[BatchInput, SendGate], Awaitable[Outcome | None]]


class _Batch:
    """The producing side of one generate_many call: workers, input feed and stops."""

    def __init__(
        self,
        inputs: Inputs,
        job: JobFunction,
        *,
        workers: int,
        send: MemoryObjectSendStream[_Item],
        window: asyncio.Semaphore,
        journal: Journal | None,
        identify: bool,
        observer: Observer | None,
        batch: int,
        max_creates: int | None,
        pacing: BatchPacing | None,
    ) -> None:
        self.job = job
        self.pacing = pacing
        self.observer = observer
        self.batch = batch
        self.outcomes = self.succeeded = self.skipped = 0
        self.workers = workers
        self.journal = journal
        self.leftovers = journal.leftovers() if journal is not None else None
        self.feed = InputFeed(inputs, identify=identify, leftovers=self.leftovers)
        self.gate = SendGate(self.feed, max_creates)
        self.send = send
        self.window = window
        self.failure: BaseException | None = None
        self.not_requested: int | None = None
        self.scope = anyio.CancelScope()
        self.finished = asyncio.Event()

    async def run(self) -> None:
        """Run every input to an outcome; a crash is kept for the consumer, never raised here."""
        journal, observer = self.journal, self.observer
        try:
            with self.scope:
                async with self.send, contextlib.AsyncExitStack() as stack:
                    if observer is not None:
                        observer.batch_started(self.batch)
                        # Before the stream closes: the consumer's loop ends after this event.
                        stack.callback(self._report_finished, observer)
                    if journal is not None:
                        await stack.enter_async_context(journal)
                        journal.claim_for_batch()
                        stack.callback(journal.release_from_batch)
                        await stack.enter_async_context(journal.working(self.pacing))
                        if isinstance(self.leftovers, AsyncGenerator):
                            stack.push_async_callback(self.leftovers.aclose)
                    async with anyio.create_task_group() as workers:
                        for _ in range(self.workers):
                            workers.start_soon(self._work)
                    self.failure = self.feed.error
                    if journal is not None and self.feed.error is None:
                        assert self.feed.occurrences is not None
                        self.not_requested = await journal.count_unrequested(self.feed.occurrences)
        except Exception as exc:  # handed to the consumer, who re-raises it
            self.failure = _unwrapped(exc)
        finally:
            self.finished.set()

    def _report_finished(self, observer: Observer) -> None:
        observer.batch_finished(
            self.batch, outcomes=self.outcomes, succeeded=self.succeeded, skipped=self.skipped
        )

    async def _work(self) -> None:
        gate, job = self.gate, self.job
        while True:
            await self.window.acquire()
            try:
                pulled = await self.feed.next()
            except BaseException:
                self.window.release()
                raise
            if pulled is None:
                self.window.release()
                return
            index, late = pulled.index, pulled.late
            # Passed straight on: a local would keep each worker's last outcome (and its
            # image bytes) alive for the whole of its next job. The buffer is unbounded
            # (the window bounds it), so sending never waits.
            outcome = await job(pulled, gate)
            if pulled.elsewhere:
                self.feed.left_elsewhere(pulled)
            del pulled
            if outcome is None:
                # Dropped unsent (the input raised meanwhile, or another worker has it):
                # an ordered consumer is told not to wait for this index.
                self.window.release()
                if not late:
                    self.send.send_nowait(_Hole(index))
                continue
            self.outcomes += 1
            error = outcome.error
            if error is None:
                self.succeeded += 1
            elif isinstance(error, MaxJobsReachedError):
                self.skipped += 1
            elif gate.fatal is None and isinstance(error, FATAL_ERRORS):
                gate.fatal = error
            self.send.send_nowait(_Late(outcome) if late else outcome)
            del outcome, error


class OutcomeStream:
    """The outcomes of a ``generate_many`` call, one per input, as an async iterator.

    Use it directly with ``async for``, or as ``async with ... as outcomes``
    for cleanup at a point of your choosing. Leaving early, raising in the
    loop body or being cancelled cancels the jobs still in flight. (Leaving
    an ``async for`` early is noticed when its iterator is dropped, which
    CPython does at once; ``async with`` makes the moment explicit.)
    """

    def __init__(
        self,
        inputs: Inputs,
        job: JobFunction,
        *,
        workers: int,
        read_ahead: int,
        ordered: bool,
        host: Callable[[], TaskGroup | None],
        journal: Journal | None = None,
        identify: bool = False,
        held_images: ImageHold | None = None,
        observer: Observer | None = None,
        batch: int = 0,
        max_creates: int | None = None,
        pacing: BatchPacing | None = None,
    ) -> None:
        self._host = host
        self._ordered = ordered
        self._held_images = held_images
        self._window = asyncio.Semaphore(read_ahead)
        send, self._receive = anyio.create_memory_object_stream[_Item](max_buffer_size=math.inf)
        self._batch = _Batch(
            inputs,
            job,
            workers=workers,
            send=send,
            window=self._window,
            journal=journal,
            identify=identify,
            observer=observer,
            batch=batch,
            max_creates=max_creates,
            pacing=pacing,
        )
        self._own_group: TaskGroup | None = None
        self._started = False
        self._finished = False
        self._held: dict[int, Outcome | None] = {}  # None: a hole
        self._next_index = 0

    def _start(self, group: TaskGroup | None) -> None:
        if self._started:
            return
        group = group or self._host()
        if group is None:
            raise UsageError(
                "iterate generate_many inside 'async with NanoBanana(...) as client', or "
                "open the stream itself: 'async with client.generate_many(...) as outcomes'"
            )
        self._started = True
        group.start_soon(self._batch.run)

    async def __aenter__(self) -> Self:
        self._own_group = anyio.create_task_group()
        await self._own_group.__aenter__()
        self._start(self._own_group)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self.cancel()
        group, self._own_group = self._own_group, None
        assert group is not None
        # The batch never raises into its group; the body's own exception propagates as is.
        await group.__aexit__(None, None, None)
        return None

    def __aiter__(self) -> _Cursor:
        return _Cursor(self)

    @property
    def batch(self) -> int:
        """This call's number on its client (1, 2, ...): the ``batch`` of the events it reports."""
        return self._batch.batch

    @property
    def not_requested(self) -> int | None:
        """Journal entries this input no longer asks for (lines edited or deleted since).

        Their images stay where they are; they are not failures. None without a
        journal, and until the batch has read its whole input.
        """
        return self._batch.not_requested

    @property
    def not_attempted(self) -> int:
        """Inputs left unsent so far because the ``max_jobs`` cap was spent (0 without a cap)."""
        return self._batch.skipped

    async def __anext__(self) -> Outcome:
        self._start(None)
        try:
            return await self._next()
        except BaseException:
            self.cancel()
            # Wind the batch down before the error goes on, so a rerun that follows at
            # once finds the journal and the folder free (bounded: a create on the wire
            # gets its grace period, then everything stops).
            with anyio.move_on_after(_WIND_DOWN, shield=True):
                await self._batch.finished.wait()
            raise

    async def _next(self) -> Outcome:
        while True:
            if self._ordered and self._next_index in self._held:
                ready = self._held.pop(self._next_index)
                if ready is None:  # a hole: nothing comes for this index
                    self._next_index += 1
                    continue
                return self._deliver(ready)
            item: _Item | None
            try:
                # Drain what is ready without a trip through the event loop per item,
                # so a busy loop cannot leave finished outcomes piling up.
                item = self._receive.receive_nowait()
            except anyio.WouldBlock:
                item = None
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                item = None
            try:
                if item is None:
                    item = await self._receive.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                self._finished = True
                if self._batch.failure is not None:
                    raise self._batch.failure from None
                raise StopAsyncIteration from None
            late = False
            if type(item) is not Outcome:
                if isinstance(item, _Hole):
                    if self._ordered:
                        self._held[item.index] = None
                    continue
                assert isinstance(item, _Late)
                item, late = item.outcome, True
            held = self._held_images
            if held is not None and item.data is not None:
                held.give_back()  # the image is the consumer's now (held for order, at worst)
            if not self._ordered or late:
                return self._deliver(item, in_order=not late)
            self._held[item.index] = item

    def _deliver(self, outcome: Outcome, *, in_order: bool = True) -> Outcome:
        if in_order:
            self._next_index += 1
        self._window.release()
        return outcome

    def cancel(self) -> None:
        """Stop the batch now: jobs in flight are cancelled and no new request starts."""
        self._receive.close()
        self._stopping()
        self._batch.scope.cancel()

    def _abandon(self) -> None:
        """Stop an unfinished batch whose consumer is gone (called from finalizers)."""
        self._receive.close()
        if not self._started:
            self._batch.send.close()
        elif not self._finished:
            self._stopping()
            # Finalizers may run after the event loop is gone; then there is nothing to stop.
            with contextlib.suppress(RuntimeError):
                self._batch.scope.cancel()

    def _stopping(self) -> None:
        """Tell the journal: a rerun of this batch may wait for it to close."""
        if self._batch.journal is not None and not self._batch.finished.is_set():
            self._batch.journal.stopping()

    def __del__(self) -> None:
        if hasattr(self, "_batch"):  # not when __init__ refused its input
            self._abandon()


class _Cursor:
    """The iterator of one ``async for`` over an OutcomeStream.

    Only the loop holds it, so when the loop is left early (break, return,
    an exception) it is dropped at once, and dropping it stops the batch,
    even when the stream itself is still held in a variable.
    """

    __slots__ = ("_stream",)

    def __init__(self, stream: OutcomeStream) -> None:
        self._stream = stream

    def __aiter__(self) -> _Cursor:
        return self

    async def __anext__(self) -> Outcome:
        return await self._stream.__anext__()

    def __del__(self) -> None:
        self._stream._abandon()
