"""Token-based authentication (R12, R13) end to end through the proxy: real Redis, real upstream.

The client only ever sees `INVALID_LOGIN_ATTEMPT`; the precise sub-reason is in the usage log.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import replace
from typing import Any

import pytest

from gateway.web import resolve
from tests.factories import get_body, make_envelope, token_passport_xml
from tests.web.conftest import MakeRig, Rig, Tenant, fault_code, logged

V = "2024_2"
NOW = 1_900_000_000.75  # a fraction on purpose: clients send whole seconds, the clock does not


def passport(t: Tenant, **kw: Any) -> bytes:
    """A signed TBA `get`; any of account / consumer_key / consumer_secret / token_id /
    token_secret may be overridden, the rest goes to `token_passport_xml`."""
    parts = {"account": t.account, "consumer_key": t.integration["consumer_key"],
             "consumer_secret": t.integration["consumer_secret"], "token_id": t.token["token_id"],
             "token_secret": t.token["token_secret"]}
    parts.update({k: kw.pop(k) for k in list(kw) if k in parts})
    tp = token_passport_xml(V, parts["account"], parts["consumer_key"], parts["consumer_secret"],
                            parts["token_id"], parts["token_secret"], **kw)
    return make_envelope(get_body(V), [tp])


async def refused_with(rig: Rig, payload: bytes, sub_reason: str) -> dict[str, Any]:
    """Sends `payload`, asserts the client saw only INVALID_LOGIN_ATTEMPT and nothing reached the
    upstream, and returns the usage-log entry (whose sub_reason must be `sub_reason`)."""
    before = len(rig.backend.received)
    rid = "tba-" + secrets.token_hex(8)
    resp = await rig.soap(V, payload, headers={"X-Request-Id": rid})
    body = await resp.text()
    assert resp.status == 500, body
    assert await fault_code(resp) == "INVALID_LOGIN_ATTEMPT"
    assert sub_reason not in body  # the sub-reason is for the log only
    assert len(rig.backend.received) == before
    entry = await logged(rig, rid)
    assert (entry["reason"], entry["sub_reason"]) == ("invalid_login", sub_reason)
    assert entry["outcome"] == "rejected" and entry["fault_code"] == "INVALID_LOGIN_ATTEMPT"
    assert entry["auth_method"] == "token_based"
    return entry


async def sandbox_tenant(rig: Rig, t: Tenant) -> Tenant:
    """The sandbox twin of `t`'s account (its ID has letters, so case matters in the signature)."""
    sandbox = t.account + "_SB1"
    await rig.store.registry.put_account(sandbox, False)
    integ = await rig.store.registry.create_integration(sandbox, {"name": "sb", "state": "enabled"}, "test")
    token = await rig.store.tokens.issue(sandbox, integ["id"], "jane@example.com", "3")
    return Tenant(sandbox, integ, token)


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch) -> float:
    """Every decision is taken at NOW."""
    monkeypatch.setattr(resolve, "clock", lambda: NOW)
    return NOW


async def test_good_passport_is_forwarded_and_logged(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    resp = await rig.soap(V, passport(t), headers={"X-Request-Id": "tba-ok-1"})
    assert resp.status == 200, await resp.text()
    assert len(rig.backend.received) == 1
    entry = await logged(rig, "tba-ok-1")
    assert entry["outcome"] == "forwarded" and entry["sub_reason"] is None
    assert entry["integration_id"] == t.integration["id"] and entry["user_email"] == "jane@example.com"
    assert t.token["token_secret"] not in str(entry) and t.integration["consumer_secret"] not in str(entry)


@pytest.mark.parametrize("spelling", ["HMAC-SHA256", "HMAC_SHA256", "hmac-sha256"])
async def test_sha256_spellings_are_accepted(make_rig: MakeRig, spelling: str) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    resp = await rig.soap(V, passport(t, algorithm=spelling))
    assert resp.status == 200, await resp.text()


async def test_consumer_key_unknown(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    entry = await refused_with(rig, passport(t, consumer_key=secrets.token_hex(32)), "consumer_key_unknown")
    assert entry["integration_id"] == "none"


async def test_token_unknown(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    await refused_with(rig, passport(t, token_id=secrets.token_hex(32)), "token_unknown")


async def test_token_revoked(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    assert (await rig.soap(V, passport(t))).status == 200  # cached as a good token first
    await rig.store.tokens.revoke(t.account, t.token["token_id"])
    await refused_with(rig, passport(t), "token_revoked")


async def test_signature_invalid(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    await refused_with(rig, passport(t, token_secret="f" * 64), "signature_invalid")
    await refused_with(rig, passport(t, signature="bm90IHRoZSBzaWduYXR1cmU="), "signature_invalid")
    # The account is signed exactly as sent: another spelling of the same account breaks it.
    sb = await sandbox_tenant(rig, t)
    tp = passport(sb).replace(f">{sb.account}<".encode(), f">{sb.account.lower()}<".encode())
    await refused_with(rig, tp, "signature_invalid")


async def test_sha1_refused_unless_allowed(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    await refused_with(rig, passport(t, algorithm="HMAC-SHA1"), "algorithm_refused")
    await refused_with(rig, passport(t, algorithm="PLAINTEXT"), "algorithm_refused")
    tba = replace(rig.ctx.settings.tba, allowed_algorithms=frozenset({"HMAC-SHA256", "HMAC-SHA1"}))
    lenient = await make_rig(tba=tba)
    t = await lenient.tenant()
    assert (await lenient.soap(V, passport(t, algorithm="HMAC-SHA1"))).status == 200


@pytest.mark.parametrize(
    ("offset", "ok"), [(-300, True), (-301, False), (300, True), (301, False), (0, True)],
)
async def test_timestamp_window_edges(make_rig: MakeRig, pinned: float, offset: int, ok: bool) -> None:
    """Exactly 300 s either side of the gateway's clock (in whole seconds) is accepted, one
    second more is not, whatever the clock's fraction of a second."""
    rig = await make_rig()
    t = await rig.tenant()
    payload = passport(t, timestamp=int(pinned) + offset)
    if ok:
        resp = await rig.soap(V, payload)
        assert resp.status == 200, await resp.text()
    else:
        await refused_with(rig, payload, "timestamp_refused")


@pytest.mark.parametrize("nonce", ["abcde", "a" * 65, "abc-def12", "abc def12", "abcdé12", ""])
async def test_nonce_rejected(make_rig: MakeRig, nonce: str) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    await refused_with(rig, passport(t, nonce=nonce), "nonce_rejected")


@pytest.mark.parametrize("nonce", ["abcdef", "Z" * 64])
async def test_nonce_lengths_at_the_edges_are_accepted(make_rig: MakeRig, nonce: str) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    assert (await rig.soap(V, passport(t, nonce=nonce))).status == 200


async def test_nonce_used_even_with_a_new_timestamp(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    now = int(time.time())
    assert (await rig.soap(V, passport(t, nonce="onceOnly42", timestamp=now))).status == 200
    await refused_with(rig, passport(t, nonce="onceOnly42", timestamp=now), "nonce_used")
    await refused_with(rig, passport(t, nonce="onceOnly42", timestamp=now - 5), "nonce_used")
    assert len(rig.backend.received) == 1


async def test_nonce_is_remembered_for_the_whole_life_of_its_timestamp(make_rig: MakeRig) -> None:
    """A timestamp stays acceptable for 2 * skew + 1 whole seconds; the nonce must outlive it."""
    rig = await make_rig()
    t = await rig.tenant()
    assert (await rig.soap(V, passport(t, nonce="longLived77"))).status == 200
    keys = [k async for k in rig.store.client.scan_iter(match=f"*{t.token['token_id']}*longLived77*")]
    assert len(keys) == 1
    assert await rig.store.client.ttl(keys[0]) > 2 * rig.ctx.policy.timestamp_skew_seconds


async def test_nonce_failure_does_not_burn_the_nonce(make_rig: MakeRig) -> None:
    """Only a verified signature claims a nonce: a forger cannot use up a client's nonces."""
    rig = await make_rig()
    t = await rig.tenant()
    await refused_with(rig, passport(t, nonce="notBurned1", token_secret="e" * 64), "signature_invalid")
    assert (await rig.soap(V, passport(t, nonce="notBurned1"))).status == 200


async def test_replay_on_a_second_replica_is_refused(make_rig: MakeRig) -> None:
    rig_a = await make_rig()
    rig_b = await make_rig()  # same Redis, its own cache, store and log writer
    t = await rig_a.tenant()
    payload = passport(t, nonce="sharedNonce123")
    assert (await rig_a.soap(V, payload)).status == 200
    await refused_with(rig_b, payload, "nonce_used")
    assert rig_b.backend.received == []


async def test_wrong_signature_on_a_blocked_record_is_invalid_login(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    await rig.store.registry.update_integration(t.account, t.integration["id"], {"state": "blocked"}, "test")
    entry = await refused_with(rig, passport(t, token_secret="0" * 64), "signature_invalid")
    assert entry["reason"] != "integration_blocked"
    # ... and the genuine client learns the block only with a good signature.
    resp = await rig.soap(V, passport(t))
    assert await fault_code(resp) == "WS_REQUEST_BLOCKED"


async def test_token_of_another_account_is_invalid_login(make_rig: MakeRig) -> None:
    rig = await make_rig()
    a = await rig.tenant()
    b = await rig.tenant()
    # b's token (genuine secret) presented for a's account and record.
    await refused_with(rig, passport(a, token_id=b.token["token_id"], token_secret=b.token["token_secret"]),
                       "token_unknown")
    # a's own record, a's token, but naming b's account.
    await refused_with(rig, passport(a, account=b.account), "consumer_key_unknown")


async def test_token_of_another_record_in_the_same_account_is_invalid_login(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    other = await rig.store.registry.create_integration(
        t.account, {"name": "other", "state": "enabled"}, "test")
    await refused_with(rig, passport(t, consumer_key=other["consumer_key"],
                                     consumer_secret=other["consumer_secret"]), "token_unknown")


async def test_unregistered_account_is_invalid_account(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    resp = await rig.soap(V, passport(t, account="99999999NOPE"))
    assert await fault_code(resp) == "INVALID_ACCT"


async def test_token_based_not_permitted(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant(auth={"user_credentials": True, "token_based": False})
    resp = await rig.soap(V, passport(t), headers={"X-Request-Id": "tba-np-1"})
    assert resp.status == 500 and await fault_code(resp) == "INVALID_LOGIN_ATTEMPT"
    assert (await logged(rig, "tba-np-1"))["reason"] == "auth_method_not_permitted"
    assert rig.backend.received == []


@pytest.mark.parametrize("require_approval", [False, True])
async def test_tba_auto_installs_only_after_the_signature(make_rig: MakeRig, require_approval: bool) -> None:
    rig = await make_rig()
    owner = await rig.tenant(auto_install=True)
    user = await rig.tenant()
    await rig.store.registry.put_account(user.account, require_approval)
    foreign = owner.integration
    # A token bound to (user's account, foreign record) before any installation there: what the
    # Issue Token endpoint captures when the backend issues a token first.
    token_id, token_secret = secrets.token_hex(32), secrets.token_hex(32)
    await rig.store.tokens.save_issued(user.account, foreign["id"], "joe@example.com", "3", token_id, token_secret)
    theirs = {"consumer_key": foreign["consumer_key"], "consumer_secret": foreign["consumer_secret"],
              "token_id": token_id}
    await refused_with(rig, passport(user, **theirs, token_secret="1" * 64), "signature_invalid")
    assert await rig.store.registry.installation(user.account, foreign["id"]) is None
    resp = await rig.soap(V, passport(user, **theirs, token_secret=token_secret))
    installed = await rig.store.registry.installation(user.account, foreign["id"])
    assert installed is not None and installed["installed_via"] == "auto_install"
    if require_approval:
        assert installed["state"] == "waiting_for_approval"
        assert resp.status == 500 and await fault_code(resp) == "WS_REQUEST_BLOCKED"
        assert rig.backend.received == []
    else:
        assert installed["state"] == "enabled"
        assert resp.status == 200, await resp.text()
        assert rig.backend.received[-1].headers["X-Gateway-Integration"] == foreign["id"]


async def test_account_case_is_matched_loosely_but_signed_as_sent(make_rig: MakeRig) -> None:
    rig = await make_rig()
    sb = await sandbox_tenant(rig, await rig.tenant())
    resp = await rig.soap(V, passport(sb, account=sb.account.lower()))  # signed over the lower-case text
    assert resp.status == 200, await resp.text()
    assert rig.backend.received[-1].headers["X-Gateway-Account"] == sb.account


async def test_revocation_reaches_a_replica_that_cached_the_token(make_rig: MakeRig) -> None:
    rig_a = await make_rig()
    rig_b = await make_rig()
    t = await rig_a.tenant()
    assert (await rig_b.soap(V, passport(t))).status == 200  # rig B now holds the token in its cache
    await rig_a.store.tokens.revoke(t.account, t.token["token_id"])
    for _ in range(100):  # invalidation travels by pub/sub
        resp = await rig_b.soap(V, passport(t))
        if resp.status == 500:
            break
        await asyncio.sleep(0.02)
    await refused_with(rig_b, passport(t), "token_revoked")


async def test_record_owned_elsewhere_and_not_auto_installable_is_invalid_login(make_rig: MakeRig) -> None:
    rig = await make_rig()
    owner = await rig.tenant()  # auto_install false
    user = await rig.tenant()
    foreign = owner.integration
    token_id, token_secret = secrets.token_hex(32), secrets.token_hex(32)
    await rig.store.tokens.save_issued(user.account, foreign["id"], "joe@example.com", "3", token_id, token_secret)
    await refused_with(rig, passport(user, consumer_key=foreign["consumer_key"],
                                     consumer_secret=foreign["consumer_secret"], token_id=token_id,
                                     token_secret=token_secret), "consumer_key_unknown")
    assert await rig.store.registry.installation(user.account, foreign["id"]) is None


async def test_the_signature_covers_the_account_exactly_as_sent(make_rig: MakeRig) -> None:
    """SPEC 2: signatures are computed over the account exactly as the client sent it, spaces
    included (found by the rules audit: the trimmed text was signed); lookups use it trimmed."""
    from tests.factories import tba_signature

    rig = await make_rig()
    t = await rig.tenant()
    spaced = f" {t.account} "
    assert (await rig.soap(V, passport(t, account=spaced))).status == 200  # signed as sent: forwarded
    nonce, ts = secrets.token_hex(10), str(int(time.time()))
    signed_trimmed = tba_signature(t.account, t.integration["consumer_key"], t.token["token_id"], nonce, ts,
                                   t.integration["consumer_secret"], t.token["token_secret"], digest="sha256")
    await refused_with(rig, passport(t, account=spaced, nonce=nonce, timestamp=ts, signature=signed_trimmed),
                       "signature_invalid")
