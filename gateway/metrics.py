"""Prometheus metrics (SPEC section 7) with bounded label values.

The `integration` label is an internal id, never an application ID. At most
`max_integration_labels` distinct ids get their own series; the rest share `other`.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNBOUNDED = ("none", "default", "other")


class LabelCap:
    """Admits the first `limit` distinct values; later ones become `other`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in UNBOUNDED or value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self.limit:
                self._seen.add(value)
                return value
        return "other"


class GatewayMetrics:
    def __init__(self, max_integration_labels: int = 500, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.integration_label = LabelCap(max_integration_labels)
        self._operations = LabelCap(200)
        r = self.registry
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
        self.inflight = Gauge("gateway_inflight_requests", "Requests in flight on the proxy listener.", registry=r)
        self.store_errors = Counter(
            "gateway_store_errors_total", "Redis operations that failed.", ["operation"], registry=r)
        self.upstream_errors = Counter(
            "gateway_upstream_errors_total", "Upstream failures.", ["kind"], registry=r)
        self.integration_info = Gauge(
            "gateway_integration_info", "Integration records seen (value 1).",
            ["integration", "name", "owner_account"], registry=r)
        self.log_buffer_depth = Gauge(
            "gateway_log_buffer_entries", "Log entries waiting to be written.", registry=r)
        self.log_dropped = Counter(
            "gateway_log_entries_dropped_total", "Log entries dropped because the buffer was full.", registry=r)
        self.cache_lookups = Counter(
            "gateway_cache_lookups_total", "Record cache lookups.", ["result"], registry=r)
        self.propagation_lag = Histogram(
            "gateway_invalidation_lag_seconds", "Delay between a record change and this replica dropping it.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0), registry=r)
        self.sessions_opened = Counter("gateway_sessions_opened_total", "Sessions opened.", registry=r)
        self._info_seen: set[str] = set()

    def record_request(
        self, *, integration: str, operation: str, outcome: str, reason: str, endpoint_version: str,
        auth_method: str, duration: float,
    ) -> None:
        label = self.integration_label(integration)
        self.requests.labels(label, self._operations(operation), outcome, reason, endpoint_version,
                             auth_method).inc()
        self.duration.labels(label, outcome).observe(duration)

    def note_integration(self, integration_id: str, name: str, owner_account: str) -> None:
        if integration_id in self._info_seen:
            return
        label = self.integration_label(integration_id)
        if label == "other":
            return
        self._info_seen.add(integration_id)
        self.integration_info.labels(label, name, owner_account).set(1)
