"""`gateway decide ENVELOPE.xml --records FILE.yaml`: the pure core, offline.

Reads an envelope, inspects it exactly as the proxy does, answers the store lookups from a
YAML file of records (format: `tests/data/records.example.yaml`), settles the nonce (always
fresh) and install steps in memory, and prints the decision. Exit 0: forward, 1: reject,
2: the inputs could not be read.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from gateway.config import load_settings
from gateway.core.cookies import parse_cookies
from gateway.core.decision import CheckNonce, Decision, Forward, Install, Reject
from gateway.core.facts import EnvelopeHead, RequestFacts
from gateway.core.lookups import LookupPlan, Lookups
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
    normalize_account,
    normalize_application_id,
)
from gateway.core.versions import NotAnEndpoint, version_from_path

_MAX_ROUNDS = 4


@dataclass
class Records:
    """An in-memory stand-in for the store, keyed as the store keys them."""

    accounts: dict[str, AccountView] = field(default_factory=dict)
    integrations: dict[str, IntegrationView] = field(default_factory=dict)
    installations: dict[tuple[str, str], InstallationView] = field(default_factory=dict)
    tokens: dict[str, TokenView] = field(default_factory=dict)
    sessions: dict[str, SessionView] = field(default_factory=dict)

    def lookups(self, plan: LookupPlan) -> Lookups:
        session = self.sessions.get(plan.session_id) if plan.session_id else None
        account_id = plan.account or (session.account if session else None)
        account = self.accounts.get(account_id) if account_id else None
        integration = None
        if plan.application_id:
            integration = next((i for i in self.integrations.values()
                                if i.application_id == plan.application_id), None)
        elif plan.consumer_key:
            integration = next((i for i in self.integrations.values()
                                if i.consumer_key == plan.consumer_key), None)
        elif session is not None and session.integration_id:
            integration = self.integrations.get(session.integration_id)
        installation = None
        if integration is not None and account is not None:
            installation = self.installations.get((account.account_id, integration.id))
        token = self.tokens.get(plan.token_id) if plan.token_id else None
        return Lookups(account=account, integration=integration, installation=installation,
                       token=token, session=session)


def load_records(path: str | Path) -> Records:
    """Parse the records YAML; ValueError (naming the file) when it is not well formed."""
    data = yaml.safe_load(Path(path).read_text("utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a mapping")
    rec = Records()
    try:
        for a in data.get("accounts") or []:
            account = _account(a)
            rec.accounts[account.account_id] = account
        for i in data.get("integrations") or []:
            integration = _integration(i)
            rec.integrations[integration.id] = integration
            # The owner account always has an installation (SPEC section 1).
            owner = InstallationView(integration.owner_account, integration.id,
                                     State(i.get("state", "enabled")), InstalledVia.OWNER)
            rec.installations[(owner.account, owner.integration_id)] = owner
        for n in data.get("installations") or []:
            installation = _installation(n)
            rec.installations[(installation.account, installation.integration_id)] = installation
        for t in data.get("tokens") or []:
            token = _token(t)
            rec.tokens[token.token_id] = token
        for s in data.get("sessions") or []:
            session = _session(s)
            rec.sessions[session.session_id] = session
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: malformed record ({type(e).__name__}: {e})") from e
    return rec


def _account(a: dict[str, Any]) -> AccountView:
    return AccountView(normalize_account(str(a["id"])), bool(a.get("require_approval", False)),
                       State(a.get("default_state", "enabled")))


def _integration(i: dict[str, Any]) -> IntegrationView:
    app_id = normalize_application_id(str(i["application_id"]))
    if app_id is None:
        raise ValueError(f"integration {i['id']}: application_id must be 32 hex characters")
    return IntegrationView(
        id=str(i["id"]), owner_account=normalize_account(str(i["owner"])), name=str(i.get("name", i["id"])),
        application_id=app_id, consumer_key=str(i["consumer_key"]), consumer_secret=str(i["consumer_secret"]),
        auth=AuthFlags(**(i.get("auth") or {})), auto_install=bool(i.get("auto_install", False)))


def _installation(n: dict[str, Any]) -> InstallationView:
    return InstallationView(
        normalize_account(str(n["account"])), str(n["integration"]), State(n.get("state", "enabled")),
        InstalledVia(n.get("installed_via", "bundle")), float(n.get("state_since", 0)))


def _token(t: dict[str, Any]) -> TokenView:
    return TokenView(
        str(t["token_id"]), str(t["token_secret"]), normalize_account(str(t["account"])),
        str(t["integration"]), str(t.get("user", "")), str(t.get("role", "")), bool(t.get("revoked", False)))


def _session(s: dict[str, Any]) -> SessionView:
    integration_id = s.get("integration")
    return SessionView(
        str(s["session_id"]), normalize_account(str(s["account"])),
        None if integration_id is None else str(integration_id), str(s.get("user", "")),
        str(s.get("role", "")), float(s["created_at"]), float(s.get("last_seen", s["created_at"])))


def settle(facts: RequestFacts, records: Records, now: float, settings: PolicySettings) -> Forward | Reject:
    """The adapter's loop, in memory: every nonce is fresh, installs land in `records`."""
    lookups = records.lookups(plan_lookups(facts))
    for _ in range(_MAX_ROUNDS):
        decision: Decision = decide(facts, lookups, now, settings)
        match decision:
            case Forward() | Reject():
                return decision
            case CheckNonce():
                lookups = replace(lookups, nonce_fresh=True)
            case Install(account=account, integration_id=integration_id, state=state):
                installation = InstallationView(account, integration_id, state, InstalledVia.AUTO_INSTALL,
                                                state_since=now)
                records.installations[(account, integration_id)] = installation
                lookups = replace(lookups, installation=installation)
    raise RuntimeError("decision did not settle")


def inspect_envelope(
    body: bytes, soap_action: str | None, max_depth: int, max_head_bytes: int
) -> tuple[EnvelopeHead | None, Reason | None]:
    """The head (None if the inspector never reached it) and the first violation, if any."""
    from gateway.core.envelope import EnvelopeInspector

    inspector = EnvelopeInspector(max_depth=max_depth, max_head_bytes=max_head_bytes, soap_action=soap_action)
    inspector.feed(body)
    inspector.close()
    error = inspector.error
    return inspector.head, None if error is None else Reason(error.reason)


def describe(decision: Forward | Reject) -> str:
    who = decision.who
    ident = (f"account={who.account or '-'} integration={who.integration} "
             f"auth_method={who.auth_method.value} user={who.user or '-'} role={who.role or '-'}")
    if isinstance(decision, Reject):
        sub = f" sub_reason={decision.sub_reason}" if decision.sub_reason else ""
        return f"reject reason={decision.reason.value}{sub} {ident}"
    extras = []
    if decision.forward_session_cookie:
        extras.append("forward_session_cookie")
    if decision.open_session is not None:
        extras.append(f"open_session={decision.open_session.integration_id or 'default'}")
    if decision.install_on_success:
        extras.append("install_on_success")
    if decision.close_session:
        extras.append("close_session")
    return " ".join(["forward", ident, *extras])


def run_decide(envelope_path: str, records_path: str, path: str | None, cookie: str | None,
               soap_action: str | None, now: float | None) -> int:
    settings = load_settings(environ={})
    policy = policy_settings(settings)
    try:
        body = Path(envelope_path).read_bytes()
        records = load_records(records_path)
        path_version = version_from_path(path) if path else None
    except (OSError, ValueError, yaml.YAMLError) as e:
        what = "not a SOAP endpoint path" if isinstance(e, NotAnEndpoint) else str(e)
        print(f"error: {what}", file=sys.stderr)
        return 2
    head, violation = inspect_envelope(
        body, soap_action, settings.limits.max_depth, settings.limits.max_head_bytes)
    if head is None:
        print(f"reject reason={(violation or Reason.MALFORMED_REQUEST).value}")
        return 1
    # `--cookie` takes either a whole Cookie header or just the JSESSIONID value.
    headers = [] if cookie is None else [cookie if "=" in cookie else f"JSESSIONID={cookie}"]
    facts = RequestFacts(path_version=path_version, head=head, cookies=parse_cookies(headers))
    decision = settle(facts, records, time.time() if now is None else now, policy)
    if isinstance(decision, Forward) and violation is not None:
        # Decided at the head, but the rest of the envelope is unsound: the upstream never
        # receives a complete request and the client gets the violation (SPEC section 2).
        print(f"reject reason={violation.value} (after the head)")
        return 1
    print(describe(decision))
    return 0 if isinstance(decision, Forward) else 1

