"""Secrets out of logged documents and headers (SPEC section 6).

The documents are prefixes captured while streaming, so they may be truncated anywhere or not be
well-formed at all: redaction scans text instead of parsing, and a secret element that is cut
off is redacted from its open tag to the end of the data. Over-redaction is acceptable;
a surviving secret byte is not.
"""

from __future__ import annotations

import re
from typing import Final

MASK: Final = "***"

SECRET_ELEMENTS: Final = (
    "password", "password2", "currentPassword", "newPassword", "newPassword2", "signature",
    "authenticationToken", "tokenSecret", "consumerSecret",
)
SECRET_JSON_KEYS: Final = (*SECRET_ELEMENTS, "token_secret", "consumer_secret")

_NAMES: Final = "|".join(sorted(SECRET_ELEMENTS, key=len, reverse=True))
# A secret element's open or close tag, any prefix; names matched case-insensitively (safer).
_SECRET_NAME_RE: Final = re.compile(
    rf"<(/?)(?:[A-Za-z_][\w.\-]*:)?(?:{_NAMES})(?=[\s/>]|\Z)", re.IGNORECASE
)
_SECRET_TAG_RE: Final = re.compile(  # the whole tag; attribute values cannot hold "<" in XML
    rf"<(/?)(?:[A-Za-z_][\w.\-]*:)?(?:{_NAMES})(?=[\s/>]|\Z)((?:\"[^\"<]*\"|'[^'<]*'|[^<>\"'])*)(>|\Z)",
    re.IGNORECASE,
)
# Every secret element name, lower-cased, contains one of these: an ASCII document without any
# of them has no secret element, and skips the tag scan (most answers). Not for other text:
# case-insensitive matching folds "ſ" into "s" and "ı" into "i", which lower() does not.
_SECRET_NEEDLES: Final = ("password", "signature", "authenticationtoken", "tokensecret", "consumersecret")
_CDATA_OPEN: Final = "<![CDATA["
_CDATA_CLOSE: Final = "]]>"

_JSON_KEY_RE: Final = re.compile(
    r"\"(?:" + "|".join(re.escape(k) for k in SECRET_JSON_KEYS) + r")\"\s*:\s*", re.IGNORECASE
)
_JSON_STRING_RE: Final = re.compile(r"\"(?:[^\"\\]|\\.)*(?:\"|\\?\Z)", re.DOTALL)
_JSON_SCALAR_RE: Final = re.compile(r"[^,}\]\s]*")

_AUTH_PARAM_RE: Final = re.compile(
    r"((?:nlauth_signature|nlauth_password|oauth_signature)\s*=\s*)(\"(?:[^\"\\]|\\.)*\"?|[^,\s]*)",
    re.IGNORECASE,
)


# An application ID in any spelling clients use: 32 hex, or NetSuite's 8-4-4-4-12 UUID form.
_APPLICATION_ID_RE: Final = re.compile(
    r"(?<![0-9A-Fa-f-])(?:[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{8})"
    r"([0-9A-Fa-f]{4})(?![0-9A-Fa-f-])"
)


# Candidate runs first, found without the regex engine stepping through every character: the
# text is mapped in C to "x" for a hex digit or dash and " " for any other ASCII character, so a
# candidate (at least 32 such characters in a row) is a run of x. Only candidates meet the exact
# pattern. The regex engine at every position of the text was most of a log entry's cost.
_RUN_CHARS: Final = frozenset("0123456789abcdefABCDEF-")
_RUN_MAP: Final = str.maketrans({chr(i): "x" if chr(i) in _RUN_CHARS else " " for i in range(128)})
_CANDIDATE: Final = "x" * 32
_CANDIDATE_REST_RE: Final = re.compile(r"x*")


def _mask_id(m: re.Match[str]) -> str:
    return "*" * 28 + m.group(1).upper()


def mask_application_ids(text: str) -> str:
    """Application IDs keep only their last four characters (SPEC section 6)."""
    mapped = text.translate(_RUN_MAP)  # non-ASCII characters map to themselves, never to "x"
    out: list[str] = []
    pos = 0
    found = mapped.find(_CANDIDATE)  # str.find: a regex would try every short run of x
    while found >= 0:
        start = found
        rest = _CANDIDATE_REST_RE.match(mapped, found + 32)
        end = rest.end() if rest else found + 32
        found = mapped.find(_CANDIDATE, end)
        while text[start] == "-":  # an ID starts with a hex digit: leading dashes are context
            start += 1
        if end - start < 32:
            continue
        # The candidate is a whole run of hex digits and dashes: an ID inside it must span it,
        # and the exact pattern's lookbehind and lookahead hold at its edges.
        out.append(text[pos:start])
        out.append(_APPLICATION_ID_RE.sub(_mask_id, text[start:end]))
        pos = end
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def cap_text(text: str, cap: int) -> str:
    """`text` cut to at most `cap` UTF-8 bytes, never splitting a character. A header's bytes
    that were no UTF-8 reach here as lone surrogates (aiohttp decodes with surrogateescape):
    they become U+FFFD, so the entry can still be stored."""
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", errors="replace")
        text = raw.decode("utf-8")
    if len(raw) <= cap:
        return text
    return raw[: max(cap, 0)].decode("utf-8", errors="ignore")


def redact_xml(data: bytes, cap: int) -> str:
    """The text of every secret element replaced by ***; result capped to `cap` bytes."""
    text = data.decode("utf-8", errors="replace")
    if text.isascii():
        lowered = text.lower()
        if not any(needle in lowered for needle in _SECRET_NEEDLES):
            return cap_text(mask_application_ids(text), cap)
    out: list[str] = []
    pos = 0
    while True:
        found = _SECRET_NAME_RE.search(text, pos)
        if found is None:
            out.append(text[pos:])
            break
        m = _SECRET_TAG_RE.match(text, found.start())
        if m is None:  # a broken open or close tag: whatever follows might be the secret
            out.append(text[pos : found.end()] + MASK)
            break
        out.append(text[pos : m.end()])
        pos = m.end()
        if m.group(1) or m.group(2).rstrip().endswith("/") or not m.group(3):
            continue  # a close tag, a self-closing element, or an open tag cut off mid-way
        end = _secret_content_end(text, pos)
        out.append(MASK)
        pos = end
    return cap_text(mask_application_ids("".join(out)), cap)


def _secret_content_end(text: str, pos: int) -> int:
    """Where the content of a secret element opened just before `pos` ends (its close tag), or
    the end of the data. CDATA is skipped whole (a close tag inside it is text); nested secret
    elements count, so an inner close tag does not end the outer element."""
    depth = 1
    while True:
        m = _SECRET_TAG_RE.search(text, pos)
        cdata = text.find(_CDATA_OPEN, pos)
        if cdata >= 0 and (m is None or cdata < m.start()):
            close = text.find(_CDATA_CLOSE, cdata + len(_CDATA_OPEN))
            if close < 0:
                return len(text)
            pos = close + len(_CDATA_CLOSE)
            continue
        if m is None or not m.group(3):
            return len(text)
        if m.group(1):
            depth -= 1
            if depth == 0:
                return m.start()
        elif not m.group(2).rstrip().endswith("/"):
            depth += 1
        pos = m.end()


def redact_json(data: bytes, cap: int) -> str:
    """The values of secret keys replaced by "***" (strings, scalars, objects, arrays), tolerant
    of truncated or invalid JSON; result capped to `cap` bytes."""
    text = data.decode("utf-8", errors="replace")
    out: list[str] = []
    pos = 0
    while True:
        m = _JSON_KEY_RE.search(text, pos)
        if m is None:
            out.append(text[pos:])
            break
        out.append(text[pos : m.end()])
        pos = m.end()
        if pos >= len(text):
            break
        first = text[pos]
        if first == '"':
            s = _JSON_STRING_RE.match(text, pos)
            pos = s.end() if s else len(text)
            out.append(f'"{MASK}"')
        elif first in "{[":
            pos = _json_container_end(text, pos)
            out.append(f'"{MASK}"')
        else:
            s = _JSON_SCALAR_RE.match(text, pos)
            pos = s.end() if s else len(text)
            out.append(f'"{MASK}"')
    return cap_text(mask_application_ids("".join(out)), cap)


def _json_container_end(text: str, pos: int) -> int:
    depth = 0
    while pos < len(text):
        ch = text[pos]
        if ch == '"':
            s = _JSON_STRING_RE.match(text, pos)
            pos = s.end() if s else len(text)
            continue
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return pos + 1
        pos += 1
    return len(text)


def redact_authorization(value: str) -> str:
    """NLAuth / OAuth Authorization values with nlauth_signature and oauth_signature masked."""
    def mask(m: re.Match[str]) -> str:
        quoted = m.group(2).startswith('"')
        return m.group(1) + (f'"{MASK}"' if quoted else MASK)

    return _AUTH_PARAM_RE.sub(mask, value)


def redact_cookie(value: str, *, set_cookie: bool = False) -> str:
    """Cookie values masked, names kept. A Cookie header is pairs split by ";" (several headers
    joined by ", " stay one pair: a comma never ends a value here, so the name after it is
    masked too, which is over-redaction, never a leak). A nameless pair ("v", "=v", which
    browsers accept) is masked whole. For Set-Cookie only the cookie-pair before the first ";"
    is masked, its attributes kept (RFC 6265 section 5.2)."""
    if set_cookie:
        pair, sep, attributes = value.partition(";")
        return _masked_pair(pair) + sep + attributes
    return ";".join(_masked_pair(pair) for pair in value.split(";"))


def _masked_pair(pair: str) -> str:
    if not pair.strip():
        return pair
    name, eq, _ = pair.partition("=")
    if eq and name.strip():
        return f"{name}={MASK}"
    return pair[: len(pair) - len(pair.lstrip())] + MASK


def redact_header_value(name: str, value: str) -> str:
    """A stored header value: Authorization, Cookie and Set-Cookie redacted, others unchanged."""
    lowered = name.lower()
    if lowered == "authorization":
        return redact_authorization(value)
    if lowered == "cookie":
        return redact_cookie(value)
    if lowered == "set-cookie":
        return redact_cookie(value, set_cookie=True)
    return value
