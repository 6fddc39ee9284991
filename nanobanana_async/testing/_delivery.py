"""Sending answers, normally or through a fault: the one place that touches transports.

Handlers build a :class:`Reply` (status, body, type) and hand it here with the
fault they drew, if any. Faults that replace the answer (``Respond``,
``Redirect``, ``ResetConnection``) become responses at once; faults that mangle
delivery (``Truncate``, ``Slow``) are applied while the normal body is sent.
Every wait also ends when the simulator starts closing, so shutdown is quick.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import Mapping
from http import HTTPStatus
from types import MappingProxyType

import attrs
from aiohttp import web

from ._faults import Redirect, ResetConnection, Respond, Slow, Truncate

JSON_TYPE = "application/json"
_SLOW_TICK_SECONDS = 0.05
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


@attrs.frozen
class Reply:
    """A complete answer before it is sent: status, body bytes, content type, extra headers."""

    status: int
    body: bytes
    content_type: str | None = JSON_TYPE
    headers: Mapping[str, str] = _NO_HEADERS

    def all_headers(self) -> dict[str, str]:
        """The extra headers plus Content-Type (unless the extras already set one)."""
        headers = dict(self.headers)
        if self.content_type and not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = self.content_type
        return headers


def json_reply(status: int, payload: object) -> Reply:
    """A JSON answer."""
    return Reply(status, json.dumps(payload, separators=(",", ":")).encode())


def respond_reply(fault: Respond) -> Reply:
    """The answer a ``Respond`` fault describes."""
    body = fault.body
    if body is None:
        return Reply(fault.status, b"", fault.content_type, fault.headers)
    if isinstance(body, bytes):
        return Reply(fault.status, body, fault.content_type, fault.headers)
    if isinstance(body, str):
        content_type = fault.content_type or "text/html; charset=utf-8"
        return Reply(fault.status, body.encode(), content_type, fault.headers)
    encoded = json.dumps(dict(body)).encode()
    return Reply(fault.status, encoded, fault.content_type or JSON_TYPE, fault.headers)


def client_connected(request: web.BaseRequest) -> bool:
    """Whether the request's connection is still open."""
    transport = request.transport
    return transport is not None and not transport.is_closing()


def _response(reply: Reply) -> web.Response:
    return web.Response(status=reply.status, body=reply.body, headers=reply.all_headers())


class Delivery:
    """Writes replies to clients, applying delivery faults; waits end when ``closing`` is set."""

    def __init__(self, closing: asyncio.Event) -> None:
        self._closing = closing

    async def pause(self, request: web.BaseRequest, seconds: float) -> bool:
        """Sleep; True if the client is still there afterwards and the server is not closing."""
        if seconds > 0:
            try:
                async with asyncio.timeout(seconds):
                    await self._closing.wait()
            except TimeoutError:
                pass
            else:
                return False
        return client_connected(request)

    def drop(self, request: web.BaseRequest) -> web.StreamResponse:
        """Close the connection without an answer (the client left, or shutdown)."""
        transport = request.transport
        if transport is not None:
            transport.close()
        return web.Response()

    def reset(self, request: web.BaseRequest) -> web.StreamResponse:
        """Abort the connection with a TCP reset (SO_LINGER 0), sending nothing."""
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        return web.Response()

    def replace(
        self, request: web.BaseRequest, fault: Respond | Redirect | ResetConnection
    ) -> web.StreamResponse:
        """The response for a fault that replaces the normal answer entirely."""
        if isinstance(fault, ResetConnection):
            return self.reset(request)
        if isinstance(fault, Redirect):
            return web.Response(status=fault.status, headers={"Location": fault.location})
        return _response(respond_reply(fault))

    async def send(
        self,
        request: web.BaseRequest,
        reply: Reply,
        fault: Truncate | Slow | None = None,
        *,
        confirm: bool = False,
    ) -> tuple[web.StreamResponse, bool]:
        """Send ``reply`` (mangled by ``fault``); also say whether all of it was written.

        Without a fault and without ``confirm`` the response is returned for
        aiohttp to write, and counted as delivered.
        """
        if isinstance(fault, Truncate):
            return self._truncate(request, reply, fault), False
        if fault is None and not confirm:
            return _response(reply), True
        response: web.StreamResponse
        try:
            if isinstance(fault, Slow):
                response = web.StreamResponse(status=reply.status, headers=reply.all_headers())
                response.content_length = len(reply.body)
                await response.prepare(request)
                if not await self._trickle(request, response, reply.body, fault):
                    return self.drop(request), False
            else:
                response = _response(reply)
                await response.prepare(request)
            await response.write_eof()
        except ConnectionError:
            return self.drop(request), False
        return response, True

    async def _trickle(
        self, request: web.BaseRequest, response: web.StreamResponse, body: bytes, fault: Slow
    ) -> bool:
        rate = fault.bytes_per_second
        step = max(1, int(rate * _SLOW_TICK_SECONDS))
        for offset in range(0, len(body), step):
            if offset and not await self.pause(request, step / rate):
                return False
            await response.write(body[offset : offset + step])
        return True

    def _truncate(
        self, request: web.BaseRequest, reply: Reply, fault: Truncate
    ) -> web.StreamResponse:
        transport = request.transport
        if transport is None or transport.is_closing():
            return web.Response()
        try:
            reason = HTTPStatus(reply.status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [f"HTTP/1.1 {reply.status} {reason}"]
        lines.extend(f"{name}: {value}" for name, value in reply.all_headers().items())
        if fault.content_length:
            lines.append(f"Content-Length: {len(reply.body)}")
        lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        transport.write(head + reply.body[: fault.after_bytes])
        transport.close()
        return web.Response()
