"""The suite's own PostgreSQL server (``tests/pg_server.py``) does what the journal tests rely on.

It answers on 127.0.0.1 only, with the password and nothing else; each test
gets a database of its own; a restart cuts connections and comes back on the
same port with the data; it never runs as root; and without the server
binaries its tests skip, except under CI, where they fail.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import anyio
import asyncpg
import pytest

from .pg_server import MISSING, PostgresServer

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parent.parent


async def query(dsn: str, sql: str) -> object:
    """One value from a new connection, closed afterwards."""
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def postmaster_pid(server: PostgresServer) -> int:
    """The pid of the server's postmaster, from its pid file."""
    return int((server.data / "postmaster.pid").read_text(encoding="utf-8").split()[0])


def listening_addresses(port: int) -> set[str]:
    """The local addresses (hex, as in /proc/net) of every TCP socket listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text(encoding="ascii").splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_the_dsn_reaches_loopback_with_a_sentinel_password(
    postgres_server: PostgresServer,
) -> None:
    server = postgres_server
    assert server.host == "127.0.0.1"
    assert server.dsn == (
        f"postgresql://nanobanana:{server.password}@127.0.0.1:{server.port}/postgres"
    )
    assert "SENTINEL" in server.password
    assert len(server.password) >= 20  # distinctive enough to look for in any output


async def test_the_server_answers_select_1_over_tcp_with_the_password(
    postgres_server: PostgresServer,
) -> None:
    conn = await asyncpg.connect(postgres_server.dsn)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchval("SELECT host(inet_server_addr())") == "127.0.0.1"
        assert await conn.fetchval("SELECT current_user") == "nanobanana"
    finally:
        await conn.close()


async def test_the_server_listens_on_127_0_0_1_only(postgres_server: PostgresServer) -> None:
    assert await query(postgres_server.dsn, "SHOW listen_addresses") == "127.0.0.1"
    assert listening_addresses(postgres_server.port) == {"0100007F"}  # 127.0.0.1, no IPv6


async def test_a_wrong_or_missing_password_is_refused(postgres_server: PostgresServer) -> None:
    wrong = postgres_server.dsn.replace(postgres_server.password, "not-the-password")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(wrong)
    with pytest.raises(asyncpg.InvalidPasswordError):  # host connections are never trusted
        await asyncpg.connect(
            host=postgres_server.host,
            port=postgres_server.port,
            user=postgres_server.user,
            database="postgres",
            passfile="/nonexistent",
        )


def test_the_trusted_unix_socket_is_for_the_servers_user_only(
    postgres_server: PostgresServer,
) -> None:
    socket = postgres_server.home / f".s.PGSQL.{postgres_server.port}"
    assert socket.stat().st_mode & 0o777 == 0o700


async def test_create_database_gives_databases_that_do_not_share_tables(
    postgres_server: PostgresServer,
) -> None:
    first = postgres_server.create_database("harness_isolation_a")
    second = postgres_server.create_database("harness_isolation_b")
    assert first != second
    conn = await asyncpg.connect(first)
    try:
        await conn.execute("CREATE TABLE only_here (n int)")
    finally:
        await conn.close()
    assert await query(first, "SELECT to_regclass('only_here') IS NOT NULL") is True
    assert await query(second, "SELECT to_regclass('only_here') IS NOT NULL") is False


async def test_postgres_dsn_is_a_fresh_empty_database_per_test(postgres_dsn: str) -> None:
    name = await query(postgres_dsn, "SELECT current_database()")
    assert isinstance(name, str)
    assert name.startswith("test_")
    tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
    assert await query(postgres_dsn, tables) == 0


async def test_restart_cuts_connections_and_comes_back_on_the_same_port_with_the_data(
    postgres_server: PostgresServer, postgres_dsn: str
) -> None:
    port = postgres_server.port
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)")
        old_pid = postmaster_pid(postgres_server)
        await anyio.to_thread.run_sync(postgres_server.restart)
        with pytest.raises((asyncpg.InterfaceError, asyncpg.PostgresError, OSError)):
            await conn.fetchval("SELECT 1")
    finally:
        conn.terminate()
    assert postgres_server.port == port
    assert postmaster_pid(postgres_server) != old_pid
    assert await query(postgres_dsn, "SELECT n FROM kept") == 42


def test_the_server_never_runs_as_root(postgres_server: PostgresServer) -> None:
    pid = postmaster_pid(postgres_server)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert str(postgres_server.data).encode() in cmdline  # the pid is this suite's server
    owner = Path(f"/proc/{pid}").stat().st_uid
    if os.geteuid() == 0:
        assert owner != 0, "PostgreSQL must run as an unprivileged user"
        assert postgres_server.runs_as is not None
        assert owner == pwd.getpwnam(postgres_server.runs_as).pw_uid
    else:
        assert owner == os.geteuid()


#: Runs one test of this module with the server binaries hidden.
_WITHOUT_BINARIES = """
import sys

import pytest

import tests.pg_server

tests.pg_server.find_binaries = lambda: None
sys.exit(pytest.main(["-p", "no:cacheprovider", "-q", "-rs", sys.argv[1]]))
"""


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", "1 error"), ("", "1 skipped")], ids=["ci-fails", "otherwise-skips"]
)
def test_missing_binaries_fail_under_ci_and_skip_elsewhere(ci: str, outcome: str) -> None:
    probe = f"{Path(__file__).name}::test_the_server_never_runs_as_root"
    env = {**os.environ, "CI": ci}
    env.pop("PYTEST_ADDOPTS", None)
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_BINARIES, f"tests/{probe}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert outcome in done.stdout, done.stdout + done.stderr
    assert MISSING in done.stdout
    assert done.returncode == (1 if ci else 0)
