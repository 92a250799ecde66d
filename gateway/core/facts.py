"""Frozen values the envelope inspector and the HTTP adapter extract from a request."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.core.versions import Version, version_from_namespace

SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"


@dataclass(frozen=True, slots=True)
class Passport:
    """A header `passport` or the `passport` child of `login`."""

    email: str | None = None
    password: str | None = None
    account: str | None = None
    role: str | None = None  # the `internalId` attribute of `role`


@dataclass(frozen=True, slots=True)
class SsoPassport:
    authentication_token: str | None = None
    partner_id: str | None = None
    partner_account: str | None = None
    partner_user_id: str | None = None


@dataclass(frozen=True, slots=True)
class TokenPassport:
    account: str | None = None
    consumer_key: str | None = None
    token: str | None = None
    nonce: str | None = None
    timestamp: str | None = None
    signature: str | None = None
    algorithm: str | None = None  # the `algorithm` attribute of `signature`, as sent
    # The account's text exactly as sent, spaces included (SPEC 2: the signature covers it so);
    # `account` is trimmed, for lookups.
    signed_account: str | None = None


@dataclass(frozen=True, slots=True)
class EnvelopeHead:
    """What the inspector learned by the time it could decide.

    For most operations that is the start tag of the Body's first child; for `login` and
    `ssoLogin` the credentials live inside that element, so the head ends with it.
    """

    operation: str
    operation_namespace: str | None
    header_passport: Passport | None = None
    token_passport: TokenPassport | None = None
    application_id: str | None = None
    login_passport: Passport | None = None
    sso_passport: SsoPassport | None = None

    @property
    def namespace_version(self) -> Version | None:
        return version_from_namespace(self.operation_namespace)


@dataclass(frozen=True, slots=True)
class CookieFacts:
    """The request's cookies as far as the rules care (SPEC section 2)."""

    jsessionid: str | None = None
    invalid: bool = False  # several Cookie headers, a pair without '=', several JSESSIONIDs


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """Everything `decide` needs to know about one SOAP request."""

    path_version: Version | None
    head: EnvelopeHead
    cookies: CookieFacts = field(default_factory=CookieFacts)
