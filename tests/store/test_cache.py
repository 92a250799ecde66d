"""The record cache across replicas: pub/sub invalidation, pub/sub loss, Redis loss."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.core.records import State
from gateway.errors import StoreUnavailable
from gateway.store import keyspace as ks
from gateway.store.embedded import EmbeddedRedis
from gateway.store.redis import RedisStore
from tests.store.helpers import INTEGRATION, make_settings, new_account, store_on


async def _wait_for(predicate_coro, bound: float) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while time.monotonic() - start < bound:
        if await predicate_coro():
            return time.monotonic() - start
        await asyncio.sleep(0.001)
    raise AssertionError(f"not within {bound}s")


async def _setup(store: RedisStore) -> tuple[str, dict]:  # type: ignore[type-arg]
    acct = new_account()
    await store.registry.put_account(acct, False)
    return acct, await store.registry.create_integration(acct, INTEGRATION, "t")


async def test_block_via_one_store_is_seen_by_another(redis_url: str) -> None:
    a, b = await store_on(redis_url), await store_on(redis_url)
    acct, rec = await _setup(a)
    for _ in range(3):  # warm B's cache: later reads are hits
        inst = await b.get_installation(acct, rec["id"])
        assert inst is not None and inst.state is State.ENABLED
    assert b.cache.hits >= 2
    await a.registry.update_integration(acct, rec["id"], {"state": "blocked"}, "t")

    async def blocked() -> bool:
        view = await b.get_installation(acct, rec["id"])
        return view is not None and view.state is State.BLOCKED

    assert await _wait_for(blocked, 1.0) < 1.0
    await a.close()
    await b.close()


async def test_negative_lookup_is_invalidated_by_a_creation(redis_url: str) -> None:
    a, b = await store_on(redis_url), await store_on(redis_url)
    acct = new_account()
    assert await b.get_account(acct) is None
    assert await b.get_account(acct) is None  # cached negative
    await a.registry.put_account(acct, True)

    async def seen() -> bool:
        view = await b.get_account(acct)
        return view is not None and view.require_approval

    await _wait_for(seen, 1.0)
    await a.close()
    await b.close()


async def test_without_pubsub_every_lookup_reads_redis(redis_url: str) -> None:
    store = await store_on(redis_url)
    acct, rec = await _setup(store)
    await store.stop_listener()
    assert not store.cache.subscribed
    assert (await store.get_installation(acct, rec["id"])).state is State.ENABLED  # type: ignore[union-attr]
    # a change that publishes nothing this replica could hear: still seen at once
    await store.client.hset(ks.installation(acct, rec["id"]), "state", "blocked")
    assert (await store.get_installation(acct, rec["id"])).state is State.BLOCKED  # type: ignore[union-attr]
    store.start_listener()
    await store.wait_subscribed()
    await store.close()


async def test_resubscribes_after_the_connection_is_killed(redis_url: str) -> None:
    a, b = await store_on(redis_url), await store_on(redis_url)
    acct, rec = await _setup(a)
    await b.get_installation(acct, rec["id"])
    before = b.cache.resubscriptions
    await a.client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    deadline = time.monotonic() + 5
    while b.cache.resubscriptions == before or not b.cache.subscribed:
        assert time.monotonic() < deadline, "did not resubscribe"
        await asyncio.sleep(0.01)
    await a.registry.update_integration(acct, rec["id"], {"state": "blocked"}, "t")

    async def blocked() -> bool:
        view = await b.get_installation(acct, rec["id"])
        return view is not None and view.state is State.BLOCKED

    await _wait_for(blocked, 1.0)
    await a.close()
    await b.close()


async def test_cached_entries_serve_until_the_staleness_bound(fresh_redis: EmbeddedRedis) -> None:
    store = await store_on(fresh_redis.url, settings=make_settings(cache_max_stale_seconds=1.0))
    acct, rec = await _setup(store)
    assert await store.get_installation(acct, rec["id"]) is not None
    assert await store.find_integration_by_application_id(rec["application_id"]) is not None
    fresh_redis.stop()
    lost = time.monotonic()
    served = 0
    while time.monotonic() - lost < 0.7:
        assert await store.get_installation(acct, rec["id"]) is not None
        served += 1
        await asyncio.sleep(0.05)
    assert served > 3
    with pytest.raises(StoreUnavailable):
        await store.get_installation(acct, "f" * 32)  # never cached: unavailable at once
    await asyncio.sleep(0.6)
    with pytest.raises(StoreUnavailable):
        await store.get_installation(acct, rec["id"])
    with pytest.raises(StoreUnavailable):
        await store.claim_nonce("x", "y", 10)
    assert store.cache.stale_served > 0 and store.errors_total > 0
    await store.stop_listener()
    await store.client.aclose()
