"""RESTlets (`/app/site/hosting/restlet.nl`) and the Issue Token endpoint (`/rest/issuetoken`).

RESTlet bodies are JSON or text the signature does not cover: they stream through, under the
size and pause limits. A form-encoded body is the exception: RFC 5849 signs its parameters, so
it is read before the decision (up to `limits.max_head_bytes`; larger is 413). Rejections are
JSON errors with 401/403 (SPEC section 3).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from gateway.core.cookies import strip_jsessionid
from gateway.core.decision import Decision, Forward, Reject
from gateway.core.lookups import LookupPlan, Lookups
from gateway.core.oauth1 import (
    RestletFacts,
    claimed_attribution,
    decide_issue_token,
    decide_restlet,
    form_parameters,
    parse_authorization,
    plan_issue_token_lookups,
    plan_restlet_lookups,
)
from gateway.core.policy import PolicySettings
from gateway.core.reasons import Reason
from gateway.core.records import InstalledVia
from gateway.errors import StoreUnavailable
from gateway.web.body import CLIENT_GONE, BodyAborted, answer_ended_body, ended, read_counted_chunk
from gateway.web.context import ProxyContext
from gateway.web.exchange import Exchange
from gateway.web.forward import client_response_headers, identity_headers, upstream_request_headers
from gateway.web.relay import relay_response, upstream_failed
from gateway.web.resolve import fetch_lookups, settle
from gateway.web.server import REQUEST_ID

log = logging.getLogger("gateway.proxy")

Decider = Callable[[RestletFacts, Lookups, float, PolicySettings], Decision]
Planner = Callable[[RestletFacts], LookupPlan]
_ISSUE_TOKEN_RESPONSE_CAP = 1 << 20
FORM_ENCODED = "application/x-www-form-urlencoded"


class RestletProxy:
    operation = "restlet"
    plan: Planner = staticmethod(plan_restlet_lookups)
    decide: Decider = staticmethod(decide_restlet)
    signs_form_body = True  # RFC 5849's base string holds a form-encoded body's parameters

    def __init__(self, ctx: ProxyContext) -> None:
        self.ctx = ctx

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ctx = self.ctx
        ex = ctx.new_exchange(request)
        ex.operation = self.operation
        ex.any_kind_documents = True
        request[REQUEST_ID] = ex.request_id
        ctx.metrics.inflight.inc()
        try:
            return await self._handle(request, ex)
        except StoreUnavailable:
            ctx.metrics.store_errors.labels("request").inc()
            return ctx.json_error_response(ex, Reason.STORE_UNAVAILABLE, outcome="error")
        except asyncio.CancelledError:
            # The client went away (aiohttp cancels the handler) or the listener shut down: an
            # error (499), as on SOAP, never a forward.
            if ex.reason is None:
                ended(ex, CLIENT_GONE)
            raise
        finally:
            ctx.metrics.inflight.dec()
            ctx.finish(ex)

    async def _handle(self, request: web.Request, ex: Exchange) -> web.StreamResponse:
        ctx = self.ctx
        if (request.content_length or 0) > ctx.settings.limits.max_body_bytes:
            return _too_large(ctx, ex)
        authorization = request.headers.getall("Authorization", [])
        if len(authorization) == 1:
            ex.authorization = authorization[0]
        try:
            auth = parse_authorization(authorization)
        except ValueError as e:
            return ctx.json_error_response(ex, Reason.CREDENTIALS_REQUIRED, sub_reason=str(e)[:80])
        form: bytes | None = None
        if type(self).signs_form_body and request.body_exists and request.content_type == FORM_ENCODED:
            try:
                form = await self._read_form(request, ex)
            except BodyAborted as e:
                return await self._aborted(request, ex, e)
        facts = RestletFacts(method=request.method, base_uri=self._base_uri(request),
                             query=tuple(request.query.items()), auth=auth,
                             body=form_parameters(form) if form else ())
        policy = ctx.policy
        decide = type(self).decide
        try:
            async with ctx.lanes:
                lookups = await fetch_lookups(ctx.store, type(self).plan(facts), auto_register=policy.auto_register)
                decision = await settle(ctx.store, lookups, lambda lk, now: decide(facts, lk, now, policy))
        except StoreUnavailable:
            ex.who = claimed_attribution(auth)  # the entry names who the request said it was
            raise
        ex.mark_decided()
        ex.who = decision.who
        if isinstance(decision, Reject):
            return ctx.json_error_response(ex, decision.reason, sub_reason=decision.sub_reason)
        return await self._forward(request, ex, decision, form)

    async def _read_form(self, request: web.Request, ex: Exchange) -> bytes:
        """The whole form-encoded body, which the decision needs (its parameters are signed)."""
        limits = self.ctx.settings.limits
        cap = min(limits.max_head_bytes, limits.max_body_bytes)
        collected = bytearray()
        while chunk := await read_counted_chunk(request, ex, max_bytes=cap, too_large="form_body_too_large",
                                                pause_timeout=limits.body_read_timeout_seconds):
            collected += chunk
        return bytes(collected)

    async def _aborted(self, request: web.Request, ex: Exchange, e: BodyAborted) -> web.StreamResponse:
        if e.reason is None:  # stalled (408), broken framing (400), or gone
            return await answer_ended_body(request, ex, e.detail)
        return _too_large(self.ctx, ex)

    def _base_uri(self, request: web.Request) -> str:
        """The URI the client signed: `public_base_url` when a load balancer sits in front."""
        base = self.ctx.settings.public_base_url
        if base:
            return base.rstrip("/") + request.path
        return f"{request.scheme}://{request.host}{request.path}"

    async def _forward(self, request: web.Request, ex: Exchange, decision: Forward,
                       form: bytes | None) -> web.StreamResponse:
        ctx = self.ctx
        headers = upstream_request_headers(
            # Never attributed by a session, so never its JSESSIONID (SPEC 2); several Cookie
            # fields join with "; " (RFC 9113 8.2.3), not ", " (one cookie's value to a backend).
            request.headers, cookie=strip_jsessionid("; ".join(request.headers.getall("Cookie", []))),
            request_id=ex.request_id, peer=request.remote or "", scheme=request.scheme,
            content_length=request.content_length,
            identity=identity_headers(decision.who, ex.request_id, ctx.settings.upstream_identity_key,
                                      int(time.time())))
        headers["Authorization"] = request.headers["Authorization"]
        aborted: list[BodyAborted] = []
        data: bytes | AsyncIterator[bytes] | None = None
        if form is not None:
            data = form
        elif request.body_exists:
            data = self._body(request, ex, aborted)
        started = time.monotonic()
        try:
            async with ctx.session.request(request.method, ctx.settings.upstream + request.path_qs, data=data,
                                           headers=headers, timeout=ctx.upstream_timeout,
                                           allow_redirects=False) as upstream:
                ex.upstream_seconds = time.monotonic() - started
                ex.upstream_status = upstream.status
                return await self._answer(request, ex, decision, upstream)
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            if aborted:  # the client's fault, not the backend's: the upstream request was aborted
                return await self._aborted(request, ex, aborted[0])
            return upstream_failed(ctx, ex, e, None, json_errors=True)

    async def _body(self, request: web.Request, ex: Exchange, aborted: list[BodyAborted]) -> AsyncIterator[bytes]:
        limits = self.ctx.settings.limits
        try:
            while chunk := await read_counted_chunk(request, ex, max_bytes=limits.max_body_bytes,
                                                    pause_timeout=limits.body_read_timeout_seconds):
                yield chunk
        except BodyAborted as e:
            aborted.append(e)
            raise aiohttp.ClientPayloadError(f"request body aborted: {e.detail}") from None

    async def _answer(self, request: web.Request, ex: Exchange, decision: Forward,
                      upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        return await relay_response(self.ctx, request, ex, upstream)


class IssueTokenProxy(RestletProxy):
    """On the backend's success the issued token is captured (encrypted at rest) so R13 can
    verify it, and the record is installed if the account had none (SPEC section 3)."""

    operation = "issuetoken"
    signs_form_body = False  # SPEC 3: its base string holds the oauth_* and query parameters only
    plan: Planner = staticmethod(plan_issue_token_lookups)
    decide: Decider = staticmethod(decide_issue_token)

    async def _answer(self, request: web.Request, ex: Exchange, decision: Forward,
                      upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        if upstream.status != 200:
            return await relay_response(self.ctx, request, ex, upstream)
        body = await _read_whole(upstream, _ISSUE_TOKEN_RESPONSE_CAP)
        ex.response_bytes = len(body)
        ex.response_doc.add(body)
        ex.http_status = upstream.status
        issued = _issued_token(body)
        who = decision.who
        if issued is not None and who.account and who.integration not in ("none", "default"):
            async with self.ctx.lanes:
                if decision.install_on_success:
                    await self.ctx.store.install(who.account, who.integration, InstalledVia.ISSUE_TOKEN,
                                                 "system:issue_token")
                token_id, token_secret = issued
                await self.ctx.store.save_issued_token(who.account, who.integration, who.user, who.role,
                                                       token_id, token_secret)
        response = web.Response(status=upstream.status, body=body, headers=client_response_headers(upstream.headers))
        response.headers["X-Request-Id"] = ex.request_id
        ex.set_cookies = response.headers.getall("Set-Cookie", [])
        return response


def _too_large(ctx: ProxyContext, ex: Exchange) -> web.Response:
    """413 (SPEC 8's limits.max_body_bytes, R1's request_too_large), and the connection closes:
    the rest of the body is not worth reading."""
    response = ctx.json_error_response(ex, Reason.REQUEST_TOO_LARGE)
    response.force_close()
    return response


async def _read_whole(upstream: aiohttp.ClientResponse, cap: int) -> bytes:
    """The whole answer (`read(n)` would return only what has arrived so far, and the token
    would be neither captured nor relayed whole). Over `cap` it is no token answer: the
    exchange fails as an upstream error rather than relaying it cut short."""
    collected = bytearray()
    while chunk := await upstream.content.readany():
        collected += chunk
        if len(collected) > cap:
            raise aiohttp.ClientPayloadError("issue token answer over the size cap")
    return bytes(collected)


def _issued_token(body: bytes) -> tuple[str, str] | None:
    """`token`/`tokenSecret` or `token_id`/`token_secret` from the backend's JSON answer."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    for id_key, secret_key in (("token", "tokenSecret"), ("token_id", "token_secret")):
        token_id, secret = data.get(id_key), data.get(secret_key)
        if isinstance(token_id, str) and isinstance(secret, str) and token_id and secret:
            return token_id, secret
    return None
