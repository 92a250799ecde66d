"""Streaming the upstream's answer back, and turning upstream failures into faults."""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web

from gateway.core.reasons import Reason
from gateway.core.versions import Version
from gateway.web.context import ProxyContext
from gateway.web.exchange import Exchange
from gateway.web.forward import client_response_headers

log = logging.getLogger("gateway.proxy")


# Answers announced at most this long are read whole and sent in one write with their headers:
# the common SOAP answer costs one write instead of three, and a failure while reading it can
# still become a clean 502 fault.
WHOLE_ANSWER_BYTES = 256 * 1024


async def relay_response(ctx: ProxyContext, request: web.Request, ex: Exchange,
                         upstream: aiohttp.ClientResponse) -> web.StreamResponse:
    """Status, headers and body as they come, chunk by chunk. Once the status line is out, a
    failure on either side can only end in a cut connection; the log tells which side failed."""
    if upstream.content_length is not None and upstream.content_length <= WHOLE_ANSWER_BYTES:
        body = await upstream.read()
        ex.response_bytes = len(body)
        ex.response_doc.add(body)
        ex.http_status = upstream.status
        whole = web.Response(status=upstream.status, reason=upstream.reason, body=body,
                             headers=client_response_headers(upstream.headers))
        whole.headers["X-Request-Id"] = ex.request_id
        ex.set_cookies = whole.headers.getall("Set-Cookie", [])
        return whole
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                  headers=client_response_headers(upstream.headers))
    response.headers["X-Request-Id"] = ex.request_id
    ex.set_cookies = response.headers.getall("Set-Cookie", [])
    if upstream.content_length is not None:
        response.content_length = upstream.content_length
    ex.http_status = upstream.status
    try:
        await response.prepare(request)
    except ConnectionError:
        _client_gone(ex)
        return response
    chunks = upstream.content.iter_any()
    while True:
        try:
            chunk = await anext(chunks)
        except StopAsyncIteration:
            break
        except (aiohttp.ClientError, TimeoutError) as e:
            # Reset, garbage or a stall mid-body: a client must never take a truncated answer
            # for a whole one, so the connection is cut rather than ended cleanly.
            ex.outcome, ex.reason, ex.sub_reason = "error", Reason.UPSTREAM_UNAVAILABLE.value, type(e).__name__
            ctx.metrics.upstream_errors.labels(Reason.UPSTREAM_UNAVAILABLE.value).inc()
            log.warning("upstream response cut", extra={"request_id": ex.request_id, "error": repr(e)})
            if request.transport is not None:
                request.transport.abort()
            return response
        ex.response_bytes += len(chunk)
        ex.response_doc.add(chunk)
        try:
            await response.write(chunk)
        except ConnectionError:
            _client_gone(ex)
            return response
    try:
        await response.write_eof()
    except ConnectionError:
        _client_gone(ex)
    return response


def _client_gone(ex: Exchange) -> None:
    """The client left while its answer was relayed: not an upstream failure (no fault, no
    upstream error metric), but the entry must not claim a delivered answer."""
    ex.outcome, ex.reason, ex.sub_reason = "error", "client_disconnected", None


def upstream_reason(e: BaseException) -> Reason:
    """Refused, reset and connect timeouts are 502; a response that never came is 504."""
    if isinstance(e, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return Reason.UPSTREAM_UNAVAILABLE
    if isinstance(e, TimeoutError):
        return Reason.UPSTREAM_TIMEOUT
    return Reason.UPSTREAM_UNAVAILABLE


def upstream_failed(ctx: ProxyContext, ex: Exchange, e: BaseException, version: Version | None, *,
                    json_errors: bool = False) -> web.Response:
    reason = upstream_reason(e)
    ctx.metrics.upstream_errors.labels(reason.value).inc()
    log.warning("upstream failed", extra={"request_id": ex.request_id, "error": repr(e)})
    if json_errors:
        return ctx.json_error_response(ex, reason, sub_reason=type(e).__name__, outcome="error")
    return ctx.fault_response(ex, reason, version, sub_reason=type(e).__name__, outcome="error")
