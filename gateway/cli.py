"""The `gateway` command: serve, check-config, decide, rekey, demo, and the admin commands."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from gateway import __version__
from gateway.config import Settings, load_settings
from gateway.errors import ConfigError

SERVE_FLAGS = {
    "listen": "HOST:PORT of the proxy listener",
    "admin_listen": "HOST:PORT of the admin listener (admin API, /healthz, /readyz, /metrics)",
    "upstream": "URL of the SOAP backend",
    "redis_url": "Redis URL (redis://, rediss://, unix://); default: an embedded Redis under --data-dir",
    "data_dir": "directory for the embedded Redis and the generated secret key",
}


def _settings_args(p: argparse.ArgumentParser, *, serve: bool) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML configuration file")
    if serve:
        for key, text in SERVE_FLAGS.items():
            p.add_argument("--" + key.replace("_", "-"), dest=key, help=text)
        p.add_argument("--workers", type=int, help="worker processes sharing the proxy port")
    else:
        p.add_argument("--redis-url", dest="redis_url", help=SERVE_FLAGS["redis_url"])
        p.add_argument("--data-dir", dest="data_dir", help=SERVE_FLAGS["data_dir"])


def _load(args: argparse.Namespace, keys: Sequence[str]) -> Settings:
    flags = {k: getattr(args, k, None) for k in keys}
    return load_settings(args.config, flags)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="Integration Gateway for SuiteTalk SOAP backends")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    serve = sub.add_parser("serve", help="run the gateway")
    _settings_args(serve, serve=True)
    serve.set_defaults(func=_cmd_serve)

    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file")
    check.set_defaults(func=_cmd_check_config)

    decide = sub.add_parser("decide", help="run the decision rules offline on an envelope")
    decide.add_argument("envelope")
    decide.add_argument("--records", required=True, help="YAML file of accounts, integrations, tokens")
    decide.add_argument("--path", help="request path (default /services/NetSuitePort_<ns version>)")
    decide.add_argument("--cookie", help="JSESSIONID value the request carries")
    decide.add_argument("--soap-action", help="SOAPAction header value")
    decide.add_argument("--now", type=float, help="unix time to decide at (default: now)")
    decide.set_defaults(func=_cmd_decide)

    rekey = sub.add_parser("rekey", help="re-encrypt every secret under the first key of GATEWAY_SECRET_KEYS")
    _settings_args(rekey, serve=False)
    rekey.set_defaults(func=_cmd_rekey)

    demo = sub.add_parser("demo", help="start a sample backend and the gateway, and send a few requests")
    demo.add_argument("--keep-running", action="store_true", help="keep serving after the demo requests")
    demo.set_defaults(func=_cmd_demo)

    from gateway.admin_cli import add_admin_commands

    add_admin_commands(sub)
    return parser


def _cmd_serve(args: argparse.Namespace) -> int:
    from gateway.logsetup import setup_logging
    from gateway.runtime import serve

    settings = _load(args, [*SERVE_FLAGS, "workers"])
    setup_logging(settings)
    return serve(settings)


def _cmd_check_config(args: argparse.Namespace) -> int:
    """What serve refuses before it touches Redis: both load the settings the same way (`seed:`
    included) and check the secret keys the environment gives."""
    from gateway.store.keyring import secret_keys_from_env

    settings = load_settings(args.file)
    secret_keys_from_env(settings.redis_url)
    print(f"{args.file}: OK")
    return 0


def _cmd_decide(args: argparse.Namespace) -> int:
    from gateway.decide_cli import run_decide

    return run_decide(args.envelope, args.records, args.path, args.cookie, args.soap_action, args.now)


def _cmd_rekey(args: argparse.Namespace) -> int:
    from gateway.store.redis import rekey_command

    settings = _load(args, ["redis_url", "data_dir"])
    count: int = asyncio.run(rekey_command(settings))
    print(f"re-encrypted {count} secrets")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(keep_running=args.keep_running)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Any = args.func
    try:
        return int(func(args))
    except ConfigError as e:
        print(f"gateway: configuration error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
