"""Misbehaving upstreams on real sockets: each reads the gateway's request, then fails in one
way. A plain asyncio server, not aiohttp: the failures are below what a web framework lets
a handler do (resets, garbage, a half-written answer)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field

# Announced longer than the gateway reads whole (relay.WHOLE_ANSWER_BYTES), so it streams.
# Announced long enough to be streamed (short answers may be read whole before the status line
# goes out, and then fail as a clean 502 instead of a cut connection).
GOOD_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: 1000000\r\n\r\n"
# A small answer is read whole before anything is relayed: cut mid-body, it is still a fault.
SMALL_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: 5000\r\n\r\n"
PART = b"<soapenv:Envelope>" + b"x" * 2000

MODES = ("refused", "reset_before_answer", "eof_before_answer", "garbage", "slow_headers",
         "reset_mid_body", "close_mid_body", "slow_body", "reset_mid_small_body")
# Those that fail before a status line (a fault can still be answered) and the status it gets.
BEFORE_HEADERS = {"refused": 502, "reset_before_answer": 502, "eof_before_answer": 502, "garbage": 502,
                  "slow_headers": 504, "reset_mid_small_body": 502}
AFTER_HEADERS = ("reset_mid_body", "close_mid_body", "slow_body")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class FaultyUpstream:
    mode: str
    stall: float = 30.0
    accepted: int = 0
    complete_requests: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FaultyUpstream:
        if self.mode == "refused":
            self.port = free_port()  # nothing listens there
            return self
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        for w in list(self._writers):
            w.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        try:
            await self._fail(reader, writer, await self._read_request(reader))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _stall(self, reader: asyncio.StreamReader) -> None:
        """Say nothing until the gateway gives up and closes (or `stall` seconds)."""
        await _stall_until_closed(reader, self.stall)

    async def _read_request(self, reader: asyncio.StreamReader) -> str:
        """Reads the whole request; the failure mode it asks for (`?mode=` in its path)."""
        head = await reader.readuntil(b"\r\n\r\n")
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        mode = line.split("mode=", 1)[1].split()[0].split("&")[0] if "mode=" in line else self.mode
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if b"chunked" in head.lower():
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            await reader.readexactly(length)
        self.complete_requests += 1
        return mode

    async def _fail(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, mode: str) -> None:
        if mode == "reset_before_answer":
            _reset(writer)
        elif mode == "eof_before_answer":
            return
        elif mode == "garbage":
            writer.write(b"this is not HTTP at all\r\n\x00\x01\x02\r\n\r\n")
            await writer.drain()
        elif mode == "slow_headers":
            await self._stall(reader)
        elif mode == "reset_mid_small_body":
            writer.write(SMALL_HEAD + PART[:1000])
            await writer.drain()
            await asyncio.sleep(0.01)
            _reset(writer)
        elif mode in ("reset_mid_body", "close_mid_body", "slow_body"):
            writer.write(GOOD_HEAD + PART)
            await writer.drain()
            if mode == "reset_mid_body":
                await asyncio.sleep(0.01)
                _reset(writer)
            elif mode == "slow_body":
                await self._stall(reader)
        else:
            raise AssertionError(mode)


async def _stall_until_closed(reader: asyncio.StreamReader, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(reader.read(), seconds)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST, not FIN: SO_LINGER with a zero timeout."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
