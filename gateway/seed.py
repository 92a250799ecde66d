"""`seed:` in the configuration: accounts and integrations applied idempotently at start-up.

```yaml
seed:
  accounts:
    - {account: "1234567", require_approval: false, default_integration: enabled}
  integrations:
    - account: "1234567"          # the owner account (registered if missing)
      name: orders sync           # the match key, with the account
      state: blocked              # enabled | blocked | waiting_for_approval
      note: "SEC-123: leaked consumer secret"
      description: ""
      auth: {user_credentials: true, token_based: true, tba_issue_token_endpoint: false}
      auto_install: false
      application_id: 5C4E...     # optional, only used when the record is created
      consumer_key: ...           # optional, likewise (64 hex)
      consumer_secret: ...        # optional; re-applied each start when given
```
A record is matched by (account, name); re-applying sets its state, note and the other given
fields (a security team can keep its block list in git). Changes are recorded with actor
`system:seed`, and only real changes are recorded, so a restart adds no change entries.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from gateway.core.records import normalize_application_id
from gateway.errors import ConfigError
from gateway.store.atomic import RegistryError
from gateway.store.redis import RedisStore
from gateway.store.registry import valid_account

log = logging.getLogger("gateway.seed")

ACTOR = "system:seed"
_FIELDS = ("name", "description", "state", "note", "auth", "auto_install")
_INTEGRATION_KEYS = (*_FIELDS, "account", "application_id", "consumer_key", "consumer_secret")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _items(seed: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    items = seed.get(key) or []
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        raise ConfigError(f"'seed.{key}' must be a list of mappings")
    return items


async def apply_seed(store: RedisStore, seed: Mapping[str, Any]) -> None:
    unknown = set(seed) - {"accounts", "integrations"}
    if unknown:
        raise ConfigError(f"unknown key 'seed.{sorted(unknown)[0]}' (expected accounts, integrations)")
    try:
        for i, item in enumerate(_items(seed, "accounts")):
            await _apply_account(store, item, f"seed.accounts[{i}]")
        for i, item in enumerate(_items(seed, "integrations")):
            await _apply_integration(store, item, f"seed.integrations[{i}]")
    except RegistryError as e:
        raise ConfigError(f"seed: {e.message}") from e


async def _apply_account(store: RedisStore, item: Mapping[str, Any], where: str) -> None:
    for key in item:
        if key not in ("account", "require_approval", "default_integration"):
            raise ConfigError(f"unknown key '{where}.{key}'")
    acct = valid_account(str(item.get("account", "")))
    approval = item.get("require_approval")
    if approval is not None and not isinstance(approval, bool):
        raise ConfigError(f"'{where}.require_approval' must be true or false")
    await store.registry.put_account(acct, approval)
    default = item.get("default_integration")
    if isinstance(default, Mapping):
        default = default.get("state")
    if default is not None:
        if default not in ("enabled", "blocked"):
            raise ConfigError(f"'{where}.default_integration' must be enabled or blocked")
        await store.registry.set_default_state(acct, str(default))


async def _apply_integration(store: RedisStore, item: Mapping[str, Any], where: str) -> None:
    for key in item:
        if key not in _INTEGRATION_KEYS:
            raise ConfigError(f"unknown key '{where}.{key}'")
    acct = valid_account(str(item.get("account", "")))
    if await store.registry.account_data(acct) is None:
        await store.registry.put_account(acct, None)
    fields = {k: item[k] for k in _FIELDS if k in item}
    name = fields.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"'{where}.name' is required")
    secret = _hex64(item, "consumer_secret", where)
    existing = await store.registry.find_owned_by_name(acct, name.strip())
    if existing is None:
        app_id = None
        if item.get("application_id") is not None:
            app_id = normalize_application_id(str(item["application_id"]))
            if app_id is None:
                raise ConfigError(f"'{where}.application_id' must be 32 hex characters (hyphens allowed)")
        await store.registry.create_integration(
            acct,
            fields,
            ACTOR,
            application_id=app_id,
            consumer_key=_hex64(item, "consumer_key", where),
            consumer_secret=secret,
        )
        log.info("seed: created integration %r in %s", name, acct)
        return
    await store.registry.update_integration(acct, existing, fields, ACTOR)
    if secret is not None:
        current = await store.get_integration(existing)
        if current is not None and current.consumer_secret != secret:
            await store.registry.replace_consumer_secret(existing, secret)


def _hex64(item: Mapping[str, Any], key: str, where: str) -> str | None:
    value = item.get(key)
    if value is None:
        return None
    text = str(value).strip().lower()
    if not _HEX64.fullmatch(text):
        raise ConfigError(f"'{where}.{key}' must be 64 hex characters")
    return text
