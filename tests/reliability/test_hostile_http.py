"""Bytes no UTF-8 decoder accepts, and other HTTP-level oddities outside the SOAP body, on the
proxy listener: each gets the status it should, the usage log still gets its entry, and
nothing is logged at ERROR (found by a black-box fuzz: each of these was a 500 or a traceback)."""

from __future__ import annotations

import gzip
import logging
import secrets
import zlib

import pytest

from tests.factories import get_body, make_envelope
from tests.reliability.rig import StartGateway, raw_exchange

RESTLET = b"/app/site/hosting/restlet.nl?script=12&deploy=1"


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:100]
    return int(answer[9:12])


def request(method: bytes, target: bytes, *headers: bytes, body: bytes = b"") -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: gw", b"Connection: close", *headers]
    if body:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@pytest.mark.parametrize("authorization", [
    b'OAuth realm="\xff"', b"OAuth oauth_consumer_key=\xfe\xff", b"NLAuth nlauth_account=12\xff34567",
    b"OAuth\xff x=1",
])
@pytest.mark.parametrize("route", ["restlet", "issuetoken"])
async def test_authorization_bytes_that_are_no_utf8_are_401_and_logged(
        start_gateway: StartGateway, caplog: pytest.LogCaptureFixture, authorization: bytes, route: str) -> None:
    gw = await start_gateway()
    rid = f"bad-auth-{secrets.token_hex(4)}"
    method, target = (b"GET", RESTLET) if route == "restlet" else (b"POST", b"/rest/issuetoken")
    answer = await raw_exchange(gw.host, gw.port, request(method, target, b"Authorization: " + authorization,
                                                          b"X-Request-Id: " + rid.encode()))
    assert status_of(answer) == 401 and b'"error"' in answer
    entry = await gw.entry(rid)  # its usage-log entry is written (the header shown as U+FFFD)
    assert entry["http_status"] == 401
    assert errors(caplog) == []


@pytest.mark.parametrize("host", [b"a:xyz", b"[", b"a:99999", b"\xff"])
async def test_a_host_no_signature_uri_can_be_built_from_is_an_invalid_login(
        start_gateway: StartGateway, caplog: pytest.LogCaptureFixture, host: bytes) -> None:
    gw = await start_gateway()
    tenant = await gw.tenant()
    auth = f'OAuth realm="{tenant.account}", oauth_consumer_key="{tenant.integration["consumer_key"]}"'.encode()
    raw = request(b"GET", RESTLET, b"Authorization: " + auth).replace(b"Host: gw", b"Host: " + host)
    assert status_of(await raw_exchange(gw.host, gw.port, raw)) == 401
    assert errors(caplog) == []


async def test_a_session_cookie_that_is_no_utf8_is_an_unknown_session(
        start_gateway: StartGateway, caplog: pytest.LogCaptureFixture) -> None:
    gw = await start_gateway()
    body = make_envelope(get_body("2019_2"))
    answer = await raw_exchange(gw.host, gw.port, request(
        b"POST", b"/services/NetSuitePort_2019_2", b"Content-Type: text/xml", b"Cookie: JSESSIONID=\xff\xfe",
        b"X-Request-Id: bad-cookie", body=body))
    assert status_of(answer) == 500 and b"<soapenv:Fault>" in answer
    assert (await gw.entry("bad-cookie"))["reason"] == "invalid_session"
    assert errors(caplog) == []


@pytest.mark.parametrize("target", [b"/services/NetSuitePort_2019_2", RESTLET, b"/nowhere"])
async def test_an_expect_value_that_is_no_utf8_is_417(
        start_gateway: StartGateway, caplog: pytest.LogCaptureFixture, target: bytes) -> None:
    gw = await start_gateway()
    answer = await raw_exchange(gw.host, gw.port, request(b"POST", target, b"Expect: 100-continue\xff",
                                                          b"Content-Length: 0"))
    assert status_of(answer) == 417
    assert errors(caplog) == []


async def test_a_broken_gzip_body_is_a_soap_fault_without_a_traceback(
        start_gateway: StartGateway, caplog: pytest.LogCaptureFixture) -> None:
    gw = await start_gateway()
    answer = await raw_exchange(gw.host, gw.port, request(
        b"POST", b"/services/NetSuitePort_2019_2", b"Content-Type: text/xml", b"Content-Encoding: gzip",
        b"X-Request-Id: bad-gzip", body=b"notgzip"))
    assert status_of(answer) == 500 and b"USER_ERROR" in answer  # malformed_request: content coding
    assert (await gw.entry("bad-gzip"))["sub_reason"] == "content_encoding"
    assert errors(caplog) == []


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_a_restlet_body_goes_upstream_as_it_came(start_gateway: StartGateway, coding: str) -> None:
    # Inflated by aiohttp's parser, it used to go upstream still labelled gzip: not the client's bytes.
    gw = await start_gateway()
    tenant = await gw.tenant()
    raw = b'{"order": 42}' * 100
    body = gzip.compress(raw) if coding == "gzip" else zlib.compress(raw)
    answer = await raw_exchange(gw.host, gw.port, request(
        b"POST", RESTLET, f"Authorization: NLAuth nlauth_account={tenant.account}, nlauth_email=a@b.c, "
        "nlauth_signature=pw, nlauth_role=3".encode(), b"Content-Type: application/json",
        f"Content-Encoding: {coding}".encode(), body=body))
    status_of(answer)  # the sample backend answers 400 to a coded body; what it received is the point
    assert gw.backend is not None
    got = gw.backend.received[-1]  # aiohttp there inflates it: the client's compressed bytes arrived
    assert got.headers["Content-Encoding"] == coding and got.headers["Content-Length"] == str(len(body))
    assert got.body_len == len(raw)


@pytest.mark.parametrize("fields", [[b"identity", b"gzip"], [b"identity, deflate"]])
async def test_every_content_encoding_field_is_judged(start_gateway: StartGateway, fields: list[bytes],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    # A second field used to pass unjudged: the upstream got a plain envelope labelled gzip.
    gw = await start_gateway()
    tenant = await gw.tenant()
    answer = await raw_exchange(gw.host, gw.port, request(
        b"POST", b"/services/NetSuitePort_2024_2", b"Content-Type: text/xml",
        *(b"Content-Encoding: " + f for f in fields), body=tenant.tba()))
    assert status_of(answer) == 500 and b"USER_ERROR" in answer
    assert gw.backend is not None and gw.backend.received == []
    assert errors(caplog) == []


async def test_answers_below_the_rules_are_logged_and_counted(start_gateway: StartGateway) -> None:
    """SPEC 6: one entry per request. Found by the black-box log audit: 404s, 405s, a head the
    HTTP parser refused and one that never completed had an X-Request-Id and nothing else (the
    408 also ignored the client's complete X-Request-Id line)."""
    gw = await start_gateway(limits={"header_read_timeout_seconds": 0.3})
    cases = [
        (request(b"GET", b"/services/NetSuitePort_2024_2", b"X-Request-Id: below-405"), 405, "method_not_allowed"),
        (request(b"GET", b"/rest/issuetoken", b"X-Request-Id: below-405-it"), 405, "method_not_allowed"),
        (request(b"GET", b"/nowhere", b"X-Request-Id: below-404"), 404, "not_found"),
        (request(b"POST", b"/services/NetSuitePort_2024", b"X-Request-Id: below-404-v"), 404, "not_found"),
        (request(b"POST", b"/services/NetSuitePort_2024_2", b"X-Request-Id: below-400",
                 b"Content-Length: 5", b"Transfer-Encoding: chunked"), 400, "bad_http_request"),
        # a head that stalls after a complete X-Request-Id line: that id, not a new one
        (b"POST /services/NetSuitePort_2024_2 HTTP/1.1\r\nX-Request-Id: below-408\r\nHost: gw", 408,
         "header_read_timeout"),
    ]
    for raw, status, reason in cases:
        rid = raw.split(b"X-Request-Id: ")[1].split(b"\r\n")[0].decode()
        answer = await raw_exchange(gw.host, gw.port, raw)
        assert int(answer[9:12]) == status and f"X-Request-Id: {rid}".encode() in answer, answer[:200]
        entry = await gw.entry(rid)
        assert (entry["outcome"], entry["reason"], entry["http_status"]) == ("rejected", reason, status)
        assert entry["client_ip"] == "127.0.0.1"
    counted = sum(s.value for m in gw.metrics.registry.collect() for s in m.samples
                  if s.name == "gateway_requests_total" and s.labels["outcome"] == "rejected")
    assert counted == len(cases)
