"""Secrets out of logged documents and headers (SPEC section 6).

The documents are prefixes captured while streaming, so they may be truncated anywhere or not be
well-formed at all: redaction scans text instead of parsing, and a secret element that is cut
off is redacted from its open tag to the end of the data. Over-redaction is acceptable;
a surviving secret byte is not.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Final, NamedTuple

MASK: Final = "***"

SECRET_ELEMENTS: Final = (
    "password", "password2", "currentPassword", "newPassword", "newPassword2", "signature",
    "authenticationToken", "tokenSecret", "consumerSecret",
)
SECRET_JSON_KEYS: Final = (*SECRET_ELEMENTS, "token_secret", "consumer_secret")

_NAMES: Final = "|".join(sorted(SECRET_ELEMENTS, key=len, reverse=True))
# Any prefix: XML names start with letters of any script ("é:password"), so anything up to a
# colon that cannot end a tag counts (over-redaction is acceptable).
_PREFIX: Final = r"(?:[^\s<>/=:\"'!?]+:)?"


class _Element(NamedTuple):
    """An element sought by name, any prefix, matched case-insensitively (safer): `name`
    finds where one of its tags starts, `tag` matches the whole tag (attribute values cannot
    hold "<" in XML)."""

    name: re.Pattern[str]
    tag: re.Pattern[str]


def _element(names: str) -> _Element:
    return _Element(
        re.compile(rf"<(/?){_PREFIX}(?:{names})(?=[\s/>]|\Z)", re.IGNORECASE),
        re.compile(rf"<(/?){_PREFIX}(?:{names})(?=[\s/>]|\Z)((?:\"[^\"<]*\"|'[^'<]*'|[^<>\"'])*)(>|\Z)",
                   re.IGNORECASE))


_SECRET: Final = _element(_NAMES)
_APPLICATION_ID: Final = _element("applicationId")
# Every secret element name, lower-cased, contains one of these: an ASCII document without any
# of them has no secret element, and skips the tag scan (most answers). Not for other text:
# case-insensitive matching folds "ſ" into "s" and "ı" into "i", which lower() does not.
_SECRET_NEEDLES: Final = ("password", "signature", "authenticationtoken", "tokensecret", "consumersecret")
# Markup inside an element's content whose text is no tag: a close tag in a CDATA section, a
# comment or a processing instruction ends nothing ("<p>x<!--</p>-->secret</p>" is one element).
_OPAQUE: Final = (("<![CDATA[", "]]>"), ("<!--", "-->"), ("<?", "?>"))
_OPAQUE_RE: Final = re.compile(r"<!\[CDATA\[|<!--|<\?")

_SECRET_JSON_NAMES: Final = frozenset(k.lower() for k in SECRET_JSON_KEYS)
_JSON_COLON_RE: Final = re.compile(r"\s*:\s*")
_JSON_STRING_RE: Final = re.compile(r"\"(?:[^\"\\]|\\.)*(?:\"|\\?\Z)", re.DOTALL)
_JSON_SCALAR_RE: Final = re.compile(r"[^,}\]\s]*")

# An unquoted value runs to the next ", name=" or the end: a password may hold spaces and
# commas ("correct horse, battery"), and what follows them is still the secret.
_AUTH_PARAM_RE: Final = re.compile(
    r"((?:nlauth_signature|nlauth_password|oauth_signature)\s*=\s*)"
    r"(\"(?:[^\"\\]|\\.)*\"?|.*?(?=,\s*[A-Za-z_][\w-]*\s*=|\Z))",
    re.IGNORECASE | re.DOTALL,
)


# Candidate runs first, found without the regex engine stepping through every character: the
# text is mapped in C to "x" for a hex digit or dash and " " for any other ASCII character, so a
# candidate (at least 32 such characters in a row) is a run of x. The regex engine at every
# position of the text was most of a log entry's cost.
_RUN_CHARS: Final = frozenset("0123456789abcdefABCDEF-")
_RUN_MAP: Final = str.maketrans({chr(i): "x" if chr(i) in _RUN_CHARS else " " for i in range(128)})
_CANDIDATE: Final = "x" * 32
_CANDIDATE_REST_RE: Final = re.compile(r"x*")
_HEX_DIGITS: Final = 32


def _masked_id(hex_digits: str) -> str:
    return "*" * 28 + hex_digits[-4:].upper()


def mask_application_ids(text: str) -> str:
    """Application IDs keep only their last four characters (SPEC section 6). An ID is compared
    with hyphens ignored (SPEC 1), so any run of hex digits and hyphens holding exactly 32 hex
    digits is one, in whatever spelling: NetSuite's UUID form, a trailing hyphen, a hyphen
    after every digit. Longer runs (64-hex consumer keys, token ids) are no ID."""
    mapped = text.translate(_RUN_MAP)  # non-ASCII characters map to themselves, never to "x"
    out: list[str] = []
    pos = 0
    found = mapped.find(_CANDIDATE)  # str.find: a regex would try every short run of x
    while found >= 0:
        start = found
        rest = _CANDIDATE_REST_RE.match(mapped, found + 32)
        end = rest.end() if rest else found + 32
        found = mapped.find(_CANDIDATE, end)
        digits = text[start:end].replace("-", "")
        if len(digits) != _HEX_DIGITS:
            continue
        while text[start] == "-":  # dashes around an ID are context, kept
            start += 1
        stop = end
        while text[stop - 1] == "-":
            stop -= 1
        out.append(text[pos:start])
        out.append(_masked_id(digits))
        pos = stop
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


_CHAR_REF_RE: Final = re.compile(r"&#(?:x([0-9A-Fa-f]{1,6})|([0-9]{1,7}));")
_ID_NOISE_RE: Final = re.compile(r"<!\[CDATA\[|\]\]>|<!--.*?-->|<\?.*?\?>|[\s-]", re.DOTALL)


def _needs_id_element_pass(text: str) -> bool:
    """Markup that can split an application ID's digits in the text (a character reference, a
    comment, a CDATA section, a processing instruction after the XML declaration): the
    run-based masker cannot see the ID whole, so its elements are masked by structure."""
    return "&#" in text or "<!" in text or text.find("<?", 2) >= 0  # "<!": comments, CDATA


def _mask_application_id_elements(text: str) -> str:
    """Each `applicationId` element's content (any prefix): the masked ID when it reads as one
    once character references are decoded and markup and hyphens dropped, else *** whole."""
    return _replace_contents(text, _APPLICATION_ID, _masked_id_content)


def _masked_id_content(content: str) -> str:
    plain = _ID_NOISE_RE.sub("", _CHAR_REF_RE.sub(_decoded_ref, content))
    is_id = len(plain) == _HEX_DIGITS and all(c in _RUN_CHARS for c in plain)
    return _masked_id(plain) if is_id else MASK


def _decoded_ref(m: re.Match[str]) -> str:
    code = int(m.group(1), 16) if m.group(1) else int(m.group(2))
    return chr(code) if code < 0x110000 else ""


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


def redact_xml(data: bytes, cap: int, *, truncated: bool = False) -> str:
    """The text of every secret element replaced by ***, application IDs masked; result capped
    to `cap` bytes. `truncated`: the data is a prefix of a longer document."""
    text = data.decode("utf-8", errors="replace")
    lowered = text.lower()
    id_element = "applicationid" in lowered
    if not text.isascii() or _has_needle(lowered):
        text = _mask_secret_elements(text)
    return _finish(text, cap, truncated, id_element=id_element)


def _has_needle(lowered: str) -> bool:
    return any(needle in lowered for needle in _SECRET_NEEDLES)


def _finish(text: str, cap: int, truncated: bool, *, id_element: bool = True) -> str:
    if id_element and _needs_id_element_pass(text):
        text = _mask_application_id_elements(text)
    if truncated:
        text = _mask_cut_id(text)
    return cap_text(mask_application_ids(text), cap)


def _mask_cut_id(text: str) -> str:
    """A capture that ends inside an application ID holds its first digits, no whole ID for the
    masker, and they are the part that must be hidden: a trailing run of hex digits and
    hyphens that could still become one (32 hex digits at most) is masked."""
    start, digits = len(text), 0
    while start > 0 and text[start - 1] in _RUN_CHARS and digits <= _HEX_DIGITS:
        start -= 1
        digits += text[start] != "-"
    if 0 < digits <= _HEX_DIGITS and (start == 0 or text[start - 1] not in _RUN_CHARS):
        return text[:start] + MASK
    return text


def _mask_secret_elements(text: str) -> str:
    return _replace_contents(text, _SECRET, lambda _: MASK)


def _replace_contents(text: str, element: _Element, replace: Callable[[str], str]) -> str:
    """The content of every `element` replaced by `replace(content)`."""
    out: list[str] = []
    pos = 0
    while (found := element.name.search(text, pos)) is not None:
        m = element.tag.match(text, found.start())
        if m is None:  # a broken open or close tag: whatever follows might be the secret
            out.append(text[pos : found.end()] + MASK)
            return "".join(out)
        out.append(text[pos : m.end()])
        pos = m.end()
        if m.group(1) or m.group(2).rstrip().endswith("/") or not m.group(3):
            continue  # a close tag, a self-closing element, or an open tag cut off mid-way
        end = _content_end(text, pos, element.tag)
        out.append(replace(text[pos:end]))
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _content_end(text: str, pos: int, tag_re: re.Pattern[str]) -> int:
    """Where the content of an element (its tags matched by `tag_re`) opened just before `pos`
    ends (its close tag), or the end of the data. CDATA sections, comments and processing
    instructions are skipped whole (a close tag inside them is text); nested elements of the
    same name count, so an inner close tag does not end the outer element."""
    depth = 1
    while True:
        m = tag_re.search(text, pos)
        opaque = _OPAQUE_RE.search(text, pos)
        if opaque is not None and (m is None or opaque.start() < m.start()):
            closer = next(close for open_, close in _OPAQUE if opaque.group() == open_)
            close = text.find(closer, opaque.end())
            if close < 0:
                return len(text)
            pos = close + len(closer)
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


def redact_json(data: bytes, cap: int, *, truncated: bool = False) -> str:
    """The values of secret keys replaced by "***" (strings, scalars, objects, arrays), tolerant
    of truncated or invalid JSON; result capped to `cap` bytes. Keys are compared decoded, so
    `"pass\\u0077ord"` is `password`."""
    return _finish(_mask_secret_keys(data.decode("utf-8", errors="replace")), cap, truncated)


def redact_document(data: bytes, cap: int, *, truncated: bool = False) -> str:
    """A body of unknown kind (a RESTlet's: JSON, XML or text): both redactions."""
    text = _mask_secret_keys(data.decode("utf-8", errors="replace"))
    return _finish(_mask_secret_elements(text), cap, truncated)


def _mask_secret_keys(text: str) -> str:
    out: list[str] = []
    pos = 0
    while (quote := text.find('"', pos)) >= 0:
        s = _JSON_STRING_RE.match(text, quote)
        end = s.end() if s else len(text)
        colon = _JSON_COLON_RE.match(text, end)
        if colon is None or _json_key(text[quote:end]) not in _SECRET_JSON_NAMES:
            out.append(text[pos:end])  # a value, or a key that is no secret: kept whole
            pos = end
            continue
        out.append(text[pos : colon.end()])
        pos = colon.end()
        if pos >= len(text):
            break
        first = text[pos]
        if first == '"':
            s = _JSON_STRING_RE.match(text, pos)
            pos = s.end() if s else len(text)
        elif first in "{[":
            pos = _json_container_end(text, pos)
        else:
            s = _JSON_SCALAR_RE.match(text, pos)
            pos = s.end() if s else len(text)
        out.append(f'"{MASK}"')
    out.append(text[pos:])
    return "".join(out)


def _json_key(literal: str) -> str:
    """A key's name, escapes decoded, lower-cased (a broken literal: as written)."""
    try:
        name = json.loads(literal)
    except ValueError:
        name = literal.strip('"')
    return name.lower() if isinstance(name, str) else ""


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
