"""The store as the request path sees it. The Redis adapter implements this Protocol."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from gateway.core.records import (
    AccountView,
    InstallationView,
    InstalledVia,
    IntegrationView,
    SessionView,
    TokenView,
)


class RequestStore(Protocol):
    """Reads are served from the local cache where the SPEC allows it; every method raises
    `gateway.errors.StoreUnavailable` when Redis cannot answer and no usable cache entry exists."""

    async def get_account(self, account_id: str) -> AccountView | None: ...

    async def register_account(self, account_id: str) -> AccountView:
        """`accounts.auto_register`: create the account if missing (idempotent)."""
        ...

    async def find_integration_by_application_id(self, application_id: str) -> IntegrationView | None: ...

    async def find_integration_by_consumer_key(self, consumer_key: str) -> IntegrationView | None: ...

    async def get_integration(self, integration_id: str) -> IntegrationView | None: ...

    async def get_installation(self, account_id: str, integration_id: str) -> InstallationView | None: ...

    async def get_token(self, token_id: str) -> TokenView | None: ...

    async def claim_nonce(self, scope: str, nonce: str, ttl_seconds: int) -> bool:
        """Atomically remember (scope, nonce) for ttl; False if it was already there."""
        ...

    async def install(
        self, account_id: str, integration_id: str, via: InstalledVia, actor: str
    ) -> InstallationView:
        """Install a record owned elsewhere (auto-install, issue token): state `waiting_for_approval`
        if the account's `require_approval`, else `enabled`; idempotent (an existing
        installation is returned unchanged); recorded in change tracking with `actor`."""
        ...

    async def save_issued_token(
        self, account_id: str, integration_id: str, user: str, role: str, token_id: str, token_secret: str
    ) -> None:
        """A token captured from the Issue Token endpoint (`source: issue_token`)."""
        ...

    async def get_session(self, session_id: str) -> SessionView | None: ...

    async def open_session(self, session: SessionView, ttl_seconds: int) -> None: ...

    async def touch_session(self, session_id: str, now: float, ttl_seconds: int) -> None: ...

    async def close_session(self, session_id: str) -> None: ...

    async def write_log_entries(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Append entries (SPEC section 6) to each one's execution log and usage log, in one
        round trip; retention and length caps applied."""
        ...

    async def ping(self) -> bool: ...
