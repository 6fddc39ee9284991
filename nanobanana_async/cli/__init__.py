"""The ``nanobanana`` command: run a prompt file, generate one image, or serve the simulator.

Needs the ``cli`` extra (``pip install "nanobanana-async[cli]"``) for rich.
Exit codes: 0 when every image was produced (and for a ``--dry-run`` of
valid input), 1 when some failed, 2 for usage or configuration errors
(such as a missing or rejected API key, or a path that cannot be used:
those are found before anything is sent or created on disk), 3 when
``--max-images`` left inputs unsent and nothing failed (a rerun goes on).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from nanobanana_async import MODELS, RESOLUTIONS, SIZES, NanoBananaError

if TYPE_CHECKING:
    from rich.console import Console

    from ._cost import PriceTable

__all__ = ["main"]

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


def report_error(error: object) -> None:
    """One line on standard error, never a traceback."""
    text = " ".join(str(error).split())
    print(f"nanobanana: error: {text}", file=sys.stderr)


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nanobanana`` console script; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["simulate"]:
        from nanobanana_async.testing import serve_command

        return serve_command(args_list[1:], prog="nanobanana simulate")
    try:
        from rich.console import Console
    except ImportError:
        print(
            "the nanobanana command needs rich: pip install 'nanobanana-async[cli]'",
            file=sys.stderr,
        )
        return 2
    parser = build_parser()
    args = parser.parse_args(args_list)
    if args.command == "journal":
        return _journal(args, Console(soft_wrap=True))
    if getattr(args, "concurrency", 1) < 1:
        parser.error("--concurrency must be at least 1")
    if args.command == "run":
        _check_postgres_options(args, parser)
    dry_run = getattr(args, "dry_run", False)
    try:
        if not dry_run:  # a dry run sends nothing, so it needs no key
            _check_key(args)
        _prepare(args, create=not dry_run)
    except (_PathError, NanoBananaError) as exc:
        report_error(exc)
        return 2
    if dry_run:
        return _dry_run(args, Console(soft_wrap=True))
    return _run_async(args, Console(soft_wrap=True))


def _check_postgres_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """--batch and --lease-seconds mean something only with a PostgreSQL journal: say so."""
    from nanobanana_async import PostgresJournal

    shared = args.journal is not None and PostgresJournal.is_url(args.journal)
    if args.lease_seconds is None:
        args.lease_seconds = 30.0
    elif not shared:
        parser.error("--lease-seconds is for a PostgreSQL journal (--journal postgresql://...)")
    if args.batch is not None and not shared:
        parser.error(
            "--batch names a batch in a PostgreSQL journal (--journal postgresql://...); "
            "a SQLite journal holds one batch"
        )


def _check_key(args: argparse.Namespace) -> None:
    """Without --simulate a key is needed: say so before anything is created."""
    from nanobanana_async import API_KEY_ENV, ConfigurationError

    if not args.simulate and not os.environ.get(API_KEY_ENV):
        raise ConfigurationError(
            f"no API key: set {API_KEY_ENV}, or pass --simulate to run on the built-in simulator"
        )


class _PathError(Exception):
    """A path given on the command line cannot be used; the message says which and why."""


def _prepare(args: argparse.Namespace, *, create: bool = True) -> None:
    """Check every path of a run or generate, then create ``--out`` (unless not ``create``).

    A mistake raises before anything is created or a client starts; the prompt
    file is read once here (``count_prompts``) to prove it is UTF-8 text, and
    its count kept on ``args.prompt_count`` for the progress bar.
    """
    from nanobanana_async import PostgresJournal

    from ._inputs import PromptSource, count_prompts
    from ._run import JOURNAL_NAME

    out = Path(args.out)
    try:
        if args.command == "run":
            _check_prompt_file(args.prompts)
            _check_out(out)
            if not (args.journal and PostgresJournal.is_url(args.journal)):
                _check_journal(Path(args.journal) if args.journal else out / JOURNAL_NAME)
            if args.log_json and create:
                _check_log_file(Path(args.log_json))
            args.prompt_count = count_prompts(PromptSource(args.prompts))
            if args.prompt_count == 0:
                raise _PathError(
                    f"{args.prompts} holds no prompt (only blank lines and '#' comments): "
                    "nothing to do"
                )
        else:
            _check_out(out)
        if create:
            out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise _PathError(f"cannot use{where}: {exc.strerror or exc}") from None


def _check_log_file(path: Path) -> None:
    """The --log-json file: a file (new or existing) in an existing folder."""
    if path.is_dir():
        raise _PathError(f"--log-json {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise _PathError(f"--log-json {path}: the folder {path.parent} does not exist")
    with path.open("a", encoding="utf-8"):
        pass


def _check_prompt_file(name: str) -> None:
    """A prompt file must be an existing regular file ('-' is standard input)."""
    if name == "-":
        return
    try:
        mode = os.stat(name).st_mode
    except FileNotFoundError:
        raise _PathError(f"prompt file {name} does not exist") from None
    if stat.S_ISDIR(mode):
        raise _PathError(f"prompt file {name} is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise _PathError(f"prompt file {name} is not a regular file (use '-' for standard input)")
    if not os.access(name, os.R_OK):
        raise _PathError(f"prompt file {name} cannot be read: permission denied")


def _check_out(out: Path) -> None:
    """``--out`` must be a writable folder, or creatable as one; nothing is created here."""
    existing = _nearest_existing("--out", out)
    if existing == out and not out.is_dir():
        raise _PathError(f"--out {out} exists and is not a folder")
    _check_creatable("--out", out, existing)


def _check_journal(journal: Path) -> None:
    """The journal must be a file, or creatable as one, in a writable folder."""
    if journal.is_dir():
        raise _PathError(f"journal {journal} is a folder, not a file")
    _check_creatable("journal", journal, _nearest_existing("journal", journal.parent))
    if journal.exists() and not os.access(journal, os.R_OK | os.W_OK):
        raise _PathError(f"journal {journal} cannot be written: permission denied")


def _nearest_existing(what: str, path: Path) -> Path:
    """``path`` itself if it exists, else its closest existing ancestor."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():
            raise _PathError(f"{what} {path}: {existing} is a broken symbolic link")
        existing = existing.parent
    return existing


def _check_creatable(what: str, path: Path, existing: Path) -> None:
    """``path`` can be made under ``existing`` (its closest existing ancestor or itself)."""
    if not existing.is_dir():
        raise _PathError(f"{what} {path} cannot be created: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise _PathError(f"{what} {path} cannot be written: no write permission in {existing}")


def _journal(args: argparse.Namespace, console: Console) -> int:
    from nanobanana_async import JournalError

    from ._journal_cmd import journal_command

    try:
        return journal_command(args, console)
    except (JournalError, NanoBananaError) as exc:
        report_error(exc)
        return 2


def _dry_run(args: argparse.Namespace, console: Console) -> int:
    from nanobanana_async import JournalError

    from ._dry_run import dry_run_command

    try:
        return dry_run_command(args, console)
    except (JournalError, _PathError) as exc:
        report_error(exc)
        return 2


def _run_async(args: argparse.Namespace, console: Console) -> int:
    import anyio

    from ._run import EXIT_USAGE, generate_command, run_command

    command = run_command if args.command == "run" else generate_command
    options = {"use_uvloop": True} if importlib.util.find_spec("uvloop") else {}
    try:
        return anyio.run(command, args, console, backend="asyncio", backend_options=options)
    except NanoBananaError as exc:
        report_error(exc)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if args.command != "run":  # a run has already said what it did and how to resume
            print("nanobanana: interrupted", file=sys.stderr)
        return 130
