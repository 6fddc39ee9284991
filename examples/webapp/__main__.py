"""``python -m examples.webapp [--simulate] [--port 8080]``: serve the example app on 127.0.0.1.

With ``--simulate`` the app's client talks to the built-in simulator (no key,
no network beyond loopback); without it, to the real service with the key
in ``NANOBANANA_API_KEY``.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from nanobanana_async import NanoBanana

from .app import make_app


@asynccontextmanager
async def _simulated() -> AsyncIterator[NanoBanana]:
    from nanobanana_async.testing import LatencyProfile, Simulator

    simulator = Simulator(latency=LatencyProfile.demo(), image_long_side=256)
    async with simulator, NanoBanana(api_key=simulator.api_key, base_url=simulator.base_url) as c:
        yield c


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.webapp", description=__doc__)
    parser.add_argument("--simulate", action="store_true", help="use the built-in simulator")
    parser.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)")
    args = parser.parse_args()
    app = make_app(_simulated if args.simulate else NanoBanana)
    # A browser that leaves cancels its handler (and the jobs it started).
    web.run_app(app, host="127.0.0.1", port=args.port, handler_cancellation=True)


if __name__ == "__main__":
    main()
