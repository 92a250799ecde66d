"""What a usage/execution log entry holds (SPEC section 6), through the whole proxy: real
Redis, real upstream. Outcomes with their reasons, documents captured while streaming,
secrets nowhere in Redis, application IDs masked, client_ip behind trusted proxies."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA256, Client
from redis.asyncio import Redis

from gateway.backend import soap_response
from gateway.config import load_settings
from gateway.core.redaction import redact_cookie
from gateway.store import keyspace as ks
from gateway.store.embedded import EmbeddedRedis
from gateway.web.exchange import CAPTURE_MARGIN, HEADER_CAP, Exchange, logged_authorization
from tests.factories import (
    application_info_xml,
    big_body,
    get_body,
    login_body,
    make_envelope,
    passport_xml,
)
from tests.web.conftest import MakeRig, Rig

DEFAULTS = load_settings(environ={})


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, embedded_redis: EmbeddedRedis) -> str:
    """The rig's Redis: the test's own server when it asks for `fresh_redis`, else the shared one."""
    if "fresh_redis" in request.fixturenames:
        server: EmbeddedRedis = request.getfixturevalue("fresh_redis")
        return server.url
    return embedded_redis.url


async def logged(rig: Rig, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """The entry of `request_id` once the writer has stored it (it is handed over as the
    handler returns, which may be just after the client read the response)."""
    deadline = time.monotonic() + timeout
    while True:
        await rig.flush_logs()
        found = await rig.store.logs.find(request_id)
        if found is not None:
            return found[1]
        assert time.monotonic() < deadline, f"no log entry for {request_id}"
        await asyncio.sleep(0.02)


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]
        await asyncio.sleep(0)


def signature_of(payload: bytes) -> str:
    m = re.search(rb"<ns6:signature[^>]*>([^<]+)</ns6:signature>", payload)
    assert m is not None
    return m.group(1).decode()


# --------------------------------------------------------------------------- outcomes


async def test_forwarded_entry_has_every_field(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    payload = t.tba()
    resp = await rig.soap("2024_2", payload, headers={"X-Request-Id": "fwd-1"})
    assert resp.status == 200
    body = await resp.read()
    e = await logged(rig, "fwd-1")
    assert e["outcome"] == "forwarded" and e["reason"] is None and e["sub_reason"] is None
    assert e["fault_code"] is None and e["http_status"] == 200 and e["upstream_status"] == 200
    assert e["account"] == t.account and e["integration_id"] == t.integration["id"]
    assert e["operation"] == "get" and e["endpoint_version"] == "2024_2"
    assert e["auth_method"] == "token_based" and e["user_email"] == "jane@example.com"
    assert e["client_ip"] == "127.0.0.1"
    assert e["request_bytes"] == len(payload) and e["response_bytes"] == len(body)
    assert 0 < e["duration_ms"] < 5000
    assert abs(datetime.fromisoformat(e["time"]).timestamp() - time.time()) < 60
    assert e["application_id"] == "*" * 28 + t.integration["application_id"][-4:]
    assert e["response_document"] == body.decode()
    assert set(e) >= {"request_id", "time", "duration_ms", "account", "integration_id", "operation",
                      "endpoint_version", "auth_method", "user_email", "client_ip", "outcome", "reason",
                      "sub_reason", "fault_code", "http_status", "upstream_status", "request_bytes",
                      "response_bytes", "request_document", "response_document"}
    assert "set_cookie" not in e  # the upstream set none


async def test_rejections_carry_reason_sub_reason_and_fault(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    iid = t.integration["id"]
    forged = t.tba(signature="AAAA")
    replayed = t.tba()
    cases: list[tuple[str, bytes, dict[str, str]]] = [
        ("bad-sig", forged, {}),
        ("first", replayed, {}),
        ("replay", replayed, {}),
        ("framing", t.tba(), {"Content-Type": "application/json"}),
        ("broken", b"<soapenv:Envelope", {}),
    ]
    for rid, payload, headers in cases:
        await rig.soap("2024_2", payload, headers={"X-Request-Id": rid} | headers)
    await rig.store.registry.update_integration(t.account, iid, {"state": "blocked"}, "test")
    await asyncio.sleep(0.1)  # the invalidation reaches the cache
    await rig.soap("2024_2", t.tba(), headers={"X-Request-Id": "blocked"})

    expected = {
        "bad-sig": ("invalid_login", "signature_invalid", "INVALID_LOGIN_ATTEMPT", iid),
        "first": (None, None, None, iid),
        "replay": ("invalid_login", "nonce_used", "INVALID_LOGIN_ATTEMPT", iid),
        "framing": ("malformed_request", "content_type", "USER_ERROR", "none"),
        "blocked": ("integration_blocked", None, "WS_REQUEST_BLOCKED", iid),
    }
    for rid, (reason, sub, fault, integration) in expected.items():
        e = await logged(rig, rid)
        assert (e["reason"], e["sub_reason"], e["fault_code"], e["integration_id"]) == (reason, sub, fault,
                                                                                        integration), rid
        assert e["outcome"] == ("forwarded" if reason is None else "rejected"), rid
        assert e["http_status"] == (200 if reason is None else 500), rid
        if reason is not None:
            assert e["upstream_status"] is None and "Fault" in e["response_document"], rid
    broken = await logged(rig, "broken")
    assert broken["reason"] == "malformed_request" and broken["sub_reason"]


async def test_version_and_cookie_refusals_are_in_the_account_usage_log(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    await rig.soap("2007_2", t.passport("2007_2"), headers={"X-Request-Id": "too-old"})
    await rig.soap("2019_2", t.passport(), headers={"X-Request-Id": "two-sessions",
                                                    "Cookie": "JSESSIONID=a; JSESSIONID=b"})
    for rid, reason in (("too-old", "version_unsupported"), ("two-sessions", "invalid_session")):
        e = await logged(rig, rid)
        assert (e["reason"], e["account"], e["auth_method"]) == (reason, t.account, "user_credentials"), rid
        stream, _ = await rig.store.logs.find(rid) or ("", {})
        assert stream == ks.usage_log(t.account), rid


async def test_errors_carry_reason_and_sub_reason(make_rig: MakeRig) -> None:
    async def slow(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(2)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_post("/{tail:.*}", slow)
    slow_rig = await make_rig(app, limits=replace(DEFAULTS.limits, upstream_response_timeout_seconds=0.2))
    t = await slow_rig.tenant()
    assert (await slow_rig.soap("2019_2", t.passport("2019_2"), headers={"X-Request-Id": "late"})).status == 504
    e = await logged(slow_rig, "late")
    assert (e["outcome"], e["reason"], e["http_status"], e["fault_code"]) == (
        "error", "upstream_timeout", 504, "UNEXPECTED_ERROR")
    assert e["sub_reason"] and e["integration_id"] == t.integration["id"]

    refused = await make_rig(upstream="http://127.0.0.1:9")
    t = await refused.tenant()
    assert (await refused.soap("2019_2", t.passport("2019_2"), headers={"X-Request-Id": "refused"})).status == 502
    e = await logged(refused, "refused")
    assert (e["outcome"], e["reason"], e["sub_reason"], e["http_status"]) == (
        "error", "upstream_unavailable", "ClientConnectorError", 502)


# --------------------------------------------------------------------------- documents


async def test_documents_are_captured_while_streaming_and_capped(make_rig: MakeRig) -> None:
    cap = 4096
    rig = await make_rig(log=replace(DEFAULTS.log, max_document_bytes=cap))
    handed: list[Callable[[], Any]] = []
    submit = rig.writer.submit
    rig.writer.submit = lambda item: handed.append(item) or submit(item)  # type: ignore[method-assign,func-returns-value]
    t = await rig.tenant()
    payload = t.tba(body=big_body("2024_2", "text", 2_000_000))
    resp = await rig.soap("2024_2", chunks(payload, 16384), headers={"X-Request-Id": "big"})
    assert resp.status == 200
    e = await logged(rig, "big")
    assert e["request_bytes"] == len(payload)
    assert len(e["request_document"].encode()) <= cap
    assert e["request_document"].startswith(payload[:100].decode())
    [exchange] = [item.__self__ for item in handed if isinstance(getattr(item, "__self__", None), Exchange)]
    # never more held than the cap and the margin that lets a straddling secret be seen whole
    assert len(exchange.request_doc.data) == cap + CAPTURE_MARGIN and exchange.request_doc.truncated


async def test_a_secret_cut_by_the_cap_is_masked_to_the_end(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    payload = t.passport("2019_2")
    cap = payload.index(b"s3cret-pw") + 4  # the cap ends inside the password
    rig.ctx.settings = rig.ctx.settings.replace(log=replace(DEFAULTS.log, max_document_bytes=cap))
    await rig.soap("2019_2", payload, headers={"X-Request-Id": "cut"})
    doc = (await logged(rig, "cut"))["request_document"]
    # Seen whole within the capture margin, masked, then capped (SPEC 6: capped after redaction).
    assert "s3c" not in doc and "<ns1:password>***" in doc and len(doc.encode()) <= cap
    # A secret longer than the margin is cut in the capture itself: masked to the end.
    long_secret = "s3cret-" + "x" * (2 * CAPTURE_MARGIN)
    payload = make_envelope(get_body("2019_2"), [passport_xml("2019_2", t.email, long_secret, t.account)])
    await rig.soap("2019_2", payload, headers={"X-Request-Id": "cut-long"})
    doc = (await logged(rig, "cut-long"))["request_document"]
    assert "s3c" not in doc and "xxxx" not in doc and doc.endswith("<ns1:password>***")


async def test_an_application_id_cut_by_the_capture_is_masked(make_rig: MakeRig) -> None:
    """Found by the black-box log audit: an ID straddling the document cap kept up to 31 of its
    characters, the part that must be hidden."""
    rig = await make_rig()
    t = await rig.tenant()
    app_id = t.integration["application_id"]
    payload = make_envelope(get_body("2019_2"), [passport_xml("2019_2", t.email, "pw", t.account),
                                                 application_info_xml("2019_2", app_id)])
    for cut in range(1, 32, 5):
        cap = payload.index(app_id.encode()) + cut
        rig.ctx.settings = rig.ctx.settings.replace(log=replace(DEFAULTS.log, max_document_bytes=cap))
        await rig.soap("2019_2", payload, headers={"X-Request-Id": f"id-cut-{cut}"})
        doc = (await logged(rig, f"id-cut-{cut}"))["request_document"]
        tail = doc.rsplit("applicationId>", 1)[1]
        assert set(tail[:28]) <= {"*"}, (cut, doc[-60:])  # the last four may show


async def test_application_ids_are_masked_everywhere_in_the_entry(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    app_id = t.integration["application_id"]
    uuid_form = f"{app_id[:8]}-{app_id[8:12]}-{app_id[12:16]}-{app_id[16:20]}-{app_id[20:]}".lower()
    payload = make_envelope(get_body("2019_2"), [passport_xml("2019_2", t.email, "pw", t.account),
                                                 application_info_xml("2019_2", uuid_form)])
    assert (await rig.soap("2019_2", payload, headers={"X-Request-Id": "masked"})).status == 200
    e = await logged(rig, "masked")
    text = str(e).lower()
    assert app_id.lower() not in text and uuid_form not in text and app_id[:28].lower() not in text
    assert e["application_id"] == "*" * 28 + app_id[-4:]
    assert "*" * 28 + app_id[-4:] in e["request_document"]


# --------------------------------------------------------------------------- secrets


async def dump_everything(url: str) -> bytes:
    """Every byte of every key, whatever its type."""
    r: Redis = Redis.from_url(url)  # type: ignore[type-arg]
    out = bytearray()
    try:
        async for key in r.scan_iter(count=500):
            kind = (await r.type(key)).decode()
            out += key + b"\n"
            if kind == "string":
                out += await r.get(key) or b""
            elif kind == "hash":
                for k, v in (await r.hgetall(key)).items():
                    out += k + b"=" + v + b"\n"
            elif kind == "list":
                out += b"\n".join(await r.lrange(key, 0, -1))
            elif kind == "set":
                out += b"\n".join(await r.smembers(key))
            elif kind == "zset":
                out += b"\n".join(m for m, _ in await r.zrange(key, 0, -1, withscores=True))
            elif kind == "stream":
                for _, fields in await r.xrange(key):
                    out += b"\n".join(k + b"=" + v for k, v in fields.items())
            else:
                raise AssertionError(f"unexpected key type {kind}")
            out += b"\n"
    finally:
        await r.aclose()
    return bytes(out)


async def test_no_password_or_signature_byte_anywhere_in_redis(
        make_rig: MakeRig, fresh_redis: EmbeddedRedis) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    secrets_sent: list[str] = ["s3cret-pw", t.integration["consumer_secret"], t.token["token_secret"]]

    # SOAP: Passport password, a login password, a TBA signature, a password change.
    await rig.soap("2019_2", t.passport("2019_2"))
    login = make_envelope(login_body("2019_2", t.email, "L0gin-Secret", t.account),
                          [application_info_xml("2019_2", t.integration["application_id"])])
    resp = await rig.soap("2019_2", login)
    assert resp.status == 200
    tba = t.tba()
    secrets_sent += ["L0gin-Secret", signature_of(tba)]
    await rig.soap("2024_2", tba)
    change = ('<ns0:changePassword xmlns:ns0="urn:messages_2019_2.platform.webservices.netsuite.com">'
              "<ns0:changePassword><currentPassword>Old-Pass-1</currentPassword>"
              "<newPassword>New-Pass-2</newPassword><newPassword2>New-Pass-2</newPassword2>"
              "</ns0:changePassword></ns0:changePassword>")
    await rig.soap("2019_2", t.passport("2019_2", body=change))
    secrets_sent += ["Old-Pass-1", "New-Pass-2"]

    # RESTlets: NLAuth (the password is the signature) and OAuth 1.0a.
    path = "/app/site/hosting/restlet.nl?script=7&deploy=1"
    url = str(rig.client.make_url(path))
    nlauth = (f"NLAuth nlauth_account={t.account}, nlauth_email={t.email}, "
              f"nlauth_signature=Nl-Secret-3, nlauth_role=3")
    await rig.client.get(path, headers={"Authorization": nlauth, "Cookie": "JSESSIONID=cookie-value-4"})
    client = Client(t.integration["consumer_key"], client_secret=t.integration["consumer_secret"],
                    resource_owner_key=t.token["token_id"], resource_owner_secret=t.token["token_secret"],
                    signature_method=SIGNATURE_HMAC_SHA256, realm=t.account)
    _, signed, _ = client.sign(url, http_method="GET")
    oauth_sig = re.search(r'oauth_signature="([^"]+)"', signed["Authorization"])
    assert oauth_sig is not None
    resp = await rig.client.get(path, headers={"Authorization": signed["Authorization"]})
    assert resp.status == 200, await resp.text()
    secrets_sent += ["Nl-Secret-3", oauth_sig.group(1), "cookie-value-4"]
    await rig.client.post(path, json={"password": "Json-Secret-5"}, headers={"Authorization": nlauth})
    await rig.client.get(path, headers={"Authorization": "Basic YmFzaWMtdXNlcjpCYXNpYy1TZWNyZXQtNg=="})
    secrets_sent += ["Json-Secret-5", "YmFzaWMtdXNlcjpCYXNpYy1TZWNyZXQtNg=="]

    for _ in range(100):
        await rig.flush_logs()
        if rig.writer.depth == 0 and rig.writer.written_total >= 8:
            break
        await asyncio.sleep(0.02)
    assert rig.writer.written_total >= 8
    everything = await dump_everything(fresh_redis.url)
    assert b"request_document" in everything and b"***" in everything  # the log is in there
    for secret in secrets_sent:
        assert secret.encode() not in everything, secret
    from urllib.parse import unquote

    assert unquote(oauth_sig.group(1)).encode() not in everything
    # The full application ID lives in the record itself, never in a log stream.
    streams = await stream_contents(fresh_redis.url)
    assert t.integration["application_id"].encode() not in streams
    assert b"JSESSIONID=***" in streams and b"nlauth_signature=***" in streams


async def stream_contents(url: str) -> bytes:
    r: Redis = Redis.from_url(url)  # type: ignore[type-arg]
    out = bytearray()
    try:
        async for key in r.scan_iter(count=500, _type="stream"):
            for _, fields in await r.xrange(key):
                out += b"".join(fields.values())
    finally:
        await r.aclose()
    return bytes(out)


def test_authorization_schemes_other_than_nlauth_and_oauth_are_not_kept() -> None:
    assert logged_authorization("Basic dXNlcjpwYXNz") == "Basic ***"
    assert logged_authorization("Bearer abc.def") == "Bearer ***"
    assert logged_authorization("nlauth nlauth_signature=x, nlauth_email=a@b.c") == (
        "nlauth nlauth_signature=***, nlauth_email=a@b.c")


# --------------------------------------------------------------------------- Set-Cookie

# What an upstream may set, and how each is logged: one string per header, the value masked
# whatever its shape (nameless, a comma inside), the attributes kept.
SET_COOKIES = {
    "JSESSIONID=Sess-Secret-1; Path=/; HttpOnly": "JSESSIONID=***; Path=/; HttpOnly",
    "NS_ROUTING_VERSION=Route-Secret-2; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Secure":
        "NS_ROUTING_VERSION=***; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Secure",
    "Bare-Secret-3; Path=/": "***; Path=/",
    "=Empty-Name-Secret-4": "***",
    "lb=Lb-Secret-5,Lb-Secret-6; Path=/app": "lb=***; Path=/app",
}


def cookie_setting_backend(*, streamed: bool) -> web.Application:
    """A SOAP answer with every SET_COOKIES header: announced (the relay reads it whole) or
    chunked (the relay streams it)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        headers = CIMultiDict([("Content-Type", "text/xml; charset=utf-8")])
        headers.extend(("Set-Cookie", value) for value in SET_COOKIES)
        body = soap_response("get", "2024_2")
        if not streamed:
            return web.Response(body=body, headers=headers)
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        await response.write(body)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_relayed_set_cookies_are_logged_one_per_header_values_masked(make_rig: MakeRig,
                                                                           streamed: bool) -> None:
    rig = await make_rig(backend_app=cookie_setting_backend(streamed=streamed))
    t = await rig.tenant()
    resp = await rig.soap("2024_2", t.tba(), headers={"X-Request-Id": "set-cookies"})
    assert resp.status == 200 and await resp.read() == soap_response("get", "2024_2")
    assert resp.headers.getall("Set-Cookie") == list(SET_COOKIES)
    e = await logged(rig, "set-cookies")
    assert e["set_cookie"] == list(SET_COOKIES.values())
    text = json.dumps(e)
    secrets_set = re.findall(r"[A-Za-z-]+-Secret-\d", " ".join(SET_COOKIES))
    assert len(secrets_set) == 6
    for secret in secrets_set:
        assert secret not in text, secret


def test_each_logged_set_cookie_is_capped_after_redaction() -> None:
    ex = Exchange(request_id="cap", client_ip="127.0.0.1", doc_cap=1024)
    ex.set_cookies = ["a=" + "s" * 9000 + "; Path=/" + "p" * 9000, "b=2; Path=/"]
    logged_values = ex.log_entry()["set_cookie"]
    assert len(logged_values[0].encode()) == HEADER_CAP and logged_values[0].startswith("a=***; Path=/ppp")
    assert logged_values[1] == "b=***; Path=/"
    ex.set_cookies = [f"c{i}=v" for i in range(100)]
    assert ex.log_entry()["set_cookie"] == [f"c{i}=***" for i in range(16)]  # the first 16 only
    assert redact_cookie("  JSESSIONID = v ; Path=/", set_cookie=True) == "  JSESSIONID =***; Path=/"
    assert redact_cookie("a,=secret; Path=/", set_cookie=True) == "a,=***; Path=/"


# --------------------------------------------------------------------------- client address


async def test_client_ip_is_the_peer_unless_the_peer_is_a_trusted_proxy(make_rig: MakeRig) -> None:
    plain = await make_rig()
    t = await plain.tenant()
    hops = {"X-Forwarded-For": "198.51.100.9, 203.0.113.7, 10.1.2.3"}
    await plain.soap("2019_2", t.passport("2019_2"), headers={"X-Request-Id": "ip-plain"} | hops)
    assert (await logged(plain, "ip-plain"))["client_ip"] == "127.0.0.1"  # XFF of an untrusted peer: ignored

    trusted = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8"))
    behind = await make_rig(trusted_proxies=trusted)
    t = await behind.tenant()
    await behind.soap("2019_2", t.passport("2019_2"), headers={"X-Request-Id": "ip-behind"} | hops)
    assert (await logged(behind, "ip-behind"))["client_ip"] == "203.0.113.7"  # the last hop not trusted
    await behind.soap("2019_2", t.passport("2019_2"), headers={"X-Request-Id": "ip-none"})
    assert (await logged(behind, "ip-none"))["client_ip"] == "127.0.0.1"
