"""The reliability rig. A gateway assembled the way `gateway serve` assembles it (the guarded runner, the production
upstream connector, keep-alive and header timeouts), in-process on a real socket, over a Redis
the test chooses (usually the private `fresh_redis`, so it can be stopped or killed), in front
of a real upstream (the sample backend, or a misbehaving raw server)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from gateway.backend import SampleBackend
from gateway.config import Settings, load_settings
from gateway.core.policy import policy_settings
from gateway.metrics import GatewayMetrics
from gateway.runtime import make_proxy_runner, upstream_session
from gateway.store.redis import RedisStore
from gateway.web.app import health_routes
from gateway.web.context import ProxyContext
from gateway.web.logwriter import LogWriter
from tests.store.helpers import store_on
from tests.web.conftest import Tenant, new_tenant

SOAP_HEADERS = {"Content-Type": "text/xml; charset=utf-8"}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def code(self) -> str:
        """The fault's platformFaults:code ("" when the body is no fault)."""
        text = self.body.decode("utf-8", "replace")
        start = text.find("<platformFaults:code>")
        if start < 0:
            return ""
        start += len("<platformFaults:code>")
        return text[start:text.find("</platformFaults:code>")]

    @property
    def is_fault(self) -> bool:
        return b"<soapenv:Fault>" in self.body and self.headers.get("Content-Type", "").startswith("text/xml")


@dataclass
class Gateway:
    host: str
    port: int
    admin_port: int
    settings: Settings
    ctx: ProxyContext
    store: RedisStore
    writer: LogWriter
    http: aiohttp.ClientSession
    backend: SampleBackend | None
    metrics: GatewayMetrics
    tenants: list[Tenant] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    async def soap(self, version: str, payload: Any, *, headers: dict[str, str] | None = None,
                   path: str | None = None, timeout: float = 30) -> Answer:
        hdrs = SOAP_HEADERS | (headers or {})
        async with self.http.post(self.url(path or f"/services/NetSuitePort_{version}"), data=payload,
                                  headers=hdrs, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            return Answer(r.status, dict(r.headers), await r.read())

    async def ready(self) -> bool:
        async with self.http.get(f"http://{self.host}:{self.admin_port}/readyz",
                                 timeout=aiohttp.ClientTimeout(total=10)) as r:
            return r.status == 200

    async def tenant(self, **fields: Any) -> Tenant:
        tenant = await new_tenant(self.store, **fields)
        self.tenants.append(tenant)
        return tenant

    async def entry(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The usage-log entry of `request_id`, once the log writer has written it."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            found = await self.store.logs.find(request_id)
            if found is not None:
                return found[1]
            assert asyncio.get_running_loop().time() < deadline, f"no log entry for {request_id}"
            await asyncio.sleep(0.05)


StartGateway = Callable[..., Awaitable[Gateway]]


@contextlib.asynccontextmanager
async def gateways(default_redis: str | None = None) -> AsyncIterator[StartGateway]:
    """Yields `start(redis=URL, upstream=URL | None, backend_app=..., **settings_changes)`;
    `limits` and `log` may be given as dicts of the fields to change. Everything started is
    stopped when the block ends."""
    async with AsyncExitStack() as stack:

        async def start(*, redis: str | None = None, upstream: str | None = None,
                        backend_app: web.Application | None = None, connections: int = 100,
                        **changes: Any) -> Gateway:
            redis = redis or default_redis
            assert redis is not None, "which Redis?"
            backend = None
            if upstream is None:
                backend = SampleBackend()
                # Not aiohttp's TestServer: it cancels handlers when the client goes away, and
                # the sample backend must record the requests that arrived incomplete.
                backend_runner = web.AppRunner(backend_app or backend.app(), access_log=None)
                await backend_runner.setup()
                stack.push_async_callback(backend_runner.cleanup)
                await web.TCPSite(backend_runner, "127.0.0.1", 0).start()
                upstream = f"http://127.0.0.1:{backend_runner.addresses[0][1]}"
            settings = load_settings(environ={}, flags={"upstream": upstream})
            if isinstance(changes.get("limits"), dict):
                changes["limits"] = _replace(settings.limits, **changes["limits"])
            if isinstance(changes.get("log"), dict):
                changes["log"] = _replace(settings.log, **changes["log"])
            if changes:
                settings = settings.replace(**changes)
            metrics = GatewayMetrics(settings.max_integration_labels)
            store = await store_on(redis, settings=settings)
            stack.push_async_callback(store.close)
            session = await stack.enter_async_context(upstream_session(settings))
            writer = LogWriter(store, settings.log.buffer_entries, metrics=metrics)
            writer.start()
            stack.push_async_callback(writer.stop)
            ctx = ProxyContext(settings=settings, policy=policy_settings(settings), store=store, session=session,
                               logs=writer, metrics=metrics)
            stack.push_async_callback(_cancel_background, ctx)
            runner = make_proxy_runner(ctx)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            site = web.TCPSite(runner, "127.0.0.1", 0, backlog=2048)
            await site.start()
            port = runner.addresses[0][1]
            admin = web.Application()
            health_routes(admin, ctx, lambda: None)
            admin_runner = web.AppRunner(admin, access_log=None)
            await admin_runner.setup()
            stack.push_async_callback(admin_runner.cleanup)
            await web.TCPSite(admin_runner, "127.0.0.1", 0).start()
            admin_port = admin_runner.addresses[0][1]
            http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections),
                                         cookie_jar=aiohttp.DummyCookieJar())
            stack.push_async_callback(http.close)
            return Gateway("127.0.0.1", port, admin_port, settings, ctx, store, writer, http, backend, metrics)

        yield start


def _replace(obj: Any, **changes: Any) -> Any:
    from dataclasses import replace

    return replace(obj, **changes)


async def _cancel_background(ctx: ProxyContext) -> None:
    for task in list(ctx.background):
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


# ---------------------------------------------------------------------------- raw sockets


async def raw_exchange(host: str, port: int, data: bytes, *, timeout: float = 5.0,
                       half_close: bool = False) -> bytes:
    """Send `data` on a fresh connection; everything the server answers until it closes (or
    `timeout`)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        if half_close:
            writer.write_eof()
        out = bytearray()
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(timeout):
                while chunk := await reader.read(65536):
                    out += chunk
        return bytes(out)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def fds_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def settle_tasks(baseline: int, *, slack: int = 0, timeout: float = 5.0) -> int:
    """Wait until no more than `baseline + slack` tasks are alive; the count seen last."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        count = len(asyncio.all_tasks())
        if count <= baseline + slack or asyncio.get_running_loop().time() > deadline:
            return count
        await asyncio.sleep(0.05)
