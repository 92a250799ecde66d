"""`gateway serve` as a process: embedded Redis lifecycle, header read timeout, graceful drain,
workers. These start the real command, the way operators and the contract suite do."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.backend import SampleBackend


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Served:
    def __init__(self, tmp: Path, upstream: str, *extra: str, env: dict[str, str] | None = None) -> None:
        self.proxy_port, self.admin_port = free_port(), free_port()
        self.data_dir = tmp / "data"
        self.log = open(tmp / "gateway.log", "wb")
        environ = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        environ.update({"GATEWAY_ADMIN_TOKEN": "test-admin-token"} | (env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--listen", f"127.0.0.1:{self.proxy_port}",
             "--admin-listen", f"127.0.0.1:{self.admin_port}", "--upstream", upstream,
             "--data-dir", str(self.data_dir), *extra],
            env=environ, stdout=self.log, stderr=subprocess.STDOUT)
        self.log_path = tmp / "gateway.log"
        deadline = time.monotonic() + 30
        while not self.healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("gateway did not start:\n" + self.log_path.read_text())
            time.sleep(0.1)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        return self.proc.returncode


@pytest.fixture
async def upstream() -> Any:
    backend = SampleBackend()
    server = TestServer(backend.app())
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for s in started:
        s.stop()


def redis_children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid), "-f", "redis-server"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


async def test_embedded_redis_starts_persists_and_stops_with_the_gateway(
        tmp_path: Path, upstream: TestServer, served: list[Served]) -> None:
    gw = Served(tmp_path, str(upstream.make_url("")).rstrip("/"))
    served.append(gw)
    redis_dir = gw.data_dir / "redis"
    assert (redis_dir.stat().st_mode & 0o777) == 0o700
    assert (gw.data_dir / "secret.key").stat().st_mode & 0o777 == 0o600
    [child] = redis_children(gw.proc.pid)
    loop = asyncio.get_running_loop()
    status = await loop.run_in_executor(None, _put_account, gw.admin_port)
    assert status == 200
    os.kill(child, signal.SIGKILL)  # the gateway restarts its Redis from the append-only file
    deadline = time.monotonic() + 10
    while not (redis_children(gw.proc.pid) and _get_account(gw.admin_port) == 200):
        assert time.monotonic() < deadline, gw.log_path.read_text()
        await asyncio.sleep(0.2)
    assert gw.stop() == 0
    assert redis_children(gw.proc.pid) == []
    assert not any(p for p in _all_redis_on(redis_dir))


async def test_a_killed_gateway_takes_its_redis_along_and_a_second_one_is_refused(
        tmp_path: Path, upstream: TestServer, served: list[Served]) -> None:
    """SIGKILL leaves the gateway no chance to stop its Redis: the server gets the parent-death
    signal instead, also after a restart by the watcher thread. A second gateway on a data
    directory whose Redis is alive is refused (two servers appending to one AOF corrupt it)."""
    url = str(upstream.make_url("")).rstrip("/")
    gw = Served(tmp_path, url)
    served.append(gw)
    [child] = redis_children(gw.proc.pid)
    second = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--listen", f"127.0.0.1:{free_port()}",
         "--admin-listen", f"127.0.0.1:{free_port()}", "--upstream", url, "--data-dir", str(gw.data_dir)],
        capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")})
    assert second.returncode == 2 and "already serves" in second.stderr, second.stderr
    assert redis_children(gw.proc.pid) == [child]  # the first gateway's server untouched
    os.kill(child, signal.SIGKILL)  # restarted by the watcher thread: the signal must follow it
    deadline = time.monotonic() + 10
    while not (restarted := redis_children(gw.proc.pid)) or restarted == [child]:
        assert time.monotonic() < deadline, gw.log_path.read_text()
        await asyncio.sleep(0.1)
    gw.proc.kill()
    gw.proc.wait(5)
    deadline = time.monotonic() + 5
    while _all_redis_on(gw.data_dir / "redis"):
        assert time.monotonic() < deadline, _all_redis_on(gw.data_dir / "redis")
        await asyncio.sleep(0.1)


def _all_redis_on(redis_dir: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", "redis-server"], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if str(redis_dir) in line]


def _put_account(admin_port: int) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{admin_port}/admin/v1/accounts/7654321", method="PUT",
                                 data=b'{"require_approval": false}',
                                 headers={"Authorization": "Bearer test-admin-token",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return int(r.status)


def _get_account(admin_port: int) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{admin_port}/admin/v1/accounts/7654321",
                                 headers={"Authorization": "Bearer test-admin-token"})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return int(r.status)
    except OSError:
        return 0


async def test_slow_headers_get_408_and_a_closed_connection(
        tmp_path: Path, upstream: TestServer, served: list[Served]) -> None:
    gw = Served(tmp_path, str(upstream.make_url("")).rstrip("/"),
                env={"GATEWAY_LIMITS__HEADER_READ_TIMEOUT_SECONDS": "0.5"})
    served.append(gw)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy_port)
    writer.write(b"POST /services/NetSuitePort_2024_2 HTTP/1.1\r\nHost: x\r\n")
    await writer.drain()
    started = time.monotonic()
    answer = await asyncio.wait_for(reader.read(), 5)
    assert answer.startswith(b"HTTP/1.1 408") and b"X-Request-Id:" in answer
    assert 0.4 < time.monotonic() - started < 3
    writer.close()
    # A healthy request on a fresh connection is unaffected.
    r2, w2 = await asyncio.open_connection("127.0.0.1", gw.proxy_port)
    w2.write(b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await asyncio.wait_for(r2.read(), 5)).startswith(b"HTTP/1.1 404")
    w2.close()


async def test_sigterm_drains_an_in_flight_request(tmp_path: Path, served: list[Served]) -> None:
    async def slow(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(1.5)
        return web.Response(text="<ok/>", content_type="text/xml")

    app = web.Application()
    app.router.add_post("/{tail:.*}", slow)
    server = TestServer(app)
    await server.start_server()
    try:
        gw = Served(tmp_path, str(server.make_url("")).rstrip("/"))
        served.append(gw)
        body = (b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
                b'<getDataCenterUrls xmlns="urn:messages_2024_2.platform.webservices.netsuite.com"/>'
                b"</soapenv:Body></soapenv:Envelope>")
        loop = asyncio.get_running_loop()
        request = urllib.request.Request(f"http://127.0.0.1:{gw.proxy_port}/services/NetSuitePort_2024_2",
                                         data=body, headers={"Content-Type": "text/xml"})
        pending = loop.run_in_executor(None, lambda: urllib.request.urlopen(request, timeout=10).status)
        await asyncio.sleep(0.5)
        gw.proc.send_signal(signal.SIGTERM)
        assert await pending == 200
        assert await loop.run_in_executor(None, gw.proc.wait, 30) == 0
    finally:
        await server.close()


async def test_two_workers_share_the_port(tmp_path: Path, upstream: TestServer, served: list[Served]) -> None:
    gw = Served(tmp_path, str(upstream.make_url("")).rstrip("/"), "--workers", "2")
    served.append(gw)
    deadline = time.monotonic() + 20
    while True:
        out = subprocess.run(["pgrep", "-f", "gateway-worker|multiprocessing.spawn"], capture_output=True, text=True)
        workers = [p for p in out.stdout.split() if p]
        if len(workers) >= 2 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert len(workers) >= 2
    loop = asyncio.get_running_loop()
    for _ in range(10):
        status = await loop.run_in_executor(None, _not_found, gw.proxy_port)
        assert status == 404
    assert gw.stop() == 0


def _not_found(port: int) -> int:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/nowhere", timeout=5)
    except urllib.error.HTTPError as e:
        return e.code
    return 200


def test_demo_runs_end_to_end() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    done = subprocess.run([sys.executable, "-m", "gateway", "demo"], capture_output=True, text=True, timeout=120,
                          env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "TBA get on 2024.2" in done.stdout and "success" in done.stdout
    assert "fault WS_REQUEST_BLOCKED" in done.stdout and "fault WS_LOG_IN_REQD" in done.stdout


def test_startup_objects_leave_the_collectors_view() -> None:
    """A started worker freezes what exists (it lives as long as the process) and collects the
    youngest generation less often; checked in a fresh interpreter, not in this test process."""
    probe = ("import gc; from gateway.runtime import GC_GEN0_THRESHOLD, settle_garbage_collector; "
             "before = gc.get_freeze_count(); settle_garbage_collector(); "
             "print(before, gc.get_freeze_count(), gc.get_threshold()[0] == GC_GEN0_THRESHOLD)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "0" and int(out[1]) > 10_000 and out[2] == "True"


def _workers_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid), "-f", "multiprocessing"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


@pytest.mark.parametrize("taken", ["admin", "proxy"])
def test_workers_on_a_port_in_use_exit_2_at_once(tmp_path: Path, taken: str) -> None:
    # It used to leave one worker serving the proxy port without its admin listener, forever.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        busy, other = f"127.0.0.1:{holder.getsockname()[1]}", f"127.0.0.1:{free_port()}"
        proxy, admin = (other, busy) if taken == "admin" else (busy, other)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "--workers", "2", "--listen", proxy, "--admin-listen", admin,
             "--upstream", "http://127.0.0.1:9", "--data-dir", str(tmp_path / "data")],
            env=environ | {"GATEWAY_ADMIN_TOKEN": "t"}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"cannot listen on {busy}" in done.stderr and "Traceback" not in done.stderr


async def test_a_dead_worker_stops_the_gateway(tmp_path: Path, upstream: TestServer, served: list[Served]) -> None:
    gw = Served(tmp_path, str(upstream.make_url("")).rstrip("/"), "--workers", "2")
    served.append(gw)
    deadline = time.monotonic() + 20
    while len(workers := _workers_of(gw.proc.pid)) < 2:
        assert time.monotonic() < deadline, "two workers did not start"
        await asyncio.sleep(0.1)
    os.kill(workers[-1], signal.SIGKILL)  # a crash: the other worker must not go on alone
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, gw.proc.wait, 30) != 0
    assert _workers_of(gw.proc.pid) == []
    assert "worker exited, stopping the others" in gw.log_path.read_text()


async def _raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def test_a_refused_head_keeps_its_secrets_out_of_the_log_and_admin_errors_are_json(
        tmp_path: Path, upstream: TestServer, served: list[Served]) -> None:
    """aiohttp's parser errors quote the line they refused: a token, a cookie or an NLAuth
    password must not reach the process log with them (SPEC 1, 6). The admin listener answers
    them, and a stalled head, in its JSON error shape (SPEC 5)."""
    gw = Served(tmp_path, str(upstream.make_url("")).rstrip("/"),
                env={"GATEWAY_LIMITS__HEADER_READ_TIMEOUT_SECONDS": "0.5"})
    served.append(gw)
    def head(target: bytes, line: bytes) -> bytes:
        return target + b" HTTP/1.1\r\nHost: x\r\n" + line + b"\r\n\r\n"

    heads = [
        (gw.admin_port, head(b"GET /admin/v1/accounts/1234567", b"Authorization : Bearer SECRET-one")),
        (gw.admin_port, head(b"GET /admin/v1/accounts", b"Authorization: Bearer SECRET-two\x01")),
        (gw.proxy_port, head(b"POST /services/NetSuitePort_2019_2", b"Cookie: JSESSIONID=SECRET-three\x7f")),
        (gw.proxy_port, head(b"POST /rest/issuetoken",
                             b"Authorization: NLAuth nlauth_signature=SECRET-four, p=" + b"x" * 9000)),
    ]
    for port, raw in heads:
        answer = await _raw(port, raw)
        assert answer[:12] in (b"HTTP/1.0 400", b"HTTP/1.1 400"), answer[:80]
        if port == gw.admin_port:
            assert b"Content-Type: application/json" in answer
            assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "INVALID_REQUEST"
    answer = await _raw(gw.admin_port, b"GET /admin/v1/accounts HTTP/1.1\r\nHost: x\r\n")  # stalls
    assert answer.startswith(b"HTTP/1.1 408") and json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
    assert gw.stop() == 0
    log = gw.log_path.read_bytes()
    assert log.count(b"malformed HTTP request refused") == len(heads)
    assert b"SECRET" not in log, log.decode(errors="replace")
