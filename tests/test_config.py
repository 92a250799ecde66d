"""Settings precedence (file < flags < environment) and validation errors that name the field."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.seed import Seed, SeedAccount

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


def test_text_settings_come_from_the_environment_as_they_are() -> None:
    """Found by the black-box config audit: values were parsed as YAML, so a key with " #"
    in it was cut at the comment and signed with the rest; numbers and booleans still are."""
    s = load_settings(environ={"GATEWAY_UPSTREAM_IDENTITY_KEY": "s3cr3t #tail: 'x'",
                               "GATEWAY_VERSIONS__MIN": "2019.1", "GATEWAY_WORKERS": "2",
                               "GATEWAY_SESSIONS__BLOCK_EXISTING": "false"})
    assert s.upstream_identity_key == "s3cr3t #tail: 'x'"
    assert s.min_version == (2019, 1) and s.workers == 2 and s.sessions.block_existing is False


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


def test_check_config_checks_the_secret_keys_serve_needs(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    shared = str(write(tmp_path, "redis_url: redis://127.0.0.1:6379/0\n"))
    for name in ("GATEWAY_SECRET_KEYS", "GATEWAY_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert main(["check-config", shared]) == 2  # replicas on one Redis must share keys
    assert "GATEWAY_SECRET_KEYS is not" in capsys.readouterr().err
    monkeypatch.setenv("GATEWAY_SECRET_KEYS", "not base64!")
    assert main(["check-config", shared]) == 2
    monkeypatch.setenv("GATEWAY_SECRET_KEYS", base64.b64encode(b"k" * 32).decode())
    assert main(["check-config", shared]) == 0
    assert not (tmp_path / "data").exists()  # no key file written by a check


# Found by a black-box audit: check-config said OK to each, serve refused it (SPEC section 8).
BAD_SEEDS = [
    ("seed: {accounts: [{account: '1234567', require_aproval: true}]}\n", "'seed.accounts[0].require_aproval'"),
    ("seed: {foo: 1}\n", "'seed.foo'"),
    ("seed: {integrations: [{account: '1234567', name: orders, colour: red}]}\n", "'seed.integrations[0].colour'"),
    ("seed: {integrations: [{account: '1234567', name: orders, state: weird}]}\n", "seed.integrations[0]: 'state'"),
    ("seed: {accounts: [{account: 'abc!'}]}\n", "'abc!'"),
]


@pytest.mark.parametrize(("text", "named"), BAD_SEEDS,
                         ids=["account-key", "seed-key", "integration-key", "state", "account-id"])
def test_check_config_and_serve_refuse_a_bad_seed_alike(tmp_path: Path, text: str, named: str) -> None:
    data_dir = tmp_path / "data"
    path = write(tmp_path, f"listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\ndata_dir: '{data_dir}'\n{text}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    check, serve = (
        subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, env=env, timeout=60)
        for args in (["check-config", str(path)], ["serve", "--config", str(path)])
    )
    assert (check.returncode, check.stdout) == (2, "")
    assert named in check.stderr
    assert (serve.returncode, serve.stderr) == (check.returncode, check.stderr)
    assert not data_dir.exists()  # refused before the embedded Redis was started


def test_check_config_accepts_a_valid_seed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, (
        "seed:\n"
        "  accounts: [{account: '1234567', require_approval: true, default_integration: {state: blocked}}]\n"
        "  integrations:\n"
        "    - {account: '1234567_sb1', name: ' orders ', state: waiting_for_approval, note: n, description: d,\n"
        f"       auth: {{token_based: false}}, auto_install: true, application_id: 5c4ea1a1-{'a1' * 12},\n"
        f"       consumer_key: '{'AB' * 32}', consumer_secret: '{'cd' * 32}'}}\n"
    ))
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: OK\n"
    seed = load_settings(path, environ={}).seed
    assert isinstance(seed, Seed)
    assert seed.accounts == (SeedAccount("1234567", True, "blocked"),)
    (integration,) = seed.integrations
    assert (integration.account, integration.name, integration.fields["state"]) == (
        "1234567_SB1", "orders", "waiting_for_approval")
    assert integration.application_id == "5C4E" + "A1" * 14
    assert (integration.consumer_key, integration.consumer_secret) == ("ab" * 32, "cd" * 32)
