"""Fuzz the SOAP route through the full HTTP path of an in-process gateway, for a bounded time.

    python bench/fuzz_http.py --seconds 20 [--seed N] [--concurrency 4] [--save DIR]

Plain random mutation (byte flips, inserted XML tokens, deleted / duplicated / spliced ranges,
truncation) over freshly built SuiteTalk envelopes (TBA with a fresh nonce, passport with an
application ID, login, ssoLogin, getDataCenterUrls, a 100 KB add), sent whole or in random
chunks, with random Content-Type and SOAPAction headers, to a gateway built like `serve`'s
(real embedded Redis, the sample backend on a real socket).

Invariants, checked on every exchange:
- never a 500 without a SOAP fault body; never a status outside what the SPEC gives (200,
  400, 408, 413, 500, 503) — the upstream is healthy, so no 502/504 either;
- an X-Request-Id on every answer;
- forwarded (200) only what a strict XML parser reads as a sound SOAP 1.1 envelope (the
  differential: the gateway's streaming inspector against lxml's tree parser);
- nothing logged at ERROR by aiohttp ("Error handling request", "Unhandled exception") or by
  the gateway's last-resort middleware.
After the run: the gateway still answers a valid request, /readyz is true, no task is left.
Failing inputs are written to `--save` (default bench/results/fuzz/) to become regular tests.
Exit status 0 when every invariant held.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from lxml import etree

from tests.factories import (
    SOAP11_NS,
    application_info_xml,
    big_body,
    get_body,
    get_data_center_urls_body,
    login_body,
    logout_body,
    make_envelope,
    passport_xml,
    sso_login_body,
    token_passport_xml,
)
from tests.reliability.rig import Gateway, StartGateway, gateways
from tests.web.conftest import Tenant

ALLOWED_STATUS = {200, 400, 408, 413, 500, 503}
TOKENS = [
    b"<!DOCTYPE x>", b'<!DOCTYPE x [<!ENTITY e "x">]>', b"&e;", b"&#0;", b"&#x10FFFF;", b"&amp;", b"&lt;",
    b"<![CDATA[", b"]]>", b"<!--", b"-->", b"<?xml version='1.0'?>", b"<?pi x?>", b"\xef\xbb\xbf", b"\xff\xfe",
    b"\x00", b"\xc0\xbc", b"\xed\xa0\x80", b"<", b">", b"</", b"/>", b'"', b"'", b"=", b":", b"xmlns=\"\"",
    b'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"', b'xmlns:soapenv="http://www.w3.org/2003/05/soap-envelope"',
    b"<soapenv:Header>", b"</soapenv:Header>", b"<soapenv:Body>", b"</soapenv:Body>", b"<soapenv:Envelope>",
    b"<tokenPassport>", b"</tokenPassport>", b"<passport>", b"<applicationInfo><applicationId>1</applicationId>"
    b"</applicationInfo>", b"<ssoPassport>", b"<login>", b"<x>" * 70, b"</x>" * 70, b"a" * 5000, b" " * 300,
    b"\r\n", b"\t",
]
CONTENT_TYPES = ["text/xml; charset=utf-8"] * 6 + ["text/xml", "text/xml; charset=UTF8", "text/xml;charset=latin-1",
                                                  "application/soap+xml", "multipart/related", "", "text/plain"]
SOAP_ACTIONS = [None] * 4 + ['""', '"get"', "get", '"delete"', "login", "'get'", '"get', "x" * 300]


@dataclass
class Report:
    iterations: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    forwarded: int = 0
    failures: list[tuple[str, bytes]] = field(default_factory=list)
    logged_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures and not self.logged_errors

    def summary(self) -> str:
        rate = self.iterations / max(self.seconds, 1e-9)
        lines = [f"{self.iterations} exchanges in {self.seconds:.1f}s ({rate:.0f}/s), "
                 f"{self.forwarded} forwarded; statuses {dict(sorted(self.statuses.items()))}",
                 f"reasons {dict(self.reasons.most_common(12))}"]
        lines.append(f"invariant failures: {len(self.failures)}; errors logged: {len(self.logged_errors)}")
        lines += [f"  FAIL {why}" for why, _ in self.failures[:10]]
        lines += [f"  LOGGED {msg}" for msg in self.logged_errors[:10]]
        return "\n".join(lines)


class ErrorCatcher(logging.Handler):
    """What aiohttp or the last-resort middleware log at ERROR: each one is a handler crash."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("aiohttp") or record.name == "gateway.web":
            self.messages.append(f"{record.name}: {record.getMessage()}"
                                 + (f" ({record.exc_info[1]!r})" if record.exc_info else ""))


# ---------------------------------------------------------------------------- inputs


def seeds(tenant: Tenant) -> list[tuple[str, bytes]]:
    """(endpoint version, envelope), built fresh: TBA seeds carry a new nonce each time."""
    t, p, v = tenant, "2019_2", "2024_2"
    tp = token_passport_xml(v, t.account, t.integration["consumer_key"], t.integration["consumer_secret"],
                            t.token["token_id"], t.token["token_secret"])
    pp = passport_xml(p, t.email, "pw", t.account)
    app = application_info_xml(p, t.integration["application_id"])
    return [
        (v, make_envelope(get_body(v), [tp])),
        (p, make_envelope(get_body(p), [pp, app])),
        (p, make_envelope(login_body(p, t.email, "pw", t.account), [app])),
        (p, make_envelope(sso_login_body(p, partner_account=t.account, partner_user_id=t.email), [app])),
        (v, make_envelope(get_data_center_urls_body(v, t.account))),
        (p, make_envelope(logout_body(p))),
        (p, make_envelope(big_body(p, "dense", 100_000), [pp, app])),
    ]


def mutate(rng: random.Random, data: bytes, other: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 4))):
        n = len(buf)
        op = rng.randrange(8)
        i = rng.randrange(n + 1) if n else 0
        if op == 0 and n:  # flip a byte
            buf[min(i, n - 1)] = rng.randrange(256)
        elif op == 1:  # an XML token where it does not belong
            buf[i:i] = rng.choice(TOKENS)
        elif op == 2 and n:  # delete a range
            buf[i:i + rng.randrange(1, 64)] = b""
        elif op == 3 and n:  # duplicate a range (a second Header, a second tokenPassport...)
            j = rng.randrange(i, min(n, i + 2000) + 1)
            buf[j:j] = buf[i:j]
        elif op == 4:  # splice in a piece of another envelope
            j = rng.randrange(len(other) + 1)
            buf[i:i] = other[j:j + rng.randrange(1, 400)]
        elif op == 5 and n:  # truncate
            del buf[i:]
        elif op == 6:  # swap a tag's name for another's
            names = [b"Header", b"Body", b"Envelope", b"tokenPassport", b"passport", b"applicationInfo", b"login"]
            a, b = rng.sample(names, 2)
            pos = buf.find(a, i)
            if pos >= 0:
                buf[pos:pos + len(a)] = b
        elif n:  # change a character that matters to XML
            pos = buf.find(rng.choice((b"<", b">", b'"', b"/", b":", b"=")), i)
            if pos >= 0:
                buf[pos] = rng.choice(b"<>\"/:= x")
    return bytes(buf)


def oracle(data: bytes) -> tuple[bool, str]:
    """Whether a strict tree parser reads `data` as a sound SOAP 1.1 envelope (SPEC section 2,
    without the parts a parser cannot see: credential placement, SOAPAction)."""
    text = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    rest = text
    if rest.startswith(b"<?xml"):
        end = rest.find(b"?>")
        rest = rest[end + 2:] if end >= 0 else rest
    rest = rest.lstrip(b" \t\r\n")
    if not rest.startswith(b"<") or rest[1:2] in (b"!", b"?"):
        return False, "prolog"
    # recover=True only to see every message: errors (well-formedness, namespaces) decide,
    # warnings (a namespace name that is no valid URI) do not, as in the XML specs.
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, recover=True)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as e:
        return False, str(e)
    errors = [e for e in parser.error_log
              if e.level >= etree.ErrorLevels.ERROR and not e.type_name.startswith("WAR_")]  # WAR_NS_URI
    if errors or root is None:
        return False, f"{errors[0].domain_name}: {errors[0].message}" if errors else "no root"
    if root.getroottree().docinfo.doctype or list(root.itersiblings()) or list(root.itersiblings(preceding=True)):
        return False, "outside the root"
    if root.tag != f"{{{SOAP11_NS}}}Envelope" or (root.text or "").strip():
        return False, "envelope"
    kids = [k for k in root if isinstance(k.tag, str)]
    names = [k.tag for k in kids]
    if names not in ([f"{{{SOAP11_NS}}}Body"], [f"{{{SOAP11_NS}}}Header", f"{{{SOAP11_NS}}}Body"]):
        return False, "envelope children"
    if any((k.tail or "").strip() for k in root) or any(not isinstance(k.tag, str) for k in root):
        return False, "envelope content"
    body = kids[-1]
    if len([k for k in body if isinstance(k.tag, str)]) != 1 or (body.text or "").strip():
        return False, "body children"
    return True, ""


# ---------------------------------------------------------------------------- the run


async def chunked(rng: random.Random, data: bytes) -> AsyncIterator[bytes]:
    i = 0
    while i < len(data):
        size = rng.choice((1, 7, 64, 512, 4096, 65536))
        yield data[i:i + size]
        i += size


async def exchange(gw: Gateway, http: aiohttp.ClientSession, rng: random.Random, version: str, payload: bytes,
                   report: Report, fail: Callable[[str, bytes], None]) -> None:
    headers = {"X-Request-Id": f"fuzz-{report.iterations}-{rng.randrange(1 << 30)}"}
    content_type = rng.choice(CONTENT_TYPES)
    if content_type:
        headers["Content-Type"] = content_type
    action = rng.choice(SOAP_ACTIONS)
    if action is not None:
        headers["SOAPAction"] = action
    data = chunked(rng, payload) if rng.random() < 0.4 else payload
    url = gw.url(f"/services/NetSuitePort_{version}")
    async with http.post(url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=30)) as r:
        body = await r.read()
        status, ctype, rid = r.status, r.headers.get("Content-Type", ""), r.headers.get("X-Request-Id")
    report.iterations += 1
    report.statuses[status] += 1
    if status not in ALLOWED_STATUS:
        fail(f"status {status}", payload)
    if status == 500 and not (ctype.startswith("text/xml") and b"<soapenv:Fault>" in body):
        fail("a 500 without a SOAP fault", payload)
    if not rid:
        fail("no X-Request-Id", payload)
    if b"<platformFaults:code>" in body:
        report.reasons[body.split(b"<platformFaults:code>")[1].split(b"<")[0].decode()] += 1
    if status == 200:
        report.forwarded += 1
        sound, why = oracle(payload)
        if not sound:
            fail(f"forwarded, but not a sound envelope to lxml: {why}", payload)


async def fuzz(start: StartGateway, *, seconds: float, seed: int, concurrency: int = 4) -> Report:
    rng = random.Random(seed)
    report = Report()
    catcher = ErrorCatcher()
    logging.getLogger().addHandler(catcher)
    try:
        gw = await start()
        tenant = await gw.tenant()
        tasks_before = len([t for t in asyncio.all_tasks() if "RequestHandler.start" not in repr(t.get_coro())])

        def fail(why: str, payload: bytes) -> None:
            report.failures.append((why, payload))

        deadline = time.monotonic() + seconds
        started = time.monotonic()

        async def worker(index: int, http: aiohttp.ClientSession) -> None:
            local = random.Random(rng.randrange(1 << 62) + index)
            while time.monotonic() < deadline:
                pool = seeds(tenant)
                version, base = local.choice(pool)
                payload = mutate(local, base, local.choice(pool)[1])
                try:
                    await exchange(gw, http, local, version, payload, report, fail)
                except (aiohttp.ClientError, TimeoutError) as e:
                    fail(f"client error {e!r}", payload)

        # A client of its own, closed before the tasks are counted (each keep-alive
        # connection it holds is a task of the gateway's).
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(*(worker(i, http) for i in range(concurrency)))
        report.seconds = time.monotonic() - started
        # Healthy afterwards.
        ok = await gw.soap("2024_2", seeds(tenant)[0][1])
        if ok.status != 200:
            fail(f"a valid request after the run got {ok.status}", b"")
        if not await gw.ready():
            fail("/readyz false after the run", b"")
        # No task left behind: what may remain are idle keep-alive connections (each one a
        # RequestHandler task: the health checks' own, the gateway's upstream pool to the
        # in-process backend), as many as those pools hold.
        for _ in range(100):
            others = [t for t in asyncio.all_tasks() if "RequestHandler.start" not in repr(t.get_coro())]
            idle = len(asyncio.all_tasks()) - len(others)
            if len(others) <= tasks_before and idle <= 2 * concurrency + 4:
                break
            await asyncio.sleep(0.05)
        else:
            left = sorted(repr(t.get_coro())[:90] for t in others)
            fail(f"tasks left: {left} and {idle} connections (before: {tasks_before})", b"")
    finally:
        logging.getLogger().removeHandler(catcher)
    report.logged_errors = catcher.messages
    return report


def save_failures(report: Report, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (why, payload) in enumerate(report.failures):
        path = directory / f"failure-{i:03d}.xml"
        path.write_bytes(payload)
        (directory / f"failure-{i:03d}.txt").write_text(why + "\n")
        paths.append(path)
    return paths


async def amain(args: argparse.Namespace) -> int:
    from gateway.store.embedded import EmbeddedRedis

    with tempfile.TemporaryDirectory(prefix="fuzz-http-") as tmp:
        redis = EmbeddedRedis(Path(tmp) / "data").start()
        try:
            async with gateways(redis.url) as start:
                report = await fuzz(start, seconds=args.seconds, seed=args.seed, concurrency=args.concurrency)
        finally:
            redis.stop()
    print(report.summary())
    if report.failures:
        for path in save_failures(report, Path(args.save)):
            print(f"saved {path}")
    return 0 if report.ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--save", default=str(Path(__file__).resolve().parent / "results" / "fuzz"))
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 32)
    print(f"seed {args.seed}")
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(amain(args))
    return 130


if __name__ == "__main__":
    raise SystemExit(main())
