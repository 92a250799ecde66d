"""Application factories: the proxy listener and the admin listener."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.core.faults import JSON_CONTENT_TYPE, SOAP_CONTENT_TYPE, render_fault, render_json_error
from gateway.core.reasons import Reason
from gateway.web.context import ProxyContext
from gateway.web.forward import accept_request_id
from gateway.web.restlet import IssueTokenProxy, RestletProxy
from gateway.web.server import REQUEST_ID, mark_request_finished
from gateway.web.soap import SoapProxy

log = logging.getLogger("gateway.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CONTEXT = web.AppKey("proxy_context", ProxyContext)
_HTTP_REASONS = {404: "not_found", 405: "method_not_allowed"}


@web.middleware
async def never_a_bare_500(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Whatever escapes a handler is logged and answered 500 in the route's own dialect (a SOAP
    fault, a JSON error), with the exchange's X-Request-Id: never aiohttp's text page."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status == 405 and request.path.startswith("/services/"):
            e.headers["Allow"] = "POST"
        # Every answer of the proxy port carries a request id, 404 and 405 included (SPEC 4),
        # and is logged and counted: by its handler, or here when none ran.
        rid = request.get(REQUEST_ID)
        if rid is None:
            ctx = request.app[CONTEXT]
            ex = ctx.new_exchange(request)
            rid = ex.request_id
            ctx.refused_by_http(ex, e.status, _HTTP_REASONS.get(e.status, "http_error"))
        e.headers["X-Request-Id"] = rid
        raise
    except Exception:
        rid = request.get(REQUEST_ID) or accept_request_id(request.headers.get("X-Request-Id"), uuid.uuid4().hex)
        log.exception("unhandled error on %s %s", request.method, request.path, extra={"request_id": rid})
        # UNEXPECTED_ERROR is what a SuiteTalk client retries; the store_unavailable fault is
        # the one the gateway has with that code.
        if request.path.startswith("/services/"):
            return web.Response(status=500, body=render_fault(Reason.STORE_UNAVAILABLE, None),
                                headers={"Content-Type": SOAP_CONTENT_TYPE, "X-Request-Id": rid})
        _, body = render_json_error(Reason.STORE_UNAVAILABLE)
        return web.Response(status=500, body=body, headers={"Content-Type": JSON_CONTENT_TYPE, "X-Request-Id": rid})


def create_proxy_app(ctx: ProxyContext) -> web.Application:
    app = web.Application(middlewares=[mark_request_finished, never_a_bare_500],
                          client_max_size=ctx.settings.limits.max_body_bytes)
    app[CONTEXT] = ctx
    soap = SoapProxy(ctx)
    restlet = RestletProxy(ctx)
    app.router.add_post("/services/{endpoint:NetSuitePort(_[0-9]{4}_[0-9]+(_0)?)?}", soap.handle)
    app.router.add_route("*", "/services/{endpoint:NetSuitePort(_[0-9]{4}_[0-9]+(_0)?)?}", _method_not_allowed)
    app.router.add_route("*", "/app/site/hosting/restlet.nl", restlet.handle)
    app.router.add_route("POST", "/rest/issuetoken", IssueTokenProxy(ctx).handle)  # SPEC 3; others 405
    return app


async def _method_not_allowed(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMethodNotAllowed(request.method, ["POST"])


def health_routes(app: web.Application, ctx: ProxyContext, refresh: Callable[[], None]) -> None:
    """`/healthz`, `/readyz` and `/metrics` on the admin listener (no token)."""

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        ready = False
        try:
            ready = await ctx.store.ping()
        except Exception:
            ready = False
        status = 200 if ready and ctx.settings.upstream else 503
        return web.json_response({"store": ready, "upstream": ctx.settings.upstream}, status=status)

    async def metrics(request: web.Request) -> web.Response:
        refresh()
        return web.Response(body=generate_latest(ctx.metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
