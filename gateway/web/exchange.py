"""One request's record as it passes the gateway: becomes a log entry and metric samples.

Documents are captured as they stream past (the first `log.max_document_bytes` of each, never
the whole body) and redacted only when the entry is built, which the log writer does off the
request path (`Exchange.log_entry` is the callable it is handed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.core.decision import Attribution
from gateway.core.reasons import FAULTS, Reason
from gateway.core.records import mask_application_id
from gateway.core.redaction import (
    cap_text,
    mask_application_ids,
    redact_authorization,
    redact_cookie,
    redact_document,
    redact_xml,
)
from gateway.core.versions import Version, version_tag

HEADER_CAP = 4096  # a stored (redacted) header; the head may be up to limits.max_head_bytes
MAX_SET_COOKIES = 16  # stored per entry (an upstream may send 100: 400 KiB of log entry)


# Taken beyond a document's cap: SPEC 6 caps documents after redaction, so a secret element
# or an application ID that straddles the cap is seen whole, masked, then cut.
CAPTURE_MARGIN = 1024


@dataclass(slots=True)
class Capture:
    """The first `cap` bytes of a document, taken as it streams past."""

    cap: int
    data: bytearray = field(default_factory=bytearray)
    truncated: bool = False  # more came than was kept

    def add(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        if room >= len(chunk):
            self.data += chunk
        else:
            self.data += chunk[: max(room, 0)]
            self.truncated = True


@dataclass(slots=True)
class Exchange:
    request_id: str
    client_ip: str
    doc_cap: int
    started: float = field(default_factory=time.monotonic)
    wall_time: float = field(default_factory=time.time)
    operation: str = "none"
    version: Version | None = None
    who: Attribution = field(default_factory=Attribution)
    outcome: str = "forwarded"
    reason: str | None = None
    sub_reason: str | None = None
    fault_code: str | None = None
    http_status: int = 0
    upstream_status: int | None = None
    request_bytes: int = 0
    response_bytes: int = 0
    decided_after: float | None = None
    upstream_seconds: float | None = None
    any_kind_documents: bool = False  # a RESTlet body: JSON, XML or text, redacted as each
    authorization: str | None = None
    cookie: str | None = None
    # The Set-Cookie values relayed to the client, raw (redacted in `log_entry`): set where an
    # upstream answer is relayed, from the headers the client gets (after any drop).
    set_cookies: list[str] = field(default_factory=list)
    finished: float | None = None
    request_doc: Capture = field(init=False)
    response_doc: Capture = field(init=False)

    def __post_init__(self) -> None:
        self.request_doc = Capture(self.doc_cap + CAPTURE_MARGIN)
        self.response_doc = Capture(self.doc_cap + CAPTURE_MARGIN)

    def reject(self, reason: Reason, sub_reason: str | None = None, *, outcome: str = "rejected") -> None:
        self.outcome = outcome
        self.reason = reason.value
        self.sub_reason = sub_reason
        self.fault_code = FAULTS[reason].code

    def refuse_below_the_rules(self, status: int, reason: str) -> None:
        """An HTTP-level answer (404, 405, a refused or stalled head), no SOAP or JSON fault."""
        self.outcome, self.reason, self.http_status = "rejected", reason, status

    def mark_decided(self) -> None:
        if self.decided_after is None:
            self.decided_after = time.monotonic() - self.started

    def finish(self) -> None:
        """Stop the clock: metrics and the (later built) log entry report one duration."""
        if self.finished is None:
            self.finished = time.monotonic()

    @property
    def duration(self) -> float:
        return (self.finished if self.finished is not None else time.monotonic()) - self.started

    def log_entry(self) -> dict[str, Any]:
        redact = redact_document if self.any_kind_documents else redact_xml
        request_doc, response_doc = self.request_doc, self.response_doc
        entry: dict[str, Any] = {
            "request_id": self.request_id,
            "time": datetime.fromtimestamp(self.wall_time, UTC).isoformat(timespec="milliseconds"),
            "duration_ms": round(self.duration * 1000, 3),
            "account": self.who.account,
            "integration_id": self.who.integration,
            "application_id": mask_application_id(self.who.application_id),
            "operation": self.operation,
            "endpoint_version": version_tag(self.version),
            "auth_method": self.who.auth_method.value,
            "user_email": self.who.user or None,
            "client_ip": self.client_ip,
            "outcome": self.outcome,
            "reason": self.reason,
            "sub_reason": self.sub_reason,
            "fault_code": self.fault_code,
            "http_status": self.http_status,
            "upstream_status": self.upstream_status,
            "request_bytes": self.request_bytes,
            "response_bytes": self.response_bytes,
            "request_document": redact(bytes(request_doc.data), self.doc_cap, truncated=request_doc.truncated),
            "response_document": redact(bytes(response_doc.data), self.doc_cap, truncated=response_doc.truncated),
        }
        if self.authorization:
            entry["authorization"] = cap_text(logged_authorization(self.authorization), HEADER_CAP)
        if self.cookie:
            entry["cookie"] = cap_text(redact_cookie(self.cookie), HEADER_CAP)
        if self.set_cookies:
            entry["set_cookie"] = [cap_text(redact_cookie(value, set_cookie=True), HEADER_CAP)
                                   for value in self.set_cookies[:MAX_SET_COOKIES]]
        return entry


def logged_authorization(value: str) -> str:
    """NLAuth and OAuth keep their parameters (signatures and passwords masked); any other
    scheme (Basic, Bearer...) is a credential as a whole and keeps only its name."""
    scheme = value.strip().split(None, 1)[0] if value.strip() else ""
    if scheme.lower() in ("nlauth", "oauth"):
        return mask_application_ids(redact_authorization(value))
    return f"{scheme[:20]} ***".strip()

