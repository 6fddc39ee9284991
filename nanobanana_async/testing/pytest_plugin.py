"""pytest plugin: the ``nanobanana_simulator`` fixture.

Registered through the ``pytest11`` entry point of this package. The fixture is
async, so it runs under anyio's pytest plugin; aiohttp is asyncio-only, so set
``anyio_backend`` to ``"asyncio"`` in your conftest (tests parametrized on
other backends are skipped for this fixture).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ._latency import LatencyProfile
from ._server import Simulator


@pytest.fixture
async def nanobanana_simulator(anyio_backend: object) -> AsyncIterator[Simulator]:
    """A started simulator with the fast latency profile, closed after the test."""
    backend = anyio_backend if isinstance(anyio_backend, str) else None
    if isinstance(anyio_backend, tuple | list) and anyio_backend:
        backend = str(anyio_backend[0])
    if backend != "asyncio":
        pytest.skip("the Nano Banana simulator runs on aiohttp, which needs the asyncio backend")
    async with Simulator(latency=LatencyProfile.fast()) as sim:
        yield sim
