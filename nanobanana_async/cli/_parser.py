"""The ``nanobanana`` command's arguments: every subcommand, option and help text, and their checks.

A value that cannot be right (a negative count, a price for an unknown
model) is refused here, in one line, before anything runs.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from nanobanana_async import MODELS, RESOLUTIONS, SIZES

if TYPE_CHECKING:
    from ._cost import PriceTable

__all__ = ["build_parser"]

_RUN_HELP = """\
Generate an image for every prompt of PROMPTS into --out.

PROMPTS is a .txt file (one prompt a line; blank lines and lines starting
with '#' are skipped), a .jsonl file (one JSON object a line with the
fields prompt, model, resolution, size, image_urls), or '-' for standard
input. A line that is not a valid request is reported with its line number
and skipped (nothing is sent for it); the run goes on and exits 1. Input
that is not UTF-8 text is refused (exit 2) naming its first bad line.

Images are saved as DIR/a-red-fox-3f2a9c1e0b7d5a64.png (a slug of the
prompt and the start of the request's fingerprint; a repeated line gets
-2, -3, ...), so a file keeps its name when lines move; DIR/manifest.jsonl
gets one line per input, with its line number. Existing files are never
overwritten.

Every step is journaled (DIR/.nanobanana-journal.sqlite by default), so
running the same command again after a crash or Ctrl-C resumes: saved
images are skipped, submitted tasks are polled again, and inputs whose
create may have been billed without an answer are listed, not resent
(unless --resubmit-uncertain). Inputs are known by what they ask for, not
their line: insert, delete, reorder or duplicate lines between runs and
only the new requests are sent. One run at a time owns DIR and its
journal; a second is refused (exit 2). 'nanobanana journal DIR' shows
the state. With --simulate, the simulated tasks are kept in DIR too, so
a rerun resumes them as it would on the real service. DIR/index.html is
a contact sheet of the results, rebuilt from the journal.

Paying for images: --dry-run reads the input and the journal and prints
what a run would send (nothing is sent, nothing written); --max-images N
sends at most N creates in this run and exits 3 if inputs were left (a
rerun continues with them); --price turns counts into a spend estimate
from prices you give (the SDK knows none).

Exit codes: 0 all done (or a dry run of valid input), 1 some inputs
failed, 2 a usage or configuration error, 3 --max-images left inputs.
"""


def _request_options(parser: argparse.ArgumentParser, *, batch: bool) -> None:
    each = "every prompt (a JSONL line may set its own)" if batch else "the image"
    parser.add_argument(
        "--out", required=True, metavar="DIR", help=f"folder for the image{'s' if batch else ''}"
    )
    parser.add_argument("--model", choices=MODELS, help=f"model for {each}")
    parser.add_argument("--size", choices=SIZES, help=f"aspect ratio for {each}")
    parser.add_argument(
        "--resolution", type=str.lower, choices=RESOLUTIONS, help=f"resolution for {each}"
    )
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="run against the built-in simulator on 127.0.0.1 (no key needed)",
    )
    parser.add_argument(
        "--simulate-latency",
        choices=("realistic", "demo", "fast", "instant"),
        default="demo",
        metavar="PROFILE",
        help="with --simulate, how long jobs take: realistic (15-90 s), demo (about "
        "0.3-4.5 s, the default), fast (about 0.01-0.2 s) or instant",
    )
    parser.add_argument(
        "--simulate-faults",
        type=_fault_rates,
        default={},
        metavar="KIND=P,...",
        help="with --simulate, random faults per request, e.g. reset=0.05,server_error=0.05,"
        "rate_limit=0.02,truncate=0.01 (seeded, so a rerun sees the same)",
    )
    parser.add_argument(
        "--base-url", help="service base URL (default: $NANOBANANA_BASE_URL or the public one)"
    )
    if batch:
        parser.add_argument(
            "--concurrency", type=int, default=32, metavar="N", help="jobs in flight (default 32)"
        )


def _fault_rates(text: str) -> dict[str, float]:
    from nanobanana_async.testing import FaultRates

    try:
        return FaultRates.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number, 0 or more, got {text!r}")
    return value


def _number(text: str, *, zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 <= value < math.inf) or (value == 0 and not zero):
        allowed = "0 or more" if zero else "more than 0"
        raise argparse.ArgumentTypeError(f"expected a number, {allowed}, got {text!r}")
    return value


def _seconds(text: str) -> float:
    return _number(text, zero=False)


def _rate(text: str) -> float:
    return _number(text, zero=True)


def _prices(text: str) -> PriceTable:
    from ._cost import PriceTable

    try:
        if "=" not in text:
            return PriceTable.load(Path(text))
        return PriceTable.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Parser(argparse.ArgumentParser):
    """argparse with a mistake said in one line and a pointer to --help.

    (The full usage of ``run`` is ten lines of options, which buried the message.)
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``nanobanana`` command."""
    from nanobanana_async import __version__

    parser = _Parser(prog="nanobanana", description="Generate images with the Nano Banana service.")
    parser.add_argument(
        "--version", action="version", version=f"nanobanana {__version__} (nanobanana-async)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="generate every prompt of a file into a folder",
        description=_RUN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("prompts", metavar="PROMPTS", help="prompt file (.txt or .jsonl) or '-'")
    _request_options(run, batch=True)
    run.add_argument("--ordered", action="store_true", help="report results in input order")
    run.add_argument(
        "--journal",
        metavar="PATH|URL",
        help="journal for crash-safe resume: a SQLite file (default: "
        "DIR/.nanobanana-journal.sqlite), or postgresql://user:password@host/db to share "
        "the batch with workers on other machines",
    )
    run.add_argument(
        "--lease-seconds",
        type=_seconds,
        metavar="S",
        help="with a PostgreSQL journal, how long the inputs of a worker that died wait "
        "before other workers take them over (default 30)",
    )
    run.add_argument(
        "--batch",
        metavar="NAME",
        help="with a PostgreSQL journal, the batch's name, the same on every worker "
        "(default: the prompt file's name without its extension)",
    )
    run.add_argument(
        "--max-requests-per-second",
        type=_rate,
        metavar="R",
        help="at most R API calls (creates and status queries) a second, 0 for no limit; with "
        "a PostgreSQL journal the limit is the batch's, split among its live workers, and "
        "kept for the workers that do not set one (default: no limit)",
    )
    run.add_argument(
        "--log-json",
        metavar="FILE",
        help="append every event of the run to FILE as JSON lines",
    )
    run.add_argument(
        "--resubmit-uncertain",
        action="store_true",
        help="on a rerun, send again inputs whose earlier create may have been billed unseen",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print what a run would send (per model and resolution, what the journal already "
        "has, the spend estimate) and stop: nothing is sent, nothing written",
    )
    run.add_argument(
        "--max-images",
        type=_count,
        metavar="N",
        help="send at most N creates in this run (inputs already saved or submitted do not "
        "count); exit 3 if inputs were left, and run again to continue",
    )
    run.add_argument(
        "--price",
        type=_prices,
        action="append",
        default=[],
        metavar="MODEL=PRICE,...|FILE.toml",
        help="your price per image, e.g. nano-banana-pro=0.12,nano-banana-pro:4k=0.24, or a "
        "TOML file of such keys; the summary and --dry-run then estimate the spend",
    )
    one = commands.add_parser(
        "generate",
        help="generate one image into a folder",
        description="Generate one image for PROMPT and save it into --out (named after its "
        "task id). Exit 0 when saved, 1 when the service failed it, 2 for a usage or "
        "configuration error.",
    )
    one.add_argument("prompt", metavar="PROMPT", help="the prompt")
    _request_options(one, batch=False)
    one.add_argument("--timeout", type=float, default=600.0, help="seconds to wait (default 600)")
    journal = commands.add_parser(
        "journal",
        help="show what a batch's journal holds (counts, failed and uncertain inputs)",
        description="Show what the journal of a run holds: how many inputs are saved, "
        "submitted, failed or uncertain, and which. DIR_OR_PATH is a run's --out folder "
        "(its .nanobanana-journal.sqlite) or a journal file. It only reads: safe while a "
        "run is going.",
    )
    journal.add_argument(
        "target",
        metavar="DIR_OR_PATH",
        help="output folder, journal file, or postgresql://... connection string",
    )
    journal.add_argument(
        "--batch", metavar="NAME", help="with a PostgreSQL journal: which batch to show"
    )
    journal.add_argument("--json", action="store_true", help="print JSON for scripts")
    commands.add_parser(
        "simulate",
        help="serve the simulator on 127.0.0.1 (see 'nanobanana simulate --help')",
        add_help=False,
    )
    return parser
