"""Metrics (SPEC section 7): families, labels and their bounds on a fresh `CollectorRegistry`,
then the request path's samples through the in-process rig (real Redis, real upstream)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from gateway.config import load_settings
from gateway.metrics import INFO_REFRESH_SECONDS, GatewayMetrics
from gateway.store.redis import open_store
from tests.store.helpers import KEY_A
from tests.web.conftest import MakeRig, Rig, make_rig  # noqa: F401  (the fixture)

ID = "0123456789abcdef0123456789abcdef"


def fresh(limit: int = 500) -> tuple[GatewayMetrics, CollectorRegistry]:
    registry = CollectorRegistry()
    return GatewayMetrics(limit, registry=registry), registry


def record(m: GatewayMetrics, integration: str, **kw: str) -> None:
    labels = {"operation": "get", "outcome": "forwarded", "reason": "none", "endpoint_version": "2024_2",
              "auth_method": "token_based"} | kw
    m.record_request(integration=integration, duration=0.01, **labels)


def requests(r: CollectorRegistry, integration: str, **kw: str) -> float | None:
    labels = {"integration": integration, "operation": "get", "outcome": "forwarded", "reason": "none",
              "endpoint_version": "2024_2", "auth_method": "token_based"} | kw
    return r.get_sample_value("gateway_requests_total", labels)


async def eventually(check: Callable[[], object], timeout: float = 3.0) -> None:
    """Samples are recorded as the handler returns, which may be just after the client read."""
    for _ in range(int(timeout / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    assert check()


# --------------------------------------------------------------------------- families and labels


def test_request_counter_and_duration_histogram() -> None:
    m, r = fresh()
    record(m, ID)
    record(m, ID)
    record(m, ID, outcome="rejected", reason="integration_blocked", auth_method="user_credentials")
    assert requests(r, ID) == 2
    assert requests(r, ID, outcome="rejected", reason="integration_blocked", auth_method="user_credentials") == 1
    assert r.get_sample_value("gateway_request_duration_seconds_count",
                              {"integration": ID, "outcome": "forwarded"}) == 2
    assert r.get_sample_value("gateway_request_duration_seconds_bucket",
                              {"integration": ID, "outcome": "rejected", "le": "0.025"}) == 1
    m.observe_upstream(ID, 0.2)
    assert r.get_sample_value("gateway_upstream_duration_seconds_sum", {"integration": ID}) == 0.2


def test_integration_labels_are_capped_none_and_default_not_counted() -> None:
    m, r = fresh(limit=3)
    ids = [f"{i:032x}" for i in range(6)]
    for iid in ["none", "default", *ids, "none"]:
        record(m, iid)
        m.observe_upstream(iid, 0.001)
        m.note_integration(iid, f"name {iid[-1]}", "1234567")
    for iid in ids[:3]:
        assert requests(r, iid) == 1
        assert r.get_sample_value("gateway_integration_info",
                                  {"integration": iid, "name": f"name {iid[-1]}", "owner_account": "1234567"}) == 1
    assert requests(r, "other") == 3
    assert requests(r, "none") == 2 and requests(r, "default") == 1
    assert r.get_sample_value("gateway_upstream_duration_seconds_count", {"integration": "other"}) == 3
    for iid in ids[3:]:
        assert requests(r, iid) is None
    # The info metric is capped by the same set: nothing for `other`, `none` or `default`.
    info = [s for f in r.collect() if f.name == "gateway_integration_info" for s in f.samples]
    assert sorted(s.labels["integration"] for s in info) == ids[:3]
    assert not m.info_due(ids[4]) and not m.info_due("none") and not m.info_due("default")


def test_other_label_values_are_bounded_too() -> None:
    m, r = fresh()
    for year in range(2000, 2300):  # any YYYY_N a namespace may name
        record(m, ID, endpoint_version=f"{year}_1", operation=f"op{year}")
    families = {f.name: f for f in r.collect()}
    samples = [s for s in families["gateway_requests"].samples if s.name == "gateway_requests_total"]
    assert len({s.labels["endpoint_version"] for s in samples}) == 101  # 100 and `other`
    assert len({s.labels["operation"] for s in samples}) == 201
    assert requests(r, ID, endpoint_version="other", operation="other") == 300 - 200


def test_long_label_values_are_other() -> None:
    # An operation name comes from an unauthenticated envelope: 40 KB of it made /metrics 80 KB larger.
    m, r = fresh()
    record(m, ID, operation="A" * 40_000)
    record(m, ID, operation="getDataCenterUrls")
    assert requests(r, ID, operation="other") == 1 and requests(r, ID, operation="getDataCenterUrls") == 1
    assert len(generate_latest(r)) < 20_000


def test_info_metric_follows_a_rename_and_is_looked_up_once_a_while() -> None:
    m, r = fresh()
    assert m.info_due(ID, now=100.0)
    assert not m.info_due(ID, now=100.0 + INFO_REFRESH_SECONDS - 1)  # the look-up is under way
    m.note_integration(ID, "orders sync", "1234567")
    m.note_integration(ID, "orders sync", "1234567")
    assert m.info_due(ID, now=100.0 + INFO_REFRESH_SECONDS)
    m.note_integration(ID, "orders sync v2", "1234567")
    assert r.get_sample_value("gateway_integration_info",
                              {"integration": ID, "name": "orders sync v2", "owner_account": "1234567"}) == 1
    assert r.get_sample_value("gateway_integration_info",
                              {"integration": ID, "name": "orders sync", "owner_account": "1234567"}) is None


def test_multiprocess_mode_sums_processes(tmp_path: Path) -> None:
    """Two processes record into one directory; a third reads both, the way worker 0's
    /metrics does (the env var must be set before prometheus_client is imported)."""
    script = textwrap.dedent("""
        import sys
        from gateway.metrics import GatewayMetrics
        m = GatewayMetrics(2)
        for iid in ("a" * 32, "b" * 32, "c" * 32):
            m.record_request(integration=iid, operation="get", outcome="forwarded", reason="none",
                             endpoint_version="2024_2", auth_method="token_based", duration=0.01)
        m.note_integration("a" * 32, "alpha", "1234567")
        m.inflight.inc()
        if sys.argv[1] == "read":
            r = m.registry
            print(r.get_sample_value("gateway_requests_total", {"integration": "a" * 32, "operation": "get",
                  "outcome": "forwarded", "reason": "none", "endpoint_version": "2024_2",
                  "auth_method": "token_based"}),
                  r.get_sample_value("gateway_inflight_requests"),
                  r.get_sample_value("gateway_integration_info",
                                     {"integration": "a" * 32, "name": "alpha", "owner_account": "1234567"}),
                  r.get_sample_value("gateway_request_duration_seconds_count",
                                     {"integration": "other", "outcome": "forwarded"}))
    """)
    env = os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for role in ("write", "write"):
        subprocess.run([sys.executable, "-c", script, role], env=env, check=True, timeout=60)
    out = subprocess.run([sys.executable, "-c", script, "read"], env=env, check=True, timeout=60,
                         capture_output=True, text=True).stdout.split()
    # inflight is `livesum` over files of processes not marked dead: the two writers never were.
    assert out == ["3.0", "3.0", "1.0", "3.0"]


# --------------------------------------------------------------------------- the request path


Wire = Callable[[Rig], Awaitable[Rig]]


@pytest.fixture
async def wire(redis_url: str) -> AsyncIterator[Wire]:
    """Puts a rig's proxy on a store built the way `serve` builds it, with the metrics, so the
    cache's lookups and invalidation lag are counted too."""
    stores = []

    async def rewire(rig: Rig) -> Rig:
        store = await open_store(rig.ctx.settings, redis_url, secret_keys=[KEY_A], metrics=rig.ctx.metrics)
        stores.append(store)
        rig.ctx.store = store
        return rig

    yield rewire
    for store in stores:
        await store.close()


async def test_request_path_samples(make_rig: MakeRig, wire: Wire) -> None:  # noqa: F811
    rig = await wire(await make_rig())
    r = rig.ctx.metrics.registry
    t = await rig.tenant()
    iid = t.integration["id"]
    assert (await rig.soap("2024_2", t.tba())).status == 200
    assert (await rig.soap("2024_2", t.tba())).status == 200
    assert (await rig.soap("2020_2", t.passport("2020_2"))).status == 500
    assert (await rig.soap("2024_2", b"<not-xml", headers={"Content-Type": "application/json"})).status == 500
    await eventually(lambda: r.get_sample_value("gateway_requests_total", {
        "integration": "none", "operation": "none", "outcome": "rejected", "reason": "malformed_request",
        "endpoint_version": "2024_2", "auth_method": "none"}) == 1)
    assert requests(r, iid) == 2
    assert requests(r, iid, outcome="rejected", reason="passport_unsupported", endpoint_version="2020_2",
                    auth_method="user_credentials") == 1
    assert r.get_sample_value("gateway_request_duration_seconds_count",
                              {"integration": iid, "outcome": "forwarded"}) == 2
    assert r.get_sample_value("gateway_upstream_duration_seconds_count", {"integration": iid}) == 2
    assert r.get_sample_value("gateway_inspection_duration_seconds_count") == 3  # decided ones only
    assert r.get_sample_value("gateway_inflight_requests") == 0
    # The record's name and owner, found in the background from the record cache.
    await eventually(lambda: r.get_sample_value("gateway_integration_info", {
        "integration": iid, "name": t.integration["name"], "owner_account": t.account}) == 1)
    assert (r.get_sample_value("gateway_cache_lookups_total", {"result": "hit"}) or 0) > 0
    assert (r.get_sample_value("gateway_cache_lookups_total", {"result": "miss"}) or 0) > 0


async def test_info_metric_costs_no_redis_round_trip_per_request(make_rig: MakeRig) -> None:  # noqa: F811
    rig = await make_rig()
    t = await rig.tenant()
    calls: list[str] = []
    real = rig.store.get_integration

    async def counting(integration_id: str) -> object:
        calls.append(integration_id)
        return await real(integration_id)

    rig.store.get_integration = counting  # type: ignore[method-assign]
    for _ in range(20):
        assert (await rig.soap("2019_2", t.passport("2019_2"))).status == 200
    await eventually(lambda: rig.ctx.metrics.registry.get_sample_value("gateway_integration_info", {
        "integration": t.integration["id"], "name": t.integration["name"], "owner_account": t.account}))
    assert calls == [t.integration["id"]]


async def test_upstream_errors_are_counted(make_rig: MakeRig) -> None:  # noqa: F811
    rig = await make_rig(upstream="http://127.0.0.1:9")  # discard port: refused
    r = rig.ctx.metrics.registry
    t = await rig.tenant()
    assert (await rig.soap("2019_2", t.passport("2019_2"))).status == 502
    await eventually(lambda: requests(r, t.integration["id"], outcome="error", reason="upstream_unavailable",
                                      endpoint_version="2019_2", auth_method="user_credentials") == 1)
    assert r.get_sample_value("gateway_upstream_errors_total", {"kind": "upstream_unavailable"}) == 1


async def test_upstream_timeout_is_counted(make_rig: MakeRig) -> None:  # noqa: F811
    async def slow(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(2)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_post("/{tail:.*}", slow)
    limits = replace(load_settings(environ={}).limits, upstream_response_timeout_seconds=0.2)
    rig = await make_rig(app, limits=limits)
    r = rig.ctx.metrics.registry
    t = await rig.tenant()
    assert (await rig.soap("2019_2", t.passport("2019_2"))).status == 504
    await eventually(lambda: r.get_sample_value("gateway_upstream_errors_total", {"kind": "upstream_timeout"}) == 1)


async def test_invalidation_lag_is_observed(make_rig: MakeRig, wire: Wire) -> None:  # noqa: F811
    rig = await wire(await make_rig())
    r = rig.ctx.metrics.registry
    before = r.get_sample_value("gateway_invalidation_lag_seconds_count") or 0
    t = await rig.tenant()  # creating records publishes invalidations
    await rig.store.registry.update_integration(t.account, t.integration["id"], {"note": "x"}, "test")
    await eventually(lambda: (r.get_sample_value("gateway_invalidation_lag_seconds_count") or 0) > before)
    assert (r.get_sample_value("gateway_invalidation_lag_seconds_sum") or 0) < 5


def test_an_info_series_a_rename_set_to_zero_is_not_exported() -> None:
    """With several workers a removed series lingers in the worker's file at 0 (found by the
    black-box metrics audit); the exposition leaves it out, SPEC 7's info metric being 1."""
    from prometheus_client import CollectorRegistry, Gauge

    from gateway.metrics import INFO_METRIC, WithoutRemovedInfo

    inner = CollectorRegistry()
    info = Gauge(INFO_METRIC, "info", ["integration", "name", "owner_account"], registry=inner)
    other = Gauge("gateway_inflight_requests", "in flight", registry=inner)
    info.labels("i1", "old name", "A").set(0)
    info.labels("i1", "new name", "A").set(1)
    other.set(0)
    exported = {m.name: [(s.labels.get("name"), s.value) for s in m.samples]
                for m in WithoutRemovedInfo(inner).collect()}
    assert exported[INFO_METRIC] == [("new name", 1.0)]
    assert exported["gateway_inflight_requests"] == [(None, 0.0)]  # other zeros stay
