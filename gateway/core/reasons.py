"""Reason ids and their NetSuite-shaped faults (SPEC section 4)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    MALFORMED_REQUEST = "malformed_request"
    REQUEST_TOO_LARGE = "request_too_large"
    VERSION_REQUIRED = "version_required"
    VERSION_MISMATCH = "version_mismatch"
    VERSION_UNSUPPORTED = "version_unsupported"
    AMBIGUOUS_AUTH = "ambiguous_auth"
    PASSPORT_UNSUPPORTED = "passport_unsupported"
    TBA_UNSUPPORTED_ENDPOINT = "tba_unsupported_endpoint"
    INVALID_ACCOUNT = "invalid_account"
    DEFAULT_INTEGRATION_BLOCKED = "default_integration_blocked"
    APPLICATION_ID_REQUIRED = "application_id_required"
    CREDENTIALS_REQUIRED = "credentials_required"
    INVALID_SESSION = "invalid_session"
    UNKNOWN_APPLICATION = "unknown_application"
    INVALID_LOGIN = "invalid_login"
    INTEGRATION_BLOCKED = "integration_blocked"
    INTEGRATION_WAITING_FOR_APPROVAL = "integration_waiting_for_approval"
    AUTH_METHOD_NOT_PERMITTED = "auth_method_not_permitted"
    STORE_UNAVAILABLE = "store_unavailable"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    UPSTREAM_TIMEOUT = "upstream_timeout"


@dataclass(frozen=True, slots=True)
class FaultSpec:
    element: str
    code: str
    message: str
    http_status: int = 500
    json_status: int = 401  # RESTlet / Issue Token routes


_C = "invalidCredentialsFault"
FAULTS: dict[Reason, FaultSpec] = {
    Reason.MALFORMED_REQUEST: FaultSpec(
        "unexpectedErrorFault", "USER_ERROR",
        "The request could not be understood by the server due to malformed syntax.", json_status=400),
    Reason.REQUEST_TOO_LARGE: FaultSpec(
        "exceededRequestSizeFault", "USER_ERROR", "The request exceeds the size limit.", 413, 413),
    Reason.VERSION_REQUIRED: FaultSpec(
        "invalidVersionFault", "VALID_VERSION_REQD_IN_URL",
        "A valid endpoint version is required in the URL.", json_status=400),
    Reason.VERSION_MISMATCH: FaultSpec(
        "invalidVersionFault", "INVALID_WS_VERSION",
        "The namespace version does not match the endpoint version.", json_status=400),
    Reason.VERSION_UNSUPPORTED: FaultSpec(
        "invalidVersionFault", "UNSUPPORTED_WS_VERSION", "The endpoint version is not supported.",
        json_status=400),
    Reason.AMBIGUOUS_AUTH: FaultSpec(_C, "USER_ERROR", "Ambiguous authentication", json_status=400),
    Reason.PASSPORT_UNSUPPORTED: FaultSpec(
        _C, "USER_ERROR",
        "Request-level credentials are not supported on 2020.2 and later endpoints; use token-based "
        "authentication.", json_status=400),
    Reason.TBA_UNSUPPORTED_ENDPOINT: FaultSpec(
        _C, "USER_ERROR", "Token-based authentication is not supported on 2015.1 and earlier endpoints.",
        json_status=400),
    Reason.INVALID_ACCOUNT: FaultSpec("invalidAccountFault", "INVALID_ACCT", "Invalid account"),
    Reason.DEFAULT_INTEGRATION_BLOCKED: FaultSpec(
        _C, "WS_REQUEST_BLOCKED",
        "Web services requests are blocked by the Default Web Services Integrations record.",
        json_status=403),
    Reason.APPLICATION_ID_REQUIRED: FaultSpec(
        _C, "INVALID_APP_ID", "An application ID is required with user credentials."),
    Reason.CREDENTIALS_REQUIRED: FaultSpec(_C, "WS_LOG_IN_REQD", "Authentication is required."),
    Reason.INVALID_SESSION: FaultSpec("invalidSessionFault", "INVALID_SESSION", "The session is not valid."),
    Reason.UNKNOWN_APPLICATION: FaultSpec(_C, "INVALID_APP_ID", "Invalid application ID", json_status=403),
    Reason.INVALID_LOGIN: FaultSpec(_C, "INVALID_LOGIN_ATTEMPT", "Invalid login attempt."),
    Reason.INTEGRATION_BLOCKED: FaultSpec(
        _C, "WS_REQUEST_BLOCKED", "Web services requests from this integration are blocked.", json_status=403),
    Reason.INTEGRATION_WAITING_FOR_APPROVAL: FaultSpec(
        _C, "WS_REQUEST_BLOCKED", "The integration is waiting for approval.", json_status=403),
    Reason.AUTH_METHOD_NOT_PERMITTED: FaultSpec(
        _C, "INVALID_LOGIN_ATTEMPT", "The authentication method is not permitted for this integration.",
        json_status=403),
    Reason.STORE_UNAVAILABLE: FaultSpec(
        "unexpectedErrorFault", "UNEXPECTED_ERROR", "The service is temporarily unavailable; retry.", 503, 503),
    Reason.UPSTREAM_UNAVAILABLE: FaultSpec(
        "unexpectedErrorFault", "UNEXPECTED_ERROR", "The backend is unavailable.", 502, 502),
    Reason.UPSTREAM_TIMEOUT: FaultSpec(
        "unexpectedErrorFault", "UNEXPECTED_ERROR", "The backend response timed out.", 504, 504),
}
