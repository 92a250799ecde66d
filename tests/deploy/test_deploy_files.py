"""The deployment files agree with the gateway they deploy.

- `promtool check rules` / `promtool test rules` accept deploy/alerts.yml and its alerts fire;
- every metric named in an alert or dashboard expression is one the gateway exports, and every
  dashboard expression parses as PromQL;
- `promtool check metrics` accepts what `GatewayMetrics` exposes.

promtool is required, never skipped: when it is missing the tests install it, as the rest of the
suite starts its Redis (Debian package `prometheus`; `apt-get update && apt-get install -y prometheus`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import GatewayMetrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "gateway-dashboard.json"
INSTALL_HINT = "apt-get update && apt-get install -y prometheus"

# Series Prometheus makes itself, not the gateway.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
# Grafana's variables, replaced by something PromQL parses.
GRAFANA_VARS = {
    "$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h",
    "$integration": ".*", "${integration}": ".*",
}
PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
                "group_right", "offset", "bool", "inf", "nan", "atan2"}


def _find_promtool() -> str | None:
    return shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)


@pytest.fixture(scope="module")
def promtool() -> str:
    path = _find_promtool()
    if path is None and shutil.which("apt-get"):  # a fresh machine: the README's one test command suffices
        env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        for argv in (["apt-get", "update", "-qq"],
                     ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"]):
            subprocess.run(argv, capture_output=True, timeout=600, check=False, env=env)
        path = _find_promtool()
    if path is None:
        pytest.fail(f"promtool not found and not installable here: install it with `{INSTALL_HINT}` "
                    "(Debian package 'prometheus')")
    return path


def run_promtool(promtool: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], input=stdin, capture_output=True, text=True, timeout=60,
                          check=False)


# --------------------------------------------------------------------------- exported metrics


def exercised_metrics() -> GatewayMetrics:
    """Every family of the gateway with at least one sample, as a busy gateway exposes them."""
    metrics = GatewayMetrics(registry=CollectorRegistry())
    integration = "0123456789abcdef0123456789abcdef"
    metrics.record_request(integration=integration, operation="get", outcome="forwarded", reason="none",
                           endpoint_version="2024_2", auth_method="token_based", duration=0.004)
    metrics.record_request(integration=integration, operation="get", outcome="rejected",
                           reason="integration_blocked", endpoint_version="2019_2",
                           auth_method="user_credentials", duration=0.001)
    metrics.record_request(integration="none", operation="get", outcome="error", reason="upstream_timeout",
                           endpoint_version="2024_2", auth_method="token_based", duration=0.9)
    metrics.note_integration(integration, "Bench app", "1234567")
    metrics.inspection.observe(0.0004)
    metrics.upstream_duration.labels(integration).observe(0.003)
    metrics.inflight.inc()
    metrics.store_errors.labels("get").inc()
    metrics.upstream_errors.labels("timeout").inc()
    metrics.log_buffer_depth.set(3)
    metrics.log_dropped.inc()
    metrics.cache_lookups.labels("hit").inc()
    metrics.cache_lookups.labels("miss").inc()
    metrics.propagation_lag.observe(0.002)
    metrics.sessions_opened.inc()
    return metrics


@pytest.fixture(scope="module")
def exposition() -> str:
    return generate_latest(exercised_metrics().registry).decode()


@pytest.fixture(scope="module")
def exported_series(exposition: str) -> set[str]:
    families = text_string_to_metric_families(exposition)
    names = {sample.name for family in families for sample in family.samples}
    assert names, "GatewayMetrics exported nothing"
    return names


# --------------------------------------------------------------------------- PromQL expressions


def alert_exprs() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def dashboard_exprs() -> list[str]:
    board = dashboard()
    exprs = [t["expr"] for p in walk_panels(board["panels"]) for t in p.get("targets", []) if "expr" in t]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            exprs.append(re.sub(r"^label_values\((\w+),.*\)$", r"\1", query))
    return exprs


def substitute_grafana(expr: str) -> str:
    for var, value in sorted(GRAFANA_VARS.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def metric_names(expr: str) -> set[str]:
    """Metric names of a PromQL expression: identifiers that are not functions, keywords or labels."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', substitute_grafana(expr))
    text = re.sub(r"\{[^}]*\}", " ", text)           # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)           # range and subquery durations
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+\w+", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)\s*(\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def test_metric_name_extraction() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, integration) (rate(gateway_x_bucket{a="b c", '
            'integration=~"$integration"}[$__rate_interval] offset 5m))) > 2 and on(instance) up == 0')
    assert metric_names(expr) == {"gateway_x_bucket", "up"}


def test_alerts_pass_promtool_check_rules(promtool: str) -> None:
    result = run_promtool(promtool, "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_prometheus_config_passes_promtool(promtool: str) -> None:
    result = run_promtool(promtool, "check", "config", str(DEPLOY / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["gateway:8081"]


def test_exported_metrics_pass_promtool_check_metrics(promtool: str, exposition: str) -> None:
    result = run_promtool(promtool, "check", "metrics", stdin=exposition)
    assert result.returncode == 0, f"promtool check metrics:\n{result.stdout}{result.stderr}\n{exposition}"


@pytest.mark.parametrize("expr", alert_exprs())
def test_alert_metrics_are_exported(expr: str, exported_series: set[str]) -> None:
    names = metric_names(expr)
    assert names, expr
    assert names - SYNTHETIC <= exported_series, (names - SYNTHETIC - exported_series, expr)


@pytest.mark.parametrize("expr", dashboard_exprs())
def test_dashboard_metrics_are_exported(expr: str, exported_series: set[str]) -> None:
    names = metric_names(expr)
    assert names, expr
    assert names - SYNTHETIC <= exported_series, (names - SYNTHETIC - exported_series, expr)


def test_dashboard_exprs_parse_as_promql(promtool: str, tmp_path: Path) -> None:
    # promtool has no bare PromQL checker in every version; recording rules are parsed alike.
    rules = [{"record": f"dashboard:expr_{i}", "expr": substitute_grafana(e)}
             for i, e in enumerate(dashboard_exprs())]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_promtool(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_shape() -> None:
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = list(walk_panels(board["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = " | ".join(p["title"].lower() for p in panels)
    for wanted in ("requests/s", "rejections/s", "p50 / p99", "upstream latency", "upstream errors",
                   "in-flight", "store errors", "log buffer", "cache hit ratio", "integrations"):
        assert wanted in titles, wanted
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


ALERT_TESTS = """
rule_files: [{alerts}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'gateway_requests_total{{integration="abc",outcome="rejected",reason="integration_blocked"}}'
        values: '0+60x30'
      - series: 'gateway_requests_total{{integration="abc",outcome="forwarded",reason="none"}}'
        values: '0+60x30'
      - series: 'gateway_requests_total{{integration="quiet",outcome="forwarded",reason="none"}}'
        values: '0+600x30'
      - series: 'gateway_log_entries_dropped_total{{job="gateway",instance="gw:8081"}}'
        values: '0 0 0 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5'
      - series: 'up{{job="gateway",instance="gw:8081"}}'
        values: '1 1 1 1 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0'
    alert_rule_test:
      - eval_time: 20m
        alertname: GatewayRejectionSpike
        exp_alerts:
          - exp_labels: {{severity: warning, integration: abc}}
      - eval_time: 8m
        alertname: GatewayLogEntriesDropped
        exp_alerts:
          - exp_labels: {{severity: warning, instance: "gw:8081"}}
      - eval_time: 20m
        alertname: GatewayDown
        exp_alerts:
          - exp_labels: {{severity: critical, job: gateway, instance: "gw:8081"}}
      - eval_time: 20m
        alertname: GatewayStoreUnavailable
        exp_alerts: []
"""


def test_alerts_fire_in_promtool_unit_tests(promtool: str, tmp_path: Path) -> None:
    # Annotations are templates checked by `promtool check rules`; here only exprs, `for` and
    # labels matter, so the copy under test drops them.
    groups = yaml.safe_load(ALERTS.read_text())
    for group in groups["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    alerts = tmp_path / "alerts.yml"
    alerts.write_text(yaml.safe_dump(groups))
    tests = tmp_path / "alerts_test.yml"
    tests.write_text(textwrap.dedent(ALERT_TESTS.format(alerts=json.dumps(str(alerts)))))
    result = run_promtool(promtool, "test", "rules", str(tests))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.findall(r"^FROM \$\{PYTHON_IMAGE\}", text, re.M) and "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert len(re.findall(r"^FROM ", text, re.M)) == 2, "multi-stage: build, runtime"
    assert "pip wheel" in text and "--no-index" in text
    assert re.search(r"^USER (?!root|0\b)", text, re.M), "the runtime user must not be root"
    assert re.search(r"^HEALTHCHECK .*\n?.*urllib.*/healthz", text, re.M)
    assert 'ENTRYPOINT ["gateway", "serve"]' in text
    assert "GATEWAY_LISTEN=0.0.0.0:8080" in text and "GATEWAY_ADMIN_LISTEN=0.0.0.0:8081" in text
    assert 'VOLUME ["/var/lib/gateway"]' in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "var"} <= set(ignored)


def test_compose_wiring() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    env = services["gateway"]["environment"]
    assert env["GATEWAY_REDIS_URL"] == "redis://redis:6379/0"
    assert env["GATEWAY_SECRET_KEYS"].startswith("${GATEWAY_SECRET_KEYS")
    command = services["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert services["redis"]["image"].startswith("redis:7")
    mounts = " ".join(services["prometheus"]["volumes"])
    assert "alerts.yml:/etc/prometheus/alerts.yml" in mounts
    assert "prometheus.yml:/etc/prometheus/prometheus.yml" in mounts
