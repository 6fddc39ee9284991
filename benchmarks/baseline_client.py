"""The raw aiohttp baseline (a hand-written 30-line client), as one measured client process.

This is the 30-line client "any competent user could write": plain aiohttp with
the default ``TCPConnector(limit=100)``, an ``asyncio.Semaphore(cap)``, one task
per job via ``gather``, create, poll every ``--poll-interval`` seconds (sleep
first) until completed or failed, then read the image into memory. No retries,
no validation, no saving. It is the floor the SDK's overhead is measured
against.

Two changes from that sample: every API call carries ``Authorization:
Bearer <key>``, because the simulator (like the service) requires it (the
download does not, as it should not), and ``gather`` is given
``return_exceptions=True``, so a failed job is counted instead of ending
the run. Each job returns its last status, so a job that failed on the server
or was still running after 200 polls is counted as an error too (the SDK
counts both), and a run with any error is not "ok".

``--pool`` runs the variant target 3 compares against at cap 100: the same job
body, but ``cap`` worker tasks pulling prompts lazily from an iterator instead
of one task per job, so its memory does not grow with N.

It measures itself (see ``_common.py``) and writes the figures as JSON to
``--result``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import aiohttp
from _common import (
    Window,
    classify_error,
    client_parser,
    read_ready_file,
    server_ports,
    tcp_sockets,
    write_result,
)


def _parser() -> argparse.ArgumentParser:
    parser = client_parser(__doc__, jobs_help="number of jobs", cap_help="jobs in flight at most")
    parser.add_argument("--poll-interval", type=float, default=0.5)
    parser.add_argument("--pool", action="store_true", help="lazily fed workers, not gather")
    return parser


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    info = read_ready_file(args.ready_file)
    base, interval = info["base_url"], args.poll_interval
    auth = {"Authorization": f"Bearer {info['api_key']}"}  # the one change from the sample
    window = Window()
    errors: dict[str, int] = {}
    result: dict[str, Any] = {"side": "baseline-pool" if args.pool else "baseline"}

    conn = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=conn) as s:
        sem = asyncio.Semaphore(args.cap)

        async def job(i: int) -> str:
            async with sem:
                async with s.post(
                    f"{base}/v1/banana/images",
                    json={"prompt": f"prompt {i}", "model": "nano-banana"},
                    headers=auth,
                ) as r:
                    jid = (await r.json())["id"]
                for _ in range(200):
                    await asyncio.sleep(interval)
                    async with s.get(f"{base}/v1/result/{jid}", headers=auth) as r:
                        d = await r.json()
                    if d["status"] in ("completed", "failed"):
                        break
                if d["status"] == "completed":
                    async with s.get(d["image_url"]) as r:
                        await r.read()
                return str(d["status"])

        async def worker(feed: Iterator[int]) -> None:
            for i in feed:
                _count(await job(i))

        def _count(outcome: object) -> None:
            """An exception, or a job that did not complete, is an error of its kind."""
            if isinstance(outcome, BaseException):
                kind = classify_error(outcome)
            elif isinstance(outcome, str) and outcome != "completed":
                kind = f"job {outcome}"
            else:
                return
            errors[kind] = errors.get(kind, 0) + 1

        outcomes: Sequence[object] = ()
        window.start()
        try:
            async with asyncio.timeout(args.max_seconds):
                if args.pool:
                    feed = iter(range(args.n))
                    workers = (worker(feed) for _ in range(min(args.cap, args.n)))
                    outcomes = await asyncio.gather(*workers, return_exceptions=True)
                else:
                    jobs = (job(i) for i in range(args.n))
                    outcomes = await asyncio.gather(*jobs, return_exceptions=True)
            for outcome in outcomes:  # a job's exception is counted, not raised
                _count(outcome)
        except Exception as exc:  # the time limit
            kind = classify_error(exc)
            errors[kind] = errors.get(kind, 0) + 1
        await window.stop()
        result["sockets"] = tcp_sockets(server_ports(info))
    result.update(window.figures(args.n))
    result["errors"] = errors
    result["ok"] = not errors
    return result


def main() -> int:
    """Run the batch, write the result file, exit 0 when every job finished."""
    args = _parser().parse_args()
    result = asyncio.run(_run(args))
    result.update(n=args.n, cap=args.cap)
    write_result(args.result, result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
