"""Read-only views of the stored records, as the rules consult them (SPEC section 1).

The store adapter builds these from Redis (through its local cache); the core never sees
Redis, and secrets arrive here already decrypted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

_APP_ID_RE = re.compile(r"[0-9A-F]{32}")
_SANDBOX_RE = re.compile(r".+_SB\d+")


class State(StrEnum):
    ENABLED = "enabled"
    BLOCKED = "blocked"
    WAITING = "waiting_for_approval"


class InstalledVia(StrEnum):
    OWNER = "owner"
    BUNDLE = "bundle"
    AUTO_INSTALL = "auto_install"
    ISSUE_TOKEN = "issue_token"


def normalize_account(account: str) -> str:
    """Account IDs are matched case-insensitively and stored upper case."""
    return account.strip().upper()


_ACCOUNT_ID_RE = re.compile(r"[A-Z0-9][A-Z0-9_-]{0,63}")


def is_account_id(normalized: str) -> bool:
    """Whether a normalised account id is one the registry accepts (`TSTDRV1`, `1234567_SB1`)."""
    return _ACCOUNT_ID_RE.fullmatch(normalized) is not None


def is_sandbox(account: str) -> bool:
    return _SANDBOX_RE.fullmatch(normalize_account(account)) is not None


def normalize_application_id(text: str) -> str | None:
    """Upper-case 32 hex with hyphens removed (NetSuite's UUID form works), else None."""
    candidate = text.strip().replace("-", "").upper()
    return candidate if _APP_ID_RE.fullmatch(candidate) else None


def mask_application_id(text: str | None) -> str | None:
    """Only the last four characters of the normalised ID survive (SPEC section 6)."""
    if not text:
        return None
    normalized = text.strip().replace("-", "").upper()
    return "*" * max(len(normalized) - 4, 0) + normalized[-4:]


@dataclass(frozen=True, slots=True)
class AuthFlags:
    user_credentials: bool = True
    token_based: bool = True
    tba_issue_token_endpoint: bool = False


@dataclass(frozen=True, slots=True)
class AccountView:
    account_id: str  # upper case
    require_approval: bool = False
    default_state: State = State.ENABLED  # the Default Web Services Integrations record

    @property
    def sandbox(self) -> bool:
        return is_sandbox(self.account_id)


@dataclass(frozen=True, slots=True)
class IntegrationView:
    id: str
    owner_account: str
    name: str
    application_id: str
    consumer_key: str
    consumer_secret: str  # decrypted
    auth: AuthFlags = AuthFlags()
    auto_install: bool = False


@dataclass(frozen=True, slots=True)
class InstallationView:
    account: str
    integration_id: str
    state: State
    installed_via: InstalledVia
    state_since: float = 0.0  # unix time of the last state change (sessions.block_existing)


@dataclass(frozen=True, slots=True)
class TokenView:
    token_id: str
    token_secret: str  # decrypted
    account: str
    integration_id: str
    user: str
    role: str
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class SessionView:
    """A session opened by a forwarded, successful login/ssoLogin (SPEC section 3)."""

    session_id: str
    account: str
    integration_id: str | None  # None: opened under the account's Default record (R8)
    user: str
    role: str
    created_at: float
    last_seen: float
