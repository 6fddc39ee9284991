"""Does sharing a batch through PostgreSQL cost throughput? Three workers against one process.

Runs the real command line on one standalone simulator: ``--workers`` (3)
processes on one PostgreSQL batch, each at ``--concurrency``, against one
process at ``workers x concurrency`` with the default SQLite journal (and,
for reference, the same one process on PostgreSQL). The sides alternate
for ``--pairs`` rounds and the printed ratio is images/s of the workers
over images/s of the single process (the target: at least 0.9). The
PostgreSQL server is the test suite's own (``tests/pg_server.py``), on
127.0.0.1, removed at the end.

    python -m benchmarks.workers [--prompts 2000] [--pairs 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.pg_server import running_server
from tests.test_cli import simulator_process

TIMEOUT = 600.0
API_KEY = "bench-key"


def run_side(
    base_url: str, prompts: Path, work: Path, *, workers: int, concurrency: int, dsn: str | None
) -> float:
    """Seconds from the first start to the last exit, all prompts saved."""
    env = {"NANOBANANA_BASE_URL": base_url, "NANOBANANA_API_KEY": API_KEY, "PATH": ""}
    batch = f"b{time.monotonic_ns()}"
    started = time.monotonic()
    procs = []
    for n in range(workers):
        argv = [sys.executable, "-m", "nanobanana_async.cli", "run", str(prompts)]
        argv += ["--out", str(work / f"out{n}"), "--concurrency", str(concurrency)]
        if dsn is not None:
            argv += ["--journal", dsn, "--batch", batch]
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL))
    codes = [proc.wait(timeout=TIMEOUT) for proc in procs]
    took = time.monotonic() - started
    if codes != [0] * workers:
        raise RuntimeError(f"a worker failed: exit codes {codes}")
    saved = sum(len(list((work / f"out{n}").glob("*.png"))) for n in range(workers))
    count = sum(1 for _ in prompts.open())
    if saved != count:
        raise RuntimeError(f"{saved} images for {count} prompts")
    shutil.rmtree(work)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="nanobanana-bench-workers-"))
    prompts = home / "prompts.txt"
    prompts.write_text("".join(f"a quiet street, variant {n}\n" for n in range(args.prompts)))
    rates: dict[str, list[float]] = {"workers": [], "one": [], "one-pg": []}
    try:
        simulator = simulator_process(home / "simulator", API_KEY, latency="fast")
        with simulator as base_url, running_server() as server:
            for pair in range(args.pairs):
                sides = [
                    ("workers", args.workers, args.concurrency, True),
                    ("one", 1, args.workers * args.concurrency, False),
                    ("one-pg", 1, args.workers * args.concurrency, True),
                ]
                if pair % 2:
                    sides.reverse()
                for name, workers, concurrency, shared in sides:
                    dsn = server.create_database(f"bench_{name.replace('-', '_')}_{pair}")
                    took = run_side(
                        base_url,
                        prompts,
                        home / name,
                        workers=workers,
                        concurrency=concurrency,
                        dsn=dsn if shared else None,
                    )
                    rates[name].append(args.prompts / took)
                    print(f"pair {pair}: {name:8} {args.prompts / took:7.1f} images/s", flush=True)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    ratios = [w / o for w, o in zip(rates["workers"], rates["one"], strict=True)]
    print(
        f"\n{args.workers} workers x {args.concurrency} on PostgreSQL vs 1 process x "
        f"{args.workers * args.concurrency} on SQLite, {args.prompts} prompts, "
        f"{args.pairs} pairs:\n"
        f"  workers  median {statistics.median(rates['workers']):.1f} images/s\n"
        f"  one      median {statistics.median(rates['one']):.1f} images/s\n"
        f"  one (pg) median {statistics.median(rates['one-pg']):.1f} images/s\n"
        f"  ratio workers/one: median {statistics.median(ratios):.2f} "
        f"(range {min(ratios):.2f}-{max(ratios):.2f}; target >= 0.90)"
    )


if __name__ == "__main__":
    main()
