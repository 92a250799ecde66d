#!/usr/bin/env python3
"""Benchmark the gateway against its anchors, in one command, on this machine.

    python bench/run.py [--quick] [--workers 1,2] [--duration 10] [--out bench/results/NAME.json]

Starts (on free loopback ports, all in a temporary directory, all stopped at the end, also on
Ctrl-C or when --max-minutes runs out):
  backend      nginx answering a canned SOAP response (the upstream of everything below)
  nginx        nginx as a plain reverse proxy to the backend (the C anchor)
  passthrough  bench/passthrough.py, a minimal aiohttp proxy (the Python floor)
  gateway-wN   `.venv/bin/gateway serve` with its embedded Redis, logs and metrics on, N workers
and measures every scenario (see SCENARIOS and bench/README.md) against every target with wrk.
Prints one table and writes it as JSON to --out.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
VENV_BIN = ROOT / ".venv" / "bin"
ACCOUNT = "1234567"
USER_EMAIL = "bench@example.com"
ROLE = "3"
CANNED = ('<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
          'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
          '<getResponse xmlns="urn:messages_2024_2.platform.webservices.netsuite.com"><readResponse>'
          '<status isSuccess="true"/></readResponse></getResponse></soapenv:Body></soapenv:Envelope>')


class Deadline(Exception):
    """--max-minutes ran out."""


# --------------------------------------------------------------------------- SOAP bodies
# The logic of the shared rig's make_bodies.py, with the endpoint version and credentials as
# parameters.


@dataclass
class Credentials:
    application_id: str = "0" * 32
    blocked_application_id: str = "F" * 32
    consumer_key: str = "ck" * 32
    consumer_secret: str = "cs" * 32
    token_id: str = "tk" * 32
    token_secret: str = "ts" * 32
    integration_id: str = "-"
    blocked_integration_id: str = "-"


def ns(kind: str, ver: str) -> str:
    return f"urn:{kind}_{ver}.platform.webservices.netsuite.com"


def envelope(body_xml: str, header_xml: str | None) -> str:
    header = f"<soapenv:Header>{header_xml}</soapenv:Header>" if header_xml is not None else ""
    return ('<?xml version="1.0" encoding="utf-8"?>'
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            f"{header}<soapenv:Body>{body_xml}</soapenv:Body></soapenv:Envelope>")


def token_passport(c: Credentials, ver: str, nonce: str | None = None, ts: str | None = None) -> str:
    nonce = nonce or secrets.token_hex(10)
    ts = ts or str(int(time.time()))
    base = "&".join([ACCOUNT, c.consumer_key, c.token_id, nonce, ts])
    key = f"{c.consumer_secret}&{c.token_secret}".encode()
    sig = base64.b64encode(hmac.new(key, base.encode(), hashlib.sha256).digest()).decode()
    core = ns("core", ver)
    return (f'<tokenPassport xmlns="{ns("messages", ver)}">'
            f'<account xmlns="{core}">{ACCOUNT}</account>'
            f'<consumerKey xmlns="{core}">{c.consumer_key}</consumerKey>'
            f'<token xmlns="{core}">{c.token_id}</token>'
            f'<nonce xmlns="{core}">{nonce}</nonce>'
            f'<timestamp xmlns="{core}">{ts}</timestamp>'
            f'<signature algorithm="HMAC_SHA256" xmlns="{core}">{sig}</signature>'
            "</tokenPassport>")


def passport_with_app_id(application_id: str, ver: str) -> str:
    core, msgs = ns("core", ver), ns("messages", ver)
    return (f'<passport xmlns="{msgs}"><email xmlns="{core}">{USER_EMAIL}</email>'
            f'<password xmlns="{core}">bench-password</password><account xmlns="{core}">{ACCOUNT}</account>'
            f'<role xmlns="{core}" internalId="{ROLE}"/></passport>'
            f'<applicationInfo xmlns="{msgs}"><applicationId>{application_id}</applicationId>'
            "</applicationInfo>")


def get_op(ver: str) -> str:
    return (f'<get xmlns="{ns("messages", ver)}"><baseRef xsi:type="ns1:RecordRef" type="customer" '
            f'internalId="42" xmlns:ns1="{ns("core", ver)}"/></get>')


def data_center_urls_op(ver: str) -> str:
    msgs = ns("messages", ver)
    return f'<getDataCenterUrls xmlns="{msgs}"><account>{ACCOUNT}</account></getDataCenterUrls>'


def text_heavy_add(ver: str, raw_bytes: int) -> str:
    """A File record whose base64 `content` is most of the body (few elements, long text)."""
    content = base64.b64encode(random.Random(7).randbytes(raw_bytes)).decode()
    return (f'<add xmlns="{ns("messages", ver)}"><record xsi:type="ns2:File" '
            f'xmlns:ns2="urn:filecabinet_{ver}.documents.webservices.netsuite.com">'
            f"<ns2:name>bench.bin</ns2:name><ns2:fileType>_PLAINTEXT</ns2:fileType>"
            f"<ns2:content>{content}</ns2:content></record></add>")


def element_dense_add(ver: str, target_bytes: int) -> str:
    """A sales order with many lines of small elements (many tags, little text)."""
    line = ('<item><item internalId="{i}"/><quantity>{q}</quantity><rate>1.5</rate><taxCode internalId="5"/>'
            '<location internalId="2"/><department internalId="3"/><class internalId="4"/>'
            '<customFieldList><customField scriptId="custcol_a" xsi:type="StringCustomFieldRef"><value>a{i}'
            '</value></customField><customField scriptId="custcol_b" xsi:type="LongCustomFieldRef"><value>{q}'
            "</value></customField></customFieldList></item>")
    parts: list[str] = []
    size, i = 0, 0
    while size < target_bytes:
        part = line.format(i=i, q=i % 7 + 1)
        parts.append(part)
        size += len(part)
        i += 1
    return (f'<add xmlns="{ns("messages", ver)}"><record xsi:type="SalesOrder"><entity internalId="42"/>'
            f'<itemList>{"".join(parts)}</itemList></record></add>')


# --------------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    name: str
    description: str
    version: str
    action: str
    expect: str                 # "forwarded" (HTTP 200 from the backend) or "rejected" (fault)
    connections: int = 32
    lua: str = "post.lua"
    body_file: Path | None = None

    @property
    def path(self) -> str:
        return f"/services/NetSuitePort_{self.version}"


SCENARIOS = [
    Scenario("passport_appid", "get, header passport + applicationInfo, endpoint 2019_2", "2019_2", "get",
             "forwarded"),
    Scenario("tba_get", "get, tokenPassport signed per request in Lua (fresh nonce+timestamp), 2024_2",
             "2024_2", "get", "forwarded", lua="tba.lua"),
    Scenario("rejected_blocked", "get, passport + application ID of a blocked integration, 2019_2", "2019_2",
             "get", "rejected"),
    Scenario("datacenter_urls", "getDataCenterUrls, no credentials, 2024_2", "2024_2", "getDataCenterUrls",
             "forwarded"),
    Scenario("add_20mb_text", "add File, 20 MB body of base64 content, passport + app ID, 2019_2", "2019_2",
             "add", "forwarded", connections=4),
    Scenario("add_6mb_dense", "add SalesOrder, 6 MB of small elements, passport + app ID, 2019_2", "2019_2",
             "add", "forwarded", connections=4),
]


def write_bodies(directory: Path, creds: Credentials) -> None:
    def write(name: str, text: str) -> Path:
        path = directory / f"{name}.xml"
        path.write_text(text)
        return path

    for s in SCENARIOS:
        if s.name == "passport_appid":
            s.body_file = write(s.name, envelope(get_op(s.version), passport_with_app_id(creds.application_id,
                                                                                        s.version)))
        elif s.name == "rejected_blocked":
            header = passport_with_app_id(creds.blocked_application_id, s.version)
            s.body_file = write(s.name, envelope(get_op(s.version), header))
        elif s.name == "datacenter_urls":
            s.body_file = write(s.name, envelope(data_center_urls_op(s.version), None))
        elif s.name == "add_20mb_text":
            body = text_heavy_add(s.version, 15_000_000)
            s.body_file = write(s.name, envelope(body, passport_with_app_id(creds.application_id, s.version)))
        elif s.name == "add_6mb_dense":
            body = element_dense_add(s.version, 6 * 1024 * 1024)
            s.body_file = write(s.name, envelope(body, passport_with_app_id(creds.application_id, s.version)))


def probe_body(s: Scenario, creds: Credentials) -> bytes:
    if s.lua == "tba.lua":
        return envelope(get_op(s.version), token_passport(creds, s.version)).encode()
    assert s.body_file is not None
    return s.body_file.read_bytes()


# --------------------------------------------------------------------------- processes


class Processes:
    """Everything this run started; each in its own process group so a stop reaches its children."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "wb")  # the child keeps its own copy
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True, cwd=self.workdir)
        log.close()
        self.procs[name] = proc
        return proc

    def log_tail(self, name: str, lines: int = 25) -> str:
        path = self.workdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)
        self.kill_strays()

    def kill_strays(self) -> None:
        """Children that left their group (e.g. an embedded redis-server): found by our workdir."""
        self.reap(str(self.workdir), grace=0)

    @staticmethod
    def reap(marker: str, grace: float = 10) -> None:
        """Wait up to `grace` s for processes naming `marker` (cmdline or cwd) to end, then kill them."""
        end = time.monotonic() + grace
        while True:
            left = [pid for pid in pids() if pid != os.getpid() and mentions(pid, marker.encode())]
            if not left:
                return
            if time.monotonic() >= end:
                for pid in left:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.2)


def mentions(pid: int, marker: bytes) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        cwd = os.readlink(f"/proc/{pid}/cwd").encode()
    except OSError:
        return False
    return marker in cmdline or cwd.startswith(marker)


def pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def proc_status(pid: int) -> dict[str, str]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid in pids():
        ppid = proc_status(pid).get("PPid", "").strip()
        if ppid.isdigit():
            children.setdefault(int(ppid), []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def peak_rss_mb(root: int, exclude: tuple[str, ...] = ("redis-server", "redis")) -> tuple[float, float, int]:
    """(sum of VmHWM, sum of VmRSS, process count) over the tree, without redis."""
    hwm = rss = 0
    count = 0
    for pid in process_tree(root):
        st = proc_status(pid)
        if not st or st.get("Name", "").strip() in exclude:
            continue
        hwm += int(st.get("VmHWM", "0 kB").split()[0])
        rss += int(st.get("VmRSS", "0 kB").split()[0])
        count += 1
    return hwm / 1024, rss / 1024, count


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


# --------------------------------------------------------------------------- tools and anchors


def ensure_tools() -> None:
    missing = [pkg for pkg, exe in (("wrk", "wrk"), ("nginx", "nginx")) if not find_exe(exe)]
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"missing {' '.join(missing)}: run `apt-get install -y {' '.join(missing)}` as root")
    print(f"installing {' '.join(missing)} with apt-get ...", flush=True)
    subprocess.run(["apt-get", "update", "-q"], check=True, timeout=300, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, timeout=600,
                   stdout=subprocess.DEVNULL, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def find_exe(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}")
                                       if os.access(p, os.X_OK)), None)


NGINX_COMMON = """worker_processes 1;
pid {d}/{name}.pid;
error_log {d}/{name}.err {log_level};
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_max_body_size 64m;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  client_body_temp_path {d}/tmp/{name}-body;
  proxy_temp_path {d}/tmp/{name}-proxy;
  fastcgi_temp_path {d}/tmp/{name}-fcgi;
  uwsgi_temp_path {d}/tmp/{name}-uwsgi;
  scgi_temp_path {d}/tmp/{name}-scgi;
{server}
}}
"""
# The canned backend must read the whole request body before it answers (an early answer to a
# 20 MB upload breaks keep-alive for every client). `return` alone does not read it; proxying
# with request buffering does: the body is read into memory, the connect to a socket that does
# not exist fails at once, and the 502 becomes the canned 200.
NGINX_BACKEND = """  client_body_buffer_size 64m;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://unix:{d}/no-such-upstream.sock:;
      proxy_request_buffering on;
      error_page 502 = @canned;
    }}
    location @canned {{ default_type text/xml; return 200 '{canned}'; }}
  }}"""
NGINX_PROXY = """  upstream backend {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_request_buffering off;
    }}
  }}"""


def start_nginx(procs: Processes, name: str, server: str, port: int) -> subprocess.Popen[bytes]:
    d = procs.workdir
    (d / "tmp").mkdir(mode=0o777, exist_ok=True)
    os.chmod(d / "tmp", 0o777)
    conf = d / f"{name}.conf"
    # crit: the backend's deliberate connect failures would otherwise be logged per request.
    conf.write_text(NGINX_COMMON.format(d=d, name=name, server=server,
                                        log_level="crit" if name == "backend" else "warn"))
    exe = find_exe("nginx")
    assert exe is not None
    proc = procs.start(name, [exe, "-c", str(conf), "-p", str(d), "-g", "daemon off;"])
    wait_port(port, proc)
    return proc


# --------------------------------------------------------------------------- gateway


@dataclass
class Gateway:
    port: int
    admin_port: int
    data_dir: Path
    admin_token: str
    proc: subprocess.Popen[bytes] | None = None

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.admin_port}/admin/v1{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.admin_token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"admin {method} {path} -> HTTP {exc.code}: {exc.read()[:500]!r}") from exc
        return json.loads(raw) if raw else {}

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=10) as resp:
            return str(resp.read().decode())


def start_gateway(procs: Processes, gw: Gateway, upstream_port: int, workers: int) -> str:
    name = f"gateway-w{workers}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_ADMIN_TOKEN"] = gw.admin_token
    argv = [str(VENV_BIN / "gateway"), "serve", "--listen", f"127.0.0.1:{gw.port}",
            "--admin-listen", f"127.0.0.1:{gw.admin_port}", "--upstream", f"http://127.0.0.1:{upstream_port}",
            "--data-dir", str(gw.data_dir), "--workers", str(workers)]
    gw.proc = procs.start(name, argv, env=env)
    end = time.monotonic() + 90
    while time.monotonic() < end:
        if gw.proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {gw.proc.returncode}:\n{procs.log_tail(name)}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{gw.admin_port}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    wait_port(gw.port, gw.proc)
                    return name
        time.sleep(0.3)
    raise RuntimeError(f"{name} not ready after 90s:\n{procs.log_tail(name)}")


def set_up_records(gw: Gateway) -> Credentials:
    a = f"/accounts/{ACCOUNT}"
    gw.admin("PUT", a, {"require_approval": False})
    auth = {"user_credentials": True, "token_based": True, "tba_issue_token_endpoint": False}
    ok = gw.admin("POST", f"{a}/integrations", {"name": "bench", "description": "bench/run.py",
                                                  "state": "enabled", "note": "", "auth": auth,
                                                  "auto_install": False})
    token = gw.admin("POST", f"{a}/tokens", {"integration_id": ok["id"], "user": USER_EMAIL, "role": ROLE})
    blocked = gw.admin("POST", f"{a}/integrations", {"name": "bench-blocked", "description": "bench/run.py",
                                                       "state": "enabled", "note": "", "auth": auth,
                                                       "auto_install": False})
    gw.admin("PATCH", f"{a}/integrations/{blocked['id']}", {"state": "blocked"})
    return Credentials(application_id=ok["application_id"], blocked_application_id=blocked["application_id"],
                       consumer_key=ok["consumer_key"], consumer_secret=ok["consumer_secret"],
                       token_id=token["token_id"], token_secret=token["token_secret"],
                       integration_id=ok["id"], blocked_integration_id=blocked["id"])


def metrics_summary(text: str) -> dict[str, float]:
    """Totals of the families worth a glance after a run (by outcome/reason for requests)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r"([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        if name == "gateway_requests_total":
            lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            key = f"requests{{outcome={lab.get('outcome')},reason={lab.get('reason')}}}"
            out[key] = out.get(key, 0) + value
        elif name in ("gateway_log_entries_dropped_total", "gateway_store_errors_total",
                      "gateway_upstream_errors_total", "gateway_log_buffer_entries"):
            out[name] = out.get(name, 0) + value
    return out


# --------------------------------------------------------------------------- wrk


@dataclass
class Result:
    scenario: str
    target: str
    connections: int
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    requests: int = 0
    non_2xx: int = 0
    socket_errors: int = 0
    ratio_floor: float | None = None
    ratio_nginx: float | None = None
    rss_peak_mb: float | None = None
    rss_now_mb: float | None = None
    processes: int | None = None
    ok: bool = False
    note: str = ""
    gateway_counts: dict[str, float] = field(default_factory=dict)  # metric deltas over this row
    wrk_raw: str = field(default="", repr=False)


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_wrk(text: str, r: Result) -> None:
    def latency(pct: str) -> float | None:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
        return float(m.group(1)) * UNITS[m.group(2)] if m else None

    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    r.rps = float(m.group(1)) if m else None
    r.p50_ms, r.p99_ms = latency("50"), latency("99")
    m = re.search(r"(\d+) requests in", text)
    r.requests = int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    r.non_2xx = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    r.socket_errors = sum(int(g) for g in m.groups()) if m else 0


def wrk_env(s: Scenario, creds: Credentials, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "SOAP_ACTION": s.action, "NS_ACCOUNT": ACCOUNT, "NS_VER": s.version,
           "NS_CK": creds.consumer_key, "NS_CS": creds.consumer_secret, "NS_TK": creds.token_id,
           "NS_TS": creds.token_secret, "RUN_ID": secrets.token_hex(4)}
    if s.body_file is not None:
        env["BODY_FILE"] = str(s.body_file)
    return {**env, **(extra or {})}


def run_wrk(s: Scenario, port: int, creds: Credentials, seconds: float,
            extra_env: dict[str, str] | None = None) -> str:
    threads = min(2, s.connections)
    argv = [find_exe("wrk") or "wrk", f"-t{threads}", f"-c{s.connections}", f"-d{max(1, round(seconds))}s",
            "--timeout", "30s", "--latency", "-s", str(BENCH / s.lua), f"http://127.0.0.1:{port}{s.path}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 90,
                          env=wrk_env(s, creds, extra_env), cwd=BENCH)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[:500]}")
    return done.stdout + done.stderr


def probe(s: Scenario, port: int, creds: Credentials, expect: str) -> str | None:
    """One request by hand: None when the answer is what the scenario expects, else why not."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{s.path}", data=probe_body(s, creds), method="POST",
                                 headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": s.action})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except OSError as exc:
        return f"probe failed: {exc}"
    if expect == "forwarded" and status == 200 and b"getResponse" in body:
        return None
    if expect == "rejected" and status == 500 and b"WS_REQUEST_BLOCKED" in body:
        return None
    return f"probe: expected {expect}, got HTTP {status}: {body[:300].decode(errors='replace')}"


def check_lua_signer(port: int, workdir: Path) -> str | None:
    """bench/tba.lua's SHA-256/HMAC/base64 and body against Python's, byte for byte."""
    creds = Credentials()
    s = next(x for x in SCENARIOS if x.lua == "tba.lua")
    check = workdir / "tba-check.txt"
    run_wrk(Scenario(s.name, "", s.version, s.action, "forwarded", connections=1, lua=s.lua), port, creds, 1,
            {"TBA_CHECK_FILE": str(check)})
    got = check.read_text().splitlines()
    want = [hashlib.sha256(b"abc").hexdigest(),
            hmac.new(b"Jefe", b"what do ya want for nothing?", hashlib.sha256).hexdigest(),
            token_passport(creds, s.version, "abcDEF123", "1700000000").split('HMAC_SHA256" xmlns="')[1]
            .split(">", 1)[1].split("<", 1)[0],
            envelope(get_op(s.version), token_passport(creds, s.version, "abcDEF123", "1700000000"))]
    names = ["sha256", "hmac", "signature", "body"]
    bad = [n for n, g, w in zip(names, got, want, strict=False) if g != w]
    return f"tba.lua disagrees with Python on: {', '.join(bad)}" if bad or len(got) != 4 else None


def measure(s: Scenario, target: str, port: int, creds: Credentials, args: argparse.Namespace,
            rss_root: int | None) -> Result:
    r = Result(s.name, target, s.connections)
    # The baselines inspect nothing: they forward even the blocked integration's request.
    expect = s.expect if target.startswith("gateway") else "forwarded"
    why = probe(s, port, creds, expect)
    if why:
        r.note = why
        return r
    if args.warmup > 0:
        run_wrk(s, port, creds, args.warmup)
    r.wrk_raw = run_wrk(s, port, creds, args.duration)
    parse_wrk(r.wrk_raw, r)
    if rss_root is not None:
        r.rss_peak_mb, r.rss_now_mb, r.processes = peak_rss_mb(rss_root)
    expect_rejected = expect == "rejected"
    bad = (r.requests - r.non_2xx) if expect_rejected else r.non_2xx
    r.ok = r.rps is not None and r.requests > 0 and bad == 0 and r.socket_errors == 0
    if not r.ok:
        r.note = (f"{bad} unexpected {'2xx' if expect_rejected else 'non-2xx'} of {r.requests}, "
                  f"{r.socket_errors} socket errors")
    return r


# --------------------------------------------------------------------------- report


def fill_ratios(results: list[Result]) -> None:
    by = {(r.scenario, r.target): r for r in results}
    for r in results:
        floor, anchor = by.get((r.scenario, "passthrough")), by.get((r.scenario, "nginx"))
        if r.rps and floor and floor.rps:
            r.ratio_floor = r.rps / floor.rps
        if r.rps and anchor and anchor.rps:
            r.ratio_nginx = r.rps / anchor.rps


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(results: list[Result]) -> str:
    head = ["scenario", "target", "conns", "req/s", "p50 ms", "p99 ms", "x floor", "x nginx", "peak RSS MB",
            "check"]
    rows = [[r.scenario, r.target, str(r.connections), fmt(r.rps, ",.0f"), fmt(r.p50_ms, ".2f"),
             fmt(r.p99_ms, ".2f"), fmt(r.ratio_floor, ".2f"), fmt(r.ratio_nginx, ".2f"),
             fmt(r.rss_peak_mb, ".0f"), "ok" if r.ok else (r.note[:70] or "FAILED")] for r in results]
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=False)]
    right = {2, 3, 4, 5, 6, 7, 8}

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=False))).rstrip()

    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def describe(s: Scenario) -> dict[str, Any]:
    size = s.body_file.stat().st_size if s.body_file and s.body_file.exists() else None
    return {"description": s.description, "path": s.path, "soap_action": s.action, "expect": s.expect,
            "connections": s.connections, "wrk_script": f"bench/{s.lua}", "body_bytes": size}


def machine_info() -> dict[str, Any]:
    def out(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=ROOT)
            return (done.stdout + done.stderr).strip().splitlines()[0] if (done.stdout + done.stderr) else ""
        except (OSError, subprocess.TimeoutExpired):
            return ""

    dirty = bool(out(["git", "status", "--porcelain", "--untracked-files=no"]))
    return {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
            "wrk": out([find_exe("wrk") or "wrk", "-v"]), "nginx": out([find_exe("nginx") or "nginx", "-v"]),
            "git": out(["git", "rev-parse", "--short", "HEAD"]) + ("+dirty" if dirty else ""),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="5 s per measurement, 1 s warm-up")
    p.add_argument("--workers", default=f"1,{os.cpu_count() or 2}",
                   help="gateway worker counts (default 1,NCPU)")
    p.add_argument("--duration", type=float, default=None, help="seconds per measurement (default 10)")
    p.add_argument("--warmup", type=float, default=None, help="seconds of unrecorded load first (default 2)")
    p.add_argument("--targets", default="backend,nginx,passthrough,gateway",
                   help="subset of backend,nginx,passthrough,gateway")
    p.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS), help="subset, comma-separated")
    p.add_argument("--max-minutes", type=float, default=45, help="hard bound on the whole run")
    p.add_argument("--out", default=str(BENCH / "results" / "latest.json"))
    args = p.parse_args(argv)
    args.duration = args.duration or (5.0 if args.quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    args.worker_counts = [int(w) for w in str(args.workers).split(",") if w.strip()]
    args.target_set = set(args.targets.split(","))
    wanted = set(args.scenarios.split(","))
    unknown = wanted - {s.name for s in SCENARIOS}
    if unknown:
        p.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    args.scenario_list = [s for s in SCENARIOS if s.name in wanted]
    return args


@contextlib.contextmanager
def bounded(minutes: float) -> Iterator[None]:
    def on_alarm(signum: int, frame: Any) -> None:
        raise Deadline(f"--max-minutes {minutes} ran out")

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old_alarm = signal.signal(signal.SIGALRM, on_alarm)
    old_term = signal.signal(signal.SIGTERM, on_term)
    # Explicitly: a shell starts background jobs with SIGINT ignored, and Python keeps that.
    old_int = signal.signal(signal.SIGINT, on_term)
    signal.alarm(max(1, int(minutes * 60)))
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old_alarm)
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_tools()
    workdir = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    os.chmod(workdir, 0o755)
    procs = Processes(workdir)
    results: list[Result] = []
    report: dict[str, Any] = {"machine": machine_info(), "errors": [], "gateway_metrics": {}}
    status = 0
    try:
        with bounded(args.max_minutes):
            status = run(args, procs, results, report)
    except KeyboardInterrupt:
        report["errors"].append("interrupted")
        status = 130
    except Deadline as exc:
        report["errors"].append(str(exc))
        status = 124
    finally:
        procs.stop_all()
    fill_ratios(results)
    print()
    print(table(results))
    for err in report["errors"]:
        print(f"\nERROR: {err}", file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report.update({
        "config": {"duration_s": args.duration, "warmup_s": args.warmup, "workers": args.worker_counts,
                   "quick": args.quick, "wrk_threads": 2,
                   "scenarios": {s.name: describe(s) for s in args.scenario_list}},
        "results": [{k: v for k, v in asdict(r).items() if k != "wrk_raw"} for r in results],
    })
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwritten {out}")
    if status == 0:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"logs kept in {workdir}", file=sys.stderr)
    return status


def run(args: argparse.Namespace, procs: Processes, results: list[Result], report: dict[str, Any]) -> int:
    workdir = procs.workdir
    backend_port, nginx_port, floor_port = free_port(), free_port(), free_port()
    server = NGINX_BACKEND.format(port=backend_port, canned=CANNED, d=workdir)
    start_nginx(procs, "backend", server, backend_port)
    print(f"backend nginx on :{backend_port}", flush=True)
    why = check_lua_signer(backend_port, workdir)
    if why:
        report["errors"].append(why)
        args.scenario_list = [s for s in args.scenario_list if s.lua != "tba.lua"]
    targets: list[tuple[str, int, int | None]] = []
    if "backend" in args.target_set:
        targets.append(("backend", backend_port, procs.procs["backend"].pid))
    if "nginx" in args.target_set:
        server = NGINX_PROXY.format(port=nginx_port, upstream=backend_port)
        proc = start_nginx(procs, "nginx", server, nginx_port)
        targets.append(("nginx", nginx_port, proc.pid))
    if "passthrough" in args.target_set:
        proc = procs.start("passthrough", [str(VENV_BIN / "python"), str(BENCH / "passthrough.py"),
                                           f"http://127.0.0.1:{backend_port}", str(floor_port)])
        wait_port(floor_port, proc)
        targets.append(("passthrough", floor_port, proc.pid))

    creds = Credentials()
    gw = Gateway(free_port(), free_port(), workdir / "gateway-data", secrets.token_hex(32))
    gateway_up = False
    if "gateway" in args.target_set:
        try:
            name = start_gateway(procs, gw, backend_port, args.worker_counts[0])
            creds = set_up_records(gw)
            gateway_up = True
            print(f"{name} ready on :{gw.port} (admin :{gw.admin_port}); integration {creds.integration_id}",
                  flush=True)
        except Exception as exc:  # the baselines still run: report the gateway's failure precisely
            report["errors"].append(f"gateway: {exc}")
            procs.stop(f"gateway-w{args.worker_counts[0]}")
    write_bodies(workdir, creds)

    def run_target(target: str, port: int, rss_root: int | None) -> None:
        for s in args.scenario_list:
            print(f"  {target:<12} {s.name:<18}", end=" ", flush=True)
            before = metrics_summary(gw.metrics_text()) if target.startswith("gateway") else {}
            r = measure(s, target, port, creds, args, rss_root)
            if target.startswith("gateway"):
                after = metrics_summary(gw.metrics_text())
                r.gateway_counts = {k: v - before.get(k, 0) for k, v in after.items()
                                    if v != before.get(k, 0)}
            results.append(r)
            print(f"{fmt(r.rps, ',.0f'):>8} req/s  p99 {fmt(r.p99_ms, '.2f')} ms  {'ok' if r.ok else r.note}",
                  flush=True)

    for target, port, root in targets:
        run_target(target, port, root)
    if gateway_up:
        for i, workers in enumerate(args.worker_counts):
            name = f"gateway-w{workers}"
            try:
                if i > 0:
                    start_gateway(procs, gw, backend_port, workers)  # same data dir: same records
                assert gw.proc is not None
                run_target(name, gw.port, gw.proc.pid)
                report["gateway_metrics"][name] = metrics_summary(gw.metrics_text())
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                report["errors"].append(f"{name}: {exc}")
            procs.stop(name)
            procs.reap(str(gw.data_dir))  # its embedded redis-server, before the next one starts
    return 1 if report["errors"] or not all(r.ok for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
