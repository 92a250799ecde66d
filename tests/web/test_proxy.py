"""The proxy end to end, in-process: real Redis, real upstream socket, real store and log."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from gateway.config import load_settings
from tests.factories import (
    application_info_xml,
    big_body,
    get_body,
    get_data_center_urls_body,
    login_body,
    logout_body,
    make_envelope,
)
from tests.web.conftest import MakeRig, fault_code


async def chunks(data: bytes, size: int = 65536, pause: float = 0.0) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]
        if pause:
            await asyncio.sleep(pause)


async def test_tba_request_is_forwarded_byte_for_byte_with_identity(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    payload = t.tba("2024_2")
    resp = await rig.soap("2024_2", payload, headers={"X-Gateway-User": "forged", "SOAPAction": '"get"',
                                                       "Cookie": "other=1"})
    assert resp.status == 200, await resp.text()
    assert resp.headers["X-Request-Id"]
    [got] = rig.backend.received
    assert got.body_sha256 == hashlib.sha256(payload).hexdigest() and got.complete
    assert got.headers["X-Gateway-Account"] == t.account
    assert got.headers["X-Gateway-Integration"] == t.integration["id"]
    assert got.headers["X-Gateway-Auth-Method"] == "token_based"
    assert got.headers["X-Gateway-User"] == "jane@example.com"
    assert got.headers["SOAPAction"] == '"get"' and got.headers["Cookie"] == "other=1"
    assert got.headers["X-Forwarded-For"] == "127.0.0.1"


async def test_twenty_megabytes_stream_through_unchanged(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    payload = t.tba("2024_2", body=big_body("2024_2", "text", 20 << 20))
    resp = await rig.soap("2024_2", chunks(payload))
    assert resp.status == 200, await resp.text()
    [got] = rig.backend.received
    assert got.body_len == len(payload) and got.body_sha256 == hashlib.sha256(payload).hexdigest()


async def test_violation_after_the_head_never_reaches_upstream_complete(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    good = t.tba("2024_2", body=big_body("2024_2", "dense", 5 << 20))
    # A second Body after the first: the head is fine, the envelope is not.
    bad = good.replace(b"</soapenv:Envelope>", b"<soapenv:Body><x/></soapenv:Body></soapenv:Envelope>")
    resp = await rig.soap("2024_2", chunks(bad))
    assert resp.status == 500 and await fault_code(resp) == "USER_ERROR"
    assert all(not r.complete for r in rig.backend.received)


async def test_truncated_stream_is_refused_and_upstream_sees_it_incomplete(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    payload = t.tba("2024_2", body=big_body("2024_2", "text", 2 << 20))
    resp = await rig.soap("2024_2", chunks(payload[:-30]))
    assert resp.status == 500
    assert all(not r.complete for r in rig.backend.received)


async def test_passport_on_2020_2_is_refused_without_touching_upstream(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    resp = await rig.soap("2020_2", t.passport("2020_2"))
    assert resp.status == 500 and await fault_code(resp) == "USER_ERROR"
    assert "urn:faults_2020_2" in await resp.text()
    assert rig.backend.received == []


async def test_replayed_nonce_is_refused(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    payload = t.tba("2024_2", nonce="replayNonce1234")
    assert (await rig.soap("2024_2", payload)).status == 200
    again = await rig.soap("2024_2", payload)
    assert again.status == 500 and await fault_code(again) == "INVALID_LOGIN_ATTEMPT"
    assert len(rig.backend.received) == 1


async def test_blocked_integration_and_unblock(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    await rig.store.registry.update_integration(t.account, t.integration["id"], {"state": "blocked"}, "test")
    resp = await rig.soap("2024_2", t.tba())
    assert await fault_code(resp) == "WS_REQUEST_BLOCKED"
    await rig.store.registry.update_integration(t.account, t.integration["id"], {"state": "enabled"}, "test")
    assert (await rig.soap("2024_2", t.tba())).status == 200


async def test_get_data_center_urls_needs_no_credentials_and_drops_the_session_cookie(make_rig: MakeRig) -> None:
    rig = await make_rig()
    payload = make_envelope(get_data_center_urls_body("2024_2", "1234567"))
    resp = await rig.soap("2024_2", payload, headers={"Cookie": "JSESSIONID=abc; lb=7"})
    assert resp.status == 200
    assert rig.backend.received[0].headers["Cookie"] == "lb=7"
    assert rig.backend.received[0].headers["X-Gateway-Integration"] == "none"


async def test_login_opens_a_session_that_later_requests_ride(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    app_info = application_info_xml("2019_2", t.integration["application_id"])
    login = make_envelope(login_body("2019_2", t.email, "pw", t.account), [app_info])
    resp = await rig.soap("2019_2", login)
    assert resp.status == 200
    session_id = resp.cookies["JSESSIONID"].value
    bare = make_envelope(get_body("2019_2"))
    ride = await rig.soap("2019_2", bare, headers={"Cookie": f"JSESSIONID={session_id}"})
    assert ride.status == 200, await ride.text()
    assert rig.backend.received[-1].headers["X-Gateway-Auth-Method"] == "session"
    assert rig.backend.received[-1].headers["Cookie"] == f"JSESSIONID={session_id}"
    out = await rig.soap("2019_2", make_envelope(logout_body("2019_2")), headers={"Cookie": f"JSESSIONID={session_id}"})
    assert out.status == 200
    for _ in range(50):  # the session closes off the request path
        if await rig.store.get_session(session_id) is None:
            break
        await asyncio.sleep(0.02)
    after = await rig.soap("2019_2", bare, headers={"Cookie": f"JSESSIONID={session_id}"})
    assert await fault_code(after) == "INVALID_SESSION"


async def test_failed_login_opens_no_session(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    app_info = application_info_xml("2019_2", t.integration["application_id"])
    resp = await rig.soap("2019_2", make_envelope(login_body("2019_2", t.email, "bad-pw", t.account), [app_info]))
    assert resp.status == 200 and "JSESSIONID" not in resp.cookies
    ride = await rig.soap("2019_2", make_envelope(get_body("2019_2")), headers={"Cookie": "JSESSIONID=guess"})
    assert await fault_code(ride) == "INVALID_SESSION"


async def test_upstream_refused_is_502_and_slow_is_504(make_rig: MakeRig, aiohttp_server: Any) -> None:
    rig = await make_rig(upstream="http://127.0.0.1:9")
    t = await rig.tenant()
    resp = await rig.soap("2024_2", t.tba())
    assert resp.status == 502 and await fault_code(resp) == "UNEXPECTED_ERROR"

    async def slow(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(5)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_post("/{tail:.*}", slow)
    server = await aiohttp_server(app)
    limits = replace(load_settings(environ={}).limits, upstream_response_timeout_seconds=0.3)
    rig = await make_rig(upstream=str(server.make_url("")).rstrip("/"), limits=limits)
    t = await rig.tenant()
    resp = await rig.soap("2024_2", t.tba())
    assert resp.status == 504 and await fault_code(resp) == "UNEXPECTED_ERROR"


async def test_routes_methods_and_framing(make_rig: MakeRig) -> None:
    rig = await make_rig()
    r = await rig.client.get("/nowhere", headers={"X-Request-Id": "mine-404"})
    assert r.status == 404 and r.headers["X-Request-Id"] == "mine-404"
    r = await rig.client.get("/services/NetSuitePort_2024_2")
    assert r.status == 405 and r.headers["Allow"] == "POST" and r.headers["X-Request-Id"]
    t = await rig.tenant()
    r = await rig.soap("2024_2", t.tba(), headers={"Content-Type": "application/soap+xml"})
    assert await fault_code(r) == "USER_ERROR" and r.status == 500
    # Two SOAPAction fields: only one could be checked, and a backend may act on the other
    # (found by the rules audit: a second one went upstream unchecked).
    for actions in (["get", "search"], ["", "search"], ["search", "get"]):
        r = await rig.client.post("/services/NetSuitePort_2024_2", data=t.tba(), headers=CIMultiDict(
            [("Content-Type", "text/xml"), *(("SOAPAction", a) for a in actions)]))
        assert r.status == 500 and await fault_code(r) == "USER_ERROR", actions
    for codings in (["identity", "x-custom"], ["identity, x-custom"]):  # every field, every coding (gzip: reliability)
        fields = CIMultiDict([("Content-Type", "text/xml; charset=utf-8")] + [("Content-Encoding", c) for c in codings])
        r = await rig.client.post("/services/NetSuitePort_2024_2", data=t.tba(), headers=fields)
        assert await fault_code(r) == "USER_ERROR", codings
    r = await rig.soap("2024_2", t.tba(), headers={"Content-Encoding": "gzip"})
    assert await fault_code(r) == "USER_ERROR"
    assert rig.backend.received == []


async def test_body_over_the_limit_is_413(make_rig: MakeRig) -> None:
    limits = replace(load_settings(environ={}).limits, max_body_bytes=100_000)
    rig = await make_rig(limits=limits)
    t = await rig.tenant()
    payload = t.tba(body=big_body("2024_2", "text", 300_000))
    r = await rig.soap("2024_2", payload)
    assert r.status == 413 and await fault_code(r) == "USER_ERROR"
    r = await rig.soap("2024_2", chunks(payload, 8192))  # chunked: no Content-Length to refuse early
    assert r.status == 413
    assert all(not x.complete for x in rig.backend.received)


async def test_log_entries_are_written_and_redacted(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    ok = await rig.soap("2019_2", t.passport("2019_2"), headers={"X-Request-Id": "log-test-1"})
    assert ok.status == 200
    refused = await rig.soap("2020_2", t.passport("2020_2"), headers={"X-Request-Id": "log-test-2"})
    assert refused.status == 500
    await rig.flush_logs()
    found = await rig.store.logs.find("log-test-1")
    assert found is not None
    entry = found[1]
    assert entry["outcome"] == "forwarded" and entry["auth_method"] == "user_credentials"
    assert entry["integration_id"] == t.integration["id"] and entry["endpoint_version"] == "2019_2"
    assert "s3cret-pw" not in str(entry) and "***" in entry["request_document"]
    assert entry["application_id"].endswith(t.integration["application_id"][-4:])
    assert t.integration["application_id"] not in str(entry)
    found = await rig.store.logs.find("log-test-2")
    assert found is not None
    assert found[1]["reason"] == "passport_unsupported" and found[1]["outcome"] == "rejected"


async def test_metrics_count_by_integration_and_reason(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    await rig.soap("2024_2", t.tba())
    await rig.soap("2020_2", t.passport("2020_2"))
    m = rig.ctx.metrics.registry
    for _ in range(100):  # recorded as the handler returns, which may be just after the client read
        if m.get_sample_value("gateway_request_duration_seconds_count",
                              {"integration": t.integration["id"], "outcome": "rejected"}):
            break
        await asyncio.sleep(0.01)
    assert m.get_sample_value("gateway_requests_total", {
        "integration": t.integration["id"], "operation": "get", "outcome": "forwarded", "reason": "none",
        "endpoint_version": "2024_2", "auth_method": "token_based"}) == 1.0
    assert m.get_sample_value("gateway_requests_total", {
        "integration": t.integration["id"], "operation": "get", "outcome": "rejected",
        "reason": "passport_unsupported", "endpoint_version": "2020_2", "auth_method": "user_credentials"}) == 1.0


async def test_identity_signature_reaches_the_upstream(make_rig: MakeRig) -> None:
    import hashlib as _hashlib
    import hmac as _hmac

    rig = await make_rig(upstream_identity_key="shared-k3y")
    t = await rig.tenant()
    resp = await rig.soap("2024_2", t.tba(), headers={"X-Request-Id": "sig-1", "X-Gateway-Signature": "forged"})
    assert resp.status == 200
    got = rig.backend.received[-1].headers
    stamp, _, digest = got["X-Gateway-Signature"].partition(",v1=")
    message = ".".join([stamp.removeprefix("t="), "sig-1", t.account, t.integration["id"], "token_based",
                        "jane@example.com", "3"])
    assert digest == _hmac.new(b"shared-k3y", message.encode(), _hashlib.sha256).hexdigest()


async def test_auto_register_admits_an_unknown_account(make_rig: MakeRig) -> None:
    from tests.factories import passport_xml

    rig = await make_rig(auto_register=True)
    account = "8" + str(int.from_bytes(__import__("os").urandom(3), "big")).zfill(7)[:6]
    # 2015.1, user credentials, no application ID: the new account's Default record decides (R8).
    payload = make_envelope(get_body("2015_1"), [passport_xml("2015_1", "a@example.com", "pw", account)])
    resp = await rig.soap("2015_1", payload)
    assert resp.status == 200, await resp.text()
    assert await rig.store.get_account(account) is not None
    assert rig.backend.received[-1].headers["X-Gateway-Integration"] == "default"
    # An id the registry refuses is no account to register: invalid_account (R7), not a 500
    # (found by the rules audit).
    for bad in ("abc def", "a/b", "1234567:1"):
        payload = make_envelope(get_body("2015_1"), [passport_xml("2015_1", "a@example.com", "pw", bad)])
        resp = await rig.soap("2015_1", payload)
        assert (resp.status, await fault_code(resp)) == (500, "INVALID_ACCT"), bad
        assert 'urn:faults_2015_1' in await resp.text()


async def test_a_body_that_stalls_after_the_head_gets_408_and_never_completes_upstream(make_rig: MakeRig) -> None:
    limits = replace(load_settings(environ={}).limits, body_read_timeout_seconds=0.3)
    rig = await make_rig(limits=limits)
    t = await rig.tenant()
    payload = t.tba(body=big_body("2024_2", "text", 200_000))
    server = rig.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"POST /services/NetSuitePort_2024_2 HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
                 + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload[:100_000])
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)  # to EOF: the gateway closes at once
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408") and b"X-Request-Id" in answer
    assert all(not r.complete for r in rig.backend.received)
