"""Serve the simulator standalone (``python -m nanobanana_async.testing``, ``nanobanana simulate``).

It listens on 127.0.0.1 only, prints the URLs, the key and ``export`` lines for
the SDK's environment variables, and runs until SIGINT or SIGTERM. With
``--ready-file`` it also writes ``{base_url, file_host_url, api_key}`` as JSON
once listening, so a test or benchmark that starts it as a subprocess knows
when and where to connect. ``--fault-rates reset=0.05,server_error=0.05``
injects seeded random faults (see ``FaultQueues.set_rates``); their counts are
served at ``{base_url}/_sim/faults``. ``--state PATH`` keeps the tasks in a
file, so a simulator restarted on it still answers for them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from ._faults import FaultRates
from ._latency import LatencyProfile
from ._server import Simulator


def _parser(prog: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m nanobanana_async.testing",
        description="Serve a simulated Nano Banana service on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=0, help="API port (default: any free port)")
    parser.add_argument(
        "--file-port", type=int, default=0, help="file host port (default: any free port)"
    )
    parser.add_argument("--api-key", default="sim-key", help="accepted bearer key")
    parser.add_argument(
        "--latency",
        choices=LatencyProfile.NAMES,
        default="demo",
        help="how long jobs take: realistic (the service's own, 15-90 s by model and "
        "resolution), demo (the same shape at 1/20: about 0.3-4.5 s; the default), fast "
        "(1/500: about 0.01-0.2 s), instant (done at the first poll)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (ids, job times)")
    parser.add_argument(
        "--image-size", type=int, default=64, metavar="PX", help="long side of images in pixels"
    )
    parser.add_argument(
        "--base-path", default="/kyyReactApiServer", help="API path prefix (default: %(default)s)"
    )
    parser.add_argument(
        "--ready-file", type=Path, help="write {base_url, file_host_url, api_key} here as JSON"
    )
    parser.add_argument(
        "--fault-rates",
        type=_fault_rates,
        default={},
        metavar="KIND=P,...",
        help="random faults per request, e.g. reset=0.05,server_error=0.05,rate_limit=0.02,"
        "truncate=0.01 (also retry_after=SECONDS, create_first=P)",
    )
    parser.add_argument(
        "--fault-seed", type=int, default=0, help="seed of the random faults (default 0)"
    )
    parser.add_argument(
        "--state", type=Path, metavar="PATH", help="keep the tasks in this file across restarts"
    )
    return parser


def _fault_rates(text: str) -> dict[str, float]:
    """``--fault-rates``: see ``FaultRates.parse``."""
    try:
        return FaultRates.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _write_ready_file(path: Path, sim: Simulator) -> None:
    info = {"base_url": sim.base_url, "file_host_url": sim.file_host_url, "api_key": sim.api_key}
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(info), encoding="utf-8")
    os.replace(partial, path)


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    simulator = Simulator(
        api_key=args.api_key,
        latency=LatencyProfile.named(args.latency),
        seed=args.seed,
        base_path=args.base_path,
        image_long_side=args.image_size,
        port=args.port,
        file_port=args.file_port,
        state_path=args.state,
    )
    if args.fault_rates:
        simulator.faults.set_rates(seed=args.fault_seed, **args.fault_rates)
    async with simulator as sim:
        print(f"Nano Banana simulator ({args.latency} latency) on 127.0.0.1")
        print(f"  base URL:      {sim.base_url}")
        print(f"  file host URL: {sim.file_host_url}")
        print(f"  API key:       {sim.api_key}")
        print(f"export NANOBANANA_BASE_URL={shlex.quote(sim.base_url)}")
        print(f"export NANOBANANA_API_KEY={shlex.quote(sim.api_key)}", flush=True)
        if args.ready_file is not None:
            _write_ready_file(args.ready_file, sim)
        await stop.wait()
    print("simulator stopped", flush=True)


def serve_command(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Serve as ``argv`` says (default: ``sys.argv[1:]``) until SIGINT or SIGTERM."""
    args = _parser(prog).parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
