"""Header handling between client, gateway and upstream."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.core.decision import Attribution, AuthMethod
from gateway.web.forward import (
    accept_request_id,
    client_ip,
    client_response_headers,
    identity_headers,
    upstream_request_headers,
)


def test_request_id_accepted_only_when_safe() -> None:
    assert accept_request_id("abc-1.2_3", "new") == "abc-1.2_3"
    for bad in ("", "x" * 129, "a b", "a/b", None):
        assert accept_request_id(bad, "new") == "new"


def test_client_ip_believes_only_trusted_proxies() -> None:
    trusted = [ipaddress.ip_network("10.0.0.0/8")]
    assert client_ip("192.0.2.1", ["198.51.100.7"], trusted) == "192.0.2.1"
    assert client_ip("10.0.0.5", ["198.51.100.7, 10.1.1.1"], trusted) == "198.51.100.7"
    assert client_ip("10.0.0.5", ["198.51.100.7"], []) == "10.0.0.5"


def test_upstream_headers_strip_client_identity_and_hop_by_hop() -> None:
    incoming = CIMultiDictProxy(CIMultiDict([
        ("Host", "gw"), ("Content-Type", "text/xml"), ("SOAPAction", '"get"'), ("X-Gateway-Account", "forged"),
        ("Connection", "keep-alive"), ("Transfer-Encoding", "chunked"), ("X-Forwarded-For", "203.0.113.9"),
        ("Cookie", "JSESSIONID=abc; other=1"), ("x-gateway-user", "forged"), ("X_Gateway_Role", "forged"),
        ("x_gateway-account", "forged")]))
    who = Attribution(account="123", integration="i1", auth_method=AuthMethod.TOKEN_BASED, user="u@x", role="3")
    out = upstream_request_headers(incoming, cookie="other=1", request_id="rid", peer="192.0.2.1", scheme="http",
                                   identity=identity_headers(who, "rid", None, 100), content_length=42)
    assert out["X-Gateway-Account"] == "123" and out["X-Gateway-User"] == "u@x"
    assert out.getall("X-Gateway-Account") == ["123"]
    assert not any(name.replace("_", "-").lower().startswith("x-gateway-") and value == "forged"
                   for name, value in out.items())  # no spelling a CGI backend would read as ours
    assert "Connection" not in out and "Transfer-Encoding" not in out and "Host" not in out
    assert out["Cookie"] == "other=1" and out["SOAPAction"] == '"get"'
    assert out["X-Forwarded-For"] == "203.0.113.9, 192.0.2.1" and out["Content-Length"] == "42"


def test_identity_signature_matches_the_spec_formula() -> None:
    who = Attribution(account="123", integration="default", auth_method=AuthMethod.USER_CREDENTIALS,
                      user="u@x", role="3")
    headers = dict(identity_headers(who, "rid", "k3y", 1700000000))
    expected = hmac.new(b"k3y", b"1700000000.rid.123.default.user_credentials.u@x.3", hashlib.sha256).hexdigest()
    assert headers["X-Gateway-Signature"] == f"t=1700000000,v1={expected}"


def test_response_headers_keep_cookies_unless_told() -> None:
    up = CIMultiDictProxy(CIMultiDict([("Set-Cookie", "a=1"), ("Set-Cookie", " JSESSIONID=s; Path=/"),
                                       ("Transfer-Encoding", "chunked"), ("Content-Type", "text/xml")]))
    assert client_response_headers(up).getall("Set-Cookie") == ["a=1", " JSESSIONID=s; Path=/"]
    assert client_response_headers(up, drop_session_cookie=True).getall("Set-Cookie") == ["a=1"]
    assert "Transfer-Encoding" not in client_response_headers(up)


def test_fields_a_connection_header_names_are_hop_by_hop_both_ways() -> None:
    # RFC 9110 7.6.1; Proxy-Connection too. The fields the gateway judged the request by stay.
    incoming = CIMultiDictProxy(CIMultiDict([
        ("Content-Type", "text/xml"), ("SOAPAction", "get"), ("Connection", "close, X-Client-Hop"),
        ("Connection", "Content-Type,SOAPAction"), ("X-Client-Hop", "1"), ("Proxy-Connection", "keep-alive"),
        ("X-End-To-End", "kept")]))
    out = upstream_request_headers(incoming, cookie=None, request_id="rid", peer="192.0.2.1", scheme="http",
                                   identity=(), content_length=None)
    assert "X-Client-Hop" not in out and "Proxy-Connection" not in out and "Connection" not in out
    assert (out["Content-Type"], out["SOAPAction"], out["X-End-To-End"]) == ("text/xml", "get", "kept")
    up = CIMultiDictProxy(CIMultiDict([("Connection", "keep-alive, X-Secret-Hop"), ("X-Secret-Hop", "s"),
                                       ("Proxy-Connection", "close"), ("Content-Type", "text/xml")]))
    relayed = client_response_headers(up)
    assert list(relayed.keys()) == ["Content-Type"]
