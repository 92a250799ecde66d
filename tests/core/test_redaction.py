"""Secrets never reach a log (SPEC section 6), even from truncated or broken documents."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.core.redaction import (
    SECRET_ELEMENTS,
    mask_application_ids,
    redact_authorization,
    redact_cookie,
    redact_document,
    redact_header_value,
    redact_json,
    redact_xml,
)
from tests.factories import login_body, make_envelope, passport_xml, sso_login_body, token_passport_xml

V = "2024_2"
SECRET = "S3CRETzq"  # a marker that appears nowhere else in the documents
CAP = 65536


def test_every_secret_element_is_masked() -> None:
    parts = "".join(f"<ns1:{name}>{SECRET}{i}</ns1:{name}>" for i, name in enumerate(SECRET_ELEMENTS))
    doc = make_envelope(f'<ns0:x xmlns:ns0="urn:m" xmlns:ns1="urn:c">{parts}</ns0:x>')
    out = redact_xml(doc, CAP)
    assert SECRET not in out
    assert out.count("***") == len(SECRET_ELEMENTS)
    assert "<ns1:password>***</ns1:password>" in out


def test_envelopes_from_the_factories() -> None:
    tp = token_passport_xml(V, "1234567", "ck", "cs", "tk", "ts", nonce="n", timestamp=1, signature=SECRET)
    doc = make_envelope(login_body(V, "a@b.c", SECRET, "1234567"), [tp, passport_xml(V, "e", SECRET, "1")])
    out = redact_xml(doc, CAP)
    assert SECRET not in out
    assert 'algorithm="HMAC-SHA256">***</ns6:signature>' in out
    assert "a@b.c" in out and "1234567" in out  # only secrets go
    out = redact_xml(make_envelope(sso_login_body(V, authentication_token=SECRET)), CAP)
    assert SECRET not in out and "partner" in out


@pytest.mark.parametrize(
    "fragment",
    [
        f"<password><![CDATA[{SECRET}</password>{SECRET}]]></password>",
        f"<password> <![CDATA[{SECRET}]]> {SECRET}</password>",
        f'<ns6:signature algorithm="HMAC-SHA256" a=\'>\'>{SECRET}</ns6:signature>',
        f"<password\n>{SECRET}</password >",
        f"<Password>{SECRET}</Password>",
        f"<password><b>{SECRET}</b>{SECRET}</password>",
        f"<password><password>{SECRET}</password>{SECRET}</password>",
        f"<tokenSecret>{SECRET}",  # truncated mid-secret
        f"<x:consumerSecret>{SECRET[:4]}",
        f"<newPassword2><![CDATA[{SECRET}",  # truncated inside CDATA
        f'<password a="x>{SECRET}</password><b c="d">',  # broken attribute swallowing the secret
        f"<password a='{SECRET}",
    ],
)
def test_tricky_shapes(fragment: str) -> None:
    out = redact_xml(f"<a>{fragment}</a>".encode(), CAP)
    assert SECRET[:4] not in out


def test_self_closing_and_lookalikes_are_left_alone() -> None:
    doc = b'<a><password/><signature algorithm="x"/><passwordHint>hint</passwordHint><b>keep</b></a>'
    assert redact_xml(doc, CAP) == doc.decode()


def test_invalid_utf8_and_cap() -> None:
    doc = b"<a>\xff<password>" + SECRET.encode() + b"</password>" + b"x" * 100 + b"</a>"
    out = redact_xml(doc, 40)
    assert SECRET not in out and "\ufffd" in out
    assert len(out.encode()) <= 40
    assert len(redact_xml("é".encode() * 30, 7).encode()) <= 7  # never a split character


@settings(max_examples=300, deadline=None)
@given(cut=st.integers(0, 2000), name=st.sampled_from(SECRET_ELEMENTS), cdata=st.booleans())
def test_any_truncation_leaks_no_secret_byte(cut: int, name: str, cdata: bool) -> None:
    secret = "Zq9" + SECRET * 3
    value = f"<![CDATA[{secret}]]>" if cdata else secret
    element = f'<ns0:{name} a="1">{value}</ns0:{name}>'
    doc = make_envelope(f'<ns0:op xmlns:ns0="urn:m">{element}<b>tail</b></ns0:op>')
    out = redact_xml(doc[:cut], CAP)
    # any 3 consecutive secret characters surviving would be a leak
    assert not any(secret[i : i + 3] in out for i in range(len(secret) - 2))


def test_json_keys() -> None:
    doc = {
        "token": "tokid", "tokenSecret": SECRET, "token_secret": SECRET, "consumer_secret": SECRET,
        "nested": {"password": SECRET, "signature": 12345678, "list": [{"newPassword": [SECRET]}]},
        "PASSWORD": SECRET, "ok": "keep",
    }
    out = redact_json(json.dumps(doc).encode(), CAP)
    assert SECRET not in out and "12345678" not in out
    parsed = json.loads(out)
    assert parsed["tokenSecret"] == "***" and parsed["nested"]["list"][0]["newPassword"] == "***"
    assert parsed["token"] == "tokid" and parsed["ok"] == "keep"


@settings(max_examples=300, deadline=None)
@given(cut=st.integers(0, 200))
def test_truncated_json(cut: int) -> None:
    doc = json.dumps({"token": "abc", "token_secret": "Zq9" + SECRET + '\\"' + SECRET, "x": 1}).encode()
    out = redact_json(doc[:cut], CAP)
    assert SECRET not in out and "Zq9" not in out


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("NLAuth nlauth_account=123, nlauth_email=a@b.c, nlauth_signature=" + SECRET + ", nlauth_role=3",
         "NLAuth nlauth_account=123, nlauth_email=a@b.c, nlauth_signature=***, nlauth_role=3"),
        ('OAuth realm="123",oauth_consumer_key="ck",oauth_signature="' + SECRET + '%3D",oauth_nonce="n"',
         'OAuth realm="123",oauth_consumer_key="ck",oauth_signature="***",oauth_nonce="n"'),
        ("NLAuth nlauth_signature=" + SECRET, "NLAuth nlauth_signature=***"),
        ('OAuth oauth_signature="' + SECRET, 'OAuth oauth_signature="***"'),
    ],
)
def test_authorization(value: str, expected: str) -> None:
    assert redact_authorization(value) == expected
    assert redact_header_value("Authorization", value) == expected


def test_cookies() -> None:
    assert redact_header_value("Cookie", f"JSESSIONID={SECRET}; lang=en") == "JSESSIONID=***; lang=***"
    assert redact_header_value("Set-Cookie", f"JSESSIONID={SECRET}; Path=/; HttpOnly") == (
        "JSESSIONID=***; Path=/; HttpOnly")
    assert redact_header_value("X-Request-Id", "abc") == "abc"


@pytest.mark.parametrize(("value", "set_cookie", "expected"), [
    ("abc", False, "***"),  # a nameless cookie: all of it is the value
    (" =x; y", False, " ***; ***"),
    ("a=b,c", False, "a=***"),  # a comma never ends a value
    ("a=1, b=2", False, "a=***"),  # two Cookie headers joined: the second name goes too
    ("JSESSIONID=abc;", False, "JSESSIONID=***;"),
    ("Bare-Secret; Path=/", True, "***; Path=/"),
    ("=secret", True, "***"),
    ("lb=a,b", True, "lb=***"),
    ("x=1; Expires=Wed, 21 Oct 2015 07:28:00 GMT", True, "x=***; Expires=Wed, 21 Oct 2015 07:28:00 GMT"),
])
def test_cookie_edge_cases(value: str, set_cookie: bool, expected: str) -> None:
    assert redact_cookie(value, set_cookie=set_cookie) == expected


_cookie_text = st.text(st.sampled_from("ab=;, \t"), max_size=30)


@given(st.lists(st.tuples(_cookie_text, st.text(min_size=6, max_size=12).filter(str.isalnum)), max_size=4),
       st.booleans())
@example([("", "000000"), ("", "000000")], True)  # the same value again in the attributes (CI)
def test_no_cookie_value_survives(pairs: list[tuple[str, str]], set_cookie: bool) -> None:
    # Each secret sits where a value can begin: after "=" following any name-ish text (for
    # Set-Cookie, a name with ";" would put it among the attributes, which are kept). Each is
    # made unique ("~i~", no alphanumeric), so one pair's secret is never found in another's.
    if set_cookie:
        pairs = [(name.replace(";", ""), secret) for name, secret in pairs]
    secrets_ = [f"~{i}~{secret}" for i, (_, secret) in enumerate(pairs)]
    value = "; ".join(f"{name}={secret}" for (name, _), secret in zip(pairs, secrets_, strict=True))
    redacted = redact_cookie(value, set_cookie=set_cookie)
    # Set-Cookie: only the first pair is the cookie; what follows its ";" is attributes, kept.
    leaked = [secret for secret in (secrets_[:1] if set_cookie else secrets_) if secret in redacted]
    assert leaked == [], (value, redacted)


def test_application_ids_are_masked_in_any_spelling() -> None:
    from gateway.core.redaction import redact_json, redact_xml

    app = "0670F68D3F8EE8E83B50A137F96DF357"
    uuid_form = "0670f68d-3f8e-e8e8-3b50-a137f96df357"
    doc = f"<applicationId>{app}</applicationId><x>{uuid_form}</x><tok>{'a' * 64}</tok>".encode()
    out = redact_xml(doc, 10_000)
    assert app not in out and uuid_form not in out and out.count("F357") == 2
    assert "a" * 64 in out  # 64-hex token ids are not application IDs
    assert app not in redact_json(f'{{"applicationId": "{app}"}}'.encode(), 10_000)


@pytest.mark.parametrize("spelling", [
    "0670f68d-3f8e-e8e8-3b50-a137f96df357-",  # the UUID form, a trailing hyphen
    "-".join("0670F68D3F8EE8E83B50A137F96DF357"),  # a hyphen after every digit
    "&#x30;670F68D3F8EE8E83B50A137F96DF357",  # a character reference
    "0670F68D3F8EE8E8<!-- x -->3B50A137F96DF357",  # a comment between its digits
    "0670F68D3F8E<![CDATA[E8E83B50]]>A137F96DF357",
    "0670F68D3F8EE8E8<?pi x?>3B50A137F96DF357",
])
def test_every_spelling_the_gateway_accepts_is_masked(spelling: str) -> None:
    """Found by the black-box log audit: the gateway accepted these spellings (SPEC 1: hyphens
    ignored; XML's own ways to write text) and the documents kept them whole."""
    doc = f'<?xml version="1.0"?><h><m:applicationId>{spelling}</m:applicationId></h>'.encode()
    out = redact_xml(doc, CAP)
    plain = out.replace("-", "")
    assert "0670F68D3F8E" not in plain.upper() and "F68D3F8EE8E8" not in plain.upper(), out
    assert "F357" in out


def test_a_capture_cut_inside_an_application_id_masks_its_digits() -> None:
    doc = b"<a><applicationId>0670F68D3F8EE8E83B50A1"
    out = redact_xml(doc, CAP, truncated=True)
    assert "0670F68D" not in out and out.endswith("***"), out
    assert redact_xml(b"<a>" + b"f" * 40, CAP, truncated=True).endswith("f" * 40)  # 40 hex: no ID
    assert redact_xml(doc, CAP) == doc.decode()  # not cut: 22 hex digits are no ID


@pytest.mark.parametrize("doc", [
    "<é:password>HUNTER2</é:password>",  # XML names start with letters of any script
    "<a·b:password>HUNTER2</a·b:password>",
    "<ns1:password>x<!--</ns1:password>-->HUNTER2</ns1:password>",  # a comment ends nothing
    "<ns1:password>x<?pi </ns1:password>?>HUNTER2</ns1:password>",
    "<ns1:password>x<![CDATA[</ns1:password>]]>HUNTER2</ns1:password>",
])
def test_secret_text_hidden_behind_markup_or_prefixes_is_masked(doc: str) -> None:
    assert "HUNTER2" not in redact_xml(f"<r>{doc}</r>".encode(), CAP)


def test_json_keys_are_compared_decoded_and_restlet_bodies_of_any_kind_are_redacted() -> None:
    escaped = b'{"pass\\u0077ord": "HUNTER2", "consumer\\u0053ecret": "HUNTER3", "note": "pass: x"}'
    out = redact_json(escaped, CAP)
    assert "HUNTER" not in out and '"note": "pass: x"' in out
    # a value that looks like a key is a value: the key after it is still found
    assert "HUNTER2" not in redact_json(b'{"a": "\\"password\\": ", "password": "HUNTER2"}', CAP)
    xml = b"<req><password>HUNTER2</password><tokenSecret>HUNTER3</tokenSecret></req>"
    assert "HUNTER" not in redact_document(xml, CAP)
    assert "HUNTER" not in redact_document(b'{"token_secret": "HUNTER2"}', CAP)


@pytest.mark.parametrize("value", [
    "NLAuth nlauth_account=1, nlauth_signature=correct horse battery staple, nlauth_role=3",
    "NLAuth nlauth_account=1, nlauth_signature=pa,ss HUNTER2, nlauth_role=3",
    "NLAuth nlauth_signature=last one HUNTER2",
])
def test_an_unquoted_nlauth_signature_is_masked_to_the_next_parameter(value: str) -> None:
    out = redact_authorization(value)
    assert "horse" not in out and "HUNTER2" not in out and "ss" not in out.split("nlauth_signature=")[1][:5]
    assert out.rstrip().endswith(("nlauth_role=3", "***")), out


_RUN_RE = re.compile(r"[0-9A-Fa-f-]+")


def _masked_by_regex(text: str) -> str:
    """The plain-regex statement of the rule mask_application_ids implements faster: every
    maximal run of hex digits and hyphens with exactly 32 hex digits is an ID (SPEC 1: hyphens
    ignored); the reference it must agree with, character for character."""
    def one(run: re.Match[str]) -> str:
        text = run.group()
        digits = text.replace("-", "")
        if len(digits) != 32:
            return text
        core = text.strip("-")
        lead = text[: len(text) - len(text.lstrip("-"))]
        return lead + "*" * 28 + digits[-4:].upper() + text[len(lead) + len(core):]

    return _RUN_RE.sub(one, text)


_ID_PIECES = st.sampled_from(["0670F68D3F8EE8E83B50A137F96DF357", "0670f68d-3f8e-e8e8-3b50-a137f96df357",
                              "-".join("0670F68D3F8EE8E83B50A137F96DF357") + "-",
                              "-", "--", "a", "F", "0", "x", "g", " ", "<", "é", "\ufffd", "\U0001f600"])


@settings(max_examples=500)
@given(st.lists(st.one_of(_ID_PIECES, st.text(alphabet="0123456789abcdefABCDEF-xyz é<>", max_size=40)),
                max_size=12))
def test_masking_agrees_with_the_plain_regex(pieces: list[str]) -> None:
    text = "".join(pieces)
    assert mask_application_ids(text) == _masked_by_regex(text)


def test_every_secret_name_has_a_needle_for_the_fast_path() -> None:
    """An ASCII document is only scanned for tags when it holds a needle: every secret element
    name must contain one, or its text would reach the log."""
    from gateway.core.redaction import _SECRET_NEEDLES

    for name in SECRET_ELEMENTS:
        assert any(needle in name.lower() for needle in _SECRET_NEEDLES), name
    for name in SECRET_ELEMENTS:  # and the fast path redacts what the scan would
        doc = f"<a><P:{name.upper()} x='1'>{SECRET}</P:{name.upper()}></a>".encode()
        assert SECRET not in redact_xml(doc, CAP)


def test_non_ascii_lookalike_names_are_still_scanned() -> None:
    # "ſ" folds to "s" under the scan's case-insensitive match, as it always did.
    assert SECRET not in redact_xml(f"<paſſword>{SECRET}</paſſword>".encode(), CAP)
