"""tokenPassport signatures (SPEC section 3, R13)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import replace

import pytest

from gateway.core import tba
from gateway.core.facts import TokenPassport

NOW = 1_700_000_000.0
CS, TS = "c" * 64, "d" * 64
ALLOWED = frozenset({"HMAC-SHA256"})


def signed(**changes: object) -> TokenPassport:
    tp = tba.sign_token_passport(
        account="1234567_sb1",
        consumer_key="k" * 64,
        token="t" * 64,
        nonce="abcDEF123",
        timestamp=int(NOW),
        consumer_secret=CS,
        token_secret=TS,
    )
    return replace(tp, **changes)  # type: ignore[arg-type]


def verify(
    tp: TokenPassport, cs: str | None = CS, ts: str | None = TS, allowed: frozenset[str] = ALLOWED
) -> str | None:
    return tba.verify_token_passport(
        tp, consumer_secret=cs, token_secret=ts, now=NOW, skew=300, allowed=allowed
    )


def test_signature_matches_netsuite_recipe() -> None:
    tp = signed()
    base = f"1234567_sb1&{'k' * 64}&{'t' * 64}&abcDEF123&{int(NOW)}"
    mac = hmac.new(f"{CS}&{TS}".encode(), base.encode(), hashlib.sha256).digest()
    assert tp.signature == base64.b64encode(mac).decode()
    assert verify(tp) is None


def test_account_is_signed_exactly_as_sent() -> None:
    assert verify(signed(account="1234567_SB1")) == tba.SIGNATURE_INVALID


@pytest.mark.parametrize("field", ["account", "consumer_key", "token", "nonce", "timestamp"])
def test_tampering_any_field_breaks_the_signature(field: str) -> None:
    value = {"timestamp": str(int(NOW) + 1), "nonce": "abcDEF124"}.get(field, "tampered")
    assert verify(signed(**{field: value})) == tba.SIGNATURE_INVALID


def test_wrong_secrets() -> None:
    assert verify(signed(), cs="0" * 64) == tba.SIGNATURE_INVALID
    assert verify(signed(), ts="0" * 64) == tba.SIGNATURE_INVALID


def test_unknown_key_and_token_are_reported_after_format_checks() -> None:
    assert verify(signed(), cs=None) == tba.CONSUMER_KEY_UNKNOWN
    assert verify(signed(), ts=None) == tba.TOKEN_UNKNOWN
    assert verify(signed(), cs=None, ts=None) == tba.CONSUMER_KEY_UNKNOWN
    assert verify(signed(nonce="x"), cs=None) == tba.NONCE_REJECTED


@pytest.mark.parametrize("spelling", ["HMAC-SHA256", "HMAC_SHA256", "hmac-sha256", "Hmac_Sha256"])
def test_sha256_spellings(spelling: str) -> None:
    assert verify(signed(algorithm=spelling)) is None


def test_sha1_only_when_allowed() -> None:
    tp = tba.sign_token_passport(
        account="1",
        consumer_key="k",
        token="t",
        nonce="abcdef",
        timestamp=int(NOW),
        consumer_secret=CS,
        token_secret=TS,
        algorithm="HMAC_SHA1",
    )
    assert verify(tp) == tba.ALGORITHM_REFUSED
    assert verify(tp, allowed=frozenset({"HMAC-SHA256", "HMAC-SHA1"})) is None
    # A SHA-1 signature presented as SHA-256 does not verify.
    assert verify(replace(tp, algorithm="HMAC-SHA256")) == tba.SIGNATURE_INVALID


@pytest.mark.parametrize("algorithm", [None, "", "PLAINTEXT", "RSA-SHA256", "HMAC-SHA512"])
def test_other_algorithms_refused(algorithm: str | None) -> None:
    assert verify(signed(algorithm=algorithm)) == tba.ALGORITHM_REFUSED


@pytest.mark.parametrize(
    ("nonce", "ok"),
    [
        ("abcde", False),
        ("abcdef", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("abc de1", False),
        ("abcdé1", False),
        (None, False),
    ],
)
def test_nonce_format(nonce: str | None, ok: bool) -> None:
    assert tba.nonce_acceptable(nonce) is ok


@pytest.mark.parametrize(
    ("ts", "ok"), [(NOW - 300, True), (NOW - 301, False), (NOW + 300, True), (NOW + 301, False)]
)
def test_timestamp_window(ts: float, ok: bool) -> None:
    assert tba.timestamp_acceptable(str(int(ts)), NOW, 300) is ok


@pytest.mark.parametrize("ts", ["", "abc", "-5", "1.5", "9" * 20, None])
def test_timestamp_must_be_integer_seconds(ts: str | None) -> None:
    assert not tba.timestamp_acceptable(ts, NOW, 300)


def test_order_of_sub_checks() -> None:
    bad_everything = signed(algorithm="NOPE", nonce="x", timestamp="0", signature="AAAA")
    assert verify(bad_everything, cs=None, ts=None) == tba.ALGORITHM_REFUSED
    assert verify(replace(bad_everything, algorithm="HMAC-SHA256"), cs=None, ts=None) == tba.NONCE_REJECTED
    assert verify(signed(timestamp="0", signature="AAAA"), cs=None, ts=None) == tba.TIMESTAMP_REFUSED
    assert verify(signed(signature="AAAA"), cs=None, ts=None) == tba.CONSUMER_KEY_UNKNOWN
    assert verify(signed(signature="AAAA"), ts=None) == tba.TOKEN_UNKNOWN
    assert verify(signed(signature="AAAA")) == tba.SIGNATURE_INVALID


def test_missing_fields_never_raise() -> None:
    assert verify(TokenPassport()) == tba.ALGORITHM_REFUSED
    assert (
        verify(TokenPassport(algorithm="HMAC-SHA256", nonce="abcdef", timestamp=str(int(NOW))))
        == tba.SIGNATURE_INVALID
    )


def test_hmac_always_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = tba.compute_signature

    def spy(**kwargs: str) -> str:
        calls.append(kwargs["consumer_secret"])
        return real(**kwargs)

    good, refused = signed(), signed(algorithm="NOPE")
    monkeypatch.setattr(tba, "compute_signature", spy)
    verify(good, cs=None, ts=None)
    verify(refused)
    assert calls == [tba.DUMMY_SECRET, CS]
