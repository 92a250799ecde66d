"""Reading the logs back (SPEC sections 5 and 6) after real traffic: the admin routes' filters
and cursor paging, retention by age (sandbox sooner) and by length with the request-id index
following, and `gateway logs tail|search` against a running admin API."""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway import admin_cli
from gateway.admin_cli import add_admin_commands
from gateway.config import load_settings
from gateway.store import keyspace as ks
from gateway.store.logstore import rid_queue
from tests.store.helpers import new_account
from tests.web.conftest import MakeRig, Rig, Tenant

TOKEN = "logs-admin-token"
DEFAULTS = load_settings(environ={})


class Admin:
    def __init__(self, client: TestClient[web.Request, web.Application]) -> None:
        self.client = client

    async def __call__(self, path: str, **params: Any) -> Any:
        resp = await self.client.get("/admin/v1" + path, params={k: str(v) for k, v in params.items()},
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        assert resp.status == 200, (path, resp.status, await resp.text())
        return await resp.json()

    @property
    def url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")


@pytest.fixture
async def admin_of() -> AsyncIterator[Any]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(rig: Rig) -> Admin:
        from gateway.web.admin import setup_admin

        app = web.Application()
        setup_admin(app, rig.store, rig.ctx.settings, bootstrap_token=TOKEN)
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return Admin(client)

    yield make
    for client in clients:
        await client.close()


async def settled(rig: Rig, count: int, timeout: float = 5.0) -> None:
    """Wait until `count` entries have been written (they are handed over as handlers return)."""
    deadline = time.monotonic() + timeout
    while rig.writer.written_total < count or rig.writer.depth:
        assert time.monotonic() < deadline, (rig.writer.written_total, count)
        await rig.flush_logs()
        await asyncio.sleep(0.01)


async def second_integration(rig: Rig, t: Tenant) -> Tenant:
    body = {"name": f"second-{secrets.token_hex(3)}", "state": "enabled",
            "auth": {"user_credentials": True, "token_based": True}}
    integ = await rig.store.registry.create_integration(t.account, body, "test")
    token = await rig.store.tokens.issue(t.account, integ["id"], "ann@example.com", "3")
    return Tenant(t.account, integ, token, email="ann@example.com")


async def sandbox_tenant(rig: Rig) -> Tenant:
    account = new_account(sandbox=True)
    await rig.store.registry.put_account(account, False)
    integ = await rig.store.registry.create_integration(account, {"name": "sb", "state": "enabled"}, "test")
    token = await rig.store.tokens.issue(account, integ["id"], "jane@example.com", "3")
    return Tenant(account, integ, token)


def ids(page: dict[str, Any]) -> list[str]:
    return [e["request_id"] for e in page["entries"]]


# --------------------------------------------------------------------------- admin routes


async def test_filters_time_range_and_paging_over_real_traffic(make_rig: MakeRig, admin_of: Any) -> None:
    rig = await make_rig()
    admin = await admin_of(rig)
    a = await rig.tenant()
    b = await second_integration(rig, a)
    acct, ia, ib = a.account, a.integration["id"], b.integration["id"]
    sent: list[str] = []

    async def send(rid: str, t: Tenant, payload: bytes | None = None, version: str = "2024_2") -> None:
        await rig.soap(version, payload if payload is not None else t.tba(), headers={"X-Request-Id": rid})
        sent.append(rid)

    for i in range(5):
        await send(f"a-get-{i}", a)
    await send("a-forged", a, a.tba(signature="AAAA"))
    await send("b-get-0", b)
    await settled(rig, len(sent))
    await asyncio.sleep(0.05)
    middle = time.time()
    await asyncio.sleep(0.05)
    await send("b-search", b, b.tba(body='<ns0:search xmlns:ns0="urn:messages_2024_2.platform.webservices'
                                         '.netsuite.com"/>'))
    await send("a-get-late", a)
    await send("a-passport-2020", a, a.passport("2020_2"), version="2020_2")
    await settled(rig, len(sent))
    newest_first = sent[::-1]

    usage = f"/accounts/{acct}/usage-log"
    assert ids(await admin(usage)) == newest_first
    assert ids(await admin(usage, integration=ib)) == ["b-search", "b-get-0"]
    assert ids(await admin(usage, operation="search")) == ["b-search"]
    assert ids(await admin(usage, outcome="rejected")) == ["a-passport-2020", "a-forged"]
    assert ids(await admin(usage, outcome="rejected", integration=ia)) == ["a-passport-2020", "a-forged"]
    assert ids(await admin(usage, request_id="a-get-3")) == ["a-get-3"]
    assert ids(await admin(usage, since=middle)) == ["a-passport-2020", "a-get-late", "b-search"]
    assert ids(await admin(usage, until=middle)) == newest_first[3:]
    iso_middle = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(middle)) + f".{int(middle % 1 * 1000):03d}Z"
    assert ids(await admin(usage, since=iso_middle, operation="get")) == ["a-passport-2020", "a-get-late"]
    assert ids(await admin(f"/accounts/{acct}/integrations/{ib}/log")) == ["b-search", "b-get-0"]
    assert ids(await admin(f"/accounts/{acct}/integrations/{ia}/log", outcome="forwarded")) == [
        "a-get-late", *[f"a-get-{i}" for i in reversed(range(5))]]
    assert ids(await admin("/usage-log", request_id="b-search")) == ["b-search"]

    # Cursor paging: every entry exactly once, newest first, `next` null on the last page.
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await admin(usage, limit=3, **({"cursor": cursor} if cursor else {}))
        seen += ids(page)
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == newest_first and pages == 4
    filtered = await admin(usage, limit=2, integration=ia, operation="get", outcome="forwarded")
    rest = await admin(usage, limit=10, integration=ia, operation="get", outcome="forwarded",
                       cursor=filtered["next"])
    assert ids(filtered) + ids(rest) == ["a-get-late", *[f"a-get-{i}" for i in reversed(range(5))]]
    assert rest["next"] is None


# --------------------------------------------------------------------------- retention


async def test_retention_21_days_and_7_for_sandbox_accounts(make_rig: MakeRig) -> None:
    rig = await make_rig()
    prod, sandbox = await rig.tenant(), await sandbox_tenant(rig)
    for t, rid in ((prod, "old-prod"), (sandbox, "old-sb")):
        await rig.soap("2024_2", t.tba(), headers={"X-Request-Id": f"{rid}-{t.account}"})
    await settled(rig, 2)
    assert await rig.store.client.ttl(ks.usage_log(sandbox.account)) <= 7 * 86400
    assert await rig.store.client.ttl(ks.usage_log(prod.account)) > 20 * 86400

    now = time.time()

    async def later(days: int, t: Tenant, rid: str, written: int) -> None:
        rig.store.logs.clock = lambda: now + days * 86400
        await rig.soap("2024_2", t.tba(), headers={"X-Request-Id": f"{rid}-{t.account}"})
        await settled(rig, written)

    async def usage_ids(t: Tenant) -> list[str]:
        rows = await rig.store.client.xrevrange(ks.usage_log(t.account))
        return [r[1]["j"].split('"request_id":"', 1)[1].split('"', 1)[0] for r in rows]

    async def exec_len(t: Tenant) -> int:
        return int(await rig.store.client.xlen(ks.execution_log(t.account, t.integration["id"])))

    await later(8, sandbox, "new-sb", 3)
    await later(8, prod, "new-prod", 4)
    assert await usage_ids(sandbox) == [f"new-sb-{sandbox.account}"] and await exec_len(sandbox) == 1
    assert await usage_ids(prod) == [f"new-prod-{prod.account}", f"old-prod-{prod.account}"]
    assert await exec_len(prod) == 2
    assert await rig.store.logs.find(f"old-sb-{sandbox.account}") is None
    assert not await rig.store.client.exists(ks.request_index(f"old-sb-{sandbox.account}"))  # index follows

    await later(22, prod, "newest-prod", 5)
    assert await usage_ids(prod) == [f"newest-prod-{prod.account}"] and await exec_len(prod) == 1
    assert not await rig.store.client.exists(ks.request_index(f"old-prod-{prod.account}"))
    assert not await rig.store.client.exists(ks.request_index(f"new-prod-{prod.account}"))
    assert await rig.store.client.llen(rid_queue(ks.usage_log(prod.account))) == 1


async def test_length_cap_per_stream_and_the_index_follows(make_rig: MakeRig) -> None:
    rig = await make_rig(log=replace(DEFAULTS.log, max_entries_per_stream=5))
    t = await rig.tenant()
    rids = [f"cap-{t.account}-{i}" for i in range(8)]
    for rid in rids:
        await rig.soap("2024_2", t.tba(), headers={"X-Request-Id": rid})
    await settled(rig, 8)
    client = rig.store.client
    assert await client.xlen(ks.usage_log(t.account)) == 5
    assert await client.xlen(ks.execution_log(t.account, t.integration["id"])) == 5
    assert await client.llen(rid_queue(ks.usage_log(t.account))) == 5
    for rid in rids[:3]:
        assert await rig.store.logs.find(rid) is None and not await client.exists(ks.request_index(rid))
    for rid in rids[3:]:
        found = await rig.store.logs.find(rid)
        assert found is not None and found[1]["request_id"] == rid


async def test_a_request_id_sent_twice_keeps_its_newest_entry_findable(make_rig: MakeRig) -> None:
    rig = await make_rig(log=replace(DEFAULTS.log, max_entries_per_stream=3))
    t = await rig.tenant()
    rid = f"twice-{t.account}"
    await rig.soap("2024_2", t.tba(), headers={"X-Request-Id": rid})
    await rig.soap("2020_2", t.passport("2020_2"), headers={"X-Request-Id": rid})
    await settled(rig, 2)
    for i in range(2):
        await rig.soap("2024_2", t.tba(), headers={"X-Request-Id": f"{rid}-{i}"})
    await settled(rig, 4)  # the first entry is trimmed; the id names the second, which stays
    found = await rig.store.logs.find(rid)
    assert found is not None and found[1]["reason"] == "passport_unsupported"


# --------------------------------------------------------------------------- the CLI


def cli(url: str, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gateway")
    add_admin_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args([*argv, "--admin-url", url, "--token", TOKEN])


async def test_cli_search_and_tail_against_the_admin_api(
        make_rig: MakeRig, admin_of: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = await make_rig()
    admin = await admin_of(rig)
    t = await rig.tenant()
    for i in range(4):
        await rig.soap("2024_2", t.tba(), headers={"X-Request-Id": f"cli-{t.account}-{i}"})
    await rig.soap("2020_2", t.passport("2020_2"), headers={"X-Request-Id": f"cli-{t.account}-rej"})
    await settled(rig, 5)
    run = asyncio.to_thread

    args = cli(admin.url, "logs", "search", "--account", t.account, "--outcome", "rejected")
    assert await run(args.func, args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["TIME", "REQUEST_ID", "OPERATION"]
    assert len(out) == 2 and f"cli-{t.account}-rej" in out[1] and "passport_unsupported" in out[1]

    args = cli(admin.url, "logs", "search", "--account", t.account, "--limit", "3", "--json")
    assert await run(args.func, args) == 0
    first = json.loads(capsys.readouterr().out)
    assert len(first["entries"]) == 3 and first["next"]
    args = cli(admin.url, "logs", "search", "--account", t.account, "--limit", "3", "--json",
               "--cursor", first["next"])
    assert await run(args.func, args) == 0
    second = json.loads(capsys.readouterr().out)
    assert [e["request_id"] for e in first["entries"] + second["entries"]] == [
        f"cli-{t.account}-rej", *[f"cli-{t.account}-{i}" for i in reversed(range(4))]]

    args = cli(admin.url, "logs", "search", "--request-id", f"cli-{t.account}-2", "--json")  # global
    assert await run(args.func, args) == 0
    assert [e["request_id"] for e in json.loads(capsys.readouterr().out)["entries"]] == [f"cli-{t.account}-2"]

    args = cli(admin.url, "logs", "tail", "--account", t.account, "--integration-log", "--integration",
               t.integration["id"], "--limit", "2")
    assert await run(args.func, args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines[1:]] == [f"cli-{t.account}-3", f"cli-{t.account}-rej"]

    # --follow: new entries appear as they are written, once each, oldest first.
    loop = asyncio.get_running_loop()
    polls = 0

    def between_polls(_seconds: float) -> None:
        nonlocal polls
        polls += 1
        if polls == 1:
            async def more() -> None:
                for i in range(2):
                    await rig.soap("2024_2", t.tba(), headers={"X-Request-Id": f"cli-{t.account}-new{i}"})
                await settled(rig, 7)
            asyncio.run_coroutine_threadsafe(more(), loop).result(10)
        elif polls >= 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(admin_cli.time, "sleep", between_polls)
    args = cli(admin.url, "logs", "tail", "--account", t.account, "--limit", "3", "--follow", "--json")
    assert await run(args.func, args) == 130
    followed = [json.loads(line)["request_id"] for line in capsys.readouterr().out.splitlines()]
    assert followed == [f"cli-{t.account}-2", f"cli-{t.account}-3", f"cli-{t.account}-rej",
                        f"cli-{t.account}-new0", f"cli-{t.account}-new1"]

    args = cli(admin.url, "logs", "tail", "--integration-log")
    assert await run(args.func, args) == 2
    assert "--integration-log needs --account and --integration" in capsys.readouterr().err
