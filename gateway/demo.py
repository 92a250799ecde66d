"""`gateway demo`: a sample backend, the gateway with its embedded Redis, and a few requests,
so a newcomer sees decisions being made in seconds."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

from aiohttp import web

from gateway.backend import SampleBackend

ACCOUNT = "1234567"
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _call(method: str, url: str, token: str | None = None, body: Any = None,
          headers: dict[str, str] | None = None, raw: bytes | None = None) -> tuple[int, bytes]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _envelope(header: str, body: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{SOAP_NS}">'
            f"<soapenv:Header>{header}</soapenv:Header><soapenv:Body>{body}</soapenv:Body>"
            "</soapenv:Envelope>").encode()


def _token_passport(v: str, ck: str, cs: str, tk: str, ts_secret: str) -> str:
    nonce, ts = secrets.token_hex(10), str(int(time.time()))
    base = "&".join([ACCOUNT, ck, tk, nonce, ts])
    sig = base64.b64encode(hmac.new(f"{cs}&{ts_secret}".encode(), base.encode(), hashlib.sha256).digest()).decode()
    return (f'<tokenPassport xmlns="urn:messages_{v}.platform.webservices.netsuite.com"><account>{ACCOUNT}</account>'
            f"<consumerKey>{ck}</consumerKey><token>{tk}</token><nonce>{nonce}</nonce><timestamp>{ts}</timestamp>"
            f'<signature algorithm="HMAC-SHA256">{sig}</signature></tokenPassport>')


def _get(v: str) -> str:
    return (f'<get xmlns="urn:messages_{v}.platform.webservices.netsuite.com">'
            '<baseRef internalId="42" type="customer"/></get>')


def run_demo(*, keep_running: bool = False) -> int:
    backend_port, proxy_port, admin_port = _free_port(), _free_port(), _free_port()
    token = secrets.token_urlsafe(24)
    backend = SampleBackend()

    async def run_backend(stop: asyncio.Event) -> None:
        runner = web.AppRunner(backend.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", backend_port).start()
        await stop.wait()
        await runner.cleanup()

    import threading

    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(run_backend(stop),), daemon=True)
    thread.start()
    with tempfile.TemporaryDirectory(prefix="gateway-demo-") as data_dir:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env["GATEWAY_ADMIN_TOKEN"] = token
        gw = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--listen", f"127.0.0.1:{proxy_port}",
                               "--admin-listen", f"127.0.0.1:{admin_port}",
                               "--upstream", f"http://127.0.0.1:{backend_port}", "--data-dir", data_dir], env=env)
        try:
            return _drive(proxy_port, admin_port, token, gw, keep_running)
        finally:
            gw.terminate()
            gw.wait(30)
            loop.call_soon_threadsafe(stop.set)
            thread.join(5)


def _drive(proxy_port: int, admin_port: int, token: str, gw: subprocess.Popen[bytes], keep_running: bool) -> int:
    admin = f"http://127.0.0.1:{admin_port}"
    proxy = f"http://127.0.0.1:{proxy_port}"
    deadline = time.monotonic() + 30
    while not _healthy(admin):
        if gw.poll() is not None or time.monotonic() > deadline:
            print("the gateway did not start", file=sys.stderr)
            return 1
        time.sleep(0.1)
    api = admin + "/admin/v1"
    _call("PUT", f"{api}/accounts/{ACCOUNT}", token, {"require_approval": False})
    _, raw = _call("POST", f"{api}/accounts/{ACCOUNT}/integrations", token,
                   {"name": "Sales sync", "auth": {"user_credentials": True, "token_based": True}})
    integ = json.loads(raw)
    _, raw = _call("POST", f"{api}/accounts/{ACCOUNT}/tokens", token,
                   {"integration_id": integ["id"], "user": "jane@example.com", "role": "3"})
    tok = json.loads(raw)
    v = "2024_2"
    soap_headers = {"Content-Type": "text/xml; charset=utf-8"}
    tp = _token_passport(v, integ["consumer_key"], integ["consumer_secret"], tok["token_id"], tok["token_secret"])
    passport = (f'<passport xmlns="urn:messages_{v}.platform.webservices.netsuite.com"><email>jane@example.com</email>'
                f'<password>secret</password><account>{ACCOUNT}</account><role internalId="3"/></passport>')
    steps = [
        ("TBA get on 2024.2", _envelope(tp, _get(v))),
        ("Passport on 2024.2 (refused: use TBA)", _envelope(passport, _get(v))),
        ("No credentials (refused)", _envelope("", _get(v))),
        ("Not XML at all", b"hello"),
    ]
    for title, payload in steps:
        status, body = _call("POST", f"{proxy}/services/NetSuitePort_{v}", raw=payload, headers=soap_headers)
        print(f"{title:45} -> HTTP {status}  {_summary(body)}")
    _call("PATCH", f"{api}/accounts/{ACCOUNT}/integrations/{integ['id']}", token, {"state": "blocked"})
    tp = _token_passport(v, integ["consumer_key"], integ["consumer_secret"], tok["token_id"], tok["token_secret"])
    status, body = _call("POST", f"{proxy}/services/NetSuitePort_{v}", raw=_envelope(tp, _get(v)),
                         headers=soap_headers)
    print(f"{'TBA get after blocking the integration':45} -> HTTP {status}  {_summary(body)}")
    print(f"\nadmin API: {api} (token: {token})\nmetrics:   {admin}/metrics\nproxy:     {proxy}")
    if keep_running:
        print("serving until Ctrl-C")
        try:
            gw.wait()
        except KeyboardInterrupt:
            pass
    return 0


def _healthy(admin: str) -> bool:
    try:
        return _call("GET", admin + "/healthz")[0] == 200
    except OSError:
        return False


def _summary(body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    code = re.search(r"<platformFaults:code>([^<]*)<", text)
    if code:
        return f"fault {code.group(1)}"
    return "success" if 'isSuccess="true"' in text else text[:60]
