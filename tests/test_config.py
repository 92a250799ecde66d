"""Settings precedence (file < flags < environment) and validation errors that name the field."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import load_settings
from gateway.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "gateway.example.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_example_file_is_valid_and_holds_the_defaults() -> None:
    s = load_settings(EXAMPLE, environ={})
    assert s.limits.max_body_bytes == 67108864
    assert s.max_version == (2025, 2) and s.min_version == (2008, 1)
    assert s.tba.allowed_algorithms == frozenset({"HMAC-SHA256"})
    assert s.redis_url is None and s.workers == 1


def test_flags_override_file_and_environment_overrides_both(tmp_path: Path) -> None:
    path = write(tmp_path, "listen: 127.0.0.1:1111\nupstream: http://file:1\nlimits: {max_depth: 10}\n")
    s = load_settings(path, {"listen": "127.0.0.1:2222"}, environ={})
    assert s.listen.port == 2222 and s.upstream == "http://file:1" and s.limits.max_depth == 10
    s = load_settings(path, {"listen": "127.0.0.1:2222"},
                      environ={"GATEWAY_LISTEN": "127.0.0.1:3333", "GATEWAY_LIMITS__MAX_DEPTH": "20"})
    assert s.listen.port == 3333 and s.limits.max_depth == 20


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("bogus: 1\n", "bogus"),
        ("limits: {max_bodyy: 3}\n", "limits.max_bodyy"),
        ("limits: {max_body_bytes: lots}\n", "limits.max_body_bytes"),
        ("workers: 0\n", "workers"),
        ("listen: nowhere\n", "listen"),
        ("upstream: ftp://x\n", "upstream"),
        ("versions: {min: '2030.1'}\n", "versions.min"),
        ("tba: {allowed_algorithms: [MD5]}\n", "tba.allowed_algorithms"),
        ("trusted_proxies: [not-a-net]\n", "trusted_proxies"),
        ("sessions: {block_existing: maybe}\n", "sessions.block_existing"),
    ],
)
def test_invalid_values_name_the_field(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_settings(write(tmp_path, text), environ={})


def test_unknown_nested_environment_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match="limits.nope"):
        load_settings(None, environ={"GATEWAY_LIMITS__NOPE": "1"})


def test_unrelated_gateway_variables_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        load_settings(None, environ={"GATEWAY_SOMETHING_ELSE": "x", "GATEWAY_ADMIN_TOKEN": "t"})
    assert "GATEWAY_SOMETHING_ELSE" in caplog.text
    assert "GATEWAY_ADMIN_TOKEN" not in caplog.text


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLE)]) == 0
    assert main(["check-config", str(write(tmp_path, "limits: {max_depth: -1}\n"))]) == 2
    assert "limits.max_depth" in capsys.readouterr().err
