"""A faithful fake of the Nano Banana service, for tests, demos and benchmarks.

:class:`Simulator` is an aiohttp.web server on 127.0.0.1 with two origins: the
API (``sim.base_url``) and a separate file host (``sim.file_host_url``). It
implements the service's contract (bearer auth, validation, queued -> processing ->
completed/failed on a seeded :class:`LatencyProfile`, real PNG bytes of the
requested aspect ratio showing the first words of their prompt, URL expiry),
injects scheduled faults and counts what it served, so tests can assert on the
server's side of the story::

    from nanobanana_async.testing import Simulator, LatencyProfile, Respond

    async with Simulator(latency=LatencyProfile.fast()) as sim:
        sim.faults.push("create", Respond(502, "<html>Bad gateway</html>", create_first=True))
        ...  # point a client at sim.base_url with sim.api_key
        assert sim.counters.creates == 1

For soak tests, ``sim.faults.set_rates(seed=1, reset=0.05, server_error=0.05,
rate_limit=0.02, truncate=0.01)`` adds seeded random faults and
``sim.faults.injected`` counts them. For faults below HTTP (a reset mid
status line, broken chunking, a bad status line, an untrusted TLS
certificate), :class:`RawFaultServer` is a scripted raw TCP listener on
127.0.0.1 usable as a base URL or an image URL.

Prompt markers (case-insensitive) steer a job's ending: ``[fail]`` (error as a
string), ``[fail-object]`` (error as an object), ``[no-url]`` (completed with
no image URL), ``[never]`` (processing forever), ``[expired]`` (its URL answers
410).

With ``state_path``, the simulator appends each task to a JSON-lines file and
a later simulator on the same file answers for those tasks again, so work
interrupted in one process resumes in the next (``nanobanana run --simulate``
keeps it in its output folder).

Run it standalone with ``python -m nanobanana_async.testing --help``.

In pytest, the ``nanobanana_simulator`` fixture (registered by this package's
pytest plugin) yields a started simulator with the fast profile. aiohttp runs
on asyncio only, so select that backend for anyio's pytest plugin::

    @pytest.fixture
    def anyio_backend() -> str:
        return "asyncio"
"""

from ._counters import RecordedRequest, SimulatorCounters
from ._faults import (
    Delay,
    Endpoint,
    Fault,
    FaultQueues,
    FaultRates,
    InjectedFaults,
    Redirect,
    ResetConnection,
    Respond,
    Slow,
    Truncate,
)
from ._latency import LatencyProfile
from ._raw import RawFaultServer, RawReply, RawRequest, http_response
from ._serve import serve_command
from ._server import Simulator
from ._state import SimTask

__all__ = [
    "Delay",
    "Endpoint",
    "Fault",
    "FaultQueues",
    "FaultRates",
    "InjectedFaults",
    "LatencyProfile",
    "RawFaultServer",
    "RawReply",
    "RawRequest",
    "RecordedRequest",
    "Redirect",
    "ResetConnection",
    "Respond",
    "SimTask",
    "Simulator",
    "SimulatorCounters",
    "Slow",
    "Truncate",
    "http_response",
    "serve_command",
]

for _cls in (
    Delay,
    FaultQueues,
    FaultRates,
    InjectedFaults,
    LatencyProfile,
    RawFaultServer,
    RawReply,
    RawRequest,
    RecordedRequest,
    Redirect,
    ResetConnection,
    Respond,
    SimTask,
    Simulator,
    SimulatorCounters,
    Slow,
    Truncate,
):
    _cls.__module__ = __name__
del _cls
