"""RESTlets and the Issue Token endpoint (SPEC section 3): `Authorization: OAuth` (RFC 5849,
HMAC-SHA256) and `Authorization: NLAuth`.

Signatures are computed with oauthlib's RFC 5849 functions; the sub-check order and the
constant-shape rule (always an HMAC, dummy secrets for unknown keys) are those of `tba`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, unquote
from urllib.request import parse_http_list

from oauthlib.oauth1.rfc5849 import signature as rfc5849

from gateway.core import tba
from gateway.core.decision import (
    NO_INTEGRATION,
    Attribution,
    AuthMethod,
    CheckNonce,
    Decision,
    Forward,
    Reject,
)
from gateway.core.lookups import LookupPlan, Lookups
from gateway.core.policy import PolicySettings, decide_token_request, installation_gate, registered_account
from gateway.core.reasons import FAULTS, Reason
from gateway.core.records import normalize_account

OAUTH = "OAuth"
NLAUTH = "NLAuth"
_SCHEMES = {s.lower(): s for s in (OAUTH, NLAUTH)}
ISSUE_TOKEN_SCOPE_PREFIX = "ck:"  # Issue Token nonces are remembered per consumer key
_SIGNERS = {
    tba.HMAC_SHA256: rfc5849.sign_hmac_sha256_with_client,
    tba.HMAC_SHA1: rfc5849.sign_hmac_sha1_with_client,
}


@dataclass(frozen=True, slots=True)
class _Secrets:
    """The two attributes oauthlib's `sign_*_with_client` functions read."""

    client_secret: str
    resource_owner_secret: str


@dataclass(frozen=True, slots=True)
class AuthHeader:
    scheme: str  # "OAuth" or "NLAuth", whatever case the client used
    params: tuple[tuple[str, str], ...]  # in order; oauth_* values and realm percent-decoded

    def get(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name:
                return value
        return None

    def oauth_params(self) -> list[tuple[str, str]]:
        """The `oauth_*` parameters a signature covers (never `oauth_signature`, `realm`, `nlauth_*`)."""
        return [(k, v) for k, v in self.params if k.startswith("oauth_") and k != "oauth_signature"]


def parse_authorization(values: list[str]) -> AuthHeader:
    """Exactly one `Authorization` header with scheme OAuth or NLAuth (any case); ValueError
    otherwise (the adapter answers 401)."""
    if len(values) != 1:
        raise ValueError(f"expected exactly one Authorization header, got {len(values)}")
    if not values[0].isascii():
        try:  # bytes that were no UTF-8 arrive as lone surrogates (aiohttp's surrogateescape)
            values[0].encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("the Authorization header is not UTF-8") from None
    scheme_text, _, rest = values[0].strip().partition(" ")
    scheme = _SCHEMES.get(scheme_text.lower())
    if scheme is None:
        raise ValueError("Authorization scheme must be OAuth or NLAuth")
    params: list[tuple[str, str]] = []
    for item in parse_http_list(rest):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise ValueError(f"malformed Authorization parameter {item!r}")
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        if name.startswith("oauth_") or name == "realm":
            value = unquote(value)  # RFC 5849 3.5.1: percent-encoded
        if any(key == name for key, _ in params):
            raise ValueError(f"duplicate Authorization parameter {name!r}")
        params.append((name, value))
    return AuthHeader(scheme, tuple(params))


@dataclass(frozen=True, slots=True)
class RestletFacts:
    method: str
    base_uri: str  # as the client signed it: public_base_url, else scheme + host, plus the path
    query: tuple[tuple[str, str], ...]  # decoded query parameters, in order
    auth: AuthHeader
    # A form-encoded body's parameters (RFC 5849 3.4.1.3.1), decoded, in order; a JSON or text
    # body has none: the signature does not cover it.
    body: tuple[tuple[str, str], ...] = ()


def form_parameters(body: bytes) -> tuple[tuple[str, str], ...]:
    """An `application/x-www-form-urlencoded` body's parameters as RFC 5849 3.4.1.3.1 decodes
    them (W3C form rules: "+" is a space, UTF-8). Bytes no client could have signed as text
    decode to U+FFFD, and the signature then fails as it should."""
    return tuple(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def json_error_status(reason: Reason) -> int:
    """401 for authentication failures, 403 for blocked / waiting / not permitted / not installed."""
    return FAULTS[reason].json_status


def oauth_signature(
    facts: RestletFacts, params: list[tuple[str, str]], *, algorithm: str, consumer_secret: str,
    token_secret: str,
) -> str:
    """RFC 5849 section 3.4: base string over method, base URI and the given parameters plus
    the query and a form-encoded body's parameters."""
    normalized = rfc5849.normalize_parameters(params + list(facts.query) + list(facts.body))
    base = rfc5849.signature_base_string(facts.method.upper(), rfc5849.base_string_uri(facts.base_uri),
                                         normalized)
    signer = _SIGNERS.get(algorithm, rfc5849.sign_hmac_sha256_with_client)
    return str(signer(base, _Secrets(consumer_secret, token_secret)))


def _verify_oauth(
    facts: RestletFacts, settings: PolicySettings, now: float, consumer_secret: str | None,
    token_secret: str | None, params: list[tuple[str, str]],
) -> str | None:
    auth = facts.auth
    algorithm = tba.normalize_algorithm(auth.get("oauth_signature_method"))
    try:
        expected: str | None = oauth_signature(
            facts, params, algorithm=algorithm or tba.HMAC_SHA256,
            consumer_secret=tba.DUMMY_SECRET if consumer_secret is None else consumer_secret,
            token_secret=tba.DUMMY_SECRET if token_secret is None else token_secret)
    except (ValueError, UnicodeError):  # a URI no base string can be built from (Host "a:xyz", "[")
        expected = None
    version_ok = auth.get("oauth_version") in (None, "1.0")
    return tba.first_failure(
        algorithm_ok=algorithm is not None and algorithm in settings.allowed_algorithms,
        nonce=auth.get("oauth_nonce"), timestamp=auth.get("oauth_timestamp"), now=now,
        skew=settings.timestamp_skew_seconds, consumer_known=consumer_secret is not None,
        token_known=token_secret is not None,
        signature_ok=expected is not None and tba.signature_matches(expected, auth.get("oauth_signature"))
        and version_ok)


def _account_sent(auth: AuthHeader) -> str | None:
    sent = (auth.get("realm") if auth.scheme == OAUTH else auth.get("nlauth_account")) or ""
    return normalize_account(sent) if sent.strip() else None


def claimed_attribution(auth: AuthHeader) -> Attribution:
    """Who the header says it is, before the store is asked (the log entry's names when the
    store cannot be reached)."""
    if auth.scheme == NLAUTH:
        return Attribution(account=_account_sent(auth), auth_method=AuthMethod.NLAUTH,
                           user=auth.get("nlauth_email") or "", role=auth.get("nlauth_role") or "")
    return Attribution(account=_account_sent(auth), auth_method=AuthMethod.OAUTH1)


def plan_restlet_lookups(facts: RestletFacts) -> LookupPlan:
    auth = facts.auth
    if auth.scheme == NLAUTH:
        return LookupPlan(account=_account_sent(auth))
    return LookupPlan(account=_account_sent(auth), consumer_key=auth.get("oauth_consumer_key") or None,
                      token_id=auth.get("oauth_token") or None)


def decide_restlet(facts: RestletFacts, lookups: Lookups, now: float, settings: PolicySettings) -> Decision:
    auth = facts.auth
    if auth.scheme == NLAUTH:
        # Forwarded unattributed, as NetSuite does: no record, so no integration state applies.
        who = Attribution(account=_account_sent(auth), integration=NO_INTEGRATION,
                          auth_method=AuthMethod.NLAUTH, user=auth.get("nlauth_email") or "",
                          role=auth.get("nlauth_role") or "")
        if registered_account(who.account, lookups.account, settings) is None:  # R7
            return Reject(Reason.INVALID_ACCOUNT, who)
        return Forward(who)
    who = Attribution(account=_account_sent(auth), auth_method=AuthMethod.OAUTH1)
    account = registered_account(who.account, lookups.account, settings)  # R7: realm is the account
    if account is None:
        return Reject(Reason.INVALID_ACCOUNT, who)
    params = [(k, v) for k, v in auth.params if k not in ("realm", "oauth_signature")]

    def verify(consumer_secret: str | None, token_secret: str | None) -> str | None:
        return _verify_oauth(facts, settings, now, consumer_secret, token_secret, params)

    return decide_token_request(
        account=account, consumer_key=auth.get("oauth_consumer_key") or "",
        token_id=auth.get("oauth_token") or "", nonce=auth.get("oauth_nonce") or "", verify=verify,
        lookups=lookups, who=who, settings=settings)


def plan_issue_token_lookups(facts: RestletFacts) -> LookupPlan:
    auth = facts.auth
    return LookupPlan(account=_account_sent(auth), consumer_key=auth.get("oauth_consumer_key") or None)


def decide_issue_token(
    facts: RestletFacts, lookups: Lookups, now: float, settings: PolicySettings
) -> Decision:
    """`POST /rest/issuetoken`: NLAuth carrying oauth_* signed with `consumerSecret&`."""
    auth = facts.auth
    who = Attribution(account=_account_sent(auth), auth_method=AuthMethod.NLAUTH,
                      user=auth.get("nlauth_email") or "", role=auth.get("nlauth_role") or "")
    if auth.scheme != NLAUTH:
        return Reject(Reason.INVALID_LOGIN, who)
    # SPEC 3's order: the signature, timestamp and nonce first, then R7, so that only a holder
    # of the consumer secret learns whether an account is registered.
    account = registered_account(who.account, lookups.account, settings)
    consumer_key = auth.get("oauth_consumer_key") or ""
    integration = lookups.integration
    if integration is not None and integration.consumer_key != consumer_key:
        integration = None
    installation = lookups.installation
    if integration is None or installation is None or account is None or (
            installation.account, installation.integration_id) != (account.account_id, integration.id):
        installation = None
    # The owner always has an installation; another account gets one on upstream success.
    usable = integration is not None and (
        account is None or installation is not None or integration.owner_account != account.account_id)
    consumer_secret = integration.consumer_secret if usable and integration else None
    sub = _verify_oauth(facts, settings, now, consumer_secret, "", auth.oauth_params())
    if integration is not None and usable:
        who = replace(who, integration=integration.id, application_id=integration.application_id)
    if sub is not None:
        return Reject(Reason.INVALID_LOGIN, who, sub_reason=sub)
    assert integration is not None
    if lookups.nonce_fresh is None:
        return CheckNonce(scope=ISSUE_TOKEN_SCOPE_PREFIX + consumer_key, nonce=auth.get("oauth_nonce") or "",
                          ttl_seconds=tba.nonce_ttl(settings.timestamp_skew_seconds))
    if not lookups.nonce_fresh:
        return Reject(Reason.INVALID_LOGIN, who, sub_reason=tba.NONCE_USED)
    if account is None:  # R7
        return Reject(Reason.INVALID_ACCOUNT, who)
    if not integration.auth.tba_issue_token_endpoint:
        return Reject(Reason.AUTH_METHOD_NOT_PERMITTED, who)
    if installation is not None:
        gate = installation_gate(installation, who, created_at=None, block_existing=True)
        # A token may be issued into a waiting installation; its requests then meet R15.
        if gate is not None and gate.reason is Reason.INTEGRATION_BLOCKED:
            return gate
    return Forward(who, install_on_success=installation is None)
