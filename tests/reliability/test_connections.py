"""Load and connection abuse against `gateway serve` as a process (its own core, its own file
descriptors): 1,000 concurrent keep-alive clients; 500 slowloris connections that must not
starve others and are closed by the header timeout; request smuggling refused with 400 and
nothing reaching the upstream; clients that vanish or break the framing mid-body."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.web.server import raw_request_id
from tests.factories import application_info_xml, big_body, get_body, make_envelope, passport_xml
from tests.reliability.rig import StartGateway, fds_of, raw_exchange
from tests.test_serve import Served

ADMIN = {"Authorization": "Bearer test-admin-token"}


class Upstream(str):
    """The sample backend's URL; `.open_connections()` counts the gateway's pool to it."""

    runner: web.AppRunner

    def open_connections(self) -> int:
        server = self.runner.server
        return len(server.connections) if server is not None else 0


@pytest.fixture
async def sample_upstream() -> AsyncIterator[Upstream]:
    from gateway.backend import SampleBackend

    runner = web.AppRunner(SampleBackend().app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, backlog=2048).start()
    url = Upstream(f"http://127.0.0.1:{runner.addresses[0][1]}")
    url.runner = runner
    yield url
    await runner.cleanup()


@pytest.fixture
def many_fds() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8192 if hard == resource.RLIM_INFINITY else min(8192, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))  # the gateway inherits it


@pytest.fixture
def serve(tmp_path: Path) -> Any:
    started: list[Served] = []

    def start(upstream: str, env: dict[str, str] | None = None) -> Served:
        gw = Served(tmp_path, upstream, env=env)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


async def passport_envelope(gw: Served) -> bytes:
    """An account and an integration through the admin API; a passport + application ID get."""
    account = f"{int(time.time() * 1000) % 10_000_000:07d}"
    base = f"http://127.0.0.1:{gw.admin_port}/admin/v1/accounts/{account}"
    async with aiohttp.ClientSession(headers=ADMIN) as http:
        async with http.put(base, json={"require_approval": False}) as r:
            assert r.status == 200, await r.text()
        async with http.post(f"{base}/integrations", json={"name": "load", "state": "enabled",
                                                           "auth": {"user_credentials": True}}) as r:
            assert r.status == 201, await r.text()
            app_id = (await r.json())["application_id"]
    parts = [passport_xml("2019_2", "load@example.com", "pw", account), application_info_xml("2019_2", app_id)]
    return make_envelope(get_body("2019_2"), parts)


def redis_clients(gw: Served) -> int:
    """Connections the gateway holds to its embedded Redis (ours not counted)."""
    import redis

    from gateway.store.embedded import EmbeddedRedis

    client = redis.Redis.from_url(EmbeddedRedis(gw.data_dir).url)
    try:
        return int(client.info("clients")["connected_clients"]) - 1
    finally:
        client.close()


def post(envelope: bytes, path: bytes = b"/services/NetSuitePort_2019_2") -> bytes:
    return (b"POST " + path + b" HTTP/1.1\r\nHost: gw\r\nContent-Type: text/xml; charset=utf-8\r\n"
            b"Content-Length: " + str(len(envelope)).encode() + b"\r\n\r\n" + envelope)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")
        return status, headers, bytes(body)
    return status, headers, await reader.readexactly(int(headers.get("content-length", "0")))


@pytest.mark.slow
async def test_a_thousand_concurrent_keep_alive_clients(many_fds: None, sample_upstream: Upstream,
                                                        serve: Any) -> None:
    gw = serve(sample_upstream)
    request = post(await passport_envelope(gw))
    fds_idle = fds_of(gw.proc.pid)
    clients, rounds = 1000, 3
    connected = 0
    all_in = asyncio.Event()
    statuses: list[int] = []
    reused: list[bool] = []

    async def client() -> None:
        nonlocal connected
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy_port)
        connected += 1
        if connected == clients:
            all_in.set()
        await all_in.wait()  # every connection open at once before the first request
        try:
            for _ in range(rounds):
                writer.write(request)
                status, headers, _ = await read_response(reader)
                statuses.append(status)
                reused.append(headers.get("connection", "").lower() != "close")
        finally:
            writer.close()

    started = time.monotonic()
    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    await asyncio.wait_for(all_in.wait(), 30)
    fds_busy = fds_of(gw.proc.pid)
    for _ in range(40):  # the last connections may still sit in the accept queue
        if fds_busy >= fds_idle + clients:
            break
        await asyncio.sleep(0.05)
        fds_busy = max(fds_busy, fds_of(gw.proc.pid))
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    elapsed = time.monotonic() - started
    assert statuses == [200] * (clients * rounds) and all(reused)
    assert fds_busy >= fds_idle + clients * 0.9  # they were all held open at once
    # Every client connection is gone; what is left above the idle count are pools: idle
    # upstream keep-alive connections (closed after 30 s), each one open on the backend too,
    # and the Redis connection pool, each one a client of the embedded Redis.
    deadline = time.monotonic() + 10
    while True:
        after, upstream, redis = fds_of(gw.proc.pid), sample_upstream.open_connections(), redis_clients(gw)
        if after <= fds_idle + upstream + redis + 5:
            break
        assert time.monotonic() < deadline, (fds_idle, after, upstream, redis)
        await asyncio.sleep(0.1)
    print(f"\n{clients} keep-alive clients x {rounds} requests in {elapsed:.1f}s "
          f"({clients * rounds / elapsed:.0f} req/s); gateway fds {fds_idle} -> {fds_busy} -> {after} "
          f"(pools: {upstream} upstream keep-alive, {redis} Redis)")


@pytest.mark.slow
async def test_slowloris_neither_starves_others_nor_stays(many_fds: None, sample_upstream: Upstream,
                                                          serve: Any) -> None:
    gw = serve(sample_upstream, env={"GATEWAY_LIMITS__HEADER_READ_TIMEOUT_SECONDS": "2"})
    request = post(await passport_envelope(gw))
    fds_idle = fds_of(gw.proc.pid)
    partial = b"POST /services/NetSuitePort_2019_2 HTTP/1.1\r\nHost: gw\r\nContent-Type: text/xml\r\n"
    answers: list[bytes] = []

    async def slowloris(i: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy_port)
        answer = b""
        try:
            if i % 5:  # most trickle a header line now and then; some send nothing at all
                writer.write(partial)
                for n in range(30):
                    with contextlib.suppress(TimeoutError):
                        answer = await asyncio.wait_for(reader.read(4096), 0.3)
                        break  # answered (or closed): stop, a write now would only reset
                    writer.write(b"X-Drip-%d: x\r\n" % n)
                    await writer.drain()
            answers.append(answer + await asyncio.wait_for(reader.read(), 10))
        except ConnectionError:
            answers.append(b"reset")
        finally:
            writer.close()

    started = time.monotonic()
    loris = [asyncio.create_task(slowloris(i)) for i in range(500)]
    fds_busy = 0
    while time.monotonic() - started < 1.2:  # all of them hold a connection at once
        fds_busy = max(fds_busy, fds_of(gw.proc.pid))
        if fds_busy >= fds_idle + 500:
            break
        await asyncio.sleep(0.05)
    latencies = []
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy_port)
    for _ in range(30):  # an honest client is served meanwhile, at full speed
        t = time.monotonic()
        writer.write(request)
        status, _, _ = await read_response(reader)
        latencies.append(time.monotonic() - t)
        assert status == 200
    writer.close()
    await asyncio.wait_for(asyncio.gather(*loris), 30)
    closed_after = time.monotonic() - started
    # The admin listener has the same header timeout.
    admin = await raw_exchange("127.0.0.1", gw.admin_port, b"GET /healthz HTTP/1.1\r\nHost: a\r\n", timeout=5)
    assert admin.startswith(b"HTTP/1.1 408")
    got_408 = sum(1 for a in answers if a.startswith(b"HTTP/1.1 408") and b"X-Request-Id:" in a)
    assert got_408 == 400 and answers.count(b"") == 100  # silent ones are just closed
    assert fds_busy >= fds_idle + 450
    assert max(latencies) < 0.5, latencies
    # 2 s header timeout, whatever the dripping (which goes on for 9 s). Not tighter: a busy
    # machine delays the test's own 500 clients too.
    assert closed_after < 4
    deadline = time.monotonic() + 5
    while fds_of(gw.proc.pid) > fds_idle + 5:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    print(f"\n500 slowloris: {got_408} answered 408, 100 closed silently, all gone {closed_after:.1f}s after "
          f"they started; honest client max latency {max(latencies) * 1000:.0f} ms; "
          f"gateway fds {fds_idle} -> {fds_busy} -> {fds_of(gw.proc.pid)}")


SMUGGLING = {
    "content-length and transfer-encoding": b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "transfer-encoding and content-length": b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "two content-lengths": b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "two different content-lengths": b"Content-Length: 5\r\nContent-Length: 50\r\n\r\nhello",
    "content-length list": b"Content-Length: 5, 5\r\n\r\nhello",
    "signed content-length": b"Content-Length: +5\r\n\r\nhello",
    "obs-fold": b"Content-Length: 5\r\nX-Folded: a\r\n  b\r\n\r\nhello",
    "obs-fold of transfer-encoding": b"Transfer-Encoding: identity\r\n chunked\r\n\r\n0\r\n\r\n",
    "space before colon": b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "chunked not last": b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "unknown coding": b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "bad chunk size": b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "chunk size overflow": b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "chunk without CRLF": b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    "bare LF line ends": b"Content-Length: 5\n\nhello",
    "NUL in a header": b"Content-Length: 5\r\nX-Nul: a\x00b\r\n\r\nhello",
}


@pytest.mark.parametrize("trick", sorted(SMUGGLING))
async def test_request_smuggling_is_refused_with_400(trick: str, start_gateway: StartGateway,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    gw = await start_gateway()
    head = (b"POST /services/NetSuitePort_2024_2 HTTP/1.1\r\nHost: gw\r\nContent-Type: text/xml\r\n"
            b"X-Request-Id: smuggle-try.1\r\n")
    smuggled = b"POST /services/NetSuitePort_2024_2 HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n"
    answer = await raw_exchange(gw.host, gw.port, head + SMUGGLING[trick] + smuggled, timeout=3)
    assert answer.startswith((b"HTTP/1.1 400 ", b"HTTP/1.0 400 ")), answer[:200]
    assert b"\r\nX-Request-Id: smuggle-try.1\r\n" in answer  # SPEC 4: the client's id, on every response
    assert answer.count(b"HTTP/1.") == 1  # the connection closed: the tail was never read as a request
    assert gw.backend is not None and gw.backend.received == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize(("ids", "echoed"), [
    (b"X-Request-Id: ok-1\r\n", True),
    (b"x-request-id:ok-1 \r\n", True),
    (b"X-Request-Id: not valid\r\n", False),
    (b"X-Request-Id: " + b"a" * 129 + b"\r\n", False),
    (b"X-Request-Id: ok-1\r\nX-Request-Id: ok-2\r\n", False),  # which one would a backend see?
])
def test_the_client_request_id_of_a_refused_head(ids: bytes, echoed: bool) -> None:
    head = b"POST / HTTP/1.1\r\nHost: gw\r\n" + ids + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert raw_request_id(head + b"0\r\n\r\nX-Request-Id: body\r\n") == ("ok-1" if echoed else None)


def chunked_head(path: bytes = b"/services/NetSuitePort_2019_2") -> bytes:
    return (b"POST " + path + b" HTTP/1.1\r\nHost: gw\r\nContent-Type: text/xml\r\nX-Request-Id: %s\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")


async def test_bad_chunk_mid_body_is_400_at_once_and_the_upstream_never_completes(
        start_gateway: StartGateway, caplog: pytest.LogCaptureFixture) -> None:
    gw = await start_gateway()  # body_read_timeout_seconds: 60, the wait this used to cost
    tenant = await gw.tenant()
    envelope = tenant.passport("2019_2", body=big_body("2019_2", "text", 300_000))
    reader, writer = await asyncio.open_connection(gw.host, gw.port)
    first = envelope[:200_000]
    writer.write(chunked_head().replace(b"%s", b"mid-body-chunk") + b"%x\r\n%s\r\n" % (len(first), first))
    await writer.drain()
    await asyncio.sleep(0.3)  # decided, streaming to the upstream
    started = time.monotonic()
    writer.write(b"not-a-size\r\n" + envelope[200_000:] + b"\r\n0\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 5)
    assert time.monotonic() - started < 1.0
    assert answer.startswith(b"HTTP/1.1 400 ") and b"X-Request-Id: mid-body-chunk" in answer
    writer.close()
    entry = await gw.entry("mid-body-chunk")
    assert (entry["outcome"], entry["reason"], entry["sub_reason"]) == ("rejected", "malformed_request", "bad_framing")
    await asyncio.sleep(0.2)
    assert gw.backend is not None and not any(r.complete for r in gw.backend.received)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize("when", ["reading the body", "waiting for the upstream"])
async def test_a_client_that_vanishes_is_logged_not_an_error(when: str, start_gateway: StartGateway,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    async def slow(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(2)
        return web.Response(text="<late/>", content_type="text/xml")

    app = web.Application()
    app.router.add_post("/{tail:.*}", slow)
    gw = await start_gateway(backend_app=app if when == "waiting for the upstream" else None)
    tenant = await gw.tenant()
    envelope = tenant.passport("2019_2", body=big_body("2019_2", "text", 300_000))
    rid = f"vanish-{when.split()[0]}"
    reader, writer = await asyncio.open_connection(gw.host, gw.port)
    head = (b"POST /services/NetSuitePort_2019_2 HTTP/1.1\r\nHost: gw\r\nContent-Type: text/xml\r\n"
            b"X-Request-Id: " + rid.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(envelope))
    writer.write(head + (envelope[:200_000] if when == "reading the body" else envelope))
    await writer.drain()
    await asyncio.sleep(0.4)
    writer.transport.abort()
    entry = await gw.entry(rid)
    assert (entry["outcome"], entry["reason"], entry["http_status"]) == ("error", "client_disconnected", 499)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert gw.ctx.metrics.registry.get_sample_value("gateway_inflight_requests") == 0.0


@pytest.mark.parametrize("when", ["reading the body", "waiting for the upstream"])
@pytest.mark.parametrize("route", ["restlet", "issuetoken"])
async def test_a_client_that_vanishes_from_a_restlet_is_logged_as_gone(
        when: str, route: str, start_gateway: StartGateway) -> None:
    """Found by the black-box log audit: RESTlet and Issue Token exchanges whose client left
    were logged and counted as `forwarded` with status 0; they are errors (499), as on SOAP."""
    from tests.web.test_issue_token import issue_token_header_for
    from tests.web.test_restlet import oauth_header

    async def slow(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(2)
        return web.json_response({"late": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", slow)
    gw = await start_gateway(backend_app=app if when == "waiting for the upstream" else None)
    if route == "restlet":
        tenant = await gw.tenant()
        target = "/app/site/hosting/restlet.nl?script=1&deploy=1"
        auth = oauth_header(tenant, "http://gw" + target, "POST")
    else:
        tenant = await gw.tenant(auth={"user_credentials": True, "token_based": True,
                                       "tba_issue_token_endpoint": True})
        target = "/rest/issuetoken"
        auth = issue_token_header_for("http://gw" + target, tenant.integration, tenant.account)
    body = b'{"x": "' + b"y" * 300_000 + b'"}'
    rid = f"vanish-{route}-{when.split()[0]}"
    reader, writer = await asyncio.open_connection(gw.host, gw.port)
    head = (f"POST {target} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nAuthorization: {auth}\r\n"
            f"X-Request-Id: {rid}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    writer.write(head + (body[:200_000] if when == "reading the body" else body))
    await writer.drain()
    await asyncio.sleep(0.4)
    writer.transport.abort()
    entry = await gw.entry(rid)
    assert (entry["outcome"], entry["reason"], entry["http_status"]) == ("error", "client_disconnected", 499)
    registry = gw.ctx.metrics.registry
    assert registry.get_sample_value("gateway_inflight_requests") == 0.0
    forwarded = sum(s.value for m in registry.collect() if m.name == "gateway_requests"
                    for s in m.samples if s.name == "gateway_requests_total" and s.labels["outcome"] == "forwarded")
    assert forwarded == 0
