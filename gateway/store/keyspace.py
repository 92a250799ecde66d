"""Redis key names, in one place.

Everything that belongs to one account carries the hash tag `{acct:<ACCOUNT>}` and everything
that belongs to one integration record `{int:<id>}`, so a Redis Cluster keeps each group in
one slot. The global indexes (application ID, consumer key, token, admin token, bundle) are
single keys or small per-id keys.
"""

from __future__ import annotations

import hashlib
import time

PREFIX = "gw"
INVALIDATION_CHANNEL = f"{PREFIX}:invalidate"
FINGERPRINT = f"{PREFIX}:meta:key_fingerprint"
ACCOUNTS = f"{PREFIX}:accounts"  # set of every registered account
APP_ID_INDEX = f"{PREFIX}:idx:application_id"  # hash application_id -> integration id (live records)
CONSUMER_KEY_INDEX = f"{PREFIX}:idx:consumer_key"  # hash consumer_key -> integration id (live records)
ISSUED_APP_IDS = f"{PREFIX}:issued:application_id"  # set: every application ID ever issued
ISSUED_CONSUMER_KEYS = f"{PREFIX}:issued:consumer_key"  # set: every consumer key ever issued
INTEGRATIONS = f"{PREFIX}:integrations"  # set of every live integration id
TOKENS = f"{PREFIX}:tokens"  # set of every token id (for rekey)
GLOBAL_LOG = f"{PREFIX}:log:global"  # usage entries without an account


def account(acct: str) -> str:
    return f"{PREFIX}:{{acct:{acct}}}:account"


def installs(acct: str) -> str:
    """Sorted set of the integration ids installed in `acct`, scored by installation time."""
    return f"{PREFIX}:{{acct:{acct}}}:installs"


def installation(acct: str, integration_id: str) -> str:
    return f"{PREFIX}:{{acct:{acct}}}:inst:{integration_id}"


def changes(acct: str, integration_id: str) -> str:
    return f"{PREFIX}:{{acct:{acct}}}:changes:{integration_id}"


def account_tokens(acct: str) -> str:
    return f"{PREFIX}:{{acct:{acct}}}:tokens"


def account_admin_tokens(acct: str) -> str:
    return f"{PREFIX}:{{acct:{acct}}}:admin_tokens"


def usage_log(acct: str) -> str:
    return f"{PREFIX}:{{acct:{acct}}}:log:usage"


def execution_log(acct: str, integration_id: str) -> str:
    return f"{PREFIX}:{{acct:{acct}}}:log:exec:{integration_id}"


def usage_log_of(stream: str) -> str:
    """The usage stream that holds an execution log's entries too (a usage stream: itself)."""
    head, sep, _ = stream.partition(":log:exec:")
    return head + ":log:usage" if sep else stream


def integration(integration_id: str) -> str:
    return f"{PREFIX}:{{int:{integration_id}}}:record"


def integration_accounts(integration_id: str) -> str:
    """Set of the accounts where the record is installed (the owner included)."""
    return f"{PREFIX}:{{int:{integration_id}}}:accounts"


def token(token_id: str) -> str:
    return f"{PREFIX}:token:{token_id}"


def admin_token_by_hash(digest: str) -> str:
    return f"{PREFIX}:admin_token:{digest}"


def admin_token_id(token_id: str) -> str:
    return f"{PREFIX}:admin_token_id:{token_id}"


def bundle(bundle_id: str) -> str:
    return f"{PREFIX}:bundle:{bundle_id}"


def session(session_id: str) -> str:
    # Keyed by digest, as admin tokens are: whoever reads Redis must not find live session ids.
    # The bytes as received: a cookie that was no UTF-8 is just an unknown session (R11).
    return f"{PREFIX}:session:{hashlib.sha256(session_id.encode('utf-8', 'surrogateescape')).hexdigest()}"


def nonce(scope: str, value: str) -> str:
    return f"{PREFIX}:nonce:{scope}:{value}"


def request_index(request_id: str) -> str:
    return f"{PREFIX}:rid:{request_id}"


def invalidation(what: str) -> str:
    """An invalidation message: the publish time (for the propagation-lag metric) and what changed."""
    return f"{time.time():.6f} {what}"
