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
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from nanobanana_async import NanoBananaError

from ._parser import build_parser

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["main"]


def report_error(error: object) -> None:
    """One line on standard error, never a traceback."""
    text = " ".join(str(error).split())
    print(f"nanobanana: error: {text}", file=sys.stderr)


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
