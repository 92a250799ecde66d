"""Integration Gateway: a streaming SOAP reverse proxy that enforces integration records."""

__version__ = "0.1.0"
