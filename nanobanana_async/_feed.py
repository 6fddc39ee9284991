"""A batch's input: pulled lazily, one item at a time, numbered and identified in order.

Every worker of a batch pulls from one ``InputFeed``; what it hands out is a
``BatchInput``: the input's position, its request (or why it is not one),
and, for a batch with a journal or a folder, what the journal knows it by
(request fingerprint and occurrence). Once the input is read, a journal
shared with other workers may hand over the inputs they left unfinished.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any, Final

import anyio

from ._errors import InvalidRequestError, UsageError
from ._journal import JournalEntry, request_fingerprint
from ._models import ImageRequest, as_request

__all__ = ["BatchInput", "InputFeed", "Inputs"]

Inputs = Iterable[ImageRequest | str] | AsyncIterable[ImageRequest | str]


#: What the input's iterator gives back once it has nothing more.
_END: Final = object()


class BatchInput:
    """One pulled input: its position, its request (or why it is not one) and its identity."""

    __slots__ = ("elsewhere", "error", "fingerprint", "index", "late", "occurrence", "request")

    def __init__(self, index: int, item: object, occurrences: dict[str, int] | None) -> None:
        """Input number ``index``; ``occurrences`` (fingerprint to count so far) identifies it."""
        self.index = index
        self.late = False  # left over by another worker: its index is not in this input's order
        self.elsewhere = False  # another worker of a shared journal holds it: left to them
        self.request: ImageRequest | None = None
        self.error: InvalidRequestError | None = None
        self.fingerprint = ""
        self.occurrence = 0
        try:
            self.request = as_request(item)
        except InvalidRequestError as exc:
            self.error = exc
            return
        if occurrences is not None:
            self.fingerprint = request_fingerprint(self.request)
            self.occurrence = occurrences.get(self.fingerprint, 0)
            occurrences[self.fingerprint] = self.occurrence + 1

    @classmethod
    def left_over(cls, entry: JournalEntry) -> BatchInput:
        """An input another worker left unfinished: its identity is the row's, not counted."""
        pulled = cls(entry.index, ImageRequest(**entry.request), None)
        pulled.fingerprint, pulled.occurrence = entry.request_hash, entry.occurrence
        pulled.late = True
        return pulled


class InputFeed:
    """Hands out inputs from a sync or async iterable, one at a time, numbered in order.

    With ``identify``, each input is also told which occurrence of its request
    it is; that count is taken as the input is pulled, so it follows input
    order whatever order the jobs then run in. ``occurrences`` is what the
    whole input asked for once it is exhausted. An exception raised by the
    iterable ends the feed; it is kept in ``error`` for the consumer.
    """

    def __init__(
        self,
        inputs: Inputs,
        *,
        identify: bool,
        leftovers: AsyncIterator[JournalEntry] | None = None,
    ) -> None:
        self._sync: Iterator[Any] | None = None
        self._async: AsyncIterator[Any] | None = None
        if isinstance(inputs, AsyncIterable):
            self._async = aiter(inputs)
        elif isinstance(inputs, Iterable) and not isinstance(inputs, (str, bytes, ImageRequest)):
            self._sync = iter(inputs)
        else:
            raise UsageError(
                "generate_many takes an iterable (or async iterable) of ImageRequest or prompt "
                f"strings, got {type(inputs).__name__}; wrap a single prompt in a list"
            )
        self._lock = asyncio.Lock()  # only async inputs need it: next() on a sync one never yields
        self._next_index = 0
        self.occurrences: dict[str, int] | None = {} if identify else None
        self.exhausted = False
        self.error: Exception | None = None
        self._leftovers = leftovers
        # Inputs of this input that another worker held when they came up (their keys).
        self._left_elsewhere: set[tuple[str, int]] = set()

    def left_elsewhere(self, pulled: BatchInput) -> None:
        """``pulled`` is another worker's; should it come back as a leftover, it is taken."""
        self._left_elsewhere.add((pulled.fingerprint, pulled.occurrence))

    async def next(self) -> BatchInput | None:
        pulled = await self._next_input() if not self.exhausted else None
        if pulled is None and self._leftovers is not None and self.error is None:
            return await self._next_leftover()
        return pulled

    async def _next_leftover(self) -> BatchInput | None:
        """Once the input is read: the inputs a shared journal says other workers left."""
        assert self._leftovers is not None
        while True:
            async with self._lock:  # an async generator cannot be stepped by two tasks at once
                entry = await anext(self._leftovers, None)
            if entry is None:
                return None
            if self._own_job_has(entry):
                continue  # this input's own job, pulled but not yet begun, takes it
            self._left_elsewhere.discard(entry.key)
            return BatchInput.left_over(entry)

    def _own_job_has(self, entry: JournalEntry) -> bool:
        """Whether ``entry`` is one of this input's own, not one left to another worker.

        A row whose lease ran out can be handed over while the job of the
        same input, pulled from this input, has not claimed it yet: running
        both would work on one input twice.
        """
        asked = self.occurrences.get(entry.request_hash, 0) if self.occurrences else 0
        return entry.occurrence < asked and entry.key not in self._left_elsewhere

    async def _next_input(self) -> BatchInput | None:
        if self._sync is not None:
            # A worker handed a window slot just as the batch was cancelled must not pull.
            await anyio.lowlevel.checkpoint_if_cancelled()
            if self.exhausted:
                return None
            try:
                item = next(self._sync, _END)
            except BaseException as exc:
                self._failed(exc)
                return None
            return self._numbered(item)
        assert self._async is not None
        async with self._lock:
            await anyio.lowlevel.checkpoint_if_cancelled()  # as above, for the lock
            if self.exhausted:
                return None
            try:
                item = await anext(self._async, _END)
            except BaseException as exc:
                self._failed(exc)
                return None
            return self._numbered(item)

    def _failed(self, exc: BaseException) -> None:
        self.exhausted = True
        if not isinstance(exc, Exception):
            raise exc  # cancellation, KeyboardInterrupt and the like go on as they are
        self.error = exc

    def _numbered(self, item: object) -> BatchInput | None:
        if item is _END:
            self.exhausted = True
            return None
        index = self._next_index
        self._next_index += 1
        return BatchInput(index, item, self.occurrences)
