"""The adapter side of a decision: fetch what the core asks for, run its nonce and install
steps against the store, and hand back the final Forward or Reject."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from gateway.core.decision import (
    DEFAULT_INTEGRATION,
    NO_INTEGRATION,
    Attribution,
    AuthMethod,
    CheckNonce,
    Decision,
    Forward,
    Install,
    Reject,
)
from gateway.core.facts import EnvelopeHead
from gateway.core.lookups import LookupPlan, Lookups
from gateway.core.records import InstalledVia, is_account_id, normalize_account, normalize_application_id
from gateway.errors import StoreUnavailable
from gateway.store.ports import RequestStore

# Nonce, then install: a decision asks for each at most once, so three rounds always end.
_MAX_ROUNDS = 4


def clock() -> float:
    """The `now` every decision is taken at (one place, so tests can pin the TBA window edges)."""
    return time.time()


async def fetch_lookups(store: RequestStore, plan: LookupPlan, *, auto_register: bool) -> Lookups:
    """Everything the plan names, mostly from the local cache; the session (shared across
    replicas) first, since it may name the account and the record."""
    session = await store.get_session(plan.session_id) if plan.session_id else None
    account_id = plan.account or (session.account if session else None)
    account = await store.get_account(account_id) if account_id else None
    if account is None and account_id and auto_register and is_account_id(normalize_account(account_id)):
        # Only an id the registry accepts is registered; any other is R7's invalid_account
        # (one used to escape as a 500).
        account = await store.register_account(account_id)
    integration = None
    if plan.application_id:
        integration = await store.find_integration_by_application_id(plan.application_id)
    elif plan.consumer_key:
        integration = await store.find_integration_by_consumer_key(plan.consumer_key)
    elif session is not None and session.integration_id:
        integration = await store.get_integration(session.integration_id)
    installation = None
    if integration is not None and account is not None:
        installation = await store.get_installation(account.account_id, integration.id)
    token = await store.get_token(plan.token_id) if plan.token_id else None
    return Lookups(account=account, integration=integration, installation=installation, token=token,
                   session=session)


async def settle(
    store: RequestStore, lookups: Lookups, decide_once: Callable[[Lookups, float], Decision],
    *, install_actor: str = "system:auto_install", install_via: InstalledVia = InstalledVia.AUTO_INSTALL,
) -> Forward | Reject:
    """Run `decide_once` until it gives a Forward or Reject, doing the store work it asks for."""
    for _ in range(_MAX_ROUNDS):
        decision = decide_once(lookups, clock())
        match decision:
            case Forward() | Reject():
                return decision
            case CheckNonce(scope=scope, nonce=nonce, ttl_seconds=ttl):
                fresh = await store.claim_nonce(scope, nonce, ttl)
                lookups = replace(lookups, nonce_fresh=fresh)
            case Install(account=account, integration_id=integration_id):
                installation = await store.install(account, integration_id, install_via, install_actor)
                lookups = replace(lookups, installation=installation)
    raise RuntimeError("decision did not settle")  # a bug in the core, not a client's fault


async def attribute_rejection(store: RequestStore, head: EnvelopeHead, who: Attribution,
                              session_id: str | None = None) -> Attribution:
    """A request refused before the store was consulted (R2-R6) still names its record, so the
    ops dashboard can tell which integration sends Passport to 2020.2, say; one riding on a
    session names the session's account and record (SPEC 2), so the account's usage log lists
    it. Identifiers only: nothing is decided from them, and without the store the rejection
    stands unattributed."""
    if who.integration != NO_INTEGRATION:
        return who
    if session_id and who.auth_method is AuthMethod.SESSION and who.account is None:
        try:
            session = await store.get_session(session_id)
        except StoreUnavailable:
            session = None
        if session is not None:
            return replace(who, account=session.account, integration=session.integration_id or DEFAULT_INTEGRATION,
                           user=session.user, role=session.role)
        return who
    integration = None
    app_id = normalize_application_id(head.application_id or "")
    if app_id:
        integration = await store.find_integration_by_application_id(app_id)
    elif head.token_passport is not None and head.token_passport.consumer_key:
        integration = await store.find_integration_by_consumer_key(head.token_passport.consumer_key)
    if integration is None:
        return who
    return replace(who, integration=integration.id)
