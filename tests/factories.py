"""Builders for SuiteTalk-style SOAP envelopes, shared by every test module.

The shapes follow the public contract client (zeep's dialect: each element declares its own
prefix; Passport children in the core namespace). Versions are given like "2024_2".
"""

from __future__ import annotations

import base64
import hmac
import secrets
import time
from collections.abc import Sequence
from xml.sax.saxutils import escape

SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
XSD_NS = "http://www.w3.org/2001/XMLSchema"


def msgs_ns(version: str) -> str:
    return f"urn:messages_{version}.platform.webservices.netsuite.com"


def core_ns(version: str) -> str:
    return f"urn:core_{version}.platform.webservices.netsuite.com"


def _x(value: object) -> str:
    return escape(str(value), {'"': "&quot;"})


def tba_signature(
    account: str, consumer_key: str, token_id: str, nonce: str, timestamp: str,
    consumer_secret: str, token_secret: str, *, digest: str = "sha256",
) -> str:
    """SPEC section 3: base64(HMAC(key=consumerSecret&tokenSecret,
    msg=account&consumerKey&token&nonce&timestamp))."""
    base = "&".join([account, consumer_key, token_id, nonce, timestamp])
    key = f"{consumer_secret}&{token_secret}"
    return base64.b64encode(hmac.new(key.encode(), base.encode(), digest).digest()).decode()


def make_envelope(
    body_xml: str, header_parts: Sequence[str] = (), *, soap12: bool = False, prolog: str = "",
    xml_decl: bool = True,
) -> bytes:
    """A SOAP 1.1 envelope (1.2 if soap12); `prolog` goes between the declaration and the root."""
    ns = SOAP12_NS if soap12 else SOAP11_NS
    header = f"<soapenv:Header>{''.join(header_parts)}</soapenv:Header>" if header_parts else ""
    decl = '<?xml version="1.0" encoding="UTF-8"?>' if xml_decl else ""
    return (
        f'{decl}{prolog}<soapenv:Envelope xmlns:soapenv="{ns}" xmlns:xsd="{XSD_NS}" xmlns:xsi="{XSI_NS}">'
        f"{header}<soapenv:Body>{body_xml}</soapenv:Body></soapenv:Envelope>"
    ).encode()


def passport_xml(version: str, email: str, password: str, account: str, role: str = "3") -> str:
    m, c = msgs_ns(version), core_ns(version)
    return (
        f'<ns0:passport xmlns:ns0="{m}" xmlns:ns1="{c}">'
        f"<ns1:email>{_x(email)}</ns1:email><ns1:password>{_x(password)}</ns1:password>"
        f'<ns1:account>{_x(account)}</ns1:account><ns1:role internalId="{_x(role)}"/>'
        f"</ns0:passport>"
    )


def application_info_xml(version: str, app_id: str) -> str:
    m = msgs_ns(version)
    return (
        f'<ns0:applicationInfo xmlns:ns0="{m}">'
        f"<ns0:applicationId>{_x(app_id)}</ns0:applicationId></ns0:applicationInfo>"
    )


def token_passport_xml(
    version: str, account: str, consumer_key: str, consumer_secret: str, token_id: str,
    token_secret: str, *, nonce: str | None = None, timestamp: str | int | None = None,
    algorithm: str = "HMAC-SHA256", variant: str = "core", signature: str | None = None,
) -> str:
    """tokenPassport: children in the core namespace (zeep) or the messages namespace (PHP)."""
    nonce = secrets.token_hex(10) if nonce is None else nonce
    ts = str(int(time.time())) if timestamp is None else str(timestamp)
    digest = "sha1" if algorithm.upper().replace("_", "-") == "HMAC-SHA1" else "sha256"
    sig = signature if signature is not None else tba_signature(
        account, consumer_key, token_id, nonce, ts, consumer_secret, token_secret, digest=digest
    )
    m = msgs_ns(version)
    values = [("account", account), ("consumerKey", consumer_key), ("token", token_id),
              ("nonce", nonce), ("timestamp", ts)]
    if variant == "core":
        c = core_ns(version)
        kids = "".join(
            f'<ns{i}:{n} xmlns:ns{i}="{c}">{_x(v)}</ns{i}:{n}>' for i, (n, v) in enumerate(values, 1)
        )
        kids += f'<ns6:signature xmlns:ns6="{c}" algorithm="{_x(algorithm)}">{_x(sig)}</ns6:signature>'
        return f'<ns0:tokenPassport xmlns:ns0="{m}">{kids}</ns0:tokenPassport>'
    if variant == "messages":
        kids = "".join(f"<ns:{n}>{_x(v)}</ns:{n}>" for n, v in values)
        kids += f'<ns:signature algorithm="{_x(algorithm)}">{_x(sig)}</ns:signature>'
        return f'<ns:tokenPassport xmlns:ns="{m}">{kids}</ns:tokenPassport>'
    raise ValueError(variant)


def get_body(version: str, internal_id: str = "1") -> str:
    m, c = msgs_ns(version), core_ns(version)
    return (
        f'<ns0:get xmlns:ns0="{m}"><ns0:baseRef xmlns:ns1="{c}" xmlns:xsi="{XSI_NS}" '
        f'internalId="{_x(internal_id)}" type="customer" xsi:type="ns1:RecordRef"/></ns0:get>'
    )


def login_body(version: str, email: str, password: str, account: str, role: str = "3") -> str:
    m = msgs_ns(version)
    return f'<ns0:login xmlns:ns0="{m}">{passport_xml(version, email, password, account, role)}</ns0:login>'


def sso_login_body(
    version: str, authentication_token: str = "tok", partner_id: str = "partner",
    partner_account: str = "", partner_user_id: str = "",
) -> str:
    m, c = msgs_ns(version), core_ns(version)
    return (
        f'<ns0:ssoLogin xmlns:ns0="{m}"><ns0:ssoPassport xmlns:ns1="{c}">'
        f"<ns1:authenticationToken>{_x(authentication_token)}</ns1:authenticationToken>"
        f"<ns1:partnerId>{_x(partner_id)}</ns1:partnerId>"
        f"<ns1:partnerAccount>{_x(partner_account)}</ns1:partnerAccount>"
        f"<ns1:partnerUserId>{_x(partner_user_id)}</ns1:partnerUserId>"
        f"</ns0:ssoPassport></ns0:ssoLogin>"
    )


def logout_body(version: str) -> str:
    return f'<ns0:logout xmlns:ns0="{msgs_ns(version)}"/>'


def get_data_center_urls_body(version: str, account: str) -> str:
    m = msgs_ns(version)
    return (
        f'<ns0:getDataCenterUrls xmlns:ns0="{m}">'
        f"<ns0:account>{_x(account)}</ns0:account></ns0:getDataCenterUrls>"
    )


def big_body(version: str, kind: str = "text", size_bytes: int = 1 << 20, *, inner: str = "") -> str:
    """An `add` of about size_bytes: "text" is one big base64 element (a file upload) plus a
    few hundred fields; "dense" is sales-order lines, element after element. `inner` is appended
    inside the record, after the bulk (to place a violation deep in a large body)."""
    m = msgs_ns(version)
    if kind == "text":
        fields = "".join(f"<f{i}>value {i}</f{i}>" for i in range(300))
        blob = base64.b64encode(bytes(range(256)) * (size_bytes // 342 + 1))[:size_bytes].decode()
        bulk = f"{fields}<content>{blob}</content>"
    elif kind == "dense":
        line = (
            '<item><item internalId="{0}"/><quantity>3</quantity><description>line {0} '
            + "x" * 200
            + "</description></item>"
        )
        parts, total, i = [], 0, 0
        while total < size_bytes:
            parts.append(line.format(i))
            total += len(parts[-1])
            i += 1
        bulk = f"<itemList>{''.join(parts)}</itemList>"
    else:
        raise ValueError(kind)
    return f'<ns0:add xmlns:ns0="{m}"><ns0:record xsi:type="SalesOrder">{bulk}{inner}</ns0:record></ns0:add>'
