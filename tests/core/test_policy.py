"""Conformance table for the decision rules R2-R17 (SPEC section 3).

Each case builds RequestFacts, answers the lookups from an in-memory record set exactly as the
adapter would (`plan_lookups` -> store), settles CheckNonce / Install like the adapter, and
compares a one-line summary of every step: e.g. `nonce>install:enabled>forward:auto`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import load_settings
from gateway.core import tba
from gateway.core.decision import (
    AuthMethod,
    CheckNonce,
    Decision,
    Forward,
    Install,
    Reject,
)
from gateway.core.facts import CookieFacts, EnvelopeHead, Passport, RequestFacts, SsoPassport, TokenPassport
from gateway.core.lookups import Lookups
from gateway.core.policy import PolicySettings, decide, plan_lookups, policy_settings
from gateway.core.reasons import Reason
from gateway.core.records import (
    AccountView,
    AuthFlags,
    InstallationView,
    InstalledVia,
    IntegrationView,
    SessionView,
    State,
    TokenView,
)
from gateway.decide_cli import Records

NOW = 1_700_000_000.0
ACC = "TSTDRV1234"
OTHER = "7654321"
APPROVER = "5555555_SB1"  # require_approval
UNKNOWN = "9999999"

APP1, APP2, APP3, APP4 = ("A" * 31 + "1", "B" * 31 + "2", "C" * 31 + "3", "D" * 31 + "4")
CK1, CK2, CK3, CK4 = ("1" * 63 + "a", "2" * 63 + "b", "3" * 63 + "c", "4" * 63 + "d")
CS1, CS2, CS3, CS4 = ("e" * 64, "f" * 64, "9" * 64, "8" * 64)
T1, T_AUTO, T_APPR, T_OTHER_ACC, T_FOREIGN, T_LOWER = (
    "t1" + "0" * 62,
    "ta" + "0" * 62,
    "tp" + "0" * 62,
    "to" + "0" * 62,
    "tf" + "0" * 62,
    "tl" + "0" * 62,
)
TS1 = "5" * 64
EMAIL = "jane@example.com"

BASE = policy_settings(load_settings(environ={}))
NO_BLOCK_EXISTING = replace(BASE, block_existing=False)
AUTO_REGISTER = replace(BASE, auto_register=True)
SHA1_ALLOWED = replace(BASE, allowed_algorithms=frozenset({"HMAC-SHA256", "HMAC-SHA1"}))


# --------------------------------------------------------------------------- the record set


def world() -> Records:
    rec = Records()
    for acc in (AccountView(ACC), AccountView(OTHER), AccountView(APPROVER, require_approval=True)):
        rec.accounts[acc.account_id] = acc
    integrations = [
        IntegrationView("rec1", ACC, "Order sync", APP1, CK1, CS1),
        IntegrationView("auto", OTHER, "Marketplace app", APP2, CK2, CS2, auto_install=True),
        IntegrationView("foreign", OTHER, "Private app", APP3, CK3, CS3),
        IntegrationView("shared", OTHER, "Bundled app", APP4, CK4, CS4),
    ]
    for i in integrations:
        rec.integrations[i.id] = i
        rec.installations[(i.owner_account, i.id)] = InstallationView(
            i.owner_account, i.id, State.ENABLED, InstalledVia.OWNER
        )
    rec.installations[(ACC, "shared")] = InstallationView(ACC, "shared", State.ENABLED, InstalledVia.BUNDLE)
    for t in (
        TokenView(T1, TS1, ACC, "rec1", EMAIL, "3"),
        TokenView(T_AUTO, TS1, ACC, "auto", EMAIL, "3"),
        TokenView(T_APPR, TS1, APPROVER, "auto", EMAIL, "3"),
        TokenView(T_OTHER_ACC, TS1, OTHER, "rec1", EMAIL, "3"),
        TokenView(T_FOREIGN, TS1, ACC, "foreign", EMAIL, "3"),
    ):
        rec.tokens[t.token_id] = t
    for s in (
        SessionView("S1", ACC, "rec1", EMAIL, "3", created_at=NOW - 100, last_seen=NOW - 10),
        SessionView("SD", ACC, None, EMAIL, "3", created_at=NOW - 100, last_seen=NOW - 10),
        SessionView("SGONE", ACC, "vanished", EMAIL, "3", created_at=NOW - 100, last_seen=NOW - 10),
    ):
        rec.sessions[s.session_id] = s
    return rec


Setup = Callable[[Records], None]


def installation(account: str, integration: str, state: State, since: float = NOW - 50) -> Setup:
    def apply(rec: Records) -> None:
        rec.installations[(account, integration)] = InstallationView(
            account, integration, state, InstalledVia.BUNDLE, state_since=since
        )

    return apply


def integration(iid: str, **changes: Any) -> Setup:
    def apply(rec: Records) -> None:
        rec.integrations[iid] = replace(rec.integrations[iid], **changes)

    return apply


def account(aid: str, **changes: Any) -> Setup:
    def apply(rec: Records) -> None:
        rec.accounts[aid] = replace(rec.accounts[aid], **changes)

    return apply


def token(tid: str, **changes: Any) -> Setup:
    def apply(rec: Records) -> None:
        rec.tokens[tid] = replace(rec.tokens[tid], **changes)

    return apply


def session(sid: str, **changes: Any) -> Setup:
    def apply(rec: Records) -> None:
        rec.sessions[sid] = replace(rec.sessions[sid], **changes)

    return apply


def no_installation(acc: str, iid: str) -> Setup:
    def apply(rec: Records) -> None:
        rec.installations.pop((acc, iid), None)

    return apply


# --------------------------------------------------------------------------- request builders

_SAME: Any = object()


def ns(v: tuple[int, int]) -> str:
    return f"urn:messages_{v[0]}_{v[1]}.platform.webservices.netsuite.com"


def passport(acc: str | None = ACC, email: str = EMAIL, role: str | None = "3") -> Passport:
    return Passport(email=email, password="secret", account=acc, role=role)


def sso(acc: str = ACC) -> SsoPassport:
    return SsoPassport(
        authentication_token="tok", partner_id="p1", partner_account=acc, partner_user_id="partner-user-7"
    )


def tp(
    acc: str = ACC,
    ck: str = CK1,
    tok: str = T1,
    *,
    nonce: str = "abcdef123456",
    ts: float = NOW,
    cs: str = CS1,
    tsec: str = TS1,
    alg: str = "HMAC-SHA256",
    sig: str | None = None,
    signed_alg: str | None = None,
) -> TokenPassport:
    p = tba.sign_token_passport(
        account=acc,
        consumer_key=ck,
        token=tok,
        nonce=nonce,
        timestamp=int(ts),
        consumer_secret=cs,
        token_secret=tsec,
        algorithm=signed_alg or alg,
    )
    return replace(p, algorithm=alg, signature=p.signature if sig is None else sig)


def req(
    op: str = "get",
    v: tuple[int, int] = (2019, 1),
    *,
    path_v: Any = _SAME,
    ns_v: Any = _SAME,
    namespace: str | None = None,
    hp: Passport | None = None,
    token: TokenPassport | None = None,
    app: str | None = None,
    login: Passport | None = None,
    sso_p: SsoPassport | None = None,
    cookie: str | None = None,
    bad_cookie: bool = False,
) -> RequestFacts:
    path_version = v if path_v is _SAME else path_v
    ns_version = v if ns_v is _SAME else ns_v
    head = EnvelopeHead(
        operation=op,
        operation_namespace=namespace or (ns(ns_version) if ns_version else None),
        header_passport=hp,
        token_passport=token,
        application_id=app,
        login_passport=login,
        sso_passport=sso_p,
    )
    cookies = CookieFacts(invalid=True) if bad_cookie else CookieFacts(jsessionid=cookie)
    return RequestFacts(path_version=path_version, head=head, cookies=cookies)


# --------------------------------------------------------------------------- running a case


def settle(
    facts: RequestFacts,
    lookups: Lookups,
    pol: PolicySettings,
    fresh: bool = True,
) -> tuple[list[str], Forward | Reject]:
    steps: list[str] = []
    for _ in range(4):
        d: Decision = decide(facts, lookups, NOW, pol)
        match d:
            case CheckNonce():
                assert d.ttl_seconds == tba.nonce_ttl(pol.timestamp_skew_seconds)
                steps.append("nonce")
                lookups = replace(lookups, nonce_fresh=fresh)
            case Install():
                steps.append(f"install:{d.state.value}")
                lookups = replace(
                    lookups,
                    installation=InstallationView(
                        d.account, d.integration_id, d.state, InstalledVia.AUTO_INSTALL, NOW
                    ),
                )
            case Forward():
                steps.append(f"forward:{d.who.integration}")
                return steps, d
            case Reject():
                steps.append(f"reject:{d.reason.value}" + (f":{d.sub_reason}" if d.sub_reason else ""))
                return steps, d
    raise AssertionError("did not settle")


@dataclass(frozen=True)
class Case:
    id: str
    facts: RequestFacts
    expect: str
    setup: tuple[Setup, ...] = ()
    pol: PolicySettings = BASE
    fresh: bool = True
    check: tuple[tuple[str, Any], ...] = ()


def C(
    id: str,
    expect: str,
    facts: RequestFacts,
    *setup: Setup,
    pol: PolicySettings = BASE,
    fresh: bool = True,
    **check: Any,
) -> Any:
    return pytest.param(Case(id, facts, expect, setup, pol, fresh, tuple(check.items())), id=id)


def attr(obj: Any, dotted: str) -> Any:
    for part in dotted.split("__"):
        obj = getattr(obj, part)
    return obj


OK_TBA = "nonce>forward:rec1"
V = (2019, 1)

CASES = [
    # ---- R2: versions
    C("R2-version_required", "reject:version_required", req(hp=passport(), app=APP1, path_v=None, ns_v=None)),
    C(
        "R2-version_required-foreign-ns",
        "reject:version_required",
        req(hp=passport(), app=APP1, path_v=None, namespace="urn:example"),
    ),
    C(
        "R2-version_mismatch",
        "reject:version_mismatch",
        req(hp=passport(), app=APP1, path_v=(2019, 1), ns_v=(2019, 2)),
    ),
    C("R2-path-only", "forward:rec1", req(hp=passport(), app=APP1, ns_v=None, namespace="urn:core")),
    C("R2-namespace-only", "forward:rec1", req(hp=passport(), app=APP1, path_v=None)),
    C("R2-min-inside", "forward:default", req(v=(2008, 1), hp=passport())),
    C("R2-min-outside", "reject:version_unsupported", req(v=(2007, 2), hp=passport())),
    C("R2-max-inside", OK_TBA, req(v=(2025, 2), token=tp())),
    C("R2-max-outside", "reject:version_unsupported", req(v=(2026, 1), token=tp())),
    C(
        "R2-narrowed-range",
        "reject:version_unsupported",
        req(v=(2019, 1), token=tp()),
        pol=replace(BASE, min_version=(2020, 1)),
    ),
    C(
        "R2-before-R3-mismatch",
        "reject:version_mismatch",
        req("getDataCenterUrls", path_v=(2019, 1), ns_v=(2018, 2)),
    ),
    C("R2-before-R3-range", "reject:version_unsupported", req("getDataCenterUrls", v=(2030, 1))),
    # ---- R3: getDataCenterUrls
    C(
        "R3-no-auth",
        "forward:none",
        req("getDataCenterUrls", v=(2024, 1)),
        who__auth_method=AuthMethod.NONE,
        forward_session_cookie=False,
        who__account=None,
    ),
    C("R3-before-cookie-rule", "forward:none", req("getDataCenterUrls", bad_cookie=True)),
    C(
        "R3-cookie-not-forwarded",
        "forward:none",
        req("getDataCenterUrls", cookie="S1"),
        forward_session_cookie=False,
    ),
    C("R3-with-credentials-still-none", "forward:none", req("getDataCenterUrls", token=tp(), app=APP1)),
    # ---- cookie rules
    C("cookie-invalid-passport", "reject:invalid_session", req(hp=passport(), app=APP1, bad_cookie=True)),
    C("cookie-invalid-alone", "reject:invalid_session", req(bad_cookie=True)),
    C("cookie-invalid-before-R4", "reject:invalid_session", req(token=tp(), hp=passport(), bad_cookie=True)),
    C(
        "cookie-beside-passport-ignored",
        "forward:rec1",
        req(hp=passport(), app=APP1, cookie="S1"),
        forward_session_cookie=False,
        who__auth_method=AuthMethod.USER_CREDENTIALS,
    ),
    C("cookie-unknown-beside-passport", "forward:rec1", req(hp=passport(), app=APP1, cookie="nope")),
    # ---- R4: ambiguous_auth
    C("R4-tba+passport", "reject:ambiguous_auth", req(token=tp(), hp=passport())),
    C("R4-tba+login", "reject:ambiguous_auth", req("login", token=tp(), login=passport())),
    C("R4-header-passport+login", "reject:ambiguous_auth", req("login", hp=passport(), login=passport(), app=APP1)),
    C("R4-tba+ssoLogin", "reject:ambiguous_auth", req("ssoLogin", token=tp(), sso_p=sso())),
    C("R4-tba+jsessionid", "reject:ambiguous_auth", req(token=tp(), cookie="S1")),
    C("R4-tba+app-id", "reject:ambiguous_auth", req(token=tp(), app=APP1)),
    C("R4-before-R5", "reject:ambiguous_auth", req(v=(2021, 1), token=tp(), hp=passport())),
    C("R4-before-R6", "reject:ambiguous_auth", req(v=(2014, 2), token=tp(), app=APP1)),
    # ---- R5: passport_unsupported
    C("R5-passport-2020.2", "reject:passport_unsupported", req(v=(2020, 2), hp=passport(), app=APP1)),
    C("R5-passport-2020.1", "forward:rec1", req(v=(2020, 1), hp=passport(), app=APP1)),
    C(
        "R5-login-2020.2",
        "reject:passport_unsupported",
        req("login", v=(2020, 2), login=passport(), app=APP1),
    ),
    C(
        "R5-ssoLogin-2020.2",
        "reject:passport_unsupported",
        req("ssoLogin", v=(2020, 2), sso_p=sso(), app=APP1),
    ),
    C("R5-session-2020.2", "reject:passport_unsupported", req(v=(2020, 2), cookie="S1")),
    C("R5-session-2020.1", "forward:rec1", req(v=(2020, 1), cookie="S1")),
    C("R5-default-session-2023.1", "reject:passport_unsupported", req(v=(2023, 1), cookie="SD")),
    C("R5-tba-2020.2-fine", OK_TBA, req(v=(2020, 2), token=tp())),
    C("R5-before-R7", "reject:passport_unsupported", req(v=(2021, 1), hp=passport(UNKNOWN), app=APP1)),
    # ---- R6: tba_unsupported_endpoint
    C("R6-tba-2015.1", "reject:tba_unsupported_endpoint", req(v=(2015, 1), token=tp())),
    C("R6-tba-2015.2", OK_TBA, req(v=(2015, 2), token=tp())),
    C("R6-before-R7", "reject:tba_unsupported_endpoint", req(v=(2012, 1), token=tp(UNKNOWN))),
    # ---- R7: invalid_account
    C("R7-passport-unknown", "reject:invalid_account", req(hp=passport(UNKNOWN), app=APP1)),
    C("R7-passport-no-account", "reject:invalid_account", req(hp=passport(None), app=APP1)),
    C("R7-login-unknown", "reject:invalid_account", req("login", login=passport(UNKNOWN), app=APP1)),
    C("R7-sso-unknown", "reject:invalid_account", req("ssoLogin", sso_p=sso(UNKNOWN), app=APP1)),
    C("R7-tba-unknown", "reject:invalid_account", req(token=tp(UNKNOWN))),
    C("R7-before-R8", "reject:invalid_account", req(v=(2014, 1), hp=passport(UNKNOWN))),
    C("R7-before-R9", "reject:invalid_account", req(v=(2016, 1), hp=passport(UNKNOWN))),
    C(
        "R7-auto-register-default",
        "forward:default",
        req(v=(2014, 1), hp=passport(UNKNOWN)),
        pol=AUTO_REGISTER,
        who__account=UNKNOWN,
    ),
    C(
        "R7-auto-register-not-installed",
        "reject:unknown_application",
        req(hp=passport(UNKNOWN), app=APP1),
        pol=AUTO_REGISTER,
    ),
    C(
        "R7-account-case-insensitive",
        "forward:rec1",
        req(hp=passport(ACC.lower()), app=APP1),
        who__account=ACC,
    ),
    C(
        "R7-sandbox-case-insensitive",
        "forward:default",
        req(v=(2015, 1), hp=passport("5555555_sb1")),
        who__account=APPROVER,
    ),
    C("R7-tba-account-as-sent", OK_TBA, req(token=tp(ACC.lower())), who__account=ACC),
    # ---- R8: the Default Web Services Integrations record
    C(
        "R8-passport-2015.1-enabled",
        "forward:default",
        req(v=(2015, 1), hp=passport()),
        who__auth_method=AuthMethod.USER_CREDENTIALS,
        open_session=None,
    ),
    C(
        "R8-passport-2015.1-blocked",
        "reject:default_integration_blocked",
        req(v=(2015, 1), hp=passport()),
        account(ACC, default_state=State.BLOCKED),
        who__integration="default",
    ),
    C(
        "R8-login-opens-default-session",
        "forward:default",
        req("login", v=(2012, 2), login=passport()),
        open_session__integration_id=None,
        open_session__user=EMAIL,
        open_session__role="3",
        open_session__account=ACC,
    ),
    C(
        "R8-ssoLogin-default",
        "forward:default",
        req("ssoLogin", v=(2010, 1), sso_p=sso()),
        open_session__user="partner-user-7",
    ),
    C(
        "R8-login-blocked",
        "reject:default_integration_blocked",
        req("login", v=(2012, 2), login=passport()),
        account(ACC, default_state=State.BLOCKED),
    ),
    C("R8-with-app-id-uses-record", "forward:rec1", req(v=(2015, 1), hp=passport(), app=APP1)),
    C(
        "R8-default-session-any-endpoint",
        "forward:default",
        req(v=(2019, 2), cookie="SD"),
        forward_session_cookie=True,
        who__auth_method=AuthMethod.SESSION,
    ),
    C(
        "R8-default-session-blocked",
        "reject:default_integration_blocked",
        req(v=(2019, 2), cookie="SD"),
        account(ACC, default_state=State.BLOCKED),
    ),
    C(
        "R8-default-session-logout",
        "forward:default",
        req("logout", v=(2014, 1), cookie="SD"),
        close_session="SD",
    ),
    # ---- R9: application_id_required
    C("R9-passport-2015.2", "reject:application_id_required", req(v=(2015, 2), hp=passport())),
    C("R9-login-2016.1", "reject:application_id_required", req("login", v=(2016, 1), login=passport())),
    C("R9-ssoLogin-2019.1", "reject:application_id_required", req("ssoLogin", sso_p=sso())),
    C(
        "R9-cookie-beside-passport-does-not-count",
        "reject:application_id_required",
        req(hp=passport(), cookie="S1"),
    ),
    C("R9-blank-app-id", "reject:application_id_required", req(hp=passport(), app="  ")),
    # ---- R10: credentials_required
    C("R10-nothing", "reject:credentials_required", req()),
    C("R10-app-id-only", "reject:credentials_required", req(app=APP1)),
    C("R10-old-endpoint", "reject:credentials_required", req(v=(2009, 2))),
    # ---- R11: invalid_session
    C("R11-unknown", "reject:invalid_session", req(cookie="nope")),
    C("R11-unknown-with-app-id", "reject:invalid_session", req(cookie="nope", app=APP1)),
    C("R11-unknown-old-endpoint", "reject:invalid_session", req(v=(2014, 1), cookie="nope")),
    C("R11-idle-expired", "reject:invalid_session", req(cookie="S1"), session("S1", last_seen=NOW - 1201)),
    C("R11-idle-boundary", "forward:rec1", req(cookie="S1"), session("S1", last_seen=NOW - 1200)),
    C(
        "R11-absolute-expired",
        "reject:invalid_session",
        req(cookie="S1"),
        session("S1", created_at=NOW - 3601, last_seen=NOW - 5),
    ),
    C(
        "R11-absolute-boundary",
        "forward:rec1",
        req(cookie="S1"),
        session("S1", created_at=NOW - 3600, last_seen=NOW - 5),
    ),
    C(
        "R11-expired-default-session",
        "reject:invalid_session",
        req(cookie="SD"),
        session("SD", last_seen=NOW - 5000),
    ),
    C("R11-record-removed", "reject:invalid_session", req(cookie="SGONE")),
    C("R11-record-uninstalled", "reject:invalid_session", req(cookie="S1"), no_installation(ACC, "rec1")),
    # ---- R12: unknown_application / invalid_login consumer_key_unknown
    C("R12-unknown-app-id", "reject:unknown_application", req(hp=passport(), app="F" * 32)),
    C("R12-malformed-app-id", "reject:unknown_application", req(hp=passport(), app="not-an-id")),
    C(
        "R12-uuid-form",
        "forward:rec1",
        req(hp=passport(), app="aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaa1"),
        who__application_id=APP1,
    ),
    C("R12-not-installed", "reject:unknown_application", req(hp=passport(), app=APP3)),
    C("R12-installed-elsewhere-bundle", "forward:shared", req(hp=passport(), app=APP4)),
    C("R12-data-op-never-auto-installs", "reject:unknown_application", req(hp=passport(), app=APP2)),
    C(
        "R12-old-endpoint-data-op-never-auto-installs",
        "reject:unknown_application",
        req(v=(2014, 1), hp=passport(), app=APP2),
    ),
    C(
        "R12-login-auto-install-on-success",
        "forward:auto",
        req("login", login=passport(), app=APP2),
        install_on_success=True,
        open_session__integration_id="auto",
    ),
    C(
        "R12-ssoLogin-auto-install-on-success",
        "forward:auto",
        req("ssoLogin", sso_p=sso(), app=APP2),
        install_on_success=True,
        open_session__user="partner-user-7",
    ),
    C(
        "R12-login-not-auto-installable",
        "reject:unknown_application",
        req("login", login=passport(), app=APP3),
    ),
    C(
        "R12-login-auto-install-not-permitted",
        "reject:auth_method_not_permitted",
        req("login", login=passport(), app=APP2),
        integration("auto", auth=AuthFlags(user_credentials=False)),
    ),
    C(
        "R12-login-installed-no-reinstall",
        "forward:rec1",
        req("login", login=passport(), app=APP1),
        install_on_success=False,
        open_session__integration_id="rec1",
    ),
    C(
        "R12-tba-consumer-key-unknown",
        "reject:invalid_login:consumer_key_unknown",
        req(token=tp(ck="0" * 64)),
    ),
    C(
        "R12-tba-not-installed",
        "reject:invalid_login:consumer_key_unknown",
        req(token=tp(ck=CK3, tok=T_FOREIGN, cs=CS3)),
    ),
    # ---- R13: token-based authentication
    C(
        "R13-ok",
        OK_TBA,
        req(token=tp()),
        who__user=EMAIL,
        who__role="3",
        who__auth_method=AuthMethod.TOKEN_BASED,
        who__application_id=APP1,
    ),
    C("R13-token-unknown", "reject:invalid_login:token_unknown", req(token=tp(tok="0" * 64))),
    C("R13-token-of-other-account", "reject:invalid_login:token_unknown", req(token=tp(tok=T_OTHER_ACC))),
    C("R13-token-of-other-integration", "reject:invalid_login:token_unknown", req(token=tp(tok=T_AUTO))),
    C("R13-token-revoked", "reject:invalid_login:token_revoked", req(token=tp()), token(T1, revoked=True)),
    C(
        "R13-revoked-wrong-signature",
        "reject:invalid_login:signature_invalid",
        req(token=tp(cs="0" * 64)),
        token(T1, revoked=True),
    ),
    C(
        "R13-signature-wrong-consumer-secret",
        "reject:invalid_login:signature_invalid",
        req(token=tp(cs="0" * 64)),
    ),
    C(
        "R13-signature-wrong-token-secret",
        "reject:invalid_login:signature_invalid",
        req(token=tp(tsec="0" * 64)),
    ),
    C("R13-signature-garbage", "reject:invalid_login:signature_invalid", req(token=tp(sig="bm9wZQ=="))),
    C("R13-signature-empty", "reject:invalid_login:signature_invalid", req(token=tp(sig=""))),
    C("R13-algorithm-sha1-refused", "reject:invalid_login:algorithm_refused", req(token=tp(alg="HMAC-SHA1"))),
    C("R13-algorithm-sha1-allowed", OK_TBA, req(token=tp(alg="HMAC_SHA1")), pol=SHA1_ALLOWED),
    C("R13-algorithm-underscore-lower", OK_TBA, req(token=tp(alg="hmac_sha256"))),
    C(
        "R13-algorithm-unknown",
        "reject:invalid_login:algorithm_refused",
        req(token=tp(alg="PLAINTEXT", signed_alg="HMAC-SHA256")),
    ),
    C(
        "R13-algorithm-missing",
        "reject:invalid_login:algorithm_refused",
        req(token=replace(tp(), algorithm=None)),
    ),
    C("R13-timestamp-old", "reject:invalid_login:timestamp_refused", req(token=tp(ts=NOW - 301))),
    C("R13-timestamp-old-boundary", OK_TBA, req(token=tp(ts=NOW - 300))),
    C("R13-timestamp-future", "reject:invalid_login:timestamp_refused", req(token=tp(ts=NOW + 301))),
    C("R13-timestamp-future-boundary", OK_TBA, req(token=tp(ts=NOW + 300))),
    C(
        "R13-timestamp-not-a-number",
        "reject:invalid_login:timestamp_refused",
        req(token=replace(tp(), timestamp="soon")),
    ),
    C("R13-nonce-short", "reject:invalid_login:nonce_rejected", req(token=tp(nonce="abc12"))),
    C("R13-nonce-6", OK_TBA, req(token=tp(nonce="abc123"))),
    C("R13-nonce-64", OK_TBA, req(token=tp(nonce="n" * 64))),
    C("R13-nonce-65", "reject:invalid_login:nonce_rejected", req(token=tp(nonce="n" * 65))),
    C("R13-nonce-not-alnum", "reject:invalid_login:nonce_rejected", req(token=tp(nonce="abc-123-def"))),
    C("R13-nonce-used", "nonce>reject:invalid_login:nonce_used", req(token=tp()), fresh=False),
    C(
        "R13-wrong-signature-on-blocked",
        "reject:invalid_login:signature_invalid",
        req(token=tp(cs="0" * 64)),
        installation(ACC, "rec1", State.BLOCKED),
    ),
    C(
        "R13-order-algorithm-before-nonce",
        "reject:invalid_login:algorithm_refused",
        req(token=tp(alg="HMAC-MD5", signed_alg="HMAC-SHA256", nonce="x")),
    ),
    C(
        "R13-order-nonce-before-timestamp",
        "reject:invalid_login:nonce_rejected",
        req(token=tp(nonce="x", ts=NOW - 9999)),
    ),
    C(
        "R13-order-timestamp-before-key",
        "reject:invalid_login:timestamp_refused",
        req(token=tp(ck="0" * 64, ts=NOW - 9999)),
    ),
    C(
        "R13-order-key-before-token",
        "reject:invalid_login:consumer_key_unknown",
        req(token=tp(ck="0" * 64, tok="0" * 64)),
    ),
    C("R13-auto-install", "nonce>install:enabled>forward:auto", req(token=tp(ck=CK2, tok=T_AUTO, cs=CS2))),
    C(
        "R13-auto-install-needs-approval",
        "nonce>install:waiting_for_approval>reject:integration_waiting_for_approval",
        req(token=tp(APPROVER, CK2, T_APPR, cs=CS2)),
    ),
    C(
        "R13-auto-install-bad-signature",
        "reject:invalid_login:signature_invalid",
        req(token=tp(ck=CK2, tok=T_AUTO, cs="0" * 64)),
    ),
    C(
        "R13-auto-install-replayed",
        "nonce>reject:invalid_login:nonce_used",
        req(token=tp(ck=CK2, tok=T_AUTO, cs=CS2)),
        fresh=False,
    ),
    C(
        "R13-auto-install-tba-not-permitted",
        "nonce>reject:auth_method_not_permitted",
        req(token=tp(ck=CK2, tok=T_AUTO, cs=CS2)),
        integration("auto", auth=AuthFlags(token_based=False)),
    ),
    # ---- R14: integration_blocked
    C(
        "R14-passport",
        "reject:integration_blocked",
        req(hp=passport(), app=APP1),
        installation(ACC, "rec1", State.BLOCKED),
        who__integration="rec1",
    ),
    C(
        "R14-login",
        "reject:integration_blocked",
        req("login", login=passport(), app=APP1),
        installation(ACC, "rec1", State.BLOCKED),
    ),
    C(
        "R14-tba",
        "nonce>reject:integration_blocked",
        req(token=tp()),
        installation(ACC, "rec1", State.BLOCKED),
    ),
    C(
        "R14-session-block-existing",
        "reject:integration_blocked",
        req(cookie="S1"),
        installation(ACC, "rec1", State.BLOCKED),
    ),
    C(
        "R14-session-grandfathered",
        "forward:rec1",
        req(cookie="S1"),
        installation(ACC, "rec1", State.BLOCKED),
        pol=NO_BLOCK_EXISTING,
    ),
    C(
        "R14-session-after-block",
        "reject:integration_blocked",
        req(cookie="S1"),
        installation(ACC, "rec1", State.BLOCKED, since=NOW - 500),
        pol=NO_BLOCK_EXISTING,
    ),
    C(
        "R14-before-R16",
        "reject:integration_blocked",
        req(hp=passport(), app=APP1),
        installation(ACC, "rec1", State.BLOCKED),
        integration("rec1", auth=AuthFlags(user_credentials=False)),
    ),
    C(
        "R14-installed-copy-blocked",
        "reject:integration_blocked",
        req(hp=passport(), app=APP4),
        installation(ACC, "shared", State.BLOCKED),
    ),
    C(
        "R14-other-account-block-irrelevant",
        "forward:shared",
        req(hp=passport(), app=APP4),
        installation(OTHER, "shared", State.BLOCKED),
    ),
    # ---- R15: integration_waiting_for_approval
    C(
        "R15-passport",
        "reject:integration_waiting_for_approval",
        req(hp=passport(), app=APP4),
        installation(ACC, "shared", State.WAITING),
    ),
    C(
        "R15-tba",
        "nonce>reject:integration_waiting_for_approval",
        req(token=tp()),
        installation(ACC, "rec1", State.WAITING),
    ),
    C(
        "R15-session",
        "reject:integration_waiting_for_approval",
        req(cookie="S1"),
        installation(ACC, "rec1", State.WAITING),
        pol=NO_BLOCK_EXISTING,
    ),
    # ---- R16: auth_method_not_permitted
    C(
        "R16-passport",
        "reject:auth_method_not_permitted",
        req(hp=passport(), app=APP1),
        integration("rec1", auth=AuthFlags(user_credentials=False)),
    ),
    C(
        "R16-login",
        "reject:auth_method_not_permitted",
        req("login", login=passport(), app=APP1),
        integration("rec1", auth=AuthFlags(user_credentials=False)),
    ),
    C(
        "R16-session",
        "reject:auth_method_not_permitted",
        req(cookie="S1"),
        integration("rec1", auth=AuthFlags(user_credentials=False)),
    ),
    C(
        "R16-tba",
        "nonce>reject:auth_method_not_permitted",
        req(token=tp()),
        integration("rec1", auth=AuthFlags(token_based=False)),
    ),
    C(
        "R16-tba-only-record-passport-refused",
        "reject:auth_method_not_permitted",
        req(hp=passport(), app=APP1),
        integration("rec1", auth=AuthFlags(user_credentials=False, token_based=True)),
    ),
    # ---- R17: forward, with attribution
    C(
        "R17-passport",
        "forward:rec1",
        req(hp=passport(), app=APP1),
        who__user=EMAIL,
        who__role="3",
        who__account=ACC,
        who__auth_method=AuthMethod.USER_CREDENTIALS,
        forward_session_cookie=False,
        open_session=None,
        close_session=None,
    ),
    C(
        "R17-login-opens-session",
        "forward:rec1",
        req("login", login=passport(), app=APP1),
        open_session__account=ACC,
        open_session__integration_id="rec1",
        open_session__user=EMAIL,
    ),
    C(
        "R17-session",
        "forward:rec1",
        req(cookie="S1"),
        forward_session_cookie=True,
        who__auth_method=AuthMethod.SESSION,
        who__user=EMAIL,
        who__role="3",
        who__account=ACC,
    ),
    C(
        "R17-session-logout",
        "forward:rec1",
        req("logout", cookie="S1"),
        close_session="S1",
        forward_session_cookie=True,
    ),
    C(
        "R17-passport-logout-closes-nothing",
        "forward:rec1",
        req("logout", hp=passport(), app=APP1, cookie="S1"),
        close_session=None,
    ),
    C("R17-session-with-app-id", "forward:rec1", req(cookie="S1", app=APP3)),
    C("R17-tba", OK_TBA, req(token=tp()), forward_session_cookie=False, who__account=ACC),
]


@pytest.mark.parametrize("case", CASES)
def test_conformance(case: Case) -> None:
    rec = world()
    for apply in case.setup:
        apply(rec)
    steps, final = settle(case.facts, rec.lookups(plan_lookups(case.facts)), case.pol, case.fresh)
    assert ">".join(steps) == case.expect
    for dotted, want in case.check:
        assert attr(final, dotted) == want, dotted


def _expected_reasons() -> set[str]:
    return {c.values[0].expect.split(">")[-1].split(":")[1] for c in CASES if "reject:" in c.values[0].expect}


def test_table_covers_every_policy_reason_and_sub_reason() -> None:
    outside = {
        Reason.MALFORMED_REQUEST,
        Reason.REQUEST_TOO_LARGE,
        Reason.STORE_UNAVAILABLE,
        Reason.UPSTREAM_UNAVAILABLE,
        Reason.UPSTREAM_TIMEOUT,
    }
    assert _expected_reasons() == {r.value for r in Reason} - {r.value for r in outside}
    subs = {c.values[0].expect.rsplit(":", 1)[1] for c in CASES if "invalid_login:" in c.values[0].expect}
    assert subs == set(tba.SUB_REASONS)
    rules = {c.values[0].id.split("-")[0] for c in CASES}
    assert {f"R{n}" for n in range(2, 18)} <= rules


def test_case_ids_unique() -> None:
    ids = [c.values[0].id for c in CASES]
    assert len(ids) == len(set(ids))


# --------------------------------------------------------------------------- plan_lookups


def test_plan_session_only_when_attributed_by_session() -> None:
    assert plan_lookups(req(cookie="S1")).session_id == "S1"
    assert plan_lookups(req(hp=passport(), app=APP1, cookie="S1")).session_id is None
    assert plan_lookups(req("login", login=passport(), cookie="S1")).session_id is None


def test_plan_names_normalised_keys() -> None:
    plan = plan_lookups(req(hp=passport(ACC.lower()), app="aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaa1"))
    assert (plan.account, plan.application_id, plan.consumer_key, plan.token_id) == (ACC, APP1, None, None)
    plan = plan_lookups(req(token=tp(ACC.lower())))
    assert (plan.account, plan.consumer_key, plan.token_id, plan.application_id) == (ACC, CK1, T1, None)
    plan = plan_lookups(req("ssoLogin", sso_p=sso(), app=APP2))
    assert (plan.account, plan.application_id) == (ACC, APP2)


def test_plan_is_empty_when_no_store_is_needed() -> None:
    for facts in (
        req(path_v=None, ns_v=None, hp=passport()),
        req("getDataCenterUrls"),
        req(token=tp(), hp=passport()),
        req(v=(2021, 1), hp=passport(), app=APP1),
        req(bad_cookie=True, cookie="S1"),
    ):
        plan = plan_lookups(facts)
        assert plan == type(plan)()


@pytest.mark.parametrize(("facts", "reason", "auth", "user", "app"), [
    (req(path_v=None, ns_v=None, hp=passport(), app=APP1), Reason.VERSION_REQUIRED, AuthMethod.USER_CREDENTIALS,
     EMAIL, APP1),
    (req(path_v=(2019, 1), ns_v=(2019, 2), hp=passport()), Reason.VERSION_MISMATCH, AuthMethod.USER_CREDENTIALS,
     EMAIL, None),
    (req(v=(2007, 2), hp=passport(), app=APP1), Reason.VERSION_UNSUPPORTED, AuthMethod.USER_CREDENTIALS, EMAIL,
     APP1),
    (req(v=(2026, 1), token=tp()), Reason.VERSION_UNSUPPORTED, AuthMethod.TOKEN_BASED, "", None),
    (req(bad_cookie=True, hp=passport()), Reason.INVALID_SESSION, AuthMethod.USER_CREDENTIALS, EMAIL, None),
])
def test_rejections_before_the_store_name_the_account_the_head_names(
        facts: RequestFacts, reason: Reason, auth: AuthMethod, user: str, app: str | None) -> None:
    # SPEC 5: an account's usage log holds all of its requests, R2 and cookie refusals too
    d = decide(facts, Lookups(), NOW, BASE)
    assert isinstance(d, Reject) and d.reason is reason
    assert (d.who.account, d.who.auth_method, d.who.user, d.who.application_id) == (ACC, auth, user, app)


def test_session_lookups_for_another_account_are_refused() -> None:
    rec = world()
    facts = req(cookie="S1")
    lookups = replace(rec.lookups(plan_lookups(facts)), account=AccountView(OTHER))
    d = decide(facts, lookups, NOW, BASE)
    assert isinstance(d, Reject) and d.reason is Reason.INVALID_SESSION


def test_policy_settings_from_config() -> None:
    s = load_settings(environ={"GATEWAY_TBA__ALLOWED_ALGORITHMS": "[hmac_sha1, HMAC-SHA256]"})
    pol = policy_settings(s)
    assert pol.allowed_algorithms == frozenset({"HMAC-SHA1", "HMAC-SHA256"})
    assert (pol.min_version, pol.max_version, pol.timestamp_skew_seconds) == ((2008, 1), (2025, 2), 300)
    assert (pol.idle_timeout_seconds, pol.absolute_timeout_seconds, pol.block_existing) == (1200, 3600, True)


# --------------------------------------------------------------------------- properties

_text = st.one_of(st.none(), st.text(max_size=12), st.sampled_from([ACC, ACC.lower(), OTHER, APP1, CK1, T1]))
_version = st.one_of(st.none(), st.tuples(st.integers(2000, 2030), st.integers(0, 3)))
_passport = st.one_of(st.none(), st.builds(Passport, email=_text, password=_text, account=_text, role=_text))
_state = st.sampled_from(list(State))


@st.composite
def _facts(draw: st.DrawFn) -> RequestFacts:
    ns_v = draw(_version)
    head = EnvelopeHead(
        operation=draw(
            st.sampled_from(["get", "login", "ssoLogin", "logout", "getDataCenterUrls", "search"])
        ),
        operation_namespace=ns(ns_v) if ns_v else draw(st.one_of(st.none(), st.text(max_size=5))),
        header_passport=draw(_passport),
        token_passport=draw(
            st.one_of(
                st.none(),
                st.builds(
                    TokenPassport,
                    account=_text,
                    consumer_key=_text,
                    token=_text,
                    nonce=_text,
                    timestamp=_text,
                    signature=_text,
                    algorithm=st.one_of(_text, st.sampled_from(["HMAC-SHA256", "HMAC_SHA1"])),
                ),
            )
        ),
        application_id=draw(_text),
        login_passport=draw(_passport),
        sso_passport=draw(
            st.one_of(st.none(), st.builds(SsoPassport, partner_account=_text, partner_user_id=_text))
        ),
    )
    cookies = draw(
        st.builds(
            CookieFacts,
            jsessionid=st.one_of(st.none(), st.sampled_from(["S1", "SD", "x"])),
            invalid=st.booleans(),
        )
    )
    return RequestFacts(path_version=draw(_version), head=head, cookies=cookies)


@st.composite
def _lookups(draw: st.DrawFn) -> Lookups:
    acc = draw(st.sampled_from([ACC, OTHER]))
    return Lookups(
        account=draw(st.one_of(st.none(), st.builds(AccountView, st.just(acc), st.booleans(), _state))),
        integration=draw(
            st.one_of(
                st.none(),
                st.builds(
                    IntegrationView,
                    st.sampled_from(["rec1", "auto"]),
                    st.sampled_from([ACC, OTHER]),
                    st.just("n"),
                    st.sampled_from([APP1, APP2]),
                    st.sampled_from([CK1, CK2]),
                    st.just(CS1),
                    st.builds(AuthFlags, st.booleans(), st.booleans(), st.booleans()),
                    st.booleans(),
                ),
            )
        ),
        installation=draw(
            st.one_of(
                st.none(),
                st.builds(
                    InstallationView,
                    st.just(acc),
                    st.sampled_from(["rec1", "auto"]),
                    _state,
                    st.sampled_from(list(InstalledVia)),
                    st.floats(NOW - 1000, NOW + 1000),
                ),
            )
        ),
        token=draw(
            st.one_of(
                st.none(),
                st.builds(
                    TokenView,
                    st.sampled_from([T1, T_AUTO]),
                    st.just(TS1),
                    st.sampled_from([ACC, OTHER]),
                    st.sampled_from(["rec1", "auto"]),
                    _text.map(str),
                    _text.map(str),
                    st.booleans(),
                ),
            )
        ),
        session=draw(
            st.one_of(
                st.none(),
                st.builds(
                    SessionView,
                    st.sampled_from(["S1", "SD"]),
                    st.just(acc),
                    st.sampled_from([None, "rec1"]),
                    st.just(EMAIL),
                    st.just("3"),
                    st.floats(NOW - 5000, NOW),
                    st.floats(NOW - 5000, NOW),
                ),
            )
        ),
        nonce_fresh=draw(st.one_of(st.none(), st.booleans())),
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(facts=_facts(), lookups=_lookups(), auto_register=st.booleans(), block_existing=st.booleans())
def test_decide_is_total(
    facts: RequestFacts, lookups: Lookups, auto_register: bool, block_existing: bool
) -> None:
    pol = replace(BASE, auto_register=auto_register, block_existing=block_existing)
    d = decide(facts, lookups, NOW, pol)
    assert isinstance(d, Forward | Reject | CheckNonce | Install)
    plan_lookups(facts)
    if isinstance(d, Forward) and d.forward_session_cookie:
        assert d.who.auth_method is AuthMethod.SESSION


# --------------------------------------------------------------------------- the offline CLI

EXAMPLE = "tests/data/records.example.yaml"
_ENV = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:msg="urn:messages_2019_1.platform.webservices.netsuite.com">'
    "<soapenv:Header>{header}</soapenv:Header>"
    "<soapenv:Body><msg:{op}>{inner}</msg:{op}></soapenv:Body></soapenv:Envelope>"
)
_PASSPORT = (
    "<msg:passport><msg:email>jane@example.com</msg:email><msg:password>pw</msg:password>"
    '<msg:account>1234567</msg:account><msg:role internalId="3"/></msg:passport>'
    "<msg:applicationInfo><msg:applicationId>8a3f2c1d-4e5b-6a79-80c1-d2e3f4a5b6c7</msg:applicationId>"
    "</msg:applicationInfo>"
)

_APP_INFO = _PASSPORT[_PASSPORT.index("<msg:applicationInfo>") :]
_LOGIN_PASSPORT = _PASSPORT[: _PASSPORT.index("<msg:applicationInfo>")]


def _tba_header() -> str:
    p = tba.sign_token_passport(
        account="1234567",
        consumer_key="1" * 64,
        token="3" * 64,
        nonce="abcdef123",
        timestamp=int(NOW),
        consumer_secret="2" * 64,
        token_secret="4" * 64,
    )
    return (
        f"<msg:tokenPassport><msg:account>{p.account}</msg:account><msg:consumerKey>{p.consumer_key}"
        f"</msg:consumerKey><msg:token>{p.token}</msg:token><msg:nonce>{p.nonce}</msg:nonce>"
        f"<msg:timestamp>{p.timestamp}</msg:timestamp>"
        f'<msg:signature algorithm="HMAC_SHA256">{p.signature}</msg:signature></msg:tokenPassport>'
    )


@pytest.mark.parametrize(
    ("header", "op", "path", "cookie", "code", "out"),
    [
        (
            _PASSPORT,
            "get",
            "/services/NetSuitePort_2019_1",
            None,
            0,
            "forward account=1234567 integration=0f3c",
        ),
        (_PASSPORT, "get", "/services/NetSuitePort_2019_2", None, 1, "reject reason=version_mismatch"),
        ("", "get", None, "abc123session", 0, "forward account=1234567 integration=0f3c"),
        ("", "get", None, "JSESSIONID=abc123session; lb=1", 0, "auth_method=session"),
        ("", "get", None, "JSESSIONID=nope", 1, "reject reason=invalid_session"),
        (_tba_header(), "get", None, None, 0, "auth_method=token_based user=jane@example.com"),
        (_APP_INFO, "login", None, None, 0, "open_session=0f3c"),
        ("<msg:passport>", "get", None, None, 1, "reject reason=malformed_request"),
    ],
)
def test_run_decide(
    tmp_path: Any,
    capsys: pytest.CaptureFixture[str],
    header: str,
    op: str,
    path: str | None,
    cookie: str | None,
    code: int,
    out: str,
) -> None:
    from gateway.decide_cli import run_decide

    envelope = tmp_path / "env.xml"
    inner = _LOGIN_PASSPORT if op == "login" else "<msg:x/>"
    envelope.write_text(_ENV.format(header=header, op=op, inner=inner))
    assert run_decide(str(envelope), EXAMPLE, path, cookie, None, NOW + 60) == code
    assert out in capsys.readouterr().out


def test_run_decide_bad_inputs(tmp_path: Any) -> None:
    from gateway.decide_cli import run_decide

    envelope = tmp_path / "env.xml"
    envelope.write_text(_ENV.format(header=_PASSPORT, op="get", inner=""))
    assert run_decide(str(envelope), str(tmp_path / "missing.yaml"), None, None, None, NOW) == 2
    assert run_decide(str(envelope), EXAMPLE, "/not/soap", None, None, NOW) == 2
