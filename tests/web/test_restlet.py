"""RESTlets (SPEC section 3) through the proxy, signed by real OAuth 1.0a clients: oauthlib's
`Client` and requests-oauthlib's `OAuth1` (a prepared request's header; no network)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
import requests
from aiohttp import web
from multidict import CIMultiDict
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA1, SIGNATURE_HMAC_SHA256, Client
from requests_oauthlib import OAuth1

from gateway.config import load_settings
from gateway.store import keyspace as ks
from gateway.store.logstore import LogQuery
from tests.factories import get_body, make_envelope, token_passport_xml
from tests.web.conftest import MakeRig, Rig, Tenant, logged

PATH = "/app/site/hosting/restlet.nl"
QUERY = "?script=12&deploy=1"


def oauth_header(t: Tenant, url: str, method: str = "GET", *, body: str | None = None,
                 realm: str | None = None, **client_kw: Any) -> str:
    """oauthlib's own signer (realm = account, HMAC-SHA256 unless told)."""
    kw: dict[str, Any] = {"signature_method": SIGNATURE_HMAC_SHA256} | client_kw
    client = Client(kw.pop("client_key", t.integration["consumer_key"]),
                    client_secret=kw.pop("client_secret", t.integration["consumer_secret"]),
                    resource_owner_key=kw.pop("resource_owner_key", t.token["token_id"]),
                    resource_owner_secret=kw.pop("resource_owner_secret", t.token["token_secret"]),
                    realm=realm or t.account, **kw)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    _, signed, _ = client.sign(url, http_method=method, body=body, headers=headers)
    return str(signed["Authorization"])


def text(value: str | bytes) -> str:
    """requests-oauthlib leaves some prepared header values as bytes."""
    return value.decode() if isinstance(value, bytes) else value


def url_of(rig: Rig, query: str = QUERY) -> str:
    return str(rig.client.make_url(PATH + query))


async def json_error(resp: Any) -> str:
    data = json.loads(await resp.text())
    assert set(data) == {"error"} and set(data["error"]) == {"code", "message"}
    assert resp.headers["Content-Type"].startswith("application/json")
    return str(data["error"]["code"])


async def refused(rig: Rig, status: int, code: str, *, method: str = "GET", query: str = QUERY,
                  headers: Any = None, data: Any = None) -> dict[str, Any]:
    rid = "rl-" + secrets.token_hex(8)
    hdrs = CIMultiDict(headers or {})
    hdrs["X-Request-Id"] = rid
    before = len(rig.backend.received)
    resp = await rig.client.request(method, PATH + query, headers=hdrs, data=data)
    assert resp.status == status, await resp.text()
    assert await json_error(resp) == code
    assert len(rig.backend.received) == before
    return await logged(rig, rid)


async def test_oauthlib_signed_get_is_forwarded(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    auth = oauth_header(t, url_of(rig))
    resp = await rig.client.get(PATH + QUERY, headers={"Authorization": auth, "X-Request-Id": "rl-get-1"})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["method"] == "GET"
    got = rig.backend.received[-1]
    assert got.path == PATH + QUERY and got.headers["Authorization"] == auth
    assert got.headers["X-Gateway-Auth-Method"] == "oauth1"
    assert got.headers["X-Gateway-Account"] == t.account
    assert got.headers["X-Gateway-Integration"] == t.integration["id"]
    assert got.headers["X-Gateway-User"] == "jane@example.com" and got.headers["X-Gateway-Role"] == "3"
    entry = await logged(rig, "rl-get-1")
    assert entry["outcome"] == "forwarded" and entry["auth_method"] == "oauth1"
    assert entry["operation"] == "restlet" and entry["integration_id"] == t.integration["id"]
    sig = auth.split('oauth_signature="')[1].split('"')[0]
    assert sig not in str(entry)


async def test_a_session_cookie_never_reaches_the_backend_and_cookie_fields_join_with_semicolons(
        make_rig: MakeRig) -> None:
    # SPEC 2: a JSESSIONID goes upstream only with a request attributed by that session
    rig = await make_rig()
    t = await rig.tenant()
    for cookies, expected in ((["JSESSIONID=ABC123; other=1"], "other=1"), (["a=1", "JSESSIONID=X", "b=2"], "a=1; b=2"),
                              (["JSESSIONID=only"], None)):
        hdrs = CIMultiDict([("Authorization", oauth_header(t, url_of(rig)))] + [("Cookie", c) for c in cookies])
        resp = await rig.client.get(PATH + QUERY, headers=hdrs)
        assert resp.status == 200, await resp.text()
        assert rig.backend.received[-1].headers.get("Cookie") == expected, cookies


async def test_a_restlets_set_cookies_are_logged_with_their_values_masked(make_rig: MakeRig) -> None:
    secret = "Rl-Secret-" + secrets.token_hex(8)
    cookies = [f"JSESSIONID={secret}; Path=/; Secure; HttpOnly", f"NS_ROUTING_VERSION=Route-{secret}; Path=/app"]

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ok": True}, headers=CIMultiDict(("Set-Cookie", c) for c in cookies))

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    rig = await make_rig(backend_app=app)
    t = await rig.tenant()
    resp = await rig.client.get(PATH + QUERY, headers={"Authorization": oauth_header(t, url_of(rig)),
                                                       "X-Request-Id": "rl-set-cookie"})
    assert resp.status == 200, await resp.text()
    assert resp.headers.getall("Set-Cookie") == cookies
    entry = await logged(rig, "rl-set-cookie")
    assert entry["set_cookie"] == ["JSESSIONID=***; Path=/; Secure; HttpOnly", "NS_ROUTING_VERSION=***; Path=/app"]
    assert secret not in json.dumps(entry)


async def test_requests_oauthlib_signed_post_with_json_is_forwarded(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    payload = {"customer": 42, "lines": [1, 2, 3], "note": "ünïcode"}
    oauth = OAuth1(t.integration["consumer_key"], client_secret=t.integration["consumer_secret"],
                   resource_owner_key=t.token["token_id"], resource_owner_secret=t.token["token_secret"],
                   signature_method=SIGNATURE_HMAC_SHA256, realm=t.account)
    prepared = requests.Request("POST", url_of(rig), json=payload, auth=oauth).prepare()
    headers = {k: text(prepared.headers[k]) for k in ("Authorization", "Content-Type")}
    body = prepared.body if isinstance(prepared.body, bytes) else str(prepared.body).encode()
    resp = await rig.client.post(PATH + QUERY, data=body, headers=headers)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["method"] == "POST"
    got = rig.backend.received[-1]
    assert got.body_sha256 == hashlib.sha256(body).hexdigest()
    assert got.headers["X-Gateway-Auth-Method"] == "oauth1"


def form_request(t: Tenant, url: str, form: dict[str, str]) -> tuple[dict[str, str], bytes]:
    """requests-oauthlib signs a form-encoded body's parameters (RFC 5849 3.4.1.3.1)."""
    oauth = OAuth1(t.integration["consumer_key"], client_secret=t.integration["consumer_secret"],
                   resource_owner_key=t.token["token_id"], resource_owner_secret=t.token["token_secret"],
                   signature_method=SIGNATURE_HMAC_SHA256, realm=t.account)
    prepared = requests.Request("POST", url, data=form, auth=oauth).prepare()
    assert text(prepared.headers["Content-Type"]) == "application/x-www-form-urlencoded"
    headers = {k: text(prepared.headers[k]) for k in ("Authorization", "Content-Type")}
    return headers, prepared.body if isinstance(prepared.body, bytes) else str(prepared.body).encode()


async def test_a_signed_form_body_is_verified_with_its_parameters_and_forwarded(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    headers, body = form_request(t, url_of(rig), {"customer": "42", "note": "a b&c=d ü", "empty": ""})
    resp = await rig.client.post(PATH + QUERY, data=body, headers=headers)
    assert resp.status == 200, await resp.text()
    assert rig.backend.received[-1].body_sha256 == hashlib.sha256(body).hexdigest()  # the bytes, unchanged

    # The same signature over another body: the parameters are signed, so it fails.
    headers, body = form_request(t, url_of(rig), {"customer": "42"})
    tampered = body.replace(b"42", b"43")
    entry = await refused(rig, 401, "INVALID_LOGIN_ATTEMPT", method="POST", headers=headers, data=tampered)
    assert entry["sub_reason"] == "signature_invalid"


async def test_a_form_body_over_the_head_limit_is_413(make_rig: MakeRig) -> None:
    """A form body is read before the decision (its parameters are signed): up to
    limits.max_head_bytes, like a SOAP head."""
    rig = await make_rig(limits=replace(load_settings(environ={}).limits, max_head_bytes=4096))
    t = await rig.tenant()
    headers, body = form_request(t, url_of(rig), {"blob": "x" * 5000})
    before = len(rig.backend.received)
    resp = await rig.client.post(PATH + QUERY, data=body, headers=headers)
    assert resp.status == 413 and await json_error(resp) == "USER_ERROR"
    assert len(rig.backend.received) == before
    headers, body = form_request(t, url_of(rig), {"blob": "x" * 3000})
    assert (await rig.client.post(PATH + QUERY, data=body, headers=headers)).status == 200


@pytest.mark.parametrize("content_type", ["application/json", "application/x-www-form-urlencoded"])
async def test_a_restlet_body_that_stalls_gets_408_and_never_completes_upstream(
        make_rig: MakeRig, content_type: str) -> None:
    """limits.body_read_timeout_seconds holds for RESTlet bodies too, streamed (JSON) or read
    before the decision (form)."""
    rig = await make_rig(limits=replace(load_settings(environ={}).limits, body_read_timeout_seconds=0.3))
    t = await rig.tenant()
    auth = oauth_header(t, "http://x" + PATH + QUERY, "POST")
    server = rig.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(f"POST {PATH + QUERY} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
                 f"Content-Type: {content_type}\r\nContent-Length: 1000\r\n\r\n".encode() + b"a=" + b"1" * 98)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)  # to EOF: the gateway closes at once
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408") and b"X-Request-Id" in answer
    assert all(not r.complete for r in rig.backend.received)
    assert (await rig.client.get(PATH + QUERY, headers={"Authorization": oauth_header(t, url_of(rig))})).status == 200


async def test_oauthlib_signed_post_with_a_body_hash_is_forwarded(make_rig: MakeRig) -> None:
    """oauthlib adds `oauth_body_hash` for non-form bodies: it is one more signed parameter."""
    rig = await make_rig()
    t = await rig.tenant()
    body = json.dumps({"id": 7})
    auth = oauth_header(t, url_of(rig), "POST", body=body)
    assert "oauth_body_hash" in auth
    resp = await rig.client.post(PATH + QUERY, data=body, headers={
        "Authorization": auth, "Content-Type": "application/json"})
    assert resp.status == 200, await resp.text()


async def test_requests_oauthlib_get_with_lowercase_scheme(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    oauth = OAuth1(t.integration["consumer_key"], client_secret=t.integration["consumer_secret"],
                   resource_owner_key=t.token["token_id"], resource_owner_secret=t.token["token_secret"],
                   signature_method=SIGNATURE_HMAC_SHA256, realm=t.account)
    prepared = requests.Request("GET", url_of(rig, "?script=12&deploy=1&q=a+b%2Fc"), auth=oauth).prepare()
    auth = text(prepared.headers["Authorization"]).replace("OAuth ", "oauth ", 1)
    resp = await rig.client.get(PATH + "?script=12&deploy=1&q=a+b%2Fc", headers={"Authorization": auth})
    assert resp.status == 200, await resp.text()


async def test_authorization_headers_none_or_several_are_401(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    auth = oauth_header(t, url_of(rig))
    entry = await refused(rig, 401, "WS_LOG_IN_REQD")
    assert entry["reason"] == "credentials_required"
    two = CIMultiDict([("Authorization", auth), ("Authorization", auth)])
    await refused(rig, 401, "WS_LOG_IN_REQD", headers=two)
    await refused(rig, 401, "WS_LOG_IN_REQD", headers={"Authorization": "Basic dXNlcjpwdw=="})


async def test_bad_signatures_are_401_invalid_login(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    wrong = oauth_header(t, url_of(rig), resource_owner_secret="0" * 64)
    entry = await refused(rig, 401, "INVALID_LOGIN_ATTEMPT", headers={"Authorization": wrong})
    assert (entry["reason"], entry["sub_reason"]) == ("invalid_login", "signature_invalid")
    # Signed for deploy=1, sent with deploy=2; signed as GET, sent as POST.
    signed = oauth_header(t, url_of(rig))
    entry = await refused(rig, 401, "INVALID_LOGIN_ATTEMPT", headers={"Authorization": signed},
                          query="?script=12&deploy=2")
    assert entry["sub_reason"] == "signature_invalid"
    entry = await refused(rig, 401, "INVALID_LOGIN_ATTEMPT", method="POST", headers={"Authorization": signed})
    assert entry["sub_reason"] == "signature_invalid"


@pytest.mark.parametrize(
    ("client_kw", "sub_reason"),
    [
        ({"signature_method": SIGNATURE_HMAC_SHA1}, "algorithm_refused"),
        ({"timestamp": str(int(time.time()) - 400)}, "timestamp_refused"),
        ({"nonce": "short"}, "nonce_rejected"),
        ({"client_key": "f" * 64}, "consumer_key_unknown"),
        ({"resource_owner_key": "e" * 64}, "token_unknown"),
    ],
)
async def test_every_sub_reason_is_a_401(make_rig: MakeRig, client_kw: dict[str, str], sub_reason: str) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    auth = oauth_header(t, url_of(rig), **client_kw)
    entry = await refused(rig, 401, "INVALID_LOGIN_ATTEMPT", headers={"Authorization": auth})
    assert entry["sub_reason"] == sub_reason and entry["auth_method"] == "oauth1"


async def test_unknown_account_is_401_invalid_acct(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    auth = oauth_header(t, url_of(rig), realm="55555NOSUCH")
    entry = await refused(rig, 401, "INVALID_ACCT", headers={"Authorization": auth})
    assert entry["reason"] == "invalid_account"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"state": "blocked"}, "WS_REQUEST_BLOCKED"),
        ({"state": "waiting_for_approval"}, "WS_REQUEST_BLOCKED"),
        ({"auth": {"token_based": False}}, "INVALID_LOGIN_ATTEMPT"),
    ],
)
async def test_blocked_waiting_not_permitted_are_403(make_rig: MakeRig, change: dict[str, Any], code: str) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    await rig.store.registry.update_integration(t.account, t.integration["id"], change, "test")
    entry = await refused(rig, 403, code, headers={"Authorization": oauth_header(t, url_of(rig))})
    assert entry["integration_id"] == t.integration["id"]


async def test_wrong_signature_on_a_blocked_record_is_401(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    await rig.store.registry.update_integration(t.account, t.integration["id"], {"state": "blocked"}, "test")
    auth = oauth_header(t, url_of(rig), resource_owner_secret="0" * 64)
    entry = await refused(rig, 401, "INVALID_LOGIN_ATTEMPT", headers={"Authorization": auth})
    assert entry["sub_reason"] == "signature_invalid"


@pytest.mark.parametrize("soap_first", [True, False])
async def test_nonce_is_shared_between_tba_and_restlets(make_rig: MakeRig, soap_first: bool) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    nonce, now = "sharedAcross" + secrets.token_hex(4), str(int(time.time()))
    soap = make_envelope(get_body("2024_2"), [token_passport_xml(
        "2024_2", t.account, t.integration["consumer_key"], t.integration["consumer_secret"],
        t.token["token_id"], t.token["token_secret"], nonce=nonce, timestamp=now)])
    auth = oauth_header(t, url_of(rig), nonce=nonce, timestamp=now)
    if soap_first:
        assert (await rig.soap("2024_2", soap)).status == 200
        entry = await refused(rig, 401, "INVALID_LOGIN_ATTEMPT", headers={"Authorization": auth})
        assert entry["sub_reason"] == "nonce_used"
    else:
        assert (await rig.client.get(PATH + QUERY, headers={"Authorization": auth})).status == 200
        resp = await rig.soap("2024_2", soap)
        assert resp.status == 500 and "INVALID_LOGIN_ATTEMPT" in await resp.text()
    assert len(rig.backend.received) == 1


async def test_replayed_restlet_request_is_refused(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    auth = oauth_header(t, url_of(rig))
    assert (await rig.client.get(PATH + QUERY, headers={"Authorization": auth})).status == 200
    entry = await refused(rig, 401, "INVALID_LOGIN_ATTEMPT", headers={"Authorization": auth})
    assert entry["sub_reason"] == "nonce_used"


def nlauth(account: str, email: str = "joe@example.com", role: str = "3") -> str:
    return (f'NLAuth nlauth_account={account}, nlauth_email={email}, nlauth_signature=Pa55w0rd!, '
            f'nlauth_role={role}, nlauth_application_id=00000000-0000-0000-0000-000000000000')


async def test_nlauth_is_forwarded_unattributed_even_when_the_record_is_blocked(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    await rig.store.registry.update_integration(t.account, t.integration["id"], {"state": "blocked"}, "test")
    header = nlauth(t.account)
    resp = await rig.client.post(PATH + QUERY, json={"a": 1},
                                 headers={"Authorization": header, "X-Request-Id": "rl-nl-1"})
    assert resp.status == 200, await resp.text()
    got = rig.backend.received[-1].headers
    assert got["Authorization"] == header
    assert got["X-Gateway-Auth-Method"] == "nlauth" and got["X-Gateway-Integration"] == "none"
    assert got["X-Gateway-User"] == "joe@example.com"
    entry = await logged(rig, "rl-nl-1")
    assert entry["auth_method"] == "nlauth" and entry["integration_id"] == "none"
    assert entry["account"] == t.account and entry["outcome"] == "forwarded"
    assert "Pa55w0rd!" not in json.dumps(entry)
    # Only in the usage log: the record's execution log does not hold it.
    entries, _ = await rig.store.logs.query(ks.execution_log(t.account, t.integration["id"]), LogQuery())
    assert all(e.get("request_id") != "rl-nl-1" for e in entries)
    usage, _ = await rig.store.logs.query(ks.usage_log(t.account), LogQuery())
    assert any(e.get("request_id") == "rl-nl-1" for e in usage)


async def test_nlauth_unknown_account_is_401(make_rig: MakeRig) -> None:
    rig = await make_rig()
    entry = await refused(rig, 401, "INVALID_ACCT", headers={"Authorization": nlauth("77777NOSUCH")})
    assert entry["auth_method"] == "nlauth"


async def test_public_base_url_is_the_signed_uri(make_rig: MakeRig) -> None:
    rig = await make_rig(public_base_url="https://gateway.example.com")
    t = await rig.tenant()
    public = "https://gateway.example.com" + PATH + QUERY
    resp = await rig.client.get(PATH + QUERY, headers={"Authorization": oauth_header(t, public)})
    assert resp.status == 200, await resp.text()
    # Signed for the address the gateway listens on, not the public one: refused.
    entry = await refused(rig, 401, "INVALID_LOGIN_ATTEMPT", headers={"Authorization": oauth_header(t, url_of(rig))})
    assert entry["sub_reason"] == "signature_invalid"
    # Default port and host case do not matter (RFC 5849 3.4.1.2).
    resp = await rig.client.get(PATH + QUERY, headers={
        "Authorization": oauth_header(t, "https://GATEWAY.example.com:443" + PATH + QUERY)})
    assert resp.status == 200, await resp.text()


async def test_without_public_base_url_the_request_host_is_signed(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    entry = await refused(rig, 401, "INVALID_LOGIN_ATTEMPT", headers={
        "Authorization": oauth_header(t, "https://gateway.example.com" + PATH + QUERY)})
    assert entry["sub_reason"] == "signature_invalid"


async def test_nlauth_registers_an_unknown_account_when_auto_register_is_on(make_rig: MakeRig) -> None:
    rig = await make_rig(auto_register=True)
    account = "88" + secrets.token_hex(4).upper()
    resp = await rig.client.get(PATH + QUERY, headers={"Authorization": nlauth(account)})
    assert resp.status == 200, await resp.text()
    assert await rig.store.get_account(account) is not None
    resp = await rig.client.get(PATH + QUERY, headers={"Authorization": nlauth("a/b")})  # no account id
    assert resp.status == 401 and await json_error(resp) == "INVALID_ACCT"


@pytest.mark.parametrize("route", ["restlet", "soap_tba"])
async def test_a_burst_of_nonce_checks_queues_for_redis_instead_of_failing(make_rig: MakeRig, route: str) -> None:
    """Far more signed requests at once than the Redis pool has connections (256): every one
    needs its nonce claimed in Redis. They take turns at the store (`StoreLanes`) and all pass;
    none gets a 503 because the pool said "Too many connections" (RESTlets did, before they
    shared the SOAP route's lanes: 96 to 443 of 2,000)."""
    rig = await make_rig()
    t = await rig.tenant()
    burst = 2000
    if route == "restlet":
        path, method = PATH + QUERY, "GET"
        requests_ = [({"Authorization": oauth_header(t, url_of(rig))}, None) for _ in range(burst)]
    else:
        path, method = "/services/NetSuitePort_2024_2", "POST"
        requests_ = [({"Content-Type": "text/xml; charset=utf-8", "SOAPAction": "get"},
                      make_envelope(get_body("2024_2"), [token_passport_xml(
                          "2024_2", t.account, t.integration["consumer_key"], t.integration["consumer_secret"],
                          t.token["token_id"], t.token["token_secret"])]))
                     for _ in range(burst)]
    url = rig.client.make_url(path)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        async def send(headers: dict[str, str], body: bytes | None) -> int:
            async with http.request(method, url, headers=headers, data=body) as resp:
                await resp.read()
                return resp.status

        statuses = await asyncio.gather(*(send(h, b) for h, b in requests_))
    assert statuses.count(200) == burst, {s: statuses.count(s) for s in set(statuses)}


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_body_over_the_limit_is_413_not_a_backend_failure(make_rig: MakeRig, chunked: bool) -> None:
    rig = await make_rig(limits=replace(load_settings(environ={}).limits, max_body_bytes=200_000))
    t = await rig.tenant()
    body = b"x" * 300_000

    async def stream() -> Any:
        for i in range(0, len(body), 50_000):
            yield body[i:i + 50_000]
            await asyncio.sleep(0)

    before = len([r for r in rig.backend.received if r.complete])
    resp = await rig.client.post(PATH + QUERY, data=stream() if chunked else body,
                                 headers={"Authorization": nlauth(t.account), "X-Request-Id": f"rl-big-{chunked}",
                                          "Content-Type": "application/json"})
    assert resp.status == 413 and await json_error(resp) == "USER_ERROR"
    entry = await logged(rig, f"rl-big-{chunked}")
    assert (entry["outcome"], entry["reason"]) == ("rejected", "request_too_large")
    assert len([r for r in rig.backend.received if r.complete]) == before  # never a complete body upstream
