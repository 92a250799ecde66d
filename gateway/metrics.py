"""Prometheus metrics (SPEC section 7) with bounded label values.

The `integration` label is an internal id, never an application ID. At most
`max_integration_labels` distinct ids get their own series (`none`, `default` and `other` not
counted); the rest share `other`, and the info metric is capped by the same set.

Several workers (`--workers N`) share one `/metrics`: prometheus_client's multiprocess mode.
The parent calls `prepare_multiprocess_dir(data_dir)` before it spawns the workers, so every
worker imports prometheus_client with `PROMETHEUS_MULTIPROC_DIR` set and keeps its samples in
memory-mapped files there; `GatewayMetrics.registry` then reads all workers' files at scrape
time (gauges: in-flight requests and log buffer summed over live workers, the info metric
their maximum). With one worker nothing of this applies.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Metric
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNBOUNDED = ("none", "default", "other")
NOT_RECORDS = ("", "none", "default", "other")
INFO_METRIC = "gateway_integration_info"
INFO_REFRESH_SECONDS = 60.0  # a renamed record shows under its new name within this


class LabelCap:
    """Admits the first `limit` distinct values of at most `max_length` characters; later and
    longer ones become `other` (an operation name comes from an unauthenticated envelope: 200
    names of 40 KB each would be 8 MB of /metrics)."""

    def __init__(self, limit: int, max_length: int = 128) -> None:
        self.limit = limit
        self.max_length = max_length
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in UNBOUNDED or value in self._seen:
            return value
        if len(value) > self.max_length:
            return "other"
        with self._lock:
            if len(self._seen) < self.limit:
                self._seen.add(value)
                return value
        return "other"

    def __len__(self) -> int:
        return len(self._seen)


def prepare_multiprocess_dir(data_dir: Path) -> Path:
    """A fresh, empty `data_dir/metrics` named in the environment the workers inherit.

    Emptied at every start: files of a previous run would add its counts to this one's."""
    path = (data_dir / "metrics").resolve()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, mode=0o700)
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def multiprocess_dir() -> str | None:
    """The multiprocess directory when this process records into one, else None."""
    path = os.environ.get(MULTIPROC_ENV)
    return path if path and os.path.isdir(path) else None


def mark_worker_dead(pid: int) -> None:
    """Drop an exited worker's live gauges (its counters keep counting in the totals)."""
    path = multiprocess_dir()
    if path is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def _exposition_registry(own: CollectorRegistry) -> CollectorRegistry:
    path = multiprocess_dir()
    if path is None:
        return own
    from prometheus_client import multiprocess, values

    if not getattr(values.ValueClass, "_multiprocess", False):
        # prometheus_client was imported before the directory was named: record into it anyway.
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    registry.register(WithoutRemovedInfo(multiprocess.MultiProcessCollector(None, path=path)))  # type: ignore[no-untyped-call]
    return registry


class WithoutRemovedInfo(Collector):
    """A collector's metrics minus the info series set to 0: in multiprocess mode a series a
    rename removed lingers in the worker's file at 0, and SPEC 7's info metric is 1."""

    def __init__(self, inner: Collector) -> None:
        self._inner = inner

    def collect(self) -> Iterable[Metric]:
        for metric in self._inner.collect():
            if metric.name == INFO_METRIC:
                metric.samples = [sample for sample in metric.samples if sample.value != 0]
            yield metric


M = TypeVar("M", Counter, Histogram)


def _child(children: dict[tuple[str, ...], M], metric: M, labels: tuple[str, ...]) -> M:
    """`metric.labels(*labels)`, kept: prometheus_client validates and locks on every call."""
    child = children.get(labels)
    if child is None:
        child = children[labels] = metric.labels(*labels)
    return child


class GatewayMetrics:
    """All metric families of one process.

    `registry` is what `/metrics` serves: the families themselves, or, in multiprocess mode
    (no `registry` given and `PROMETHEUS_MULTIPROC_DIR` set), a collector over every worker.
    Tests pass a fresh `CollectorRegistry()`.
    """

    def __init__(self, max_integration_labels: int = 500, registry: CollectorRegistry | None = None) -> None:
        own = registry if registry is not None else CollectorRegistry()
        self.registry = registry if registry is not None else _exposition_registry(own)
        self.integration_label = LabelCap(max_integration_labels)
        self._operations = LabelCap(200)
        self._versions = LabelCap(100)  # a namespace may name any YYYY_N, supported or not
        r = own
        self.requests = Counter(
            "gateway_requests_total", "Requests decided by the gateway.",
            ["integration", "operation", "outcome", "reason", "endpoint_version", "auth_method"], registry=r)
        self.duration = Histogram(
            "gateway_request_duration_seconds", "Time from request start to the last response byte.",
            ["integration", "outcome"], buckets=_LATENCY_BUCKETS, registry=r)
        self.inspection = Histogram(
            "gateway_inspection_duration_seconds", "Time from request start to the decision.",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.upstream_duration = Histogram(
            "gateway_upstream_duration_seconds", "Time from forwarding to the upstream's response headers.",
            ["integration"], buckets=_LATENCY_BUCKETS, registry=r)
        self.inflight = Gauge("gateway_inflight_requests", "Requests in flight on the proxy listener.",
                              registry=r, multiprocess_mode="livesum")
        self.store_errors = Counter(
            "gateway_store_errors_total", "Redis operations that failed.", ["operation"], registry=r)
        self.upstream_errors = Counter(
            "gateway_upstream_errors_total", "Upstream failures.", ["kind"], registry=r)
        self.integration_info = Gauge(
            INFO_METRIC, "Integration records seen (value 1).",
            ["integration", "name", "owner_account"], registry=r, multiprocess_mode="max")
        self.log_buffer_depth = Gauge(
            "gateway_log_buffer_entries", "Log entries waiting to be written.", registry=r,
            multiprocess_mode="livesum")
        self.log_dropped = Counter(
            "gateway_log_entries_dropped_total", "Log entries dropped because the buffer was full.", registry=r)
        self.cache_lookups = Counter(
            "gateway_cache_lookups_total", "Record cache lookups.", ["result"], registry=r)
        self.propagation_lag = Histogram(
            "gateway_invalidation_lag_seconds", "Delay between a record change and this replica dropping it.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0), registry=r)
        self.sessions_opened = Counter("gateway_sessions_opened_total", "Sessions opened.", registry=r)
        self._cache_results = {result: self.cache_lookups.labels(result) for result in ("hit", "miss", "stale")}
        # Labelled children by label values: prometheus_client's `labels()` validates and locks
        # on every call (2.5 us with six labels, per request); the label sets are capped above.
        self._requests_by: dict[tuple[str, ...], Counter] = {}
        self._duration_by: dict[tuple[str, ...], Histogram] = {}
        self._upstream_by: dict[tuple[str, ...], Histogram] = {}
        self._info: dict[str, tuple[str, str]] = {}  # id -> (name, owner_account) exported
        self._info_checked: dict[str, float] = {}  # id -> monotonic time of the last look-up

    def record_request(
        self, *, integration: str, operation: str, outcome: str, reason: str, endpoint_version: str,
        auth_method: str, duration: float,
    ) -> None:
        label = self.integration_label(integration)
        labels = (label, self._operations(operation), outcome, reason, self._versions(endpoint_version), auth_method)
        _child(self._requests_by, self.requests, labels).inc()
        _child(self._duration_by, self.duration, (label, outcome)).observe(duration)

    def count_cache_lookup(self, result: str) -> None:
        """`result`: hit, miss or stale."""
        self._cache_results[result].inc()

    def observe_upstream(self, integration: str, seconds: float) -> None:
        _child(self._upstream_by, self.upstream_duration, (self.integration_label(integration),)).observe(seconds)

    def info_due(self, integration_id: str, now: float | None = None) -> bool:
        """Whether the record's name should be looked up (first sight, or a while since): a
        True answer counts as the look-up, so concurrent requests do not all ask."""
        if integration_id in NOT_RECORDS or self.integration_label(integration_id) == "other":
            return False
        moment = time.monotonic() if now is None else now
        last = self._info_checked.get(integration_id)
        if last is not None and moment - last < INFO_REFRESH_SECONDS:
            return False
        self._info_checked[integration_id] = moment
        return True

    def note_integration(self, integration_id: str, name: str, owner_account: str) -> None:
        """`gateway_integration_info{integration, name, owner_account} 1`; a rename replaces
        the series (set to 0 first: in multiprocess mode a removed series lingers in the file)."""
        label = self.integration_label(integration_id)
        if label in NOT_RECORDS:
            return
        current = (name, owner_account)
        previous = self._info.get(label)
        if previous == current:
            return
        if previous is not None:
            self.integration_info.labels(label, *previous).set(0)
            self.integration_info.remove(label, *previous)
        self._info[label] = current
        self.integration_info.labels(label, name, owner_account).set(1)
