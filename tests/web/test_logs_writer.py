"""The LogWriter against a real Redis: entries handed over as builders (the proxy's
`Exchange.log_entry`) are built in the writer, in slices that leave the event loop free, and a
builder that fails costs its own entry only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from gateway.metrics import GatewayMetrics
from gateway.store import keyspace as ks
from gateway.store.logstore import LogQuery
from gateway.web.logwriter import LogWriter
from tests.store.helpers import new_account, store_on


def builder(acct: str, rid: str, cost: float = 0.0) -> Any:
    def build() -> Mapping[str, Any]:
        if cost:
            time.sleep(cost)  # stands for redacting a large document
        return {"request_id": rid, "account": acct, "integration_id": "none", "time": "2030-01-01T00:00:00Z"}

    return build


async def test_builders_are_built_by_the_writer_without_stalling_the_loop(redis_url: str) -> None:
    store = await store_on(redis_url)
    acct = new_account()
    writer = LogWriter(store, 1000, interval=0.01)
    for i in range(100):
        assert writer.submit(builder(acct, f"b{i}", cost=0.001))
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    writer.start()
    try:
        for _ in range(500):
            if writer.written_total == 100 and writer.depth == 0:
                break
            await asyncio.sleep(0.01)
    finally:
        tick.cancel()
        await writer.stop()
    assert writer.written_total == 100
    assert max(gaps) < 0.05  # 100 ms of building, never more than a slice or two at once
    page, _ = await store.logs.query(ks.usage_log(acct), LogQuery(limit=1000))
    assert [e["request_id"] for e in page] == [f"b{i}" for i in reversed(range(100))]
    await store.close()


async def test_a_failing_builder_costs_its_own_entry_only(redis_url: str) -> None:
    store = await store_on(redis_url)
    acct = new_account()
    writer = LogWriter(store, 10, interval=0.01)

    def broken() -> Mapping[str, Any]:
        raise ValueError("cannot build")

    writer.submit(builder(acct, "ok-1"))
    writer.submit(broken)
    writer.submit({"request_id": "ok-2", "account": acct, "integration_id": "none"})
    await writer.flush()
    assert writer.written_total == 2 and writer.depth == 0
    page, _ = await store.logs.query(ks.usage_log(acct), LogQuery())
    assert [e["request_id"] for e in page] == ["ok-2", "ok-1"]
    await store.close()


async def test_depth_gauge_and_drop_counter(redis_url: str) -> None:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry=registry)
    store = await store_on(redis_url)
    acct = new_account()
    writer = LogWriter(store, 3, metrics=metrics, interval=0.01)
    for i in range(5):
        writer.submit(builder(acct, f"d{i}"))
    assert registry.get_sample_value("gateway_log_entries_dropped_total") == 2
    writer.start()
    for _ in range(200):
        if writer.depth == 0 and registry.get_sample_value("gateway_log_buffer_entries") == 0:
            break
        await asyncio.sleep(0.01)
    assert registry.get_sample_value("gateway_log_buffer_entries") == 0 and writer.written_total == 3
    await writer.stop()
    await store.close()


async def test_large_batches_go_in_several_round_trips(redis_url: str) -> None:
    store = await store_on(redis_url)
    acct = new_account()
    doc = "x" * 65536
    entries = [{"request_id": f"L{i}-{acct}", "account": acct, "integration_id": "none",
                "request_document": doc, "response_document": doc} for i in range(40)]
    executed = 0
    real = store.client.pipeline

    def counting(*args: Any, **kw: Any) -> Any:
        pipe = real(*args, **kw)
        execute = pipe.execute

        async def counted(*a: Any, **k: Any) -> Any:
            nonlocal executed
            executed += 1
            return await execute(*a, **k)

        pipe.execute = counted
        return pipe

    store.client.pipeline = counting  # type: ignore[method-assign]
    await store.write_log_entries(entries)
    assert executed == 5  # 40 entries of 128 KiB: eight per MiB
    page, _ = await store.logs.query(ks.usage_log(acct), LogQuery(limit=100))
    assert len(page) == 40 and page[0]["request_document"] == doc
    await store.close()
