"""The decision rules R2-R17 of SPEC section 3, as one pure function over frozen values.

`plan_lookups(facts)` names the store keys the adapter fetches; `decide(facts, lookups, now,
settings)` returns a Decision. The adapter's loop:

    plan = plan_lookups(facts)            # account, app id / consumer key, token, session
    lookups = fetch(plan)                 # for a session: its account, its record (by internal id)
                                          # and that record's installation in the account
    loop: d = decide(facts, lookups, now, settings)
          CheckNonce -> claim it, set lookups.nonce_fresh; Install -> install, set the installation

R1 (envelope soundness) has been applied before `decide` is called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import TYPE_CHECKING, Final

from gateway.core import tba
from gateway.core.decision import (
    DEFAULT_INTEGRATION,
    Attribution,
    AuthMethod,
    CheckNonce,
    Decision,
    Forward,
    Install,
    Reject,
    SessionBinding,
)
from gateway.core.facts import RequestFacts
from gateway.core.lookups import LookupPlan, Lookups
from gateway.core.reasons import Reason
from gateway.core.records import (
    AccountView,
    InstallationView,
    IntegrationView,
    SessionView,
    State,
    is_account_id,
    normalize_account,
    normalize_application_id,
)
from gateway.core.versions import LAST_PASSPORT_FREE, LAST_PRE_TBA, Version

if TYPE_CHECKING:
    from gateway.config import Settings

GET_DATA_CENTER_URLS = "getDataCenterUrls"
LOGOUT = "logout"


@dataclass(frozen=True, slots=True)
class PolicySettings:
    min_version: Version
    max_version: Version
    auto_register: bool
    timestamp_skew_seconds: int
    allowed_algorithms: frozenset[str]  # normalised: "HMAC-SHA256", "HMAC-SHA1"
    idle_timeout_seconds: int
    absolute_timeout_seconds: int
    block_existing: bool


def policy_settings(settings: Settings) -> PolicySettings:
    return PolicySettings(
        min_version=settings.min_version,
        max_version=settings.max_version,
        auto_register=settings.auto_register,
        timestamp_skew_seconds=settings.tba.timestamp_skew_seconds,
        allowed_algorithms=frozenset(a.upper().replace("_", "-") for a in settings.tba.allowed_algorithms),
        idle_timeout_seconds=settings.sessions.idle_timeout_seconds,
        absolute_timeout_seconds=settings.sessions.absolute_timeout_seconds,
        block_existing=settings.sessions.block_existing,
    )


class Method(Enum):
    """How a request authenticates, once R4 has ruled out mixtures."""

    NONE = "none"
    PASSPORT = "passport"  # header passport (a JSESSIONID beside it is ignored)
    LOGIN = "login"
    SSO_LOGIN = "ssoLogin"
    TBA = "tba"
    SESSION = "session"  # a JSESSIONID and no other credentials

    @property
    def user_credentials(self) -> bool:
        """Request-level user credentials (R8, R9): passport, login, ssoLogin."""
        return self in (Method.PASSPORT, Method.LOGIN, Method.SSO_LOGIN)


@dataclass(frozen=True, slots=True)
class Classified:
    """The facts `decide` works from once R2-R6 have passed."""

    version: Version
    operation: str
    method: Method
    account_sent: str | None  # exactly as the client sent it (signatures)
    application_id: str | None  # as sent, stripped; None when absent or blank
    user: str
    role: str
    session_id: str | None  # only for Method.SESSION

    @property
    def account(self) -> str | None:
        sent = (self.account_sent or "").strip()
        return normalize_account(sent) if sent else None

    @property
    def normalized_application_id(self) -> str | None:
        return None if self.application_id is None else normalize_application_id(self.application_id)

    def who(self) -> Attribution:
        """Attribution as far as the request itself tells (the store may add to it)."""
        auth = {Method.TBA: AuthMethod.TOKEN_BASED, Method.SESSION: AuthMethod.SESSION,
                Method.NONE: AuthMethod.NONE}.get(self.method, AuthMethod.USER_CREDENTIALS)
        app_id = self.normalized_application_id or (
            self.application_id.replace("-", "").upper() if self.application_id else None)
        return Attribution(account=self.account, auth_method=auth, user=self.user, role=self.role,
                           application_id=app_id)


UNKNOWN_VERSION: Final[Version] = (0, 0)  # only in the attribution of an R2 rejection


def endpoint_version(facts: RequestFacts) -> Version | Reason:
    """R2's first two parts: the URL's version is authoritative, else the namespace's."""
    ns_version = facts.head.namespace_version
    if facts.path_version is not None and ns_version is not None and facts.path_version != ns_version:
        return Reason.VERSION_MISMATCH
    version = facts.path_version or ns_version
    return Reason.VERSION_REQUIRED if version is None else version


def classify(facts: RequestFacts, settings: PolicySettings | None) -> Classified | Forward | Reject:
    """R2-R6 and the cookie rules: everything decidable without the store.

    With `settings` None the version range is not checked (`plan_lookups`).
    """
    head, cookies = facts.head, facts.cookies
    app_id = (head.application_id or "").strip() or None
    tp, jsession = head.token_passport, cookies.jsessionid
    login, sso, passport = head.login_passport, head.sso_passport, head.header_passport
    if tp is not None:
        method = Method.TBA
        account, user, role = tp.account, "", ""
    elif login is not None:
        method, account, user, role = Method.LOGIN, login.account, login.email or "", login.role or ""
    elif sso is not None:
        method, account, user, role = Method.SSO_LOGIN, sso.partner_account, sso.partner_user_id or "", ""
    elif passport is not None:
        method, account = Method.PASSPORT, passport.account
        user, role = passport.email or "", passport.role or ""
    else:
        method = Method.SESSION if jsession is not None else Method.NONE
        account, user, role = None, "", ""
    session_id = jsession if method is Method.SESSION else None
    version = endpoint_version(facts)
    if isinstance(version, Reason):
        # Still attributed as far as the head tells: the account's usage log lists every request.
        return Reject(version, Classified(UNKNOWN_VERSION, head.operation, method, account, app_id, user, role,
                                          session_id).who())
    req = Classified(version, head.operation, method, account, app_id, user, role, session_id)
    if settings is not None and not settings.min_version <= version <= settings.max_version:
        return Reject(Reason.VERSION_UNSUPPORTED, req.who())
    if head.operation == GET_DATA_CENTER_URLS:  # R3: no authentication, no cookie
        return Forward(Attribution())
    if cookies.invalid:
        return Reject(Reason.INVALID_SESSION, req.who())
    others = (passport, login, sso, jsession, app_id)
    if tp is not None and any(part is not None for part in others):  # R4
        return Reject(Reason.AMBIGUOUS_AUTH, req.who())
    if passport is not None and (login is not None or sso is not None):
        # Two sets of user credentials: a backend could authenticate either one (R4).
        return Reject(Reason.AMBIGUOUS_AUTH, req.who())
    if (method.user_credentials or method is Method.SESSION) and version >= LAST_PASSPORT_FREE:  # R5
        return Reject(Reason.PASSPORT_UNSUPPORTED, req.who())
    if method is Method.TBA and version <= LAST_PRE_TBA:  # R6
        return Reject(Reason.TBA_UNSUPPORTED_ENDPOINT, req.who())
    return req


def claimed_attribution(facts: RequestFacts) -> Attribution:
    """Who the request says it is, before the store is asked: what its log entry names when
    the store cannot be reached (SPEC 5: the account's usage log lists every request)."""
    req = classify(facts, None)
    if isinstance(req, Classified):
        return req.who()
    return req.who


def plan_lookups(facts: RequestFacts) -> LookupPlan:
    """The store keys `decide` will consult (nothing for requests R2-R6 settle)."""
    req = classify(facts, None)
    if not isinstance(req, Classified):
        return LookupPlan()
    if req.method is Method.SESSION:
        return LookupPlan(session_id=req.session_id)
    if req.method is Method.TBA:
        tp = facts.head.token_passport
        assert tp is not None
        return LookupPlan(account=req.account, consumer_key=tp.consumer_key or None,
                          token_id=tp.token or None)
    return LookupPlan(account=req.account, application_id=req.normalized_application_id)


def decide(facts: RequestFacts, lookups: Lookups, now: float, settings: PolicySettings) -> Decision:
    req = classify(facts, settings)
    if not isinstance(req, Classified):
        return req
    if req.method is Method.NONE:  # R10 (R7-R9 need credentials)
        return Reject(Reason.CREDENTIALS_REQUIRED, req.who())
    if req.method is Method.SESSION:
        return _decide_session(req, lookups, now, settings)
    account = registered_account(req.account, lookups.account, settings)  # R7
    if account is None:
        return Reject(Reason.INVALID_ACCOUNT, req.who())
    if req.method is Method.TBA:
        tp = facts.head.token_passport
        assert tp is not None

        def verify(consumer_secret: str | None, token_secret: str | None) -> str | None:
            return tba.verify_token_passport(
                tp, consumer_secret=consumer_secret, token_secret=token_secret, now=now,
                skew=settings.timestamp_skew_seconds, allowed=settings.allowed_algorithms)

        return decide_token_request(
            account=account, consumer_key=tp.consumer_key or "", token_id=tp.token or "",
            nonce=tp.nonce or "", verify=verify, lookups=lookups, who=req.who(), settings=settings)
    return _decide_user_credentials(req, account, lookups)


def registered_account(
    account: str | None, found: AccountView | None, settings: PolicySettings
) -> AccountView | None:
    """R7: credentials that name no account are treated like ones naming an unregistered one."""
    if account is None:
        return None
    if found is not None and found.account_id == account:
        return found
    # auto_register: the adapter registered the account before deciding, if it is an id at all.
    return AccountView(account) if settings.auto_register and is_account_id(account) else None


def _decide_user_credentials(req: Classified, account: AccountView, lookups: Lookups) -> Decision:
    who = replace(req.who(), account=account.account_id)
    if req.application_id is None:
        if req.version <= LAST_PRE_TBA:  # R8
            who = replace(who, integration=DEFAULT_INTEGRATION)
            if account.default_state is State.BLOCKED:
                return Reject(Reason.DEFAULT_INTEGRATION_BLOCKED, who)
            return _forward_user(req, who, None)
        return Reject(Reason.APPLICATION_ID_REQUIRED, who)  # R9
    integration = lookups.integration
    if integration is None or integration.application_id != req.normalized_application_id:  # R12
        return Reject(Reason.UNKNOWN_APPLICATION, who)
    installation = _installation_of(lookups.installation, account.account_id, integration)
    if installation is None:
        # Only a login/ssoLogin proves who the user is (once the upstream accepts it).
        if req.method is Method.PASSPORT or not _auto_installable(integration, account):
            return Reject(Reason.UNKNOWN_APPLICATION, who)
        who = replace(who, integration=integration.id)
        if not integration.auth.user_credentials:  # R16 before anything is installed
            return Reject(Reason.AUTH_METHOD_NOT_PERMITTED, who)
        return replace(_forward_user(req, who, integration.id), install_on_success=True)
    who = replace(who, integration=integration.id)
    gate = installation_gate(installation, who, created_at=None, block_existing=True)  # R14, R15
    if gate is not None:
        return gate
    if not integration.auth.user_credentials:  # R16
        return Reject(Reason.AUTH_METHOD_NOT_PERMITTED, who)
    return _forward_user(req, who, integration.id)  # R17


def _forward_user(req: Classified, who: Attribution, integration_id: str | None) -> Forward:
    if req.method in (Method.LOGIN, Method.SSO_LOGIN) and who.account is not None:
        return Forward(who, open_session=SessionBinding(who.account, integration_id, req.user, req.role))
    return Forward(who)


def _decide_session(req: Classified, lookups: Lookups, now: float, settings: PolicySettings) -> Decision:
    session = lookups.session
    if session is None or session.session_id != req.session_id or _expired(session, now, settings):
        return Reject(Reason.INVALID_SESSION, req.who())  # R11
    who = replace(req.who(), account=session.account, user=session.user, role=session.role)
    if lookups.account is not None and lookups.account.account_id != session.account:
        return Reject(Reason.INVALID_SESSION, who)  # R11: the store answered for another account
    account = registered_account(session.account, lookups.account, settings)  # R7
    if account is None:
        return Reject(Reason.INVALID_ACCOUNT, who)
    close = session.session_id if req.operation == LOGOUT else None
    if session.integration_id is None:  # R8, on any endpoint
        who = replace(who, integration=DEFAULT_INTEGRATION)
        if account.default_state is State.BLOCKED:
            return Reject(Reason.DEFAULT_INTEGRATION_BLOCKED, who)
        return Forward(who, forward_session_cookie=True, close_session=close)
    integration = lookups.integration
    if integration is None or integration.id != session.integration_id:
        # The record was removed since the login: its sessions die with it (R11).
        return Reject(Reason.INVALID_SESSION, who)
    who = replace(who, integration=integration.id)
    installation = _installation_of(lookups.installation, account.account_id, integration)
    if installation is None:  # uninstalled since the login
        return Reject(Reason.INVALID_SESSION, who)
    gate = installation_gate(installation, who, created_at=session.created_at,
                             block_existing=settings.block_existing)
    if gate is not None:  # R14, R15
        return gate
    if not integration.auth.user_credentials:  # R16
        return Reject(Reason.AUTH_METHOD_NOT_PERMITTED, who)
    return Forward(who, forward_session_cookie=True, close_session=close)  # R17


def _expired(session: SessionView, now: float, settings: PolicySettings) -> bool:
    return (now - session.last_seen > settings.idle_timeout_seconds
            or now - session.created_at > settings.absolute_timeout_seconds)


def _installation_of(
    installation: InstallationView | None, account: str, integration: IntegrationView
) -> InstallationView | None:
    if installation is None:
        return None
    matches = (installation.account, installation.integration_id) == (account, integration.id)
    return installation if matches else None


def _auto_installable(integration: IntegrationView, account: AccountView) -> bool:
    return integration.auto_install and integration.owner_account != account.account_id


def installation_gate(
    installation: InstallationView, who: Attribution, *, created_at: float | None, block_existing: bool
) -> Reject | None:
    """R14 and R15. `created_at` is a session's creation time: with `block_existing` false a
    session opened before the block keeps working."""
    if installation.state is State.BLOCKED:
        before_block = created_at is not None and created_at < installation.state_since
        if block_existing or not before_block:
            return Reject(Reason.INTEGRATION_BLOCKED, who)
    if installation.state is State.WAITING:
        return Reject(Reason.INTEGRATION_WAITING_FOR_APPROVAL, who)
    return None


def decide_token_request(
    *, account: AccountView, consumer_key: str, token_id: str, nonce: str,
    verify: Callable[[str | None, str | None], str | None], lookups: Lookups, who: Attribution,
    settings: PolicySettings,
) -> Decision:
    """R12-R17 for a request signed with a token (SOAP TBA and RESTlet OAuth 1.0a).

    `verify(consumer_secret, token_secret)` checks the signature and returns a sub-reason or
    None; it always computes the HMAC, so an unknown key or token costs the same time.
    """
    who = replace(who, account=account.account_id)
    integration = lookups.integration
    if integration is not None and integration.consumer_key != consumer_key:
        integration = None
    installation = None if integration is None else _installation_of(
        lookups.installation, account.account_id, integration)
    usable = integration is not None and (installation is not None or _auto_installable(integration, account))
    token = lookups.token
    token_ok = (usable and token is not None and integration is not None and token.token_id == token_id
                and token.account == account.account_id and token.integration_id == integration.id)
    sub = verify(integration.consumer_secret if usable and integration else None,
                 token.token_secret if token_ok and token else None)
    if integration is not None and usable:
        who = replace(who, integration=integration.id, application_id=integration.application_id)
    if sub is None and token is not None and token.revoked:
        sub = tba.TOKEN_REVOKED
    if sub is not None:
        return Reject(Reason.INVALID_LOGIN, who, sub_reason=sub)  # R12, R13
    assert integration is not None and token is not None
    who = replace(who, user=token.user, role=token.role)
    if lookups.nonce_fresh is None:
        return CheckNonce(scope=token.token_id, nonce=nonce,
                          ttl_seconds=tba.nonce_ttl(settings.timestamp_skew_seconds))
    if not lookups.nonce_fresh:
        return Reject(Reason.INVALID_LOGIN, who, sub_reason=tba.NONCE_USED)
    if installation is None:
        if not integration.auth.token_based:  # R16 before anything is installed
            return Reject(Reason.AUTH_METHOD_NOT_PERMITTED, who)
        state = State.WAITING if account.require_approval else State.ENABLED
        return Install(account.account_id, integration.id, state)
    gate = installation_gate(installation, who, created_at=None, block_existing=True)  # R14, R15
    if gate is not None:
        return gate
    if not integration.auth.token_based:  # R16
        return Reject(Reason.AUTH_METHOD_NOT_PERMITTED, who)
    return Forward(who)  # R17

