"""`gateway serve --workers N`: one /metrics for all workers (prometheus_client multiprocess
mode), checked against the real command the way Prometheus scrapes it."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from tests.factories import application_info_xml, get_body, make_envelope, passport_xml
from tests.store.helpers import new_account
from tests.test_serve import Served, upstream  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow
TOKEN = "test-admin-token"


def admin(port: int, method: str, path: str, body: object = None) -> dict[str, object]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/admin/v1{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        answer: dict[str, object] = json.loads(r.read())
        return answer


def post_soap(port: int, payload: bytes, version: str = "2019_2") -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/services/NetSuitePort_{version}", data=payload,
                                 headers={"Content-Type": "text/xml; charset=utf-8", "Connection": "close"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as e:
        e.read()
        return int(e.code)


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for lbls, v in samples.get(name, []) if all(lbls.get(k) == x for k, x in labels.items()))


async def test_metrics_of_two_workers_add_up(tmp_path: Path, upstream: TestServer) -> None:  # noqa: F811
    gw = Served(tmp_path, str(upstream.make_url("")).rstrip("/"), "--workers", "2")
    loop = asyncio.get_running_loop()
    try:
        account = new_account()
        await loop.run_in_executor(None, admin, gw.admin_port, "PUT", f"/accounts/{account}",
                                   {"require_approval": False})
        integ = await loop.run_in_executor(None, admin, gw.admin_port, "POST", f"/accounts/{account}/integrations",
                                           {"name": "orders sync", "auth": {"user_credentials": True}})
        forwarded = make_envelope(get_body("2019_2"), [passport_xml("2019_2", "jane@example.com", "pw", account),
                                                       application_info_xml("2019_2", str(integ["application_id"]))])
        rejected = make_envelope(get_body("2024_2"))  # no credentials at all
        n_ok, n_rejected = 30, 20
        # A connection each (Connection: close), so SO_REUSEPORT spreads them over both workers.
        statuses = await asyncio.gather(
            *(loop.run_in_executor(None, post_soap, gw.proxy_port, forwarded) for _ in range(n_ok)),
            *(loop.run_in_executor(None, post_soap, gw.proxy_port, rejected, "2024_2") for _ in range(n_rejected)))
        assert statuses == [200] * n_ok + [500] * n_rejected

        metrics_dir = gw.data_dir / "metrics"
        pids = {p.stem.rsplit("_", 1)[1] for p in metrics_dir.glob("counter_*.db")}
        assert len(pids) == 2, sorted(metrics_dir.iterdir())

        samples = await loop.run_in_executor(None, scrape, gw.admin_port)
        assert total(samples, "gateway_requests_total") == n_ok + n_rejected
        assert total(samples, "gateway_requests_total", integration=str(integ["id"]),
                     outcome="forwarded", endpoint_version="2019_2") == n_ok
        assert total(samples, "gateway_requests_total", outcome="rejected",
                     reason="credentials_required") == n_rejected
        assert total(samples, "gateway_request_duration_seconds_count") == n_ok + n_rejected
        assert total(samples, "gateway_upstream_duration_seconds_count") == n_ok
        assert total(samples, "gateway_inflight_requests") == 0  # livesum: one series, not one per worker
        assert len(samples["gateway_inflight_requests"]) == 1
        for _ in range(50):  # the name is looked up in the background after the first request
            samples = await loop.run_in_executor(None, scrape, gw.admin_port)
            if samples.get("gateway_integration_info"):
                break
            await asyncio.sleep(0.1)
        assert samples["gateway_integration_info"] == [
            ({"integration": str(integ["id"]), "name": "orders sync", "owner_account": account}, 1.0)]
    finally:
        assert gw.stop() == 0


async def test_a_restart_starts_from_zero(tmp_path: Path, upstream: TestServer) -> None:  # noqa: F811
    url = str(upstream.make_url("")).rstrip("/")
    loop = asyncio.get_running_loop()
    rejected = make_envelope(get_body("2024_2"))
    first = Served(tmp_path, url, "--workers", "2")
    try:
        for _ in range(5):
            assert await loop.run_in_executor(None, post_soap, first.proxy_port, rejected, "2024_2") == 500
    finally:
        assert first.stop() == 0
    second = Served(tmp_path, url, "--workers", "2")  # same data_dir: the old files are cleared
    try:
        assert await loop.run_in_executor(None, post_soap, second.proxy_port, rejected, "2024_2") == 500
        samples = await loop.run_in_executor(None, scrape, second.admin_port)
        assert total(samples, "gateway_requests_total") == 1
    finally:
        assert second.stop() == 0
