"""Shared fixtures: a real Redis server (the embedded one the gateway starts) per test session.

Tests that need an isolated keyspace use `redis_url` (a fresh logical DB is not used: every
test gets the same server and must use its own random account ids), or `fresh_redis` for a
private server they may kill.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from gateway.store.embedded import EmbeddedRedis


@pytest.fixture(scope="session")
def embedded_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis-data")).start()
    # The suite writes some 70 MB of log entries through this one server. On a slow disk, the
    # AOF rewrite that starts at 64 MB and the once-a-second fsync can hold Redis silent for
    # longer than the request path's 0.5 s deadline, and the gateway then rightly answers
    # store_unavailable to requests of a test about something else (the likely cause of 500-700
    # such 503s that CI once saw in a 2,000-request burst test, never seen on a faster disk).
    # Durability on disk is no test's subject here: tests that
    # kill and restart a server use `fresh_redis`, which keeps the shipped settings.
    with redis.Redis.from_url(server.url) as admin:
        admin.config_set("appendfsync", "no")
        admin.config_set("auto-aof-rewrite-percentage", 0)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(embedded_redis: EmbeddedRedis) -> str:
    return embedded_redis.url


@pytest.fixture
def fresh_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A private embedded Redis for tests that stop, kill or flush it."""
    server = EmbeddedRedis(tmp_path / "data").start()
    yield server
    server.stop()
