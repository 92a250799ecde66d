"""The SOAP route: read the head, decide, stream the rest on while checking it, hold back the
last bytes until the envelope is sound (SPEC section 2)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from gateway.core.cookies import parse_cookies, strip_jsessionid
from gateway.core.decision import Forward, Reject
from gateway.core.envelope import EnvelopeInspector
from gateway.core.facts import CookieFacts, RequestFacts
from gateway.core.policy import claimed_attribution, decide, plan_lookups
from gateway.core.reasons import Reason
from gateway.core.records import InstalledVia, SessionView, State
from gateway.core.versions import NotAnEndpoint, Version, version_from_path
from gateway.errors import StoreUnavailable
from gateway.web.body import CLIENT_GONE, BodyAborted, answer_ended_body, ended, read_counted_chunk
from gateway.web.context import ProxyContext
from gateway.web.exchange import Exchange
from gateway.web.forward import client_response_headers, identity_headers, upstream_request_headers
from gateway.web.relay import relay_response, upstream_failed
from gateway.web.resolve import attribute_rejection, fetch_lookups, settle
from gateway.web.server import REQUEST_ID

log = logging.getLogger("gateway.proxy")

_FAULT_RE = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?Fault[\s>/]")
_SUCCESS_RE = re.compile(rb"""isSuccess\s*=\s*["']true["']""")
_NOT_IN_A_HEADER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # RFC 9110 field values: no CTL but HTAB
_LOGIN_RESPONSE_CAP = 1 << 20


@dataclass
class BodyReader:
    """Reads the client body chunk by chunk under the size and pause limits, feeding the
    inspector and the log capture."""

    request: web.Request
    inspector: EnvelopeInspector
    ex: Exchange
    max_bytes: int
    pause_timeout: float

    async def next_chunk(self) -> bytes:
        chunk = await read_counted_chunk(self.request, self.ex, max_bytes=self.max_bytes,
                                         pause_timeout=self.pause_timeout)
        if not chunk:
            self.inspector.close()
            return b""
        self.inspector.feed(chunk)
        return chunk


class SoapProxy:
    def __init__(self, ctx: ProxyContext) -> None:
        self.ctx = ctx
        self.limits = ctx.settings.limits

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ctx = self.ctx
        ex = ctx.new_exchange(request)
        request[REQUEST_ID] = ex.request_id
        ctx.metrics.inflight.inc()
        try:
            return await self._handle(request, ex)
        except StoreUnavailable:
            ctx.metrics.store_errors.labels("request").inc()
            return ctx.fault_response(ex, Reason.STORE_UNAVAILABLE, ex.version, outcome="error")
        except asyncio.CancelledError:
            # The client went away (aiohttp cancels the handler) or the listener shut down:
            # the upstream request, if any, is aborted with the task.
            if ex.reason is None:
                ended(ex, CLIENT_GONE)
            raise
        finally:
            ctx.metrics.inflight.dec()
            ctx.finish(ex)

    async def _handle(self, request: web.Request, ex: Exchange) -> web.StreamResponse:
        ctx = self.ctx
        try:
            path_version = version_from_path(request.path)
        except NotAnEndpoint:
            ex.refuse_below_the_rules(404, "not_found")  # logged by `handle`
            raise web.HTTPNotFound(headers={"X-Request-Id": ex.request_id}) from None
        ex.version = path_version
        framing = _framing_problem(request)
        if framing:
            return ctx.fault_response(ex, Reason.MALFORMED_REQUEST, path_version, sub_reason=framing)
        if request.content_length is not None and request.content_length > self.limits.max_body_bytes:
            return self._too_large(ex, path_version)

        inspector = EnvelopeInspector(max_depth=self.limits.max_depth, max_head_bytes=self.limits.max_head_bytes,
                                      soap_action=request.headers.get("SOAPAction"))
        reader = BodyReader(request, inspector, ex, self.limits.max_body_bytes,
                            self.limits.body_read_timeout_seconds)
        held: list[bytes] = []
        eof = False
        try:
            while inspector.head is None and inspector.error is None:
                chunk = await reader.next_chunk()
                if not chunk:
                    eof = True
                    break
                held.append(chunk)
            if not eof and inspector.error is None and request.content_length == ex.request_bytes:
                # The whole body came with the head (most requests): finish the parse now and
                # forward plain bytes instead of a stream held one chunk behind.
                eof = not await reader.next_chunk()
        except BodyAborted as e:
            return await self._aborted(request, ex, e, path_version)

        head = inspector.head
        if head is None:
            error = inspector.error
            reason = Reason(error.reason) if error else Reason.MALFORMED_REQUEST
            return ctx.fault_response(ex, reason, path_version, sub_reason=error.detail if error else "incomplete")
        ex.operation = head.operation
        fault_version = ex.version = path_version or head.namespace_version

        cookies = parse_cookies(request.headers.getall("Cookie", []))
        facts = RequestFacts(path_version=path_version, head=head, cookies=cookies)
        try:
            async with ctx.lanes:
                lookups = await fetch_lookups(ctx.store, plan_lookups(facts), auto_register=ctx.policy.auto_register)
                decision = await settle(ctx.store, lookups, lambda lk, now: decide(facts, lk, now, ctx.policy))
                ex.mark_decided()
                ex.who = decision.who
                if isinstance(decision, Reject):
                    ex.who = await attribute_rejection(ctx.store, head, decision.who, cookies.jsessionid)
        except StoreUnavailable:
            if ex.decided_after is None:  # undecided: the entry names who the request said it was
                ex.who = claimed_attribution(facts)
            raise
        if isinstance(decision, Reject):
            return ctx.fault_response(ex, decision.reason, fault_version, sub_reason=decision.sub_reason)
        if inspector.error is not None:
            return ctx.fault_response(ex, Reason(inspector.error.reason), fault_version,
                                      sub_reason=inspector.error.detail)
        if eof and not inspector.complete:
            error = inspector.error
            return ctx.fault_response(ex, Reason.MALFORMED_REQUEST, fault_version,
                                      sub_reason=error.detail if error else "incomplete")
        return await self._forward(request, ex, decision, cookies, reader, held, eof, fault_version)

    # ------------------------------------------------------------------ forwarding

    async def _forward(self, request: web.Request, ex: Exchange, decision: Forward, cookies: CookieFacts,
                       reader: BodyReader, held: list[bytes], eof: bool,
                       fault_version: Version | None) -> web.StreamResponse:
        ctx = self.ctx
        cookie_header = "; ".join(request.headers.getall("Cookie", [])) or None  # RFC 9113 8.2.3
        if cookie_header and not decision.forward_session_cookie:
            cookie_header = strip_jsessionid(cookie_header)
        identity = identity_headers(decision.who, ex.request_id, ctx.settings.upstream_identity_key,
                                    int(time.time()))
        if any(_NOT_IN_A_HEADER.search(value) for _, value in identity):
            # An email or role with a line break (legal XML: &#10;) cannot travel in
            # X-Gateway-User without splitting the header; nor can it be a real login.
            return ctx.fault_response(ex, Reason.MALFORMED_REQUEST, fault_version,
                                      sub_reason="identity_not_header_safe")
        headers = upstream_request_headers(
            request.headers, cookie=cookie_header, request_id=ex.request_id, peer=request.remote or "",
            scheme=request.scheme, content_length=request.content_length, identity=identity)
        aborted: list[BodyAborted] = []
        body: bytes | AsyncIterator[bytes]
        if eof:
            body = b"".join(held)
        else:
            body = self._stream_rest(reader, held, aborted)
        url = ctx.settings.upstream + request.path_qs
        started = time.monotonic()
        try:
            async with ctx.session.post(url, data=body, headers=headers, timeout=ctx.upstream_timeout,
                                        allow_redirects=False) as upstream:
                ex.upstream_seconds = time.monotonic() - started
                ex.upstream_status = upstream.status
                if decision.open_session is not None:  # login / ssoLogin
                    return await self._answer_login(request, ex, decision, cookies, upstream, fault_version)
                response = await relay_response(self.ctx, request, ex, upstream)
        except BodyAborted as e:
            return await self._aborted(request, ex, e, fault_version)
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            if aborted:
                return await self._aborted(request, ex, aborted[0], fault_version)
            return upstream_failed(ctx, ex, e, fault_version)
        if decision.close_session:
            ctx.spawn(ctx.store.close_session(decision.close_session))
        elif decision.forward_session_cookie and cookies.jsessionid:
            ctx.spawn(ctx.store.touch_session(cookies.jsessionid, time.time(), ctx.policy.idle_timeout_seconds))
        return response

    async def _stream_rest(self, reader: BodyReader, held: list[bytes],
                           aborted: list[BodyAborted]) -> AsyncIterator[bytes]:
        """Everything read so far, then the rest, always one chunk behind the parser: the last
        chunk goes only once `</Envelope>` closed a sound envelope."""
        pending = b"".join(held)
        try:
            while True:
                chunk = await reader.next_chunk()
                if not chunk:
                    if not reader.inspector.complete:
                        error = reader.inspector.error
                        raise BodyAborted(Reason.MALFORMED_REQUEST, error.detail if error else "incomplete")
                    yield pending
                    return
                if reader.inspector.error is not None:
                    error = reader.inspector.error
                    raise BodyAborted(Reason(error.reason), error.detail)
                yield pending
                pending = chunk
        except BodyAborted as e:
            aborted.append(e)
            raise

    async def _answer_login(self, request: web.Request, ex: Exchange, decision: Forward, cookies: CookieFacts,
                            upstream: aiohttp.ClientResponse, fault_version: Version | None) -> web.StreamResponse:
        """login/ssoLogin: a session opens only on the upstream's success with a fresh
        JSESSIONID; auto-install happens only then too (SPEC section 3)."""
        ctx = self.ctx
        binding = decision.open_session
        assert binding is not None
        # read(n) returns what has arrived so far, not n bytes: collect the whole answer, or it
        # would be judged (isSuccess) and relayed cut short.
        collected = bytearray()
        while chunk := await upstream.content.readany():
            collected += chunk
            if len(collected) > _LOGIN_RESPONSE_CAP:  # no real login answer; never relay it cut
                raise aiohttp.ClientPayloadError("login answer over the size cap")
        body = bytes(collected)
        ex.response_bytes = len(body)
        ex.response_doc.add(body)
        offered = cookies.jsessionid
        issued = upstream.cookies.get("JSESSIONID")
        session_id = issued.value if issued is not None else None
        success = (upstream.status == 200 and _SUCCESS_RE.search(body) is not None
                   and _FAULT_RE.search(body) is None)
        drop_cookies = False
        if success and session_id and session_id != offered:
            if decision.install_on_success and binding.integration_id is not None:
                installation = await ctx.store.install(binding.account, binding.integration_id,
                                                       InstalledVia.AUTO_INSTALL, "system:auto_install")
                if installation.state is not State.ENABLED:
                    ctx.spawn(self._logout_upstream(session_id, request.path, ex))
                    reason = (Reason.INTEGRATION_WAITING_FOR_APPROVAL if installation.state is State.WAITING
                              else Reason.INTEGRATION_BLOCKED)
                    return ctx.fault_response(ex, reason, fault_version)
            now = time.time()
            await ctx.store.open_session(
                SessionView(session_id=session_id, account=binding.account, integration_id=binding.integration_id,
                            user=binding.user, role=binding.role, created_at=now, last_seen=now),
                ctx.policy.idle_timeout_seconds)
            ctx.metrics.sessions_opened.inc()
        elif success and session_id and session_id == offered:
            drop_cookies = True  # fixation: never let a client-chosen id become a session
        response = web.Response(status=upstream.status, body=body,
                                headers=client_response_headers(upstream.headers, drop_session_cookie=drop_cookies))
        response.headers["X-Request-Id"] = ex.request_id
        ex.set_cookies = response.headers.getall("Set-Cookie", [])  # the session's dropped for fixation
        ex.http_status = upstream.status
        return response

    async def _logout_upstream(self, session_id: str, path: str, ex: Exchange) -> None:
        """Best effort: the upstream's new session must not outlive the refused login."""
        ns = f"urn:messages_{ex.version[0]}_{ex.version[1]}.platform.webservices.netsuite.com" if ex.version else ""
        body = ('<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
                'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
                f'<logout xmlns="{ns}"/></soapenv:Body></soapenv:Envelope>').encode()
        try:
            async with self.ctx.session.post(
                    self.ctx.settings.upstream + path, data=body,
                    headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": "logout",
                             "Cookie": f"JSESSIONID={session_id}", "X-Request-Id": ex.request_id},
                    timeout=aiohttp.ClientTimeout(total=10)) as r:
                await r.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            log.info("best-effort logout failed: %r", e)

    # ------------------------------------------------------------------ failures

    async def _aborted(self, request: web.Request, ex: Exchange, e: BodyAborted,
                       version: Version | None) -> web.StreamResponse:
        if e.reason is None:
            return await answer_ended_body(request, ex, e.detail)
        if e.reason is Reason.REQUEST_TOO_LARGE:
            return self._too_large(ex, version)
        return self.ctx.fault_response(ex, e.reason, version, sub_reason=e.detail)

    def _too_large(self, ex: Exchange, version: Version | None) -> web.StreamResponse:
        response = self.ctx.fault_response(ex, Reason.REQUEST_TOO_LARGE, version)
        response.force_close()  # the rest of the body is not worth reading
        return response


def _framing_problem(request: web.Request) -> str | None:
    """SPEC section 2's HTTP framing: text/xml in UTF-8, no content coding."""
    content_type = request.headers.get("Content-Type")
    if content_type is None:
        return "content_type_missing"
    if request.content_type != "text/xml":
        return "content_type"
    charset = request.charset
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        return "charset"
    if len(request.headers.getall("SOAPAction", ())) > 1:
        # Only one can be checked against the operation, and a backend may act on the other.
        return "soapaction_repeated"
    # Every Content-Encoding field and every coding in it: a second field would reach the
    # upstream with the first one judged only.
    codings = (c.strip().lower() for v in request.headers.getall("Content-Encoding", ()) for c in v.split(","))
    if any(c not in ("", "identity") for c in codings):
        return "content_encoding"
    return None
