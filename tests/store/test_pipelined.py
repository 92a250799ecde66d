"""The request path's pipelined Redis connection, against real servers (the embedded one on a unix
socket, and a redis-server on TCP with an ACL user)."""

from __future__ import annotations

import asyncio
import secrets
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.store.embedded import EmbeddedRedis, find_redis_server
from gateway.store.pipelined import INCOMPLETE, PipelinedConnection, pack_command, parse_reply


@pytest.fixture
async def conn(redis_url: str) -> AsyncIterator[PipelinedConnection]:
    c = PipelinedConnection.from_url(redis_url, client_name="pipelined-test")
    assert c is not None
    yield c
    await c.aclose()


def key() -> str:
    return f"test:pipelined:{secrets.token_hex(8)}"


async def test_concurrent_commands_get_their_own_answers(conn: PipelinedConnection, redis_url: str) -> None:
    keys = [key() for _ in range(300)]
    claims = await asyncio.gather(*(conn.call("SET", k, f"v{i}", "NX", "EX", 60) for i, k in enumerate(keys)))
    assert claims == ["OK"] * 300
    again = await asyncio.gather(*(conn.call("SET", k, "x", "NX", "EX", 60) for k in keys))
    assert again == [None] * 300  # NX: taken
    mixed = await asyncio.gather(*(conn.call("GET", k) if i % 2 else conn.call("EXISTS", k)
                                   for i, k in enumerate(keys)))
    assert mixed == [f"v{i}" if i % 2 else 1 for i in range(300)]
    async with Redis.from_url(redis_url, decode_responses=True) as other:  # the server saw them all
        assert await other.get(keys[7]) == "v7" and 0 < await other.ttl(keys[7]) <= 60


async def test_non_ascii_and_binary_safe_values(conn: PipelinedConnection) -> None:
    k = key()
    value = 'session {"user": "zoë@example.com"}\r\n$-1\r\n'
    assert await conn.call("SET", k, value, "EX", 60) == "OK"
    assert await conn.call("GET", k) == value
    assert await conn.call("GET", key()) is None


async def test_an_error_reply_fails_only_its_own_call(conn: PipelinedConnection) -> None:
    k = key()
    await conn.call("SET", k, "text", "EX", 60)
    results = await asyncio.gather(conn.call("GET", k), conn.call("INCR", k), conn.call("GET", k),
                                   return_exceptions=True)
    assert results[0] == "text" and results[2] == "text"
    assert isinstance(results[1], ResponseError)


async def test_answers_of_callers_that_gave_up_are_dropped_in_step(conn: PipelinedConnection,
                                                                    redis_url: str) -> None:
    k = key()
    await conn.call("SET", k, "first", "EX", 60)
    async with Redis.from_url(redis_url) as admin:
        await admin.execute_command("CLIENT", "PAUSE", "300", "ALL")  # the server stops answering
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await conn.call("SET", k, "second", "EX", 60)
        late = asyncio.create_task(conn.call("GET", k))
        assert await late == "second"  # answered after the pause, its reply not taken by the first
    assert await conn.call("GET", k) == "second"


async def test_a_lost_connection_fails_what_waits_and_the_next_call_reconnects(
        conn: PipelinedConnection, redis_url: str) -> None:
    await conn.call("PING")
    waiting = asyncio.create_task(conn.call("BLPOP", key(), 5))  # held by the server
    async with Redis.from_url(redis_url, decode_responses=True) as admin:
        await asyncio.sleep(0.05)
        ours = [c["id"] for c in await admin.client_list() if c["name"] == "pipelined-test"]
        assert len(ours) == 1
        await admin.client_kill_filter(_id=ours[0])
        with pytest.raises(RedisConnectionError):
            await waiting
    assert await conn.call("PING") == "PONG"


async def test_a_stopped_server_fails_fast_then_a_restarted_one_serves(fresh_redis: EmbeddedRedis) -> None:
    c = PipelinedConnection.from_url(fresh_redis.url)
    assert c is not None
    try:
        assert await c.call("PING") == "PONG"
        fresh_redis.stop()
        with pytest.raises(RedisConnectionError):
            async with asyncio.timeout(2):
                await c.call("PING")
        fresh_redis.start()
        assert await c.call("PING") == "PONG"
    finally:
        await c.aclose()


async def test_wrong_password_is_refused(redis_url: str) -> None:
    c = PipelinedConnection.from_url(redis_url)
    assert c is not None and c.password
    c.password = "not-" + c.password
    with pytest.raises(AuthenticationError):
        await c.call("PING")
    await c.aclose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tcp_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server on TCP with an ACL user and a database other than 0."""
    port = _free_port()
    conf = tmp_path / "redis.conf"
    conf.write_text(f'port {port}\nbind 127.0.0.1\nsave ""\nappendonly no\ndir {tmp_path}\n'
                    "user default off\nuser gw on >s3cret ~* &* +@all\n")
    proc = subprocess.Popen([find_redis_server(), str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not listen"
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.02)
        yield f"redis://gw:s3cret@127.0.0.1:{port}/3"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_tcp_with_user_and_database(tcp_redis: str) -> None:
    c = PipelinedConnection.from_url(tcp_redis)
    assert c is not None and (c.username, c.db) == ("gw", 3)
    try:
        k = key()
        assert await c.call("SET", k, "on db 3") == "OK"
        async with Redis.from_url(tcp_redis, decode_responses=True) as same, \
                Redis.from_url(tcp_redis.replace("/3", "/0"), decode_responses=True) as other:
            assert await same.get(k) == "on db 3"
            assert await other.get(k) is None
    finally:
        await c.aclose()


def test_tls_urls_stay_with_redis_py() -> None:
    assert PipelinedConnection.from_url("rediss://:pw@example.com:6380/0") is None


# --------------------------------------------------------------------------- the reply parser

REPLIES = [
    (b"+OK\r\n", "OK"),
    (b"$-1\r\n", None),
    (b"$0\r\n\r\n", ""),
    (b"$5\r\na\r\nbc\r\n", "a\r\nbc"),
    (b":-42\r\n", -42),
    (b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n", ["a", [1]]),
    (b"*-1\r\n", None),
]


@given(st.lists(st.sampled_from(range(len(REPLIES))), min_size=1, max_size=8), st.data())
def test_replies_parse_the_same_whatever_the_split(picks: list[int], data: st.DataObject) -> None:
    stream = b"".join(REPLIES[i][0] for i in picks)
    cut = data.draw(st.integers(0, len(stream)))
    values, buf, pos = [], stream[:cut], 0
    for chunk in (stream[cut:], b""):
        while True:
            reply, after = parse_reply(buf, pos)
            if reply is INCOMPLETE:
                assert after == pos
                break
            values.append(reply)
            pos = after
        buf = buf[pos:] + chunk
        pos = 0
    assert values == [REPLIES[i][1] for i in picks]


def test_error_replies_are_returned_for_the_caller_to_raise() -> None:
    reply, after = parse_reply(b"-WRONGTYPE Operation against a key\r\n+OK\r\n", 0)
    assert isinstance(reply, ResponseError) and str(reply).startswith("WRONGTYPE")
    assert parse_reply(b"-WRONGTYPE Operation against a key\r\n+OK\r\n", after) == ("OK", after + 5)


def test_commands_are_resp_arrays_of_bulk_strings() -> None:
    assert pack_command(("SET", "k", 1, b"\x00")) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n$1\r\n\x00\r\n"


async def test_a_busy_event_loop_is_no_stalled_server(conn: PipelinedConnection) -> None:
    # The reply arrives while this loop is blocked past the deadline; it is read before the
    # deadline's timer runs (I/O callbacks first in an iteration), so the call succeeds. A
    # plain asyncio.timeout here failed healthy requests under load.
    k = key()
    await conn.call("SET", k, "v", "EX", 60)
    call = asyncio.create_task(conn.call("GET", k, stall_timeout=0.05))
    await asyncio.sleep(0)  # sent
    time.sleep(0.2)  # the loop is busy elsewhere (blocking on purpose)
    assert await call == "v"


async def test_replies_flowing_are_progress_not_a_stall(conn: PipelinedConnection) -> None:
    # 20,000 commands at once: the last answers long after 5 ms, but Redis never goes quiet
    k = key()
    results = await asyncio.gather(*(conn.call("INCR", k, stall_timeout=0.005) for _ in range(20_000)))
    assert sorted(results) == list(range(1, 20_001))


async def test_a_silent_server_is_a_stall(conn: PipelinedConnection, redis_url: str) -> None:
    await conn.call("PING")
    async with Redis.from_url(redis_url) as admin:
        await admin.execute_command("CLIENT", "PAUSE", "400", "ALL")
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await conn.call("PING", stall_timeout=0.1)
        assert 0.1 <= time.monotonic() - started < 0.3
    assert await conn.call("PING") == "PONG"  # the late PONG was dropped in step


async def test_a_connect_in_a_busy_loop_is_no_frozen_server(redis_url: str) -> None:
    """The connect's deadline judges Redis, not this process: a loop that was busy past it (a
    burst of requests arriving at once) waits again. Found when 20,000 calls at once on a new
    connection failed with "redis did not accept within 0.5 s" on a loaded machine."""
    c = PipelinedConnection.from_url(redis_url, client_name="pipelined-test")
    assert c is not None
    try:
        call = asyncio.ensure_future(c.call("PING"))
        await asyncio.sleep(0)  # the connect has begun
        asyncio.get_running_loop().call_soon(time.sleep, 0.7)  # then the loop is busy past the deadline
        assert await call == "PONG"
    finally:
        await c.aclose()


async def test_a_connect_to_a_silent_server_fails_at_its_deadline(redis_url: str) -> None:
    c = PipelinedConnection.from_url(redis_url, client_name="pipelined-test")
    assert c is not None
    async with Redis.from_url(redis_url) as admin:
        await admin.execute_command("CLIENT", "PAUSE", "1500", "ALL")  # the handshake goes unanswered
        started = time.monotonic()
        try:
            with pytest.raises(RedisTimeoutError, match="did not accept"):
                await c.call("PING")
            assert 0.5 <= time.monotonic() - started < 0.8
        finally:
            await c.aclose()
            await admin.execute_command("CLIENT", "UNPAUSE")
