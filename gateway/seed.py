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
A record is matched by its pinned application ID or consumer key, else by (account, name);
re-applying sets its state, note and the other given fields, its name included (a security
team can keep its block list in git). An entry whose pinned ID was issued before to a record
that is gone or another account's is skipped with a warning (IDs are never reused). Changes are recorded with actor
`system:seed`, and only real changes are recorded, so a restart adds no change entries.

`parse_seed` is pure and runs when the settings are loaded, so `check-config` refuses exactly
the seeds `serve` refuses, and `serve` refuses them before it starts Redis or writes anything;
`apply_seed` only writes, and fails only where Redis must be asked (an ID issued before).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.core.records import normalize_application_id
from gateway.errors import ConfigError
from gateway.store.atomic import RegistryError
from gateway.store.shapes import valid_account, validate_fields

if TYPE_CHECKING:  # gateway.store.redis imports gateway.config, which imports this module
    from gateway.store.redis import RedisStore

log = logging.getLogger("gateway.seed")

ACTOR = "system:seed"
_FIELDS = ("name", "description", "state", "note", "auth", "auto_install")
_ACCOUNT_KEYS = ("account", "require_approval", "default_integration")
_INTEGRATION_KEYS = (*_FIELDS, "account", "application_id", "consumer_key", "consumer_secret")
_DEFAULT_STATES = ("enabled", "blocked")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class SeedAccount:
    account: str
    require_approval: bool | None  # None: leave it as it is
    default_state: str | None


@dataclass(frozen=True, slots=True)
class SeedIntegration:
    account: str
    name: str
    fields: dict[str, Any]  # already passed the registry's own field checks
    application_id: str | None
    consumer_key: str | None
    consumer_secret: str | None


@dataclass(frozen=True, slots=True)
class Seed:
    accounts: tuple[SeedAccount, ...] = ()
    integrations: tuple[SeedIntegration, ...] = ()


# --------------------------------------------------------------------------- parsing (pure)


def parse_seed(raw: Any) -> Seed:
    """Check everything that can be checked without Redis; ConfigError names the key."""
    if not isinstance(raw, Mapping):
        raise ConfigError("'seed' must be a mapping with 'accounts' and/or 'integrations'")
    unknown = sorted(str(k) for k in raw if k not in ("accounts", "integrations"))
    if unknown:
        raise ConfigError(f"unknown key 'seed.{unknown[0]}' (expected accounts, integrations)")
    integrations = tuple(_parse_integration(item, f"seed.integrations[{i}]")
                         for i, item in enumerate(_items(raw, "integrations")))
    _refuse_duplicates(integrations)
    return Seed(
        accounts=tuple(_parse_account(item, f"seed.accounts[{i}]")
                       for i, item in enumerate(_items(raw, "accounts"))),
        integrations=integrations,
    )


def _refuse_duplicates(integrations: tuple[SeedIntegration, ...]) -> None:
    """Two entries that would mean one record, or one ID issued twice: no store can apply
    that, so the file is refused as it is read."""
    seen: dict[tuple[str, str], int] = {}
    for i, item in enumerate(integrations):
        for key in (("name", f"{item.account}/{item.name}"), ("application_id", item.application_id or ""),
                    ("consumer_key", item.consumer_key or "")):
            if not key[1]:
                continue
            if key in seen:
                raise ConfigError(f"seed.integrations[{i}].{key[0]} repeats seed.integrations[{seen[key]}]'s")
            seen[key] = i


def _items(seed: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    items = seed.get(key) or []
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        raise ConfigError(f"'seed.{key}' must be a list of mappings")
    return items


@contextmanager
def _at(where: str) -> Iterator[None]:
    """The registry's checks are reused as they are (the admin API runs the same ones), and
    their errors are given the place in the file."""
    try:
        yield
    except RegistryError as e:
        raise ConfigError(f"{where}: {e.message}") from e


def _check_keys(item: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
    for key in item:
        if key not in known:
            raise ConfigError(f"unknown key '{where}.{key}'")


def _account(item: Mapping[str, Any], where: str) -> str:
    with _at(where):
        return valid_account(str(item.get("account", "")))


def _parse_account(item: Mapping[str, Any], where: str) -> SeedAccount:
    _check_keys(item, _ACCOUNT_KEYS, where)
    acct = _account(item, where)
    approval = item.get("require_approval")
    if approval is not None and not isinstance(approval, bool):
        raise ConfigError(f"'{where}.require_approval' must be true or false")
    default = item.get("default_integration")
    if isinstance(default, Mapping):  # the admin API's shape, {state: ...}, is accepted too
        _check_keys(default, ("state",), f"{where}.default_integration")
        default = default.get("state")
    if default is not None and default not in _DEFAULT_STATES:
        raise ConfigError(f"'{where}.default_integration' must be enabled or blocked")
    return SeedAccount(acct, approval, default)


def _parse_integration(item: Mapping[str, Any], where: str) -> SeedIntegration:
    _check_keys(item, _INTEGRATION_KEYS, where)
    acct = _account(item, where)
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"'{where}.name' is required")
    with _at(where):
        fields = validate_fields({k: item[k] for k in _FIELDS if k in item}, creating=True)
    return SeedIntegration(
        account=acct,
        name=fields["name"],
        fields=fields,
        application_id=_application_id(item, where),
        consumer_key=_hex64(item, "consumer_key", where),
        consumer_secret=_hex64(item, "consumer_secret", where),
    )


def _application_id(item: Mapping[str, Any], where: str) -> str | None:
    if item.get("application_id") is None:
        return None
    app_id = normalize_application_id(str(item["application_id"]))
    if app_id is None:
        raise ConfigError(f"'{where}.application_id' must be 32 hex characters (hyphens allowed)")
    return app_id


def _hex64(item: Mapping[str, Any], key: str, where: str) -> str | None:
    value = item.get(key)
    if value is None:
        return None
    text = str(value).strip().lower()
    if not _HEX64.fullmatch(text):
        raise ConfigError(f"'{where}.{key}' must be 64 hex characters")
    return text


# --------------------------------------------------------------------------- applying


async def apply_seed(store: RedisStore, seed: Seed) -> None:
    """Write a parsed seed; what is left to fail needs Redis (an ID or key issued before)."""
    with _at("seed"):
        for account in seed.accounts:
            await _apply_account(store, account)
        for integration in seed.integrations:
            await _apply_integration(store, integration)


async def _apply_account(store: RedisStore, item: SeedAccount) -> None:
    await store.registry.put_account(item.account, item.require_approval)
    if item.default_state is not None:
        await store.registry.set_default_state(item.account, item.default_state)


async def _apply_integration(store: RedisStore, item: SeedIntegration) -> None:
    if await store.registry.account_data(item.account) is None:
        await store.registry.put_account(item.account, None)
    existing = await store.registry.find_seeded(item.account, item.name, application_id=item.application_id,
                                                consumer_key=item.consumer_key)
    if existing is None:
        try:
            await store.registry.create_integration(
                item.account,
                item.fields,
                ACTOR,
                application_id=item.application_id,
                consumer_key=item.consumer_key,
                consumer_secret=item.consumer_secret,
            )
        except RegistryError as e:
            if e.code != "CONFLICT":
                raise
            # A pinned ID issued before to a record that is gone (removed through the admin
            # API) or another account's: it is never reused, and requests carrying it are
            # refused as unknown. Not a reason to keep the gateway from starting.
            log.warning("seed: integration %r in %s skipped: %s", item.name, item.account, e.message)
            return
        log.info("seed: created integration %r in %s", item.name, item.account)
        return
    await store.registry.update_integration(item.account, existing, item.fields, ACTOR)
    if item.consumer_secret is not None:
        current = await store.get_integration(existing)
        if current is not None and current.consumer_secret != item.consumer_secret:
            await store.registry.replace_consumer_secret(existing, item.consumer_secret)
