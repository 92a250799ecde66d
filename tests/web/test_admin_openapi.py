"""The OpenAPI document served at /admin/v1/openapi.json lists exactly the admin routes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import pytest
from aiohttp import web

from gateway.store.redis import RedisStore
from gateway.web.admin import create_admin_app
from tests.store.helpers import make_settings, store_on


def _routes(app: web.Application) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if route.method != "HEAD":
            out.add((route.method.lower(), str(path)))
    return out


def _documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, ops in doc["paths"].items() for method in ops}


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    s = await store_on(redis_url, listen=False)
    yield s
    await s.close()


async def test_every_route_is_documented_and_every_documented_route_exists(store: RedisStore) -> None:
    doc = json.loads(resources.files("gateway.web").joinpath("openapi.json").read_text())
    assert doc["openapi"].startswith("3.")
    app = create_admin_app(store, make_settings(), bootstrap_token="x")
    routes = _routes(app)
    assert len(routes) == 22
    assert routes == _documented(doc)


async def test_openapi_is_served_without_a_token(aiohttp_client: Any, store: RedisStore) -> None:
    root = web.Application()
    root.add_subapp("/admin/v1", create_admin_app(store, make_settings(), bootstrap_token="x"))
    client = await aiohttp_client(root)
    resp = await client.get("/admin/v1/openapi.json")
    assert resp.status == 200
    assert (await resp.json())["info"]["title"]
