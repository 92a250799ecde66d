"""Key ring: AES-GCM sealing, rotation, key loading, fingerprint refusal and rekey."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.core.records import InstalledVia
from gateway.errors import ConfigError
from gateway.store import keyspace as ks
from gateway.store.embedded import EmbeddedRedis
from gateway.store.keyring import KeyRing, fingerprint, load_secret_keys, rekey
from tests.store.helpers import INTEGRATION, KEY_A, KEY_B, new_account, store_on


def test_seal_open_and_context_binding() -> None:
    ring = KeyRing([KEY_A])
    sealed = ring.encrypt("s3cret", "integration:1")
    assert "s3cret" not in sealed and sealed.startswith(f"v1.{fingerprint(KEY_A)[:8]}.")
    assert ring.decrypt(sealed, "integration:1") == "s3cret"
    with pytest.raises(ValueError):
        ring.decrypt(sealed, "integration:2")  # moved onto another record
    with pytest.raises(ValueError):
        KeyRing([KEY_B]).decrypt(sealed, "integration:1")
    assert ring.encrypt("s3cret", "x") != ring.encrypt("s3cret", "x")  # fresh nonce each time


def test_rotation_first_key_encrypts_all_decrypt() -> None:
    old = KeyRing([KEY_A]).encrypt("v", "c")
    ring = KeyRing([KEY_B, KEY_A])
    assert ring.decrypt(old, "c") == "v"
    assert not ring.is_current(old) and ring.is_current(ring.encrypt("v", "c"))
    assert ring.primary_fingerprint == fingerprint(KEY_B) and ring.matches(fingerprint(KEY_A))


def test_load_keys_from_environment(tmp_path: Path) -> None:
    text = ",".join(base64.b64encode(k).decode() for k in (KEY_B, KEY_A))
    assert load_secret_keys("redis://x", tmp_path, {"GATEWAY_SECRET_KEYS": text}) == [KEY_B, KEY_A]
    one = base64.b64encode(KEY_A).decode()
    assert load_secret_keys(None, tmp_path, {"GATEWAY_SECRET_KEY": one}) == [KEY_A]
    for bad in ("not base64!", base64.b64encode(b"short").decode(), " , "):
        with pytest.raises(ConfigError):
            load_secret_keys(None, tmp_path, {"GATEWAY_SECRET_KEYS": bad})
    with pytest.raises(ConfigError, match="GATEWAY_SECRET_KEYS"):
        load_secret_keys("redis://elsewhere:6379", tmp_path, {})


def test_embedded_without_key_generates_one_file_0600(tmp_path: Path) -> None:
    first = load_secret_keys(None, tmp_path, {})
    path = tmp_path / "secret.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_secret_keys(None, tmp_path, {}) == first


async def test_fingerprint_refusal_and_rekey(fresh_redis: EmbeddedRedis) -> None:
    store = await store_on(fresh_redis.url, keys=[KEY_A])
    acct, other = new_account(), new_account()
    await store.registry.put_account(acct, False)
    await store.registry.put_account(other, False)
    created = await store.registry.create_integration(acct, INTEGRATION, "test")
    await store.install(other, created["id"], InstalledVia.AUTO_INSTALL, "system:auto_install")
    token = await store.tokens.issue(acct, created["id"], "u@x", "3")
    await store.close()
    with pytest.raises(ConfigError, match="fingerprint"):
        await store_on(fresh_redis.url, keys=[KEY_B])
    rotated = await store_on(fresh_redis.url, keys=[KEY_B, KEY_A])
    assert await rekey(rotated) == 2
    assert await rekey(rotated) == 0  # idempotent
    assert await rotated.client.get(ks.FINGERPRINT) == fingerprint(KEY_B)
    await rotated.close()
    only_new = await store_on(fresh_redis.url, keys=[KEY_B])
    view = await only_new.get_integration(created["id"])
    assert view is not None and view.consumer_secret == created["consumer_secret"]
    tok = await only_new.get_token(token["token_id"])
    assert tok is not None and tok.token_secret == token["token_secret"]
    await only_new.close()
    with pytest.raises(ConfigError):
        await store_on(fresh_redis.url, keys=[KEY_A])


async def test_secrets_never_stored_in_plaintext(fresh_redis: EmbeddedRedis) -> None:
    store = await store_on(fresh_redis.url)
    acct = new_account()
    await store.registry.put_account(acct, False)
    created = await store.registry.create_integration(acct, INTEGRATION, "test")
    reset = await store.registry.reset_credentials(acct, created["id"], "test")
    token = await store.tokens.issue(acct, created["id"], "u@x", "3")
    await store.save_issued_token(acct, created["id"], "v@x", "3", "a" * 64, "b1" * 32)
    admin = await store.tokens.mint_admin(acct, "administrator")
    secrets = [created["consumer_secret"], reset["consumer_secret"], token["token_secret"], "b1" * 32, admin["token"]]
    dump = []
    async for key in store.client.scan_iter("*"):
        kind = await store.client.type(key)
        if kind == "hash":
            dump.append(repr(await store.client.hgetall(key)))
        elif kind == "string":
            dump.append(await store.client.get(key))
        elif kind == "set":
            dump.append(repr(await store.client.smembers(key)))
        elif kind == "list":
            dump.append(repr(await store.client.lrange(key, 0, -1)))
        elif kind == "zset":
            dump.append(repr(await store.client.zrange(key, 0, -1)))
        dump.append(key)
    text = "\n".join(dump)
    for secret in secrets:
        assert secret not in text and secret.upper() not in text
    await store.close()


def test_rekey_refuses_a_data_dir_without_gateway_data(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    done = subprocess.run([sys.executable, "-m", "gateway", "rekey", "--data-dir", str(missing)],
                          capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")})
    assert done.returncode == 2 and "no gateway data in" in done.stderr
    assert not missing.exists()  # nothing created: no key file, no Redis
