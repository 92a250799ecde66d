"""Execution log and usage log (SPEC section 6) in Redis Streams.

Streams: the account's usage log `{acct:A}:log:usage` (every request of the account), the
execution log `{acct:A}:log:exec:ID` (requests attributed to a real integration record), and
`log:global` for entries without an account. Each entry is one stream field `j` holding the
entry's JSON. Retention: XTRIM MINID (now - 21 days, 7 for sandbox accounts) on each write,
MAXLEN `log.max_entries_per_stream` (approximate above 1000 entries, where exactness
costs and nobody counts), and EXPIRE of the retention so idle streams vanish. A request id
index `rid:<id>` lists "<stream> <entry id>" of the id's last REFS_PER_REQUEST_ID entries
(same TTL): the all-accounts search reads it; each usage stream also lists its own
entry ids for a request id (`<stream>:rid:<id>`, the last SCOPED_REFS_PER_REQUEST_ID), which
an account's and an integration's `?request_id=` read, so a reused id (a retry, another
account's client, even on purpose) never crowds out an account's own entries; each usage stream keeps a
queue of its entries' request ids (`<stream>:rids`) so that an entry trimmed away takes its
reference along (the index is as large as the retained log, not as the last 21 days of traffic).

A write is one script call per usage stream (per account, and one for the global log) and per
128 KiB of JSON: the appends and the index are per entry, the trims and EXPIREs per call, so
a batch of 500 entries of one account costs a handful of EVALSHAs instead of 500.

Queries read newest first (XREVRANGE) and filter in process; the cursor is the stream id of
the last entry returned.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any, NamedTuple

from gateway.config import LogSettings
from gateway.core.records import is_sandbox, normalize_account
from gateway.store import keyspace as ks
from gateway.store.atomic import Client, RegistryError

_CURSOR_RE = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")  # a stream id: two unsigned 64-bit numbers
_LAST_SECOND = 253402300799  # 9999-12-31T23:59:59Z, as far as ISO 8601 times go
_SCAN_CHUNK = 200
_PIPELINE_BYTES = 1 << 20
# Redis builds a Lua string per ARGV entry before the script runs and its cost per entry grows
# with the size of the call: 500 entries of 1.5 KB (750 KB) cost ~1.5x the server CPU per entry
# of calls of 128 KiB (Redis 6.2). Smaller calls pay per-call trims and client overhead.
_CALL_BYTES = 1 << 17
_SCAN_CAP = 20_000  # entries examined per query; beyond it the page ends early with a cursor
_CLOCK_SLACK_MS = 120_000  # stream ids are write times: allow for flush delay and replica clocks
MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
NOT_RECORDS = ("", "none", "default")


@dataclass(frozen=True, slots=True)
class LogQuery:
    integration: str | None = None
    operation: str | None = None
    outcome: str | None = None
    request_id: str | None = None
    since: float | None = None  # unix seconds
    until: float | None = None
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None


_RID_PREFIX = ks.request_index("")
REFS_PER_REQUEST_ID = 16  # entries the all-accounts search by request id finds (the newest)
SCOPED_REFS_PER_REQUEST_ID = 64  # entries a stream's search by request id finds (the newest)


def scoped_request_index(usage_stream: str, request_id: str) -> str:
    """A usage stream's own entry ids for a request id (the append script names it alike)."""
    return f"{usage_stream}:rid:{request_id}"


def rid_queue(usage_stream: str) -> str:
    """The request ids of a usage stream's entries, newest first (trimmed in step with it)."""
    return usage_stream + ":rids"


def parse_time(value: str, name: str) -> float:
    """ISO 8601 (a trailing Z allowed) or unix seconds."""
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:  # nan, inf and 1e30 would fail later, inside Redis, as a store error
        if not 0 <= seconds <= _LAST_SECOND:
            raise RegistryError("INVALID_REQUEST", f"'{name}' must be unix seconds between 0 and {_LAST_SECOND}")
        return seconds
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise RegistryError("INVALID_REQUEST", f"'{name}' must be an ISO 8601 time or unix seconds") from None
    if moment.tzinfo is None:
        raise RegistryError("INVALID_REQUEST", f"'{name}' must carry a time zone (e.g. a trailing Z)")
    return max(moment.timestamp(), 0.0)


def parse_query(params: Mapping[str, str]) -> LogQuery:
    limit = DEFAULT_LIMIT
    if params.get("limit"):
        try:
            limit = int(params["limit"])
        except ValueError:
            raise RegistryError("INVALID_REQUEST", "'limit' must be an integer") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise RegistryError("INVALID_REQUEST", f"'limit' must be between 1 and {MAX_LIMIT}")
    cursor = params.get("cursor") or None
    if cursor is not None and not (_CURSOR_RE.fullmatch(cursor)
                                   and all(int(part) < 1 << 64 for part in cursor.split("-"))):
        raise RegistryError("INVALID_REQUEST", "'cursor' is not a cursor this API returned")
    return LogQuery(
        integration=params.get("integration") or None,
        operation=params.get("operation") or None,
        outcome=params.get("outcome") or None,
        request_id=params.get("request_id") or None,
        since=parse_time(params["since"], "since") if params.get("since") else None,
        until=parse_time(params["until"], "until") if params.get("until") else None,
        limit=limit,
        cursor=cursor,
    )


def _entry_time(entry: Mapping[str, Any]) -> float | None:
    value = entry.get("time")
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def matches(entry: Mapping[str, Any], q: LogQuery) -> bool:
    if q.integration is not None and str(entry.get("integration_id")) != q.integration:
        return False
    if q.operation is not None and entry.get("operation") != q.operation:
        return False
    if q.outcome is not None and entry.get("outcome") != q.outcome:
        return False
    if q.request_id is not None and entry.get("request_id") != q.request_id:
        return False
    if q.since is not None or q.until is not None:
        moment = _entry_time(entry)
        if moment is None:
            return False
        if q.since is not None and moment < q.since:
            return False
        if q.until is not None and moment > q.until:
            return False
    return True


class _Line(NamedTuple):
    """One entry as the append script takes it."""

    rid_key: str  # its request-id index key (the script reads the id back past the prefix)
    body: str  # the entry as JSON
    execution: str | None  # its execution stream, if it names a real integration record


@dataclass(slots=True)
class _Group:
    """The entries of one write that go to one usage stream, in submission order."""

    usage: str
    retention: int
    lines: list[_Line]


def _calls(lines: list[_Line]) -> Iterator[tuple[int, int, int]]:
    """(start, end, JSON size) of the script calls that write `lines`: each call ends with the
    entry that takes it to `_CALL_BYTES`."""
    start = size = 0
    for end, line in enumerate(lines, 1):
        size += len(line.body)
        if size >= _CALL_BYTES or end == len(lines):
            yield start, end, size
            start, size = end, 0


def execution_log_of(account: str, integration_id: str) -> str | None:
    """The execution log an entry also goes to: its record's in its account (none for the
    Default record or an unattributed request)."""
    return ks.execution_log(account, integration_id) if account and integration_id not in NOT_RECORDS else None


class LogStore:
    def __init__(
        self, client: Client, settings: LogSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.r = client
        self.settings = settings
        self.clock = clock
        script = resources.files("gateway.store").joinpath("scripts/log_append_batch.lua").read_text()
        self._append = client.register_script(script)

    def retention_seconds(self, acct: str) -> int:
        days = (
            self.settings.sandbox_retention_days
            if acct and is_sandbox(acct)
            else self.settings.retention_days
        )
        return days * 86400

    async def write(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Pipelined script calls, one per usage stream and `_CALL_BYTES` of JSON, one round
        trip per `_PIPELINE_BYTES` (500 entries with 64 KiB documents would otherwise be one
        60 MB write that outlasts the client's socket timeout, and fail the same way on every
        retry). A stream's calls go in order, so its entry ids follow the submission order."""
        if not entries:
            return
        now_ms = int(self.clock() * 1000)
        pending = 0
        pipe = self.r.pipeline(transaction=False)
        try:
            for group in self._group(entries):
                for start, end, size in _calls(group.lines):
                    keys, args = self._append_call(group, start, end, now_ms)
                    await self._append(keys=keys, args=args, client=pipe)
                    pending += size
                    if pending >= _PIPELINE_BYTES:
                        await pipe.execute()
                        pending = 0
            if pending:
                await pipe.execute()
        finally:
            await pipe.reset()

    def _group(self, entries: Sequence[Mapping[str, Any]]) -> list[_Group]:
        groups: dict[str, _Group] = {}
        for entry in entries:
            acct = normalize_account(str(entry.get("account") or ""))
            usage = ks.usage_log(acct) if acct else ks.GLOBAL_LOG
            group = groups.get(usage)
            if group is None:
                group = groups[usage] = _Group(usage, self.retention_seconds(acct), [])
            iid = str(entry.get("integration_id") or "")
            line = _Line(
                ks.request_index(str(entry.get("request_id") or "-")),
                json.dumps(entry, separators=(",", ":"), default=str),
                execution_log_of(acct, iid),
            )
            group.lines.append(line)
        return list(groups.values())

    def _append_call(self, group: _Group, start: int, end: int, now_ms: int) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of log_append_batch.lua for `group.lines[start:end]`."""
        lines = group.lines[start:end]
        streams: dict[str, int] = {}
        slots = [streams.setdefault(line.execution, len(streams) + 1) if line.execution else 0 for line in lines]
        maxlen = self.settings.max_entries_per_stream
        keys = [group.usage, rid_queue(group.usage), *(line.rid_key for line in lines), *streams]
        args: list[Any] = [
            maxlen,
            now_ms - group.retention * 1000,
            group.retention,
            "~" if maxlen > 1000 else "=",
            _RID_PREFIX,
            len(lines),
            REFS_PER_REQUEST_ID,
            SCOPED_REFS_PER_REQUEST_ID,
            *(line.body for line in lines),
            *slots,
        ]
        return keys, args

    async def query(self, key: str, q: LogQuery) -> tuple[list[dict[str, Any]], str | None]:
        if q.request_id is not None:
            usage = ks.usage_log_of(key)
            own = await self._find_in(usage, q.request_id)
            if not own:  # entries written before streams had their own index
                own = [entry for stream, entry in await self.find_all(q.request_id) if stream == usage]
            found = [entry for entry in own if key in (usage, _execution_log_of_entry(entry)) and matches(entry, q)]
            return found[: q.limit], None
        if q.cursor is not None and q.cursor.replace("0", "") == "-":
            return [], None  # nothing comes before 0-0 (Redis refuses the interval)
        upper = f"({q.cursor}" if q.cursor else "+"
        lower = str(max(int(q.since * 1000) - _CLOCK_SLACK_MS, 0)) if q.since is not None else "-"
        hits: list[tuple[str, dict[str, Any]]] = []
        scanned = 0
        last_seen: str | None = None
        while len(hits) <= q.limit:
            batch = await self.r.xrevrange(key, max=upper, min=lower, count=_SCAN_CHUNK)
            if not batch:
                last_seen = None
                break
            for entry_id, fields in batch:
                last_seen = entry_id
                entry = json.loads(fields["j"])
                if matches(entry, q):
                    hits.append((entry_id, entry))
                    if len(hits) > q.limit:
                        break
            scanned += len(batch)
            upper = f"({batch[-1][0]}"
            if len(batch) < _SCAN_CHUNK:
                last_seen = None
                break
            if scanned >= _SCAN_CAP:
                break
        if len(hits) > q.limit:
            return [e for _, e in hits[: q.limit]], hits[q.limit - 1][0]
        # Examined the cap without filling the page: hand a cursor to go on from there.
        return [e for _, e in hits], last_seen if scanned >= _SCAN_CAP else None

    async def find_all(self, request_id: str) -> list[tuple[str, dict[str, Any]]]:
        """(usage stream key, entry) of the retained entries with this request id, newest
        first (its last REFS_PER_REQUEST_ID, in every stream)."""
        if len(request_id) > 128:
            return []
        key = ks.request_index(request_id)
        if await self.r.type(key) == "string":  # an index written before it was a list
            ref = await self.r.get(key)
            refs = [str(ref)] if ref else []
        else:
            refs = [str(ref) for ref in await self.r.lrange(key, 0, -1)]
        return await self._entries([(stream, entry_id) for stream, _, entry_id in
                                    (ref.rpartition(" ") for ref in reversed(refs))])

    async def _find_in(self, usage: str, request_id: str) -> list[dict[str, Any]]:
        """The entries of one usage stream with this request id, newest first: its own index,
        which no other account's requests can crowd out."""
        if len(request_id) > 128:
            return []
        ids = await self.r.lrange(scoped_request_index(usage, request_id), 0, -1)
        return [entry for _, entry in await self._entries([(usage, entry_id) for entry_id in reversed(ids)])]

    async def _entries(self, located: list[tuple[str, str]]) -> list[tuple[str, dict[str, Any]]]:
        """(stream, entry) of each (stream, entry id) still retained, in order: one round trip."""
        pipe = self.r.pipeline(transaction=False)
        for stream, entry_id in located:
            pipe.xrange(stream, min=entry_id, max=entry_id)
        rows_each = await pipe.execute()
        return [(stream, json.loads(rows[0][1]["j"]))
                for (stream, _), rows in zip(located, rows_each, strict=True) if rows]

    async def find(self, request_id: str) -> tuple[str, dict[str, Any]] | None:
        """(stream key, entry) of the newest entry with this request id, if retained."""
        found = await self.find_all(request_id)
        return found[0] if found else None


def _execution_log_of_entry(entry: Mapping[str, Any]) -> str | None:
    return execution_log_of(normalize_account(str(entry.get("account") or "")), str(entry.get("integration_id") or ""))
