"""Rejections rendered in one place: NetSuite-shaped SOAP 1.1 faults and RESTlet JSON errors
(SPEC section 4). Rendered bytes are cached: faults are on the hot path of every rejection."""

from __future__ import annotations

import json
from functools import lru_cache
from xml.sax.saxutils import escape

from gateway.core.reasons import FAULTS, Reason
from gateway.core.versions import Version

SOAP_CONTENT_TYPE = "text/xml; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"
_LAST_ENDPOINT: Version = (2025, 2)  # NetSuite's last planned SOAP endpoint

_TEMPLATE = (
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
    "<soapenv:Fault><faultcode>{faultcode}</faultcode><faultstring>{message}</faultstring>"
    '<detail><platformFaults:{element} xmlns:platformFaults="{namespace}">'
    "<platformFaults:code>{code}</platformFaults:code>"
    "<platformFaults:message>{message}</platformFaults:message>"
    "</platformFaults:{element}></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
)


def faults_namespace(version: Version) -> str:
    return f"urn:faults_{version[0]}_{version[1]}.platform.webservices.netsuite.com"


def fault_code(reason: Reason) -> str:
    """The client's mistake in the envelope is `soapenv:Client`; every policy refusal is a
    NetSuite `Server.userException`."""
    return "soapenv:Client" if reason is Reason.MALFORMED_REQUEST else "soapenv:Server.userException"


@lru_cache(maxsize=2048)
def render_fault(reason: Reason, version: Version | None) -> bytes:
    """The fault for `reason`. `version` is the URL's, else the namespace's, else the
    configured maximum; None is tolerated and falls back to the last SOAP endpoint."""
    spec = FAULTS[reason]
    return _TEMPLATE.format(
        faultcode=fault_code(reason), message=escape(spec.message), element=spec.element,
        namespace=faults_namespace(version or _LAST_ENDPOINT), code=escape(spec.code),
    ).encode("utf-8")


def fault_status(reason: Reason) -> int:
    return FAULTS[reason].http_status


@lru_cache(maxsize=64)
def render_json_error(reason: Reason) -> tuple[int, bytes]:
    """RESTlet and Issue Token rejections: `(status, {"error": {"code", "message"}})`."""
    spec = FAULTS[reason]
    body = json.dumps({"error": {"code": spec.code, "message": spec.message}}, separators=(",", ":"))
    return spec.json_status, body.encode("utf-8")

