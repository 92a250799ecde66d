"""Peak RSS of `gateway serve` while N clients each upload a large envelope at once.

    python bench/upload_rss.py [--clients 20] [--mb 20] [--rounds 2]

Starts a sink backend (reads and hashes the body, answers a canned response), the gateway
with its embedded Redis, creates an account/integration/token through the admin API, then
streams N TBA-signed `add` envelopes of the given size concurrently, R rounds. Prints the
gateway's VmHWM (peak RSS, without the embedded redis-server) before and after, and checks
that every upload reached the backend complete and byte for byte.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.factories import big_body, make_envelope, token_passport_xml  # noqa: E402


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--mb", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--kind", default="text", choices=("text", "dense"))
    args = ap.parse_args()

    received: list[tuple[str, int]] = []

    async def sink(request: web.Request) -> web.Response:
        digest, size = hashlib.sha256(), 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        received.append((digest.hexdigest(), size))
        return web.Response(body=b"<ok/>", content_type="text/xml")

    app = web.Application(client_max_size=1 << 31)
    app.router.add_post("/{tail:.*}", sink)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    backend_port, proxy_port, admin_port = free_port(), free_port(), free_port()
    await web.TCPSite(runner, "127.0.0.1", backend_port).start()

    token = secrets.token_urlsafe(16)
    data_dir = tempfile.mkdtemp(prefix="upload-rss-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")} | {"GATEWAY_ADMIN_TOKEN": token}
    launcher = ["-m", "gateway"]
    if os.environ.get("NO_UVLOOP"):  # compare the plain asyncio loop
        launcher = ["-c", "import sys; sys.modules['uvloop'] = None; from gateway.cli import main; sys.exit(main())"]
    gw = subprocess.Popen([sys.executable, *launcher, "serve", "--listen", f"127.0.0.1:{proxy_port}",
                           "--admin-listen", f"127.0.0.1:{admin_port}",
                           "--upstream", f"http://127.0.0.1:{backend_port}", "--data-dir", data_dir],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        admin = f"http://127.0.0.1:{admin_port}/admin/v1"
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)

        def call(method: str, path: str, body: object) -> dict[str, str]:
            req = urllib.request.Request(admin + path, method=method, data=json.dumps(body).encode(),
                                         headers={"Authorization": f"Bearer {token}",
                                                  "Content-Type": "application/json"})
            with urllib.request.urlopen(req) as r:
                out: dict[str, str] = json.loads(r.read())
                return out

        account = "1234567"
        call("PUT", f"/accounts/{account}", {"require_approval": False})
        integ = call("POST", f"/accounts/{account}/integrations", {"name": "uploads"})
        tok = call("POST", f"/accounts/{account}/tokens",
                   {"integration_id": integ["id"], "user": "u@example.com", "role": "3"})
        body = big_body("2024_2", args.kind, args.mb << 20)
        print(f"gateway pid {gw.pid}: VmHWM at rest {vm_hwm_mb(gw.pid):.1f} MB")
        sent: list[tuple[str, int]] = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
            for round_no in range(args.rounds):
                payloads = []
                for _ in range(args.clients):
                    tp = token_passport_xml("2024_2", account, integ["consumer_key"], integ["consumer_secret"],
                                            tok["token_id"], tok["token_secret"])
                    payloads.append(make_envelope(body, [tp]))
                sent += [(hashlib.sha256(p).hexdigest(), len(p)) for p in payloads]

                async def upload(p: bytes) -> int:
                    async def gen() -> object:
                        for i in range(0, len(p), 256 * 1024):
                            yield p[i:i + 256 * 1024]

                    async with session.post(f"http://127.0.0.1:{proxy_port}/services/NetSuitePort_2024_2",
                                            data=gen(), headers={"Content-Type": "text/xml"}) as r:
                        await r.read()
                        return r.status

                started = time.monotonic()
                statuses = await asyncio.gather(*(upload(p) for p in payloads))
                elapsed = time.monotonic() - started
                total_mb = sum(len(p) for p in payloads) / (1 << 20)
                print(f"round {round_no + 1}: {args.clients} x {args.mb} MB in {elapsed:.1f} s "
                      f"({total_mb / elapsed:.0f} MB/s), statuses {sorted(set(statuses))}, "
                      f"VmHWM {vm_hwm_mb(gw.pid):.1f} MB")
        ok = sorted(received) == sorted(sent)
        print(f"backend received {len(received)} bodies, all complete and identical: {ok}")
    finally:
        gw.send_signal(signal.SIGTERM)
        gw.wait(30)
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
