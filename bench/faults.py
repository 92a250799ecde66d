"""The long fault runs behind tests/reliability (which run short versions of the same scenarios).

    python bench/faults.py [--only redis-stop,redis-empty,redis-freeze,upstream] [--out FILE]

- redis-stop: Redis stopped for 10 s in the middle of 30 s of load (cached passport requests
  and TBA requests from 6 clients), then started again from its append-only file.
- redis-empty: the same, but Redis comes back empty (its files deleted); the records are
  put back 0.5 s later, as an operator would.
- redis-freeze: Redis frozen (SIGSTOP) for 10 s: it accepts connections and never answers.
- upstream: 10,000 upstream failures (refused, reset, EOF, garbage, slow headers, reset /
  EOF / stall mid-body), 50 at a time; open file descriptors and asyncio tasks before and after.

Everything runs in this process on a gateway built like `serve`'s (tests/reliability/rig.py),
over a private embedded Redis. Prints one block per scenario and writes them as JSON to
`--out` (default bench/results/faults.json). Exit status 0 when every expectation held.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from gateway.store.embedded import EmbeddedRedis
from tests.factories import get_data_center_urls_body, make_envelope
from tests.reliability.rig import SOAP_HEADERS, StartGateway, gateways, open_fds
from tests.reliability.scenarios import (
    Action,
    OutageRun,
    logged_request_ids,
    redis_outage_under_load,
    reseed,
    send,
    start_redis,
    stop_redis,
)
from tests.reliability.upstreams import MODES, FaultyUpstream

DURATION, DOWN_AT, DOWN_FOR = 30.0, 10.0, 10.0


class ErrorCatcher(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


def latency_ms(run: OutageRun, kind: str, start: float, end: float) -> dict[str, float]:
    """Of the requests of `kind` sent in [start, end), whenever they were answered."""
    values = sorted((s.done - s.sent) * 1000 for s in run.samples if s.kind == kind and start <= s.sent < end)
    if not values:
        return {}
    return {"n": len(values), "p50": round(statistics.median(values), 1),
            "p99": round(values[max(int(len(values) * 0.99) - 1, 0)], 1), "max": round(values[-1], 1)}


async def redis_scenario(name: str, start: StartGateway, server: EmbeddedRedis) -> dict[str, Any]:
    gw = await start(redis=server.url)
    tenant = await gw.tenant()
    for kind in ("cached", "tba"):
        assert (await send(gw, tenant, kind, f"warm-{kind}-{secrets.token_hex(3)}"))[0] == 200

    stop: Action
    begin: Action
    after_up: Action | None = None
    if name == "redis-freeze":
        proc = server._proc
        assert proc is not None

        async def stop() -> None:
            os.kill(proc.pid, signal.SIGSTOP)

        async def begin() -> None:
            os.kill(proc.pid, signal.SIGCONT)
    else:
        stop, begin = stop_redis(server), start_redis(server, wipe=name == "redis-empty")
    if name == "redis-empty":
        async def after_up() -> None:
            await asyncio.sleep(0.5)
            await reseed(gw, tenant)

    run = await redis_outage_under_load(gw, tenant, duration=DURATION, down_at=DOWN_AT, down_for=DOWN_FOR,
                                        stop=stop, start=begin, after_up=after_up, pause=0.005)
    down, back, up = run.down_at, run.starting_at, run.up_at
    ids = [s.request_id for s in run.samples]
    kept_from = down + 0.5 if name == "redis-empty" else 0.0  # an emptied Redis lost what it held
    expected_logged = [s.request_id for s in run.samples if s.done >= kept_from]
    logged = await logged_request_ids(gw, expected_logged, timeout=20)
    full_again = max((s.done for s in run.samples if s.sent >= up and s.status != 200), default=up) - up
    result: dict[str, Any] = {
        "requests": len(ids),
        "client errors": run.errors[:5],
        "outage s": round(up - down, 2),
        "cached during outage": run.counts("cached", down, back),
        "tba during outage": run.counts("tba", down, back),
        "cached after return": run.counts("cached", up, DURATION),
        "tba after return": run.counts("tba", up, DURATION),
        "latency ms of requests sent during outage": {k: latency_ms(run, k, down, back) for k in ("cached", "tba")},
        "first tba success after return s": run.first_ok_after("tba", run.settled_at or up),
        "every answer a success again after s": round(full_again, 3),
        "readyz true again after s": run.ready_again_after(up),
        "readyz true during outage (samples)": sum(1 for t, r in run.readiness if down + 0.1 < t < back and r),
        "log entries expected": len(expected_logged),
        "log entries written": len(logged),
        "log entries dropped (counted)": gw.writer.dropped_total,
    }
    checks = {
        "no client error": not run.errors,
        "every log entry written": len(logged) == len(expected_logged),
        "readyz false while down": result["readyz true during outage (samples)"] == 0,
        "full service within 2 s": full_again < 2.0 + (0.5 if name == "redis-empty" else 0.0),
    }
    if name == "redis-stop":
        checks["cached served throughout"] = set(run.counts("cached", 0, DURATION)) == {200}
        checks["tba fails closed (503) while down"] = set(run.counts("tba", down, back)) == {503}
    if name == "redis-freeze":
        # The request path's deadline (gateway.store.redis.REQUEST_PATH_DEADLINE, 0.5 s) and a
        # little: not the 2 s socket timeout, retried.
        slow = max(latency_ms(run, kind, down, back).get("max", 0) for kind in ("tba", "cached"))
        checks["store calls fail fast while frozen (< 600 ms)"] = slow < 600
    result["checks"] = checks
    return result


async def upstream_scenario(start: StartGateway, total: int = 10_000, concurrency: int = 50) -> dict[str, Any]:
    refused = await FaultyUpstream("refused").start()
    faulty = await FaultyUpstream("eof_before_answer").start()
    limits = {"upstream_response_timeout_seconds": 0.25, "upstream_connect_timeout_seconds": 1}
    gws = {"refused": await start(upstream=refused.url, limits=limits),
           "any": await start(upstream=faulty.url, limits=limits)}
    envelope = make_envelope(get_data_center_urls_body("2024_2", "1234567"))
    seen: Counter[str] = Counter()

    async def round_of(n: int) -> None:
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int, http: aiohttp.ClientSession) -> None:
            mode = MODES[i % len(MODES)]
            gw = gws["refused" if mode == "refused" else "any"]
            async with sem:
                url = gw.url(f"/services/NetSuitePort_2024_2?mode={mode}")
                async with http.post(url, data=envelope, headers=SOAP_HEADERS,
                                     timeout=aiohttp.ClientTimeout(total=30)) as r:
                    try:
                        await r.read()
                        seen[str(r.status)] += 1
                    except aiohttp.ClientPayloadError:
                        seen["cut"] += 1

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
            await asyncio.gather(*(one(i, http) for i in range(n)))

    await round_of(len(MODES) * 4)
    seen.clear()
    await asyncio.sleep(0.5)
    fds_before, tasks_before = open_fds(), len(asyncio.all_tasks())
    started = time.monotonic()
    await round_of(total)
    elapsed = time.monotonic() - started
    await asyncio.sleep(0.5)
    for _ in range(100):
        if open_fds() <= fds_before + 4 and len(asyncio.all_tasks()) <= tasks_before:
            break
        await asyncio.sleep(0.05)
    fds_after, tasks_after = open_fds(), len(asyncio.all_tasks())
    await refused.close()
    await faulty.close()
    return {
        "failures": total, "seconds": round(elapsed, 1), "answers": dict(seen),
        "fds before/after": [fds_before, fds_after], "tasks before/after": [tasks_before, tasks_after],
        "log entries dropped": sum(g.writer.dropped_total for g in gws.values()),
        "checks": {"no 200": "200" not in seen, f"{total} answered": sum(seen.values()) == total,
                   "no fd leaked": fds_after <= fds_before + 4, "no task leaked": tasks_after <= tasks_before},
    }


async def amain(only: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    catcher = ErrorCatcher()
    logging.getLogger().addHandler(catcher)
    for name in only:
        with tempfile.TemporaryDirectory(prefix=f"faults-{name}-") as tmp:
            server = EmbeddedRedis(Path(tmp) / "data").start()
            try:
                async with gateways(server.url) as start:
                    catcher.messages.clear()
                    print(f"== {name} ...", flush=True)
                    if name == "upstream":
                        result = await upstream_scenario(start)
                    else:
                        result = await redis_scenario(name, start, server)
                    result["errors logged"] = [m for m in catcher.messages
                                               if m.startswith(("aiohttp", "gateway.web"))][:10]
                    result["checks"]["no handler error logged"] = not result["errors logged"]
            finally:
                if server._proc is not None:
                    os.kill(server._proc.pid, signal.SIGCONT)
                server.stop()
        results[name] = result
        print(json.dumps(result, indent=2, default=str), flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--only", default="redis-stop,redis-empty,redis-freeze,upstream")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "faults.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    results = asyncio.run(amain([n.strip() for n in args.only.split(",") if n.strip()]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    failed = {name: [c for c, ok in r["checks"].items() if not ok] for name, r in results.items()}
    failed = {k: v for k, v in failed.items() if v}
    print("\nfailed checks:", failed or "none")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
