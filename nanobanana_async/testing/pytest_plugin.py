"""pytest plugin: the ``nanobanana_simulator`` and ``nanobanana_client`` fixtures.

Registered through the ``pytest11`` entry point of this package, so installing
the package is enough. The fixtures are async, so they run under anyio's
pytest plugin; aiohttp is asyncio-only, so set ``anyio_backend`` to
``"asyncio"`` in your conftest (tests parametrized on other backends are
skipped for these fixtures).

- ``nanobanana_simulator``: a started simulator on 127.0.0.1 (fast jobs:
  about 0.01-0.2 s), closed after the test.
- ``nanobanana_client``: an open ``NanoBanana`` on that simulator, polling
  every 20 ms. A client's default polling waits 2 s before its first poll
  (the service's own pace), which would make every ``generate`` in a test
  take two seconds; this one does not.

Mark a test to shape its simulator::

    @pytest.mark.nanobanana(latency="instant", fault_rates={"server_error": 0.2}, seed=7)
    async def test_retries(nanobanana_client, nanobanana_simulator): ...

``latency`` is a profile name (``instant``, ``fast``, ``demo``,
``realistic``) or a ``LatencyProfile``; ``fault_rates`` are the keyword
arguments of ``FaultQueues.set_rates`` (random faults from the start, seeded
by ``seed``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest

from ._latency import LatencyProfile
from ._server import Simulator

if TYPE_CHECKING:
    from nanobanana_async import NanoBanana

__all__ = ["nanobanana_client", "nanobanana_simulator"]

#: Poll interval of the ``nanobanana_client`` fixture, in seconds.
CLIENT_POLL_SECONDS = 0.02


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "nanobanana(latency='fast', fault_rates=None, seed=0): shape the simulator of the "
        "nanobanana_simulator and nanobanana_client fixtures",
    )


def _settings(request: pytest.FixtureRequest) -> tuple[LatencyProfile, Mapping[str, Any], int]:
    marker = request.node.get_closest_marker("nanobanana")
    options: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    unknown = set(options) - {"latency", "fault_rates", "seed"}
    if unknown or (marker is not None and marker.args):
        raise pytest.UsageError(
            "@pytest.mark.nanobanana takes latency=, fault_rates= and seed= only, got "
            f"{sorted(unknown) or list(marker.args if marker else ())}"
        )
    latency = options.get("latency", "fast")
    if isinstance(latency, str):
        try:
            latency = LatencyProfile.named(latency)
        except ValueError as exc:
            raise pytest.UsageError(
                f"@pytest.mark.nanobanana(latency={latency!r}): {exc}, or a LatencyProfile"
            ) from None
    return latency, options.get("fault_rates") or {}, int(options.get("seed", 0))


@pytest.fixture
async def nanobanana_simulator(
    anyio_backend: object, request: pytest.FixtureRequest
) -> AsyncIterator[Simulator]:
    """A started simulator (fast jobs unless marked otherwise), closed after the test."""
    backend = anyio_backend if isinstance(anyio_backend, str) else None
    if isinstance(anyio_backend, tuple | list) and anyio_backend:
        backend = str(anyio_backend[0])
    if backend != "asyncio":
        pytest.skip("the Nano Banana simulator runs on aiohttp, which needs the asyncio backend")
    latency, fault_rates, seed = _settings(request)
    async with Simulator(latency=latency, seed=seed) as sim:
        if fault_rates:
            sim.faults.set_rates(seed=seed, **fault_rates)
        yield sim


@pytest.fixture
async def nanobanana_client(nanobanana_simulator: Simulator) -> AsyncIterator[NanoBanana]:
    """An open NanoBanana on ``nanobanana_simulator``, polling every 20 ms (not after 2 s)."""
    from nanobanana_async import FixedPolling, NanoBanana

    async with NanoBanana(
        api_key=nanobanana_simulator.api_key,
        base_url=nanobanana_simulator.base_url,
        polling=FixedPolling(CLIENT_POLL_SECONDS),
    ) as client:
        yield client
