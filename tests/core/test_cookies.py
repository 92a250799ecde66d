"""Cookie rules (SPEC section 2)."""

from __future__ import annotations

import pytest

from gateway.core.cookies import parse_cookies, strip_jsessionid
from gateway.core.facts import CookieFacts


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], CookieFacts()),
        (["a=1; b=2"], CookieFacts()),
        (["JSESSIONID=abc"], CookieFacts(jsessionid="abc")),
        (["a=1; JSESSIONID=abc ; b=2"], CookieFacts(jsessionid="abc")),
        (["JSESSIONID=abc;"], CookieFacts(jsessionid="abc")),
        (["jsessionid=abc"], CookieFacts()),  # cookie names are case-sensitive
        (["a=1", "JSESSIONID=abc"], CookieFacts(invalid=True)),
        (["a=1", "b=2"], CookieFacts(invalid=True)),
        (["a=1; flag"], CookieFacts(invalid=True)),
        (["JSESSIONID=abc; JSESSIONID=def"], CookieFacts(invalid=True)),
        (["JSESSIONID=abc; JSESSIONID=abc"], CookieFacts(invalid=True)),
        (["JSESSIONID="], CookieFacts(jsessionid="")),  # not in SPEC 2's list: a session naming none
        (["JSESSIONID=; JSESSIONID="], CookieFacts(invalid=True)),
        (["a=x=y; JSESSIONID=s=1"], CookieFacts(jsessionid="s=1")),
    ],
)
def test_parse_cookies(headers: list[str], expected: CookieFacts) -> None:
    assert parse_cookies(headers) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("JSESSIONID=abc", None),
        ("JSESSIONID=abc; ", None),
        ('a=1; JSESSIONID=abc; b="x y"', 'a=1; b="x y"'),
        ("JSESSIONID=abc;NS_ROUTING_VERSION=LAGGING", "NS_ROUTING_VERSION=LAGGING"),
        ("a=1", "a=1"),
        ("lb=Zm9v==; JSESSIONID=abc", "lb=Zm9v=="),
    ],
)
def test_strip_jsessionid(header: str, expected: str | None) -> None:
    assert strip_jsessionid(header) == expected
