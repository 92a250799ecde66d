"""Execution and usage logs in Redis Streams; the LogWriter across a Redis outage."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gateway.store import keyspace as ks
from gateway.store.embedded import EmbeddedRedis
from gateway.store.logstore import LogQuery
from gateway.web.logwriter import LogWriter
from tests.store.helpers import make_settings, new_account, store_on


def entry(acct: str | None, rid: str, iid: str = "0123456789abcdef0123456789abcdef", **kw: Any) -> dict[str, Any]:
    base = {
        "request_id": rid,
        "time": "2030-01-01T00:00:00.000Z",
        "account": acct,
        "integration_id": iid,
        "operation": "get",
        "outcome": "forwarded",
        "request_document": "<x/>",
    }
    return base | kw


async def test_streams_per_account_integration_and_global(redis_url: str) -> None:
    store = await store_on(redis_url)
    acct = new_account()
    iid = "0123456789abcdef0123456789abcdef"
    await store.write_log_entries(
        [
            entry(acct.lower(), "r1", iid),
            entry(acct, "r2", "default"),
            entry(acct, "r3", "none"),
            entry(None, f"r4-{acct}", "none"),
        ]
    )
    usage, _ = await store.logs.query(ks.usage_log(acct), LogQuery())
    assert [e["request_id"] for e in usage] == ["r3", "r2", "r1"]
    execution, _ = await store.logs.query(ks.execution_log(acct, iid), LogQuery())
    assert [e["request_id"] for e in execution] == ["r1"]
    found = await store.logs.find(f"r4-{acct}")
    assert found is not None and found[0] == ks.GLOBAL_LOG
    assert await store.client.ttl(ks.usage_log(acct)) > 20 * 86400
    await store.close()


async def test_paging_covers_everything_once(redis_url: str) -> None:
    store = await store_on(redis_url)
    acct = new_account()
    await store.write_log_entries(
        [entry(acct, f"r{i}", outcome="rejected" if i % 3 else "forwarded") for i in range(450)]
    )
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = await store.logs.query(
            ks.usage_log(acct), LogQuery(limit=100, cursor=cursor, outcome="rejected")
        )
        seen += [e["request_id"] for e in page]
        if cursor is None:
            break
    assert seen == [f"r{i}" for i in reversed(range(450)) if i % 3]
    await store.close()


async def test_max_entries_per_stream(redis_url: str) -> None:
    store = await store_on(redis_url, settings=make_settings(log_max_entries_per_stream=10))
    acct = new_account()
    for i in range(4):
        await store.write_log_entries([entry(acct, f"r{i}-{j}") for j in range(10)])
    assert await store.client.xlen(ks.usage_log(acct)) == 10
    page, _ = await store.logs.query(ks.usage_log(acct), LogQuery(limit=1000))
    assert page[0]["request_id"] == "r3-9" and len(page) == 10
    await store.close()


async def test_retention_trims_old_entries_sandbox_sooner(redis_url: str) -> None:
    store = await store_on(redis_url)
    prod, sandbox = new_account(), new_account(sandbox=True)
    await store.write_log_entries([entry(prod, "old-p"), entry(sandbox, "old-s")])
    assert await store.client.ttl(ks.usage_log(sandbox)) <= 7 * 86400
    now = time.time()
    store.logs.clock = lambda: now + 8 * 86400  # eight days later
    await store.write_log_entries([entry(prod, "new-p"), entry(sandbox, "new-s")])
    assert [e["request_id"] for e in (await store.logs.query(ks.usage_log(sandbox), LogQuery()))[0]] == ["new-s"]
    assert len((await store.logs.query(ks.usage_log(prod), LogQuery()))[0]) == 2
    store.logs.clock = lambda: now + 22 * 86400
    await store.write_log_entries([entry(prod, "newer-p")])
    assert [e["request_id"] for e in (await store.logs.query(ks.usage_log(prod), LogQuery()))[0]] == ["newer-p"]
    await store.close()


async def test_writer_buffers_across_an_outage_and_counts_drops(fresh_redis: EmbeddedRedis) -> None:
    store = await store_on(fresh_redis.url)
    acct = new_account()
    writer = LogWriter(store, 50, interval=0.01, max_backoff=0.1)
    writer.start()
    for i in range(10):
        assert writer.submit(entry(acct, f"a{i}"))
    for _ in range(200):
        if writer.written_total == 10:
            break
        await asyncio.sleep(0.01)
    assert writer.written_total == 10
    fresh_redis.stop()
    for i in range(60):
        writer.submit(entry(acct, f"b{i}"))  # never blocks, never raises
    assert writer.depth == 50 and writer.dropped_total == 10
    await asyncio.sleep(0.3)
    assert writer.failed_batches > 0 and writer.depth == 50
    restarted = EmbeddedRedis(fresh_redis.dir.parent).start()  # same data dir and password
    try:
        for _ in range(500):
            if writer.depth == 0:
                break
            await asyncio.sleep(0.01)
        assert writer.depth == 0 and writer.written_total == 60
        await writer.stop()
        page, _ = await store.logs.query(ks.usage_log(acct), LogQuery(limit=1000))
        assert [e["request_id"] for e in page] == [f"b{i}" for i in reversed(range(50))] + [
            f"a{i}" for i in reversed(range(10))
        ]
    finally:
        await store.close()
        restarted.stop()


async def test_writer_stop_flushes(redis_url: str) -> None:
    store = await store_on(redis_url)
    acct = new_account()
    writer = LogWriter(store, 1000, interval=5.0)
    writer.start()
    for i in range(3):
        writer.submit(entry(acct, f"s{i}"))
    await writer.stop()
    assert writer.written_total == 3
    assert len((await store.logs.query(ks.usage_log(acct), LogQuery()))[0]) == 3
    await store.close()
