"""Upstream faults (refused, reset, slow, garbage, cut mid-body): each gets its fault (502 / 504)
or, once the status line was relayed, a cut connection; each gets a log entry; and hundreds of
them leave no file descriptor and no task behind."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.factories import get_data_center_urls_body, make_envelope
from tests.reliability.rig import SOAP_HEADERS, Gateway, StartGateway, open_fds, settle_tasks
from tests.reliability.upstreams import AFTER_HEADERS, BEFORE_HEADERS, MODES, FaultyUpstream

ENVELOPE = make_envelope(get_data_center_urls_body("2024_2", "1234567"))
RESPONSE_TIMEOUT = 0.25


@pytest.fixture
async def faulty() -> AsyncIterator[dict[str, FaultyUpstream]]:
    servers = {"refused": await FaultyUpstream("refused").start(),
               "any": await FaultyUpstream("eof_before_answer").start()}
    yield servers
    for server in servers.values():
        await server.close()


async def fault_gateways(start_gateway: StartGateway, faulty: dict[str, FaultyUpstream]) -> dict[str, Gateway]:
    limits = {"upstream_response_timeout_seconds": RESPONSE_TIMEOUT, "upstream_connect_timeout_seconds": 1}
    return {"refused": await start_gateway(upstream=faulty["refused"].url, limits=limits),
            "any": await start_gateway(upstream=faulty["any"].url, limits=limits)}


async def call(gw: Gateway, mode: str, request_id: str,
               http: aiohttp.ClientSession | None = None) -> tuple[int, bool, bytes]:
    """(status, whether the answer was cut, body)."""
    url = gw.url(f"/services/NetSuitePort_2024_2?mode={mode}")
    async with (http or gw.http).post(url, data=ENVELOPE, headers=SOAP_HEADERS | {"X-Request-Id": request_id},
                            timeout=aiohttp.ClientTimeout(total=10)) as r:
        try:
            return r.status, False, await r.read()
        except aiohttp.ClientPayloadError:
            return r.status, True, b""


def no_handler_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.ERROR and (r.name.startswith("aiohttp") or r.name == "gateway.web")]


@pytest.mark.parametrize("mode", MODES)
async def test_each_upstream_fault_gets_its_answer_and_a_log_entry(
        mode: str, start_gateway: StartGateway, faulty: dict[str, FaultyUpstream],
        caplog: pytest.LogCaptureFixture) -> None:
    gws = await fault_gateways(start_gateway, faulty)
    gw = gws["refused" if mode == "refused" else "any"]
    rid = f"upstream-{mode}-{secrets.token_hex(4)}"
    status, cut, body = await call(gw, mode, rid)
    entry = await gw.entry(rid)
    assert entry["outcome"] == "error"
    errors = {s.labels["kind"]: s.value for m in gw.metrics.upstream_errors.collect() for s in m.samples
              if s.name.endswith("_total")}
    assert errors == {entry["reason"]: 1.0}  # every upstream failure counted once, a cut answer too
    if mode in BEFORE_HEADERS:
        assert status == BEFORE_HEADERS[mode] and not cut
        assert b"<platformFaults:code>UNEXPECTED_ERROR</platformFaults:code>" in body
        assert entry["reason"] == ("upstream_timeout" if status == 504 else "upstream_unavailable")
        assert entry["http_status"] == status
    else:
        assert mode in AFTER_HEADERS
        assert status == 200 and cut  # the status line was out: only a cut connection is left
        assert entry["reason"] == "upstream_unavailable" and entry["upstream_status"] == 200
    assert no_handler_errors(caplog) == []


async def test_hundreds_of_upstream_failures_leak_no_fd_and_no_task(
        start_gateway: StartGateway, faulty: dict[str, FaultyUpstream], caplog: pytest.LogCaptureFixture) -> None:
    gws = await fault_gateways(start_gateway, faulty)
    modes = list(MODES)

    async def round_of(n: int) -> dict[str, int]:
        """`n` failures, 25 at a time, from a client of its own (closed at the end, so the
        keep-alive connections it held are no part of what is counted)."""
        seen: dict[str, int] = {}
        sem = asyncio.Semaphore(25)

        async def one(i: int) -> None:
            mode = modes[i % len(modes)]
            async with sem:
                status, cut, _ = await call(gws["refused" if mode == "refused" else "any"], mode,
                                            f"leak-{secrets.token_hex(4)}-{i}", http)
            key = "cut" if cut else str(status)
            seen[key] = seen.get(key, 0) + 1

        async with aiohttp.ClientSession() as http:
            await asyncio.gather(*(one(i) for i in range(n)))
        return seen

    await round_of(len(modes) * 2)  # first use: lazily created pools, caches, the log writer's batch
    await asyncio.sleep(0.3)
    tasks_before, fds_before = await settle_tasks(0, timeout=1), open_fds()
    seen = await round_of(500)
    assert seen.get("200", 0) == 0 and sum(seen.values()) == 500
    assert seen["cut"] >= 150 and seen["502"] >= 250 and seen["504"] >= 50
    tasks_after = await settle_tasks(tasks_before, slack=2)
    fds_after = open_fds()
    for _ in range(40):  # closed sockets leave as their transports finish closing
        if fds_after <= fds_before + 4:
            break
        await asyncio.sleep(0.05)
        fds_after = open_fds()
    print(f"500 upstream failures {seen}: fds {fds_before} -> {fds_after}, tasks {tasks_before} -> {tasks_after}")
    assert fds_after <= fds_before + 4, (fds_before, fds_after)
    assert tasks_after <= tasks_before + 2, (tasks_before, tasks_after)
    assert no_handler_errors(caplog) == []
    for gw in gws.values():
        assert gw.writer.dropped_total == 0
