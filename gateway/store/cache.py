"""The in-process record cache of the request path, kept correct by Redis pub/sub.

Every change to a record publishes on one channel (inside the same MULTI/EXEC as the change)
and every replica drops its whole cache on any message: changes are rare, re-reading is cheap,
and a whole-cache drop cannot miss a derived entry (a negative lookup, a consumer-key index).

- Subscribed: entries are served from memory. A fill that raced an invalidation (the
  generation moved while Redis was being read) is not kept, so a stale read cannot outlive
  the message that should have dropped it.
- Pub/sub down: every lookup re-reads Redis (entries are still written, as the fallback
  below); on resubscription the cache is dropped, since messages may have been missed.
- Redis unreachable: entries keep serving until `max_stale_seconds` after the last
  successful contact with Redis, then `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.errors import StoreUnavailable
from gateway.store import keyspace
from gateway.store.atomic import Client

log = logging.getLogger("gateway.store.cache")

T = TypeVar("T")

# Errors that mean "Redis did not answer" (as opposed to a bug or a bad command).
UNREACHABLE: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, OSError)

_MAX_ENTRIES = 200_000  # negative lookups are cached too: bound what random app ids can fill
_PING_EVERY = 1.0
_SILENCE_LIMIT = 3.0  # no message nor pong for this long: the subscription is dead


class RecordCache:
    def __init__(self, max_stale_seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_stale_seconds = max_stale_seconds
        self.clock = clock
        self.generation = 0
        self.subscribed = False
        self.last_contact = clock()
        self._entries: dict[Hashable, Any] = {}
        # metrics
        self.hits = 0
        self.misses = 0
        self.stale_served = 0
        self.store_errors = 0
        self.invalidations = 0
        self.resubscriptions = 0
        # optional metric hooks: lookup result ("hit" | "miss" | "stale"), propagation lag (s)
        self.on_lookup: Callable[[str], None] | None = None
        self.on_lag: Callable[[float], None] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def invalidate(self) -> None:
        self.generation += 1
        self.invalidations += 1
        self._entries.clear()

    def touch(self) -> None:
        """Record a successful contact with Redis."""
        self.last_contact = self.clock()

    async def get(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        if self.subscribed and key in self._entries:
            self.hits += 1
            if self.on_lookup is not None:
                self.on_lookup("hit")
            return self._entries[key]  # type: ignore[no-any-return]
        self.misses += 1
        if self.on_lookup is not None:
            self.on_lookup("miss")
        generation = self.generation
        try:
            value = await load()
        except UNREACHABLE as e:
            self.store_errors += 1
            if key in self._entries and self.clock() - self.last_contact <= self.max_stale_seconds:
                self.stale_served += 1
                if self.on_lookup is not None:
                    self.on_lookup("stale")
                return self._entries[key]  # type: ignore[no-any-return]
            raise StoreUnavailable(f"redis unreachable: {e}") from e
        except RedisError as e:
            self.store_errors += 1
            raise StoreUnavailable(f"redis error: {e}") from e
        self.touch()
        if generation == self.generation:
            if len(self._entries) >= _MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = value
        return value

    def _observe_lag(self, data: str) -> None:
        if self.on_lag is None:
            return
        try:
            published = float(data.split(" ", 1)[0])
        except ValueError:
            return
        self.on_lag(max(time.time() - published, 0.0))

    async def listen(self, client: Client) -> None:
        """Run forever: subscribe, drop the cache on every message, resubscribe after a loss."""
        backoff = 0.05
        while True:
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(keyspace.INVALIDATION_CHANNEL)
                last_rx = last_ping = self.clock()
                while True:
                    message = await pubsub.get_message(timeout=0.25)
                    now = self.clock()
                    if message is not None:
                        last_rx = now
                        self.touch()
                        kind = message.get("type")
                        if kind == "subscribe":
                            # Messages may have been missed while we were not subscribed.
                            self.invalidate()
                            self.subscribed = True
                            self.resubscriptions += 1
                            backoff = 0.05
                        elif kind == "message":
                            self.invalidate()
                            self._observe_lag(str(message.get("data", "")))
                    if now - last_ping >= _PING_EVERY:
                        await pubsub.ping()
                        last_ping = now
                    if now - last_rx > _SILENCE_LIMIT:
                        raise RedisConnectionError("invalidation subscription went silent")
            except asyncio.CancelledError:
                self.subscribed = False
                raise
            except Exception as e:  # any failure: resubscribe, never die
                if self.subscribed:
                    log.warning("cache invalidation subscription lost: %s", e)
                self.subscribed = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
            finally:
                self.subscribed = False
                try:
                    await pubsub.aclose()
                except Exception:  # the connection is already broken
                    pass
