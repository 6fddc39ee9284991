"""How long simulated jobs take: per model and resolution, seeded, scalable.

A job spends ``queue_seconds`` queued, then a processing time drawn uniformly
from its model's range and multiplied by its resolution's factor; ``scale``
shrinks or stretches the whole profile, so the same shape serves tests (fast),
the demo (seconds) and benchmarks (job times as the service reports them in the field).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from types import MappingProxyType

import attrs

#: Processing seconds at 1k, per model, as reported for the real service.
_FIELD_SECONDS: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "nano-banana": (6.0, 12.0),
        "nano-banana-2": (10.0, 18.0),
        "nano-banana-2-stable": (10.0, 18.0),
        "nano-banana-pro": (14.0, 24.0),
        "nano-banana-pro-stable": (14.0, 24.0),
    }
)
#: 2k takes about twice as long as 1k, 4k about three and a half times.
_FIELD_FACTORS: Mapping[str, float] = MappingProxyType({"1k": 1.0, "2k": 2.0, "4k": 3.5})
_FIELD_QUEUE_SECONDS = 1.0


def _ranges(value: Mapping[str, tuple[float, float]]) -> Mapping[str, tuple[float, float]]:
    return MappingProxyType({str(k): (float(lo), float(hi)) for k, (lo, hi) in value.items()})


def _factors(value: Mapping[str, float]) -> Mapping[str, float]:
    return MappingProxyType({str(k): float(v) for k, v in value.items()})


def _pair(value: tuple[float, float]) -> tuple[float, float]:
    low, high = value
    return float(low), float(high)


def _check_range(name: str, low: float, high: float) -> None:
    if not (math.isfinite(low) and math.isfinite(high) and 0.0 <= low <= high):
        raise ValueError(f"{name} must be a finite range 0 <= min <= max, got ({low}, {high})")


@attrs.frozen
class LatencyProfile:
    """Job durations for the simulator: queue time plus a per-model, per-resolution draw.

    Use the classmethods for the usual shapes; build one directly for a custom mix.
    Models missing from ``base_seconds`` use ``default_seconds``; resolutions
    missing from ``resolution_factor`` use 1.0.
    """

    queue_seconds: float = attrs.field(default=0.0, converter=float)
    base_seconds: Mapping[str, tuple[float, float]] = attrs.field(factory=dict, converter=_ranges)
    resolution_factor: Mapping[str, float] = attrs.field(factory=dict, converter=_factors)
    default_seconds: tuple[float, float] = attrs.field(default=(0.0, 0.0), converter=_pair)
    scale: float = attrs.field(default=1.0, converter=float)

    def __attrs_post_init__(self) -> None:
        for name, value in (("queue_seconds", self.queue_seconds), ("scale", self.scale)):
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
        _check_range("default_seconds", *self.default_seconds)
        for model, (low, high) in self.base_seconds.items():
            _check_range(f"base_seconds[{model!r}]", low, high)
        for resolution, factor in self.resolution_factor.items():
            if not (math.isfinite(factor) and factor >= 0.0):
                raise ValueError(f"resolution_factor[{resolution!r}] must be finite and >= 0")

    @classmethod
    def realistic(cls) -> LatencyProfile:
        """The field figures: nano-banana-pro 1k ~15-25 s, 2k ~30-50 s, 4k ~50-90 s."""
        return cls(
            queue_seconds=_FIELD_QUEUE_SECONDS,
            base_seconds=_FIELD_SECONDS,
            resolution_factor=_FIELD_FACTORS,
            default_seconds=(10.0, 20.0),
        )

    @classmethod
    def demo(cls) -> LatencyProfile:
        """The realistic shape at 1/20 scale (about 0.3-4.5 s), for demos that finish quickly."""
        return attrs.evolve(cls.realistic(), scale=0.05)

    @classmethod
    def fast(cls) -> LatencyProfile:
        """The realistic shape at 1/500 scale (about 0.01-0.2 s), for tests."""
        return attrs.evolve(cls.realistic(), scale=0.002)

    @classmethod
    def instant(cls) -> LatencyProfile:
        """No waiting at all: every job is terminal at its first poll."""
        return cls()

    #: The profiles ``named`` knows: realistic, demo (1/20 of it), fast (1/500), instant.
    NAMES = ("realistic", "demo", "fast", "instant")

    @classmethod
    def named(cls, name: str) -> LatencyProfile:
        """The profile called ``name`` (one of ``NAMES``); ValueError for any other name."""
        if name not in cls.NAMES:
            raise ValueError(f"unknown latency profile {name!r}: use one of {', '.join(cls.NAMES)}")
        factory: Callable[[], LatencyProfile] = getattr(cls, name)
        return factory()

    @classmethod
    def uniform(cls, low: float, high: float) -> LatencyProfile:
        """Every job takes a uniform draw from [low, high] seconds, whatever its model."""
        return cls(default_seconds=(low, high))

    def sample_phases(
        self, model: str, resolution: str | None, rng: random.Random
    ) -> tuple[float, float]:
        """Draw one job's (queued seconds, processing seconds)."""
        low, high = self.base_seconds.get(model, self.default_seconds)
        factor = self.resolution_factor.get(resolution, 1.0) if resolution else 1.0
        processing = rng.uniform(low, high) * factor * self.scale
        return self.queue_seconds * self.scale, processing

    def sample(self, model: str, resolution: str | None, rng: random.Random) -> float:
        """Draw one job's total duration in seconds (queue plus processing)."""
        queued, processing = self.sample_phases(model, resolution, rng)
        return queued + processing
