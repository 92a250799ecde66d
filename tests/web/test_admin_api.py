"""The admin API (SPEC section 5) against a real Redis: routes, roles, shapes, ownership."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.core.records import InstalledVia
from gateway.store import keyspace as ks
from gateway.store.redis import RedisStore
from gateway.web.admin import setup_admin
from tests.store.helpers import INTEGRATION, make_settings, new_account, store_on

BOOT = "bootstrap-token-for-tests"
HEX32_UPPER = re.compile(r"[0-9A-F]{32}")
HEX64 = re.compile(r"[0-9a-f]{64}")
INTEGRATION_KEYS = {
    "id",
    "name",
    "description",
    "state",
    "note",
    "auth",
    "auto_install",
    "installed_via",
    "owner_account",
}


class Api:
    def __init__(self, client: TestClient[Any, Any]) -> None:
        self.client = client

    async def __call__(
        self,
        method: str,
        path: str,
        json: Any = None,
        token: str | None = BOOT,
        expect: int | None = None,
        **params: Any,
    ) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        resp = await self.client.request(
            method, "/admin/v1" + path, json=json, headers=headers, params={k: str(v) for k, v in params.items()}
        )
        body = await resp.json() if resp.status != 204 else None
        if expect is not None:
            assert resp.status == expect, (method, path, resp.status, body)
        self.last_status = resp.status
        return body

    async def account(self, require_approval: bool = False) -> str:
        acct = new_account()
        await self("PUT", f"/accounts/{acct}", {"require_approval": require_approval}, expect=200)
        return acct

    async def integration(self, acct: str, token: str = BOOT, **fields: Any) -> dict[str, Any]:
        body = dict(INTEGRATION, name=f"integ-{new_account()}") | fields
        created: dict[str, Any] = await self("POST", f"/accounts/{acct}/integrations", body, token=token, expect=201)
        return created

    async def admin_token(self, acct: str, role: str) -> str:
        js = await self("POST", f"/accounts/{acct}/admin-tokens", {"role": role}, expect=201)
        return str(js["token"])


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    s = await store_on(redis_url)
    yield s
    await s.close()


@pytest.fixture
async def api(aiohttp_client: Any, store: RedisStore) -> Api:
    app = web.Application()
    setup_admin(app, store, make_settings(), bootstrap_token=BOOT, failure_limit=5, failure_window=60)
    return Api(await aiohttp_client(app))


# --------------------------------------------------------------------------- authentication


async def test_no_token_is_401_with_json_error(api: Api) -> None:
    acct = await api.account()
    for token in (None, "wrong"):
        js = await api("GET", f"/accounts/{acct}/integrations", token=token, expect=401)
        assert js["error"]["code"] == "UNAUTHORIZED" and js["error"]["message"]
    js = await api("GET", "/usage-log", token=None, expect=401)
    assert set(js) == {"error"}


async def test_repeated_unknown_tokens_are_rate_limited(api: Api) -> None:
    acct = await api.account()
    for _ in range(5):
        await api("GET", f"/accounts/{acct}", token="guess", expect=401)
    js = await api("GET", f"/accounts/{acct}", token="guess", expect=429)
    assert js["error"]["code"] == "TOO_MANY_REQUESTS"
    await api("GET", f"/accounts/{acct}", expect=200)  # a valid token still works


async def test_unknown_route_and_method_answer_json(api: Api) -> None:
    js = await api("GET", "/nope", expect=404)
    assert js["error"]["code"] == "NOT_FOUND"
    acct = await api.account()
    js = await api("POST", f"/accounts/{acct}", {}, expect=405)
    assert js["error"]["code"] == "METHOD_NOT_ALLOWED"


# --------------------------------------------------------------------------- accounts


async def test_account_put_get_and_default_integration(api: Api) -> None:
    acct = new_account()
    js = await api("PUT", f"/accounts/{acct.lower()}", {"require_approval": True}, expect=200)
    assert js == {
        "account": acct,
        "require_approval": True,
        "sandbox": False,
        "default_integration": {"state": "enabled"},
    }
    await api("PUT", f"/accounts/{acct}", {"require_approval": False}, expect=200)
    js = await api("PUT", f"/accounts/{acct}/default-integration", {"state": "blocked"}, expect=200)
    assert js["default_integration"] == {"state": "blocked"}
    js = await api("GET", f"/accounts/{acct}", expect=200)
    assert js["require_approval"] is False and js["default_integration"]["state"] == "blocked"
    sandbox = new_account(sandbox=True)
    js = await api("PUT", f"/accounts/{sandbox}", {}, expect=200)
    assert js["sandbox"] is True and js["require_approval"] is False


async def test_account_validation(api: Api) -> None:
    acct = new_account()
    js = await api("PUT", f"/accounts/{acct}", {"require_approval": "yes"}, expect=400)
    assert "require_approval" in js["error"]["message"]
    await api("PUT", f"/accounts/{acct}", {"other": 1}, expect=400)
    await api("PUT", f"/accounts/{acct}", [1], expect=400)
    for body in (b"{nope", b'{"auth":' + b"[" * 100_000):  # too deep for json: a RecursionError, was a bare 500
        resp = await api.client.put(
            f"/admin/v1/accounts/{acct}", data=body, headers={"Authorization": f"Bearer {BOOT}"}
        )
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "INVALID_REQUEST"
    await api.account()
    js = await api("PUT", f"/accounts/{acct}/default-integration", {"state": "waiting_for_approval"})
    assert api.last_status == 404  # the account was never created by the refused PUTs
    assert js["error"]["code"] == "ACCOUNT_NOT_FOUND"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", ""),
        ("PUT", "/default-integration"),
        ("POST", "/integrations"),
        ("GET", "/integrations"),
        ("GET", "/integrations/0123456789abcdef0123456789abcdef"),
        ("GET", "/tokens"),
        ("POST", "/tokens"),
        ("GET", "/admin-tokens"),
        ("POST", "/admin-tokens"),
        ("GET", "/usage-log"),
        ("POST", "/bundles/0123456789abcdef0123456789abcdef/install"),
    ],
)
async def test_unknown_account_is_404(api: Api, method: str, path: str) -> None:
    js = await api(method, f"/accounts/{new_account()}{path}", {} if method != "GET" else None, expect=404)
    assert js["error"]["code"] == "ACCOUNT_NOT_FOUND"


# --------------------------------------------------------------------------- integrations


async def test_create_list_get_integration_shapes(api: Api) -> None:
    acct = await api.account()
    created = await api.integration(acct, name="billing", note="n1", state="blocked")
    assert INTEGRATION_KEYS | {"application_id", "consumer_key", "consumer_secret"} <= set(created)
    assert HEX32_UPPER.fullmatch(created["application_id"])
    assert HEX64.fullmatch(created["consumer_key"]) and HEX64.fullmatch(created["consumer_secret"])
    assert re.fullmatch(r"[0-9a-f]{32}", created["id"])
    assert created["state"] == "blocked" and created["installed_via"] == "owner" and created["owner_account"] == acct
    listed = (await api("GET", f"/accounts/{acct}/integrations", expect=200))["integrations"]
    assert [i["id"] for i in listed] == [created["id"]]
    one = await api("GET", f"/accounts/{acct}/integrations/{created['id']}", expect=200)
    assert one == listed[0]
    assert set(one) == INTEGRATION_KEYS | {"application_id"}
    assert "consumer_secret" not in one and "consumer_key" not in one


async def test_integration_validation_names_the_field(api: Api) -> None:
    acct = await api.account()
    for body, field in [
        ({"name": ""}, "name"),
        ({"name": "x", "state": "paused"}, "state"),
        ({"description": "no name"}, "name"),
        ({"name": "x", "auth": {"token_based": 1}}, "auth"),
        ({"name": "x", "auto_install": "yes"}, "auto_install"),
        ({"name": "x", "colour": 1}, "colour"),
    ]:
        js = await api("POST", f"/accounts/{acct}/integrations", body, expect=400)
        assert js["error"]["code"] == "INVALID_REQUEST" and field in js["error"]["message"], js


async def test_patch_owner_fields_and_auth_merge(api: Api) -> None:
    acct = await api.account()
    created = await api.integration(acct)
    path = f"/accounts/{acct}/integrations/{created['id']}"
    js = await api("PATCH", path, {"name": "renamed", "auth": {"token_based": False}, "auto_install": True}, expect=200)
    assert js["name"] == "renamed" and js["auto_install"] is True
    assert js["auth"] == {"user_credentials": True, "token_based": False, "tba_issue_token_endpoint": False}
    js = await api("PATCH", path, {"auth": {"tba_issue_token_endpoint": True}}, expect=200)
    assert js["auth"] == {"user_credentials": True, "token_based": False, "tba_issue_token_endpoint": True}
    js = await api("PATCH", path, {"application_id": "0" * 32}, expect=403)
    assert js["error"]["code"] == "FIELD_NOT_EDITABLE"
    await api("PATCH", path, {"state": "on"}, expect=400)
    js = await api("PATCH", f"/accounts/{acct}/integrations/{'f' * 32}", {"note": "x"}, expect=404)
    assert js["error"]["code"] == "NOT_FOUND"


async def test_other_accounts_objects_are_404_like_unknown_ones(api: Api) -> None:
    a, b = await api.account(), await api.account()
    created = await api.integration(a)
    token = await api(
        "POST", f"/accounts/{a}/tokens", {"integration_id": created["id"], "user": "u@x.com", "role": "3"}, expect=201
    )
    for method, path in [
        ("GET", f"/integrations/{created['id']}"),
        ("PATCH", f"/integrations/{created['id']}"),
        ("DELETE", f"/integrations/{created['id']}"),
        ("GET", f"/integrations/{created['id']}/log"),
        ("GET", f"/integrations/{created['id']}/changes"),
        ("POST", f"/integrations/{created['id']}/bundle"),
        ("POST", f"/integrations/{created['id']}/reset-credentials"),
        ("DELETE", f"/tokens/{token['token_id']}"),
        ("GET", "/integrations/not-an-id"),
    ]:
        js = await api(method, f"/accounts/{b}{path}", {} if method == "PATCH" else None, expect=404)
        assert js["error"]["code"] == "NOT_FOUND", (method, path)
    js = await api(
        "POST", f"/accounts/{b}/tokens", {"integration_id": created["id"], "user": "u", "role": "3"}, expect=404
    )
    assert js["error"]["code"] == "NOT_FOUND"


# --------------------------------------------------------------------------- bundles and ownership


async def _installed(api: Api) -> tuple[str, str, dict[str, Any]]:
    owner, other = await api.account(), await api.account(require_approval=True)
    created = await api.integration(owner)
    bundle = await api("POST", f"/accounts/{owner}/integrations/{created['id']}/bundle", expect=201)
    installed = await api("POST", f"/accounts/{other}/bundles/{bundle['bundle_id']}/install", expect=201)
    return owner, other, created | {"installed": installed, "bundle_id": bundle["bundle_id"]}


async def test_bundle_install_and_ownership_rules(api: Api) -> None:
    owner, other, rec = await _installed(api)
    iid = rec["id"]
    installed = rec["installed"]
    assert installed["installed_via"] == "bundle" and installed["state"] == "enabled"  # despite require_approval
    assert installed["owner_account"] == owner and "application_id" not in installed
    path = f"/accounts/{other}/integrations/{iid}"
    js = await api("PATCH", path, {"name": "mine now"}, expect=403)
    assert js["error"]["code"] == "FIELD_NOT_EDITABLE"
    js = await api("PATCH", path, {"state": "blocked", "note": "SEC-1"}, expect=200)
    assert js["state"] == "blocked" and js["note"] == "SEC-1"
    owner_view = await api("GET", f"/accounts/{owner}/integrations/{iid}", expect=200)
    assert owner_view["state"] == "enabled" and owner_view["note"] == ""  # installations are separate
    js = await api("POST", f"{path}/reset-credentials", expect=403)
    assert js["error"]["code"] == "OWNER_ONLY"
    js = await api("POST", f"{path}/bundle", expect=403)
    assert js["error"]["code"] == "OWNER_ONLY"
    # the owner's edits show at once in the installing account, without a change entry there
    await api("PATCH", f"/accounts/{owner}/integrations/{iid}", {"name": "v2", "description": "d2"}, expect=200)
    js = await api("GET", path, expect=200)
    assert js["name"] == "v2" and js["description"] == "d2"
    changes = (await api("GET", f"{path}/changes", expect=200))["changes"]
    assert [c["field"] for c in changes] == ["created", "state", "note"]
    # twice, or into the owner account: 409; unknown bundle: 404
    for acct in (other, owner):
        js = await api("POST", f"/accounts/{acct}/bundles/{rec['bundle_id']}/install", expect=409)
        assert js["error"]["code"] == "CONFLICT"
    await api("POST", f"/accounts/{other}/bundles/{'0' * 32}/install", expect=404)


async def test_remove_installed_uninstalls_only_there(api: Api, store: RedisStore) -> None:
    owner, other, rec = await _installed(api)
    iid = rec["id"]
    tok_other = await api(
        "POST", f"/accounts/{other}/tokens", {"integration_id": iid, "user": "o@x", "role": "3"}, expect=201
    )
    tok_owner = await api(
        "POST", f"/accounts/{owner}/tokens", {"integration_id": iid, "user": "w@x", "role": "3"}, expect=201
    )
    await api("DELETE", f"/accounts/{other}/integrations/{iid}", expect=204)
    await api("GET", f"/accounts/{other}/integrations/{iid}", expect=404)
    assert (await api("GET", f"/accounts/{other}/integrations", expect=200))["integrations"] == []
    assert (await store.get_token(tok_other["token_id"])).revoked  # type: ignore[union-attr]
    assert not (await store.get_token(tok_owner["token_id"])).revoked  # type: ignore[union-attr]
    assert await store.get_installation(other, iid) is None
    await api("GET", f"/accounts/{owner}/integrations/{iid}", expect=200)


async def test_remove_by_owner_removes_everywhere_and_never_reuses_ids(api: Api, store: RedisStore) -> None:
    owner, other, rec = await _installed(api)
    iid = rec["id"]
    tok = await api(
        "POST", f"/accounts/{other}/tokens", {"integration_id": iid, "user": "o@x", "role": "3"}, expect=201
    )
    await api("DELETE", f"/accounts/{owner}/integrations/{iid}", expect=204)
    for acct in (owner, other):
        await api("GET", f"/accounts/{acct}/integrations/{iid}", expect=404)
    assert (await store.get_token(tok["token_id"])).revoked  # type: ignore[union-attr]
    assert await store.find_integration_by_application_id(rec["application_id"]) is None
    assert await store.find_integration_by_consumer_key(rec["consumer_key"]) is None
    assert await store.get_integration(iid) is None
    assert await store.client.sismember(ks.ISSUED_APP_IDS, rec["application_id"])
    assert await store.client.sismember(ks.ISSUED_CONSUMER_KEYS, rec["consumer_key"])
    await api("POST", f"/accounts/{other}/bundles/{rec['bundle_id']}/install", expect=404)
    await api("DELETE", f"/accounts/{owner}/integrations/{iid}", expect=404)


async def test_reset_credentials_invalidates_the_old_secret_at_once(api: Api, store: RedisStore) -> None:
    acct = await api.account()
    created = await api.integration(acct)
    tok = await api(
        "POST", f"/accounts/{acct}/tokens", {"integration_id": created["id"], "user": "u", "role": "3"}, expect=201
    )
    before = await store.find_integration_by_consumer_key(created["consumer_key"])
    assert before is not None and before.consumer_secret == created["consumer_secret"]
    js = await api("POST", f"/accounts/{acct}/integrations/{created['id']}/reset-credentials", expect=200)
    assert HEX64.fullmatch(js["consumer_key"]) and HEX64.fullmatch(js["consumer_secret"])
    assert js["consumer_key"] != created["consumer_key"] and js["consumer_secret"] != created["consumer_secret"]
    assert js["application_id"] == created["application_id"]
    assert await store.find_integration_by_consumer_key(created["consumer_key"]) is None
    after = await store.find_integration_by_consumer_key(js["consumer_key"])
    assert after is not None and after.consumer_secret == js["consumer_secret"]
    assert not (await store.get_token(tok["token_id"])).revoked  # type: ignore[union-attr]
    changes = (await api("GET", f"/accounts/{acct}/integrations/{created['id']}/changes", expect=200))["changes"]
    assert changes[-1] | {"time": None} == {
        "time": None,
        "actor": "system:bootstrap",
        "field": "credentials",
        "old": None,
        "new": None,
    }


# --------------------------------------------------------------------------- tokens


async def test_tokens_issue_list_revoke(api: Api, store: RedisStore) -> None:
    acct = await api.account()
    created = await api.integration(acct)
    js = await api(
        "POST", f"/accounts/{acct}/tokens", {"integration_id": created["id"], "user": "a@b.c", "role": 3}, expect=201
    )
    assert HEX64.fullmatch(js["token_id"]) and HEX64.fullmatch(js["token_secret"])
    assert js["role"] == "3" and js["source"] == "admin" and js["integration_id"] == created["id"]
    await store.save_issued_token(acct, created["id"], "n@b.c", "1000", "t" * 64, "s" * 64)
    listed = (await api("GET", f"/accounts/{acct}/tokens", expect=200))["tokens"]
    assert {t["token_id"] for t in listed} == {js["token_id"], "t" * 64}
    for t in listed:
        assert set(t) == {"token_id", "integration_id", "user", "role", "source", "created_at"}
    assert {t["source"] for t in listed} == {"admin", "issue_token"}
    await api("DELETE", f"/accounts/{acct}/tokens/{js['token_id']}", expect=204)
    await api("DELETE", f"/accounts/{acct}/tokens/{js['token_id']}", expect=404)
    listed = (await api("GET", f"/accounts/{acct}/tokens", expect=200))["tokens"]
    assert [t["token_id"] for t in listed] == ["t" * 64]
    view = await store.get_token(js["token_id"])
    assert view is not None and view.revoked
    for body in (
        {"integration_id": created["id"], "user": "", "role": "3"},
        {"integration_id": created["id"]},
        {"integration_id": created["id"], "user": "u", "role": "3", "extra": 1},
        {"integration_id": created["id"], "user": "u@x\r\nX-Gateway-Account: 1", "role": "3"},
        {"integration_id": created["id"], "user": "u@x", "role": "3\n"},
    ):
        await api("POST", f"/accounts/{acct}/tokens", body, expect=400)


# --------------------------------------------------------------------------- admin tokens and roles


async def test_admin_tokens_mint_list_revoke(api: Api) -> None:
    acct = await api.account()
    minted = await api("POST", f"/accounts/{acct}/admin-tokens", {"role": "integration_application"}, expect=201)
    assert set(minted) == {"id", "token"} and isinstance(minted["id"], str)
    listed = (await api("GET", f"/accounts/{acct}/admin-tokens", expect=200))["admin_tokens"]
    assert [set(t) for t in listed] == [{"id", "role", "created_at"}]
    assert listed[0]["id"] == minted["id"] and listed[0]["role"] == "integration_application"
    await api("GET", f"/accounts/{acct}/integrations", token=minted["token"], expect=200)
    await api("DELETE", f"/accounts/{acct}/admin-tokens/{minted['id']}", expect=204)
    await api("GET", f"/accounts/{acct}/integrations", token=minted["token"], expect=401)
    assert (await api("GET", f"/accounts/{acct}/admin-tokens", expect=200))["admin_tokens"] == []
    await api("DELETE", f"/accounts/{acct}/admin-tokens/{minted['id']}", expect=404)
    await api("POST", f"/accounts/{acct}/admin-tokens", {"role": "root"}, expect=400)


async def test_confined_token_gets_403_on_another_account(api: Api) -> None:
    a, b = await api.account(), await api.account()
    token = await api.admin_token(a, "administrator")
    await api("GET", f"/accounts/{a}", token=token, expect=200)
    await api("GET", f"/accounts/{a.lower()}/integrations", token=token, expect=200)
    for method, path in [
        ("GET", f"/accounts/{b}"),
        ("GET", f"/accounts/{b}/integrations"),
        ("PUT", f"/accounts/{new_account()}"),
        ("GET", "/usage-log"),
    ]:
        js = await api(method, path, {} if method == "PUT" else None, token=token, expect=403)
        assert js["error"]["code"] == "FORBIDDEN"
    # an account administrator mints, lists and revokes in its own account only
    minted = await api(
        "POST", f"/accounts/{a}/admin-tokens", {"role": "integration_applications"}, token=token, expect=201
    )
    await api("DELETE", f"/accounts/{a}/admin-tokens/{minted['id']}", token=token, expect=204)
    await api("POST", f"/accounts/{b}/admin-tokens", {"role": "administrator"}, token=token, expect=403)


async def test_role_permissions(api: Api) -> None:
    acct = await api.account()
    rec = await api.integration(acct)
    iid = rec["id"]
    lister = await api.admin_token(acct, "integration_applications")
    editor = await api.admin_token(acct, "integration_application")
    await api("GET", f"/accounts/{acct}/integrations", token=lister, expect=200)
    for method, path in [
        ("GET", f"/integrations/{iid}"),
        ("POST", "/integrations"),
        ("GET", "/tokens"),
        ("PATCH", f"/integrations/{iid}"),
        ("GET", f"/integrations/{iid}/log"),
        ("GET", "/usage-log"),
        ("GET", "/admin-tokens"),
    ]:
        js = await api(
            method, f"/accounts/{acct}{path}", {"name": "x"} if method != "GET" else None, token=lister, expect=403
        )
        assert js["error"]["code"] == "FORBIDDEN"
    # integration_application: view, create, edit integrations and tokens, read their logs
    made = await api.integration(acct, token=editor)
    await api("GET", f"/accounts/{acct}/integrations/{iid}", token=editor, expect=200)
    js = await api("PATCH", f"/accounts/{acct}/integrations/{iid}", {"note": "by editor"}, token=editor, expect=200)
    assert js["note"] == "by editor"
    await api(
        "POST",
        f"/accounts/{acct}/tokens",
        {"integration_id": made["id"], "user": "u", "role": "3"},
        token=editor,
        expect=201,
    )
    await api("GET", f"/accounts/{acct}/tokens", token=editor, expect=200)
    await api("GET", f"/accounts/{acct}/integrations/{iid}/log", token=editor, expect=200)
    await api("GET", f"/accounts/{acct}/integrations/{iid}/changes", token=editor, expect=200)
    for method, path, body in [
        ("GET", "/usage-log", None),
        ("GET", "/admin-tokens", None),
        ("POST", "/admin-tokens", {"role": "administrator"}),
        ("GET", "", None),  # the account's preferences are the administrator's (SPEC 5)
        ("PUT", "", {"require_approval": True}),
        ("PUT", "/default-integration", {"state": "blocked"}),
    ]:
        await api(method, f"/accounts/{acct}{path}", body, token=editor, expect=403)
    await api("GET", "/usage-log", token=editor, request_id="x", expect=403)
    # the actor of a change is the admin token's id
    editor_id = (await api("GET", f"/accounts/{acct}/admin-tokens", expect=200))["admin_tokens"]
    changes = (await api("GET", f"/accounts/{acct}/integrations/{iid}/changes", expect=200))["changes"]
    assert changes[-1]["actor"] in {t["id"] for t in editor_id}


# --------------------------------------------------------------------------- change tracking, installs


async def test_change_tracking_entries(api: Api) -> None:
    acct = await api.account()
    rec = await api.integration(acct, name="tracked")
    path = f"/accounts/{acct}/integrations/{rec['id']}"
    await api("PATCH", path, {"state": "blocked"}, expect=200)
    await api("PATCH", path, {"state": "blocked"}, expect=200)  # no change, no entry
    await api("PATCH", path, {"note": "why", "description": "not tracked"}, expect=200)
    await api("POST", f"{path}/reset-credentials", expect=200)
    changes = (await api("GET", f"{path}/changes", expect=200))["changes"]
    simplified = [(c["actor"], c["field"], c["old"], c["new"]) for c in changes]
    assert simplified == [
        ("system:bootstrap", "created", None, "tracked"),
        ("system:bootstrap", "state", "enabled", "blocked"),
        ("system:bootstrap", "note", "", "why"),
        ("system:bootstrap", "credentials", None, None),
    ]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", c["time"]) for c in changes)


@pytest.mark.parametrize("require_approval", [False, True])
async def test_auto_install_through_the_store(api: Api, store: RedisStore, require_approval: bool) -> None:
    owner, other = await api.account(), await api.account(require_approval=require_approval)
    rec = await api.integration(owner, auto_install=True)
    view = await store.install(other, rec["id"], InstalledVia.AUTO_INSTALL, "system:auto_install")
    assert view.state.value == ("waiting_for_approval" if require_approval else "enabled")
    again = await store.install(other, rec["id"], InstalledVia.ISSUE_TOKEN, "system:issue_token")
    assert again == view  # idempotent, unchanged
    js = await api("GET", f"/accounts/{other}/integrations/{rec['id']}", expect=200)
    assert js["installed_via"] == "auto_install" and "application_id" not in js
    changes = (await api("GET", f"/accounts/{other}/integrations/{rec['id']}/changes", expect=200))["changes"]
    assert [(c["actor"], c["field"], c["new"]) for c in changes] == [("system:auto_install", "created", rec["name"])]
    if require_approval:
        await api("PATCH", f"/accounts/{other}/integrations/{rec['id']}", {"state": "enabled"}, expect=200)
        installed = await store.get_installation(other, rec["id"])
        assert installed is not None and installed.state.value == "enabled"


async def test_concurrent_patches_lose_no_update(api: Api) -> None:
    acct = await api.account()
    rec = await api.integration(acct)
    path = f"/accounts/{acct}/integrations/{rec['id']}"
    bodies = [{"note": f"n{i}", "state": "blocked" if i % 2 else "enabled"} for i in range(50)]
    await asyncio.gather(*(api("PATCH", path, b, expect=200) for b in bodies))
    changes = (await api("GET", f"{path}/changes", expect=200))["changes"]
    notes = [c for c in changes if c["field"] == "note"]
    states = [c for c in changes if c["field"] == "state"]
    assert len(notes) == 50  # every note differs from the one before it
    for chain, first in ((notes, ""), (states, "enabled")):
        previous = first
        for entry in chain:  # each entry starts from the value the previous one left
            assert entry["old"] == previous
            previous = entry["new"]
    final = await api("GET", path, expect=200)
    assert final["note"] == notes[-1]["new"]
    assert final["state"] == (states[-1]["new"] if states else "enabled")


# --------------------------------------------------------------------------- logs


def _entry(acct: str | None, iid: str, rid: str, op: str = "get", outcome: str = "forwarded") -> dict[str, Any]:
    return {
        "request_id": rid,
        "time": "2030-01-01T00:00:00.000Z",
        "duration_ms": 3,
        "account": acct,
        "integration_id": iid,
        "operation": op,
        "endpoint_version": "2020_2",
        "auth_method": "token_based",
        "user_email": "",
        "client_ip": "127.0.0.1",
        "outcome": outcome,
        "reason": None,
        "sub_reason": None,
        "fault_code": None,
        "http_status": 200,
        "upstream_status": 200,
        "request_bytes": 10,
        "response_bytes": 20,
        "request_document": "<x/>",
        "response_document": "<y/>",
        "application_id": None,
    }


async def test_logs_routes(api: Api, store: RedisStore) -> None:
    acct = await api.account()
    rec = await api.integration(acct)
    iid = rec["id"]
    rids = [f"req-{new_account()}-{i}" for i in range(7)]
    entries = [_entry(acct, iid, rid, op="get" if i % 2 else "search") for i, rid in enumerate(rids)]
    entries.append(_entry(acct, "default", rids[0] + "-d"))
    entries.append(_entry(None, "none", rids[0] + "-none", outcome="rejected"))
    await store.write_log_entries(entries)
    page = await api("GET", f"/accounts/{acct}/integrations/{iid}/log", limit=3, expect=200)
    assert [e["request_id"] for e in page["entries"]] == rids[::-1][:3] and page["next"]
    page2 = await api("GET", f"/accounts/{acct}/integrations/{iid}/log", limit=3, cursor=page["next"], expect=200)
    page3 = await api("GET", f"/accounts/{acct}/integrations/{iid}/log", limit=3, cursor=page2["next"], expect=200)
    assert [e["request_id"] for e in page2["entries"] + page3["entries"]] == rids[::-1][3:]
    assert page3["next"] is None
    usage = await api("GET", f"/accounts/{acct}/usage-log", expect=200)
    assert len(usage["entries"]) == 8 and usage["next"] is None
    only = await api("GET", f"/accounts/{acct}/usage-log", operation="search", integration=iid, expect=200)
    assert [e["request_id"] for e in only["entries"]] == [rids[6], rids[4], rids[2], rids[0]]
    hit = await api("GET", f"/accounts/{acct}/usage-log", request_id=rids[3], expect=200)
    assert [e["request_id"] for e in hit["entries"]] == [rids[3]]
    glob = await api("GET", "/usage-log", request_id=rids[3], expect=200)
    assert glob["entries"][0] == entries[3] and glob["next"] is None
    glob = await api("GET", "/usage-log", request_id=rids[0] + "-none", expect=200)
    assert glob["entries"][0]["outcome"] == "rejected"
    assert (await api("GET", "/usage-log", request_id="no-such-request", expect=200))["entries"] == []
    other = await api.account()
    assert (await api("GET", f"/accounts/{other}/usage-log", request_id=rids[3], expect=200))["entries"] == []
    await api("GET", f"/accounts/{acct}/usage-log", limit=0, expect=400)
    await api("GET", f"/accounts/{acct}/usage-log", limit=1001, expect=400)
    await api("GET", f"/accounts/{acct}/usage-log", cursor="junk", expect=400)
    await api("GET", f"/accounts/{acct}/usage-log", since="yesterday", expect=400)
    # values that passed the format check but failed inside Redis, reported as a store outage (503)
    for bad in ({"since": "nan"}, {"since": "inf"}, {"since": "1e30"}, {"until": "-inf"},
                {"cursor": "99999999999999999999-0"}, {"cursor": "0-18446744073709551616"}):
        await api("GET", f"/accounts/{acct}/usage-log", expect=400, **bad)
        await api("GET", "/usage-log", expect=400, **bad)
    await api("GET", f"/accounts/{acct}/usage-log", cursor="\u0661-\u0660", expect=400)  # Arabic-Indic digits
    assert await api("GET", f"/accounts/{acct}/usage-log", cursor="0-0", expect=200) == {"entries": [], "next": None}
    since = await api("GET", f"/accounts/{acct}/usage-log", since="2031-01-01T00:00:00Z", expect=200)
    assert since["entries"] == []
    until = await api("GET", f"/accounts/{acct}/usage-log", until="2029-12-31T00:00:00Z", expect=200)
    assert until["entries"] == []


async def test_a_burst_of_admin_requests_queues_for_redis_instead_of_failing(api: Api) -> None:
    """Far more admin requests at once than the Redis pool has connections (256), each a few
    Redis reads: they take turns at the store and all answer 200, none a STORE_UNAVAILABLE
    503 because the pool said "Too many connections"."""
    acct = await api.account()
    await api.integration(acct)
    url = api.client.make_url(f"/admin/v1/accounts/{acct}/integrations")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     headers={"Authorization": f"Bearer {BOOT}"}) as http:
        async def list_integrations() -> int:
            async with http.get(url) as resp:
                await resp.read()
                return resp.status

        statuses = await asyncio.gather(*(list_integrations() for _ in range(2000)))
    assert statuses.count(200) == len(statuses), {s: statuses.count(s) for s in set(statuses)}


async def test_a_lone_surrogate_in_a_stored_field_is_400(api: Api) -> None:
    # Valid JSON ("\ud800"), but no text Redis could store: it was aiohttp's bare 500.
    acct = await api.account()
    resp = await api.client.post(f"/admin/v1/accounts/{acct}/integrations", data=b'{"name": "\\ud800"}',
                                 headers={"Authorization": f"Bearer {BOOT}", "Content-Type": "application/json"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "INVALID_REQUEST"
