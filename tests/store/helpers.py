"""Shared helpers of the store and admin API tests (real Redis, never a fake)."""

from __future__ import annotations

import hashlib
import random
import secrets
from dataclasses import replace
from typing import Any

from gateway.config import Settings, load_settings
from gateway.store.redis import RedisStore, open_store

# Deterministic: every test on the session-wide Redis must use one key ring, since the first
# store to open records its fingerprint there (SPEC section 8).
KEY_A = hashlib.sha256(b"integration-gateway test key A").digest()
KEY_B = hashlib.sha256(b"integration-gateway test key B").digest()


def make_settings(**changes: Any) -> Settings:
    settings = load_settings(environ={})
    log_changes = {k[4:]: changes.pop(k) for k in list(changes) if k.startswith("log_")}
    if log_changes:
        changes["log"] = replace(settings.log, **log_changes)
    return settings.replace(**changes) if changes else settings


def new_account(sandbox: bool = False) -> str:
    acct = str(random.SystemRandom().randint(1_000_000, 9_999_999)) + secrets.token_hex(2).upper()
    return f"{acct}_SB1" if sandbox else acct


async def store_on(
    redis_url: str, *, keys: list[bytes] | None = None, settings: Settings | None = None, listen: bool = True
) -> RedisStore:
    settings = settings or make_settings()
    return await open_store(settings, redis_url, secret_keys=keys or [KEY_A], listen=listen)


INTEGRATION = {
    "name": "orders sync",
    "description": "pushes orders",
    "state": "enabled",
    "note": "",
    "auth": {"user_credentials": True, "token_based": True, "tba_issue_token_endpoint": False},
    "auto_install": False,
}
