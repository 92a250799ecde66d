"""Block propagation between replicas: how long after a block is committed through one
RedisStore does another RedisStore (a replica with a warm cache) enforce it?

Two stores in one process on one Redis (`--redis-url`, or a throwaway embedded server when
omitted). Each trial: replica B serves the installation from its cache, replica A blocks it
(or unblocks it), B is polled until it answers the new state. Prints p50/p99/max over the
trials, from A's call returning (the commit) and from A's call starting.

    .venv/bin/python bench/propagation.py [--redis-url URL] [--trials 50]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gateway.config import load_settings
from gateway.core.records import State
from gateway.store.embedded import EmbeddedRedis
from gateway.store.redis import open_store


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(url: str, trials: int) -> tuple[list[float], list[float]]:
    settings = load_settings(environ={})
    key = [secrets.token_bytes(32)]
    a = await open_store(settings, url, secret_keys=key)
    b = await open_store(settings, url, secret_keys=key)
    acct = "BENCH" + secrets.token_hex(4).upper()
    await a.registry.put_account(acct, False)
    rec = await a.registry.create_integration(acct, {"name": "bench"}, "bench")
    from_commit: list[float] = []
    from_start: list[float] = []
    state = State.ENABLED
    for _ in range(trials):
        for _ in range(3):  # warm: B answers from its cache
            await b.get_installation(acct, rec["id"])
        state = State.BLOCKED if state is State.ENABLED else State.ENABLED
        started = time.perf_counter()
        await a.registry.update_integration(acct, rec["id"], {"state": state.value}, "bench")
        committed = time.perf_counter()
        while True:
            view = await b.get_installation(acct, rec["id"])
            if view is not None and view.state is state:
                break
            await asyncio.sleep(0)
        seen = time.perf_counter()
        from_commit.append((seen - committed) * 1000)
        from_start.append((seen - started) * 1000)
    await a.registry.remove_integration(acct, rec["id"])
    await a.close()
    await b.close()
    return from_commit, from_start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url")
    parser.add_argument("--trials", type=int, default=50)
    args = parser.parse_args()
    server = None
    tmp = None
    url = args.redis_url
    if url is None:
        tmp = tempfile.TemporaryDirectory()
        server = EmbeddedRedis(Path(tmp.name)).start()
        url = server.url
    try:
        from_commit, from_start = asyncio.run(measure(url, args.trials))
    finally:
        if server is not None:
            server.stop()
        if tmp is not None:
            tmp.cleanup()
    for label, values in (("from commit", from_commit), ("from admin call start", from_start)):
        print(
            f"{label:>22}: p50 {statistics.median(values):.3f} ms  p99 {pct(values, 0.99):.3f} ms  "
            f"max {max(values):.3f} ms  (n={len(values)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
