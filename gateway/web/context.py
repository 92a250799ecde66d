"""What every proxy handler shares: settings, store, upstream session, log writer, metrics."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from gateway.config import Settings
from gateway.core.faults import JSON_CONTENT_TYPE, SOAP_CONTENT_TYPE, fault_status, render_fault, render_json_error
from gateway.core.policy import PolicySettings
from gateway.core.reasons import Reason
from gateway.core.versions import Version, version_tag
from gateway.errors import StoreUnavailable
from gateway.metrics import GatewayMetrics
from gateway.store.ports import RequestStore
from gateway.web.exchange import Exchange
from gateway.web.forward import accept_request_id, client_ip
from gateway.web.logwriter import LogItem

log = logging.getLogger("gateway.proxy")


class LogSink(Protocol):
    def submit(self, entry: LogItem) -> bool: ...


# Half the store's Redis pool (256): logs, pub/sub, sessions and the admin API keep the rest.
STORE_LANES = 128
# A lane is held for a Redis round trip or two, and never past the store's request-path
# deadline (gateway.store.redis), so a long wait means a queue, not a sick store: 1 s turned
# healthy bursts on a busy machine into 503s (134-444 of 2,000 signed requests).
STORE_LANE_WAIT = 5.0


class StoreLanes:
    """Request decisions take turns at the store (`async with ctx.lanes:`): a burst (a thousand
    clients right after a record change dropped the cache, or signed requests, whose nonce
    always goes to Redis) queues here instead of exhausting the Redis connection pool, which
    answers "Too many connections" (a 503 for a healthy Redis). A lane not free within
    STORE_LANE_WAIT seconds: StoreUnavailable. One set per process, shared by the SOAP,
    RESTlet and Issue Token routes."""

    def __init__(self, lanes: int = STORE_LANES, wait: float = STORE_LANE_WAIT) -> None:
        self._lanes = asyncio.Semaphore(lanes)
        self._wait = wait

    async def __aenter__(self) -> None:
        if not self._lanes.locked():
            await self._lanes.acquire()  # a free lane: taken at once, no timer needed
            return
        try:
            async with asyncio.timeout(self._wait):
                await self._lanes.acquire()
        except TimeoutError:
            raise StoreUnavailable("no free store lane") from None

    async def __aexit__(self, *exc: object) -> None:
        self._lanes.release()


@dataclass
class ProxyContext:
    settings: Settings
    policy: PolicySettings
    store: RequestStore
    session: aiohttp.ClientSession
    logs: LogSink
    metrics: GatewayMetrics
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    lanes: StoreLanes = field(default_factory=StoreLanes)
    # The same for every forward: built once, not per request.
    upstream_timeout: aiohttp.ClientTimeout = field(init=False)

    def __post_init__(self) -> None:
        limits = self.settings.limits
        self.upstream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=limits.upstream_connect_timeout_seconds,
                                                      sock_read=limits.upstream_response_timeout_seconds)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Fire-and-forget work (session touch, best-effort logout) that must not be lost to GC."""
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background task failed: %r", task.exception())

    def new_exchange(self, request: web.BaseRequest) -> Exchange:
        # 32 hex of os.urandom, as uuid4().hex but without building a UUID (3.6 -> 0.7 us)
        rid = accept_request_id(request.headers.get("X-Request-Id"), os.urandom(16).hex())
        ip = client_ip(request.remote, request.headers.getall("X-Forwarded-For", []),
                       self.settings.trusted_proxies)
        ex = Exchange(request_id=rid, client_ip=ip, doc_cap=self.settings.log.max_document_bytes)
        cookies = request.headers.getall("Cookie", [])
        if cookies:
            ex.cookie = "; ".join(cookies)
        return ex

    def finish(self, ex: Exchange) -> None:
        """Metrics and the log entry for a finished exchange; never raises. The entry itself
        (redaction, JSON) is built by the log writer, off the request path."""
        try:
            ex.finish()
            integration = ex.who.integration
            self.metrics.record_request(
                integration=integration, operation=ex.operation, outcome=ex.outcome,
                reason=ex.reason or "none", endpoint_version=version_tag(ex.version),
                auth_method=ex.who.auth_method.value, duration=ex.duration)
            if ex.decided_after is not None:
                self.metrics.inspection.observe(ex.decided_after)
            if ex.upstream_seconds is not None:
                self.metrics.observe_upstream(integration, ex.upstream_seconds)
            if self.metrics.info_due(integration):
                self.spawn(self._note_integration(integration))
            self.logs.submit(ex.log_entry)
        except Exception:  # the log never fails a request
            log.exception("could not record request %s", ex.request_id)

    def refused_by_http(self, ex: Exchange, status: int, reason: str) -> None:
        """An answer given below the SOAP and RESTlet rules (404, 405, a refused or stalled
        head): logged and counted like any request (SPEC 6: one entry per request)."""
        ex.refuse_below_the_rules(status, reason)
        self.finish(ex)

    def refused_head(self, request_id: str, status: int, reason: str, peer: str | None) -> None:
        """A head the HTTP layer refused (400) or that never completed (408): no request object
        exists, only the connection's peer and the client's X-Request-Id, if it came."""
        ex = Exchange(request_id=request_id, client_ip=peer or "", doc_cap=self.settings.log.max_document_bytes)
        self.refused_by_http(ex, status, reason)

    async def _note_integration(self, integration_id: str) -> None:
        """The info metric's name and owner, from the record cache: a Redis read only the first
        time (and after a record change dropped the cache), never one per request."""
        try:
            view = await self.store.get_integration(integration_id)
        except StoreUnavailable:
            return  # asked again after INFO_REFRESH_SECONDS
        if view is not None:
            self.metrics.note_integration(view.id, view.name, view.owner_account)

    def fault_response(self, ex: Exchange, reason: Reason, version: Version | None, *,
                       sub_reason: str | None = None, outcome: str = "rejected") -> web.Response:
        body = render_fault(reason, version or self.settings.max_version)
        return _rejection(ex, reason, fault_status(reason), body, SOAP_CONTENT_TYPE, sub_reason, outcome)

    def json_error_response(self, ex: Exchange, reason: Reason, *, sub_reason: str | None = None,
                            outcome: str = "rejected") -> web.Response:
        status, body = render_json_error(reason)
        return _rejection(ex, reason, status, body, JSON_CONTENT_TYPE, sub_reason, outcome)


def _rejection(ex: Exchange, reason: Reason, status: int, body: bytes, content_type: str,
               sub_reason: str | None, outcome: str) -> web.Response:
    """The gateway's own answer, recorded in the exchange as the client gets it."""
    ex.reject(reason, sub_reason, outcome=outcome)
    ex.http_status = status
    ex.response_bytes = len(body)
    ex.response_doc.add(body)
    return web.Response(status=status, body=body, headers={"Content-Type": content_type, "X-Request-Id": ex.request_id})


