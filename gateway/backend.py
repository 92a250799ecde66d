"""A small SuiteTalk-style sample backend: canned success answers per operation.

Used by `gateway demo` and by the tests as the real upstream HTTP server. `login` and
`ssoLogin` set a fresh `JSESSIONID`, as NetSuite does; a password starting with `bad` fails.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field

from aiohttp import web

_OP_RE = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?Body\b[^>]*>\s*<(?:[A-Za-z_][\w.-]*:)?([A-Za-z_][\w.-]*)")
_VERSION_RE = re.compile(r"NetSuitePort_(\d{4}_\d+)")
_BAD_LOGIN = re.compile(rb">bad[^<]*</(?:[A-Za-z_][\w.-]*:)?password>")


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body_sha256: str
    body_len: int
    head: bytes
    complete: bool


@dataclass
class SampleBackend:
    """Records what it receives (hash and length, the first 64 KiB) for tests to check.

    `session_id`: answer every successful login with this JSESSIONID instead of a fresh one (a
    backend that lets a client fix its session id); `sessions` lists the ids handed out.
    """

    received: list[Received] = field(default_factory=list)
    incomplete: int = 0
    session_id: str | None = None
    sessions: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        digest = hashlib.sha256()
        head = bytearray()
        size = 0
        complete = True
        try:
            async for chunk in request.content.iter_any():
                digest.update(chunk)
                size += len(chunk)
                if len(head) < 65536:
                    head += chunk[: 65536 - len(head)]
        except Exception:
            complete = False
        if request.content_length is not None and size != request.content_length:
            complete = False
        self.received.append(Received(request.path_qs, dict(request.headers), digest.hexdigest(), size,
                                      bytes(head), complete))
        if not complete:
            self.incomplete += 1
            raise web.HTTPBadRequest()
        if request.path.startswith("/app/site/hosting/restlet.nl"):
            return web.json_response({"ok": True, "method": request.method})
        if request.path.startswith("/rest/issuetoken"):
            return web.json_response({"token": secrets.token_hex(32), "tokenSecret": secrets.token_hex(32)})
        return self.soap_answer(request, bytes(head))

    def soap_answer(self, request: web.Request, head: bytes) -> web.Response:
        m = _OP_RE.search(head)
        op = m.group(1).decode() if m else "unknown"
        vm = _VERSION_RE.search(request.path)
        version = vm.group(1) if vm else "2024_2"
        ok = not (op == "login" and _BAD_LOGIN.search(head))
        body = soap_response(op, version, ok)
        response = web.Response(body=body, content_type="text/xml", charset="utf-8")
        if op in ("login", "ssoLogin") and ok:
            self.sessions.append(self.session_id or secrets.token_hex(16))
            response.set_cookie("JSESSIONID", self.sessions[-1], path="/")
        return response


def soap_response(op: str, version: str, success: bool = True) -> bytes:
    m = f"urn:messages_{version}.platform.webservices.netsuite.com"
    c = f"urn:core_{version}.platform.webservices.netsuite.com"
    flag = "true" if success else "false"
    inner = (f'<{op}Response xmlns="{m}"><platformCore:status xmlns:platformCore="{c}" isSuccess="{flag}"/>'
             f'</{op}Response>')
    return ('<?xml version="1.0" encoding="UTF-8"?>'
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
            f'<soapenv:Body>{inner}</soapenv:Body></soapenv:Envelope>').encode()
