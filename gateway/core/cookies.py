"""The `Cookie` header as the session rules see it (SPEC section 2).

Only `JSESSIONID` matters to the gateway; every other cookie passes through untouched.
"""

from __future__ import annotations

from gateway.core.facts import CookieFacts

JSESSIONID = "JSESSIONID"
_INVALID = CookieFacts(invalid=True)


def parse_cookies(cookie_headers: list[str]) -> CookieFacts:
    """More than one `Cookie` header, a pair without `=`, or more than one `JSESSIONID` makes
    the cookies invalid (`invalid_session`, decided right after R3; SPEC 2's list, nothing
    more). An empty `JSESSIONID=` is a session cookie naming no session: ignored beside a
    header passport, ambiguous beside a tokenPassport, an unknown session alone."""
    if not cookie_headers:
        return CookieFacts()
    if len(cookie_headers) > 1:
        return _INVALID
    session: str | None = None
    for pair in cookie_headers[0].split(";"):
        if not pair.strip():
            continue  # a trailing or doubled ';' carries no cookie
        name, sep, value = pair.partition("=")
        if not sep:
            return _INVALID
        if name.strip() != JSESSIONID:
            continue
        value = value.strip()
        if session is not None:
            return _INVALID
        session = value
    return CookieFacts(jsessionid=session)


def strip_jsessionid(cookie_header: str) -> str | None:
    """The header without its `JSESSIONID` pair, the other pairs kept exactly (joined by `; `);
    None when nothing is left."""
    kept = [
        pair.strip() for pair in cookie_header.split(";")
        if pair.strip() and pair.partition("=")[0].strip() != JSESSIONID
    ]
    return "; ".join(kept) or None
