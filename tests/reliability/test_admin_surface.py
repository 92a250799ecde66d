"""The admin surface and secrets at rest: listeners on loopback by default, the admin API and
/metrics unreachable through the proxy port, and no password, token secret, consumer secret,
signature or bearer token in plaintext in the process logs (JSON, debug level) or anywhere
in Redis after a run that used them all."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from aiohttp import web
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA256, Client

from gateway.config import HostPort, load_settings
from gateway.store.embedded import EmbeddedRedis
from tests.factories import (
    application_info_xml,
    get_body,
    login_body,
    logout_body,
    make_envelope,
    passport_xml,
    sso_login_body,
    tba_signature,
    token_passport_xml,
)
from tests.test_serve import Served


def test_listeners_default_to_loopback() -> None:
    settings = load_settings(environ={})
    assert settings.admin_listen == HostPort("127.0.0.1", 8081)
    assert settings.listen == HostPort("127.0.0.1", 8080)


def listening_addresses(pid: int) -> set[str]:
    """host:port of the TCP sockets `pid` listens on (from /proc: no tool needed)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].split(":")
                raw = bytes.fromhex(address)
                host = (socket.inet_ntop(socket.AF_INET, raw[::-1]) if len(raw) == 4
                        else socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))))
                found.add(f"{host}:{int(port, 16)}")
    return found


@pytest.fixture
async def upstream() -> Any:
    from gateway.backend import SampleBackend

    runner = web.AppRunner(SampleBackend().app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.mark.slow
async def test_no_secret_in_process_logs_or_in_redis(tmp_path: Path, fresh_redis: EmbeddedRedis,
                                                     upstream: str) -> None:
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    bootstrap = "boot-" + secrets.token_hex(16)
    identity_key = "idk-" + secrets.token_hex(16)
    gw = Served(tmp_path, upstream, "--redis-url", fresh_redis.url, env={
        "GATEWAY_SECRET_KEYS": key, "GATEWAY_ADMIN_TOKEN": bootstrap, "GATEWAY_LOG__JSON": "true",
        "GATEWAY_LOG__LEVEL": "debug", "GATEWAY_UPSTREAM_IDENTITY_KEY": identity_key})
    secret: dict[str, str] = {"secret key": key, "bootstrap admin token": bootstrap,
                              "upstream identity key": identity_key, "redis password": fresh_redis.password}
    try:
        assert listening_addresses(gw.proc.pid) == {f"127.0.0.1:{gw.proxy_port}", f"127.0.0.1:{gw.admin_port}"}
        async with aiohttp.ClientSession() as http:
            await exercise(http, gw, secret)
    finally:
        gw.stop()  # drains: every buffered log entry is written before it exits
    logs = gw.log_path.read_text()
    assert logs.strip(), "no process log captured"
    for line in logs.splitlines():
        if line.startswith("{"):
            json.loads(line)  # JSON lines, as configured
    dump = redis_dump(fresh_redis.url)
    found = {name: where for name, value in secret.items()
             for where, text in (("process log", logs), ("redis", dump)) if value and value in text}
    assert found.pop("(positive control) account") == "redis"  # the dump does hold the records
    # Session ids are bearer credentials too: Redis keys them by SHA-256 (keyspace.session).
    assert found == {}, found
    assert len(secret) >= 19


async def exercise(http: aiohttp.ClientSession, gw: Served, secret: dict[str, str]) -> None:
    """Every path a secret travels: admin API, passport, login and session, ssoLogin, TBA (good
    and bad signatures), a refused passport, an OAuth RESTlet, Issue Token, bad bearer tokens."""
    admin = f"http://127.0.0.1:{gw.admin_port}/admin/v1"
    proxy = f"http://127.0.0.1:{gw.proxy_port}"
    boot = {"Authorization": f"Bearer {secret['bootstrap admin token']}"}
    account = f"{secrets.randbelow(9_000_000) + 1_000_000}"

    async def call(method: str, url: str, expect: int, **kw: Any) -> Any:
        async with http.request(method, url, **kw) as r:
            body = await r.read()
            assert r.status == expect, (url, r.status, body[:300])
            return json.loads(body) if r.content_type == "application/json" else body

    await call("PUT", f"{admin}/accounts/{account}", 200, json={"require_approval": False}, headers=boot)
    record = await call("POST", f"{admin}/accounts/{account}/integrations", 201, headers=boot, json={
        "name": "secrets", "state": "enabled",
        "auth": {"user_credentials": True, "token_based": True, "tba_issue_token_endpoint": True}})
    secret["consumer secret"] = record["consumer_secret"]
    token = await call("POST", f"{admin}/accounts/{account}/tokens", 201, headers=boot,
                       json={"integration_id": record["id"], "user": "ann@example.com", "role": "3"})
    secret["token secret"] = token["token_secret"]
    minted = await call("POST", f"{admin}/accounts/{account}/admin-tokens", 201, headers=boot,
                        json={"role": "administrator"})
    secret["minted admin token"] = minted["token"]
    await call("GET", f"{admin}/accounts/{account}", 200, headers={"Authorization": f"Bearer {minted['token']}"})
    secret["wrong bearer token"] = "gwat_" + secrets.token_hex(32)
    await call("GET", f"{admin}/accounts/{account}", 401,
               headers={"Authorization": f"Bearer {secret['wrong bearer token']}"})

    # Nothing of the admin surface answers on the proxy port.
    for path in ("/metrics", "/admin/v1/accounts/" + account, "/healthz", "/readyz"):
        await call("GET", proxy + path, 404, headers=boot)

    soap = {"Content-Type": "text/xml; charset=utf-8"}
    app = application_info_xml("2019_2", record["application_id"])
    secret["passport password"] = "pp-" + secrets.token_hex(12)
    await call("POST", f"{proxy}/services/NetSuitePort_2019_2", 200, headers=soap, data=make_envelope(
        get_body("2019_2"), [passport_xml("2019_2", "ann@example.com", secret["passport password"], account), app]))
    secret["refused passport password"] = "rp-" + secrets.token_hex(12)
    await call("POST", f"{proxy}/services/NetSuitePort_2020_2", 500, headers=soap, data=make_envelope(
        get_body("2020_2"), [passport_xml("2020_2", "ann@example.com", secret["refused passport password"],
                                          account)]))
    secret["login password"] = "lp-" + secrets.token_hex(12)
    async with http.post(f"{proxy}/services/NetSuitePort_2019_2", headers=soap, data=make_envelope(
            login_body("2019_2", "ann@example.com", secret["login password"], account), [app])) as r:
        assert r.status == 200
        session_id = r.cookies["JSESSIONID"].value
    ride = soap | {"Cookie": f"JSESSIONID={session_id}"}
    await call("POST", f"{proxy}/services/NetSuitePort_2019_2", 200, headers=ride, data=make_envelope(
        get_body("2019_2")))
    await call("POST", f"{proxy}/services/NetSuitePort_2019_2", 200, headers=ride, data=make_envelope(
        logout_body("2019_2")))
    secret["sso authentication token"] = "sso-" + secrets.token_hex(12)
    async with http.post(f"{proxy}/services/NetSuitePort_2019_2", headers=soap, data=make_envelope(
            sso_login_body("2019_2", secret["sso authentication token"], partner_account=account,
                           partner_user_id="ann@example.com"), [app])) as r:
        assert r.status == 200
        secret["open session id (a bearer credential)"] = r.cookies["JSESSIONID"].value

    nonce, stamp = secrets.token_hex(10), str(int(time.time()))
    secret["TBA signature"] = tba_signature(account, record["consumer_key"], token["token_id"], nonce, stamp,
                                            record["consumer_secret"], token["token_secret"])
    await call("POST", f"{proxy}/services/NetSuitePort_2024_2", 200, headers=soap, data=make_envelope(
        get_body("2024_2"), [token_passport_xml("2024_2", account, record["consumer_key"], record["consumer_secret"],
                                                token["token_id"], token["token_secret"], nonce=nonce,
                                                timestamp=stamp)]))
    secret["wrong TBA signature"] = base64.b64encode(secrets.token_bytes(32)).decode()
    await call("POST", f"{proxy}/services/NetSuitePort_2024_2", 500, headers=soap, data=make_envelope(
        get_body("2024_2"), [token_passport_xml("2024_2", account, record["consumer_key"], record["consumer_secret"],
                                                token["token_id"], token["token_secret"],
                                                signature=secret["wrong TBA signature"])]))

    restlet = f"{proxy}/app/site/hosting/restlet.nl?script=1&deploy=1"
    client = Client(record["consumer_key"], client_secret=record["consumer_secret"],
                    resource_owner_key=token["token_id"], resource_owner_secret=token["token_secret"],
                    signature_method=SIGNATURE_HMAC_SHA256, realm=account)
    _, signed, _ = client.sign(restlet, http_method="GET")
    secret["OAuth signature"] = oauth_signature(signed["Authorization"])
    await call("GET", restlet, 200, headers={"Authorization": signed["Authorization"]})

    issue = f"{proxy}/rest/issuetoken"
    consumer = Client(record["consumer_key"], client_secret=record["consumer_secret"],
                      signature_method=SIGNATURE_HMAC_SHA256)
    _, signed, _ = consumer.sign(issue, http_method="POST")
    secret["Issue Token OAuth signature"] = oauth_signature(signed["Authorization"])
    secret["NLAuth password"] = "nl-" + secrets.token_hex(12)
    nlauth = (f"NLAuth nlauth_account={account}, nlauth_email=ann@example.com, "
              f'nlauth_signature="{secret["NLAuth password"]}", nlauth_role=3, '
              + str(signed["Authorization"]).removeprefix("OAuth "))
    issued = await call("POST", issue, 200, headers={"Authorization": nlauth})
    secret["issued token secret"] = issued["tokenSecret"]
    secret["closed session id"] = session_id
    secret["(positive control) account"] = account


def oauth_signature(header: str) -> str:
    from urllib.parse import unquote

    for part in header.removeprefix("OAuth ").split(","):
        name, _, value = part.strip().partition("=")
        if name == "oauth_signature":
            return unquote(value.strip('"'))
    raise AssertionError(header)


def redis_dump(url: str) -> str:
    """Every key and every value of every type, as text."""
    client = redis.Redis.from_url(url, decode_responses=True)
    out: list[str] = []
    try:
        for key in client.scan_iter(count=500):
            out.append(key)
            kind = client.type(key)
            if kind == "string":
                out.append(str(client.get(key)))
            elif kind == "hash":
                out.extend(f"{k}={v}" for k, v in client.hgetall(key).items())
            elif kind == "list":
                out.extend(client.lrange(key, 0, -1))
            elif kind == "set":
                out.extend(client.smembers(key))
            elif kind == "zset":
                out.extend(client.zrange(key, 0, -1))
            elif kind == "stream":
                out.extend(json.dumps(fields) for _, fields in client.xrange(key))
            else:
                raise AssertionError(f"{key}: unexpected type {kind}")
    finally:
        client.close()
    return "\n".join(out)


def test_admin_tokens_are_stored_as_hashes_only() -> None:
    """tokens.py: the bearer token's SHA-256 is the lookup key; the token itself never stored."""
    from gateway.store.tokens import token_hash

    assert token_hash("gwat_x") == hashlib.sha256(b"gwat_x").hexdigest()
