"""A client's request body under SPEC 8's limits, for the SOAP and RESTlet routes alike: the
size (`limits.max_body_bytes`) and the longest pause between chunks
(`limits.body_read_timeout_seconds`), and how a body that ends without an answer is answered."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.core.reasons import Reason
from gateway.web.exchange import Exchange

# How a body can end without an answer of the route's own (`BodyAborted.reason` None): the
# client stalled (408), broke the HTTP framing mid-body (400: aiohttp's parser gave up), or
# went away.
BODY_TIMEOUT = "body_read_timeout"
BAD_FRAMING = "bad_framing"
CLIENT_GONE = "client_disconnected"
_END_STATUS = {BODY_TIMEOUT: 408, BAD_FRAMING: 400, CLIENT_GONE: 499}


class BodyAborted(Exception):
    """The client's body turned out bad, possibly after forwarding began: the upstream request
    is aborted."""

    def __init__(self, reason: Reason | None, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason  # None: an HTTP-level end, `detail` is one of the three above
        self.detail = detail


async def read_chunk(request: web.Request, pause_timeout: float) -> bytes:
    """The next chunk of the body, b"" at its end; BodyAborted(None, ...) when the client
    paused longer than `pause_timeout`, broke the framing or went away."""
    content = request.content
    try:
        # What has arrived already needs no timer (most bodies arrive with their headers).
        chunk = content.read_nowait() if not content.at_eof() else b""
        if not chunk and not content.at_eof():
            async with asyncio.timeout(pause_timeout):  # no task per chunk, unlike wait_for
                chunk = await content.readany()
    except TimeoutError:
        raise BodyAborted(None, BODY_TIMEOUT) from None
    except HttpProcessingError:  # a bad chunk size, a short body: nothing more can be trusted
        raise BodyAborted(None, BAD_FRAMING) from None
    except (ConnectionError, aiohttp.ClientConnectionError):
        raise BodyAborted(None, CLIENT_GONE) from None
    return chunk


async def read_counted_chunk(request: web.Request, ex: Exchange, *, max_bytes: int, pause_timeout: float,
                             too_large: str = "body_too_large") -> bytes:
    """`read_chunk`, counted into the exchange and captured for its log entry; past
    `max_bytes` in all: BodyAborted(request_too_large, `too_large`)."""
    chunk = await read_chunk(request, pause_timeout)
    if chunk:
        ex.request_bytes += len(chunk)
        if ex.request_bytes > max_bytes:
            raise BodyAborted(Reason.REQUEST_TOO_LARGE, too_large)
        ex.request_doc.add(chunk)
    return chunk


def ended(ex: Exchange, detail: str) -> None:
    """Log fields of a body that ended without an answer. 499 (nginx's "client closed
    request") is only ever logged: nobody is left to receive it."""
    ex.outcome, ex.reason, ex.sub_reason, ex.http_status = "error", detail, None, _END_STATUS[detail]
    if detail == BAD_FRAMING:
        ex.outcome, ex.reason, ex.sub_reason = "rejected", Reason.MALFORMED_REQUEST.value, detail


async def answer_ended_body(request: web.Request, ex: Exchange, detail: str) -> web.Response:
    """408 for a stalled body, 400 for broken framing: no body, sent at once, then the
    connection closes (what is left of the request cannot be told from the next one, and
    aiohttp would otherwise linger up to 10 s reading a body that stalled; SPEC 2)."""
    ended(ex, detail)
    status = 400 if detail == CLIENT_GONE else ex.http_status
    response = web.Response(status=status, headers={"X-Request-Id": ex.request_id})
    response.force_close()
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        pass  # the client is gone already
    request.protocol.force_close()
    return response
