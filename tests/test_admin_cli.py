"""The admin commands against a real admin API (aiohttp test server, real Redis)."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from gateway.admin_cli import add_admin_commands
from gateway.store.redis import RedisStore
from gateway.web.admin import setup_admin
from tests.store.helpers import make_settings, new_account, store_on

TOKEN = "cli-bootstrap-token"


@pytest.fixture
async def admin_url(aiohttp_server: Any, redis_url: str) -> AsyncIterator[str]:
    store: RedisStore = await store_on(redis_url)
    app = web.Application()
    setup_admin(app, store, make_settings(), bootstrap_token=TOKEN)
    server = await aiohttp_server(app)
    yield str(server.make_url("")).rstrip("/")
    await store.close()


async def run(capsys: pytest.CaptureFixture[str], url: str, *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="gateway")
    add_admin_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([*argv, "--admin-url", url, "--token", TOKEN])
    code = await asyncio.to_thread(args.func, args)
    return code, capsys.readouterr().out


async def test_cli_round_trip(admin_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    acct = new_account()
    code, out = await run(capsys, admin_url, "accounts", "set", "--account", acct, "--require-approval", "true")
    assert code == 0 and "require_approval" in out
    code, out = await run(capsys, admin_url, "integrations", "create", "--account", acct, "--name", "cli", "--json")
    created = json.loads(out)
    assert code == 0 and len(created["consumer_secret"]) == 64
    code, out = await run(
        capsys, admin_url, "integrations", "block", "--account", acct, created["id"], "--note", "SEC-9"
    )
    assert code == 0
    code, out = await run(capsys, admin_url, "integrations", "list", "--account", acct)
    assert "blocked" in out and "SEC-9" in out and out.splitlines()[0].startswith("ID")
    code, out = await run(
        capsys,
        admin_url,
        "tokens",
        "issue",
        "--account",
        acct,
        "--integration",
        created["id"],
        "--user",
        "u@x.com",
        "--json",
    )
    token = json.loads(out)
    code, out = await run(capsys, admin_url, "tokens", "list", "--account", acct)
    assert token["token_id"] in out and token["token_secret"] not in out
    code, out = await run(capsys, admin_url, "tokens", "revoke", "--account", acct, token["token_id"])
    assert code == 0
    code, out = await run(capsys, admin_url, "integrations", "show", "--account", acct, created["id"], "--changes")
    assert "SEC-9" in out and "created" in out
    code, out = await run(capsys, admin_url, "integrations", "show", "--account", acct, created["id"], "--changes",
                          "--json")
    shown = json.loads(out)  # one document, the changes in it
    assert shown["id"] == created["id"] and [c["field"] for c in shown["changes"]][:1] == ["created"]
    code, _ = await run(capsys, admin_url, "accounts", "default-integration", "--account", acct, "blocked")
    assert code == 0
    code, out = await run(capsys, admin_url, "logs", "search", "--account", acct, "--json")
    assert code == 0 and json.loads(out) == {"entries": [], "next": None}
    code, out = await run(capsys, admin_url, "integrations", "remove", "--account", acct, created["id"])
    assert code == 0
    code, _ = await run(capsys, admin_url, "integrations", "show", "--account", acct, created["id"])
    assert code == 1
