"""Shared fixtures: a real Redis server (the embedded one the gateway starts) per test session.

Tests that need an isolated keyspace use `redis_url` (a fresh logical DB is not used: every
test gets the same server and must use its own random account ids), or `fresh_redis` for a
private server they may kill.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.store.embedded import EmbeddedRedis


@pytest.fixture(scope="session")
def embedded_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis-data")).start()
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
