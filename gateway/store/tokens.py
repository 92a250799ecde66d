"""TBA tokens (secrets sealed by the key ring) and admin bearer tokens (stored only as hashes).

- token hash `token:ID`: token_id, secret (sealed), account, integration_id, user, role,
  source (admin | issue_token), created_at, revoked "0"/"1"; `{acct:A}:tokens` lists the
  account's token ids. Revoked tokens are kept (R13 tells `token_revoked` from unknown).
- admin token hash `admin_token:<sha256 of the token>`: id, role, account, created_at;
  `admin_token_id:ID` -> the hash; `{acct:A}:admin_tokens` lists ids. Looking a presented
  token up by its hash is the constant-time comparison: no secret is ever compared bytewise.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.core.records import TokenView
from gateway.store import keyspace as ks
from gateway.store.atomic import Client, Pipe, RegistryError, iso_now, transact
from gateway.store.keyring import KeyRing
from gateway.store.registry import looks_like_id

ADMIN_ROLES = ("administrator", "integration_application", "integration_applications")
BOOTSTRAP_ID = "system:bootstrap"  # SPEC 5: an actor is a token id or system:<what>
_TOKEN_ID_LEN = 64


def token_context(token_id: str) -> str:
    return f"token:{token_id}"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class AdminPrincipal:
    id: str
    role: str
    account: str | None  # None: every account (the bootstrap token)


def token_json(data: dict[str, str]) -> dict[str, Any]:
    return {
        "token_id": data["token_id"],
        "integration_id": data["integration_id"],
        "user": data["user"],
        "role": data["role"],
        "source": data.get("source", "admin"),
        "created_at": data.get("created_at"),
    }


class Tokens:
    def __init__(self, client: Client, keyring: KeyRing, on_change: Callable[[], None]) -> None:
        self.r = client
        self.keyring = keyring
        self.on_change = on_change

    def view(self, data: dict[str, str]) -> TokenView:
        return TokenView(
            token_id=data["token_id"],
            token_secret=self.keyring.decrypt(data["secret"], token_context(data["token_id"])),
            account=data["account"],
            integration_id=data["integration_id"],
            user=data["user"],
            role=data["role"],
            revoked=data.get("revoked") == "1",
        )

    async def raw(self, token_id: str) -> dict[str, str] | None:
        if not token_id or len(token_id) > 256:
            return None
        data: dict[str, str] = await self.r.hgetall(ks.token(token_id))
        return data or None

    async def _save(
        self,
        acct: str,
        integration_id: str,
        user: str,
        role: str,
        token_id: str,
        secret: str,
        source: str,
        *,
        require_installed: bool,
    ) -> dict[str, str]:
        data = {
            "token_id": token_id,
            "secret": self.keyring.encrypt(secret, token_context(token_id)),
            "account": acct,
            "integration_id": integration_id,
            "user": user,
            "role": role,
            "source": source,
            "created_at": iso_now(),
            "revoked": "0",
        }
        inst_key = ks.installation(acct, integration_id)

        async def body(pipe: Pipe) -> None:
            if require_installed and not await pipe.exists(inst_key):
                raise RegistryError(
                    "NOT_FOUND", f"no integration {integration_id} installed in account {acct}"
                )
            pipe.multi()
            pipe.hset(ks.token(token_id), mapping=data)
            pipe.sadd(ks.account_tokens(acct), token_id)
            pipe.sadd(ks.TOKENS, token_id)
            pipe.publish(ks.INVALIDATION_CHANNEL, ks.invalidation(f"token:{token_id}"))

        await transact(self.r, [inst_key, ks.token(token_id)], body)
        self.on_change()
        return data

    async def issue(self, acct: str, integration_id: str, user: str, role: str) -> dict[str, Any]:
        """An admin-issued token for a record installed in `acct` (else NOT_FOUND)."""
        if not looks_like_id(integration_id):
            raise RegistryError("NOT_FOUND", f"no integration {integration_id} installed in account {acct}")
        token_id, secret = secrets.token_hex(32), secrets.token_hex(32)
        data = await self._save(
            acct, integration_id, user, role, token_id, secret, "admin", require_installed=True
        )
        return token_json(data) | {"token_secret": secret}

    async def save_issued(
        self, acct: str, integration_id: str, user: str, role: str, token_id: str, secret: str
    ) -> None:
        await self._save(
            acct, integration_id, user, role, token_id, secret, "issue_token", require_installed=False
        )

    async def list_tokens(self, acct: str) -> list[dict[str, Any]]:
        ids = sorted(await self.r.smembers(ks.account_tokens(acct)))
        async with self.r.pipeline(transaction=False) as pipe:
            for tid in ids:
                pipe.hgetall(ks.token(tid))
            rows: list[dict[str, str]] = await pipe.execute() if ids else []
        live = [row for row in rows if row and row.get("revoked") != "1"]
        live.sort(key=lambda row: row.get("created_at", ""))
        return [token_json(row) for row in live]

    async def revoke(self, acct: str, token_id: str) -> None:
        key = ks.token(token_id)

        async def body(pipe: Pipe) -> None:
            data = await pipe.hgetall(key) if len(token_id) <= 256 else {}
            if not data or data.get("account") != acct or data.get("revoked") == "1":
                raise RegistryError("NOT_FOUND", f"no token {token_id} in account {acct}")
            pipe.multi()
            pipe.hset(key, "revoked", "1")
            pipe.publish(ks.INVALIDATION_CHANNEL, ks.invalidation(f"token:{token_id}"))

        await transact(self.r, [key], body)
        self.on_change()

    # ------------------------------------------------------------------ admin bearer tokens

    async def mint_admin(self, acct: str, role: str) -> dict[str, str]:
        if role not in ADMIN_ROLES:
            raise RegistryError("INVALID_REQUEST", f"'role' must be one of {', '.join(ADMIN_ROLES)}")
        token_id, token = secrets.token_hex(16), "gwat_" + secrets.token_hex(32)
        digest = token_hash(token)
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(
                ks.admin_token_by_hash(digest),
                mapping={"id": token_id, "role": role, "account": acct, "created_at": iso_now()},
            )
            pipe.set(ks.admin_token_id(token_id), digest)
            pipe.sadd(ks.account_admin_tokens(acct), token_id)
            await pipe.execute()
        return {"id": token_id, "token": token}

    async def list_admin(self, acct: str) -> list[dict[str, str]]:
        out = []
        for token_id in sorted(await self.r.smembers(ks.account_admin_tokens(acct))):
            digest = await self.r.get(ks.admin_token_id(token_id))
            data = await self.r.hgetall(ks.admin_token_by_hash(digest)) if digest else {}
            if data:
                out.append({"id": data["id"], "role": data["role"], "created_at": data["created_at"]})
        out.sort(key=lambda item: item["created_at"])
        return out

    async def revoke_admin(self, acct: str, token_id: str) -> None:
        digest = await self.r.get(ks.admin_token_id(token_id)) if looks_like_id(token_id) else None
        data = await self.r.hgetall(ks.admin_token_by_hash(digest)) if digest else {}
        if not data or data.get("account") != acct:
            raise RegistryError("NOT_FOUND", f"no admin token {token_id} in account {acct}")
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.delete(ks.admin_token_by_hash(str(digest)), ks.admin_token_id(token_id))
            pipe.srem(ks.account_admin_tokens(acct), token_id)
            await pipe.execute()

    async def authenticate(self, token: str, bootstrap: str | None) -> AdminPrincipal | None:
        digest = token_hash(token)
        if bootstrap and hmac.compare_digest(digest, token_hash(bootstrap)):
            return AdminPrincipal(id=BOOTSTRAP_ID, role="administrator", account=None)
        if len(token) > 200:
            return None
        data = await self.r.hgetall(ks.admin_token_by_hash(digest))
        if not data:
            return None
        return AdminPrincipal(id=data["id"], role=data["role"], account=data["account"])
