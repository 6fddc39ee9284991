"""A raw TCP listener on 127.0.0.1 for faults no HTTP server framework will produce.

aiohttp's server always speaks well-formed HTTP. Some failures only exist
below that: a connection reset halfway through a status line, a chunked
body whose chunk size is garbage, a status line that is not HTTP at all, a
TLS handshake with a certificate nobody trusts. :class:`RawFaultServer`
accepts connections, reads each request's head (and its body, when a
Content-Length announces one), writes a scripted :class:`RawReply` byte for
byte, and ends the connection the scripted way. It counts connections and
bytes, and records each request line with its header *names* only::

    async with RawFaultServer(RawReply.bad_status_line()) as server:
        client = NanoBanana(api_key="k", base_url=server.url + "/api")
        ...
        assert server.connections == 1

Usable as a base URL (the API) or as an image URL (a file host).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
from collections.abc import Sequence
from http import HTTPStatus
from types import TracebackType
from typing import Literal, Self, TypeAlias

import anyio
import anyio.abc
import attrs
from anyio.streams.tls import TLSStream

HOST = "127.0.0.1"
#: Longest request head read before giving up on a client.
_MAX_HEAD = 64 * 1024
#: Longest request body read (and discarded) before answering.
_MAX_BODY = 16 * 1024 * 1024
#: How long a client gets to send its request before the connection is dropped.
_READ_TIMEOUT = 5.0

Ending: TypeAlias = Literal["close", "reset", "hang"]


def http_response(
    status: int = 200,
    body: bytes = b"",
    *,
    content_type: str = "application/json",
    headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """A complete, well-formed HTTP/1.1 response with a Content-Length and Connection: close."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


_DEFAULT_ANSWER = http_response(
    200, b'{"id":"rawfault0001","object":"image","created":0,"status":"queued"}'
)


@attrs.frozen
class RawReply:
    """What the server does on one connection: write ``data``, then end it as ``ending`` says.

    ``ending`` is ``"close"`` (a clean FIN), ``"reset"`` (an RST: SO_LINGER 0)
    or ``"hang"`` (keep the connection open, silent, until the server
    closes). With ``read_request=False`` nothing is read first: the reply
    goes out (or the connection ends) as soon as the client connects.
    """

    data: bytes = b""
    ending: Ending = "close"
    read_request: bool = True

    @classmethod
    def answer(
        cls,
        status: int = 200,
        body: bytes = b"",
        *,
        content_type: str = "application/json",
        headers: Sequence[tuple[str, str]] = (),
    ) -> RawReply:
        """A well-formed answer (see :func:`http_response`), then a clean close."""
        return cls(http_response(status, body, content_type=content_type, headers=headers))

    @classmethod
    def reset_after(cls, sent: int, response: bytes = _DEFAULT_ANSWER) -> RawReply:
        """Send the first ``sent`` bytes of ``response`` (default: a create's 200), then reset.

        ``reset_after(0)`` resets as soon as the request has been read.
        """
        if sent < 0:
            raise ValueError("sent must be >= 0")
        return cls(response[:sent], "reset")

    @classmethod
    def bad_status_line(cls, line: bytes = b"HTTP/1.1 OK-ish nonsense") -> RawReply:
        """A status line that is not HTTP, a few plausible headers, then a close."""
        return cls(line + b"\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")

    @classmethod
    def broken_chunked(cls, status: int = 200, content_type: str = "application/json") -> RawReply:
        """A chunked answer whose second chunk size is not hexadecimal, then a close."""
        head = (
            f"HTTP/1.1 {status} OK\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        ).encode("latin-1")
        return cls(head + b'4\r\n{"id\r\nzz-not-hex\r\n":"x"}\r\n0\r\n\r\n')

    @classmethod
    def hang(cls) -> RawReply:
        """Read the request, then say nothing and keep the connection open."""
        return cls(b"", "hang")


@attrs.frozen
class RawRequest:
    """A request head as the raw server read it: its first line and header names, no values."""

    method: str
    target: str
    """The request target as sent: a path, or an absolute URL when sent to a proxy."""
    header_names: tuple[str, ...]
    authorization: bool
    """Whether an Authorization header was present (its value is never kept)."""
    connection: int
    """The number (from 1) of the connection it came on."""


def _parse_head(head: bytes, connection: int) -> RawRequest:
    lines = head.decode("latin-1").split("\r\n")
    method, _, rest = lines[0].partition(" ")
    target = rest.rpartition(" ")[0] or rest
    names = tuple(line.partition(":")[0].strip() for line in lines[1:] if ":" in line)
    return RawRequest(
        method=method,
        target=target,
        header_names=names,
        authorization=any(name.lower() == "authorization" for name in names),
        connection=connection,
    )


def _content_length(head: bytes) -> int:
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            with contextlib.suppress(ValueError):
                return max(0, min(int(value.strip()), _MAX_BODY))
    return 0


class RawFaultServer:
    """A loopback TCP (or TLS) listener that answers each connection with a scripted RawReply.

    Connection ``n`` (from 1) gets ``replies[n - 1]``; once the list runs out
    the last reply repeats. With no replies every connection is reset right
    after its request was read. With ``ssl_context`` the server first does
    a TLS handshake; a failed handshake is counted in ``tls_failures``.
    One request is answered per connection: a reply's ending always ends it.
    """

    def __init__(
        self, *replies: RawReply, ssl_context: ssl.SSLContext | None = None, port: int = 0
    ) -> None:
        self._replies = replies or (RawReply.reset_after(0),)
        self._ssl_context = ssl_context
        self._port = port
        self._listener: anyio.abc.Listener[anyio.abc.SocketStream] | None = None
        self._group: anyio.abc.TaskGroup | None = None
        self._bound_port: int | None = None
        self.connections = 0
        """TCP connections accepted so far."""
        self.open_connections = 0
        """Connections accepted and not yet ended."""
        self.bytes_received = 0
        """Bytes read from clients (after TLS decryption, when TLS is on)."""
        self.tls_failures = 0
        """TLS handshakes that failed (the client refused the certificate, or left)."""
        self.requests: list[RawRequest] = []
        """Every request head read, in arrival order."""
        self.errors: list[str] = []
        """Unexpected failures while serving a connection (empty unless the server has a bug)."""

    def __repr__(self) -> str:
        where = self.url if self._bound_port is not None else "not listening"
        return f"<RawFaultServer {where} connections={self.connections}>"

    @property
    def port(self) -> int:
        """The port it listens on."""
        if self._bound_port is None:
            raise RuntimeError("the RawFaultServer is not started")
        return self._bound_port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` with TLS), without a trailing slash."""
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{HOST}:{self.port}"

    async def __aenter__(self) -> Self:
        listener = await anyio.create_tcp_listener(local_host=HOST, local_port=self._port)
        self._listener = listener
        self._bound_port = int(listener.extra(anyio.abc.SocketAttribute.local_port))  # noqa: S610
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        group.start_soon(listener.serve, self._handle)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        group, self._group = self._group, None
        listener, self._listener = self._listener, None
        if group is None:
            return None
        group.cancel_scope.cancel()
        try:
            # The body's own exception is not handed to the group: it would come back wrapped.
            await group.__aexit__(None, None, None)
        finally:
            if listener is not None:
                with anyio.CancelScope(shield=True):
                    await listener.aclose()
        return None

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        self.connections += 1
        self.open_connections += 1
        number = self.connections
        reply = self._replies[min(number, len(self._replies)) - 1]
        stream: anyio.abc.ByteStream = client
        try:
            if self._ssl_context is not None:
                try:
                    stream = await TLSStream.wrap(
                        client, server_side=True, ssl_context=self._ssl_context
                    )
                except (ssl.SSLError, OSError, anyio.BrokenResourceError, anyio.EndOfStream):
                    self.tls_failures += 1
                    return
            await self._serve_one(stream, client, reply, number)
        except (OSError, ssl.SSLError, anyio.BrokenResourceError, anyio.EndOfStream):
            pass  # the client left first: nothing to answer
        except Exception as exc:  # never let one connection stop the listener
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            self.open_connections -= 1
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await client.aclose()

    async def _serve_one(
        self,
        stream: anyio.abc.ByteStream,
        client: anyio.abc.SocketStream,
        reply: RawReply,
        number: int,
    ) -> None:
        if reply.read_request:
            with anyio.move_on_after(_READ_TIMEOUT):
                await self._read_request(stream, number)
        if reply.data:
            await stream.send(reply.data)
        if reply.ending == "hang":
            await anyio.sleep_forever()
        if reply.ending == "reset":
            raw = client.extra(anyio.abc.SocketAttribute.raw_socket)  # noqa: S610
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif stream is not client:
            await stream.aclose()  # TLS: send close_notify before the socket closes

    async def _read_request(self, stream: anyio.abc.ByteStream, number: int) -> None:
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            if len(buffer) > _MAX_HEAD:
                return
            chunk = await stream.receive()
            self.bytes_received += len(chunk)
            buffer += chunk
        head, _, body = buffer.partition(b"\r\n\r\n")
        self.requests.append(_parse_head(head, number))
        remaining = _content_length(head) - len(body)
        while remaining > 0:
            chunk = await stream.receive()
            self.bytes_received += len(chunk)
            remaining -= len(chunk)
