"""Rejections as SOAP 1.1 faults and JSON errors (SPEC section 4)."""

from __future__ import annotations

import json

import pytest
from lxml import etree

from gateway.core.faults import fault_status, render_fault, render_json_error
from gateway.core.oauth1 import json_error_status
from gateway.core.reasons import FAULTS, Reason

SOAPENV = "http://schemas.xmlsoap.org/soap/envelope/"
SPEC_TABLE = {  # reason: (element, code) from SPEC section 4
    "malformed_request": ("unexpectedErrorFault", "USER_ERROR"),
    "request_too_large": ("exceededRequestSizeFault", "USER_ERROR"),
    "version_required": ("invalidVersionFault", "VALID_VERSION_REQD_IN_URL"),
    "version_mismatch": ("invalidVersionFault", "INVALID_WS_VERSION"),
    "version_unsupported": ("invalidVersionFault", "UNSUPPORTED_WS_VERSION"),
    "ambiguous_auth": ("invalidCredentialsFault", "USER_ERROR"),
    "passport_unsupported": ("invalidCredentialsFault", "USER_ERROR"),
    "tba_unsupported_endpoint": ("invalidCredentialsFault", "USER_ERROR"),
    "invalid_account": ("invalidAccountFault", "INVALID_ACCT"),
    "default_integration_blocked": ("invalidCredentialsFault", "WS_REQUEST_BLOCKED"),
    "application_id_required": ("invalidCredentialsFault", "INVALID_APP_ID"),
    "credentials_required": ("invalidCredentialsFault", "WS_LOG_IN_REQD"),
    "invalid_session": ("invalidSessionFault", "INVALID_SESSION"),
    "unknown_application": ("invalidCredentialsFault", "INVALID_APP_ID"),
    "invalid_login": ("invalidCredentialsFault", "INVALID_LOGIN_ATTEMPT"),
    "integration_blocked": ("invalidCredentialsFault", "WS_REQUEST_BLOCKED"),
    "integration_waiting_for_approval": ("invalidCredentialsFault", "WS_REQUEST_BLOCKED"),
    "auth_method_not_permitted": ("invalidCredentialsFault", "INVALID_LOGIN_ATTEMPT"),
    "store_unavailable": ("unexpectedErrorFault", "UNEXPECTED_ERROR"),
    "upstream_unavailable": ("unexpectedErrorFault", "UNEXPECTED_ERROR"),
    "upstream_timeout": ("unexpectedErrorFault", "UNEXPECTED_ERROR"),
}
HTTP = {
    "request_too_large": 413,
    "store_unavailable": 503,
    "upstream_unavailable": 502,
    "upstream_timeout": 504,
}


def test_table_matches_reasons() -> None:
    assert set(SPEC_TABLE) == {r.value for r in Reason} == {r.value for r in FAULTS}


@pytest.mark.parametrize("reason", list(Reason), ids=lambda r: r.value)
@pytest.mark.parametrize("version", [(2019, 1), (2025, 2), None])
def test_fault_shape(reason: Reason, version: tuple[int, int] | None) -> None:
    body = render_fault(reason, version)
    root = etree.fromstring(body)
    assert root.tag == f"{{{SOAPENV}}}Envelope" and root.prefix == "soapenv"
    (body_el,) = root
    assert body_el.tag == f"{{{SOAPENV}}}Body"
    (fault,) = body_el
    assert fault.tag == f"{{{SOAPENV}}}Fault"
    assert [c.tag for c in fault] == ["faultcode", "faultstring", "detail"]
    expected_code = "soapenv:Client" if reason is Reason.MALFORMED_REQUEST else "soapenv:Server.userException"
    assert fault.findtext("faultcode") == expected_code
    spec = FAULTS[reason]
    assert fault.findtext("faultstring") == spec.message
    (detail_el,) = fault.find("detail")
    v = version or (2025, 2)
    ns = f"urn:faults_{v[0]}_{v[1]}.platform.webservices.netsuite.com"
    element, code = SPEC_TABLE[reason.value]
    assert detail_el.tag == f"{{{ns}}}{element}" and detail_el.prefix == "platformFaults"
    assert detail_el.findtext(f"{{{ns}}}code") == code == spec.code
    assert detail_el.findtext(f"{{{ns}}}message") == spec.message
    assert fault_status(reason) == HTTP.get(reason.value, 500)


def test_fault_bytes_are_cached() -> None:
    assert render_fault(Reason.INVALID_LOGIN, (2020, 2)) is render_fault(Reason.INVALID_LOGIN, (2020, 2))


@pytest.mark.parametrize("reason", list(Reason), ids=lambda r: r.value)
def test_json_error(reason: Reason) -> None:
    status, body = render_json_error(reason)
    assert json.loads(body) == {"error": {"code": FAULTS[reason].code, "message": FAULTS[reason].message}}
    assert status == json_error_status(reason)


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        (Reason.INVALID_LOGIN, 401),
        (Reason.INVALID_ACCOUNT, 401),
        (Reason.CREDENTIALS_REQUIRED, 401),
        (Reason.INTEGRATION_BLOCKED, 403),
        (Reason.INTEGRATION_WAITING_FOR_APPROVAL, 403),
        (Reason.AUTH_METHOD_NOT_PERMITTED, 403),
        (Reason.UNKNOWN_APPLICATION, 403),
        (Reason.DEFAULT_INTEGRATION_BLOCKED, 403),
        (Reason.STORE_UNAVAILABLE, 503),
    ],
)
def test_json_status_per_spec(reason: Reason, status: int) -> None:
    assert json_error_status(reason) == status
