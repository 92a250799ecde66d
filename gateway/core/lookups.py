"""What `decide` needs from the store, and which keys the adapter must look up for it."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core.records import (
    AccountView,
    InstallationView,
    IntegrationView,
    SessionView,
    TokenView,
)


@dataclass(frozen=True, slots=True)
class LookupPlan:
    """Keys the adapter fetches before deciding (each None: nothing to fetch)."""

    account: str | None = None  # upper case
    application_id: str | None = None  # normalised
    consumer_key: str | None = None
    token_id: str | None = None
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class Lookups:
    """Store answers for one request. `integration` is the record named by the application ID
    or consumer key (or the session's record); `installation` is that record in `account`."""

    account: AccountView | None = None
    integration: IntegrationView | None = None
    installation: InstallationView | None = None
    token: TokenView | None = None
    session: SessionView | None = None
    nonce_fresh: bool | None = None  # None: not claimed yet
