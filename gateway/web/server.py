"""An aiohttp runner whose connections enforce a header read timeout (SPEC section 4), and
answer broken HTTP framing quietly and at once.

aiohttp has keep-alive and lingering timers but none for a client that trickles its request
line and headers (slowloris). The guarded handler arms a timer when a connection opens, or
when the first byte of the next request arrives, and disarms it once a whole request head
has been parsed; if it fires, the client gets 408 with an X-Request-Id and the connection
closes.

Framing errors (Content-Length with Transfer-Encoding, two Content-Lengths, obs-fold, a bad
chunk size: request smuggling attempts) are refused by aiohttp's parser with 400. Two things
are changed about that: the 400 carries an X-Request-Id and is logged as one line, not as an
ERROR with a traceback (anyone could fill the logs with them); and an error found in the
middle of a body is handed to the request being read, which aiohttp's C parser does not do
(the handler would otherwise wait for the rest of the body until its read timeout).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server
from multidict import CIMultiDict, CIMultiDictProxy

log = logging.getLogger("gateway.http")

# The exchange's request id, for whoever answers when the handler could not (app.py).
REQUEST_ID = web.RequestKey("request_id", str)

# A client's X-Request-Id in a request head aiohttp refused to parse (SPEC 4: every response
# carries the client's id when it is 1-128 of [A-Za-z0-9._-], a new one otherwise).
_RAW_REQUEST_ID = re.compile(rb"\r\nx-request-id[ \t]*:[ \t]*([A-Za-z0-9._-]{1,128})[ \t]*(?=\r\n)", re.IGNORECASE)


def raw_request_id(data: bytes) -> str | None:
    """The client's id from the raw bytes of a head, when exactly one valid one is there (two
    X-Request-Id fields: which one would a backend see? a new id is the honest answer)."""
    found = _RAW_REQUEST_ID.findall(data, 0, data.find(b"\r\n\r\n") + 2 if b"\r\n\r\n" in data else len(data))
    return found[0].decode() if len(found) == 1 else None


def safe_error_text(exc: BaseException) -> str:
    """What a parser error says, without the bytes it quotes: aiohttp's messages carry the
    offending line (an `Authorization: Bearer` token, a `Cookie`, an NLAuth password), and
    the process log must never hold those (SPEC 1 and 6)."""
    text = str(getattr(exc, "message", "") or exc).split("\n", 1)[0]
    cut = min((i for i in (text.find(":"), text.find("'"), text.find('"')) if i >= 0), default=len(text))
    return f"{type(exc).__name__}: {text[:cut].strip()[:80]}"


def json_error_body(status: int) -> bytes:
    """The admin API's error shape (SPEC 5) for an answer aiohttp's parser or the header
    timer gives before any handler runs."""
    code = "INVALID_REQUEST" if status == 400 else HTTPStatus(status).name
    return json.dumps({"error": {"code": code, "message": HTTPStatus(status).phrase}}).encode()


# A refused or stalled head, told to whoever logs requests: (request id, status, reason, peer).
OnRefused = Callable[[str, int, str, "str | None"], None]
_PARTIAL_HEAD_CAP = 16384


def _peer(transport: asyncio.BaseTransport) -> str | None:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


class GuardedRequestHandler(RequestHandler):
    header_timeout: float = 10.0
    json_errors = False  # the admin listener answers in its JSON error shape
    on_refused: OnRefused | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gw_timer: asyncio.TimerHandle | None = None
        self._gw_between_requests = False
        self._gw_bytes_since_arm = 0
        self._gw_refused_request_id: str | None = None  # the client's, in a head aiohttp refused
        self._gw_partial_head = bytearray()  # a head still arriving (its X-Request-Id, if it times out)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._gw_arm()

    def data_received(self, data: bytes) -> None:
        if self._gw_between_requests and self._gw_timer is None:
            self._gw_arm()
        self._gw_bytes_since_arm += len(data)
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._gw_disarm()
            self._gw_between_requests = False
            self._gw_fail_current_body()
            if self._messages and isinstance(self._messages[-1][0], _ErrInfo):
                # Only the bytes of this read are at hand; a head sent in one write is all here.
                self._gw_refused_request_id = raw_request_id(data)
        elif self._gw_timer is not None and len(self._gw_partial_head) < _PARTIAL_HEAD_CAP:
            self._gw_partial_head += data[: _PARTIAL_HEAD_CAP - len(self._gw_partial_head)]

    def _gw_fail_current_body(self) -> None:
        """A parse error while a request's body is still arriving belongs to that body."""
        current = self._current_request
        if current is None or current.content.is_eof() or not self._messages:
            return
        message = self._messages[-1][0]
        if isinstance(message, _ErrInfo) and isinstance(message.exc, Exception):
            # No lingering read of the rest after the answer: there is no rest, only the error,
            # which aiohttp would then log as an unhandled exception.
            self._lingering_time = 0.0
            current.content.set_exception(message.exc)

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        rid = uuid.uuid4().hex
        if not isinstance(exc, HttpProcessingError):
            response = super().handle_error(request, status, exc, message)
        else:
            rid, self._gw_refused_request_id = self._gw_refused_request_id or rid, None
            log.info("malformed HTTP request refused", extra={
                "request_id": rid, "peer": request.remote, "status": status, "error": safe_error_text(exc)})
            if self.on_refused is not None:
                self.on_refused(rid, status, "bad_http_request", request.remote)
            if request.writer.output_size > 0:  # as aiohttp: an answer is under way, cut it
                raise ConnectionError("response already started")
            if self.json_errors:
                response = web.Response(status=status, body=json_error_body(status), content_type="application/json")
            else:
                response = web.Response(status=status, text=f"{HTTPStatus(status).phrase}\n")
            response.force_close()
        response.headers["X-Request-Id"] = rid
        return response

    def connection_lost(self, exc: BaseException | None) -> None:
        self._gw_disarm()
        super().connection_lost(exc)

    def request_finished(self) -> None:
        """Called by the proxy when a response is done: the next request's clock may start."""
        self._gw_between_requests = True

    def _gw_arm(self) -> None:
        self._gw_disarm()
        self._gw_bytes_since_arm = 0
        self._gw_partial_head.clear()
        self._gw_timer = self._loop.call_later(self.header_timeout, self._gw_expire)

    def _gw_disarm(self) -> None:
        if self._gw_timer is not None:
            self._gw_timer.cancel()
            self._gw_timer = None

    def _gw_expire(self) -> None:
        self._gw_timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._gw_bytes_since_arm:
            rid = raw_request_id(bytes(self._gw_partial_head)) or uuid.uuid4().hex
            if self.on_refused is not None:
                self.on_refused(rid, 408, "header_read_timeout", _peer(transport))
            body = json_error_body(408) if self.json_errors else b""
            kind = b"Content-Type: application/json\r\n" if body else b""
            transport.write(
                b"HTTP/1.1 408 Request Timeout\r\n" + kind + b"Content-Length: %d\r\n" % len(body)
                + f"Connection: close\r\nX-Request-Id: {rid}\r\n\r\n".encode() + body)
        self.force_close()
        transport.close()


class GuardedServer(Server):
    def __init__(self, *args: Any, header_timeout: float, json_errors: bool = False,
                 on_refused: OnRefused | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._json_errors = json_errors
        self._on_refused = on_refused

    def __call__(self) -> RequestHandler:
        handler = GuardedRequestHandler(self, loop=self._loop, **self._kwargs)
        handler.header_timeout = self._header_timeout
        handler.json_errors = self._json_errors
        handler.on_refused = self._on_refused
        return handler


class GuardedAppRunner(web.AppRunner):
    def __init__(self, app: web.Application, *, header_timeout: float, json_errors: bool = False,
                 on_refused: OnRefused | None = None, **kwargs: Any) -> None:
        # Bodies as they came: aiohttp would inflate a gzip body while parsing (a broken one was
        # an ERROR traceback on every listener, a good RESTlet one went upstream inflated but
        # still labelled gzip). SOAP refuses content codings itself; RESTlets pass them on.
        kwargs.setdefault("auto_decompress", False)
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout
        self._json_errors = json_errors
        self._on_refused = on_refused

    async def _make_server(self) -> Server:
        loop = asyncio.get_running_loop()
        app = self._app
        app._set_loop(loop)
        app.on_startup.freeze()
        await app.startup()
        app.freeze()

        def make_request(message: Any, *args: Any) -> web.BaseRequest:
            # aiohttp's own Expect handler runs before any middleware and echoes the value into
            # its 417: bytes that were no UTF-8 made that a bare 500. No such value is
            # "100-continue", so it is replaced before routing, and the 417 stands.
            expect = message.headers.get(hdrs.EXPECT)
            if expect is not None and not expect.isascii():
                headers = CIMultiDict(message.headers)
                headers[hdrs.EXPECT] = "unreadable"
                message = message._replace(headers=CIMultiDictProxy(headers))
            return app._make_request(message, *args)

        return GuardedServer(app._handle, request_factory=make_request, loop=loop,
                             header_timeout=self._header_timeout, json_errors=self._json_errors,
                             on_refused=self._on_refused, **self._kwargs)


@web.middleware
async def mark_request_finished(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    finally:
        protocol = request.protocol
        if isinstance(protocol, GuardedRequestHandler):
            protocol.request_finished()
