"""The SDK side of the benchmarks: ``NanoBanana.generate_many`` as one measured client process.

Throughput runs (targets 1-3 and 5) use the SDK as a user would for the same
job as the raw baseline: one client with ``max_concurrency=cap``, every other
setting at its default (connection pool 100, retries, validation), polling
fixed at the baseline's pace (``--polling fixed:0.5``), and images read into
memory (no ``save_to``), fed a lazy generator of requests and consuming the
outcomes as they stream back.

Polling runs (target 4) use ``--waves W``: W batches of ``-n`` jobs each, one
after the other on the same client, so what ``AdaptivePolling`` learns from
one wave carries over to the next. They compare ``--polling adaptive`` (the
default policy) with ``--polling fixed:2`` (the careful user who follows the
documented 2 s pace).

It measures itself (see ``_common.py``) and writes the figures as JSON to
``--result``, with the monotonic start time of every wave. ``--cprofile FILE``
also writes a cProfile of the run, to find the SDK's hot spots (the figures
of such a run are inflated by the profiler and not comparable).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Iterator
from typing import Any

from _common import (
    Window,
    classify_error,
    client_parser,
    read_ready_file,
    server_ports,
    tcp_sockets,
    write_result,
)

from nanobanana_async import (
    AdaptivePolling,
    FixedPolling,
    ImageRequest,
    NanoBanana,
    PollingPolicy,
)


def _policy(text: str) -> PollingPolicy:
    """``adaptive`` (the default policy), ``adaptive:history=4096,quantile=0.2``, or ``fixed:2``."""
    kind, _, rest = text.partition(":")
    if kind == "adaptive":
        options: dict[str, float] = {}
        for item in filter(None, rest.split(",")):
            name, _, value = item.partition("=")
            options[name] = float(value) if "." in value else int(value)
        return AdaptivePolling(**options)  # type: ignore[arg-type]
    if kind != "fixed" or not rest:
        raise SystemExit(
            f"--polling must be 'adaptive[:NAME=VALUE,...]' or 'fixed:SECONDS': {text!r}"
        )
    return FixedPolling(float(rest))


def _parser() -> argparse.ArgumentParser:
    parser = client_parser(__doc__, jobs_help="jobs per wave", cap_help="max_concurrency")
    parser.add_argument(
        "--polling", default="fixed:0.5", help="adaptive[:NAME=VALUE,...], or fixed:SECONDS"
    )
    parser.add_argument("--waves", type=int, default=1)
    parser.add_argument("--no-download", action="store_true", help="download=False")
    parser.add_argument("--cprofile", metavar="FILE", help="write a cProfile of the run here")
    parser.add_argument(
        "--subscriber", action="store_true", help="count every event with a plain subscriber"
    )
    return parser


def _requests(wave: int, n: int) -> Iterator[ImageRequest]:
    for i in range(n):
        yield ImageRequest(prompt=f"prompt {wave * n + i}", model="nano-banana")


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    info = read_ready_file(args.ready_file)
    window = Window()
    errors: dict[str, int] = {}
    wave_starts: list[float] = []
    done = 0
    result: dict[str, Any] = {"side": "sdk", "polling": args.polling}
    client = NanoBanana(
        api_key=info["api_key"],
        base_url=info["base_url"],
        max_concurrency=args.cap,
        polling=_policy(args.polling),
    )
    counted = 0

    def count(event: object) -> None:
        nonlocal counted
        counted += 1

    async with client:
        if args.subscriber:
            client.subscribe(count)
        window.start()
        try:
            async with asyncio.timeout(args.max_seconds):
                for wave in range(args.waves):
                    wave_starts.append(time.monotonic())
                    outcomes = client.generate_many(
                        _requests(wave, args.n), download=not args.no_download
                    )
                    async for outcome in outcomes:
                        done += 1
                        if outcome.error is not None:
                            kind = classify_error(outcome.error)
                            errors[kind] = errors.get(kind, 0) + 1
        except Exception as exc:  # a crash of the stream itself, or the time limit
            kind = classify_error(exc)
            errors[kind] = errors.get(kind, 0) + 1
        await window.stop()
        result["sockets"] = tcp_sockets(server_ports(info))
    jobs = args.n * args.waves
    result.update(window.figures(jobs))
    result.update(errors=errors, ok=not errors and done == jobs, wave_starts=wave_starts)
    if args.subscriber:
        result["events"] = counted
    return result


def main() -> int:
    """Run the batch (or waves), write the result file, exit 0 when every job succeeded."""
    args = _parser().parse_args()
    if args.cprofile:
        import cProfile

        with cProfile.Profile() as profiler:
            result = asyncio.run(_run(args))
        profiler.dump_stats(args.cprofile)
    else:
        result = asyncio.run(_run(args))
    result.update(n=args.n * args.waves, cap=args.cap)
    write_result(args.result, result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
