"""A whole proxy in-process: real Redis (embedded), real upstream (the sample backend on a
real socket), the real store, log writer and metrics."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.backend import SampleBackend
from gateway.config import Settings, load_settings
from gateway.core.policy import policy_settings
from gateway.metrics import GatewayMetrics
from gateway.store.redis import RedisStore
from gateway.web.app import create_proxy_app
from gateway.web.context import ProxyContext
from gateway.web.logwriter import LogWriter
from tests.factories import application_info_xml, get_body, make_envelope, passport_xml, token_passport_xml
from tests.store.helpers import new_account, store_on


@dataclass
class Tenant:
    account: str
    integration: dict[str, Any]
    token: dict[str, Any]
    email: str = "jane@example.com"

    def tba(self, version: str = "2024_2", body: str | None = None, **kw: Any) -> bytes:
        tp = token_passport_xml(version, self.account, self.integration["consumer_key"],
                                self.integration["consumer_secret"], self.token["token_id"],
                                self.token["token_secret"], **kw)
        return make_envelope(body if body is not None else get_body(version), [tp])

    def passport(self, version: str = "2019_2", body: str | None = None, app_id: bool = True) -> bytes:
        parts = [passport_xml(version, self.email, "s3cret-pw", self.account)]
        if app_id:
            parts.append(application_info_xml(version, self.integration["application_id"]))
        return make_envelope(body if body is not None else get_body(version), parts)


@dataclass
class Rig:
    client: TestClient[web.Request, web.Application]
    backend: SampleBackend
    store: RedisStore
    ctx: ProxyContext
    writer: LogWriter

    async def soap(self, version: str, payload: bytes | Any, *, headers: dict[str, str] | None = None,
                   path: str | None = None) -> aiohttp.ClientResponse:
        hdrs = {"Content-Type": "text/xml; charset=utf-8"}
        hdrs.update(headers or {})
        return await self.client.post(path or f"/services/NetSuitePort_{version}", data=payload, headers=hdrs)

    async def tenant(self, **fields: Any) -> Tenant:
        return await new_tenant(self.store, **fields)

    async def flush_logs(self) -> None:
        await self.writer.flush()


async def new_tenant(store: RedisStore, **fields: Any) -> Tenant:
    """A fresh account with an enabled integration (both methods, `fields` on top) and a token."""
    account = new_account()
    await store.registry.put_account(account, False)
    body = {"name": f"integration-{secrets.token_hex(3)}", "state": "enabled",
            "auth": {"user_credentials": True, "token_based": True}} | fields
    integ = await store.registry.create_integration(account, body, "test")
    token = await store.tokens.issue(account, integ["id"], "jane@example.com", "3")
    return Tenant(account, integ, token)


MakeRig = Callable[..., Any]


async def fault_code(resp: Any) -> str:
    """The platformFaults code of a SOAP fault answer."""
    text = await resp.text()
    start = text.find("<platformFaults:code>") + len("<platformFaults:code>")
    return text[start:text.find("</platformFaults:code>")]


async def logged(rig: Rig, request_id: str) -> dict[str, Any]:
    """The usage-log entry of a request, once the log writer has flushed it."""
    await rig.flush_logs()
    found = await rig.store.logs.find(request_id)
    assert found is not None, request_id
    return dict(found[1])


@pytest.fixture
async def make_rig(redis_url: str, aiohttp_server: Any) -> AsyncIterator[MakeRig]:
    made: list[tuple[TestClient[web.Request, web.Application], aiohttp.ClientSession, LogWriter, RedisStore]] = []

    async def make(backend_app: web.Application | None = None, **overrides: Any) -> Rig:
        backend = SampleBackend()
        server = await aiohttp_server(backend_app or backend.app())
        settings: Settings = load_settings(environ={}, flags={"upstream": str(server.make_url("")).rstrip("/")})
        if overrides:
            settings = settings.replace(**overrides)
        metrics = GatewayMetrics(settings.max_integration_labels)
        store = await store_on(redis_url, settings=settings)
        session = aiohttp.ClientSession(auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
                                        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"))
        writer = LogWriter(store, settings.log.buffer_entries, metrics=metrics)
        writer.start()
        ctx = ProxyContext(settings=settings, policy=policy_settings(settings), store=store, session=session,
                           logs=writer, metrics=metrics)
        client = TestClient(TestServer(create_proxy_app(ctx)))
        await client.start_server()
        made.append((client, session, writer, store))
        return Rig(client, backend, store, ctx, writer)

    yield make
    for client, session, writer, store in made:
        await client.close()
        await writer.stop()
        await session.close()
        await store.close()
