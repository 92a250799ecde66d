"""Fault scenarios shared by the reliability tests (short) and `bench/faults.py` (long): load
on an in-process gateway while its Redis goes away and comes back."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

from gateway.store import keyspace as ks
from tests.reliability.rig import Gateway
from tests.web.conftest import Tenant

Action = Callable[[], Awaitable[None]]

# What a request is: "cached" rides on records the gateway has cached (passport + application
# ID on 2019_2: no nonce, no session); "tba" needs Redis for its nonce, whatever is cached.
KINDS = ("cached", "tba")


@dataclass(frozen=True, slots=True)
class Sample:
    kind: str
    sent: float  # seconds since the load started
    done: float
    status: int
    code: str
    request_id: str


@dataclass
class OutageRun:
    down_at: float = 0.0  # Redis gone (its shutdown has finished)
    starting_at: float = 0.0  # Redis being started again (it may answer any moment from here)
    up_at: float = 0.0  # Redis answers
    settled_at: float = 0.0  # and `after_up` (a re-seed) has run
    samples: list[Sample] = field(default_factory=list)
    readiness: list[tuple[float, bool]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def during(self, kind: str, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if s.kind == kind and s.sent >= start and s.done <= end]

    def first_ok_after(self, kind: str, moment: float) -> float | None:
        """Seconds from `moment` to the first success of `kind` sent after it."""
        oks = [s.done for s in self.samples if s.kind == kind and s.status == 200 and s.sent >= moment]
        return min(oks) - moment if oks else None

    def ready_again_after(self, moment: float) -> float | None:
        ups = [t for t, ready in self.readiness if ready and t >= moment]
        return min(ups) - moment if ups else None

    def counts(self, kind: str, start: float, end: float) -> dict[int, int]:
        out: dict[int, int] = {}
        for s in self.during(kind, start, end):
            out[s.status] = out.get(s.status, 0) + 1
        return out


def payload(tenant: Tenant, kind: str) -> bytes:
    return tenant.passport("2019_2") if kind == "cached" else tenant.tba("2024_2")


async def send(gw: Gateway, tenant: Tenant, kind: str, request_id: str) -> tuple[int, str]:
    version = "2019_2" if kind == "cached" else "2024_2"
    answer = await gw.soap(version, payload(tenant, kind), headers={"X-Request-Id": request_id}, timeout=20)
    return answer.status, answer.code


async def redis_outage_under_load(gw: Gateway, tenant: Tenant, *, duration: float, down_at: float,
                                  down_for: float, stop: Action, start: Action, workers: int = 6,
                                  pause: float = 0.0, after_up: Action | None = None) -> OutageRun:
    """`workers` clients send cached and TBA requests for `duration` seconds; Redis is stopped
    at `down_at` and started again `down_for` seconds later (then `after_up` runs: re-seeding
    a Redis that came back empty); /readyz is polled throughout."""
    run = OutageRun()
    t0 = time.monotonic()
    end = t0 + duration

    def now() -> float:
        return time.monotonic() - t0

    async def client(index: int) -> None:
        n = 0
        while time.monotonic() < end:
            kind = KINDS[(index + n) % len(KINDS)]
            n += 1
            rid = f"outage-{index}-{n}-{secrets.token_hex(3)}"
            sent = now()
            try:
                status, code = await send(gw, tenant, kind, rid)
            except (aiohttp.ClientError, TimeoutError) as e:
                run.errors.append(f"{kind} at {sent:.2f}s: {e!r}")
                continue
            run.samples.append(Sample(kind, sent, now(), status, code, rid))
            if pause:
                await asyncio.sleep(pause)

    async def readiness() -> None:
        while time.monotonic() < end:
            try:
                ready = await gw.ready()
            except (aiohttp.ClientError, TimeoutError):
                ready = False
            run.readiness.append((now(), ready))
            await asyncio.sleep(0.05)

    async def outage() -> None:
        await asyncio.sleep(down_at)
        await stop()
        run.down_at = now()  # Redis is gone (a shutdown takes a moment: count from its end)
        await asyncio.sleep(max(down_at + down_for - now(), 0))
        run.starting_at = now()
        await start()
        run.up_at = now()  # Redis answers again
        if after_up is not None:
            await after_up()
        run.settled_at = now()

    await asyncio.gather(outage(), readiness(), *(client(i) for i in range(workers)))
    return run


async def logged_request_ids(gw: Gateway, request_ids: list[str], *, timeout: float = 10.0) -> set[str]:
    """Which of `request_ids` have a usage-log entry, once the log writer has drained."""
    deadline = time.monotonic() + timeout
    while gw.writer.depth and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    found: set[str] = set()
    client = gw.store.client
    for i in range(0, len(request_ids), 500):
        batch = request_ids[i:i + 500]
        async with client.pipeline(transaction=False) as pipe:
            for rid in batch:
                pipe.exists(ks.request_index(rid))
            flags = await pipe.execute()
        found.update(rid for rid, flag in zip(batch, flags, strict=True) if flag)
    return found


def stop_redis(server: object) -> Action:
    async def action() -> None:
        await asyncio.to_thread(server.stop)  # type: ignore[attr-defined]
    return action


def start_redis(server: object, *, wipe: bool = False) -> Action:
    """Start the embedded server again; with `wipe`, its append-only file is deleted first (a
    Redis that comes back empty, as after losing its volume)."""
    async def action() -> None:
        if wipe:
            for path in server.dir.iterdir():  # type: ignore[attr-defined]
                if path.name.startswith(("appendonly", "dump")):
                    path.unlink()
        await asyncio.to_thread(server.start)  # type: ignore[attr-defined]
    return action


async def reseed(gw: Gateway, tenant: Tenant) -> None:
    """Put `tenant` back exactly (account, application ID, consumer key and secret, token)."""
    store = gw.store
    await store.registry.put_account(tenant.account, False)
    integ = await store.registry.create_integration(
        tenant.account, {"name": tenant.integration["name"], "state": "enabled",
                         "auth": {"user_credentials": True, "token_based": True}}, "test",
        application_id=tenant.integration["application_id"], consumer_key=tenant.integration["consumer_key"],
        consumer_secret=tenant.integration["consumer_secret"])
    await store.tokens.save_issued(tenant.account, integ["id"], tenant.email, "3", tenant.token["token_id"],
                                   tenant.token["token_secret"])
