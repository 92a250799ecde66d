"""Streaming SOAP 1.1 envelope inspector (SPEC section 2 "Streaming and structure", R1).

The adapter feeds request-body chunks as they arrive. A libxml2 push parser with a structural
target (never a tree) checks the whole envelope; the *head* (everything up to the start tag of
the Body's first child, or up to the end of `login` / `ssoLogin`, whose credentials live inside)
is snapshotted the moment it completes so the adapter can decide while the body still streams.
After the head the target switches to a fast path that only counts depth and looks for guarded
element names, because multi-megabyte bodies must cost as little Python per element as possible.
"""

from __future__ import annotations

import re
import threading
from typing import Any, Final

from lxml import etree

from gateway.core.facts import SOAP11_NS, SOAP12_NS, EnvelopeHead, Passport, SsoPassport, TokenPassport
from gateway.errors import EnvelopeError

MALFORMED: Final = "malformed_request"
TOO_LARGE: Final = "request_too_large"

# One hardened configuration for every parser: no DTD, no entity expansion, no network, libxml2's
# default (non-huge) limits. A DOCTYPE never even reaches libxml2: the prolog scan refuses it.
PARSER_OPTIONS: Final[dict[str, bool]] = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "attribute_defaults": False,
    "huge_tree": False,
    "collect_ids": False,
    "recover": False,
    "remove_comments": False,
    "remove_pis": False,
}

_ENVELOPE: Final = f"{{{SOAP11_NS}}}Envelope"
_HEADER: Final = f"{{{SOAP11_NS}}}Header"
_BODY: Final = f"{{{SOAP11_NS}}}Body"

# Credential containers: allowed only where SPEC section 2 puts them, nowhere else.
_GUARDED: Final = frozenset({"passport", "tokenPassport", "applicationInfo", "ssoPassport"})
_GUARDED_SUFFIXES: Final = ("passport", "Passport", "applicationInfo")  # cheap pre-filter
_HEADER_PARTS: Final = frozenset({"passport", "tokenPassport", "applicationInfo"})
_FIELDS: Final[dict[str, frozenset[str]]] = {
    "passport": frozenset({"email", "password", "account", "role"}),
    "tokenPassport": frozenset({"account", "consumerKey", "token", "nonce", "timestamp", "signature"}),
    "applicationInfo": frozenset({"applicationId"}),
    "ssoPassport": frozenset({"authenticationToken", "partnerId", "partnerAccount", "partnerUserId"}),
}
_LOGIN_PARTS: Final = {"login": "passport", "ssoLogin": "ssoPassport"}

_BOM: Final = b"\xef\xbb\xbf"
_MAX_DECL: Final = 512
_WS: Final = b" \t\r\n"
_DECL_RE: Final = re.compile(
    rb"<\?xml\s+version\s*=\s*(['\"])1\.[0-9]+\1"
    rb"(?:\s+encoding\s*=\s*(['\"])([A-Za-z][A-Za-z0-9._-]*)\2)?"
    rb"(?:\s+standalone\s*=\s*(['\"])(?:yes|no)\4)?\s*\?>"
)


XML_SPACE: Final = " \t\r\n"  # XML 1.0's S production


class _Violation(Exception):
    def __init__(self, detail: str, after_head: bool) -> None:
        super().__init__(detail)
        self.detail = detail
        self.after_head = after_head


def _local(tag: str) -> str:
    return tag[tag.rfind("}") + 1 :]


class _Part:
    """One credential container being read: its fields' texts and the two attributes we need."""

    __slots__ = ("kind", "fields", "values", "role", "algorithm", "raw_account")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.fields = _FIELDS[kind]
        self.values: dict[str, str] = {}
        self.role: str | None = None
        self.algorithm: str | None = None
        self.raw_account: str | None = None  # untrimmed: a TBA signature covers it as sent


class _Target:
    """lxml parser target: structure only. Raises _Violation to stop the parse."""

    def __init__(self, max_depth: int, soap_action: str | None) -> None:
        self.max_depth = max_depth
        self.soap_action = soap_action
        self.depth = 0
        self.fast = False  # the head is complete: only depth, guarded names and top levels matter
        self.env_children = 0
        self.body_state = 0  # 0 not seen, 1 open, 2 closed
        self.body_children = 0
        self.root_closed = False
        self.operation: str | None = None
        self.parts: dict[str, _Part] = {}  # "header:passport", "tokenPassport", ..., "login:passport"
        self.part: _Part | None = None
        self.part_depth = 0
        self.field: str | None = None
        self.field_depth = 0
        self.text: list[str] = []
        self.head: EnvelopeHead | None = None

    def fail(self, detail: str) -> _Violation:
        return _Violation(detail, after_head=self.head is not None)

    # -- lxml target interface; the first lines of start/end/data are the per-element hot path
    def start(self, tag: str, attrib: Any) -> None:
        d = self.depth = self.depth + 1
        if self.fast and d > 3:
            if d > self.max_depth:
                raise self.fail("depth")
            if tag.endswith(_GUARDED_SUFFIXES) and _local(tag) in _GUARDED:
                raise self.fail("misplaced_credentials")
            return
        self._start(tag, attrib, d)

    def end(self, tag: str) -> None:
        d = self.depth
        self.depth = d - 1
        if self.fast and d > 3:
            return
        self._end(tag, d)

    def data(self, text: str) -> None:
        if self.depth <= 2 or self.field is not None:
            self._data(text)

    def comment(self, text: str) -> None:
        if self.root_closed:
            raise self.fail("trailing_content")

    def pi(self, target: str, data: str | None = None) -> None:
        if self.root_closed:
            raise self.fail("trailing_content")

    def doctype(self, *args: Any) -> None:
        raise self.fail("dtd")

    def close(self) -> None:
        return None

    # -- the slow path: the head, and the Envelope/Body levels after it
    def _start(self, tag: str, attrib: Any, d: int) -> None:
        if d > self.max_depth:
            raise self.fail("depth")
        if d == 1:
            if tag != _ENVELOPE:
                raise self.fail("soap12" if tag.startswith(f"{{{SOAP12_NS}}}") else "not_soap_envelope")
            return
        if d == 2:
            self._envelope_child(tag)
            return
        local = _local(tag)
        if d == 3:
            if self.body_state == 1:
                self._body_child(tag, local)
            elif local in _GUARDED:
                if local not in _HEADER_PARTS:
                    raise self.fail("misplaced_credentials")
                self._open_part("header:passport" if local == "passport" else local, local, d)
            return
        if self.part is not None and d == self.part_depth + 1:
            self._open_field(local, attrib, d)
        if local in _GUARDED:
            login_part = _LOGIN_PARTS.get(_local(self.operation or ""))
            if not (d == 4 and self.body_state == 1 and login_part == local):
                raise self.fail("misplaced_credentials")
            self._open_part("login:passport" if local == "passport" else local, local, d)

    def _envelope_child(self, tag: str) -> None:
        if self.body_state == 2:
            raise self.fail("content_after_body")
        if tag == _HEADER:
            if self.env_children:  # anything before it was a Header (others fail at once)
                raise self.fail("two_headers")
        elif tag == _BODY:
            self.body_state = 1
        elif _local(tag) in ("Header", "Body"):
            raise self.fail("not_soap_envelope")
        else:
            raise self.fail("envelope_children")
        self.env_children += 1

    def _body_child(self, tag: str, local: str) -> None:
        self.body_children += 1
        if self.body_children > 1:
            raise self.fail("body_children")
        if local in _GUARDED:
            raise self.fail("misplaced_credentials")
        self.operation = tag
        if local not in _LOGIN_PARTS:
            self._complete_head()

    def _open_part(self, key: str, kind: str, d: int) -> None:
        if key in self.parts or self.part is not None:
            raise self.fail("duplicate_credentials")
        self.part = self.parts[key] = _Part(kind)
        self.part_depth = d

    def _open_field(self, local: str, attrib: Any, d: int) -> None:
        part = self.part
        assert part is not None
        if local not in part.fields:
            return
        if local in part.values:
            raise self.fail("duplicate_field")
        part.values[local] = ""
        if local == "role":
            part.role = attrib.get("internalId")
        elif local == "signature":
            part.algorithm = attrib.get("algorithm")
        self.field, self.field_depth, self.text = local, d, []

    def _end(self, tag: str, d: int) -> None:
        if self.field is not None and d == self.field_depth:
            assert self.part is not None
            text = "".join(self.text)
            self.part.values[self.field] = text.strip()
            if self.field == "account":
                self.part.raw_account = text
            self.field, self.text = None, []
        elif self.part is not None and d == self.part_depth:
            self.part = None
        elif d == 3 and self.body_state == 1 and self.head is None:
            self._complete_head()  # the end of login / ssoLogin
        elif d == 2:
            if tag == _BODY:
                if not self.body_children:
                    raise self.fail("empty_body")
                self.body_state = 2
        elif d == 1:
            if self.body_state != 2:
                raise self.fail("no_body")
            self.root_closed = True

    def _data(self, text: str) -> None:
        if self.field is not None:
            if self.depth == self.field_depth:
                self.text.append(text)
        elif self.depth == 1 and text.strip(XML_SPACE):  # XML's whitespace, not U+00A0 or U+3000
            raise self.fail("text_in_envelope")
        elif self.depth == 2 and self.body_state == 1 and text.strip(XML_SPACE):
            raise self.fail("body_children")

    def _complete_head(self) -> None:
        assert self.operation is not None
        op_tag = self.operation
        namespace = op_tag[1 : op_tag.index("}")] if op_tag.startswith("{") else None
        self.head = _build_head(_local(op_tag), namespace, self.parts)
        self.fast = True
        action = _soap_action(self.soap_action)
        if action and action != self.head.operation:
            raise _Violation("soapaction_mismatch", after_head=False)


def _soap_action(value: str | None) -> str:
    if value is None:
        return ""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value


def _passport(part: _Part | None) -> Passport | None:
    if part is None:
        return None
    v = part.values
    return Passport(
        email=v.get("email"), password=v.get("password"), account=v.get("account"), role=part.role
    )


def _build_head(operation: str, namespace: str | None, parts: dict[str, _Part]) -> EnvelopeHead:
    tp = parts.get("tokenPassport")
    token_passport = None
    if tp is not None:
        v = tp.values
        token_passport = TokenPassport(
            account=v.get("account"),
            consumer_key=v.get("consumerKey"),
            token=v.get("token"),
            nonce=v.get("nonce"),
            timestamp=v.get("timestamp"),
            signature=v.get("signature"),
            algorithm=tp.algorithm,
            signed_account=tp.raw_account,
        )
    sso = parts.get("ssoPassport")
    sso_passport = None
    if sso is not None:
        v = sso.values
        sso_passport = SsoPassport(
            authentication_token=v.get("authenticationToken"),
            partner_id=v.get("partnerId"),
            partner_account=v.get("partnerAccount"),
            partner_user_id=v.get("partnerUserId"),
        )
    app_info = parts.get("applicationInfo")
    return EnvelopeHead(
        operation=operation,
        operation_namespace=namespace,
        header_passport=_passport(parts.get("header:passport")),
        token_passport=token_passport,
        application_id=app_info.values.get("applicationId") if app_info is not None else None,
        login_passport=_passport(parts.get("login:passport")),
        sso_passport=sso_passport,
    )


def _scan_prolog(buf: bytes | bytearray) -> str | None:
    """The empty string once `buf` soundly reaches the root start tag, a violation detail if it
    cannot, None while more bytes are needed. Only a UTF-8 declaration and whitespace may precede
    the root."""
    pos = 0
    if buf[:3] == _BOM:
        pos = 3
    elif _BOM.startswith(buf):
        return None
    rest = buf[pos:]
    if rest[:1] in (b"\xfe", b"\xff", b"\x00"):
        return "encoding"
    if rest.startswith(b"<?xml") or b"<?xml".startswith(rest):
        end = rest.find(b"?>")
        if end < 0:
            return "prolog" if len(rest) > _MAX_DECL else None
        m = _DECL_RE.fullmatch(rest, 0, end + 2)
        if m is None:
            return "prolog"
        if m.group(3) is not None and m.group(3).lower() != b"utf-8":
            return "encoding"
        pos += end + 2
    while pos < len(buf) and buf[pos] in _WS:
        pos += 1
    if pos < len(buf) and buf[pos] != 0x3C:  # "<"
        return "prolog"
    if pos + 1 >= len(buf):
        return None
    nxt = buf[pos + 1 : pos + 2]
    if nxt == b"!":
        if pos + 2 >= len(buf):
            return None
        return "dtd" if buf[pos + 2 : pos + 3] in (b"D", b"d") else "prolog"
    return "prolog" if nxt == b"?" else ""


class _NamespaceErrors(etree.PyErrorLog):  # type: ignore[misc]  # lxml ships no stubs
    """Counts libxml2's namespace errors (not warnings) in this thread.

    A target parser reads through them silently: `<nope:get>` with `nope` undeclared reaches the
    target as `get`, a malformed QName as a bare name, an attribute bound twice through two
    prefixes of one URI keeps one value; lxml never raises. libxml2 still reports each error,
    and lxml forwards every report to the thread's global error log, so the inspector compares
    the count around its own feeds (parsing is synchronous: a change in between is its own
    document's). Everything else is dropped: the parser's own error handling deals with it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.undeclared = False  # the last error was an undeclared prefix

    def receive(self, log_entry: Any) -> None:
        if log_entry.domain == _NAMESPACE_DOMAIN and log_entry.level >= _ERROR_LEVEL:
            self.count += 1
            self.undeclared = log_entry.type == _NS_UNDEFINED


_NAMESPACE_DOMAIN: Final = etree.ErrorDomains.NAMESPACE
_ERROR_LEVEL: Final = etree.ErrorLevels.ERROR
_NS_UNDEFINED: Final = etree.ErrorTypes.NS_ERR_UNDEFINED_NAMESPACE
_THREAD: Final = threading.local()


def _namespace_errors() -> _NamespaceErrors:
    log: _NamespaceErrors | None = getattr(_THREAD, "log", None)
    if log is None:  # lxml's global error log is per thread: install ours once per thread
        log = _THREAD.log = _NamespaceErrors()
        etree.use_global_python_log(log)
    return log


class _ParserPool:
    """Target parsers cost more to build than a small envelope costs to parse (lxml inspects the
    target's methods on every construction), so parsers that closed cleanly are reused."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.free: list[tuple[Any, _Target]] = []

    def acquire(self, max_depth: int, soap_action: str | None) -> tuple[Any, _Target]:
        if self.free:
            parser, target = self.free.pop()
            target.__init__(max_depth, soap_action)  # type: ignore[misc]
            return parser, target
        target = _Target(max_depth, soap_action)
        return etree.XMLParser(target=target, **PARSER_OPTIONS), target

    def release(self, parser: Any, target: _Target) -> None:
        if len(self.free) < self.size:
            self.free.append((parser, target))


_POOL: Final = _ParserPool(64)


class EnvelopeInspector:
    """Feed the request body chunk by chunk; read `head` / `error` after each feed.

    `feed` and `close` never raise. The first violation is kept; later feeds are ignored.
    """

    def __init__(self, *, max_depth: int, max_head_bytes: int, soap_action: str | None) -> None:
        self._max_head_bytes = max_head_bytes
        self._max_depth = max_depth
        self._soap_action = soap_action
        self._target = _Target(max_depth, soap_action)  # replaced by the pooled parser's own
        self._parser: Any = None  # taken from the pool once the prolog is known to be sound
        self._prolog = bytearray()
        self._parsed = 0  # bytes handed to libxml2
        self._head: EnvelopeHead | None = None
        self._error: EnvelopeError | None = None
        self._error_after_head = False
        self._complete = False
        self._closed = False
        self.bytes_fed = 0

    @property
    def head(self) -> EnvelopeHead | None:
        return self._head

    @property
    def error(self) -> EnvelopeError | None:
        return self._error

    @property
    def error_after_head(self) -> bool:
        return self._error_after_head

    @property
    def complete(self) -> bool:
        return self._complete

    def feed(self, data: bytes) -> None:
        if self._error is not None or self._closed or not data:
            return
        if not isinstance(data, bytes):  # bytearray / memoryview from an adapter
            data = bytes(data)
        self.bytes_fed += len(data)
        try:
            if self._parser is None:
                data = self._await_root(data)
                if not data:
                    return
            self._push(data)
        except _Violation as v:
            self._fail(MALFORMED, v.detail, v.after_head)
        except etree.XMLSyntaxError as exc:
            self._fail(MALFORMED, self._syntax_detail(exc), self._target.head is not None)
        except Exception:  # never let a parser surprise escape into the proxy
            self._fail(MALFORMED, "not_well_formed", self._target.head is not None)

    def close(self) -> None:
        if self._closed or self._error is not None:
            self._closed = True
            return
        self._closed = True
        try:
            if self._parser is None:
                raise _Violation(_scan_prolog(self._prolog) or "incomplete", after_head=False)
            self._parser_call(self._parser.close)
            if not self._target.root_closed:
                raise _Violation("incomplete", after_head=self._target.head is not None)
        except _Violation as v:
            self._fail(MALFORMED, v.detail, v.after_head)
        except etree.XMLSyntaxError:
            detail = "trailing_content" if self._target.root_closed else "incomplete"
            self._fail(MALFORMED, detail, self._target.head is not None)
        except Exception:
            self._fail(MALFORMED, "not_well_formed", self._target.head is not None)
        else:
            _POOL.release(self._parser, self._target)  # closed cleanly: safe to reuse
            if self._head is None:
                self._fail(MALFORMED, "no_body", False)
            else:
                self._complete = True

    # -- internals
    def _await_root(self, data: bytes) -> bytes:
        """Buffer until the prolog is judged; then return everything buffered for the parser."""
        buf = self._prolog
        # Whitespace after undecided whitespace decides nothing: skip the rescan, so a client
        # dribbling blanks byte by byte costs linear, not quadratic, time.
        rescan = not (buf and buf[-1] in _WS and not data.strip(_WS))
        buf += data
        verdict = _scan_prolog(buf) if rescan else None
        if verdict is None:
            if len(buf) >= self._max_head_bytes:
                self._fail(TOO_LARGE, "head_too_large", False)
            return b""
        if verdict:
            raise _Violation(verdict, after_head=False)
        self._prolog = bytearray()
        self._parser, self._target = _POOL.acquire(self._max_depth, self._soap_action)
        return bytes(buf)

    def _push(self, data: bytes) -> None:
        if self._head is not None:
            self._parsed += len(data)
            self._parser_call(self._parser.feed, data)
            return
        # Before the head, never hand libxml2 a byte past the head limit: a head that fits is
        # then always seen before the limit is judged, whatever the client's chunking.
        while True:
            room = self._head_limit() - self._parsed
            first = data if len(data) <= room else data[: max(room, 0)]
            try:
                if first:
                    self._parsed += len(first)
                    self._parser_call(self._parser.feed, first)
            finally:
                self._snapshot_head()
            data = data[len(first):]
            if self._head is not None:
                break
            if self._parsed >= self._head_limit():
                self._fail(TOO_LARGE, "head_too_large", False)
                return
            if not data:
                return
            # The limit grew (a login's start tag came in): the rest of the chunk goes on.
        if data:
            self._parsed += len(data)
            self._parser_call(self._parser.feed, data)

    def _head_limit(self) -> int:
        """R1 counts the bytes up to the end of the Body's first child's start tag. `login` and
        `ssoLogin` carry their credentials inside that element, read before the decision too:
        once their start tag is in, they get a budget of their own (so the decision still
        waits on at most 2 x max_head_bytes)."""
        return self._max_head_bytes * (2 if self._target.operation is not None else 1)

    def _parser_call(self, call: Any, *args: bytes) -> None:
        """One feed or close; a namespace error reported meanwhile is a violation: the envelope
        is not namespace-well-formed, and a backend would read it differently."""
        errors = _namespace_errors()
        before = errors.count
        call(*args)
        if errors.count != before:
            raise self._target.fail("undeclared_prefix" if errors.undeclared else "namespace")

    def _snapshot_head(self) -> None:
        head = self._target.head
        if head is not None and self._head is None:
            self._head = head

    def _syntax_detail(self, exc: Exception) -> str:
        if self._target.root_closed:
            return "trailing_content"
        message = str(exc).lower()
        if "depth" in message:
            return "depth"
        if "encoding" in message or "utf-8" in message:
            return "encoding"
        return "not_well_formed"

    def _fail(self, reason: str, detail: str, after_head: bool) -> None:
        if self._error is None:
            self._snapshot_head()
            self._error = EnvelopeError(reason, detail)
            self._error_after_head = after_head and self._head is not None
