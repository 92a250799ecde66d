"""The gateway's small error tree. Pure parsers raise ValueError; boundaries wrap it."""


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """Configuration is invalid; the message names the field."""


class EnvelopeError(GatewayError):
    """The request envelope violates the contract.

    `reason` is a SPEC reason id (`malformed_request`, `request_too_large`); `detail` is a
    short machine-readable sub-reason for the log (never shown to the client).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class StoreUnavailable(GatewayError):
    """Redis cannot be reached and no cached answer may be used."""
