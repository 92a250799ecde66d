"""RESTlet OAuth 1.0a / NLAuth and the Issue Token endpoint (SPEC section 3), signed with
oauthlib's own client."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import pytest
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA256, Client

from gateway.config import load_settings
from gateway.core import tba
from gateway.core.decision import AuthMethod, CheckNonce, Decision, Forward, Install, Reject
from gateway.core.lookups import Lookups
from gateway.core.oauth1 import (
    AuthHeader,
    RestletFacts,
    claimed_attribution,
    decide_issue_token,
    decide_restlet,
    parse_authorization,
    plan_issue_token_lookups,
    plan_restlet_lookups,
)
from gateway.core.policy import PolicySettings, policy_settings
from gateway.core.reasons import Reason
from gateway.core.records import (
    AccountView,
    AuthFlags,
    InstallationView,
    InstalledVia,
    IntegrationView,
    State,
    TokenView,
)

NOW = 1_700_000_000
ACC = "1234567_SB1"
CK, CS = "a" * 64, "b" * 64
TID, TS = "c" * 64, "d" * 64
URL = "https://1234567-sb1.restlets.example.com/app/site/hosting/restlet.nl?script=12&deploy=1"
POL = policy_settings(load_settings(environ={}))

REC = IntegrationView("rec1", ACC, "Sync", "A" * 32, CK, CS, AuthFlags(tba_issue_token_endpoint=True))
FOREIGN = IntegrationView(
    "ext",
    "7654321",
    "Vendor app",
    "B" * 32,
    CK,
    CS,
    AuthFlags(tba_issue_token_endpoint=True),
    auto_install=True,
)
INSTALLED = InstallationView(ACC, "rec1", State.ENABLED, InstalledVia.OWNER)
TOKEN = TokenView(TID, TS, ACC, "rec1", "jane@example.com", "3")
LOOKUPS = Lookups(account=AccountView(ACC), integration=REC, installation=INSTALLED, token=TOKEN)


def oauth_request(
    method: str = "GET",
    url: str = URL,
    *,
    realm: str = "1234567_sb1",
    nonce: str = "abc123def456",
    timestamp: int = NOW,
    secret: str = CS,
    token_secret: str = TS,
    body: str | None = None,
) -> RestletFacts:
    client = Client(
        CK,
        client_secret=secret,
        resource_owner_key=TID,
        resource_owner_secret=token_secret,
        signature_method=SIGNATURE_HMAC_SHA256,
        realm=realm,
        nonce=nonce,
        timestamp=str(timestamp),
    )
    headers = {"Content-Type": "application/json"} if body is not None else {}
    _, signed, _ = client.sign(url, http_method=method, body=body, headers=headers)
    return facts_for(method, url, signed["Authorization"])


def facts_for(method: str, url: str, authorization: str) -> RestletFacts:
    parts = urlsplit(url)
    return RestletFacts(
        method=method,
        base_uri=urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),
        query=tuple(parse_qsl(parts.query, keep_blank_values=True)),
        auth=parse_authorization([authorization]),
    )


def settle(decide_once: object, lookups: Lookups, fresh: bool = True) -> tuple[list[str], Decision]:
    steps: list[str] = []
    for _ in range(4):
        d: Decision = decide_once(lookups)  # type: ignore[operator]
        if isinstance(d, CheckNonce):
            steps.append(f"nonce:{d.scope}")
            lookups = replace(lookups, nonce_fresh=fresh)
        elif isinstance(d, Install):
            steps.append(f"install:{d.state.value}")
            lookups = replace(
                lookups,
                installation=InstallationView(
                    d.account, d.integration_id, d.state, InstalledVia.AUTO_INSTALL
                ),
            )
        else:
            steps.append("forward" if isinstance(d, Forward) else f"reject:{d.reason.value}:{d.sub_reason}")
            return steps, d
    raise AssertionError("did not settle")


def restlet(
    facts: RestletFacts, lookups: Lookups = LOOKUPS, pol: PolicySettings = POL, fresh: bool = True
) -> tuple[list[str], Decision]:
    return settle(lambda lk: decide_restlet(facts, lk, NOW, pol), lookups, fresh)


# --------------------------------------------------------------------------- header parsing


def test_parse_oauth_header() -> None:
    h = parse_authorization(['oauth realm="123_SB1", oauth_nonce="a%20b", oauth_token=tok'])
    assert h.scheme == "OAuth"
    assert h.params == (("realm", "123_SB1"), ("oauth_nonce", "a b"), ("oauth_token", "tok"))


def test_parse_nlauth_header() -> None:
    h = parse_authorization(
        [
            "NLAUTH nlauth_account=123, nlauth_email=jane@example.com, "
            'nlauth_signature="p,w\\"d", nlauth_role=3'
        ]
    )
    assert h.scheme == "NLAuth"
    assert h.get("nlauth_signature") == 'p,w"d' and h.get("nlauth_role") == "3"


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["OAuth a=1", "OAuth b=2"],
        ["Basic Zm9vOmJhcg=="],
        ["Bearer x"],
        ["OAuth realm"],
        ['OAuth oauth_nonce="1", oauth_nonce="2"'],
        [""],
    ],
)
def test_parse_rejects(values: list[str]) -> None:
    with pytest.raises(ValueError):
        parse_authorization(values)


# --------------------------------------------------------------------------- RESTlets: OAuth


def test_oauth_get_forwards() -> None:
    steps, d = restlet(oauth_request())
    assert steps == [f"nonce:{TID}", "forward"]
    assert isinstance(d, Forward)
    assert (d.who.account, d.who.integration, d.who.auth_method, d.who.user, d.who.role) == (
        ACC,
        "rec1",
        AuthMethod.OAUTH1,
        "jane@example.com",
        "3",
    )


def test_oauth_post_json_body_forwards() -> None:
    steps, _ = restlet(oauth_request("POST", body='{"id": 7}'))
    assert steps == [f"nonce:{TID}", "forward"]


def test_oauth_public_base_url_normalised() -> None:
    facts = oauth_request()
    loud = replace(facts, base_uri="HTTPS://1234567-SB1.restlets.example.com:443/app/site/hosting/restlet.nl")
    assert restlet(loud)[0] == [f"nonce:{TID}", "forward"]
    moved = replace(facts, base_uri="https://gateway.internal/app/site/hosting/restlet.nl")
    assert restlet(moved)[0] == ["reject:invalid_login:signature_invalid"]


@pytest.mark.parametrize(
    ("param", "value", "sub"),
    [
        ("oauth_consumer_key", "e" * 64, "consumer_key_unknown"),
        ("oauth_token", "e" * 64, "token_unknown"),
        ("oauth_nonce", "abc123def457", "signature_invalid"),
        ("oauth_timestamp", str(NOW + 1), "signature_invalid"),
        ("oauth_signature_method", "HMAC-SHA1", "algorithm_refused"),
        ("oauth_signature_method", "PLAINTEXT", "algorithm_refused"),
        ("oauth_version", "1.1", "signature_invalid"),
        ("oauth_signature", "AAAA", "signature_invalid"),
    ],
)
def test_oauth_tampering(param: str, value: str, sub: str) -> None:
    facts = oauth_request()
    params = tuple((k, value if k == param else v) for k, v in facts.auth.params)
    tampered = replace(facts, auth=AuthHeader("OAuth", params))
    lookups = LOOKUPS if param != "oauth_consumer_key" else replace(LOOKUPS, integration=None)
    if param == "oauth_token":
        lookups = replace(lookups, token=None)
    assert restlet(tampered, lookups)[0] == [f"reject:invalid_login:{sub}"]


def test_oauth_tampered_request_line() -> None:
    facts = oauth_request()
    assert restlet(replace(facts, method="POST"))[0] == ["reject:invalid_login:signature_invalid"]
    assert restlet(replace(facts, query=(("script", "13"), ("deploy", "1"))))[0] == [
        "reject:invalid_login:signature_invalid"
    ]
    assert restlet(replace(facts, base_uri=facts.base_uri + "x"))[0] == [
        "reject:invalid_login:signature_invalid"
    ]


def test_oauth_signature_checks() -> None:
    assert restlet(oauth_request(secret="0" * 64))[0] == ["reject:invalid_login:signature_invalid"]
    assert restlet(oauth_request(token_secret="0" * 64))[0] == ["reject:invalid_login:signature_invalid"]
    assert restlet(oauth_request(timestamp=NOW - 301))[0] == ["reject:invalid_login:timestamp_refused"]
    assert restlet(oauth_request(nonce="abc"))[0] == ["reject:invalid_login:nonce_rejected"]
    assert restlet(oauth_request(), fresh=False)[0] == [f"nonce:{TID}", "reject:invalid_login:nonce_used"]
    revoked = replace(LOOKUPS, token=replace(TOKEN, revoked=True))
    assert restlet(oauth_request(), revoked)[0] == ["reject:invalid_login:token_revoked"]


def test_oauth_realm_is_the_account() -> None:
    assert restlet(oauth_request(), replace(LOOKUPS, account=None))[0] == ["reject:invalid_account:None"]
    facts = oauth_request()
    no_realm = replace(
        facts, auth=AuthHeader("OAuth", tuple(p for p in facts.auth.params if p[0] != "realm"))
    )
    assert restlet(no_realm)[0] == ["reject:invalid_account:None"]
    assert plan_restlet_lookups(facts).account == ACC


@pytest.mark.parametrize(
    ("state", "flags", "expect"),
    [
        (State.BLOCKED, AuthFlags(), "reject:integration_blocked:None"),
        (State.WAITING, AuthFlags(), "reject:integration_waiting_for_approval:None"),
        (State.ENABLED, AuthFlags(token_based=False), "reject:auth_method_not_permitted:None"),
    ],
)
def test_oauth_record_state(state: State, flags: AuthFlags, expect: str) -> None:
    lookups = replace(
        LOOKUPS, installation=replace(INSTALLED, state=state), integration=replace(REC, auth=flags)
    )
    assert restlet(oauth_request(), lookups)[0] == [f"nonce:{TID}", expect]


def test_oauth_wrong_signature_on_blocked_record_is_invalid_login() -> None:
    lookups = replace(LOOKUPS, installation=replace(INSTALLED, state=State.BLOCKED))
    assert restlet(oauth_request(secret="0" * 64), lookups)[0] == ["reject:invalid_login:signature_invalid"]


def test_oauth_auto_install() -> None:
    lookups = Lookups(
        account=AccountView(ACC, require_approval=True),
        integration=FOREIGN,
        installation=None,
        token=replace(TOKEN, integration_id="ext"),
    )
    steps, d = restlet(oauth_request(), lookups)
    assert steps == [
        f"nonce:{TID}",
        "install:waiting_for_approval",
        "reject:integration_waiting_for_approval:None",
    ]


def test_json_statuses_for_restlet_rejections() -> None:
    _, d = restlet(oauth_request(secret="0" * 64))
    assert isinstance(d, Reject) and d.reason is Reason.INVALID_LOGIN


# --------------------------------------------------------------------------- RESTlets: NLAuth

NLAUTH = (
    "NLAuth nlauth_account=1234567_sb1, nlauth_email=jane@example.com, nlauth_signature=pw, nlauth_role=3"
)


def test_nlauth_forwarded_unattributed() -> None:
    facts = facts_for("GET", URL, NLAUTH + ", nlauth_application_id=nonsense")
    blocked = replace(LOOKUPS, installation=replace(INSTALLED, state=State.BLOCKED), integration=None)
    d = decide_restlet(facts, blocked, NOW, POL)
    assert isinstance(d, Forward)
    assert (d.who.account, d.who.integration, d.who.auth_method, d.who.user, d.who.role) == (
        ACC,
        "none",
        AuthMethod.NLAUTH,
        "jane@example.com",
        "3",
    )
    assert plan_restlet_lookups(facts).account == ACC


def test_nlauth_unknown_account() -> None:
    facts = facts_for("GET", URL, NLAUTH)
    d = decide_restlet(facts, Lookups(), NOW, POL)
    assert isinstance(d, Reject) and d.reason is Reason.INVALID_ACCOUNT
    d = decide_restlet(facts, Lookups(), NOW, replace(POL, auto_register=True))
    assert isinstance(d, Forward)


# --------------------------------------------------------------------------- Issue Token

ISSUE_URL = "https://1234567-sb1.suitetalk.example.com/rest/issuetoken"


def issue_token_request(
    *,
    secret: str = CS,
    nonce: str = "n0nce12345",
    timestamp: int = NOW,
    url: str = ISSUE_URL,
    nlauth: str = NLAUTH,
) -> RestletFacts:
    client = Client(
        CK,
        client_secret=secret,
        signature_method=SIGNATURE_HMAC_SHA256,
        nonce=nonce,
        timestamp=str(timestamp),
    )
    _, signed, _ = client.sign(url, http_method="POST")
    oauth_part = signed["Authorization"].split(" ", 1)[1]
    return facts_for("POST", url, f"{nlauth}, {oauth_part}")


ISSUE_LOOKUPS = Lookups(account=AccountView(ACC), integration=REC, installation=INSTALLED)


def issue(
    facts: RestletFacts, lookups: Lookups = ISSUE_LOOKUPS, fresh: bool = True
) -> tuple[list[str], Decision]:
    return settle(lambda lk: decide_issue_token(facts, lk, NOW, POL), lookups, fresh)


def test_issue_token_forwards() -> None:
    steps, d = issue(issue_token_request())
    assert steps == [f"nonce:ck:{CK}", "forward"]
    assert isinstance(d, Forward) and not d.install_on_success
    assert (d.who.integration, d.who.user, d.who.role, d.who.account) == (
        "rec1",
        "jane@example.com",
        "3",
        ACC,
    )
    plan = plan_issue_token_lookups(issue_token_request())
    assert (plan.account, plan.consumer_key, plan.token_id) == (ACC, CK, None)


def test_issue_token_with_query_parameters() -> None:
    assert issue(issue_token_request(url=ISSUE_URL + "?x=1"))[0] == [f"nonce:ck:{CK}", "forward"]


def test_issue_token_base_string_excludes_nlauth() -> None:
    # Changing nlauth_* (not signed) keeps the signature valid; the backend checks the password.
    other = NLAUTH.replace("nlauth_signature=pw", "nlauth_signature=other")
    assert issue(issue_token_request(nlauth=other))[0] == [f"nonce:ck:{CK}", "forward"]


@pytest.mark.parametrize(
    ("kwargs", "lookups", "expect"),
    [
        ({"secret": "0" * 64}, ISSUE_LOOKUPS, ["reject:invalid_login:signature_invalid"]),
        ({"timestamp": NOW - 301}, ISSUE_LOOKUPS, ["reject:invalid_login:timestamp_refused"]),
        ({"nonce": "abc"}, ISSUE_LOOKUPS, ["reject:invalid_login:nonce_rejected"]),
        ({}, replace(ISSUE_LOOKUPS, integration=None), ["reject:invalid_login:consumer_key_unknown"]),
        # R7 after the signature (SPEC 3's order): no account probing without the consumer secret
        ({}, replace(ISSUE_LOOKUPS, account=None), [f"nonce:ck:{CK}", "reject:invalid_account:None"]),
        ({"secret": "0" * 64}, replace(ISSUE_LOOKUPS, account=None), ["reject:invalid_login:signature_invalid"]),
        (
            {},
            replace(ISSUE_LOOKUPS, integration=replace(REC, auth=AuthFlags())),
            [f"nonce:ck:{CK}", "reject:auth_method_not_permitted:None"],
        ),
        (
            {},
            replace(ISSUE_LOOKUPS, installation=replace(INSTALLED, state=State.BLOCKED)),
            [f"nonce:ck:{CK}", "reject:integration_blocked:None"],
        ),
        (
            {},
            replace(ISSUE_LOOKUPS, installation=replace(INSTALLED, state=State.WAITING)),
            [f"nonce:ck:{CK}", "forward"],
        ),
    ],
)
def test_issue_token_rules(kwargs: dict[str, object], lookups: Lookups, expect: list[str]) -> None:
    assert issue(issue_token_request(**kwargs), lookups)[0] == expect  # type: ignore[arg-type]


def test_issue_token_nonce_used() -> None:
    assert issue(issue_token_request(), fresh=False)[0] == [
        f"nonce:ck:{CK}",
        "reject:invalid_login:nonce_used",
    ]


def test_issue_token_installs_foreign_record_on_success() -> None:
    lookups = Lookups(account=AccountView(ACC), integration=FOREIGN, installation=None)
    steps, d = issue(issue_token_request(), lookups)
    assert steps == [f"nonce:ck:{CK}", "forward"]
    assert isinstance(d, Forward) and d.install_on_success and d.who.integration == "ext"


def test_issue_token_refuses_oauth_scheme() -> None:
    client = Client(CK, client_secret=CS, signature_method=SIGNATURE_HMAC_SHA256)
    _, signed, _ = client.sign(ISSUE_URL, http_method="POST")
    d = decide_issue_token(facts_for("POST", ISSUE_URL, signed["Authorization"]), ISSUE_LOOKUPS, NOW, POL)
    assert isinstance(d, Reject) and d.reason is Reason.INVALID_LOGIN


def test_sub_reasons_are_known() -> None:
    assert tba.SIGNATURE_INVALID in tba.SUB_REASONS


def test_the_claimed_attribution_names_the_account_before_any_lookup() -> None:
    """What a RESTlet's log entry names when Redis cannot be asked (store_unavailable)."""
    oauth = claimed_attribution(parse_authorization(['OAuth realm="tstdrv1", oauth_consumer_key="ck"']))
    assert (oauth.account, oauth.auth_method.value) == ("TSTDRV1", "oauth1")
    nl = claimed_attribution(parse_authorization(["NLAuth nlauth_account=123, nlauth_email=a@b.c, nlauth_role=3"]))
    assert (nl.account, nl.auth_method.value, nl.user, nl.role) == ("123", "nlauth", "a@b.c", "3")
