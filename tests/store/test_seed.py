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


async def test_what_only_redis_can_refuse_is_still_a_config_error(redis_url: str) -> None:
    store = await store_on(redis_url)
    acct = new_account()
    key = secrets.token_hex(32)
    await apply_seed(store, parse_seed({"integrations": [{"account": acct, "name": "first", "consumer_key": key}]}))
    # a consumer key is never issued twice, and only Redis knows which were
    again = parse_seed({"integrations": [{"account": acct, "name": "second", "consumer_key": key}]})
    with pytest.raises(ConfigError, match="^seed: .*never reused"):
        await apply_seed(store, again)
    await store.close()
