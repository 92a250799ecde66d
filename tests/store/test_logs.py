"""Execution and usage logs in Redis Streams; the LogWriter across a Redis outage."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gateway.store import keyspace as ks
from gateway.store import logstore
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
    # ?request_id= on an execution log finds its entries, and only its own.
    other = "fedcba9876543210fedcba9876543210"
    for key, rid, expected in [(ks.execution_log(acct, iid), "r1", ["r1"]), (ks.execution_log(acct, iid), "r2", []),
                               (ks.execution_log(acct, other), "r1", []), (ks.usage_log(acct), "r1", ["r1"]),
                               (ks.usage_log(new_account()), "r1", [])]:
        hits, _ = await store.logs.query(key, LogQuery(request_id=rid))
        assert [e["request_id"] for e in hits] == expected, (key, rid)
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


async def test_one_write_across_accounts_and_the_global_log_keeps_each_stream_in_order(redis_url: str) -> None:
    store = await store_on(redis_url)
    a, b = new_account(), new_account(sandbox=True)
    iid, other = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
    batch = []
    for i in range(6):
        batch += [
            entry(a, f"{a}-{i}", iid if i % 2 else other),
            entry(None, f"{a}-g{i}", "none"),
            entry(b, f"{b}-{i}", "default" if i == 3 else iid),
        ]
    await store.write_log_entries(batch)

    async def ids(key: str) -> list[str]:
        return [e["request_id"] for e in (await store.logs.query(key, LogQuery(limit=1000)))[0]]

    assert await ids(ks.usage_log(a)) == [f"{a}-{i}" for i in reversed(range(6))]
    assert await ids(ks.execution_log(a, iid)) == [f"{a}-{i}" for i in (5, 3, 1)]
    assert await ids(ks.execution_log(a, other)) == [f"{a}-{i}" for i in (4, 2, 0)]
    assert await ids(ks.usage_log(b)) == [f"{b}-{i}" for i in reversed(range(6))]
    assert await ids(ks.execution_log(b, iid)) == [f"{b}-{i}" for i in (5, 4, 2, 1, 0)]
    assert not await store.client.exists(ks.execution_log(b, "default"))
    global_ids = [i for i in await ids(ks.GLOBAL_LOG) if i.startswith(f"{a}-g")]
    assert global_ids == [f"{a}-g{i}" for i in reversed(range(6))]
    for rid in (f"{a}-2", f"{b}-3", f"{a}-g4"):
        found = await store.logs.find(rid)
        assert found is not None and found[1]["request_id"] == rid
    assert 20 * 86400 < await store.client.ttl(ks.usage_log(a)) <= 21 * 86400
    assert 6 * 86400 < await store.client.ttl(ks.execution_log(b, iid)) <= 7 * 86400
    assert 6 * 86400 < await store.client.ttl(logstore.rid_queue(ks.usage_log(b))) <= 7 * 86400
    await store.close()


async def test_a_write_longer_than_the_stream_keeps_max_entries_and_forgets_the_rest(redis_url: str) -> None:
    store = await store_on(redis_url, settings=make_settings(log_max_entries_per_stream=10))
    acct = new_account()
    iid = "0123456789abcdef0123456789abcdef"
    await store.write_log_entries([entry(acct, f"{acct}-old{i}") for i in range(4)])
    await store.write_log_entries([entry(acct, f"{acct}-{i}") for i in range(25)])
    usage = ks.usage_log(acct)
    assert await store.client.xlen(usage) == 10
    assert await store.client.xlen(ks.execution_log(acct, iid)) == 10
    assert await store.client.llen(logstore.rid_queue(usage)) == 10
    page, _ = await store.logs.query(usage, LogQuery(limit=1000))
    assert [e["request_id"] for e in page] == [f"{acct}-{i}" for i in reversed(range(15, 25))]
    for rid in [f"{acct}-old{i}" for i in range(4)] + [f"{acct}-{i}" for i in range(15)]:
        assert await store.logs.find(rid) is None
        assert not await store.client.exists(ks.request_index(rid))
    for i in range(15, 25):
        found = await store.logs.find(f"{acct}-{i}")
        assert found is not None and found[0] == usage
    await store.close()


async def test_a_repeated_request_id_finds_every_accounts_own_entries(redis_url: str) -> None:
    """A client's request id may come back: a retry in one account, or another account's
    client (found by the black-box log audit: the index held the newest entry only, so the
    first account's search found nothing once another account reused its id)."""
    store = await store_on(redis_url)
    a, b = new_account(), new_account()
    dup, twice = f"dup-{a}", f"twice-{a}"
    await store.write_log_entries(
        [
            entry(a, twice, outcome="rejected"),
            entry(b, dup, outcome="rejected"),
            entry(a, f"{a}-x"),
            entry(a, dup, outcome="forwarded"),
            entry(a, twice, outcome="forwarded"),
        ]
    )
    assert sorted((stream, e["outcome"]) for stream, e in await store.logs.find_all(dup)) == sorted(
        [(ks.usage_log(a), "forwarded"), (ks.usage_log(b), "rejected")])
    for key, rid, outcomes in [(ks.usage_log(a), dup, ["forwarded"]), (ks.usage_log(b), dup, ["rejected"]),
                               (ks.usage_log(a), twice, ["forwarded", "rejected"]),  # newest first
                               (ks.execution_log(a, "0123456789abcdef0123456789abcdef"), twice,
                                ["forwarded", "rejected"])]:
        page, _ = await store.logs.query(key, LogQuery(request_id=rid))
        assert [e["outcome"] for e in page] == outcomes, (key, rid)
    page, _ = await store.logs.query(ks.usage_log(a), LogQuery(request_id=twice, limit=1))
    assert [e["outcome"] for e in page] == ["forwarded"]
    # Another account sending a's id again and again cannot crowd a's entry out of a's search
    # (found by the re-check: a global list of the last 16 could be flooded).
    await store.write_log_entries([entry(b, dup, outcome="rejected") for _ in range(logstore.REFS_PER_REQUEST_ID + 4)])
    page, _ = await store.logs.query(ks.usage_log(a), LogQuery(request_id=dup))
    assert [e["outcome"] for e in page] == ["forwarded"]
    page, _ = await store.logs.query(ks.usage_log(b), LogQuery(request_id=dup, limit=1000))
    assert len(page) == logstore.REFS_PER_REQUEST_ID + 5
    found = await store.logs.find(twice)  # in one stream, the last written is the newest
    assert found is not None and found[1]["outcome"] == "forwarded"
    await store.close()


async def test_an_index_written_before_it_was_a_list_is_read_and_extended(redis_url: str) -> None:
    store = await store_on(redis_url)
    acct = new_account()
    rid = f"old-index-{acct}"
    await store.write_log_entries([entry(acct, rid, outcome="rejected")])
    [ref] = await store.client.lrange(ks.request_index(rid), 0, -1)
    await store.client.delete(ks.request_index(rid))
    await store.client.set(ks.request_index(rid), ref, ex=3600)  # the former format
    assert [e["outcome"] for _, e in await store.logs.find_all(rid)] == ["rejected"]
    await store.client.delete(logstore.scoped_request_index(ks.usage_log(acct), rid))  # nor a stream's own
    page, _ = await store.logs.query(ks.usage_log(acct), LogQuery(request_id=rid))
    assert [e["outcome"] for e in page] == ["rejected"]
    await store.write_log_entries([entry(acct, rid, outcome="forwarded")])
    assert [e["outcome"] for _, e in await store.logs.find_all(rid)] == ["forwarded", "rejected"]
    await store.close()


async def test_a_repeated_request_id_trimmed_in_the_same_write_takes_its_index_along(redis_url: str) -> None:
    store = await store_on(redis_url, settings=make_settings(log_max_entries_per_stream=3))
    acct = new_account()
    gone, kept = f"gone-{acct}", f"kept-{acct}"
    batch = [entry(acct, gone), entry(acct, kept), entry(acct, gone), entry(acct, "x" + acct)]
    await store.write_log_entries([*batch, entry(acct, kept, outcome="rejected"), entry(acct, "y" + acct)])
    assert await store.logs.find(gone) is None and not await store.client.exists(ks.request_index(gone))
    assert not await store.client.exists(logstore.scoped_request_index(ks.usage_log(acct), gone))
    found = await store.logs.find(kept)
    assert found is not None and found[1]["outcome"] == "rejected"
    await store.close()


async def test_writes_beyond_a_round_trip_are_split_and_all_land_in_order(redis_url: str) -> None:
    store = await store_on(redis_url)
    a, b = new_account(), new_account()
    doc = "<x>" + "y" * 60_000 + "</x>"
    first = f"first-{a}"
    batch = [entry(a if i % 3 else b, f"{a}-{i}", request_document=doc) for i in range(60)]
    batch = [entry(a, first, outcome="rejected"), *batch, entry(a, first, outcome="forwarded")]
    await store.write_log_entries(batch)  # ~3.6 MB of JSON: several round trips and calls
    page, _ = await store.logs.query(ks.usage_log(a), LogQuery(limit=1000))
    assert [e["request_id"] for e in page] == [first] + [f"{a}-{i}" for i in reversed(range(60)) if i % 3] + [first]
    assert all(e["request_document"] == doc for e in page[1:-1])
    page, _ = await store.logs.query(ks.usage_log(b), LogQuery(limit=1000))
    assert [e["request_id"] for e in page] == [f"{a}-{i}" for i in reversed(range(0, 60, 3))]
    found = await store.logs.find(first)
    assert found is not None and found[1]["outcome"] == "forwarded"
    await store.close()


async def test_entries_past_retention_take_their_index_along(redis_url: str) -> None:
    store = await store_on(redis_url)
    acct = new_account(sandbox=True)
    await store.write_log_entries([entry(acct, f"{acct}-old{i}") for i in range(3)])
    now = time.time()
    store.logs.clock = lambda: now + 8 * 86400
    await store.write_log_entries([entry(acct, f"{acct}-new")])
    for i in range(3):
        assert not await store.client.exists(ks.request_index(f"{acct}-old{i}"))
    [ref] = await store.client.lrange(ks.request_index(f"{acct}-new"), 0, -1)
    assert await store.client.lrange(logstore.rid_queue(ks.usage_log(acct)), 0, -1) == [
        ref.rpartition(" ")[2] + f" {acct}-new"
    ]
    await store.close()
