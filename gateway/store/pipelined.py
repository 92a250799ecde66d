"""One Redis connection for the request path's uncached commands (nonce claims, session reads).

Commands are written as they come and answers are matched in order: Redis answers one
connection's commands in the order it received them. Concurrent requests then cost a write
each and share one read loop, with no connection checkout, task or timer per command.

Why not redis-py here: on this path its client costs about 45 us of CPU per command (pool
checkout and release, command packing, retry and observability wrappers, and a `wait_for`
task per send once a socket timeout is set), where this costs about 5 us; a TBA request's
nonce claim is its only Redis round trip. Everything else (transactions, scripts, pub/sub,
the admin side) stays on redis-py, and so do TLS connections (`from_url` returns None).

A command may carry a stall deadline (`call(..., stall_timeout=)`): it fails once Redis has
sent nothing at all for that long, so a busy event loop is never taken for a frozen server. An
answer whose caller gave up is still matched to its place in the queue and dropped, so the
stream never goes out of step.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Final, cast

from redis.asyncio.connection import UnixDomainSocketConnection, parse_url
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# A server that stopped answering while requests kept coming: past this many unanswered
# commands the connection is dropped and they all fail (each has long given up by then).
MAX_UNANSWERED: Final = 10_000
CONNECT_TIMEOUT: Final = 0.5  # the request path's deadline (RedisStore)

Reply = str | int | None | list[Any] | ResponseError


class _Incomplete:
    """The buffer ends inside a reply."""


INCOMPLETE: Final = _Incomplete()


class ProtocolError(Exception):
    """Bytes that are no RESP reply: the connection cannot be trusted any more."""


def pack_command(args: tuple[str | int | bytes, ...]) -> bytes:
    """A RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


def parse_reply(buf: bytes, pos: int) -> tuple[Reply | _Incomplete, int]:
    """The RESP2 reply starting at `pos` and the position after it, or INCOMPLETE. Bulk
    strings are decoded as UTF-8 (as redis-py's `decode_responses=True`); an error reply is
    returned as a ResponseError for its caller to raise."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return INCOMPLETE, pos
    kind, line, after = buf[pos : pos + 1], buf[pos + 1 : end], end + 2
    if kind == b"+":
        return line.decode("utf-8", "replace"), after
    if kind == b"$":
        size = int(line)
        if size < 0:
            return None, after
        if len(buf) < after + size + 2:
            return INCOMPLETE, pos
        return buf[after : after + size].decode("utf-8", "replace"), after + size + 2
    if kind == b":":
        return int(line), after
    if kind == b"-":
        return ResponseError(line.decode("utf-8", "replace")), after
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, after
        items: list[Any] = []
        for _ in range(count):
            item, after = parse_reply(buf, after)
            if item is INCOMPLETE:
                return INCOMPLETE, pos
            items.append(item)
        return items, after
    raise ProtocolError(f"unexpected reply type {kind!r}")


class _RespProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[asyncio.Future[Reply]] = collections.deque()
        self.buffer = b""
        self.lost = False
        self.last_reply = 0.0  # loop time of the last reply read (progress, for stall checks)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are no asyncio.Transport

    def send(self, packed: bytes) -> asyncio.Future[Reply]:
        if self.lost or self.transport is None:
            raise RedisConnectionError("redis connection lost")
        if len(self.waiting) >= MAX_UNANSWERED:
            self.drop(RedisConnectionError(f"redis left {MAX_UNANSWERED} commands unanswered"))
            raise RedisConnectionError("redis stopped answering")
        answer: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self.waiting.append(answer)
        self.transport.write(packed)
        return answer

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        pos = 0
        try:
            while True:
                reply, after = parse_reply(buf, pos)
                if isinstance(reply, _Incomplete):
                    break
                if not self.waiting:
                    raise ProtocolError("a reply nobody asked for")
                pos = after
                self.last_reply = asyncio.get_running_loop().time()
                answer = self.waiting.popleft()
                if answer.done():  # its caller gave up (a deadline): the answer is dropped
                    continue
                if isinstance(reply, ResponseError):
                    answer.set_exception(reply)
                else:
                    answer.set_result(reply)
        except (ProtocolError, ValueError) as e:
            self.drop(RedisConnectionError(f"bad reply from redis: {e}"))
            return
        self.buffer = buf[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail_all(RedisConnectionError(f"redis connection lost: {exc or 'closed by the server'}"))

    def drop(self, exc: Exception) -> None:
        self.lost = True
        self._fail_all(exc)
        if self.transport is not None:
            self.transport.abort()

    def _fail_all(self, exc: Exception) -> None:
        while self.waiting:
            answer = self.waiting.popleft()
            if not answer.done():
                answer.set_exception(exc)


class PipelinedConnection:
    """`await conn.call("SET", key, "1", "NX", "EX", 60)`: connects on first use and again
    after a loss; raises redis-py's exceptions, so callers handle one family."""

    def __init__(self, *, path: str | None = None, host: str = "localhost", port: int = 6379,
                 username: str | None = None, password: str | None = None, db: int = 0,
                 client_name: str | None = None) -> None:
        self.path, self.host, self.port = path, host, port
        self.username, self.password, self.db = username, password, db
        self.client_name = client_name
        self._protocol: _RespProtocol | None = None
        self._connecting = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, *, client_name: str | None = None) -> PipelinedConnection | None:
        """For redis:// and unix:// URLs; None for TLS, whose set-up stays redis-py's alone."""
        options = parse_url(url)
        kind = options.get("connection_class")
        if kind is not None and kind is not UnixDomainSocketConnection:
            return None
        return cls(path=options.get("path"), host=options.get("host", "localhost"),
                   port=int(options.get("port", 6379)), username=options.get("username"),
                   password=options.get("password"), db=int(options.get("db") or 0), client_name=client_name)

    async def call(self, *args: str | int | bytes, stall_timeout: float | None = None) -> Any:
        """The command's reply. With `stall_timeout`, RedisTimeoutError once Redis has sent
        nothing at all for that long while this command waited: a frozen server. A reply to an
        earlier command counts as progress, so a busy Redis, or a busy event loop in this
        process (replies read late, all at once), is waited for instead: a plain deadline
        fired there and failed healthy requests (and, through the store's fail-fast window,
        hundreds after them)."""
        protocol = self._protocol
        if protocol is None or protocol.lost:
            protocol = await self._connect()
        answer = protocol.send(pack_command(args))
        if stall_timeout is None:
            return await answer
        loop = asyncio.get_running_loop()
        sent_at = loop.time()
        timer: list[asyncio.TimerHandle] = []

        def check() -> None:
            # Timers run after the I/O callbacks of their loop iteration: a reply already in the
            # socket has been read by now.
            if answer.done():
                return
            quiet = loop.time() - max(protocol.last_reply, sent_at)
            if quiet < stall_timeout:
                timer[0] = loop.call_later(stall_timeout - quiet, check)
            else:
                answer.set_exception(RedisTimeoutError(f"redis sent nothing for {stall_timeout} s"))

        timer.append(loop.call_later(stall_timeout, check))
        try:
            return await answer
        finally:
            timer[0].cancel()

    async def aclose(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and not protocol.lost:
            protocol.drop(RedisConnectionError("connection closed"))

    async def _connect(self) -> _RespProtocol:
        async with self._connecting:  # one connect for every caller waiting on it
            if self._protocol is not None and not self._protocol.lost:
                return self._protocol
            opening = asyncio.ensure_future(self._open())
            try:
                await _wait_unless_silent(opening, CONNECT_TIMEOUT)
            except TimeoutError:  # a frozen server: the store's fail-fast window applies
                raise RedisTimeoutError(f"redis did not accept within {CONNECT_TIMEOUT} s") from None
            finally:
                if not opening.done():
                    opening.cancel()
            return opening.result()

    async def _open(self) -> _RespProtocol:
        loop = asyncio.get_running_loop()
        protocol: _RespProtocol | None = None
        try:
            if self.path is not None:
                _, protocol = await loop.create_unix_connection(_RespProtocol, self.path)
            else:
                _, protocol = await loop.create_connection(_RespProtocol, self.host, self.port)
            await self._handshake(protocol)
        except OSError as e:
            raise RedisConnectionError(f"cannot connect to redis: {e}") from e
        except ResponseError as e:
            raise AuthenticationError(f"redis refused the connection set-up: {e}") from e
        finally:
            if protocol is not None and self._protocol is not protocol and not protocol.lost:
                protocol.drop(RedisConnectionError("connection set-up failed"))
        return protocol

    async def _handshake(self, protocol: _RespProtocol) -> None:
        steps: list[tuple[str | int, ...]] = []
        if self.password is not None:
            steps.append(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password))
        if self.db:
            steps.append(("SELECT", self.db))
        if self.client_name:
            steps.append(("CLIENT", "SETNAME", self.client_name))
        answers = [protocol.send(pack_command(step)) for step in steps]  # pipelined too
        for result in await asyncio.gather(*answers, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result
        self._protocol = protocol


# A deadline timer that ran this much after its time ran in a busy event loop (it runs within
# about a millisecond otherwise; thousands of requests arriving at once): no evidence that
# Redis is silent. The store's deadlines use it too.
LOOP_LAG_TOLERANCE: Final = 0.01
_MAX_WAITS: Final = 8


async def _wait_unless_silent(task: asyncio.Future[Any], timeout: float) -> None:
    """Wait for `task`; TimeoutError once a wait of `timeout` ended on time without it. A wait
    that ended late (the process was busy) proves nothing and is waited again, a few times."""
    loop = asyncio.get_running_loop()
    for _ in range(_MAX_WAITS):
        started = loop.time()
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if done:
            return
        if loop.time() - started - timeout < LOOP_LAG_TOLERANCE:
            break
    raise TimeoutError
