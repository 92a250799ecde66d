"""The RequestStore side: lookups, nonces, sessions, and the eviction-policy check."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.core.records import InstalledVia, SessionView, State
from gateway.errors import ConfigError
from gateway.store import keyspace as ks
from gateway.store.embedded import EmbeddedRedis
from gateway.store.redis import RedisStore
from gateway.store.registry import RegistryError
from tests.store.helpers import INTEGRATION, new_account, store_on


async def test_lookups_and_normalisation(redis_url: str) -> None:
    store = await store_on(redis_url)
    acct = new_account()
    assert await store.get_account(acct) is None
    registered = await store.register_account(acct.lower())
    assert registered.account_id == acct and not registered.require_approval
    assert (await store.register_account(acct)) == registered
    created = await store.registry.create_integration(acct, INTEGRATION | {"state": "blocked"}, "t")
    app = created["application_id"].lower()
    uuid_form = f"{app[:8]}-{app[8:12]}-{app[12:16]}-{app[16:20]}-{app[20:]}"
    view = await store.find_integration_by_application_id(uuid_form)
    assert view is not None and view.id == created["id"] and view.consumer_secret == created["consumer_secret"]
    assert await store.find_integration_by_application_id("0" * 32) is None
    assert await store.find_integration_by_application_id("garbage") is None
    assert await store.find_integration_by_consumer_key(created["consumer_key"]) == view
    inst = await store.get_installation(acct.lower(), created["id"])
    assert inst is not None and inst.state is State.BLOCKED and inst.installed_via is InstalledVia.OWNER
    assert await store.get_installation(acct, "f" * 32) is None
    assert await store.get_token("nope") is None
    await store.close()


async def test_install_is_idempotent_and_needs_a_registered_account(redis_url: str) -> None:
    store = await store_on(redis_url)
    acct = new_account()
    await store.registry.put_account(acct, False)
    created = await store.registry.create_integration(acct, INTEGRATION, "t")
    owner = await store.install(acct, created["id"], InstalledVia.AUTO_INSTALL, "system:auto_install")
    assert owner.installed_via is InstalledVia.OWNER  # existing installation returned unchanged
    with pytest.raises(RegistryError):
        await store.install(new_account(), created["id"], InstalledVia.AUTO_INSTALL, "system:auto_install")
    await store.close()


async def test_claim_nonce_once(redis_url: str) -> None:
    store = await store_on(redis_url)
    scope = new_account()
    assert await store.claim_nonce(scope, "abc123", 600)
    assert not await store.claim_nonce(scope, "abc123", 600)
    assert await store.claim_nonce(scope, "abc124", 600)
    await store.close()


async def test_sessions_across_two_stores(redis_url: str) -> None:
    a, b = await store_on(redis_url), await store_on(redis_url)
    now = time.time()
    sid = "S" + new_account()
    session = SessionView(
        session_id=sid, account="123", integration_id=None, user="u@x", role="3", created_at=now, last_seen=now
    )
    await a.open_session(session, 1200)
    assert await b.get_session(sid) == session
    await b.touch_session(sid, now + 5, 1200)
    got = await a.get_session(sid)
    assert got is not None and got.last_seen == now + 5
    assert await a.client.ttl(ks.session(sid)) > 1000
    assert await a.client.exists(f"gw:session:{sid}") == 0  # keyed by digest, never by the id
    await b.close_session(sid)
    assert await a.get_session(sid) is None
    await b.touch_session(sid, now, 1200)  # a closed session is not revived
    assert await a.get_session(sid) is None
    await a.close()
    await b.close()


async def test_eviction_policy_must_be_noeviction(fresh_redis: EmbeddedRedis) -> None:
    store = await store_on(fresh_redis.url)
    await store.client.config_set("maxmemory-policy", "allkeys-lru")
    await store.close()
    with pytest.raises(ConfigError, match="noeviction"):
        await store_on(fresh_redis.url)


async def test_ping(redis_url: str) -> None:
    store: RedisStore = await store_on(redis_url)
    assert await store.ping()
    await store.close()


async def test_a_deadline_missed_in_a_busy_loop_is_no_evidence_against_redis(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Only a deadline met on time marks Redis suspect (and fails calls at once for a while).
    A timer that ran late, because this process's loop was busy, retries an idempotent read
    and marks nothing: under a burst, one late timer used to turn hundreds of requests into 503s."""
    store = await store_on(redis_url, listen=False)
    loop = asyncio.get_running_loop()
    try:
        attempts: list[int] = []

        async def slow_once() -> str:
            attempts.append(1)
            if len(attempts) == 1:
                time.sleep(0.6)  # the loop is busy past the deadline (blocking on purpose)
                await asyncio.sleep(0.05)  # the deadline's timer runs now, late
            return "answer"

        assert await store._answer_fast(slow_once, idempotent=True) == "answer"
        assert len(attempts) == 2 and store._suspect_until < loop.time()

        attempts.clear()
        with pytest.raises(RedisTimeoutError, match="busy"):  # a write is not retried...
            await store._answer_fast(slow_once)
        assert store._suspect_until < loop.time()  # ...but Redis is not blamed either
        assert not [r for r in caplog.records if "missed" in r.getMessage()]

        async def silent() -> str:
            await asyncio.sleep(5)  # a frozen Redis, in an idle loop
            return "never"

        started = loop.time()
        with pytest.raises(RedisTimeoutError, match="did not answer"):
            await store._answer_fast(silent, idempotent=True)
        assert loop.time() - started < 0.7 and store._suspect_until > loop.time()  # suspect now
        with pytest.raises(RedisTimeoutError, match="a moment ago"):
            await store._answer_fast(slow_once, idempotent=True)
        store._mark_suspect()  # another deadline missed within the window: no second warning
        warnings = [r for r in caplog.records if "missed the 0.5 s request-path deadline" in r.getMessage()]
        assert len(warnings) == 1 and warnings[0].levelname == "WARNING"
    finally:
        await store.close()
