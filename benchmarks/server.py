"""The benchmark server: the package's simulator, set up for load, in its own process.

It serves the simulated API and file host on 127.0.0.1 with every job taking a
uniform draw from ``--job-seconds LOW HIGH`` (``LatencyProfile.uniform``),
images of ``--image-size`` pixels on the long side (266 px square PNGs are
about 200 KiB; plain pictures cached whole, ``caption_images=False``, so
serving an image costs a lookup as it always did and results stay
comparable), and no per-request log (``record_requests=False``). Once
listening it writes ``{base_url, file_host_url, api_key}`` to ``--ready-file``.
It stops on SIGTERM or SIGINT, and by itself after ``--max-seconds`` whatever
happens, so a benchmark can never leave it behind.

Per-task timings (``completes_at``, ``poll_times``) and counters are read over
HTTP from ``{base_url}/_sim/tasks`` and ``{base_url}/_sim/counters``; all times
are ``time.monotonic()`` of this machine, which on Linux is one system-wide
clock, so they compare directly with the clients' own readings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

from nanobanana_async.testing import LatencyProfile, Simulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument(
        "--job-seconds", type=float, nargs=2, default=(1.75, 2.25), metavar=("LOW", "HIGH")
    )
    parser.add_argument("--image-size", type=int, default=266, metavar="PX")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    return parser


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    low, high = args.job_seconds
    simulator = Simulator(
        latency=LatencyProfile.uniform(low, high),
        seed=args.seed,
        image_long_side=args.image_size,
        record_requests=False,
        caption_images=False,
    )
    async with simulator as sim:
        info = {
            "base_url": sim.base_url,
            "file_host_url": sim.file_host_url,
            "api_key": sim.api_key,
        }
        partial = args.ready_file.with_name(args.ready_file.name + ".part")
        partial.write_text(json.dumps(info), encoding="utf-8")
        os.replace(partial, args.ready_file)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.max_seconds)


def main() -> int:
    """Serve until a signal or the time limit."""
    asyncio.run(_serve(_parser().parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
