"""Accounts, integration records, installations, bundles and change tracking in Redis.

Data model (keys in `keyspace`):
- account hash `{acct:A}:account`: require_approval "0"/"1", default_state, created_at.
- integration hash `{int:ID}:record`: id, owner, name, description, auth (JSON), auto_install,
  application_id, consumer_key, consumer_secret (sealed by the key ring), created_at.
  `{int:ID}:accounts` is the set of accounts where it is installed.
- installation hash `{acct:A}:inst:ID`: state, note, installed_via, state_since, created_at;
  `{acct:A}:installs` is a sorted set of installed ids (score: installation time).
- change list `{acct:A}:changes:ID`: JSON {time, actor, field, old, new}, oldest first.
- bundle `bundle:ID` -> integration id.
- indexes: application_id -> id and consumer_key -> id (live records); the sets of every
  application ID / consumer key ever issued, so none is ever reused.

Every change runs in one MULTI/EXEC (optimistic, WATCH) that also PUBLISHes the cache
invalidation, so replicas drop their caches exactly when the change becomes visible.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from gateway.core.records import AccountView, AuthFlags, InstallationView, InstalledVia, IntegrationView, State
from gateway.store import keyspace as ks
from gateway.store.atomic import Client, Pipe, RegistryError, iso_now, transact
from gateway.store.keyring import KeyRing
from gateway.store.shapes import (
    AUTH_KEYS,
    INSTALLATION_FIELDS,
    OWNER_FIELDS,
    account_json,
    account_view,
    as_flag,
    auth_of,
    change,
    installation_view,
    integration_json,
    is_flag,
    looks_like_id,
    new_id,
    valid_account,
    validate_fields,
)

__all__ = [
    "Registry",
    "RegistryError",
    "account_json",
    "account_view",
    "installation_view",
    "looks_like_id",
    "valid_account",
]


class Registry:
    """Admin-side operations; `on_change` drops the local cache right after a commit."""

    def __init__(self, client: Client, keyring: KeyRing, on_change: Callable[[], None]) -> None:
        self.r = client
        self.keyring = keyring
        self.on_change = on_change

    def _publish(self, pipe: Pipe, what: str) -> None:
        pipe.publish(ks.INVALIDATION_CHANNEL, ks.invalidation(what))

    # ------------------------------------------------------------------ accounts

    async def account_data(self, acct: str) -> dict[str, str] | None:
        data: dict[str, str] = await self.r.hgetall(ks.account(acct))
        return data or None

    async def require_account(self, acct: str) -> dict[str, str]:
        data = await self.account_data(acct)
        if data is None:
            raise RegistryError("ACCOUNT_NOT_FOUND", f"account {acct} is not registered")
        return data

    async def put_account(self, acct: str, require_approval: bool | None) -> dict[str, Any]:
        acct = valid_account(acct)

        async def body(pipe: Pipe) -> None:
            exists = await pipe.exists(ks.account(acct))
            pipe.multi()
            if not exists:
                pipe.hset(
                    ks.account(acct),
                    mapping={
                        "require_approval": as_flag(bool(require_approval)),
                        "default_state": State.ENABLED.value,
                        "created_at": iso_now(),
                    },
                )
                pipe.sadd(ks.ACCOUNTS, acct)
            elif require_approval is not None:
                pipe.hset(ks.account(acct), "require_approval", as_flag(require_approval))
            self._publish(pipe, f"account:{acct}")

        await transact(self.r, [ks.account(acct)], body)
        self.on_change()
        return account_json(acct, await self.require_account(acct))

    async def register_account(self, acct: str) -> AccountView:
        acct = valid_account(acct)
        if await self.account_data(acct) is None:
            await self.put_account(acct, None)
        return account_view(acct, await self.require_account(acct))

    async def set_default_state(self, acct: str, state: str) -> dict[str, Any]:
        if state not in (State.ENABLED.value, State.BLOCKED.value):
            raise RegistryError("INVALID_REQUEST", "'state' must be 'enabled' or 'blocked'")

        async def body(pipe: Pipe) -> None:
            if not await pipe.exists(ks.account(acct)):
                raise RegistryError("ACCOUNT_NOT_FOUND", f"account {acct} is not registered")
            pipe.multi()
            pipe.hset(ks.account(acct), mapping={"default_state": state, "default_state_since": str(time.time())})
            self._publish(pipe, f"account:{acct}")

        await transact(self.r, [ks.account(acct)], body)
        self.on_change()
        return account_json(acct, await self.require_account(acct))

    # ------------------------------------------------------------------ reading records

    async def record(self, integration_id: str) -> dict[str, str] | None:
        if not looks_like_id(integration_id):
            return None
        data: dict[str, str] = await self.r.hgetall(ks.integration(integration_id))
        return data or None

    async def installation(self, acct: str, integration_id: str) -> dict[str, str] | None:
        if not looks_like_id(integration_id):
            return None
        data: dict[str, str] = await self.r.hgetall(ks.installation(acct, integration_id))
        return data or None

    async def _installed(self, acct: str, integration_id: str) -> tuple[dict[str, str], dict[str, str]]:
        """(record, installation) in `acct`, or NOT_FOUND exactly like an unknown id."""
        record = await self.record(integration_id)
        inst = await self.installation(acct, integration_id)
        if record is None or inst is None:
            raise RegistryError("NOT_FOUND", f"no integration {integration_id} in account {acct}")
        return record, inst

    def integration_view(self, record: Mapping[str, str]) -> IntegrationView:
        auth = auth_of(record)
        return IntegrationView(
            id=record["id"],
            owner_account=record["owner"],
            name=record.get("name", ""),
            application_id=record["application_id"],
            consumer_key=record["consumer_key"],
            consumer_secret=self.keyring.decrypt(record["consumer_secret"], f"integration:{record['id']}"),
            auth=AuthFlags(**auth),
            auto_install=is_flag(record.get("auto_install")),
        )

    async def get_integration(self, acct: str, integration_id: str) -> dict[str, Any]:
        record, inst = await self._installed(acct, integration_id)
        return integration_json(record, inst, acct)

    async def list_integrations(self, acct: str) -> list[dict[str, Any]]:
        ids: list[str] = await self.r.zrange(ks.installs(acct), 0, -1)
        if not ids:
            return []
        async with self.r.pipeline(transaction=False) as pipe:
            for iid in ids:
                pipe.hgetall(ks.integration(iid))
                pipe.hgetall(ks.installation(acct, iid))
            rows = await pipe.execute()
        out = []
        for i in range(0, len(rows), 2):
            if rows[i] and rows[i + 1]:
                out.append(integration_json(rows[i], rows[i + 1], acct))
        return out

    async def changes(self, acct: str, integration_id: str) -> list[dict[str, Any]]:
        await self._installed(acct, integration_id)
        raw: list[str] = await self.r.lrange(ks.changes(acct, integration_id), 0, -1)
        return [json.loads(item) for item in raw]

    # ------------------------------------------------------------------ creating records

    async def _reserve(self, index_set: str, make: Callable[[], str], wanted: str | None) -> str:
        """A value never issued before (SADD is the atomic reservation)."""
        if wanted is not None:
            if not await self.r.sadd(index_set, wanted):
                raise RegistryError("CONFLICT", f"{wanted[:4]}... was already issued and is never reused")
            return wanted
        while True:
            candidate = make()
            if await self.r.sadd(index_set, candidate):
                return candidate

    async def create_integration(
        self,
        acct: str,
        fields: Mapping[str, Any],
        actor: str,
        *,
        application_id: str | None = None,
        consumer_key: str | None = None,
        consumer_secret: str | None = None,
    ) -> dict[str, Any]:
        """Create a record owned by `acct`; the answer holds the consumer secret (shown once)."""
        data = validate_fields(fields, creating=True)
        await self.require_account(acct)
        # Both wanted values checked before either is reserved: a taken consumer key would
        # otherwise burn a wanted application ID for good.
        for index_set, wanted in ((ks.ISSUED_APP_IDS, application_id), (ks.ISSUED_CONSUMER_KEYS, consumer_key)):
            if wanted is not None and await self.r.sismember(index_set, wanted):
                raise RegistryError("CONFLICT", f"{wanted[:4]}... was already issued and is never reused")
        iid = new_id()
        app_id = await self._reserve(ks.ISSUED_APP_IDS, lambda: secrets.token_hex(16).upper(), application_id)
        ckey = await self._reserve(ks.ISSUED_CONSUMER_KEYS, lambda: secrets.token_hex(32), consumer_key)
        csecret = consumer_secret or secrets.token_hex(32)
        auth = {k: v for k, v in zip(AUTH_KEYS, (True, True, False), strict=True)}
        auth.update(data.get("auth", {}))
        record = {
            "id": iid,
            "owner": acct,
            "name": data["name"],
            "description": data.get("description", ""),
            "auth": json.dumps(auth),
            "auto_install": as_flag(data.get("auto_install", False)),
            "application_id": app_id,
            "consumer_key": ckey,
            "consumer_secret": self.keyring.encrypt(csecret, f"integration:{iid}"),
            "created_at": iso_now(),
        }
        inst = {
            "state": data.get("state", State.ENABLED.value),
            "note": data.get("note", ""),
            "installed_via": InstalledVia.OWNER.value,
            "state_since": str(time.time()),
            "created_at": record["created_at"],
        }
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(ks.integration(iid), mapping=record)
            pipe.hset(ks.APP_ID_INDEX, app_id, iid)
            pipe.hset(ks.CONSUMER_KEY_INDEX, ckey, iid)
            pipe.sadd(ks.INTEGRATIONS, iid)
            pipe.sadd(ks.integration_accounts(iid), acct)
            pipe.hset(ks.installation(acct, iid), mapping=inst)
            pipe.zadd(ks.installs(acct), {iid: time.time()})
            pipe.rpush(ks.changes(acct, iid), change(actor, "created", None, record["name"]))
            self._publish(pipe, f"integration:{iid}")
            await pipe.execute()
        self.on_change()
        body = integration_json(record, inst, acct)
        body.update(consumer_key=ckey, consumer_secret=csecret)
        return body

    async def install(
        self,
        acct: str,
        integration_id: str,
        via: InstalledVia,
        actor: str,
        *,
        state: State | None = None,
        exists_ok: bool = True,
    ) -> InstallationView:
        """Install a record owned elsewhere; `state` None: by the account's require_approval."""

        async def body(pipe: Pipe) -> InstallationView:
            account = await pipe.hgetall(ks.account(acct))
            if not account:
                raise RegistryError("ACCOUNT_NOT_FOUND", f"account {acct} is not registered")
            record = await pipe.hgetall(ks.integration(integration_id))
            if not record:
                raise RegistryError("NOT_FOUND", f"no integration {integration_id}")
            existing = await pipe.hgetall(ks.installation(acct, integration_id))
            if existing:
                if not exists_ok:
                    raise RegistryError("CONFLICT", f"integration {integration_id} is already installed in {acct}")
                return installation_view(acct, integration_id, existing)
            if record["owner"] == acct:
                raise RegistryError("CONFLICT", f"account {acct} owns integration {integration_id}")
            new_state = state or (State.WAITING if is_flag(account.get("require_approval")) else State.ENABLED)
            now = time.time()
            inst = {
                "state": new_state.value,
                "note": "",
                "installed_via": via.value,
                "state_since": str(now),
                "created_at": iso_now(),
            }
            pipe.multi()
            pipe.hset(ks.installation(acct, integration_id), mapping=inst)
            pipe.zadd(ks.installs(acct), {integration_id: now})
            pipe.sadd(ks.integration_accounts(integration_id), acct)
            pipe.delete(ks.changes(acct, integration_id))
            pipe.rpush(ks.changes(acct, integration_id), change(actor, "created", None, record.get("name")))
            self._publish(pipe, f"installation:{acct}:{integration_id}")
            return installation_view(acct, integration_id, inst)

        keys = [ks.account(acct), ks.integration(integration_id), ks.installation(acct, integration_id)]
        view = await transact(self.r, keys, body)
        self.on_change()
        return view

    # ------------------------------------------------------------------ editing records

    async def update_integration(
        self, acct: str, integration_id: str, patch: Mapping[str, Any], actor: str
    ) -> dict[str, Any]:
        data = validate_fields(patch, creating=False)
        if not looks_like_id(integration_id):
            raise RegistryError("NOT_FOUND", f"no integration {integration_id} in account {acct}")
        rkey, ikey = ks.integration(integration_id), ks.installation(acct, integration_id)

        async def body(pipe: Pipe) -> dict[str, Any]:
            record = await pipe.hgetall(rkey)
            inst = await pipe.hgetall(ikey)
            if not record or not inst:
                raise RegistryError("NOT_FOUND", f"no integration {integration_id} in account {acct}")
            foreign = [k for k in data if k not in INSTALLATION_FIELDS]
            if record["owner"] != acct and foreign:
                raise RegistryError(
                    "FIELD_NOT_EDITABLE",
                    f"'{foreign[0]}' belongs to the owner account "
                    f"{record['owner']}; an installed integration edits only state and note",
                )
            record_updates: dict[str, str] = {}
            inst_updates: dict[str, str] = {}
            entries: list[str] = []
            for key in OWNER_FIELDS:
                if key not in data:
                    continue
                if key == "auth":
                    merged = auth_of(record) | data["auth"]
                    record_updates["auth"] = json.dumps(merged)
                elif key == "auto_install":
                    record_updates[key] = as_flag(data[key])
                else:
                    record_updates[key] = data[key]
            for key in INSTALLATION_FIELDS:
                if key in data and data[key] != inst.get(key, ""):
                    entries.append(change(actor, key, inst.get(key, ""), data[key]))
                    inst_updates[key] = data[key]
                    if key == "state":
                        inst_updates["state_since"] = str(time.time())
            record.update(record_updates)
            inst.update(inst_updates)
            pipe.multi()
            if record_updates:
                pipe.hset(rkey, mapping=record_updates)
            if inst_updates:
                pipe.hset(ikey, mapping=inst_updates)
            if entries:
                pipe.rpush(ks.changes(acct, integration_id), *entries)
            if record_updates or inst_updates:
                self._publish(pipe, f"integration:{integration_id}")
            return integration_json(record, inst, acct)

        result = await transact(self.r, [rkey, ikey], body)
        self.on_change()
        return result

    async def reset_credentials(self, acct: str, integration_id: str, actor: str) -> dict[str, Any]:
        record, _ = await self._installed(acct, integration_id)
        if record["owner"] != acct:
            raise RegistryError("OWNER_ONLY", f"only the owner account {record['owner']} may reset credentials")
        ckey = await self._reserve(ks.ISSUED_CONSUMER_KEYS, lambda: secrets.token_hex(32), None)
        csecret = secrets.token_hex(32)
        rkey = ks.integration(integration_id)

        async def body(pipe: Pipe) -> dict[str, Any]:
            current = await pipe.hgetall(rkey)
            inst = await pipe.hgetall(ks.installation(acct, integration_id))
            if not current or not inst:
                raise RegistryError("NOT_FOUND", f"no integration {integration_id} in account {acct}")
            pipe.multi()
            pipe.hset(
                rkey,
                mapping={
                    "consumer_key": ckey,
                    "consumer_secret": self.keyring.encrypt(csecret, f"integration:{integration_id}"),
                },
            )
            pipe.hdel(ks.CONSUMER_KEY_INDEX, current["consumer_key"])
            pipe.hset(ks.CONSUMER_KEY_INDEX, ckey, integration_id)
            pipe.rpush(ks.changes(acct, integration_id), change(actor, "credentials", None, None))
            self._publish(pipe, f"integration:{integration_id}")
            body = integration_json(current, inst, acct)
            body.update(consumer_key=ckey, consumer_secret=csecret)
            return body

        result = await transact(self.r, [rkey], body)
        self.on_change()
        return result

    async def remove_integration(self, acct: str, integration_id: str) -> None:
        """Installed: uninstall from `acct`. Owner: remove the record everywhere. Tokens of each
        uninstalled (account, record) are revoked; IDs and keys stay in the issued sets."""
        record, _ = await self._installed(acct, integration_id)
        owner = record["owner"] == acct
        rkey, akey = ks.integration(integration_id), ks.integration_accounts(integration_id)

        async def body(pipe: Pipe) -> None:
            current = await pipe.hgetall(rkey)
            if not current or not await pipe.exists(ks.installation(acct, integration_id)):
                raise RegistryError("NOT_FOUND", f"no integration {integration_id} in account {acct}")
            accounts: list[str] = sorted(await pipe.smembers(akey)) if owner else [acct]
            for a in accounts:
                await pipe.watch(ks.account_tokens(a))
            revoke: list[str] = []
            for a in accounts:
                for tid in await pipe.smembers(ks.account_tokens(a)):
                    if await pipe.hget(ks.token(tid), "integration_id") == integration_id:
                        revoke.append(tid)
            pipe.multi()
            for a in accounts:
                pipe.delete(ks.installation(a, integration_id), ks.changes(a, integration_id))
                pipe.zrem(ks.installs(a), integration_id)
                pipe.srem(akey, a)
            for tid in revoke:
                pipe.hset(ks.token(tid), "revoked", "1")
            if owner:
                pipe.delete(rkey, akey)
                pipe.hdel(ks.APP_ID_INDEX, current["application_id"])
                pipe.hdel(ks.CONSUMER_KEY_INDEX, current["consumer_key"])
                pipe.srem(ks.INTEGRATIONS, integration_id)
            self._publish(pipe, f"integration:{integration_id}")

        await transact(self.r, [rkey, akey, ks.installation(acct, integration_id)], body)
        self.on_change()

    # ------------------------------------------------------------------ bundles

    async def create_bundle(self, acct: str, integration_id: str) -> str:
        record, _ = await self._installed(acct, integration_id)
        if record["owner"] != acct:
            raise RegistryError("OWNER_ONLY", f"only the owner account {record['owner']} may bundle it")
        bundle_id = new_id()
        await self.r.set(ks.bundle(bundle_id), integration_id)
        return bundle_id

    async def install_bundle(self, acct: str, bundle_id: str, actor: str) -> dict[str, Any]:
        integration_id = await self.r.get(ks.bundle(bundle_id)) if looks_like_id(bundle_id) else None
        if integration_id is None or await self.record(integration_id) is None:
            raise RegistryError("NOT_FOUND", f"no bundle {bundle_id}")
        await self.install(acct, integration_id, InstalledVia.BUNDLE, actor, state=State.ENABLED, exists_ok=False)
        return await self.get_integration(acct, integration_id)

    # ------------------------------------------------------------------ seeding

    async def find_seeded(self, acct: str, name: str, *, application_id: str | None = None,
                          consumer_key: str | None = None) -> str | None:
        """The record `acct` owns that a seed entry means: the one holding its pinned
        application ID or consumer key (a rename through the admin API keeps it), else the
        one of that name."""
        for index, value in ((ks.APP_ID_INDEX, application_id), (ks.CONSUMER_KEY_INDEX, consumer_key)):
            iid = await self.r.hget(index, value) if value else None
            if iid:
                record = await self.record(str(iid))
                if record is not None and record.get("owner") == acct:
                    return str(iid)
        for item in await self.list_integrations(acct):
            if item["owner_account"] == acct and item["name"] == name:
                return str(item["id"])
        return None

    async def replace_consumer_secret(self, integration_id: str, secret: str) -> None:
        rkey = ks.integration(integration_id)
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(rkey, "consumer_secret", self.keyring.encrypt(secret, f"integration:{integration_id}"))
            self._publish(pipe, f"integration:{integration_id}")
            await pipe.execute()
        self.on_change()
