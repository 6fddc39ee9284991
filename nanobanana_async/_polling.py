"""Poll policies: when to ask the service whether a task has finished.

A policy answers two questions for a job of a given kind (model and
resolution): how long after create to poll first, and how long to wait
between later polls. It may also learn from the jobs that finished.

``AdaptivePolling`` (the default) keeps the service's pace of at most one
poll per task every 2 s, and learns how long each kind of job takes, so it
skips the polls that could only answer "still processing". ``FixedPolling``
polls at a constant interval chosen by the user.
"""

from __future__ import annotations

import abc
import random
from typing import Final, TypeAlias

import attrs

from ._errors import ConfigurationError

__all__ = ["AdaptivePolling", "FixedPolling", "JobKind", "PollingPolicy"]

#: What jobs are grouped by when learning their duration: (model, resolution).
JobKind: TypeAlias = tuple[str | None, str | None]

#: The service asks for one poll per task every 2-5 s.
SERVICE_MIN_INTERVAL: Final = 2.0


class PollingPolicy(abc.ABC):
    """Decides when a waiting job polls. Subclass it to write your own cadence."""

    @abc.abstractmethod
    def first_delay(self, kind: JobKind) -> float:
        """Seconds between a create (or the start of a wait) and the first poll."""

    @abc.abstractmethod
    def next_delay(self, kind: JobKind, polls: int) -> float:
        """Seconds until the next poll, after ``polls`` polls that found the job unfinished."""

    def observe(self, kind: JobKind, *, last_pending: float | None, finished: float) -> None:  # noqa: B027
        """Learn from a job that finished.

        ``last_pending`` is how long after its start the job was last seen
        unfinished (None if the first poll already found it finished), and
        ``finished`` how long after its start it was seen finished. The job's
        true duration lies between the two. The default learns nothing.
        """


def _positive(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")


@attrs.frozen
class FixedPolling(PollingPolicy):
    """Poll every ``interval`` seconds, the first poll included.

    A knowing choice: intervals under 2 s poll faster than the service asks,
    which is fine against the simulator or for a few urgent jobs.
    """

    interval: float = SERVICE_MIN_INTERVAL

    def __attrs_post_init__(self) -> None:
        _positive("FixedPolling interval", self.interval)

    def first_delay(self, kind: JobKind) -> float:
        """Always ``interval``."""
        return self.interval

    def next_delay(self, kind: JobKind, polls: int) -> float:
        """Always ``interval``."""
        return self.interval


class _Reservoir:
    """A uniform sample of everything observed, so a wave's slowest jobs do not crowd it out.

    Jobs complete in order of duration, so "the last N completions" would hold
    only the slowest jobs of a batch. A reservoir keeps a fair sample of all
    of them; past ``drift`` observations, new ones still enter at a steady
    rate, so the sample follows a service whose job times change.
    """

    __slots__ = ("_quantiles", "drift", "samples", "seen", "size")

    def __init__(self, size: int, drift: int) -> None:
        self.size = size
        self.drift = drift
        self.samples: list[float] = []
        self.seen = 0
        self._quantiles: dict[float, float] = {}

    def add(self, value: float, rng: random.Random) -> None:
        self.seen += 1
        self._quantiles.clear()
        if len(self.samples) < self.size:
            self.samples.append(value)
            return
        slot = rng.randrange(min(self.seen, self.drift))
        if slot < self.size:
            self.samples[slot] = value

    def quantile(self, q: float) -> float:
        cached = self._quantiles.get(q)
        if cached is None:
            ordered = sorted(self.samples)
            cached = self._quantiles[q] = ordered[int(q * (len(ordered) - 1))]
        return cached


class AdaptivePolling(PollingPolicy):
    """Learn each kind of job's duration and poll only when an answer may have changed.

    The rule: with fewer than ``min_samples`` finished jobs of a model and
    resolution, the first poll comes ``interval`` (2 s) after create. Once
    enough have finished on this client, the first poll waits for the
    ``quantile`` (default the 10th percentile) of their durations. A job's
    duration is estimated as the midpoint between the last poll that saw it
    unfinished and the first that saw it finished (unbiased when it may have
    ended anywhere between them); one already finished at its first poll is
    counted an ``interval`` before that poll, so the guess errs early.
    Durations are kept as a uniform sample of every finished job of that
    kind (``history`` of them), not just the latest, since the latest to
    finish in a batch are its slowest. After the first poll, polls come
    every ``interval``. Each job's first poll is shifted by up to ``jitter``
    (a fraction) later, so thousands of jobs created together do not poll
    in lockstep. No delay is ever shorter than ``interval``.

    With job times uniform over 8-30 s, a warm client sends about 0.6x the
    polls of a fixed 2 s poller for the same median delay in noticing a
    finished job (``benchmarks/``, the polling scenario).
    """

    def __init__(
        self,
        *,
        interval: float = SERVICE_MIN_INTERVAL,
        quantile: float = 0.1,
        min_samples: int = 3,
        history: int = 1024,
        jitter: float = 0.1,
        seed: int | None = None,
    ) -> None:
        _positive("AdaptivePolling interval", interval)
        if not 0.0 <= quantile < 1.0:
            raise ConfigurationError(f"quantile must be in [0, 1), got {quantile!r}")
        if min_samples < 1 or history < min_samples:
            raise ConfigurationError("need 1 <= min_samples <= history")
        if not 0.0 <= jitter <= 1.0:
            raise ConfigurationError(f"jitter must be a fraction in [0, 1], got {jitter!r}")
        self.interval = float(interval)
        self.quantile = quantile
        self.min_samples = min_samples
        self.history = history
        self.jitter = jitter
        self._rng = random.Random(seed)
        self._durations: dict[JobKind, _Reservoir] = {}

    def __repr__(self) -> str:
        return (
            f"AdaptivePolling(interval={self.interval}, quantile={self.quantile}, "
            f"learned={sum(d.seen for d in self._durations.values())} jobs)"
        )

    def expected_minimum(self, kind: JobKind) -> float | None:
        """The learned low quantile of this kind's durations, or None while still cold."""
        samples = self._durations.get(kind)
        if samples is None or samples.seen < self.min_samples:
            return None
        return samples.quantile(self.quantile)

    def first_delay(self, kind: JobKind) -> float:
        """``interval`` while cold; the learned low quantile once warm; plus per-job jitter."""
        learned = self.expected_minimum(kind)
        base = self.interval if learned is None else max(self.interval, learned)
        return base * (1.0 + self._rng.uniform(0.0, self.jitter))

    def next_delay(self, kind: JobKind, polls: int) -> float:
        """Every ``interval`` after the first poll."""
        return self.interval

    def observe(self, kind: JobKind, *, last_pending: float | None, finished: float) -> None:
        """Record the job's duration.

        A job seen unfinished is recorded midway between its last unfinished
        and its finished sighting. A job the first poll already found finished
        may have ended long before, so it is recorded one interval earlier: if
        more jobs than the quantile finish before their first poll, the learned
        first delay shrinks instead of creeping up.
        """
        if last_pending is not None:
            estimate = (last_pending + finished) / 2.0
        else:
            estimate = max(0.0, finished - self.interval)
        samples = self._durations.get(kind)
        if samples is None:
            samples = self._durations[kind] = _Reservoir(self.history, drift=16 * self.history)
        samples.add(estimate, self._rng)
