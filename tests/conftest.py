"""Shared fixtures: a simulator on loopback per test, and a client wired to it."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest

from nanobanana_async import Backoff, FixedPolling, NanoBanana, RetryPolicy
from nanobanana_async.testing import LatencyProfile, Simulator

from .journal_backends import journal_backend  # noqa: F401 (a fixture, shared by test modules)
from .pg_server import MISSING, PostgresServer, running_server

#: A key that must never show up anywhere the tests look.
SENTINEL_KEY = "sk-SENTINEL-5b1f0c9e-never-leak"
#: Retries without real waiting, so fault tests run in milliseconds.
_NO_WAIT = Backoff(base=0.001, cap=0.01, floor=0.0)
FAST_RETRY = RetryPolicy(
    create_backoff=_NO_WAIT,
    poll_backoff=_NO_WAIT,
    download_backoff=_NO_WAIT,
    not_found_grace=0.5,
)


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp is asyncio-only."""
    return "asyncio"


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect at teardown, so an unclosed session's ResourceWarning fails the leaking test."""
    yield
    gc.collect()


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """A simulator with fast jobs and the sentinel key."""
    async with Simulator(api_key=SENTINEL_KEY, latency=LatencyProfile.fast(), seed=7) as simulator:
        yield simulator


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[NanoBanana]:
    """A client on the simulator that polls every 20 ms and retries without waiting."""
    async with NanoBanana(
        api_key=sim.api_key,
        base_url=sim.base_url,
        polling=FixedPolling(interval=0.02),
        retry=FAST_RETRY,
    ) as nano:
        yield nano


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture the SDK's DEBUG log records."""
    caplog.set_level(logging.DEBUG, logger="nanobanana_async")
    return caplog


@pytest.fixture
async def no_loop_debug() -> AsyncIterator[None]:
    """Pause asyncio's debug bookkeeping (``-X dev``) for a large run; warnings stay errors.

    ``-X dev`` makes thousands of jobs several times slower; Python-level checks
    (ResourceWarning, never-awaited coroutines) stay on.
    """
    loop = asyncio.get_running_loop()
    was = loop.get_debug()
    loop.set_debug(False)
    try:
        yield
    finally:
        loop.set_debug(was)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The suite's own PostgreSQL server on 127.0.0.1, started on first use.

    Without the server binaries the tests that need it skip, saying how to get
    them; under CI (``CI=true``) they fail instead, so CI never skips them.
    """
    try:
        with running_server() as server:
            yield server
    except RuntimeError as exc:
        if str(exc) != MISSING:
            raise
        if os.environ.get("CI") == "true":
            pytest.fail(MISSING)
        pytest.skip(MISSING)


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on the suite's server, for one test."""
    return postgres_server.create_database(f"test_{secrets.token_hex(6)}")
