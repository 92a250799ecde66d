"""Settings: YAML file, overridden by flags, overridden by `GATEWAY_*` environment variables.

Every key of SPEC section 8 is declared once, in `DEFAULTS`; unknown keys are an error that
names the key, and every value is checked for type and range before the gateway starts.
"""

from __future__ import annotations

import copy
import ipaddress
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway.core.versions import Version, parse_version
from gateway.errors import ConfigError
from gateway.seed import Seed, parse_seed

log = logging.getLogger("gateway.config")

DEFAULTS: dict[str, Any] = {
    "listen": "127.0.0.1:8080",
    "admin_listen": "127.0.0.1:8081",
    "upstream": "http://127.0.0.1:9000",
    "redis_url": None,
    "data_dir": "./var",
    "workers": 1,
    "public_base_url": None,
    "upstream_identity_key": None,
    "trusted_proxies": [],
    "versions": {"min": "2008.1", "max": "2025.2"},
    "accounts": {"auto_register": False},
    "tba": {"timestamp_skew_seconds": 300, "allowed_algorithms": ["HMAC-SHA256"]},
    "sessions": {"idle_timeout_seconds": 1200, "absolute_timeout_seconds": 3600, "block_existing": True},
    "cache": {"max_stale_seconds": 30},
    "limits": {
        "max_body_bytes": 67108864,
        "max_head_bytes": 262144,
        "max_depth": 64,
        "header_read_timeout_seconds": 10,
        "body_read_timeout_seconds": 60,
        "upstream_connect_timeout_seconds": 5,
        "upstream_response_timeout_seconds": 900,
    },
    "log": {
        "max_document_bytes": 65536,
        "retention_days": 21,
        "sandbox_retention_days": 7,
        "max_entries_per_stream": 100000,
        "json": False,
        "level": "info",
        "buffer_entries": 10000,
    },
    "metrics": {"max_integration_labels": 500},
    "seed": None,
}

# Environment names the gateway reads itself, never configuration keys.
RESERVED_ENV = {"GATEWAY_ADMIN_TOKEN", "GATEWAY_SECRET_KEYS", "GATEWAY_SECRET_KEY", "GATEWAY_CMD"}
ALGORITHMS = {"HMAC-SHA256", "HMAC-SHA1"}


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int
    max_head_bytes: int
    max_depth: int
    header_read_timeout_seconds: float
    body_read_timeout_seconds: float
    upstream_connect_timeout_seconds: float
    upstream_response_timeout_seconds: float


@dataclass(frozen=True, slots=True)
class TbaSettings:
    timestamp_skew_seconds: int
    allowed_algorithms: frozenset[str]


@dataclass(frozen=True, slots=True)
class SessionSettings:
    idle_timeout_seconds: int
    absolute_timeout_seconds: int
    block_existing: bool


@dataclass(frozen=True, slots=True)
class LogSettings:
    max_document_bytes: int
    retention_days: int
    sandbox_retention_days: int
    max_entries_per_stream: int
    json: bool
    level: str
    buffer_entries: int


@dataclass(frozen=True, slots=True)
class Settings:
    listen: HostPort
    admin_listen: HostPort
    upstream: str
    redis_url: str | None
    data_dir: Path
    workers: int
    public_base_url: str | None
    upstream_identity_key: str | None
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    min_version: Version
    max_version: Version
    auto_register: bool
    tba: TbaSettings
    sessions: SessionSettings
    cache_max_stale_seconds: float
    limits: Limits
    log: LogSettings
    max_integration_labels: int
    seed: Seed | None

    def replace(self, **changes: Any) -> Settings:
        from dataclasses import replace

        return replace(self, **changes)


# --------------------------------------------------------------------------- loading


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge defaults < YAML file < flags < environment, then validate."""
    raw = copy.deepcopy(DEFAULTS)
    if config_file is not None:
        _merge(raw, _read_yaml(Path(config_file)), "")
    for key, value in (flags or {}).items():
        if value is not None:
            _merge(raw, {key: value}, "")
    _merge(raw, _from_environment(os.environ if environ is None else environ), "")
    return _validate(raw)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text("utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping")
    return data


def _merge(into: dict[str, Any], data: Mapping[str, Any], prefix: str) -> None:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if not isinstance(key, str) or key not in into:
            raise ConfigError(f"unknown configuration key '{name}'")
        if isinstance(into[key], dict) and key != "seed":
            if not isinstance(value, Mapping):
                raise ConfigError(f"'{name}' must be a mapping")
            _merge(into[key], value, f"{name}.")
        else:
            into[key] = value


# Keys whose values are text: taken from the environment as they are, not as YAML (where
# "s3cr3t #tail" is "s3cr3t", "2019.1" a float and "yes" a boolean).
_TEXT_KEYS = frozenset({("listen",), ("admin_listen",), ("upstream",), ("redis_url",), ("data_dir",),
                        ("public_base_url",), ("upstream_identity_key",), ("versions", "min"), ("versions", "max")})


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """`GATEWAY_<KEY>` and `GATEWAY_<SECTION>__<KEY>`; text keys are taken as they are, the
    others parsed as YAML scalars (numbers, booleans, lists)."""
    out: dict[str, Any] = {}
    for name, text in environ.items():
        if not name.startswith("GATEWAY_") or name in RESERVED_ENV:
            continue
        path = [part.lower() for part in name[len("GATEWAY_"):].split("__")]
        if path[0] not in DEFAULTS:
            log.warning("ignoring environment variable %s: not a configuration key", name)
            continue
        try:
            value = None if text == "" else text if tuple(path) in _TEXT_KEYS else yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"environment variable {name}: not a valid value ({e})") from e
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


# --------------------------------------------------------------------------- validation


def _validate(raw: Mapping[str, Any]) -> Settings:
    limits = raw["limits"]
    logs = raw["log"]
    tba = raw["tba"]
    sessions = raw["sessions"]
    versions = raw["versions"]
    min_v = _version(versions["min"], "versions.min")
    max_v = _version(versions["max"], "versions.max")
    if min_v > max_v:
        raise ConfigError("'versions.min' must not be above 'versions.max'")
    algorithms = _str_list(tba["allowed_algorithms"], "tba.allowed_algorithms")
    normalized = frozenset(a.upper().replace("_", "-") for a in algorithms)
    if not normalized or not normalized <= ALGORITHMS:
        raise ConfigError(f"'tba.allowed_algorithms' must list some of {sorted(ALGORITHMS)}, got {algorithms}")
    return Settings(
        listen=_host_port(raw["listen"], "listen"),
        admin_listen=_host_port(raw["admin_listen"], "admin_listen"),
        upstream=_url(raw["upstream"], "upstream", ("http", "https")),
        redis_url=None if raw["redis_url"] is None else _url(
            raw["redis_url"], "redis_url", ("redis", "rediss", "unix")),
        data_dir=Path(_str(raw["data_dir"], "data_dir")),
        workers=_int(raw["workers"], "workers", 1, 64),
        public_base_url=None if raw["public_base_url"] is None else _url(
            raw["public_base_url"], "public_base_url", ("http", "https")),
        upstream_identity_key=_opt_str(raw["upstream_identity_key"], "upstream_identity_key"),
        trusted_proxies=tuple(_network(n, "trusted_proxies") for n in _str_list(
            raw["trusted_proxies"], "trusted_proxies")),
        min_version=min_v,
        max_version=max_v,
        auto_register=_bool(raw["accounts"]["auto_register"], "accounts.auto_register"),
        tba=TbaSettings(
            timestamp_skew_seconds=_int(tba["timestamp_skew_seconds"], "tba.timestamp_skew_seconds", 1, 86400),
            allowed_algorithms=normalized,
        ),
        sessions=SessionSettings(
            idle_timeout_seconds=_int(sessions["idle_timeout_seconds"], "sessions.idle_timeout_seconds", 1),
            absolute_timeout_seconds=_int(
                sessions["absolute_timeout_seconds"], "sessions.absolute_timeout_seconds", 1),
            block_existing=_bool(sessions["block_existing"], "sessions.block_existing"),
        ),
        cache_max_stale_seconds=_number(raw["cache"]["max_stale_seconds"], "cache.max_stale_seconds", 0),
        limits=Limits(
            max_body_bytes=_int(limits["max_body_bytes"], "limits.max_body_bytes", 1),
            max_head_bytes=_int(limits["max_head_bytes"], "limits.max_head_bytes", 64),
            max_depth=_int(limits["max_depth"], "limits.max_depth", 4, 10000),
            header_read_timeout_seconds=_number(
                limits["header_read_timeout_seconds"], "limits.header_read_timeout_seconds", 0.001),
            body_read_timeout_seconds=_number(
                limits["body_read_timeout_seconds"], "limits.body_read_timeout_seconds", 0.001),
            upstream_connect_timeout_seconds=_number(
                limits["upstream_connect_timeout_seconds"], "limits.upstream_connect_timeout_seconds", 0.001),
            upstream_response_timeout_seconds=_number(
                limits["upstream_response_timeout_seconds"], "limits.upstream_response_timeout_seconds", 0.001),
        ),
        log=LogSettings(
            max_document_bytes=_int(logs["max_document_bytes"], "log.max_document_bytes", 0),
            retention_days=_int(logs["retention_days"], "log.retention_days", 1),
            sandbox_retention_days=_int(logs["sandbox_retention_days"], "log.sandbox_retention_days", 1),
            max_entries_per_stream=_int(logs["max_entries_per_stream"], "log.max_entries_per_stream", 1),
            json=_bool(logs["json"], "log.json"),
            level=_choice(logs["level"], "log.level", ("debug", "info", "warning", "error")),
            buffer_entries=_int(logs["buffer_entries"], "log.buffer_entries", 1),
        ),
        max_integration_labels=_int(
            raw["metrics"]["max_integration_labels"], "metrics.max_integration_labels", 0),
        # Parsed here, not when it is applied, so that check-config refuses what serve refuses.
        seed=None if raw["seed"] is None else parse_seed(raw["seed"]),
    )


def _fail(name: str, wanted: str, value: Any) -> ConfigError:
    return ConfigError(f"'{name}' must be {wanted}, got {value!r}")


def _int(value: Any, name: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(name, "an integer", value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise _fail(name, f"between {lo} and {hi if hi is not None else 'any'}", value)
    return value


def _number(value: Any, name: str, lo: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(name, "a number", value)
    if value < lo:
        raise _fail(name, f"at least {lo}", value)
    return float(value)


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(name, "true or false", value)
    return value


def _str(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(name, "a non-empty string", value)
    return value


def _opt_str(value: Any, name: str) -> str | None:
    return None if value is None else _str(value, name)


def _choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise _fail(name, f"one of {', '.join(choices)}", value)
    return str(value)


def _str_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(name, "a list of strings", value)
    return value


def _version(value: Any, name: str) -> Version:
    try:
        return parse_version(str(value))
    except ValueError:
        raise _fail(name, 'a version like "2020.2"', value) from None


def _host_port(value: Any, name: str) -> HostPort:
    text = _str(value, name)
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise _fail(name, "HOST:PORT", value)
    return HostPort(host.strip("[]") or "0.0.0.0", int(port))


def _url(value: Any, name: str, schemes: tuple[str, ...]) -> str:
    text = _str(value, name)
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() not in schemes or not rest:
        raise _fail(name, f"a URL with scheme {'/'.join(schemes)}", value)
    return text.rstrip("/") if scheme in ("http", "https") else text


def _network(value: str, name: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise _fail(name, "a list of CIDR networks", value) from None
