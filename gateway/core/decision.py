"""Decisions are values, not exceptions: what the adapter must do with one request."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway.core.reasons import Reason
from gateway.core.records import State


class AuthMethod(StrEnum):
    USER_CREDENTIALS = "user_credentials"
    TOKEN_BASED = "token_based"
    SESSION = "session"
    OAUTH1 = "oauth1"
    NLAUTH = "nlauth"
    NONE = "none"


NO_INTEGRATION = "none"
DEFAULT_INTEGRATION = "default"


@dataclass(frozen=True, slots=True)
class Attribution:
    """Who the request is, as far as the gateway could tell: for logs, metrics and the
    `X-Gateway-*` identity headers."""

    account: str | None = None
    integration: str = NO_INTEGRATION  # internal id, "default" or "none"
    auth_method: AuthMethod = AuthMethod.NONE
    user: str = ""
    role: str = ""
    application_id: str | None = None  # normalised; masked before it is logged


@dataclass(frozen=True, slots=True)
class SessionBinding:
    """What a session opened by this login will be bound to."""

    account: str
    integration_id: str | None  # None: the Default record
    user: str
    role: str


@dataclass(frozen=True, slots=True)
class Forward:
    who: Attribution
    forward_session_cookie: bool = False  # JSESSIONID goes upstream only for session requests
    open_session: SessionBinding | None = None  # login/ssoLogin: open on upstream success
    install_on_success: bool = False  # login/ssoLogin auto-install once the upstream accepts
    close_session: str | None = None  # logout: the session to close


@dataclass(frozen=True, slots=True)
class Reject:
    reason: Reason
    who: Attribution
    sub_reason: str | None = None


@dataclass(frozen=True, slots=True)
class CheckNonce:
    """The signature is good: the adapter must claim (token, nonce) atomically in the store,
    then decide again with `Lookups.nonce_fresh` set."""

    scope: str  # the token id (TBA, OAuth) or consumer key (Issue Token)
    nonce: str
    ttl_seconds: int


@dataclass(frozen=True, slots=True)
class Install:
    """A verified TBA request references an auto-installable record not yet installed in the
    account: the adapter installs it (state by `require_approval`), then decides again."""

    account: str
    integration_id: str
    state: State


Decision = Forward | Reject | CheckNonce | Install
