"""Headers between client, gateway and upstream: what passes, what the gateway sets.

Pure functions over header lists, so the proxy handler stays a pipeline.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable, Sequence

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.core.cookies import JSESSIONID
from gateway.core.decision import Attribution

# RFC 9110 section 7.6.1 hop-by-hop headers (and the obsolete Proxy-Connection), plus the
# framing the gateway sets itself. Headers a Connection header names are hop-by-hop too.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
        "Transfer-Encoding", "Upgrade", "Host", "Content-Length", "Expect", "Proxy-Connection",
    )
)


# Fields the gateway judged the request by: a Connection header may not take them away from
# what the upstream sees (the gateway checked text/xml, the backend would see no type at all).
_JUDGED = frozenset({"content-type", "content-encoding", "soapaction", "authorization", "cookie"})


def _hop_by_hop(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    """The fixed set, plus every field a Connection header names (RFC 9110 section 7.6.1)."""
    listed = headers.getall("Connection", ())
    if not listed:
        return HOP_BY_HOP
    named = {name.strip().lower() for value in listed for name in value.split(",")}
    return HOP_BY_HOP | (named - _JUDGED)
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
IDENTITY_PREFIX = "x-gateway-"


def accept_request_id(value: str | None, new_id: str) -> str:
    """The client's X-Request-Id when it is 1-128 of [A-Za-z0-9._-], else `new_id`."""
    if value is not None and _REQUEST_ID_RE.fullmatch(value):
        return value
    return new_id


def client_ip(peer: str | None, forwarded_for: Sequence[str],
              trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str:
    """The TCP peer, or, when the peer is a trusted proxy, the last X-Forwarded-For hop that
    is not one (SPEC section 6)."""
    peer = peer or ""
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer


def _is_trusted(address: str, trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def upstream_request_headers(
    incoming: CIMultiDictProxy[str],
    *,
    cookie: str | None,
    request_id: str,
    peer: str,
    scheme: str,
    identity: Iterable[tuple[str, str]],
    content_length: int | None,
) -> CIMultiDict[str]:
    """Client headers minus hop-by-hop and client-sent X-Gateway-*, with the gateway's own.

    `cookie` is the Cookie header to send (JSESSIONID already removed when the request is
    not attributed by its session), or None for none at all.
    """
    out: CIMultiDict[str] = CIMultiDict()
    hop_by_hop = _hop_by_hop(incoming)
    for name, value in incoming.items():
        lower = name.lower()
        # X_Gateway_User too: CGI, WSGI and PHP backends read both spellings as HTTP_X_GATEWAY_USER.
        if lower in hop_by_hop or lower.replace("_", "-").startswith(IDENTITY_PREFIX) or lower in (
                "cookie", "x-request-id", "x-forwarded-for", "x-forwarded-proto"):
            continue
        out.add(name, value)
    if cookie:
        out["Cookie"] = cookie
    prior = ", ".join(incoming.getall("X-Forwarded-For", []))
    out["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    out["X-Forwarded-Proto"] = scheme
    if "Host" in incoming:
        out["X-Forwarded-Host"] = incoming["Host"]
    out["X-Request-Id"] = request_id
    if content_length is not None:
        out["Content-Length"] = str(content_length)
    for name, value in identity:
        out[name] = value
    return out


def identity_headers(who: Attribution, request_id: str, key: str | None, now: int) -> list[tuple[str, str]]:
    """`X-Gateway-*` for the upstream (SPEC section 2), signed when a key is configured."""
    account = who.account or ""
    headers = [
        ("X-Gateway-Account", account),
        ("X-Gateway-Integration", who.integration),
        ("X-Gateway-Auth-Method", who.auth_method.value),
        ("X-Gateway-User", who.user),
        ("X-Gateway-Role", who.role),
    ]
    if key:
        message = ".".join([str(now), request_id, account, who.integration, who.auth_method.value, who.user,
                            who.role])
        digest = hmac.new(key.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()
        headers.append(("X-Gateway-Signature", f"t={now},v1={digest}"))
    return headers


def client_response_headers(upstream: CIMultiDictProxy[str], *,
                            drop_session_cookie: bool = False) -> CIMultiDict[str]:
    """Upstream response headers minus hop-by-hop ones (framing is the gateway's own), and
    with `drop_session_cookie` minus the `Set-Cookie` of a JSESSIONID (other cookies, such as
    NS_ROUTING_VERSION, pass through: SPEC 2)."""
    out: CIMultiDict[str] = CIMultiDict()
    hop_by_hop = _hop_by_hop(upstream)
    for name, value in upstream.items():
        lower = name.lower()
        if lower in hop_by_hop or (drop_session_cookie and lower == "set-cookie" and _sets_jsessionid(value)):
            continue
        out.add(name, value)
    return out


def _sets_jsessionid(set_cookie: str) -> bool:
    return set_cookie.partition(";")[0].partition("=")[0].strip() == JSESSIONID
