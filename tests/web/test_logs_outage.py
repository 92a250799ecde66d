"""The log across a Redis outage in the middle of traffic (SPEC section 6: a failure to write
the log never fails the request): entries wait in the writer's bounded buffer and are written
once Redis is back; beyond the bound they are dropped and counted. Each test has its own
Redis server, stopped and restarted from its append-only file while requests flow."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from gateway.config import load_settings
from gateway.store import keyspace as ks
from gateway.store.embedded import EmbeddedRedis
from gateway.store.logstore import LogQuery
from gateway.store.redis import open_store
from tests.store.helpers import KEY_A
from tests.web.conftest import MakeRig, Rig

DEFAULTS = load_settings(environ={})


@pytest.fixture
def redis_url(fresh_redis: EmbeddedRedis) -> str:
    return fresh_redis.url


@pytest.fixture
def restarts(fresh_redis: EmbeddedRedis) -> Iterator[list[EmbeddedRedis]]:
    started: list[EmbeddedRedis] = []
    yield started
    for server in started:
        server.stop()


async def stop(server: EmbeddedRedis) -> None:
    await asyncio.to_thread(server.stop)


async def restart(server: EmbeddedRedis, restarts: list[EmbeddedRedis]) -> None:
    """The same data directory and password: the clients reconnect to the same URL."""
    again = await asyncio.to_thread(EmbeddedRedis(server.dir.parent).start)
    restarts.append(again)


async def drained(rig: Rig, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while rig.writer.depth:
        assert time.monotonic() < deadline, f"{rig.writer.depth} entries still buffered"
        await asyncio.sleep(0.05)


async def with_metrics(rig: Rig, url: str) -> Any:
    """The proxy on a store wired to the metrics, as `serve` wires it (store errors counted)."""
    store = await open_store(rig.ctx.settings, url, secret_keys=[KEY_A], metrics=rig.ctx.metrics)
    rig.ctx.store = store
    rig.writer.sink = store
    return store


async def test_entries_survive_a_redis_restart_in_the_middle_of_traffic(
        make_rig: MakeRig, fresh_redis: EmbeddedRedis, restarts: list[EmbeddedRedis]) -> None:
    rig = await make_rig()
    store = await with_metrics(rig, fresh_redis.url)
    rig.writer.max_backoff = 0.2
    m = rig.ctx.metrics.registry
    t = await rig.tenant()
    statuses: dict[str, int] = {}
    phase = {"name": "before"}

    async def traffic() -> None:
        i = 0
        while phase["name"] != "done":
            rid = f"{phase['name']}-{i}"
            resp = await rig.soap("2019_2", t.passport("2019_2"), headers={"X-Request-Id": rid})
            statuses[rid] = resp.status
            i += 1
            await asyncio.sleep(0.005)

    flowing = asyncio.create_task(traffic())
    try:
        await asyncio.sleep(0.3)
        phase["name"] = "outage"
        await stop(fresh_redis)
        await asyncio.sleep(0.8)
        phase["name"] = "after"
        await restart(fresh_redis, restarts)
        await asyncio.sleep(0.5)
    finally:
        phase["name"] = "done"
        await flowing
    during = [rid for rid in statuses if rid.startswith("outage")]
    assert len(during) > 10 and all(statuses[rid] == 200 for rid in during)  # cached records kept serving
    assert len(statuses) < rig.ctx.settings.log.buffer_entries
    await drained(rig)
    assert rig.writer.failed_batches > 0 and rig.writer.dropped_total == 0
    assert m.get_sample_value("gateway_log_entries_dropped_total") == 0
    assert (m.get_sample_value("gateway_store_errors_total", {"operation": "write"}) or 0) > 0
    assert (m.get_sample_value("gateway_cache_lookups_total", {"result": "stale"}) or 0) > 0
    assert m.get_sample_value("gateway_log_buffer_entries") == 0

    page, _ = await store.logs.query(ks.usage_log(t.account), LogQuery(limit=1000))
    logged = [e["request_id"] for e in page]
    assert set(logged) == set(statuses)  # nothing lost: before, during and after the outage
    assert all(e["outcome"] == "forwarded" for e in page)
    for rid in (during[0], during[-1]):
        assert await store.logs.find(rid) is not None
    await store.close()


async def test_beyond_the_buffer_entries_are_dropped_and_counted(
        make_rig: MakeRig, fresh_redis: EmbeddedRedis, restarts: list[EmbeddedRedis]) -> None:
    rig = await make_rig(log=replace(DEFAULTS.log, buffer_entries=8))
    store = await with_metrics(rig, fresh_redis.url)
    rig.writer.max_backoff = 0.2
    m = rig.ctx.metrics.registry
    t = await rig.tenant()
    assert (await rig.soap("2019_2", t.passport("2019_2"))).status == 200  # the records are cached
    await drained(rig)
    await stop(fresh_redis)
    for i in range(20):
        resp = await rig.soap("2019_2", t.passport("2019_2"), headers={"X-Request-Id": f"drop-{i}"})
        assert resp.status == 200
    tba = await rig.soap("2024_2", t.tba(), headers={"X-Request-Id": "no-nonce-check"})
    assert tba.status == 503  # a TBA nonce cannot be checked without Redis
    await asyncio.sleep(0.3)
    assert rig.writer.dropped_total == 13
    assert m.get_sample_value("gateway_log_entries_dropped_total") == 13
    assert m.get_sample_value("gateway_log_buffer_entries") == 8
    await restart(fresh_redis, restarts)
    await drained(rig)
    assert m.get_sample_value("gateway_log_buffer_entries") == 0
    page, _ = await store.logs.query(ks.usage_log(t.account), LogQuery(limit=1000))
    logged = {e["request_id"] for e in page}
    assert {f"drop-{i}" for i in range(8)} <= logged
    assert not {f"drop-{i}" for i in range(8, 20)} & logged and "no-nonce-check" not in logged
    await store.close()


async def test_store_unavailable_is_logged_as_an_error_once_redis_is_back(
        make_rig: MakeRig, fresh_redis: EmbeddedRedis, restarts: list[EmbeddedRedis]) -> None:
    rig = await make_rig()
    store = await with_metrics(rig, fresh_redis.url)
    rig.writer.max_backoff = 0.2
    t = await rig.tenant()
    await stop(fresh_redis)
    resp = await rig.soap("2024_2", t.tba(), headers={"X-Request-Id": "during"})
    assert resp.status == 503
    await restart(fresh_redis, restarts)
    await drained(rig)
    found = await store.logs.find("during")
    assert found is not None
    e = found[1]
    assert (e["outcome"], e["reason"], e["fault_code"], e["http_status"]) == (
        "error", "store_unavailable", "UNEXPECTED_ERROR", 503)
    assert (rig.ctx.metrics.registry.get_sample_value("gateway_store_errors_total", {"operation": "request"})
            or 0) >= 1
    await store.close()
