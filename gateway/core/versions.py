"""SuiteTalk endpoint versions: `(YYYY, N)` tuples, as the SPEC compares them."""

from __future__ import annotations

import re

Version = tuple[int, int]

_PATH_RE = re.compile(r"/services/NetSuitePort(?:_(\d{4})_(\d+)(?:_0)?)?")
_NS_RE = re.compile(r"urn:messages_(\d{4})_(\d+)\.platform\.webservices\.netsuite\.com")
_TEXT_RE = re.compile(r"(\d{4})[._](\d+)")

LAST_PASSPORT_FREE = (2020, 2)  # request-level credentials refused from here on (R5)
LAST_PRE_TBA = (2015, 1)  # TBA refused up to and including this one (R6)


class NotAnEndpoint(ValueError):
    """The path is not a SOAP endpoint path."""


def parse_version(text: str) -> Version:
    """`"2020.2"` or `"2020_2"` -> `(2020, 2)`; ValueError otherwise."""
    m = _TEXT_RE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"not an endpoint version: {text!r}")
    return int(m.group(1)), int(m.group(2))


def version_from_path(path: str) -> Version | None:
    """Version named by a SOAP endpoint path, None for the bare `/services/NetSuitePort`.

    Raises NotAnEndpoint when the path is not a SOAP endpoint at all (the router's 404).
    """
    m = _PATH_RE.fullmatch(path)
    if not m:
        raise NotAnEndpoint(path)
    if m.group(1) is None:
        return None
    return int(m.group(1)), int(m.group(2))


def version_from_namespace(namespace: str | None) -> Version | None:
    if not namespace:
        return None
    m = _NS_RE.fullmatch(namespace)
    return (int(m.group(1)), int(m.group(2))) if m else None


def version_tag(version: Version | None) -> str:
    """`(2020, 2)` -> `"2020_2"` (the log's and metrics' form); None -> `"none"`."""
    return "none" if version is None else f"{version[0]}_{version[1]}"
