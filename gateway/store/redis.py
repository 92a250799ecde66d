"""RedisStore: the `RequestStore` of the request path, and the admin operations behind it.

Construction: `store = await open_store(settings, redis_url, secret_keys=keys)`; it connects,
refuses a server whose `maxmemory-policy` is not `noeviction`, checks the key ring against
the fingerprint recorded in Redis, and starts the cache invalidation listener.
`await store.close()` stops it. Parts: `store.registry` (accounts, integrations,
installations, bundles, changes), `store.tokens` (TBA and admin tokens), `store.logs`.

Metrics hooks (plain attributes, read them at scrape time): `store.cache.hits`,
`.misses`, `.stale_served`, `.store_errors`, `.invalidations`, `.subscribed`, and
`store.errors_total` (every Redis failure the store saw, request path or not).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.config import Settings
from gateway.core.records import (
    AccountView,
    InstallationView,
    InstalledVia,
    IntegrationView,
    SessionView,
    TokenView,
    normalize_account,
    normalize_application_id,
)
from gateway.errors import ConfigError, StoreUnavailable
from gateway.metrics import GatewayMetrics
from gateway.store import keyspace as ks
from gateway.store.atomic import Client
from gateway.store.cache import RecordCache
from gateway.store.keyring import KeyRing
from gateway.store.logstore import LogStore
from gateway.store.pipelined import LOOP_LAG_TOLERANCE, PipelinedConnection
from gateway.store.registry import Registry, account_view, installation_view, looks_like_id
from gateway.store.tokens import Tokens, token_context

log = logging.getLogger("gateway.store")

T = TypeVar("T")

# Redis answers the request path in well under a millisecond; one that takes this long is as
# good as gone for a client waiting on a SOAP answer (the cache serves what it may instead).
REQUEST_PATH_DEADLINE = 0.5
SUSPECT_SECONDS = 0.5


def connect(redis_url: str) -> Client:
    # Short timeouts and a single retry: the request path must learn fast that Redis is gone
    # (then the cache's staleness bound decides), never hang on it.
    return Redis.from_url(
        redis_url,
        decode_responses=True,
        socket_timeout=2.0,
        socket_connect_timeout=1.0,
        retry=Retry(NoBackoff(), 1),
        max_connections=256,
        client_name="integration-gateway",
    )


class RedisStore:
    def __init__(
        self, client: Client, keyring: KeyRing, settings: Settings, metrics: GatewayMetrics | None = None,
        *, pipelined: PipelinedConnection | None = None,
    ) -> None:
        self.client = client
        # The request path's uncached commands (nonce claims, session reads), when the URL
        # allows one (not TLS); everything else, and those too without it, go through redis-py.
        self.pipelined = pipelined
        self.keyring = keyring
        self.settings = settings
        self.cache = RecordCache(settings.cache_max_stale_seconds)
        self.registry = Registry(client, keyring, self.cache.invalidate)
        self.tokens = Tokens(client, keyring, self.cache.invalidate)
        self.logs = LogStore(client, settings.log)
        self.errors_total = 0
        self.metrics = metrics
        self._listener: asyncio.Task[None] | None = None
        self._suspect_until = 0.0  # loop time until which request-path calls fail at once
        if metrics is not None:
            self.cache.on_lookup = metrics.count_cache_lookup
            self.cache.on_lag = metrics.propagation_lag.observe

    def _count_error(self, operation: str) -> None:
        self.errors_total += 1
        if self.metrics is not None:
            self.metrics.store_errors.labels(operation).inc()

    # ------------------------------------------------------------------ lifecycle

    def start_listener(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self.cache.listen(self.client), name="cache-invalidation")

    async def stop_listener(self) -> None:
        task, self._listener = self._listener, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_subscribed(self, timeout: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.cache.subscribed:
            if asyncio.get_running_loop().time() > deadline:
                raise StoreUnavailable("cache invalidation subscription not established")
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        await self.stop_listener()
        if self.pipelined is not None:
            await self.pipelined.aclose()
        await self.client.aclose()

    async def check_eviction_policy(self) -> None:
        try:
            policy = (await self.client.config_get("maxmemory-policy")).get("maxmemory-policy")
        except ResponseError as e:
            log.warning(
                "cannot read maxmemory-policy (CONFIG not permitted: %s); make sure it is noeviction", e
            )
            return
        if policy != "noeviction":
            raise ConfigError(
                f"redis maxmemory-policy is {policy!r}; the gateway requires 'noeviction' "
                "(evicting records or nonces would silently weaken it)"
            )

    async def check_key_fingerprint(self) -> None:
        """Record the first key's fingerprint on first use; refuse a ring that matches none."""
        await self.client.set(ks.FINGERPRINT, self.keyring.primary_fingerprint, nx=True)
        recorded = await self.client.get(ks.FINGERPRINT)
        if recorded is not None and not self.keyring.matches(recorded):
            raise ConfigError(
                f"none of the secret keys matches the key fingerprint recorded in Redis "
                f"({recorded}); the secrets there were sealed under another key ring"
            )

    # ------------------------------------------------------------------ request path reads

    async def _read(self, load: Callable[[], Awaitable[T]], operation: str = "write", *,
                    request_path: bool = True) -> T:
        """An uncached operation: Redis failures become StoreUnavailable. On the request path
        under the fail-fast deadline (`_answer_fast`); the log writer and readiness probe keep
        the socket timeout."""
        try:
            value = await (self._answer_fast(load) if request_path else load())
        except (RedisError, OSError) as e:
            self._count_error(operation)
            raise StoreUnavailable(f"redis: {e}") from e
        self.cache.touch()
        return value

    async def _answer_fast(self, load: Callable[[], Awaitable[T]], *, idempotent: bool = False) -> T:
        """A request-path call answers within REQUEST_PATH_DEADLINE or counts as unreachable
        (a frozen Redis accepts and never answers: without this, every request would wait out
        the 2 s socket timeout). After a missed deadline, calls fail at once for
        SUSPECT_SECONDS (the cache serves what it may meanwhile), then the next one tries.

        Only a deadline met on time is evidence against Redis: when this process's event loop
        was too busy to run the timer on time, the answer may have been waiting, unread. Then an
        idempotent read is tried once more, and nothing else is marked suspect (under a burst,
        one late timer used to fail hundreds of healthy requests through the fail-fast window)."""
        self._raise_if_suspect()
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            started = loop.time()
            try:
                async with asyncio.timeout(REQUEST_PATH_DEADLINE):
                    return await load()
            except TimeoutError:
                if loop.time() - started - REQUEST_PATH_DEADLINE < LOOP_LAG_TOLERANCE:
                    self._mark_suspect()
                    raise RedisTimeoutError(f"redis did not answer within {REQUEST_PATH_DEADLINE} s") from None
                if not idempotent or attempt == 2:
                    raise RedisTimeoutError(
                        f"no answer read within {REQUEST_PATH_DEADLINE} s (this process was busy)") from None
        raise AssertionError("unreachable")

    async def _pipelined_call(self, *args: str | int) -> Any:
        """A request-path command on the pipelined connection, under `_answer_fast`'s fail-fast
        window but judged by the connection's progress, not the clock alone (see
        `PipelinedConnection.call`)."""
        pipelined = self.pipelined
        assert pipelined is not None

        async def load() -> Any:
            self._raise_if_suspect()
            try:
                return await pipelined.call(*args, stall_timeout=REQUEST_PATH_DEADLINE)
            except RedisTimeoutError:
                self._mark_suspect()
                raise

        return await self._read(load, request_path=False)  # the deadline is the stall check

    def _raise_if_suspect(self) -> None:
        if asyncio.get_running_loop().time() < self._suspect_until:
            raise RedisTimeoutError("redis missed a deadline a moment ago")

    def _mark_suspect(self) -> None:
        now = asyncio.get_running_loop().time()
        if now >= self._suspect_until:  # once per window, not once per failed call in it
            log.warning("redis missed the %.1f s request-path deadline; request-path calls fail at once "
                        "for %.1f s (cached records keep serving)", REQUEST_PATH_DEADLINE, SUSPECT_SECONDS)
        self._suspect_until = now + SUSPECT_SECONDS

    async def _cached(self, key: tuple[str, ...], load: Callable[[], Awaitable[T]]) -> T:
        errors = self.cache.store_errors
        try:
            return await self.cache.get(key, lambda: self._answer_fast(load, idempotent=True))
        finally:
            if self.cache.store_errors != errors:
                self._count_error(key[0])

    async def get_account(self, account_id: str) -> AccountView | None:
        acct = normalize_account(account_id)

        async def load() -> AccountView | None:
            data = await self.registry.account_data(acct)
            return account_view(acct, data) if data else None

        return await self._cached(("account", acct), load)

    async def register_account(self, account_id: str) -> AccountView:
        return await self._read(lambda: self.registry.register_account(account_id))

    async def _integration_by_index(self, index: str, value: str) -> IntegrationView | None:
        iid = await self.client.hget(index, value)
        if iid is None:
            return None
        record = await self.registry.record(iid)
        return self.registry.integration_view(record) if record else None

    async def find_integration_by_application_id(self, application_id: str) -> IntegrationView | None:
        app_id = normalize_application_id(application_id)
        if app_id is None:
            return None
        return await self._cached(
            ("app", app_id), lambda: self._integration_by_index(ks.APP_ID_INDEX, app_id)
        )

    async def find_integration_by_consumer_key(self, consumer_key: str) -> IntegrationView | None:
        if not consumer_key or len(consumer_key) > 256:
            return None
        return await self._cached(
            ("ckey", consumer_key), lambda: self._integration_by_index(ks.CONSUMER_KEY_INDEX, consumer_key)
        )

    async def get_integration(self, integration_id: str) -> IntegrationView | None:
        if not looks_like_id(integration_id):
            return None

        async def load() -> IntegrationView | None:
            record = await self.registry.record(integration_id)
            return self.registry.integration_view(record) if record else None

        return await self._cached(("integration", integration_id), load)

    async def get_installation(self, account_id: str, integration_id: str) -> InstallationView | None:
        acct = normalize_account(account_id)

        async def load() -> InstallationView | None:
            data = await self.registry.installation(acct, integration_id)
            return installation_view(acct, integration_id, data) if data else None

        return await self._cached(("installation", acct, integration_id), load)

    async def get_token(self, token_id: str) -> TokenView | None:
        async def load() -> TokenView | None:
            data = await self.tokens.raw(token_id)
            return self.tokens.view(data) if data else None

        return await self._cached(("token", token_id), load)

    # ------------------------------------------------------------------ request path writes

    async def claim_nonce(self, scope: str, nonce: str, ttl_seconds: int) -> bool:
        key, ttl = ks.nonce(scope, nonce), max(int(ttl_seconds), 1)
        if self.pipelined is not None:
            return bool(await self._pipelined_call("SET", key, "1", "NX", "EX", ttl) == "OK")
        return bool(await self._read(lambda: self.client.set(key, "1", nx=True, ex=ttl)))

    async def install(
        self, account_id: str, integration_id: str, via: InstalledVia, actor: str
    ) -> InstallationView:
        acct = normalize_account(account_id)
        return await self._read(lambda: self.registry.install(acct, integration_id, via, actor))

    async def save_issued_token(
        self, account_id: str, integration_id: str, user: str, role: str, token_id: str, token_secret: str
    ) -> None:
        acct = normalize_account(account_id)
        await self._read(
            lambda: self.tokens.save_issued(acct, integration_id, user, role, token_id, token_secret)
        )

    # ------------------------------------------------------------------ sessions (never cached)

    async def get_session(self, session_id: str) -> SessionView | None:
        if not session_id or len(session_id) > 512:
            return None
        if self.pipelined is not None:
            raw = await self._pipelined_call("GET", ks.session(session_id))
        else:
            raw = await self._read(lambda: self.client.get(ks.session(session_id)))
        if raw is None:
            return None
        data = json.loads(raw)
        data.pop("session_id", None)  # written by earlier versions
        return SessionView(session_id=session_id, **data)

    async def open_session(self, session: SessionView, ttl_seconds: int) -> None:
        payload = json.dumps(
            {
                "account": session.account,
                "integration_id": session.integration_id,
                "user": session.user,
                "role": session.role,
                "created_at": session.created_at,
                "last_seen": session.last_seen,
            }
        )
        await self._read(
            lambda: self.client.set(ks.session(session.session_id), payload, ex=max(int(ttl_seconds), 1))
        )

    async def touch_session(self, session_id: str, now: float, ttl_seconds: int) -> None:
        key = ks.session(session_id)

        async def touch() -> None:
            raw = await self.client.get(key)
            if raw is None:
                return
            data = json.loads(raw)
            data["last_seen"] = now
            await self.client.set(key, json.dumps(data), ex=max(int(ttl_seconds), 1), xx=True)

        await self._read(touch)

    async def close_session(self, session_id: str) -> None:
        await self._read(lambda: self.client.delete(ks.session(session_id)))

    # ------------------------------------------------------------------ logs, health

    async def write_log_entries(self, entries: Sequence[Mapping[str, Any]]) -> None:
        await self._read(lambda: self.logs.write(entries), request_path=False)

    async def ping(self) -> bool:
        try:
            await self._read(self.client.ping, request_path=False)
        except StoreUnavailable:
            return False
        return True

    # ------------------------------------------------------------------ key rotation

    async def rekey_secrets(self) -> int:
        """Re-seal every secret under the first key; returns how many were rewritten."""
        rewritten = 0
        for iid in sorted(await self.client.smembers(ks.INTEGRATIONS)):
            rewritten += await self._reseal(ks.integration(iid), "consumer_secret", f"integration:{iid}")
        for tid in sorted(await self.client.smembers(ks.TOKENS)):
            rewritten += await self._reseal(ks.token(tid), "secret", token_context(tid))
        await self.client.set(ks.FINGERPRINT, self.keyring.primary_fingerprint)
        self.cache.invalidate()
        return rewritten

    async def _reseal(self, key: str, field: str, context: str) -> int:
        # Compare-and-set per secret: a concurrent credential reset must not be overwritten.
        async with self.client.pipeline(transaction=True) as pipe:
            await pipe.watch(key)
            sealed = await pipe.hget(key, field)
            if sealed is None or self.keyring.is_current(sealed):
                return 0
            fresh = self.keyring.encrypt(self.keyring.decrypt(sealed, context), context)
            pipe.multi()
            pipe.hset(key, field, fresh)
            try:
                await pipe.execute()
            except WatchError:
                return await self._reseal(key, field, context)
        return 1


async def open_store(
    settings: Settings,
    redis_url: str,
    *,
    secret_keys: Sequence[bytes],
    metrics: GatewayMetrics | None = None,
    listen: bool = True,
) -> RedisStore:
    """Connect, check the server and the key ring, start the invalidation listener."""
    client = connect(redis_url)
    store = RedisStore(client, KeyRing(list(secret_keys)), settings, metrics,
                       pipelined=PipelinedConnection.from_url(redis_url, client_name="integration-gateway"))
    try:
        await client.ping()
        await store.check_eviction_policy()
        await store.check_key_fingerprint()
    except (RedisError, OSError) as e:
        await store.close()
        raise StoreUnavailable(f"cannot reach redis: {e}") from e
    except BaseException:
        await store.close()
        raise
    if listen:
        store.start_listener()
        try:
            await store.wait_subscribed()
        except StoreUnavailable:
            log.warning("cache invalidation subscription not up yet; lookups read Redis until it is")
    return store


async def rekey_command(settings: Settings) -> int:
    """`gateway rekey`: with `redis_url`, that server; else the embedded server of `data_dir`
    (the running gateway's, when its socket answers, else started for the occasion)."""
    from gateway.store.embedded import EmbeddedRedis
    from gateway.store.keyring import load_secret_keys, rekey

    if settings.redis_url is None and not (settings.data_dir / "redis").is_dir():
        # Else a mistyped --data-dir would get a fresh, empty store and "re-encrypted 0 secrets".
        raise ConfigError(f"no gateway data in {settings.data_dir}: give the gateway's --data-dir or --redis-url")
    keys = load_secret_keys(settings.redis_url, settings.data_dir)
    embedded: EmbeddedRedis | None = None
    url = settings.redis_url
    if url is None:
        server = EmbeddedRedis(settings.data_dir)
        if not server.ping():
            embedded = server.start()
        url = server.url
    try:
        # The ring must decrypt what is there, so check the fingerprint against all keys first.
        store = await open_store(settings, url, secret_keys=keys, listen=False)
        try:
            return await rekey(store)
        finally:
            await store.close()
    finally:
        if embedded is not None:
            embedded.stop()
