"""Pure helpers of the registry: field validation, the API shapes, the request-path views.

Nothing here talks to Redis; `registry.py` reads and writes, this module converts.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from typing import Any

from gateway.core.records import (
    AccountView,
    AuthFlags,
    InstallationView,
    InstalledVia,
    State,
    is_account_id,
    is_sandbox,
    normalize_account,
)
from gateway.store.atomic import RegistryError, iso_now

_ID_RE = re.compile(r"[0-9a-f]{32}")
OWNER_FIELDS = ("name", "description", "auth", "auto_install")
INSTALLATION_FIELDS = ("state", "note")
READ_ONLY_FIELDS = (
    "id",
    "application_id",
    "consumer_key",
    "consumer_secret",
    "owner_account",
    "installed_via",
)
AUTH_KEYS = ("user_credentials", "token_based", "tba_issue_token_endpoint")
STATES = tuple(s.value for s in State)


def valid_account(acct: str) -> str:
    """Upper-cased account id, or RegistryError INVALID_REQUEST."""
    norm = normalize_account(acct)
    if not is_account_id(norm):
        raise RegistryError("INVALID_REQUEST", f"'account' is not a valid account id: {acct!r}")
    return norm


def looks_like_id(value: str) -> bool:
    return _ID_RE.fullmatch(value) is not None


def new_id() -> str:
    return secrets.token_hex(16)


def is_flag(value: str | None) -> bool:
    return value == "1"


def as_flag(value: bool) -> str:
    return "1" if value else "0"


def change(actor: str, field: str, old: Any, new: Any) -> str:
    return json.dumps({"time": iso_now(), "actor": actor, "field": field, "old": old, "new": new})


def validate_fields(fields: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    """Type-check integration fields from the API or seed; returns them normalised."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key in ("name", "description", "note"):
            if not isinstance(value, str):
                raise RegistryError("INVALID_REQUEST", f"'{key}' must be a string")
            if key == "name" and not value.strip():
                raise RegistryError("INVALID_REQUEST", "'name' must not be empty")
            if len(value) > 4000:
                raise RegistryError("INVALID_REQUEST", f"'{key}' is longer than 4000 characters")
            out[key] = value.strip() if key == "name" else value
        elif key == "state":
            if value not in STATES:
                raise RegistryError("INVALID_REQUEST", f"'state' must be one of {', '.join(STATES)}")
            out[key] = value
        elif key == "auto_install":
            if not isinstance(value, bool):
                raise RegistryError("INVALID_REQUEST", "'auto_install' must be true or false")
            out[key] = value
        elif key == "auth":
            if not isinstance(value, Mapping):
                raise RegistryError("INVALID_REQUEST", "'auth' must be an object")
            for flag, v in value.items():
                if flag not in AUTH_KEYS:
                    raise RegistryError(
                        "INVALID_REQUEST", f"'auth.{flag}' is not a field; known: {', '.join(AUTH_KEYS)}"
                    )
                if not isinstance(v, bool):
                    raise RegistryError("INVALID_REQUEST", f"'auth.{flag}' must be true or false")
            out[key] = dict(value)
        elif key in READ_ONLY_FIELDS:
            raise RegistryError("FIELD_NOT_EDITABLE", f"'{key}' cannot be changed")
        else:
            raise RegistryError("INVALID_REQUEST", f"'{key}' is not a field of an integration")
    if creating and "name" not in out:
        raise RegistryError("INVALID_REQUEST", "'name' is required")
    return out


def auth_of(record: Mapping[str, str]) -> dict[str, bool]:
    stored = json.loads(record.get("auth") or "{}")
    flags = AuthFlags()
    return {k: bool(stored.get(k, getattr(flags, k))) for k in AUTH_KEYS}


def integration_json(record: Mapping[str, str], inst: Mapping[str, str], acct: str) -> dict[str, Any]:
    """The API shape; `application_id` only in the owner account (SPEC section 5)."""
    body: dict[str, Any] = {
        "id": record["id"],
        "name": record.get("name", ""),
        "description": record.get("description", ""),
        "state": inst.get("state", State.ENABLED.value),
        "note": inst.get("note", ""),
        "auth": auth_of(record),
        "auto_install": is_flag(record.get("auto_install")),
        "installed_via": inst.get("installed_via", InstalledVia.OWNER.value),
        "owner_account": record["owner"],
    }
    if record["owner"] == acct:
        body["application_id"] = record["application_id"]
    return body


def account_json(acct: str, data: Mapping[str, str]) -> dict[str, Any]:
    return {
        "account": acct,
        "require_approval": is_flag(data.get("require_approval")),
        "sandbox": is_sandbox(acct),
        "default_integration": {"state": data.get("default_state", State.ENABLED.value)},
    }


def account_view(acct: str, data: Mapping[str, str]) -> AccountView:
    return AccountView(
        account_id=acct,
        require_approval=is_flag(data.get("require_approval")),
        default_state=State(data.get("default_state", State.ENABLED.value)),
    )


def installation_view(acct: str, integration_id: str, data: Mapping[str, str]) -> InstallationView:
    return InstallationView(
        account=acct,
        integration_id=integration_id,
        state=State(data["state"]),
        installed_via=InstalledVia(data["installed_via"]),
        state_since=float(data.get("state_since") or 0.0),
    )
