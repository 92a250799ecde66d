"""Sessions (SPEC section 3): opened by a successful login/ssoLogin with a fresh JSESSIONID, ridden
by later requests, closed by logout or timeouts; R8 Default-record sessions; auto-install
through login. Real Redis, real upstream (the sample backend), real store and log."""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web

from gateway.backend import SampleBackend, soap_response
from gateway.config import load_settings
from gateway.web import resolve
from tests.factories import (
    application_info_xml,
    get_body,
    login_body,
    logout_body,
    make_envelope,
    passport_xml,
    sso_login_body,
    token_passport_xml,
)
from tests.web.conftest import MakeRig, Rig, Tenant, fault_code, logged

V = "2019_2"
SETTINGS = load_settings(environ={})


def login(t: Tenant, version: str = V, *, app_id: str | None = "own", account: str | None = None,
          password: str = "pw") -> bytes:
    app = t.integration["application_id"] if app_id == "own" else app_id
    parts = [application_info_xml(version, app)] if app else []
    return make_envelope(login_body(version, t.email, password, account or t.account), parts)


def bare(version: str = V) -> bytes:
    return make_envelope(get_body(version))


def jar(session_id: str) -> dict[str, str]:
    return {"Cookie": f"JSESSIONID={session_id}"}


async def open_session(rig: Rig, payload: bytes, version: str = V) -> str:
    resp = await rig.soap(version, payload)
    assert resp.status == 200, await resp.text()
    session_id = resp.cookies["JSESSIONID"].value
    assert await rig.store.get_session(session_id) is not None
    return session_id


async def eventually(check: Any, tries: int = 100) -> None:
    """Session touches and closes, and the best-effort logout, run off the request path."""
    for _ in range(tries):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never became true")


def timeouts(**kw: Any) -> Any:
    return replace(SETTINGS.sessions, **kw)


# --------------------------------------------------------------------------- opening


async def test_login_opens_a_session_bound_to_the_login(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    session_id = await open_session(rig, login(t))
    session = await rig.store.get_session(session_id)
    assert session is not None
    assert (session.account, session.integration_id, session.user, session.role) == (
        t.account, t.integration["id"], t.email, "3")
    ride = await rig.soap(V, bare(), headers=jar(session_id) | {"X-Request-Id": "ride-1"})
    assert ride.status == 200, await ride.text()
    got = rig.backend.received[-1].headers
    assert got["X-Gateway-Auth-Method"] == "session" and got["X-Gateway-User"] == t.email
    assert got["X-Gateway-Integration"] == t.integration["id"] and got["X-Gateway-Role"] == "3"
    assert got["Cookie"] == f"JSESSIONID={session_id}"
    entry = await logged(rig, "ride-1")
    assert entry["auth_method"] == "session" and entry["account"] == t.account


async def test_sso_login_opens_a_session_for_the_partner_user(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    payload = make_envelope(sso_login_body(V, partner_account=t.account, partner_user_id="sso-user-7"),
                            [application_info_xml(V, t.integration["application_id"])])
    session_id = await open_session(rig, payload)
    session = await rig.store.get_session(session_id)
    assert session is not None and session.user == "sso-user-7"
    assert session.integration_id == t.integration["id"]
    assert (await rig.soap(V, bare(), headers=jar(session_id))).status == 200


async def test_login_needs_an_application_id_after_2015_1(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    resp = await rig.soap(V, login(t, app_id=None))
    assert await fault_code(resp) == "INVALID_APP_ID" and rig.backend.received == []


async def test_failed_login_opens_no_session(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    resp = await rig.soap(V, login(t, password="bad-one"))
    assert resp.status == 200 and "JSESSIONID" not in resp.cookies


def scripted_backend(answer: web.Response | None = None, cookie: str | None = "fresh1234") -> web.Application:
    """An upstream that answers every request with `answer` (default: a successful login)."""

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        if answer is not None:
            return answer
        response = web.Response(body=soap_response("login", "2019_2"), content_type="text/xml")
        if cookie:
            response.set_cookie("JSESSIONID", cookie)
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@pytest.mark.parametrize("case", ["no_cookie", "fault", "http_500", "not_success"])
async def test_no_session_without_a_clear_upstream_success(make_rig: MakeRig, case: str) -> None:
    fault = (b'<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
             b"<soapenv:Body><soapenv:Fault><faultcode>soapenv:Server</faultcode><faultstring>no</faultstring>"
             b'<detail><x isSuccess="true"/></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>')
    cookie = f"JSESSIONID=s{secrets.token_hex(8)}"
    answers: dict[str, web.Response | None] = {
        "no_cookie": None,
        "fault": web.Response(body=fault, content_type="text/xml", headers={"Set-Cookie": cookie}),
        "http_500": web.Response(status=500, body=soap_response("login", "2019_2"), content_type="text/xml",
                                 headers={"Set-Cookie": cookie}),
        "not_success": web.Response(body=soap_response("login", "2019_2", success=False),
                                    content_type="text/xml", headers={"Set-Cookie": cookie}),
    }
    rig = await make_rig(backend_app=scripted_backend(answers[case], cookie=None))
    t = await rig.tenant()
    resp = await rig.soap(V, login(t))
    await resp.read()
    issued = resp.cookies.get("JSESSIONID")
    if issued is not None:
        assert await rig.store.get_session(issued.value) is None
    assert await rig.store.get_session(cookie.partition("=")[2]) is None


async def test_no_fixation_when_the_upstream_echoes_the_clients_session_id(make_rig: MakeRig) -> None:
    chosen = "attacker" + secrets.token_hex(8)
    backend = SampleBackend(session_id=chosen)
    rig = await make_rig(backend_app=backend.app())
    t = await rig.tenant()
    resp = await rig.soap(V, login(t), headers=jar(chosen))
    assert resp.status == 200
    assert "JSESSIONID" not in resp.cookies  # the fixed id is not handed on
    assert backend.received[-1].headers.get("Cookie") is None  # nor was the client's id forwarded
    assert await rig.store.get_session(chosen) is None
    ride = await rig.soap(V, bare(), headers=jar(chosen))
    assert await fault_code(ride) == "INVALID_SESSION"
    # The same upstream id is fine for a client that did not offer it (no fixation then).
    assert await open_session(rig, login(t)) == chosen


async def test_login_logs_the_relayed_session_cookie_with_its_value_masked(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    resp = await rig.soap(V, login(t), headers={"X-Request-Id": "login-set-cookie"})
    assert resp.status == 200, await resp.text()
    session_id = resp.cookies["JSESSIONID"].value
    assert resp.headers.getall("Set-Cookie") == [f"JSESSIONID={session_id}; Path=/"]
    entry = await logged(rig, "login-set-cookie")
    assert entry["set_cookie"] == ["JSESSIONID=***; Path=/"]
    assert session_id not in json.dumps(entry)


async def test_a_set_cookie_dropped_against_fixation_is_not_logged(make_rig: MakeRig) -> None:
    chosen = "attacker" + secrets.token_hex(8)
    rig = await make_rig(backend_app=SampleBackend(session_id=chosen).app())
    t = await rig.tenant()
    resp = await rig.soap(V, login(t), headers=jar(chosen) | {"X-Request-Id": "fixed-set-cookie"})
    assert resp.status == 200 and "Set-Cookie" not in resp.headers
    entry = await logged(rig, "fixed-set-cookie")
    assert "set_cookie" not in entry and entry["cookie"] == "JSESSIONID=***"
    assert chosen not in json.dumps(entry)


async def test_header_passport_beside_a_session_cookie_is_request_level(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    session_id = await open_session(rig, login(t))
    resp = await rig.soap(V, t.passport(V), headers={"Cookie": f"JSESSIONID={session_id}; lb=2"})
    assert resp.status == 200
    got = rig.backend.received[-1].headers
    assert got["X-Gateway-Auth-Method"] == "user_credentials" and got["Cookie"] == "lb=2"


async def test_token_passport_with_a_session_cookie_is_ambiguous(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    session_id = await open_session(rig, login(t))
    resp = await rig.soap("2024_2", t.tba(), headers=jar(session_id))
    assert await fault_code(resp) == "USER_ERROR"


async def test_an_empty_session_cookie_is_a_session_naming_none(make_rig: MakeRig) -> None:
    """Found by the black-box rules audit: `JSESSIONID=` made every request invalid_session,
    though SPEC 2's list of invalid cookies does not hold it."""
    rig = await make_rig()
    t = await rig.tenant()
    empty = {"Cookie": "JSESSIONID=; lb=2"}
    resp = await rig.soap(V, t.passport(V), headers=empty)  # request-level: the cookie ignored
    assert resp.status == 200, await resp.text()
    assert rig.backend.received[-1].headers["Cookie"] == "lb=2"
    assert await fault_code(await rig.soap("2024_2", t.tba(), headers=empty)) == "USER_ERROR"  # ambiguous
    assert await fault_code(await rig.soap(V, bare(), headers=empty)) == "INVALID_SESSION"


async def test_a_fixation_login_drops_only_the_session_cookie(make_rig: MakeRig) -> None:
    """Found by the rules audit: every Set-Cookie was dropped, NS_ROUTING_VERSION too (SPEC 2:
    other cookies pass through)."""
    chosen = "attacker" + secrets.token_hex(8)

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        resp = web.Response(body=soap_response("login", V), content_type="text/xml")
        resp.headers.add("Set-Cookie", f"JSESSIONID={chosen}; Path=/")
        resp.headers.add("Set-Cookie", "NS_ROUTING_VERSION=LAGGING; Path=/")
        return resp

    app = web.Application()
    app.router.add_post("/{tail:.*}", answer)
    rig = await make_rig(backend_app=app)
    t = await rig.tenant()
    resp = await rig.soap(V, login(t), headers=jar(chosen))
    assert resp.status == 200
    assert resp.headers.getall("Set-Cookie") == ["NS_ROUTING_VERSION=LAGGING; Path=/"]


async def test_unknown_session_cookie_is_invalid_session(make_rig: MakeRig) -> None:
    rig = await make_rig()
    resp = await rig.soap(V, bare(), headers=jar("never-seen-" + secrets.token_hex(4)))
    assert await fault_code(resp) == "INVALID_SESSION" and rig.backend.received == []


async def test_sessions_are_refused_on_2020_2_and_later(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    session_id = await open_session(rig, login(t))
    resp = await rig.soap("2020_2", bare("2020_2"), headers=jar(session_id) | {"X-Request-Id": "r5-session"})
    assert await fault_code(resp) == "USER_ERROR"  # passport_unsupported (R5)
    # ... and logged as the session's: in the account's usage log (SPEC 2 and 5)
    entry = await logged(rig, "r5-session")
    assert (entry["reason"], entry["auth_method"]) == ("passport_unsupported", "session")
    assert (entry["account"], entry["integration_id"]) == (t.account, t.integration["id"])


async def test_a_session_is_visible_to_another_replica(make_rig: MakeRig) -> None:
    rig_a = await make_rig()
    rig_b = await make_rig()
    t = await rig_a.tenant()
    session_id = await open_session(rig_a, login(t))
    assert (await rig_b.soap(V, bare(), headers=jar(session_id))).status == 200


# --------------------------------------------------------------------------- closing


async def test_logout_closes_the_session(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    session_id = await open_session(rig, login(t))
    out = await rig.soap(V, make_envelope(logout_body(V)), headers=jar(session_id))
    assert out.status == 200
    assert rig.backend.received[-1].headers["Cookie"] == f"JSESSIONID={session_id}"

    async def closed() -> bool:
        return await rig.store.get_session(session_id) is None

    await eventually(closed)
    assert await fault_code(await rig.soap(V, bare(), headers=jar(session_id))) == "INVALID_SESSION"


async def test_idle_timeout_and_rides_keep_the_session_alive(make_rig: MakeRig) -> None:
    rig = await make_rig(sessions=timeouts(idle_timeout_seconds=1, absolute_timeout_seconds=60))
    t = await rig.tenant()
    session_id = await open_session(rig, login(t))
    for _ in range(3):  # 1.5 s in all, never 1 s idle
        await asyncio.sleep(0.5)
        assert (await rig.soap(V, bare(), headers=jar(session_id))).status == 200
    await asyncio.sleep(1.4)
    resp = await rig.soap(V, bare(), headers=jar(session_id))
    assert await fault_code(resp) == "INVALID_SESSION"


async def test_idle_timeout_is_decided_by_the_rules_not_only_by_redis_expiry(
        make_rig: MakeRig, monkeypatch: pytest.MonkeyPatch) -> None:
    rig = await make_rig()  # default timeouts: 20 min idle, the Redis key lives as long
    t = await rig.tenant()
    session_id = await open_session(rig, login(t))
    session = await rig.store.get_session(session_id)
    assert session is not None
    monkeypatch.setattr(resolve, "clock", lambda: session.last_seen + 1200 + 1)
    assert await fault_code(await rig.soap(V, bare(), headers=jar(session_id))) == "INVALID_SESSION"
    monkeypatch.setattr(resolve, "clock", lambda: session.last_seen + 1200 - 1)
    assert (await rig.soap(V, bare(), headers=jar(session_id))).status == 200


async def test_absolute_timeout_ends_a_busy_session(make_rig: MakeRig) -> None:
    rig = await make_rig(sessions=timeouts(idle_timeout_seconds=1, absolute_timeout_seconds=1))
    t = await rig.tenant()
    session_id = await open_session(rig, login(t))
    for _ in range(2):
        await asyncio.sleep(0.3)
        assert (await rig.soap(V, bare(), headers=jar(session_id))).status == 200
    await asyncio.sleep(0.7)  # 1.3 s after login, 0.7 s after the last ride
    resp = await rig.soap(V, bare(), headers=jar(session_id), )
    assert await fault_code(resp) == "INVALID_SESSION"


# --------------------------------------------------------------------------- blocks


async def test_block_ends_open_sessions_by_default(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    session_id = await open_session(rig, login(t))
    await rig.store.registry.update_integration(t.account, t.integration["id"], {"state": "blocked"}, "test")
    resp = await rig.soap(V, bare(), headers=jar(session_id))
    assert resp.status == 500 and await fault_code(resp) == "WS_REQUEST_BLOCKED"
    await rig.store.registry.update_integration(t.account, t.integration["id"], {"state": "enabled"}, "test")
    assert (await rig.soap(V, bare(), headers=jar(session_id))).status == 200


async def test_block_spares_existing_sessions_when_block_existing_is_false(make_rig: MakeRig) -> None:
    rig = await make_rig(sessions=timeouts(block_existing=False))
    t = await rig.tenant()
    session_id = await open_session(rig, login(t))
    await asyncio.sleep(0.01)  # the block comes strictly after the login
    await rig.store.registry.update_integration(t.account, t.integration["id"], {"state": "blocked"}, "test")
    assert (await rig.soap(V, bare(), headers=jar(session_id))).status == 200
    # A new login is refused (R14) and opens nothing.
    resp = await rig.soap(V, login(t))
    assert await fault_code(resp) == "WS_REQUEST_BLOCKED" and "JSESSIONID" not in resp.cookies


async def test_waiting_for_approval_refuses_session_rides(make_rig: MakeRig) -> None:
    rig = await make_rig(sessions=timeouts(block_existing=False))
    t = await rig.tenant()
    session_id = await open_session(rig, login(t))
    await rig.store.registry.update_integration(
        t.account, t.integration["id"], {"state": "waiting_for_approval"}, "test")
    assert await fault_code(await rig.soap(V, bare(), headers=jar(session_id))) == "WS_REQUEST_BLOCKED"


async def test_user_credentials_disallowed_after_login_refuses_rides(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    session_id = await open_session(rig, login(t))
    await rig.store.registry.update_integration(
        t.account, t.integration["id"], {"auth": {"user_credentials": False}}, "test")
    resp = await rig.soap(V, bare(), headers=jar(session_id), )
    assert await fault_code(resp) == "INVALID_LOGIN_ATTEMPT"  # auth_method_not_permitted (R16)


async def test_removed_record_kills_its_sessions(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    session_id = await open_session(rig, login(t))
    await rig.store.registry.remove_integration(t.account, t.integration["id"])
    assert await fault_code(await rig.soap(V, bare(), headers=jar(session_id))) == "INVALID_SESSION"


# --------------------------------------------------------------------------- R8: Default record


async def test_default_record_sessions_from_2015_1(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    session_id = await open_session(rig, login(t, "2015_1", app_id=None), "2015_1")
    session = await rig.store.get_session(session_id)
    assert session is not None and session.integration_id is None
    for version in ("2015_1", "2019_2"):  # on any endpoint the session is valid on
        resp = await rig.soap(version, bare(version), headers=jar(session_id))
        assert resp.status == 200, await resp.text()
        assert rig.backend.received[-1].headers["X-Gateway-Integration"] == "default"
    await rig.store.registry.set_default_state(t.account, "blocked")
    resp = await rig.soap("2019_2", bare("2019_2"), headers=jar(session_id))
    assert await fault_code(resp) == "WS_REQUEST_BLOCKED"
    resp = await rig.soap("2015_1", login(t, "2015_1", app_id=None))
    assert await fault_code(resp) == "WS_REQUEST_BLOCKED"  # default_integration_blocked


async def test_login_with_application_id_on_2015_1_uses_the_record(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    session_id = await open_session(rig, login(t, "2015_1"), "2015_1")
    session = await rig.store.get_session(session_id)
    assert session is not None and session.integration_id == t.integration["id"]


# --------------------------------------------------------------------------- auto-install


async def two_accounts(rig: Rig, require_approval: bool, **fields: Any) -> tuple[Tenant, Tenant]:
    owner = await rig.tenant(auto_install=True, **fields)
    user = await rig.tenant()
    await rig.store.registry.put_account(user.account, require_approval)
    return owner, user


async def test_login_auto_installs_on_upstream_success(make_rig: MakeRig) -> None:
    rig = await make_rig()
    owner, user = await two_accounts(rig, require_approval=False)
    foreign = owner.integration
    resp = await rig.soap(V, login(user, app_id=foreign["application_id"]))
    assert resp.status == 200, await resp.text()
    installed = await rig.store.registry.installation(user.account, foreign["id"])
    assert installed is not None
    assert (installed["state"], installed["installed_via"]) == ("enabled", "auto_install")
    session = await rig.store.get_session(resp.cookies["JSESSIONID"].value)
    assert session is not None and (session.account, session.integration_id) == (user.account, foreign["id"])
    changes = await rig.store.registry.changes(user.account, foreign["id"])
    assert changes[0]["actor"] == "system:auto_install"


async def test_failed_login_installs_nothing(make_rig: MakeRig) -> None:
    rig = await make_rig()
    owner, user = await two_accounts(rig, require_approval=False)
    resp = await rig.soap(V, login(user, app_id=owner.integration["application_id"], password="bad"))
    assert resp.status == 200
    assert await rig.store.registry.installation(user.account, owner.integration["id"]) is None


async def test_login_auto_install_waiting_for_approval(make_rig: MakeRig) -> None:
    rig = await make_rig()
    owner, user = await two_accounts(rig, require_approval=True)
    foreign = owner.integration
    resp = await rig.soap(V, login(user, app_id=foreign["application_id"]), headers={"X-Request-Id": "wait-1"})
    assert resp.status == 500 and await fault_code(resp) == "WS_REQUEST_BLOCKED"
    assert "waiting for approval" in await resp.text()
    assert "Set-Cookie" not in resp.headers
    installed = await rig.store.registry.installation(user.account, foreign["id"])
    assert installed is not None and installed["state"] == "waiting_for_approval"
    [issued] = rig.backend.sessions
    assert await rig.store.get_session(issued) is None

    async def logged_out() -> bool:
        return any(b"logout" in r.head and r.headers.get("Cookie") == f"JSESSIONID={issued}"
                   for r in rig.backend.received)

    await eventually(logged_out)
    entry = await logged(rig, "wait-1")
    assert entry["reason"] == "integration_waiting_for_approval" and entry["integration_id"] == foreign["id"]
    assert "set_cookie" not in entry  # the upstream's cookie was never relayed
    # Later logins are refused before the upstream; once approved they open sessions.
    sent = len(rig.backend.received)
    again = await rig.soap(V, login(user, app_id=foreign["application_id"]))
    assert await fault_code(again) == "WS_REQUEST_BLOCKED" and len(rig.backend.received) == sent
    await rig.store.registry.update_integration(user.account, foreign["id"], {"state": "enabled"}, "test")
    await open_session(rig, login(user, app_id=foreign["application_id"]))


async def test_sso_login_auto_installs_too(make_rig: MakeRig) -> None:
    rig = await make_rig()
    owner, user = await two_accounts(rig, require_approval=False)
    payload = make_envelope(sso_login_body(V, partner_account=user.account, partner_user_id="u1"),
                            [application_info_xml(V, owner.integration["application_id"])])
    await open_session(rig, payload)
    installed = await rig.store.registry.installation(user.account, owner.integration["id"])
    assert installed is not None and installed["installed_via"] == "auto_install"


async def test_data_operation_with_passport_never_auto_installs(make_rig: MakeRig) -> None:
    rig = await make_rig()
    owner, user = await two_accounts(rig, require_approval=False)
    foreign = owner.integration
    payload = make_envelope(get_body(V), [passport_xml(V, user.email, "pw", user.account),
                                          application_info_xml(V, foreign["application_id"])])
    resp = await rig.soap(V, payload)
    assert await fault_code(resp) == "INVALID_APP_ID"  # unknown_application
    assert rig.backend.received == []
    assert await rig.store.registry.installation(user.account, foreign["id"]) is None


async def test_login_to_a_record_without_user_credentials_installs_nothing(make_rig: MakeRig) -> None:
    rig = await make_rig()
    owner, user = await two_accounts(rig, require_approval=False,
                                     auth={"user_credentials": False, "token_based": True})
    resp = await rig.soap(V, login(user, app_id=owner.integration["application_id"]))
    assert await fault_code(resp) == "INVALID_LOGIN_ATTEMPT" and rig.backend.received == []
    assert await rig.store.registry.installation(user.account, owner.integration["id"]) is None


async def test_record_not_auto_installable_is_unknown_application(make_rig: MakeRig) -> None:
    rig = await make_rig()
    other, user = await rig.tenant(), await rig.tenant()
    resp = await rig.soap(V, login(user, app_id=other.integration["application_id"]))
    assert await fault_code(resp) == "INVALID_APP_ID" and rig.backend.received == []


async def test_tba_is_not_a_session(make_rig: MakeRig) -> None:
    """A TBA request never opens a session, even if the upstream sets a JSESSIONID."""
    rig = await make_rig()
    t = await rig.tenant()
    payload = make_envelope(get_body("2024_2"), [token_passport_xml(
        "2024_2", t.account, t.integration["consumer_key"], t.integration["consumer_secret"],
        t.token["token_id"], t.token["token_secret"])])
    resp = await rig.soap("2024_2", payload)
    assert resp.status == 200 and "JSESSIONID" not in resp.cookies


def dribbling_backend(pause: float = 0.05) -> web.Application:
    """A login answer sent in small pieces with pauses (a slow or chunking upstream): the
    success status comes in a later piece than the first."""

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        body = soap_response("login", "2019_2")
        response = web.StreamResponse(headers={"Content-Type": "text/xml; charset=utf-8"})
        response.set_cookie("JSESSIONID", "dribble" + secrets.token_hex(8))
        await response.prepare(request)
        for i in range(0, len(body), 40):
            await response.write(body[i:i + 40])
            await asyncio.sleep(pause)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def test_login_answer_arriving_in_pieces_is_relayed_whole_and_opens_a_session(make_rig: MakeRig) -> None:
    rig = await make_rig(backend_app=dribbling_backend())
    t = await rig.tenant()
    resp = await rig.soap(V, login(t))
    assert await resp.read() == soap_response("login", "2019_2")
    session_id = resp.cookies["JSESSIONID"].value
    assert await rig.store.get_session(session_id) is not None


async def test_an_oversized_login_answer_is_an_upstream_error_not_a_cut_relay(make_rig: MakeRig) -> None:
    padding = b"<!--" + b"x" * (1 << 20) + b"--></soapenv:Body>"
    big = soap_response("login", "2019_2").replace(b"</soapenv:Body>", padding)
    answer = web.Response(body=big, content_type="text/xml", headers={"Set-Cookie": "JSESSIONID=big1234"})
    rig = await make_rig(backend_app=scripted_backend(answer))
    t = await rig.tenant()
    resp = await rig.soap(V, login(t), headers={"X-Request-Id": "big-login"})
    assert resp.status == 502 and await fault_code(resp) == "UNEXPECTED_ERROR"
    assert "Set-Cookie" not in resp.headers and await rig.store.get_session("big1234") is None
    assert "set_cookie" not in await logged(rig, "big-login")
