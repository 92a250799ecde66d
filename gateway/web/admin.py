"""The admin API (SPEC section 5): `/admin/v1` on the admin listener.

Mounting: `setup_admin(app, store, settings, bootstrap_token=...)` adds a sub-application at
`/admin/v1` to the admin listener's `app` (its middlewares apply to the admin API only, so
/healthz, /readyz and /metrics keep their own behaviour); `create_admin_app(...)` builds the
sub-application alone.

Order of checks on every route: 401 (no or unknown bearer token; 429 instead once one client
address has presented `failure_limit` unknown tokens within `failure_window` seconds; valid
tokens are never throttled), 403 (a token confined to another account, or a role without the permission),
404 `ACCOUNT_NOT_FOUND`, then the route's own validation (400 `INVALID_REQUEST`) and
404 `NOT_FOUND` for an object that is not in the account.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from enum import Enum
from importlib import resources
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from gateway.config import Settings
from gateway.core.records import normalize_account
from gateway.errors import StoreUnavailable
from gateway.store import keyspace as ks
from gateway.store.atomic import RegistryError
from gateway.store.logstore import matches, parse_query
from gateway.store.redis import RedisStore
from gateway.store.registry import account_json, looks_like_id
from gateway.store.tokens import AdminPrincipal
from gateway.web.context import StoreLanes

log = logging.getLogger("gateway.admin")

PREFIX = "/admin/v1"
STATUS = {
    "INVALID_REQUEST": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "FIELD_NOT_EDITABLE": 403,
    "OWNER_ONLY": 403,
    "ACCOUNT_NOT_FOUND": 404,
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "CONFLICT": 409,
    "TOO_MANY_REQUESTS": 429,
    "STORE_UNAVAILABLE": 503,
    "INTERNAL_ERROR": 500,
}


class Perm(Enum):
    LIST = "list integrations"
    VIEW = "view integrations, tokens and logs"
    EDIT = "create and edit integrations and tokens"
    ADMIN = "administer the account"
    GLOBAL = "search every account"


ROLE_PERMS = {
    "integration_applications": {Perm.LIST},
    "integration_application": {Perm.LIST, Perm.VIEW, Perm.EDIT},
    "administrator": {Perm.LIST, Perm.VIEW, Perm.EDIT, Perm.ADMIN},
}
Handler = Callable[[web.Request, AdminPrincipal, str], Awaitable[web.StreamResponse]]


def error(code: str, message: str, status: int | None = None) -> web.Response:
    resp = web.json_response({"error": {"code": code, "message": message}}, status=status or STATUS[code])
    if resp.status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="gateway-admin"'
    return resp


class Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# The admin API's own turns at the store, beside the request routes' 128 (gateway.web.context):
# a script firing a thousand calls at once waits for a lane instead of exhausting the Redis
# pool; an operator can wait longer for one than a SOAP client.
ADMIN_STORE_LANES = 64
ADMIN_STORE_LANE_WAIT = 10.0


def store_turns(lanes: StoreLanes) -> Any:
    """Middleware: every admin request holds one of `lanes` while it runs."""
    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        async with lanes:
            return await handler(request)

    return middleware


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except Refused as e:
        return error(e.code, e.message)
    except RegistryError as e:
        return error(e.code, e.message)
    except (StoreUnavailable, RedisError, OSError) as e:
        log.warning("admin API: store unavailable: %s", e)
        return error("STORE_UNAVAILABLE", "the store is temporarily unavailable; retry")
    except web.HTTPException as e:
        if e.status == 404:
            return error("NOT_FOUND", f"no route {request.method} {request.path}")
        if e.status == 405:
            resp = error("METHOD_NOT_ALLOWED", f"{request.method} is not allowed on {request.path}")
            if "Allow" in e.headers:
                resp.headers["Allow"] = e.headers["Allow"]
            return resp
        if e.status == 413:
            return error("INVALID_REQUEST", "request body too large", 413)
        raise
    except Exception:  # a bug, not the client's fault: still the JSON shape, and a traceback logged
        log.exception("admin API: unhandled error on %s %s", request.method, request.path)
        return error("INTERNAL_ERROR", "internal error; the gateway logged it")


class FailureLimiter:
    """Unknown bearer tokens per client address in a sliding window (guessing is pointless
    against 256-bit tokens, but a flood of them should cost the flooder, not the store)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._seen: defaultdict[str, deque[float]] = defaultdict(deque)

    def _prune(self, ip: str, now: float) -> deque[float]:
        q = self._seen[ip]
        while q and now - q[0] > self.window:
            q.popleft()
        return q

    def blocked(self, ip: str) -> bool:
        q = self._prune(ip, time.monotonic())
        if not q:
            self._seen.pop(ip, None)
        return len(q) >= self.limit

    def fail(self, ip: str) -> None:
        now = time.monotonic()
        self._prune(ip, now).append(now)
        if len(self._seen) > 10_000:
            for key in [k for k, v in self._seen.items() if not v or now - v[-1] > self.window]:
                del self._seen[key]


async def body_object(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = json.loads(await request.read() or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[... nested too deep
        raise Refused("INVALID_REQUEST", "the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise Refused("INVALID_REQUEST", "the request body must be a JSON object")
    try:  # "\ud800" is valid JSON but no Unicode text: it could never be stored
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise Refused("INVALID_REQUEST", "the request body holds a lone surrogate (\\ud800-\\udfff)") from None
    return data


def only_keys(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in body:
        if key not in allowed:
            raise Refused("INVALID_REQUEST", f"'{key}' is not a field here; expected {', '.join(allowed)}")


def text_field(body: dict[str, Any], name: str, *, numeric_ok: bool = False) -> str:
    value = body.get(name)
    if numeric_ok and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise Refused("INVALID_REQUEST", f"'{name}' is required and must be a non-empty string")
    if len(value) > 512:
        raise Refused("INVALID_REQUEST", f"'{name}' is longer than 512 characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        # A token's user and role travel in X-Gateway-User / X-Gateway-Role: no line breaks.
        raise Refused("INVALID_REQUEST", f"'{name}' must not contain control characters")
    return value.strip()


def no_content() -> web.Response:
    return web.Response(status=204)


def log_page(entries: list[dict[str, Any]], cursor: str | None) -> web.Response:
    return web.json_response({"entries": entries, "next": cursor})


class AdminApi:
    def __init__(
        self, store: RedisStore, settings: Settings, bootstrap_token: str | None, limiter: FailureLimiter
    ) -> None:
        self.store = store
        self.settings = settings
        self.bootstrap = bootstrap_token or None
        self.limiter = limiter
        self.registry = store.registry
        self.tokens = store.tokens

    # ------------------------------------------------------------------ access control

    async def principal(self, request: web.Request) -> AdminPrincipal:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Refused("UNAUTHORIZED", "a bearer token is required (Authorization: Bearer <token>)")
        who = await self.tokens.authenticate(token, self.bootstrap)
        if who is None:
            # Valid tokens are never throttled; only a client guessing tokens is.
            ip = request.remote or "unknown"
            if self.limiter.blocked(ip):
                raise Refused("TOO_MANY_REQUESTS", "too many requests with unknown tokens; wait a minute")
            self.limiter.fail(ip)
            raise Refused("UNAUTHORIZED", "the bearer token is not valid")
        return who

    def guard(
        self, perm: Perm, handler: Handler, *, scoped: bool = True, must_exist: bool = True
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def guarded(request: web.Request) -> web.StreamResponse:
            who = await self.principal(request)
            acct = normalize_account(request.match_info["account"]) if scoped else ""
            if scoped and who.account is not None and who.account != acct:
                raise Refused("FORBIDDEN", "this token is confined to another account")
            if perm is Perm.GLOBAL:
                if who.account is not None or who.role != "administrator":
                    raise Refused(
                        "FORBIDDEN", "only an administrator of all accounts may search every account"
                    )
            elif perm not in ROLE_PERMS.get(who.role, set()):
                raise Refused("FORBIDDEN", f"role {who.role} may not {perm.value}")
            if scoped and must_exist:
                await self.registry.require_account(acct)
            return await handler(request, who, acct)

        guarded.__name__ = handler.__name__
        return guarded

    # ------------------------------------------------------------------ accounts

    async def put_account(self, request: web.Request, who: AdminPrincipal, acct: str) -> web.Response:
        body = await body_object(request)
        only_keys(body, ("require_approval",))
        value = body.get("require_approval")
        if value is not None and not isinstance(value, bool):
            raise Refused("INVALID_REQUEST", "'require_approval' must be true or false")
        return web.json_response(await self.registry.put_account(acct, value))

    async def get_account(self, request: web.Request, who: AdminPrincipal, acct: str) -> web.Response:
        return web.json_response(account_json(acct, await self.registry.require_account(acct)))

    async def put_default(self, request: web.Request, who: AdminPrincipal, acct: str) -> web.Response:
        body = await body_object(request)
        only_keys(body, ("state",))
        state = body.get("state")
        if state not in ("enabled", "blocked"):
            raise Refused("INVALID_REQUEST", "'state' must be 'enabled' or 'blocked'")
        return web.json_response(await self.registry.set_default_state(acct, str(state)))

    # ------------------------------------------------------------------ integrations

    async def create_integration(self, request: web.Request, who: AdminPrincipal, acct: str) -> web.Response:
        body = await body_object(request)
        created = await self.registry.create_integration(acct, body, who.id)
        return web.json_response(created, status=201)

    async def list_integrations(self, request: web.Request, who: AdminPrincipal, acct: str) -> web.Response:
        return web.json_response({"integrations": await self.registry.list_integrations(acct)})

    async def get_integration(self, request: web.Request, who: AdminPrincipal, acct: str) -> web.Response:
        return web.json_response(await self.registry.get_integration(acct, request.match_info["id"]))

    async def patch_integration(self, request: web.Request, who: AdminPrincipal, acct: str) -> web.Response:
        body = await body_object(request)
        iid = request.match_info["id"]
        await self.registry.get_integration(acct, iid)  # 404 before validation of an unknown id
        return web.json_response(await self.registry.update_integration(acct, iid, body, who.id))

    async def delete_integration(self, request: web.Request, who: AdminPrincipal, acct: str) -> web.Response:
        await self.registry.remove_integration(acct, request.match_info["id"])
        return no_content()

    async def reset_credentials(self, request: web.Request, who: AdminPrincipal, acct: str) -> web.Response:
        return web.json_response(
            await self.registry.reset_credentials(acct, request.match_info["id"], who.id)
        )

    async def changes(self, request: web.Request, who: AdminPrincipal, acct: str) -> web.Response:
        return web.json_response({"changes": await self.registry.changes(acct, request.match_info["id"])})

    async def integration_log(self, request: web.Request, who: AdminPrincipal, acct: str) -> web.Response:
        iid = request.match_info["id"]
        await self.registry.get_integration(acct, iid)
        q = parse_query(request.query)
        entries, cursor = await self.store.logs.query(ks.execution_log(acct, iid), q)
        return log_page(entries, cursor)

    async def create_bundle(self, request: web.Request, who: AdminPrincipal, acct: str) -> web.Response:
        bundle_id = await self.registry.create_bundle(acct, request.match_info["id"])
        return web.json_response(
            {"bundle_id": bundle_id, "integration_id": request.match_info["id"]}, status=201
        )

    async def install_bundle(self, request: web.Request, who: AdminPrincipal, acct: str) -> web.Response:
        installed = await self.registry.install_bundle(acct, request.match_info["bundle_id"], who.id)
        return web.json_response(installed, status=201)

    # ------------------------------------------------------------------ tokens

    async def create_token(self, request: web.Request, who: AdminPrincipal, acct: str) -> web.Response:
        body = await body_object(request)
        only_keys(body, ("integration_id", "user", "role"))
        iid = text_field(body, "integration_id", numeric_ok=True)
        user = text_field(body, "user")
        role = text_field(body, "role", numeric_ok=True)
        if not looks_like_id(iid):
            raise Refused("NOT_FOUND", f"no integration {iid} installed in account {acct}")
        return web.json_response(await self.tokens.issue(acct, iid, user, role), status=201)

    async def list_tokens(self, request: web.Request, who: AdminPrincipal, acct: str) -> web.Response:
        return web.json_response({"tokens": await self.tokens.list_tokens(acct)})

    async def revoke_token(self, request: web.Request, who: AdminPrincipal, acct: str) -> web.Response:
        await self.tokens.revoke(acct, request.match_info["token_id"])
        return no_content()

    # ------------------------------------------------------------------ admin tokens

    async def mint_admin_token(self, request: web.Request, who: AdminPrincipal, acct: str) -> web.Response:
        body = await body_object(request)
        only_keys(body, ("role",))
        return web.json_response(await self.tokens.mint_admin(acct, str(body.get("role", ""))), status=201)

    async def list_admin_tokens(self, request: web.Request, who: AdminPrincipal, acct: str) -> web.Response:
        return web.json_response({"admin_tokens": await self.tokens.list_admin(acct)})

    async def revoke_admin_token(self, request: web.Request, who: AdminPrincipal, acct: str) -> web.Response:
        await self.tokens.revoke_admin(acct, request.match_info["token_id"])
        return no_content()

    # ------------------------------------------------------------------ logs

    async def usage_log(self, request: web.Request, who: AdminPrincipal, acct: str) -> web.Response:
        entries, cursor = await self.store.logs.query(ks.usage_log(acct), parse_query(request.query))
        return log_page(entries, cursor)

    async def global_usage_log(self, request: web.Request, who: AdminPrincipal, acct: str) -> web.Response:
        q = parse_query(request.query)
        if q.request_id is not None:
            found = await self.store.logs.find_all(q.request_id)
            return log_page([entry for _, entry in found if matches(entry, q)][: q.limit], None)
        entries, cursor = await self.store.logs.query(ks.GLOBAL_LOG, q)
        return log_page(entries, cursor)


async def openapi(request: web.Request) -> web.Response:
    text = resources.files("gateway.web").joinpath("openapi.json").read_text()
    return web.Response(text=text, content_type="application/json")


def create_admin_app(
    store: RedisStore,
    settings: Settings,
    *,
    bootstrap_token: str | None,
    failure_limit: int = 600,
    failure_window: float = 60.0,
) -> web.Application:
    api = AdminApi(store, settings, bootstrap_token, FailureLimiter(failure_limit, failure_window))
    lanes = StoreLanes(ADMIN_STORE_LANES, ADMIN_STORE_LANE_WAIT)
    app = web.Application(middlewares=[json_errors, store_turns(lanes)], client_max_size=1 << 20)
    g, A = api.guard, "/accounts/{account}"
    I = A + "/integrations/{id}"  # noqa: E741
    r = app.router
    r.add_get("/openapi.json", openapi)
    r.add_put(A, g(Perm.ADMIN, api.put_account, must_exist=False))
    r.add_get(A, g(Perm.ADMIN, api.get_account))  # the account's preferences: administrator (SPEC 5)
    r.add_put(A + "/default-integration", g(Perm.ADMIN, api.put_default))
    r.add_post(A + "/integrations", g(Perm.EDIT, api.create_integration))
    r.add_get(A + "/integrations", g(Perm.LIST, api.list_integrations))
    r.add_get(I, g(Perm.VIEW, api.get_integration))
    r.add_patch(I, g(Perm.EDIT, api.patch_integration))
    r.add_delete(I, g(Perm.EDIT, api.delete_integration))
    r.add_post(I + "/reset-credentials", g(Perm.EDIT, api.reset_credentials))
    r.add_get(I + "/changes", g(Perm.VIEW, api.changes))
    r.add_get(I + "/log", g(Perm.VIEW, api.integration_log))
    r.add_post(I + "/bundle", g(Perm.EDIT, api.create_bundle))
    r.add_post(A + "/bundles/{bundle_id}/install", g(Perm.EDIT, api.install_bundle))
    r.add_post(A + "/tokens", g(Perm.EDIT, api.create_token))
    r.add_get(A + "/tokens", g(Perm.VIEW, api.list_tokens))
    r.add_delete(A + "/tokens/{token_id}", g(Perm.EDIT, api.revoke_token))
    r.add_post(A + "/admin-tokens", g(Perm.ADMIN, api.mint_admin_token))
    r.add_get(A + "/admin-tokens", g(Perm.ADMIN, api.list_admin_tokens))
    r.add_delete(A + "/admin-tokens/{token_id}", g(Perm.ADMIN, api.revoke_admin_token))
    r.add_get(A + "/usage-log", g(Perm.ADMIN, api.usage_log))
    r.add_get("/usage-log", g(Perm.GLOBAL, api.global_usage_log, scoped=False))
    return app


def setup_admin(
    app: web.Application,
    store: RedisStore,
    settings: Settings,
    *,
    bootstrap_token: str | None,
    failure_limit: int = 600,
    failure_window: float = 60.0,
) -> web.Application:
    """Mount the admin API at /admin/v1 on the admin listener's app; returns the sub-app."""
    admin = create_admin_app(
        store,
        settings,
        bootstrap_token=bootstrap_token,
        failure_limit=failure_limit,
        failure_window=failure_window,
    )
    app.add_subapp(PREFIX, admin)
    return admin
