"""Secrets at rest: AES-256-GCM under a key ring (SPEC section 8, `GATEWAY_SECRET_KEYS`).

The first key encrypts, every key decrypts, so a key can be rotated: add the new key in
front, run `gateway rekey`, then drop the old one. A ciphertext names the key that sealed it
(`v1.<key id>.<base64 nonce+ciphertext>`, key id = first 8 hex of the key's fingerprint), and
its associated data binds it to the record it belongs to, so a ciphertext copied onto another
record does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.store.redis import RedisStore

log = logging.getLogger("gateway.keyring")

KEY_BYTES = 32
_NONCE_BYTES = 12
_PREFIX = "v1"


def fingerprint(key: bytes) -> str:
    """A public, stable name for a key (16 hex); it reveals nothing usable about the key."""
    return hashlib.sha256(b"integration-gateway key fingerprint\x00" + key).hexdigest()[:16]


class KeyRing:
    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ConfigError("the secret key ring is empty")
        for key in keys:
            if len(key) != KEY_BYTES:
                raise ConfigError(f"secret keys must be {KEY_BYTES} bytes, got one of {len(key)}")
        self.keys = list(keys)
        self.fingerprints = [fingerprint(k) for k in self.keys]
        self._by_id = {fp[:8]: AESGCM(k) for fp, k in zip(self.fingerprints, self.keys, strict=True)}
        self._primary_id = self.fingerprints[0][:8]

    @property
    def primary_fingerprint(self) -> str:
        return self.fingerprints[0]

    def encrypt(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._by_id[self._primary_id].encrypt(nonce, plaintext.encode(), context.encode())
        return f"{_PREFIX}.{self._primary_id}.{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str, context: str) -> str:
        try:
            prefix, key_id, body = token.split(".", 2)
            raw = base64.b64decode(body, validate=True)
        except (ValueError, binascii.Error):
            raise ValueError("not a sealed secret") from None
        aead = self._by_id.get(key_id)
        if prefix != _PREFIX or aead is None:
            raise ValueError(f"secret sealed under unknown key {key_id!r}")
        try:
            return aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode()).decode()
        except InvalidTag:
            raise ValueError("secret does not decrypt (wrong key or wrong record)") from None

    def is_current(self, token: str) -> bool:
        """True when sealed under the first key (nothing for `rekey` to do)."""
        return token.startswith(f"{_PREFIX}.{self._primary_id}.")

    def matches(self, recorded_fingerprint: str) -> bool:
        return recorded_fingerprint in self.fingerprints


def parse_keys(text: str, source: str) -> list[bytes]:
    keys: list[bytes] = []
    for i, part in enumerate(p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            key = base64.b64decode(part, validate=True)
        except (ValueError, binascii.Error):
            raise ConfigError(f"{source}: key #{i + 1} is not valid base64") from None
        if len(key) != KEY_BYTES:
            raise ConfigError(f"{source}: key #{i + 1} is {len(key)} bytes, must be {KEY_BYTES}")
        keys.append(key)
    if not keys:
        raise ConfigError(f"{source} is set but holds no key")
    return keys


def load_secret_keys(
    redis_url: str | None, data_dir: Path, environ: Mapping[str, str] | None = None
) -> list[bytes]:
    """The key ring from `GATEWAY_SECRET_KEYS` (or `GATEWAY_SECRET_KEY`); with the embedded Redis
    and no key, `data_dir/secret.key` (generated on first use, mode 0600). Replicas sharing an
    external Redis must share keys, so there a missing key is a ConfigError."""
    keys = secret_keys_from_env(redis_url, environ)
    return keys if keys is not None else [_local_key(Path(data_dir) / "secret.key")]


def secret_keys_from_env(redis_url: str | None, environ: Mapping[str, str] | None = None) -> list[bytes] | None:
    """The ring the environment names, or None when the embedded Redis's key file is to be used;
    touches no file (`check-config` runs it too)."""
    env = os.environ if environ is None else environ
    for name in ("GATEWAY_SECRET_KEYS", "GATEWAY_SECRET_KEY"):
        if env.get(name):
            keys = parse_keys(env[name], name)
            if name == "GATEWAY_SECRET_KEY" and len(keys) != 1:
                raise ConfigError(
                    "GATEWAY_SECRET_KEY takes exactly one key; use GATEWAY_SECRET_KEYS for a ring"
                )
            return keys
    if redis_url is not None:
        raise ConfigError(
            "redis_url is set but GATEWAY_SECRET_KEYS is not: replicas sharing a Redis "
            "must share the secret keys"
        )
    return None


def _local_key(path: Path) -> bytes:
    if path.exists():
        return parse_keys(path.read_text().strip(), str(path))[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(key).decode() + "\n")
    log.info("generated a secret key at %s", path)
    return key


async def rekey(store: RedisStore) -> int:
    """`gateway rekey`: re-seal every secret under the ring's first key and record that key's
    fingerprint; safe while gateways run (they hold the same ring, so both keys decrypt).
    Returns how many secrets were rewritten."""
    return await store.rekey_secrets()
