"""The Issue Token endpoint (`POST /rest/issuetoken`, SPEC section 3) through the proxy: the
consumer signature and nonce are verified, the backend's token is captured (encrypted) so TBA
can verify it, and a record owned elsewhere is installed on the way."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from typing import Any

import pytest
from aiohttp import web
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA1, SIGNATURE_HMAC_SHA256, Client

from tests.factories import get_body, make_envelope, token_passport_xml
from tests.web.conftest import MakeRig, Rig, Tenant, logged

PATH = "/rest/issuetoken"


def issue_token_header(rig: Rig, record: dict[str, Any], account: str, *, query: str = "", **kw: Any) -> str:
    return issue_token_header_for(str(rig.client.make_url(PATH + query)), record, account, **kw)


def issue_token_header_for(url: str, record: dict[str, Any], account: str, *, email: str = "ann@example.com",
                           role: str = "1001", consumer_secret: str | None = None, **client_kw: Any) -> str:
    """oauthlib signs the oauth_* part (key `consumerSecret&`, no token); NLAuth carries it."""
    kw: dict[str, Any] = {"signature_method": SIGNATURE_HMAC_SHA256} | client_kw
    client = Client(record["consumer_key"], client_secret=consumer_secret or record["consumer_secret"], **kw)
    _, headers, _ = client.sign(url, http_method="POST")
    oauth = str(headers["Authorization"]).removeprefix("OAuth ")
    return (f'NLAuth nlauth_account={account}, nlauth_email={email}, nlauth_signature="Pa55:w0rd,x", '
            f"nlauth_role={role}, {oauth}")


async def json_error(resp: Any) -> str:
    data = json.loads(await resp.text())
    return str(data["error"]["code"])


async def issue(rig: Rig, header: str, request_id: str | None = None, query: str = "") -> Any:
    rid = request_id or "it-" + secrets.token_hex(8)
    return await rig.client.post(PATH + query, headers={"Authorization": header, "X-Request-Id": rid})


def tba(account: str, record: dict[str, Any], token_id: str, token_secret: str) -> bytes:
    return make_envelope(get_body("2024_2"), [token_passport_xml(
        "2024_2", account, record["consumer_key"], record["consumer_secret"], token_id, token_secret)])


async def owner_with_endpoint(rig: Rig, **fields: Any) -> Tenant:
    return await rig.tenant(auth={"user_credentials": True, "token_based": True,
                                  "tba_issue_token_endpoint": True}, **fields)


async def refused(rig: Rig, header: str, status: int, code: str) -> dict[str, Any]:
    rid = "it-" + secrets.token_hex(8)
    before = len(rig.backend.received)
    resp = await issue(rig, header, rid)
    assert resp.status == status, await resp.text()
    assert await json_error(resp) == code
    assert len(rig.backend.received) == before
    return await logged(rig, rid)


async def test_issued_token_is_captured_and_then_verifies_tba(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await owner_with_endpoint(rig)
    resp = await issue(rig, issue_token_header(rig, t.integration, t.account), "it-ok-1")
    assert resp.status == 200, await resp.text()
    issued = await resp.json()  # passes through unchanged
    assert set(issued) == {"token", "tokenSecret"}
    got = rig.backend.received[-1].headers
    assert got["Authorization"].startswith("NLAuth ") and got["X-Gateway-Auth-Method"] == "nlauth"
    assert got["X-Gateway-Integration"] == t.integration["id"] and got["X-Gateway-User"] == "ann@example.com"
    listed = {tok["token_id"]: tok for tok in await rig.store.tokens.list_tokens(t.account)}
    mine = listed[issued["token"]]
    assert (mine["source"], mine["user"], mine["role"]) == ("issue_token", "ann@example.com", "1001")
    assert mine["integration_id"] == t.integration["id"]
    resp = await rig.soap("2024_2", tba(t.account, t.integration, issued["token"], issued["tokenSecret"]))
    assert resp.status == 200, await resp.text()
    fwd = rig.backend.received[-1].headers
    assert fwd["X-Gateway-Auth-Method"] == "token_based" and fwd["X-Gateway-User"] == "ann@example.com"
    assert fwd["X-Gateway-Role"] == "1001"


async def test_the_secret_reaches_neither_redis_in_plaintext_nor_the_log(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await owner_with_endpoint(rig)
    resp = await issue(rig, issue_token_header(rig, t.integration, t.account), "it-secret-1")
    issued = await resp.json()
    secret = issued["tokenSecret"]
    entry = await logged(rig, "it-secret-1")
    text = json.dumps(entry)
    assert secret not in text and "Pa55:w0rd" not in text
    assert issued["token"] in text or "token" in entry["response_document"]  # the id itself is no secret
    r = rig.store.client
    async for key in r.scan_iter(count=1000):
        kind = await r.type(key)
        if kind == "string":
            values: list[Any] = [await r.get(key)]
        elif kind == "hash":
            values = list((await r.hgetall(key)).values())
        elif kind == "list":
            values = await r.lrange(key, 0, -1)
        elif kind == "set":
            values = list(await r.smembers(key))
        elif kind == "zset":
            values = await r.zrange(key, 0, -1)
        elif kind == "stream":
            values = [json.dumps(fields) for _, fields in await r.xrange(key)]
        else:
            values = []
        assert all(secret not in str(v) for v in values), key


async def test_record_owned_elsewhere_is_installed(make_rig: MakeRig) -> None:
    rig = await make_rig()
    owner = await owner_with_endpoint(rig)
    user = await rig.tenant()
    resp = await issue(rig, issue_token_header(rig, owner.integration, user.account))
    assert resp.status == 200, await resp.text()
    issued = await resp.json()
    installed = await rig.store.registry.installation(user.account, owner.integration["id"])
    assert installed is not None
    assert (installed["state"], installed["installed_via"]) == ("enabled", "issue_token")
    changes = await rig.store.registry.changes(user.account, owner.integration["id"])
    assert changes[0]["actor"] == "system:issue_token"
    ok = await rig.soap("2024_2", tba(user.account, owner.integration, issued["token"], issued["tokenSecret"]))
    assert ok.status == 200, await ok.text()
    assert rig.backend.received[-1].headers["X-Gateway-Account"] == user.account


async def test_waiting_installation_then_approval(make_rig: MakeRig) -> None:
    rig = await make_rig()
    owner = await owner_with_endpoint(rig)
    user = await rig.tenant()
    await rig.store.registry.put_account(user.account, True)
    resp = await issue(rig, issue_token_header(rig, owner.integration, user.account))
    assert resp.status == 200, await resp.text()
    issued = await resp.json()
    installed = await rig.store.registry.installation(user.account, owner.integration["id"])
    assert installed is not None and installed["state"] == "waiting_for_approval"
    payload = tba(user.account, owner.integration, issued["token"], issued["tokenSecret"])
    waiting = await rig.soap("2024_2", payload, headers={"X-Request-Id": "it-wait-1"})
    assert waiting.status == 500 and "WS_REQUEST_BLOCKED" in await waiting.text()
    assert (await logged(rig, "it-wait-1"))["reason"] == "integration_waiting_for_approval"
    # A second token may be issued into the waiting installation (it exists, but is refused).
    again = await issue(rig, issue_token_header(rig, owner.integration, user.account))
    assert again.status == 200
    await rig.store.registry.update_integration(user.account, owner.integration["id"], {"state": "enabled"}, "t")
    ok = await rig.soap("2024_2", tba(user.account, owner.integration, issued["token"], issued["tokenSecret"]))
    assert ok.status == 200, await ok.text()


async def test_bad_consumer_signature_is_401(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await owner_with_endpoint(rig)
    entry = await refused(rig, issue_token_header(rig, t.integration, t.account, consumer_secret="0" * 64),
                          401, "INVALID_LOGIN_ATTEMPT")
    assert (entry["reason"], entry["sub_reason"]) == ("invalid_login", "signature_invalid")
    assert await rig.store.tokens.list_tokens(t.account) == [
        tok for tok in await rig.store.tokens.list_tokens(t.account) if tok["source"] == "admin"]


@pytest.mark.parametrize(
    ("client_kw", "sub_reason"),
    [
        ({"timestamp": str(int(time.time()) - 301)}, "timestamp_refused"),
        ({"nonce": "abc"}, "nonce_rejected"),
        ({"signature_method": SIGNATURE_HMAC_SHA1}, "algorithm_refused"),
    ],
)
async def test_window_nonce_and_algorithm_are_checked(make_rig: MakeRig, client_kw: dict[str, str],
                                                       sub_reason: str) -> None:
    rig = await make_rig()
    t = await owner_with_endpoint(rig)
    entry = await refused(rig, issue_token_header(rig, t.integration, t.account, **client_kw),
                          401, "INVALID_LOGIN_ATTEMPT")
    assert entry["sub_reason"] == sub_reason


async def test_unknown_consumer_key_is_401(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await owner_with_endpoint(rig)
    fake = dict(t.integration, consumer_key=secrets.token_hex(32))
    entry = await refused(rig, issue_token_header(rig, fake, t.account), 401, "INVALID_LOGIN_ATTEMPT")
    assert entry["sub_reason"] == "consumer_key_unknown"


async def test_nonce_replay_is_401(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await owner_with_endpoint(rig)
    header = issue_token_header(rig, t.integration, t.account)
    assert (await issue(rig, header)).status == 200
    entry = await refused(rig, header, 401, "INVALID_LOGIN_ATTEMPT")
    assert entry["sub_reason"] == "nonce_used"


async def test_nlauth_fields_are_not_signed(make_rig: MakeRig) -> None:
    """The base string holds the oauth_* and query parameters only."""
    rig = await make_rig()
    t = await owner_with_endpoint(rig)
    header = issue_token_header(rig, t.integration, t.account, email="other@example.com", query="?x=1",
                                role="3")
    resp = await issue(rig, header, query="?x=1")
    assert resp.status == 200, await resp.text()
    # ... but the query is: the same header on another query fails.
    header = issue_token_header(rig, t.integration, t.account, query="?x=1")
    resp = await issue(rig, header, query="?x=2")
    assert resp.status == 401


async def test_unknown_account_is_401_invalid_acct(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await owner_with_endpoint(rig)
    entry = await refused(rig, issue_token_header(rig, t.integration, "66666NOSUCH"), 401, "INVALID_ACCT")
    assert entry["reason"] == "invalid_account"


async def test_oauth_scheme_is_refused(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await owner_with_endpoint(rig)
    header = issue_token_header(rig, t.integration, t.account)
    oauth = "OAuth " + header.split(", ", 4)[4]
    await refused(rig, oauth, 401, "INVALID_LOGIN_ATTEMPT")
    await refused(rig, "", 401, "WS_LOG_IN_REQD")


async def test_record_without_the_endpoint_flag_is_403(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()  # tba_issue_token_endpoint false
    entry = await refused(rig, issue_token_header(rig, t.integration, t.account), 403, "INVALID_LOGIN_ATTEMPT")
    assert entry["reason"] == "auth_method_not_permitted"


async def test_blocked_installation_is_403(make_rig: MakeRig) -> None:
    rig = await make_rig()
    owner = await owner_with_endpoint(rig)
    user = await rig.tenant()
    await rig.store.registry.install(user.account, owner.integration["id"], _bundle(), "test")
    await rig.store.registry.update_integration(user.account, owner.integration["id"], {"state": "blocked"}, "t")
    entry = await refused(rig, issue_token_header(rig, owner.integration, user.account), 403, "WS_REQUEST_BLOCKED")
    assert entry["reason"] == "integration_blocked"
    # The owner's own installation is untouched by the user's block.
    assert (await issue(rig, issue_token_header(rig, owner.integration, owner.account))).status == 200
    await rig.store.registry.update_integration(owner.account, owner.integration["id"], {"state": "blocked"}, "t")
    await refused(rig, issue_token_header(rig, owner.integration, owner.account), 403, "WS_REQUEST_BLOCKED")


def _bundle() -> Any:
    from gateway.core.records import InstalledVia

    return InstalledVia.BUNDLE


def answering(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(body, status=status, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def test_token_id_and_token_secret_spelling_is_captured(make_rig: MakeRig) -> None:
    token_id, secret = secrets.token_hex(32), secrets.token_hex(32)
    rig = await make_rig(backend_app=answering(200, {"token_id": token_id, "token_secret": secret}))
    t = await owner_with_endpoint(rig)
    resp = await issue(rig, issue_token_header(rig, t.integration, t.account), "it-alt-1")
    assert resp.status == 200
    assert await resp.json() == {"token_id": token_id, "token_secret": secret}
    assert token_id in {tok["token_id"] for tok in await rig.store.tokens.list_tokens(t.account)}
    assert secret not in json.dumps(await logged(rig, "it-alt-1"))
    ok = await rig.soap("2024_2", tba(t.account, t.integration, token_id, secret))
    assert ok.status == 200, await ok.text()


@pytest.mark.parametrize("status", [200, 401])  # captured and answered by the gateway / relayed as is
async def test_the_answers_set_cookie_is_logged_with_its_value_masked(make_rig: MakeRig, status: int) -> None:
    secret = "It-Secret-" + secrets.token_hex(8)
    body: dict[str, Any] = ({"token": secrets.token_hex(32), "tokenSecret": secrets.token_hex(32)} if status == 200
                            else {"error": {"code": "INVALID_LOGIN", "message": "wrong password"}})
    rig = await make_rig(backend_app=answering(status, body, {"Set-Cookie": f"JSESSIONID={secret}; Path=/; Secure"}))
    t = await owner_with_endpoint(rig)
    resp = await issue(rig, issue_token_header(rig, t.integration, t.account), "it-set-cookie")
    assert resp.status == status and await resp.json() == body
    assert resp.headers.getall("Set-Cookie") == [f"JSESSIONID={secret}; Path=/; Secure"]
    entry = await logged(rig, "it-set-cookie")
    assert entry["set_cookie"] == ["JSESSIONID=***; Path=/; Secure"]
    assert secret not in json.dumps(entry)


@pytest.mark.parametrize("status", [400, 401, 500])
async def test_backend_refusal_captures_and_installs_nothing(make_rig: MakeRig, status: int) -> None:
    body = {"error": {"code": "INVALID_LOGIN", "message": "wrong password"}}
    rig = await make_rig(backend_app=answering(status, body))
    owner = await owner_with_endpoint(rig)
    user = await rig.tenant()
    resp = await issue(rig, issue_token_header(rig, owner.integration, user.account))
    assert resp.status == status and await resp.json() == body
    assert await rig.store.registry.installation(user.account, owner.integration["id"]) is None
    assert await rig.store.tokens.list_tokens(user.account) == [
        tok for tok in await rig.store.tokens.list_tokens(user.account) if tok["source"] == "admin"]


async def test_issue_token_answer_arriving_in_pieces_is_captured(make_rig: MakeRig) -> None:
    token_id, secret = secrets.token_hex(32), secrets.token_hex(32)
    body = json.dumps({"token": token_id, "tokenSecret": secret, "padding": "x" * 300}).encode()

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for i in range(0, len(body), 64):
            await response.write(body[i:i + 64])
            await asyncio.sleep(0.03)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    rig = await make_rig(backend_app=app)
    t = await owner_with_endpoint(rig)
    resp = await issue(rig, issue_token_header(rig, t.integration, t.account))
    assert resp.status == 200 and await resp.read() == body
    ok = await rig.soap("2024_2", tba(t.account, t.integration, token_id, secret))
    assert ok.status == 200, await ok.text()


async def test_an_oversized_answer_is_an_upstream_error_not_a_cut_relay(make_rig: MakeRig) -> None:
    rig = await make_rig(backend_app=answering(200, {"token": "t" * 64, "padding": "x" * (1 << 20)}))
    t = await owner_with_endpoint(rig)
    resp = await issue(rig, issue_token_header(rig, t.integration, t.account))
    assert resp.status == 502 and await json_error(resp) == "UNEXPECTED_ERROR"


async def test_public_base_url_is_the_signed_uri(make_rig: MakeRig) -> None:
    rig = await make_rig(public_base_url="https://gateway.example.com/")
    t = await owner_with_endpoint(rig)
    client = Client(t.integration["consumer_key"], client_secret=t.integration["consumer_secret"],
                    signature_method=SIGNATURE_HMAC_SHA256)
    _, headers, _ = client.sign("https://gateway.example.com" + PATH, http_method="POST")
    header = (f"NLAuth nlauth_account={t.account}, nlauth_email=a@example.com, nlauth_signature=pw, "
              f"nlauth_role=3, {str(headers['Authorization']).removeprefix('OAuth ')}")
    resp = await issue(rig, header)
    assert resp.status == 200, await resp.text()
    await refused(rig, issue_token_header(rig, t.integration, t.account), 401, "INVALID_LOGIN_ATTEMPT")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_issue_token_is_post_only(make_rig: MakeRig, method: str) -> None:
    # SPEC 3: POST /rest/issuetoken; a signed GET used to be verified and forwarded
    rig = await make_rig()
    owner = await owner_with_endpoint(rig)
    before = len(rig.backend.received)
    resp = await rig.client.request(method, PATH, headers={
        "Authorization": issue_token_header(rig, owner.integration, owner.account), "X-Request-Id": f"it-{method}"})
    assert resp.status == 405 and resp.headers["Allow"] == "POST"
    assert resp.headers["X-Request-Id"] == f"it-{method}"
    assert len(rig.backend.received) == before


async def test_a_form_body_is_not_signed_for_issue_token(make_rig: MakeRig) -> None:
    """SPEC 3: Issue Token's base string holds the oauth_* and query parameters only, whatever
    the body (RESTlets sign a form body's parameters; Issue Token does not)."""
    rig = await make_rig()
    t = await owner_with_endpoint(rig)
    resp = await rig.client.post(PATH, data=b"extra=1&more=2", headers={
        "Authorization": issue_token_header(rig, t.integration, t.account),
        "Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 200, await resp.text()
    assert rig.backend.received[-1].body_sha256 == hashlib.sha256(b"extra=1&more=2").hexdigest()
