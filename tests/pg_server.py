"""A real PostgreSQL server for the tests, on 127.0.0.1 only, started and stopped by the suite.

It uses Debian's server binaries (``initdb``, ``pg_ctl`` from
``/usr/lib/postgresql/<version>/bin``, or on PATH). PostgreSQL refuses to run
as root, so when the tests run as root the cluster belongs to, and runs as,
the unprivileged ``postgres`` user (created by Debian's package) or, failing
that, ``nobody``. Host connections need the password, so a leaked password
would be a real leak. The Unix socket (trusted, no password) is usable only by
the server's own user. Only the server started here is ever stopped, by its
own data directory. Every command is bounded: ``pg_ctl`` waits at most
``_WAIT`` seconds, every subprocess ``_TIMEOUT``; a failure says why, with the
end of the server's log.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["MISSING", "PostgresServer", "find_binaries"]

MISSING = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's postgresql "
    "package (apt-get install postgresql) or put initdb on PATH"
)
_TIMEOUT = 60
#: How long ``pg_ctl -w`` waits for a start or stop, within ``_TIMEOUT``.
_WAIT = 30


def find_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, newest version first, else None."""
    versioned = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parent.parent.name),
        reverse=True,
    )
    for initdb in [*versioned, shutil.which("initdb")]:
        if initdb and (Path(initdb).parent / "pg_ctl").exists():
            return Path(initdb).parent
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PostgresServer:
    """One throwaway cluster; ``dsn`` reaches its ``postgres`` database as ``nanobanana``."""

    user = "nanobanana"
    host = "127.0.0.1"

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        self.password = f"pg-SENTINEL-{secrets.token_hex(8)}"
        self.port = _free_port()
        self.runs_as = self._unprivileged_user()
        # Another user must traverse every parent folder, and a socket path has at most
        # 107 bytes: /tmp gives both, where $TMPDIR may be private or long.
        parent = "/tmp" if self.runs_as is not None and Path("/tmp").is_dir() else None
        self.home = Path(tempfile.mkdtemp(prefix="nanobanana-pg-", dir=parent))
        self.home.chmod(0o755)  # the server's user must reach its data directory
        self.data = self.home / "data"

    @property
    def dsn(self) -> str:
        """The connection string of the ``postgres`` database."""
        return self.database_dsn("postgres")

    def database_dsn(self, name: str) -> str:
        """The connection string of database ``name`` (over TCP, with the password)."""
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{name}"

    @staticmethod
    def _unprivileged_user() -> str | None:
        if os.geteuid() != 0:
            return None
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                pwd.getpwnam(name)
                return name
        raise RuntimeError("running as root and no unprivileged user to run PostgreSQL as")

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        program = self.binaries / argv[0]
        command = [str(program if program.exists() else argv[0]), *argv[1:]]
        if self.runs_as is not None:
            command = ["runuser", "-u", self.runs_as, "--", *command]
        # The caller's PG* variables (PGOPTIONS, PGSSLMODE, ...) must not reach this cluster.
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            cwd=self.home,
            env=env,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{argv[0]} failed (exit {done.returncode}): {done.stderr.strip()}"
                f"{self._log_tail()}"
            )
        return done

    def _log_tail(self, lines: int = 15) -> str:
        try:
            log = (self.home / "log").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\nserver log:\n" + "\n".join(log.splitlines()[-lines:])

    def start(self) -> None:
        """Create the cluster (the first time) and start it; return once it takes connections."""
        if not self.data.exists():
            password_file = self.home / "password"
            with os.fdopen(
                os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w"
            ) as out:
                out.write(self.password + "\n")
            if self.runs_as is not None:
                record = pwd.getpwnam(self.runs_as)
                for path in (self.home, password_file):
                    os.chown(path, record.pw_uid, record.pw_gid)
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                self.user,
                f"--pwfile={password_file}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            )
            password_file.unlink()
        options = (
            f"-c listen_addresses={self.host} -p {self.port} -k {self.home} "
            "-c unix_socket_permissions=0700 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.home / "log"),
            "-w",
            "-t",
            str(_WAIT),
            "-o",
            options,
            "start",
        )

    def stop(self) -> None:
        """Stop the server (fast: open connections are cut); nothing when it is not running."""
        done = self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-m",
            "fast",
            "-w",
            "-t",
            str(_WAIT),
            "stop",
            check=False,
        )
        if done.returncode != 0 and (self.data / "postmaster.pid").exists():
            raise RuntimeError(f"pg_ctl stop failed: {done.stderr.strip()}{self._log_tail()}")

    def restart(self) -> None:
        """Stop and start again on the same port, with the same data."""
        self.stop()
        self.start()

    def create_database(self, name: str) -> str:
        """A new, empty database; its connection string."""
        self._run(
            "psql",
            "-h",
            str(self.home),
            "-p",
            str(self.port),
            "-U",
            self.user,
            "-d",
            "postgres",
            "-c",
            f'CREATE DATABASE "{name}"',
        )
        return self.database_dsn(name)

    def remove(self) -> None:
        """Stop the server and delete its files (the files even when the stop fails)."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.home, ignore_errors=True)


@contextlib.contextmanager
def running_server() -> Iterator[PostgresServer]:
    """A started server until the block ends; RuntimeError(MISSING) without the binaries."""
    binaries = find_binaries()
    if binaries is None:
        raise RuntimeError(MISSING)
    server = PostgresServer(binaries)
    try:
        server.start()
        yield server
    finally:
        server.remove()
