"""Token-based authentication: the SOAP `tokenPassport` (SPEC section 3, R13).

Verification runs in constant shape: the HMAC is always computed (over a dummy secret when the
consumer key or token is unknown) and compared with `hmac.compare_digest`, so neither the
answer nor its timing tells a caller which part of its passport was wrong. The client only ever
sees `invalid_login`; the sub-reason returned here is for the log.

Sub-check order (the first failing one is reported):
    algorithm_refused -> nonce_rejected -> timestamp_refused -> consumer_key_unknown
    -> token_unknown -> signature_invalid
`token_revoked` and `nonce_used` are decided by the policy afterwards, so they are only ever
logged for a request whose signature was good (whoever sent it holds the real secrets).
"""

from __future__ import annotations

import base64
import hmac
import math
import re
from typing import Final

from gateway.core.facts import TokenPassport

# Sub-reasons of R13 (logged; the client sees invalid_login).
CONSUMER_KEY_UNKNOWN: Final = "consumer_key_unknown"
TOKEN_UNKNOWN: Final = "token_unknown"
TOKEN_REVOKED: Final = "token_revoked"
SIGNATURE_INVALID: Final = "signature_invalid"
ALGORITHM_REFUSED: Final = "algorithm_refused"
TIMESTAMP_REFUSED: Final = "timestamp_refused"
NONCE_REJECTED: Final = "nonce_rejected"
NONCE_USED: Final = "nonce_used"

SUB_REASONS: Final = (
    CONSUMER_KEY_UNKNOWN, TOKEN_UNKNOWN, TOKEN_REVOKED, SIGNATURE_INVALID,
    ALGORITHM_REFUSED, TIMESTAMP_REFUSED, NONCE_REJECTED, NONCE_USED,
)

HMAC_SHA256: Final = "HMAC-SHA256"
HMAC_SHA1: Final = "HMAC-SHA1"
_DIGESTS: Final[dict[str, str]] = {HMAC_SHA256: "sha256", HMAC_SHA1: "sha1"}

_NONCE_RE = re.compile(r"[A-Za-z0-9]{6,64}")
_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
# Stands in for an unknown secret so the HMAC is computed all the same (never accepted:
# the sub-reason for an unknown key or token wins over the comparison's result).
DUMMY_SECRET: Final = "0" * 64


def normalize_algorithm(text: str | None) -> str | None:
    """`HMAC-SHA256` / `HMAC_SHA256` in any case -> `HMAC-SHA256`; unknown spellings -> None."""
    if text is None:
        return None
    name = text.strip().upper().replace("_", "-")
    return name if name in _DIGESTS else None


def nonce_acceptable(nonce: str | None) -> bool:
    return nonce is not None and _NONCE_RE.fullmatch(nonce) is not None


def timestamp_acceptable(timestamp: str | None, now: float, skew: int) -> bool:
    """Whole seconds on both sides: the client can only send whole seconds, so the edge
    (`skew` seconds either way) must not depend on the fraction of a second the clock is at."""
    if timestamp is None or _TIMESTAMP_RE.fullmatch(timestamp.strip()) is None:
        return False
    return abs(math.floor(now) - int(timestamp.strip())) <= skew


def nonce_ttl(skew: int) -> int:
    """How long a claimed nonce is remembered: "twice the timestamp window" of SPEC section 3,
    plus the one second the inclusive edges add. A timestamp T is accepted while the clock's
    whole second lies in [T - skew, T + skew], i.e. for 2 * skew + 1 seconds of real time, so a
    shorter memory would let the nonce be replayed in the window's last second."""
    return 2 * skew + 1


def compute_signature(
    *, account: str, consumer_key: str, token: str, nonce: str, timestamp: str,
    consumer_secret: str, token_secret: str, algorithm: str = HMAC_SHA256,
) -> str:
    """NetSuite's TBA signature: base64(HMAC(`cs&ts`, `account&ck&token&nonce&timestamp`)).

    The account goes in exactly as the client sent it (NetSuite signs the literal text).
    """
    digest = _DIGESTS[normalize_algorithm(algorithm) or HMAC_SHA256]
    base = "&".join((account, consumer_key, token, nonce, timestamp))
    key = f"{consumer_secret}&{token_secret}"
    mac = hmac.new(key.encode("utf-8"), base.encode("utf-8"), digest).digest()
    return base64.b64encode(mac).decode("ascii")


def sign_token_passport(
    *, account: str, consumer_key: str, token: str, nonce: str, timestamp: str | int,
    consumer_secret: str, token_secret: str, algorithm: str = HMAC_SHA256,
) -> TokenPassport:
    """A signed `tokenPassport` (clients and tests)."""
    ts = str(timestamp)
    sig = compute_signature(
        account=account, consumer_key=consumer_key, token=token, nonce=nonce, timestamp=ts,
        consumer_secret=consumer_secret, token_secret=token_secret, algorithm=algorithm)
    return TokenPassport(account=account, consumer_key=consumer_key, token=token, nonce=nonce,
                         timestamp=ts, signature=sig, algorithm=algorithm)


def signature_matches(expected: str, given: str | None) -> bool:
    return hmac.compare_digest(expected.encode("ascii"), (given or "").strip().encode("utf-8", "surrogateescape"))


def verify_token_passport(
    tp: TokenPassport, *, consumer_secret: str | None, token_secret: str | None,
    now: float, skew: int, allowed: frozenset[str],
) -> str | None:
    """None when the passport is good, else the R13 sub-reason (order: module docstring).

    `consumer_secret` is None when the consumer key names no usable record, `token_secret`
    None when the token is unknown or bound to another (account, integration).
    """
    algorithm = normalize_algorithm(tp.algorithm)
    expected = compute_signature(
        account=(tp.signed_account if tp.signed_account is not None else tp.account) or "",
        consumer_key=tp.consumer_key or "", token=tp.token or "", nonce=tp.nonce or "", timestamp=tp.timestamp or "",
        consumer_secret=DUMMY_SECRET if consumer_secret is None else consumer_secret,
        token_secret=DUMMY_SECRET if token_secret is None else token_secret,
        algorithm=algorithm or HMAC_SHA256)
    return first_failure(
        algorithm_ok=algorithm is not None and algorithm in allowed,
        nonce=tp.nonce, timestamp=tp.timestamp, now=now, skew=skew,
        consumer_known=consumer_secret is not None, token_known=token_secret is not None,
        signature_ok=signature_matches(expected, tp.signature))


def first_failure(
    *, algorithm_ok: bool, nonce: str | None, timestamp: str | None, now: float, skew: int,
    consumer_known: bool, token_known: bool, signature_ok: bool,
) -> str | None:
    """The documented sub-check order, shared by TBA, OAuth 1.0a RESTlets and Issue Token.
    The caller has already computed the HMAC (`signature_ok`) whatever else is wrong."""
    if not algorithm_ok:
        return ALGORITHM_REFUSED
    if not nonce_acceptable(nonce):
        return NONCE_REJECTED
    if not timestamp_acceptable(timestamp, now, skew):
        return TIMESTAMP_REFUSED
    if not consumer_known:
        return CONSUMER_KEY_UNKNOWN
    if not token_known:
        return TOKEN_UNKNOWN
    return None if signature_ok else SIGNATURE_INVALID
