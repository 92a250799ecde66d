"""`seed:` parsed without Redis (so check-config refuses what serve refuses), then applied
idempotently; re-applying sets state and note."""

from __future__ import annotations

import secrets

import pytest

from gateway.core.records import State
from gateway.errors import ConfigError
from gateway.seed import apply_seed, parse_seed
from tests.store.helpers import new_account, store_on


async def test_seed_is_idempotent_and_reapplies_state(redis_url: str) -> None:
    store = await store_on(redis_url)
    acct = new_account()
    app_id = "5C4E" + "A1" * 14
    seed = {
        "accounts": [{"account": acct.lower(), "require_approval": True, "default_integration": "blocked"}],
        "integrations": [
            {
                "account": acct,
                "name": "legacy",
                "state": "blocked",
                "note": "SEC-1",
                "application_id": app_id,
                "consumer_secret": "ab" * 32,
                "auth": {"token_based": False},
            }
        ],
    }
    await apply_seed(store, parse_seed(seed))
    await apply_seed(store, parse_seed(seed))
    listed = await store.registry.list_integrations(acct)
    assert len(listed) == 1 and listed[0]["application_id"] == app_id and listed[0]["state"] == "blocked"
    assert listed[0]["auth"]["token_based"] is False
    view = await store.find_integration_by_application_id(app_id)
    assert view is not None and view.consumer_secret == "ab" * 32
    account = await store.get_account(acct)
    assert account is not None and account.require_approval and account.default_state is State.BLOCKED
    changes = await store.registry.changes(acct, listed[0]["id"])
    assert [(c["actor"], c["field"]) for c in changes] == [("system:seed", "created")]
    seed["integrations"][0] |= {"state": "enabled", "note": "cleared"}
    await apply_seed(store, parse_seed(seed))
    changes = await store.registry.changes(acct, listed[0]["id"])
    assert [(c["field"], c["new"]) for c in changes[1:]] == [("state", "enabled"), ("note", "cleared")]
    await store.close()


@pytest.mark.parametrize(
    ("seed", "named"),
    [
        ({"accounts": [{"account": "1", "colour": "red"}]}, "'seed.accounts[0].colour'"),
        ({"integrations": [{"account": "1", "name": ""}]}, "'seed.integrations[0].name'"),
        ({"integrations": [{"account": "1", "name": "x", "application_id": "short"}]},
         "'seed.integrations[0].application_id'"),
        ({"integrations": [{"account": "1", "name": "x", "state": "paused"}]}, "seed.integrations[0]: 'state'"),
        ({"other": []}, "'seed.other'"),
        # found by the black-box audit: check-config said OK to these, serve refused them
        ({"accounts": [{"account": "1234567", "require_aproval": True}]}, "'seed.accounts[0].require_aproval'"),
        ({"foo": 1}, "'seed.foo'"),
        ({"integrations": [{"account": "1", "name": "x", "colour": "red"}]}, "'seed.integrations[0].colour'"),
        ({"integrations": [{"account": "1", "name": "x", "state": "weird"}]}, "seed.integrations[0]: 'state'"),
        ({"accounts": [{"account": "abc!"}]}, "seed.accounts[0]: 'account' is not a valid account id: 'abc!'"),
        # checked only when a record was created, so a bad one on an existing record went unseen
        ({"integrations": [{"account": "1", "name": "x", "consumer_key": "zz"}]},
         "'seed.integrations[0].consumer_key'"),
        ({"integrations": [{"account": "1", "name": "x", "auth": {"token": True}}]}, "'auth.token'"),
        ({"accounts": [{"account": "1", "default_integration": {"state": "blocked", "sate": "x"}}]},
         "'seed.accounts[0].default_integration.sate'"),
        ({"accounts": [{"account": "1", "default_integration": "waiting_for_approval"}]},
         "'seed.accounts[0].default_integration'"),
        ({"accounts": {"account": "1"}}, "'seed.accounts'"),
        ([{"account": "1"}], "'seed'"),
    ],
)
def test_bad_seed_is_refused_without_redis(seed: object, named: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_seed(seed)
    assert named in str(raised.value)


async def test_a_pinned_id_names_the_record_through_renames_and_removals(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Found by the black-box admin audit: seed entries were matched by name only, so a seeded
    record renamed (or removed) through the admin API made the next start try to create it
    again with its pinned ID, which is never reused: the gateway refused to start."""
    store = await store_on(redis_url)
    acct, other = new_account(), new_account()
    key, app_id = secrets.token_hex(32), secrets.token_hex(16).upper()
    entry = {"account": acct, "name": "partner", "state": "blocked", "consumer_key": key, "application_id": app_id}
    await apply_seed(store, parse_seed({"integrations": [entry]}))
    (record,) = await store.registry.list_integrations(acct)
    await store.registry.update_integration(acct, record["id"], {"name": "partner (prod)", "state": "enabled"},
                                            "admin-token")
    await apply_seed(store, parse_seed({"integrations": [entry]}))  # matched by its pinned IDs
    (again,) = await store.registry.list_integrations(acct)
    assert (again["id"], again["name"], again["state"]) == (record["id"], "partner", "blocked")

    # Another account pinning the same key: nothing is created, and the start goes on.
    await apply_seed(store, parse_seed({"integrations": [entry | {"account": other}]}))
    assert await store.registry.list_integrations(other) == []
    # A seeded record removed through the admin API: its IDs stay retired, the entry is skipped.
    await store.registry.remove_integration(acct, record["id"])
    await apply_seed(store, parse_seed({"integrations": [entry]}))
    assert await store.registry.list_integrations(acct) == []
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 2 and all("never reused" in m for m in skipped)
    # A wanted key that is taken does not burn the wanted application ID with it.
    fresh_app_id = secrets.token_hex(16).upper()
    await apply_seed(store, parse_seed({"integrations": [
        {"account": other, "name": "x", "consumer_key": key, "application_id": fresh_app_id}]}))
    created = await store.registry.create_integration(other, {"name": "y"}, "t", application_id=fresh_app_id)
    assert created["application_id"] == fresh_app_id
    await store.close()


def test_entries_that_would_mean_one_record_are_refused_as_the_file_is_read() -> None:
    pinned = "0123456789ABCDEF0123456789ABCDEF"
    for first, second, field in [
        ({"name": "a", "application_id": pinned}, {"name": "b", "application_id": pinned.lower()}, "application_id"),
        ({"name": "a", "consumer_key": "ab" * 32}, {"name": "b", "consumer_key": "AB" * 32}, "consumer_key"),
        ({"name": "a"}, {"name": "a"}, "name"),
    ]:
        seed = {"integrations": [{"account": "1234567"} | first, {"account": "1234567"} | second]}
        with pytest.raises(ConfigError, match=rf"seed.integrations\[1\].{field} repeats seed.integrations\[0\]"):
            parse_seed(seed)
    # the same name in two accounts is two records
    parse_seed({"integrations": [{"account": "1234567", "name": "a"}, {"account": "7654321", "name": "a"}]})
