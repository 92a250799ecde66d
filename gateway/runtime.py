"""`gateway serve`: Redis (embedded or given), the store, both listeners, workers, draining."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web

from gateway.config import Settings
from gateway.core.policy import policy_settings
from gateway.errors import ConfigError, StoreUnavailable
from gateway.metrics import GatewayMetrics, mark_worker_dead, prepare_multiprocess_dir
from gateway.seed import apply_seed
from gateway.store.embedded import EmbeddedRedis
from gateway.store.keyring import load_secret_keys
from gateway.store.redis import RedisStore, open_store
from gateway.web.admin import setup_admin
from gateway.web.app import create_proxy_app, health_routes
from gateway.web.context import ProxyContext
from gateway.web.logwriter import LogWriter
from gateway.web.server import GuardedAppRunner

log = logging.getLogger("gateway")

DRAIN_SECONDS = 30.0
# An idle keep-alive connection costs a file descriptor and a task; aiohttp's default (an
# hour) lets a few thousand idle clients exhaust the descriptor limit. nginx's default.
KEEPALIVE_SECONDS = 75.0
STARTUP_REDIS_WAIT = 30.0
# Connections the kernel completes before the loop accepts them. asyncio's create_server calls
# listen() again with aiohttp's default of 128, so it is passed there too: a burst of 500
# connects with 128 overflowed the queue and the rest waited for a SYN-ACK retransmit (1 s, 3 s, 7 s).
LISTEN_BACKLOG = 1024
GC_GEN0_THRESHOLD = 10_000


def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code."""
    raise_fd_limit()
    embedded: EmbeddedRedis | None = None
    redis_url = settings.redis_url
    keys = load_secret_keys(redis_url, settings.data_dir)
    if redis_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        embedded = EmbeddedRedis(settings.data_dir).start()
        redis_url = embedded.url
    try:
        if settings.workers == 1:
            return _run_worker(settings, redis_url, keys, index=0)
        return _run_workers(settings, redis_url, keys)
    finally:
        if embedded is not None:
            embedded.stop()


def raise_fd_limit(ceiling: int = 1 << 16) -> int:
    """Every client connection costs a descriptor and so does its upstream connection: the
    usual soft limit (1024) would cap the gateway near 500 concurrent clients, far below what
    it serves. The soft limit goes up to the hard one (as nginx's worker_rlimit_nofile or Go's
    runtime do); workers inherit it. Returns the limit in force."""
    try:
        import resource
    except ImportError:  # not POSIX
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = ceiling if hard == resource.RLIM_INFINITY else min(hard, max(ceiling, soft))
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-file limit from %d: %s", soft, e)
            return soft
        log.info("open-file limit raised", extra={"from": soft, "to": target})
        return target
    return soft


def _run_workers(settings: Settings, redis_url: str, keys: list[bytes]) -> int:
    """N processes on one port (SO_REUSEPORT); worker 0 also serves the admin listener, whose
    /metrics reports every worker (prometheus_client's multiprocess mode, gateway.metrics).

    The workers stand or fall together: when one exits (a crash, a failed start), the others
    are stopped and the exit code is the worst one, so a supervisor restarts a whole gateway
    instead of watching half of one serve without its admin listener."""
    for address, reuse in ((settings.listen, True), (settings.admin_listen, False)):
        _bind(address.host, address.port, reuse_port=reuse, listen=False).close()  # in use: exit 2 now
    prepare_multiprocess_dir(settings.data_dir)  # before any worker imports prometheus_client
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_entry, args=(settings, redis_url, keys, i), name=f"gateway-worker-{i}")
             for i in range(settings.workers)]
    for p in procs:
        p.start()

    stopping = False

    def stop_all(signum: int = signal.SIGTERM, _frame: Any = None) -> None:
        # Once: a second SIGTERM reaching a worker past its event loop would kill it mid-exit.
        nonlocal stopping
        if stopping:
            return
        stopping = True
        for p in procs:
            if p.is_alive() and p.pid:
                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    running = list(procs)
    while running:
        for sentinel in multiprocessing.connection.wait([p.sentinel for p in running]):
            done = next(p for p in running if p.sentinel == sentinel)
            done.join()
            running.remove(done)
            if done.pid:
                mark_worker_dead(done.pid)
            log.info("worker exited", extra={"worker": done.name, "exit_code": done.exitcode})
            if running and not stopping:
                if done.exitcode:
                    log.error("worker exited, stopping the others", extra={"worker": done.name,
                                                                           "exit_code": done.exitcode})
                stop_all()
    return max(_exit_status(p.exitcode or 0, stopped=stopping) for p in procs)


def _exit_status(exitcode: int, *, stopped: bool) -> int:
    """A worker's exit as the shell would report it (128 + signal number when a signal killed
    it), except that dying of the SIGTERM it was sent to stop is a clean stop: a worker still
    starting has no handler for it yet."""
    if exitcode == -signal.SIGTERM and stopped:
        return 0
    return exitcode if exitcode >= 0 else 128 - exitcode


def _worker_entry(settings: Settings, redis_url: str, keys: list[bytes], index: int) -> None:
    from gateway.logsetup import setup_logging

    setup_logging(settings)
    try:
        code = _run_worker(settings, redis_url, keys, index)
    except ConfigError as e:  # as `gateway serve` with one worker: a message and exit 2
        print(f"gateway: configuration error: {e}", file=sys.stderr)
        code = 2
    raise SystemExit(code)


def _run_worker(settings: Settings, redis_url: str, keys: list[bytes], index: int) -> int:
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        pass
    else:
        return int(uvloop.run(_serve_async(settings, redis_url, keys, index)))
    return asyncio.run(_serve_async(settings, redis_url, keys, index))


@asynccontextmanager
async def upstream_session(settings: Settings) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=1024, limit_per_host=0, keepalive_timeout=30, enable_cleanup_closed=True)
    session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                    cookie_jar=aiohttp.DummyCookieJar(),
                                    skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"))
    try:
        yield session
    finally:
        await session.close()


async def _serve_async(settings: Settings, redis_url: str, keys: list[bytes], index: int) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    metrics = GatewayMetrics(settings.max_integration_labels)
    store = await _open_store_patiently(settings, redis_url, keys, metrics, stop)
    if store is None:
        return 0 if stop.is_set() else 1
    try:
        if index == 0 and settings.seed:
            await apply_seed(store, settings.seed)
        async with upstream_session(settings) as session:
            writer = LogWriter(store, settings.log.buffer_entries, metrics=metrics)
            writer.start()
            ctx = ProxyContext(settings=settings, policy=policy_settings(settings), store=store,
                               session=session, logs=writer, metrics=metrics)
            runners = await _start_listeners(settings, ctx, store, writer, admin=index == 0)
            settle_garbage_collector()
            log.info("gateway listening", extra={"listen": str(settings.listen),
                                                 "admin_listen": str(settings.admin_listen),
                                                 "upstream": settings.upstream, "worker": index})
            await stop.wait()
            log.info("draining", extra={"worker": index})
            for runner in runners:
                await runner.cleanup()
            for task in list(ctx.background):
                task.cancel()
            await writer.stop()
    finally:
        await store.close()
    return 0


def settle_garbage_collector() -> None:
    """Once started: what exists now (modules, the app, settings, the parser pool) lives as long
    as the process, so it leaves the collector's view (gc.freeze), and the youngest generation
    is collected every GC_GEN0_THRESHOLD allocations instead of 700. With the defaults the
    collector took about 6% of the CPU under load, walking the same long-lived objects again
    and again; after this, about 0.1%. Cyclic garbage still goes, a little later."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])


async def _open_store_patiently(settings: Settings, redis_url: str, keys: list[bytes], metrics: GatewayMetrics,
                                stop: asyncio.Event) -> RedisStore | None:
    """A Redis started alongside (compose, a pod) may answer a moment after the gateway starts:
    wait for it up to STARTUP_REDIS_WAIT seconds rather than die with a traceback. A Redis that
    answers wrongly (eviction policy, key fingerprint) is a ConfigError at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_REDIS_WAIT
    delay, warned = 0.1, 0.0
    while True:
        try:
            return await open_store(settings, redis_url, secret_keys=keys, metrics=metrics)
        except StoreUnavailable as e:
            if stop.is_set() or loop.time() >= deadline:
                log.error("redis unreachable, giving up after %.0f s: %s", STARTUP_REDIS_WAIT, e)
                return None
            if loop.time() - warned >= 5:
                log.warning("redis unreachable, waiting for it: %s", e)
                warned = loop.time()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, 1.0)


async def _start_listeners(settings: Settings, ctx: ProxyContext, store: RedisStore, writer: LogWriter, *,
                           admin: bool) -> list[web.BaseRunner]:
    proxy_runner = make_proxy_runner(ctx)
    await proxy_runner.setup()
    reuse = settings.workers > 1
    sock = _bind(settings.listen.host, settings.listen.port, reuse_port=reuse)
    await web.SockSite(proxy_runner, sock, backlog=LISTEN_BACKLOG).start()
    runners: list[web.BaseRunner] = [proxy_runner]
    if admin:
        admin_app = web.Application()

        def refresh() -> None:
            ctx.metrics.log_buffer_depth.set(writer.depth)

        health_routes(admin_app, ctx, refresh)
        setup_admin(admin_app, store, settings, bootstrap_token=os.environ.get("GATEWAY_ADMIN_TOKEN"))
        # Loopback by default, but the same slowloris and idle bounds as the proxy listener.
        admin_runner = GuardedAppRunner(admin_app, header_timeout=settings.limits.header_read_timeout_seconds,
                                        json_errors=True, access_log=None, shutdown_timeout=5,
                                        keepalive_timeout=KEEPALIVE_SECONDS)
        await admin_runner.setup()
        await web.SockSite(admin_runner, _bind(settings.admin_listen.host, settings.admin_listen.port,
                                               reuse_port=False), backlog=LISTEN_BACKLOG).start()
        runners.insert(0, admin_runner)
    return runners


def make_proxy_runner(ctx: ProxyContext) -> GuardedAppRunner:
    """The proxy listener's runner, exactly as `serve` runs it (the reliability tests use it).

    Handler cancellation: a client that goes away takes its upstream request with it (as
    nginx does), instead of holding an upstream connection until the backend answers.
    """
    return GuardedAppRunner(create_proxy_app(ctx), header_timeout=ctx.settings.limits.header_read_timeout_seconds,
                            on_refused=ctx.refused_head, access_log=None, shutdown_timeout=DRAIN_SECONDS,
                            keepalive_timeout=KEEPALIVE_SECONDS, handler_cancellation=True)


def _bind(host: str, port: int, *, reuse_port: bool, listen: bool = True) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror}") from e
    if listen:
        sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock
