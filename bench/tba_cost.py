"""What token-based authentication costs per request (SPEC section 3, R13).

Run from the project root: `.venv/bin/python bench/tba_cost.py [N]` (default N = 10000).
(a) the core: N `verify_token_passport` calls (format checks, HMAC-SHA256, constant-time
    compare), good passports and wrong ones alike (the HMAC is computed either way);
(b) the store: N `claim_nonce` calls (one `SET NX EX` round trip each) against the embedded
    Redis over its unix socket, one after another and then 64 at a time.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.core.tba import sign_token_passport, verify_token_passport
from gateway.store.embedded import EmbeddedRedis
from gateway.store.redis import open_store
from tests.store.helpers import make_settings

ALLOWED = frozenset({"HMAC-SHA256"})
CONSUMER_SECRET, TOKEN_SECRET = secrets.token_hex(32), secrets.token_hex(32)


def verify_cost(n: int) -> tuple[float, float]:
    """Microseconds per call: (good signature, wrong secret)."""
    now = int(time.time())
    passports = [sign_token_passport(account="1234567_SB1", consumer_key="ck" * 32, token="tk" * 32,
                                     nonce=secrets.token_hex(10), timestamp=now, consumer_secret=CONSUMER_SECRET,
                                     token_secret=TOKEN_SECRET) for _ in range(n)]
    results = []
    for token_secret in (TOKEN_SECRET, "0" * 64):
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for tp in passports:
                verify_token_passport(tp, consumer_secret=CONSUMER_SECRET, token_secret=token_secret, now=now,
                                      skew=300, allowed=ALLOWED)
            best = min(best, time.perf_counter() - start)
        results.append(best / n * 1e6)
    return results[0], results[1]


async def nonce_cost(n: int) -> tuple[float, float, float]:
    """(median and p99 microseconds per sequential claim, microseconds per claim 64 at a time)."""
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp) / "data").start()
        try:
            store = await open_store(make_settings(), server.url, secret_keys=[secrets.token_bytes(32)],
                                     listen=False)
            try:
                scope = secrets.token_hex(32)
                for i in range(200):  # warm the connection pool
                    await store.claim_nonce(scope, f"warm{i}", 601)
                times = []
                for i in range(n):
                    start = time.perf_counter()
                    fresh = await store.claim_nonce(scope, f"seq{i}", 601)
                    times.append(time.perf_counter() - start)
                    assert fresh
                times.sort()
                median, p99 = statistics.median(times) * 1e6, times[int(len(times) * 0.99)] * 1e6
                start = time.perf_counter()
                for base in range(0, n, 64):
                    await asyncio.gather(*(store.claim_nonce(scope, f"par{i}", 601)
                                           for i in range(base, min(base + 64, n))))
                concurrent = (time.perf_counter() - start) / n * 1e6
                return median, p99, concurrent
            finally:
                await store.close()
        finally:
            server.stop()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    good, wrong = verify_cost(n)
    print(f"verify_token_passport  N={n}: {good:6.2f} us/call (good), {wrong:6.2f} us/call (wrong secret)")
    median, p99, concurrent = asyncio.run(nonce_cost(n))
    print(f"claim_nonce (embedded Redis, unix socket) N={n}: median {median:6.1f} us, p99 {p99:6.1f} us "
          f"sequential; {concurrent:6.1f} us/claim 64 in flight")


if __name__ == "__main__":
    main()
