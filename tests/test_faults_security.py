"""The key stays secret, hostile input builds nothing, transport is strict.

Fault cases 30-34 of docs/reliability.md.

The key goes only to the API origin and shows up in no repr, error, log,
journal or file; an id that is not a plain token builds no URL and no path; a
base URL must be https (http only on loopback) with no userinfo; proxies are
used only with trust_env=True; a certificate error is not retried.

Every test runs the real client over loopback against the simulator, a raw
TCP listener (``RawFaultServer``) or a recording proxy, and checks what the
server side saw as well as what the caller got.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import attrs
import pytest
import yarl
from aiohttp import web

from nanobanana_async import (
    ConfigurationError,
    FixedPolling,
    ImageResult,
    InvalidRequestError,
    MalformedResponseError,
    NanoBanana,
    NanoBananaError,
    NetworkError,
    SubmissionUncertainError,
    Task,
    TaskStatus,
)
from nanobanana_async.testing import (
    Fault,
    LatencyProfile,
    RawFaultServer,
    RawReply,
    Redirect,
    ResetConnection,
    Respond,
    Simulator,
    Truncate,
)

from .conftest import FAST_RETRY, SENTINEL_KEY
from .helpers import everything_said_by, stop_process

REPO_ROOT = Path(__file__).resolve().parent.parent
SDK_ENV = ("NANOBANANA_API_KEY", "NANOBANANA_BASE_URL")
PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
NO_PROXY_ENV = ("NO_PROXY", "no_proxy")


@contextlib.asynccontextmanager
async def open_client(base_url: str, **options: Any) -> AsyncIterator[NanoBanana]:
    """A client with the sentinel key, polling every 20 ms and retrying without real waits."""
    settings: dict[str, Any] = {"polling": FixedPolling(interval=0.02), "retry": FAST_RETRY}
    settings.update(options)
    async with NanoBanana(api_key=SENTINEL_KEY, base_url=base_url, **settings) as nano:
        yield nano


def closed_port() -> int:
    """A loopback port that was bound and released: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def files_under(folder: Path) -> list[Path]:
    """Every regular file below ``folder``, hidden ones included."""
    return sorted(path for path in folder.rglob("*") if path.is_file())


def assert_key_absent_from_files(folder: Path) -> None:
    for path in files_under(folder):
        assert SENTINEL_KEY.encode() not in path.read_bytes(), path


# Case 30: the sentinel key is nowhere.


async def _errors_from_the_service(sim: Simulator, nano: NanoBanana) -> list[NanoBananaError]:
    """Provoke, one by one, each error a service answer can cause; echo the key where it can."""
    errors: list[NanoBananaError] = []

    async def attempt(call: Any) -> None:
        try:
            await call()
        except NanoBananaError as exc:
            errors.append(exc)

    echo = f"Authorization: Bearer {SENTINEL_KEY}"
    create_faults: list[Fault] = [
        Respond(401, {"error": {"message": f"bad key {SENTINEL_KEY}"}}),
        Respond(403, f"<html><title>{echo}</title></html>"),
        Respond(429, {"error": echo}, headers={"Retry-After": "999"}),
        Respond(502, f"<html>{SENTINEL_KEY}</html>", create_first=True),
        Respond(200, {"id": "../x", "echo": echo}),
        Respond(200, f"not json {SENTINEL_KEY}", content_type="text/plain"),
        Redirect(307, f"http://127.0.0.1:9/steal?key={SENTINEL_KEY}"),
        ResetConnection(create_first=True),
        Truncate(10),
    ]
    for fault in create_faults:
        sim.faults.push("create", fault)
        await attempt(lambda: nano.submit("a fox"))

    task = await nano.submit("a fox")
    poll_faults = [
        Respond(400, {"message": echo}),
        Respond(401, {"code": 401, "msg": echo}),
        Respond(200, {"id": task.id, "status": "completed", "image_url": None, "x": echo}),
    ]
    for fault in poll_faults:
        sim.faults.push("poll", fault)
        await attempt(lambda: nano.wait(task))
    for _ in range(5):
        sim.faults.push("poll", Respond(503, f"<html>{echo}</html>"))
    await attempt(lambda: nano.wait(task))

    for prompt in ("a fox [fail]", "a fox [fail-object]", "a fox [no-url]", "a fox [expired]"):
        await attempt(lambda prompt=prompt: _generate_and_read(nano, prompt))
    sim.faults.push(
        "download", Respond(200, b"<html>not an image</html>", content_type="image/png")
    )
    await attempt(lambda: _generate_and_read(nano, "a fox"))
    await attempt(lambda: nano.get_task("0123456789abcdef"))
    never = await nano.submit("a fox [never]")
    await attempt(lambda: nano.wait(never, timeout=0.1))
    return errors


async def _generate_and_read(nano: NanoBanana, prompt: str) -> bytes:
    result = await nano.generate(prompt)
    return await result.read()


async def _errors_from_the_network() -> list[NanoBananaError]:
    """Errors that come from the transport: refused, reset mid-answer, a dead TLS-less port."""
    errors: list[NanoBananaError] = []
    async with open_client(f"http://127.0.0.1:{closed_port()}/api") as nano:
        with pytest.raises(NetworkError) as refused:
            await nano.submit("a fox")
        errors.append(refused.value)
    async with (
        RawFaultServer(RawReply.reset_after(20)) as server,
        open_client(server.url + "/api") as nano,
    ):
        with pytest.raises(SubmissionUncertainError) as reset:
            await nano.submit("a fox")
        errors.append(reset.value)
        with pytest.raises(NetworkError) as reset_poll:
            await nano.get_task("abc123")
        errors.append(reset_poll.value)
    return errors


async def test_the_sentinel_key_is_absent_from_reprs_errors_logs_journal_and_files(
    sim: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Case 30: no repr, error (with its chain), DEBUG log, journal or file holds the key."""
    caplog.set_level(logging.DEBUG)  # every logger: the SDK's, aiohttp's, asyncio's
    out = tmp_path / "out"
    journal = tmp_path / "journal.sqlite"
    with anyio.fail_after(30):
        async with open_client(sim.base_url) as nano:
            for text in (repr(nano), str(nano), repr(vars(nano)), repr(vars(nano._http))):
                assert SENTINEL_KEY not in text
            assert SENTINEL_KEY not in repr(vars(nano._runner))
            errors = await _errors_from_the_service(sim, nano)
            result = await nano.generate("a fox")
            await result.save(f"{out}/")
            prompts = ["one", "two [fail]", "three [no-url]", "four"]
            sim.faults.push("create", ResetConnection(create_first=True))
            async for outcome in nano.generate_many(prompts, save_to=out, journal=journal):
                if outcome.error is not None:
                    errors.append(outcome.error)
        errors += await _errors_from_the_network()

    kinds = {type(error).__name__ for error in errors}
    assert len(errors) >= 25, kinds
    assert {
        "AuthenticationError",
        "PermissionDeniedError",
        "RateLimitedError",
        "SubmissionUncertainError",
        "MalformedResponseError",
        "APIError",
        "TaskNotFoundError",
        "ServerError",
        "TaskFailedError",
        "ResultExpiredError",
        "DownloadError",
        "TaskTimeoutError",
        "NetworkError",
    } <= kinds
    for error in errors:
        assert SENTINEL_KEY not in everything_said_by(error), type(error)

    loggers = {record.name for record in caplog.records}
    assert "nanobanana_async" in loggers
    assert SENTINEL_KEY not in caplog.text
    for record in caplog.records:
        assert SENTINEL_KEY not in record.getMessage()
        assert SENTINEL_KEY not in repr(record.args)

    saved = files_under(tmp_path)
    assert any(path.suffix == ".png" for path in saved)
    assert journal in saved
    assert_key_absent_from_files(tmp_path)
    assert sim.counters.auth_failures == 0  # the key was sent, and right, on every API call
    assert sim.counters.file_host_auth_headers == 0


@pytest.mark.parametrize(
    "reply",
    [RawReply.bad_status_line(), RawReply.broken_chunked()],
    ids=["bad-status-line", "broken-chunking"],
)
async def test_errors_from_malformed_http_keep_no_key_in_their_chained_context(
    reply: RawReply,
) -> None:
    """Case 30: a bad status line or broken chunking: the error chain holds no request headers."""
    async with RawFaultServer(reply) as server, open_client(server.url + "/api") as nano:
        errors: list[NanoBananaError] = []
        with anyio.fail_after(10):
            with pytest.raises(SubmissionUncertainError) as uncertain:
                await nano.submit("a fox")
            errors.append(uncertain.value)
            with pytest.raises(NetworkError) as failed:
                await nano.get_task("abc123")
            errors.append(failed.value)
    assert server.connections == 2  # one create, one query; neither resent
    assert [r.authorization for r in server.requests] == [True, True]
    for error in errors:
        assert SENTINEL_KEY not in everything_said_by(error)


def _wait_for_ready_file(ready: Path, process: subprocess.Popen[bytes]) -> dict[str, str]:
    deadline = time.monotonic() + 20
    while not ready.exists():
        assert process.poll() is None, "the simulator exited before it was ready"
        assert time.monotonic() < deadline, "the simulator did not become ready"
        time.sleep(0.02)
    info: dict[str, str] = json.loads(ready.read_text(encoding="utf-8"))
    return info


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SDK_ENV + PROXY_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def test_the_cli_never_shows_or_stores_the_key_through_a_faulty_run(tmp_path: Path) -> None:
    """Case 30: `cli run` against a faulty simulator subprocess: no key in output or any file."""
    prompts = tmp_path / "prompts.txt"
    lines = [f"a quiet harbour number {i}" for i in range(8)] + ["a refused picture [fail]"]
    prompts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    ready = tmp_path / "ready.json"
    simulator = [sys.executable, "-m", "nanobanana_async.testing", "--latency", "instant"]
    simulator += ["--api-key", SENTINEL_KEY, "--ready-file", str(ready), "--fault-seed", "2"]
    simulator += ["--fault-rates", "reset=0.2,server_error=0.15,truncate=0.2"]
    with (tmp_path / "simulator.log").open("wb") as log:
        process = subprocess.Popen(
            simulator, stdout=log, stderr=subprocess.STDOUT, env=_child_env()
        )
        try:
            info = _wait_for_ready_file(ready, process)
            env = _child_env(NANOBANANA_API_KEY=SENTINEL_KEY, NANOBANANA_BASE_URL=info["base_url"])
            command = [sys.executable, "-m", "nanobanana_async.cli", "run", str(prompts)]
            run = subprocess.run(
                [*command, "--out", str(out), "--concurrency", "16"],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=90,
                check=False,
            )
            faults = get_json(info["base_url"] + "/_sim/faults")
        finally:
            stop_process(process)

    text = run.stdout + run.stderr
    assert run.returncode == 1, text
    assert "Traceback" not in text
    assert SENTINEL_KEY not in re.sub(r"\s+", "", text)  # rich may wrap a long word
    assert sum(faults.values()) > 0, faults
    assert faults["create_resets"] + faults["create_server_errors"] > 0, faults
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == len(lines)
    assert "SubmissionUncertainError" in {row["error_type"] for row in manifest}
    assert any(path.name.startswith(".") for path in out.iterdir())  # the run's journal
    assert_key_absent_from_files(out)


def get_json(url: str) -> dict[str, int]:
    """GET a loopback JSON document synchronously (the simulator runs in another process)."""
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url, timeout=10) as response:
        data: dict[str, int] = json.loads(response.read())
        return data


# Case 31: hostile ids build no URL and no path.

HOSTILE_IDS: list[object] = [
    "../../x",
    "a/b",
    "",
    ".",
    "..",
    "CON",
    "nul",
    "COM1",
    "a\x00b",
    "x" * 300,
    "abc\u202edef",
    "\u200fabc",
    "%2e%2e",
    "%2F",
    "a b",
    "abc\n",
    "ａｂｃ",  # noqa: RUF001 - fullwidth letters on purpose
    "a?b=1",
    "a#b",
    None,
    12345,
    ["abc"],
    {"id": "abc"},
    True,
]


@pytest.mark.parametrize("hostile", HOSTILE_IDS, ids=repr)
async def test_a_hostile_id_in_a_create_answer_is_malformed_and_nothing_more_is_sent(
    sim: Simulator, tmp_path: Path, hostile: object
) -> None:
    """Case 31: the create answers a hostile id: malformed (may be billed); no poll, no file."""
    sim.faults.push("create", Respond(200, {"id": hostile, "status": "queued"}))
    async with open_client(sim.base_url) as nano:
        outcomes = [o async for o in nano.generate_many(["a fox"], save_to=tmp_path)]
    [outcome] = outcomes
    assert isinstance(outcome.error, MalformedResponseError)
    assert outcome.error.may_be_billed
    assert outcome.task is None
    assert outcome.path is None
    assert [(r.origin, r.endpoint) for r in sim.requests] == [("api", "create")]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("hostile", HOSTILE_IDS, ids=repr)
async def test_a_hostile_id_in_a_poll_answer_is_malformed_and_nothing_is_fetched(
    sim: Simulator, tmp_path: Path, hostile: object
) -> None:
    """Case 31: the poll answers a hostile id with an image URL: malformed; no download, no file."""
    sim.latency = LatencyProfile.instant()
    async with open_client(sim.base_url) as nano:
        task = await nano.submit("a fox")
        answer = {"id": hostile, "status": "completed", "image_url": sim.image_url(task.id)}
        sim.faults.push("poll", Respond(200, answer))
        with pytest.raises(MalformedResponseError):
            await nano.wait(task)
        sim.faults.push("poll", Respond(200, answer))
        outcomes = [o async for o in nano.generate_many(["a hen"], save_to=tmp_path)]
    # The batch's own create came first; its one poll got the hostile answer.
    [outcome] = outcomes
    assert isinstance(outcome.error, MalformedResponseError)
    assert outcome.path is None
    assert [r.endpoint for r in sim.requests] == ["create", "poll", "create", "poll"]
    assert sim.counters.downloads == 0
    assert list(tmp_path.iterdir()) == []


# Case 32: base URLs: remote http refused, the path prefix kept, userinfo rejected.


@pytest.mark.parametrize(
    "base_url",
    [
        "http://example.com/kyyReactApiServer",
        "http://10.0.0.1/api",
        "http://0.0.0.0:8080/api",
        "http://127.0.0.1.nip.io/api",
        "http://localhost.example.com/api",
        "http://[::ffff:7f00:1]/api",
    ],
)
def test_plain_http_to_a_non_loopback_host_is_refused_unless_opted_in(
    base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Case 32: non-loopback http is a ConfigurationError, also from the environment."""
    with pytest.raises(ConfigurationError, match="plain http"):
        NanoBanana(api_key="k", base_url=base_url)
    monkeypatch.setenv("NANOBANANA_BASE_URL", base_url)
    with pytest.raises(ConfigurationError, match="plain http"):
        NanoBanana(api_key="k")
    opted_in = NanoBanana(api_key="k", base_url=base_url, allow_insecure_http=True)
    assert opted_in.base_url.scheme == "http"


@pytest.mark.parametrize(
    "base_url",
    [
        "http://127.0.0.1:9/api",
        "http://localhost:9/api",
        "http://[::1]:9/api",
        "http://127.8.9.10/a",
    ],
)
def test_plain_http_to_loopback_is_allowed(base_url: str) -> None:
    """Case 32: loopback hosts (the simulator's) may use http without an opt-in."""
    assert NanoBanana(api_key="k", base_url=base_url).base_url == yarl.URL(base_url)


@pytest.mark.parametrize("prefix", ["/kyyAiPower", "/kyyAiPower/", "/gateway/v2/kyyAiPower"])
async def test_the_base_url_path_prefix_is_kept_on_every_api_request(prefix: str) -> None:
    """Case 32: every create and query goes under the base path, trailing slash or not."""
    async with Simulator(
        api_key=SENTINEL_KEY, base_path=prefix, latency=LatencyProfile.instant()
    ) as sim:
        origin = str(yarl.URL(sim.base_url).origin())
        async with open_client(origin + prefix) as nano:
            await (await nano.generate("a fox")).read()
            with pytest.raises(InvalidRequestError, match="task_id"):
                await nano.get_task("..")
        paths = [r.path for r in sim.requests if r.origin == "api"]
    base = "/" + prefix.strip("/")
    assert paths[0] == f"{base}/v1/banana/images"
    assert all(path.startswith(f"{base}/v1/result/") for path in paths[1:])
    assert sim.counters.creates == 1
    assert sim.counters.downloads_completed == 1
    assert [r.endpoint for r in sim.requests].count("other") == 0


@pytest.mark.parametrize(
    "base_url",
    [
        f"https://user:{SENTINEL_KEY}@example.com/api",
        f"https://{SENTINEL_KEY}@example.com/api",
        f"https://:{SENTINEL_KEY}@example.com/api",
        f"http://user:{SENTINEL_KEY}@127.0.0.1:9/api",
    ],
)
def test_userinfo_in_the_base_url_is_refused_without_echoing_it(base_url: str) -> None:
    """Case 32: a user name or password in base_url is refused; the error does not repeat it."""
    with pytest.raises(ConfigurationError, match="user name or password") as caught:
        NanoBanana(api_key="k", base_url=base_url)
    assert SENTINEL_KEY not in everything_said_by(caught.value)


@pytest.mark.parametrize(
    "base_url",
    [f"ftp://user:{SENTINEL_KEY}@example.com/api", f"https://user:{SENTINEL_KEY}@/api"],
)
def test_a_refused_base_url_never_echoes_its_password(base_url: str) -> None:
    """Case 32: whatever else is wrong with it, a base URL's password is not in the error."""
    with pytest.raises(ConfigurationError) as caught:
        NanoBanana(api_key="k", base_url=base_url)
    assert SENTINEL_KEY not in everything_said_by(caught.value)


# Case 33: proxy variables count only with trust_env=True; the key still goes only to the API.


@attrs.frozen
class ProxiedRequest:
    """One request a proxy was asked to forward (header names only, never values)."""

    method: str
    origin: str
    path: str
    authorization: bool
    absolute: bool


class RecordingProxy:
    """A forwarding HTTP proxy on 127.0.0.1 that records every request it is asked to forward."""

    def __init__(self) -> None:
        self.requests: list[ProxiedRequest] = []
        self._runner: web.ServerRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    async def __aenter__(self) -> RecordingProxy:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self._runner = web.ServerRunner(web.Server(self._forward), shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        assert self._session is not None
        await self._runner.cleanup()
        await self._session.close()

    async def _forward(self, request: web.BaseRequest) -> web.StreamResponse:
        # A request for a proxy names its target in absolute form: GET http://host:port/path.
        absolute = request.raw_path.startswith(("http://", "https://"))
        target = request.url
        self.requests.append(
            ProxiedRequest(
                method=request.method,
                origin=str(target.origin()) if absolute else "",
                path=target.path,
                authorization="Authorization" in request.headers,
                absolute=absolute,
            )
        )
        if not absolute or target.host != "127.0.0.1":
            return web.Response(status=502, text="this proxy only forwards to 127.0.0.1")
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",)}
        async with self._session.request(
            request.method,
            target,
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as upstream:
            body = await upstream.read()
            passed = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in ("transfer-encoding", "content-length", "connection")
            }
            return web.Response(status=upstream.status, body=body, headers=passed)


@pytest.fixture
def proxy_env(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Sets every proxy variable to a given URL and clears NO_PROXY (restored afterwards)."""

    def point_at(url: str) -> None:
        for name in PROXY_ENV:
            monkeypatch.setenv(name, url)
        for name in NO_PROXY_ENV:
            monkeypatch.delenv(name, raising=False)

    return point_at


async def _full_round_trip(nano: NanoBanana) -> None:
    result = await nano.generate("a fox")
    await result.read()
    outcomes = [o async for o in nano.generate_many(["one", "two"])]
    assert all(o.ok for o in outcomes)


async def test_proxy_variables_are_ignored_without_trust_env(
    sim: Simulator, proxy_env: Any
) -> None:
    """Case 33: HTTP(S)_PROXY/ALL_PROXY point at a proxy; by default it sees nothing."""
    async with RecordingProxy() as proxy:
        proxy_env(proxy.url)
        with anyio.fail_after(20):
            async with open_client(sim.base_url) as nano:
                await _full_round_trip(nano)
    assert proxy.requests == []
    assert sim.counters.creates == 3
    assert sim.counters.downloads_completed == 3
    assert sim.counters.file_host_auth_headers == 0


async def test_with_trust_env_the_proxy_carries_the_requests_and_the_key_only_api_bound(
    sim: Simulator, proxy_env: Any
) -> None:
    """Case 33: trust_env=True: all requests go through the proxy; only API-bound ones have auth."""
    api_origin = str(yarl.URL(sim.base_url).origin())
    async with RecordingProxy() as proxy:
        proxy_env(proxy.url)
        with anyio.fail_after(20):
            async with open_client(sim.base_url, trust_env=True) as nano:
                await _full_round_trip(nano)
    assert all(r.absolute for r in proxy.requests)
    api = [r for r in proxy.requests if r.origin == api_origin]
    files = [r for r in proxy.requests if r.origin == sim.file_host_url]
    assert len(api) + len(files) == len(proxy.requests)
    assert [r.method for r in api].count("POST") == 3
    assert len(files) == 3
    assert all(r.authorization for r in api)
    assert not any(r.authorization for r in files)
    # What the proxy forwarded is all the simulator saw.
    assert len(sim.requests) == len(proxy.requests)
    assert sim.counters.file_host_auth_headers == 0
    assert sim.counters.auth_failures == 0


async def test_with_trust_env_no_proxy_is_honoured(sim: Simulator, proxy_env: Any) -> None:
    """Case 33: trust_env=True with NO_PROXY=127.0.0.1: the proxy is bypassed."""
    async with RecordingProxy() as proxy:
        proxy_env(proxy.url)
        os.environ["NO_PROXY"] = "127.0.0.1"
        try:
            async with open_client(sim.base_url, trust_env=True) as nano:
                await _full_round_trip(nano)
        finally:
            del os.environ["NO_PROXY"]
    assert proxy.requests == []
    assert sim.counters.creates == 3


def _netrc_for(tmp_path: Path, host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine {host} login someone password netrc-secret\n", encoding="utf-8")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))


async def test_with_trust_env_a_netrc_entry_for_the_api_host_does_not_break_calls(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Case 33: trust_env=True and a netrc entry for the API host: calls still work."""
    _netrc_for(tmp_path, "127.0.0.1", monkeypatch)
    for name in PROXY_ENV:
        monkeypatch.delenv(name, raising=False)
    # Not in 'async with': an error escaping it comes wrapped in an ExceptionGroup.
    nano = NanoBanana(api_key=SENTINEL_KEY, base_url=sim.base_url, trust_env=True)
    try:
        await nano.submit("a fox")
    finally:
        await nano.aclose()
    assert sim.counters.creates == 1


async def test_with_trust_env_downloads_still_carry_no_credentials(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Case 33: trust_env=True and a netrc entry for the file host: downloads carry no auth."""
    _netrc_for(tmp_path, "localhost", monkeypatch)
    for name in PROXY_ENV:
        monkeypatch.delenv(name, raising=False)
    sim.latency = LatencyProfile.instant()
    async with open_client(sim.base_url, trust_env=True) as nano:
        task = await nano.wait(await nano.submit("a fox"))
        assert task.image_url is not None
        elsewhere = task.image_url.replace("127.0.0.1", "localhost")
        data = await ImageResult(attrs.evolve(task, image_url=elsewhere), fetcher=nano).read()
    assert data.startswith(b"\x89PNG")
    assert sim.counters.downloads_completed == 1
    assert sim.counters.file_host_auth_headers == 0


# Case 34: an untrusted TLS certificate is a clear error, not retried.


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for 127.0.0.1 (needs openssl)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a self-signed certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    command += ["-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2"]
    command += ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        command,
        check=True,
        capture_output=True,
        timeout=30,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def _is_certificate_error(error: BaseException) -> bool:
    text = str(error).lower()
    return "tls" in text and "certificate" in text


async def test_a_self_signed_api_certificate_fails_the_create_once_and_clearly(
    self_signed: ssl.SSLContext,
) -> None:
    """Case 34: create over TLS with an untrusted certificate: one handshake, a clear error."""
    ok = RawReply.answer(200, b'{"id":"abc123","status":"queued"}')
    async with (
        RawFaultServer(ok, ssl_context=self_signed) as server,
        open_client(server.url + "/api") as nano,
    ):
        with anyio.fail_after(10), pytest.raises(NetworkError) as caught:
            await nano.submit("a fox")
        with anyio.fail_after(10), pytest.raises(NetworkError) as queried:
            await nano.get_task("abc123")
    error = caught.value
    assert not isinstance(error, SubmissionUncertainError)
    assert _is_certificate_error(error), error
    assert "not billed" in str(error)
    assert (error.sent, error.retryable) == (False, False)
    assert _is_certificate_error(queried.value)
    assert server.connections == 2  # one handshake per call: nothing was retried
    assert server.tls_failures == 2
    assert server.requests == []  # no request byte was ever readable by the server


async def test_a_self_signed_api_certificate_is_not_retried_by_wait(
    self_signed: ssl.SSLContext,
) -> None:
    """Case 34: wait() on a task behind an untrusted certificate fails after one handshake."""
    async with (
        RawFaultServer(ssl_context=self_signed) as server,
        open_client(server.url + "/api") as nano,
    ):
        with anyio.fail_after(10), pytest.raises(NetworkError) as caught:
            await nano.wait("abc123")
    assert _is_certificate_error(caught.value)
    assert server.connections == 1


async def test_a_self_signed_image_host_certificate_is_not_retried(
    sim: Simulator, self_signed: ssl.SSLContext, tmp_path: Path
) -> None:
    """Case 34: an image URL behind an untrusted certificate: one handshake, a clear error."""
    async with RawFaultServer(ssl_context=self_signed) as server, open_client(sim.base_url) as nano:
        task = Task(id="abc123", status=TaskStatus.COMPLETED, image_url=server.url + "/x.png")
        with anyio.fail_after(10), pytest.raises(NetworkError) as caught:
            await ImageResult(task, fetcher=nano).save(tmp_path)
    assert _is_certificate_error(caught.value)
    assert list(tmp_path.iterdir()) == []
    assert server.connections == 1
