"""`seed:` applied idempotently; re-applying sets state and note."""

from __future__ import annotations

import pytest

from gateway.core.records import State
from gateway.errors import ConfigError
from gateway.seed import apply_seed
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
    await apply_seed(store, seed)
    await apply_seed(store, seed)
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
    await apply_seed(store, seed)
    changes = await store.registry.changes(acct, listed[0]["id"])
    assert [(c["field"], c["new"]) for c in changes[1:]] == [("state", "enabled"), ("note", "cleared")]
    await store.close()


@pytest.mark.parametrize(
    "seed",
    [
        {"accounts": [{"account": "1", "colour": "red"}]},
        {"integrations": [{"account": "1", "name": ""}]},
        {"integrations": [{"account": "1", "name": "x", "application_id": "short"}]},
        {"integrations": [{"account": "1", "name": "x", "state": "paused"}]},
        {"other": []},
    ],
)
async def test_bad_seed_is_a_config_error(redis_url: str, seed: dict) -> None:  # type: ignore[type-arg]
    store = await store_on(redis_url)
    with pytest.raises(ConfigError):
        await apply_seed(store, seed)
    await store.close()
