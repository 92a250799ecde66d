"""`gateway integrations|tokens|accounts|logs ...`: the admin API from the command line.

Every command talks HTTP to a running gateway's admin listener (`--admin-url`, default
http://127.0.0.1:8081) with `--token` (default `$GATEWAY_ADMIN_TOKEN`); output is a table,
or the API's JSON with `--json`. Wire it with `add_admin_commands(subparsers)`; each leaf
sets `func(args) -> int`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

DEFAULT_ADMIN_URL = "http://127.0.0.1:8081"


class ApiFailure(Exception):
    def __init__(self, status: int, body: Any) -> None:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        super().__init__(f"HTTP {status} {error.get('code', '')}: {error.get('message', body)}")
        self.status = status


def call(
    args: argparse.Namespace, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None
) -> Any:
    url = args.admin_url.rstrip("/") + "/admin/v1" + path
    params = {k: str(v) for k, v in (query or {}).items() if v is not None}
    if params:
        url += "?" + urllib.parse.urlencode(params)
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if args.token:
        req.add_header("Authorization", f"Bearer {args.token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as e:
        payload = e.read()
        try:
            parsed = json.loads(payload)
        except ValueError:
            parsed = payload.decode("utf-8", "replace")
        raise ApiFailure(e.code, parsed) from None
    return json.loads(raw) if raw else None


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ",".join(k for k, v in value.items() if v) or "-"
    return str(value).replace("\n", " ")


def emit(
    args: argparse.Namespace,
    data: Any,
    rows: Sequence[dict[str, Any]] | None = None,
    columns: Sequence[str] = (),
) -> None:
    if args.json:
        print(json.dumps(data, indent=2))
    elif rows is not None:
        print(table(rows, columns))
    elif isinstance(data, dict):
        width = max((len(k) for k in data), default=0)
        for key, value in data.items():
            print(
                f"{key.ljust(width)}  {json.dumps(value) if isinstance(value, dict | list) else _cell(value)}"
            )


INTEGRATION_COLUMNS = ("id", "name", "state", "installed_via", "owner_account", "auth", "note")
TOKEN_COLUMNS = ("token_id", "integration_id", "user", "role", "source", "created_at")
LOG_COLUMNS = (
    "time",
    "request_id",
    "operation",
    "outcome",
    "reason",
    "integration_id",
    "http_status",
    "user_email",
)


def _acct(args: argparse.Namespace) -> str:
    return f"/accounts/{urllib.parse.quote(args.account, safe='')}"


# --------------------------------------------------------------------------- integrations


def integrations_list(args: argparse.Namespace) -> int:
    data = call(args, "GET", _acct(args) + "/integrations")
    emit(args, data, data["integrations"], INTEGRATION_COLUMNS)
    return 0


def integrations_create(args: argparse.Namespace) -> int:
    body = {
        "name": args.name,
        "description": args.description,
        "state": args.state,
        "note": args.note,
        "auth": {
            "user_credentials": not args.no_user_credentials,
            "token_based": not args.no_token_based,
            "tba_issue_token_endpoint": args.issue_token_endpoint,
        },
        "auto_install": args.auto_install,
    }
    data = call(args, "POST", _acct(args) + "/integrations", body)
    emit(args, data)
    if not args.json:
        print("\nThe consumer secret is shown only now: store it safely.", file=sys.stderr)
    return 0


def integrations_show(args: argparse.Namespace) -> int:
    data = call(args, "GET", f"{_acct(args)}/integrations/{args.id}")
    changes = call(args, "GET", f"{_acct(args)}/integrations/{args.id}/changes")["changes"] if args.changes else None
    if args.json:  # one JSON document: the record, with its changes when asked for
        emit(args, data if changes is None else data | {"changes": changes})
        return 0
    emit(args, data)
    if changes is not None:
        print()
        print(table(changes, ("time", "actor", "field", "old", "new")))
    return 0


def _patch(fields: Callable[[argparse.Namespace], dict[str, Any]]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        body = fields(args)
        if getattr(args, "note", None) is not None and "note" not in body:
            body["note"] = args.note
        emit(args, call(args, "PATCH", f"{_acct(args)}/integrations/{args.id}", body))
        return 0

    return run


def _set_state(state: str) -> Callable[[argparse.Namespace], dict[str, Any]]:
    def fields(args: argparse.Namespace) -> dict[str, Any]:
        return {"state": state}

    return fields


def integrations_remove(args: argparse.Namespace) -> int:
    call(args, "DELETE", f"{_acct(args)}/integrations/{args.id}")
    print(f"removed {args.id} from {args.account}")
    return 0


def integrations_reset(args: argparse.Namespace) -> int:
    emit(args, call(args, "POST", f"{_acct(args)}/integrations/{args.id}/reset-credentials"))
    return 0


# --------------------------------------------------------------------------- tokens, accounts


def tokens_issue(args: argparse.Namespace) -> int:
    body = {"integration_id": args.integration, "user": args.user, "role": args.role}
    emit(args, call(args, "POST", _acct(args) + "/tokens", body))
    return 0


def tokens_list(args: argparse.Namespace) -> int:
    data = call(args, "GET", _acct(args) + "/tokens")
    emit(args, data, data["tokens"], TOKEN_COLUMNS)
    return 0


def tokens_revoke(args: argparse.Namespace) -> int:
    call(args, "DELETE", f"{_acct(args)}/tokens/{args.token_id}")
    print(f"revoked {args.token_id}")
    return 0


def accounts_show(args: argparse.Namespace) -> int:
    emit(args, call(args, "GET", _acct(args)))
    return 0


def accounts_set(args: argparse.Namespace) -> int:
    body = {} if args.require_approval is None else {"require_approval": args.require_approval == "true"}
    emit(args, call(args, "PUT", _acct(args), body))
    return 0


def accounts_default(args: argparse.Namespace) -> int:
    emit(args, call(args, "PUT", _acct(args) + "/default-integration", {"state": args.state}))
    return 0


# --------------------------------------------------------------------------- logs


class UsageError(Exception):
    """A combination of options the API cannot answer."""


def _log_path(args: argparse.Namespace) -> str:
    if getattr(args, "integration_log", False):
        if not (args.account and args.integration):
            raise UsageError("--integration-log needs --account and --integration")
        return f"{_acct(args)}/integrations/{urllib.parse.quote(args.integration, safe='')}/log"
    return _acct(args) + "/usage-log" if args.account else "/usage-log"


def _log_query(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "integration": getattr(args, "integration", None),
        "operation": getattr(args, "operation", None),
        "outcome": getattr(args, "outcome", None),
        "request_id": getattr(args, "request_id", None),
        "since": getattr(args, "since", None),
        "until": getattr(args, "until", None),
        "limit": args.limit,
    }


def _log_line(args: argparse.Namespace, entry: dict[str, Any]) -> str:
    return json.dumps(entry) if args.json else "  ".join(_cell(entry.get(c)) for c in LOG_COLUMNS)


def logs_search(args: argparse.Namespace) -> int:
    data = call(args, "GET", _log_path(args), query=_log_query(args) | {"cursor": args.cursor})
    emit(args, data, data["entries"], LOG_COLUMNS)
    if data.get("next") and not args.json:
        print(f"\nmore: --cursor {data['next']}", file=sys.stderr)
    return 0


def logs_tail(args: argparse.Namespace) -> int:
    """The latest `--limit` entries, oldest first; with `--follow`, then each new one as it
    is written. Polls newest first: `seen` holds the previous page only, so it stays small."""
    seen: set[str] | None = None
    if not args.json:
        print("  ".join(c.upper() for c in LOG_COLUMNS))
    while True:
        entries = call(args, "GET", _log_path(args), query=_log_query(args))["entries"]
        keys = [_entry_key(e) for e in entries]
        fresh = [e for e, k in zip(entries, keys, strict=True) if seen is None or k not in seen]
        if seen is not None and len(entries) == args.limit and len(fresh) == len(entries):
            print(f"(more than {args.limit} new entries since the last poll: some not shown)", file=sys.stderr)
        for entry in reversed(fresh):
            print(_log_line(args, entry))
        if not args.follow:
            return 0
        seen = set(keys)
        sys.stdout.flush()
        time.sleep(args.interval)


def _entry_key(entry: dict[str, Any]) -> str:
    return f"{entry.get('request_id')} {entry.get('time')}"


# --------------------------------------------------------------------------- wiring


def _common(p: argparse.ArgumentParser, *, account: bool = True, account_required: bool = True) -> None:
    p.add_argument(
        "--admin-url",
        default=os.environ.get("GATEWAY_ADMIN_URL", DEFAULT_ADMIN_URL),
        help=f"admin listener URL (default {DEFAULT_ADMIN_URL})",
    )
    p.add_argument(
        "--token",
        default=os.environ.get("GATEWAY_ADMIN_TOKEN"),
        help="admin bearer token (default $GATEWAY_ADMIN_TOKEN)",
    )
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    if account:
        p.add_argument("--account", required=account_required, help="account id")


def _wrap(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except ApiFailure as e:
            print(f"gateway: {e}", file=sys.stderr)
            return 1
        except UsageError as e:
            print(f"gateway: {e}", file=sys.stderr)
            return 2
        except (urllib.error.URLError, OSError) as e:
            print(f"gateway: cannot reach the admin API at {args.admin_url}: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130

    return run


def _leaf(
    group: Any,
    name: str,
    func: Callable[[argparse.Namespace], int],
    help_text: str,
    *,
    account: bool = True,
    account_required: bool = True,
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = group.add_parser(name, help=help_text)
    _common(p, account=account, account_required=account_required)
    p.set_defaults(func=_wrap(func))
    return p


def add_admin_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    integ = subparsers.add_parser("integrations", help="integration records (admin API)")
    ig = integ.add_subparsers(dest="action", metavar="ACTION", required=True)
    _leaf(ig, "list", integrations_list, "integrations installed in an account")
    p = _leaf(ig, "create", integrations_create, "create a record owned by the account")
    p.add_argument("--name", required=True)
    p.add_argument("--description", default="")
    p.add_argument("--state", default="enabled", choices=("enabled", "blocked", "waiting_for_approval"))
    p.add_argument("--note", default="")
    p.add_argument("--no-user-credentials", action="store_true")
    p.add_argument("--no-token-based", action="store_true")
    p.add_argument("--issue-token-endpoint", action="store_true")
    p.add_argument("--auto-install", action="store_true")
    p = _leaf(ig, "show", integrations_show, "one integration")
    p.add_argument("id")
    p.add_argument("--changes", action="store_true", help="also print its change tracking")
    for name, state, text in (
        ("block", "blocked", "block requests"),
        ("unblock", "enabled", "enable it again"),
        ("approve", "enabled", "approve a waiting installation"),
    ):
        p = _leaf(ig, name, _patch(_set_state(state)), text)
        p.add_argument("id")
        p.add_argument("--note", help="also set the note (e.g. a ticket reference)")
    p = _leaf(ig, "note", _patch(lambda a: {"note": a.text}), "set the note")
    p.add_argument("id")
    p.add_argument("text")
    p = _leaf(ig, "remove", integrations_remove, "uninstall (installed) or remove everywhere (owner)")
    p.add_argument("id")
    p = _leaf(ig, "reset-credentials", integrations_reset, "new consumer key and secret (owner only)")
    p.add_argument("id")

    tokens = subparsers.add_parser("tokens", help="TBA tokens (admin API)")
    tg = tokens.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = _leaf(tg, "issue", tokens_issue, "issue a token (the secret is shown once)")
    p.add_argument("--integration", required=True, help="integration internal id")
    p.add_argument("--user", required=True, help="user email")
    p.add_argument("--role", default="3", help="role internal id (default 3, Administrator)")
    _leaf(tg, "list", tokens_list, "tokens of an account")
    p = _leaf(tg, "revoke", tokens_revoke, "revoke a token")
    p.add_argument("token_id")

    accounts = subparsers.add_parser("accounts", help="accounts and preferences (admin API)")
    ag = accounts.add_subparsers(dest="action", metavar="ACTION", required=True)
    _leaf(ag, "show", accounts_show, "an account and its preferences")
    p = _leaf(ag, "set", accounts_set, "create or update an account")
    p.add_argument("--require-approval", choices=("true", "false"))
    p = _leaf(ag, "default-integration", accounts_default, "Default Web Services Integrations record")
    p.add_argument("state", choices=("enabled", "blocked"))

    logs = subparsers.add_parser("logs", help="execution and usage logs (admin API)")
    lg = logs.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, func, text in (
        ("tail", logs_tail, "latest entries (--follow to keep polling)"),
        ("search", logs_search, "search the usage log (without --account: global)"),
    ):
        p = _leaf(lg, name, func, text, account_required=False)
        p.add_argument("--integration", help="integration internal id")
        p.add_argument(
            "--integration-log",
            action="store_true",
            help="read the integration's execution log instead of the usage log",
        )
        p.add_argument("--operation")
        p.add_argument("--outcome", choices=("forwarded", "rejected", "error"))
        p.add_argument("--request-id")
        p.add_argument("--since", help="ISO 8601 time or unix seconds")
        p.add_argument("--until", help="ISO 8601 time or unix seconds")
        p.add_argument("--limit", type=int, default=50)
        if name == "tail":
            p.add_argument("--follow", "-f", action="store_true")
            p.add_argument("--interval", type=float, default=1.0)
        else:
            p.add_argument("--cursor")
