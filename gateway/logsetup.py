"""Process logging: plain text or JSON lines. Bodies never go here (they go, redacted, to the
execution log in Redis)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from gateway.config import Settings

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class PlainWithExtras(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        return text + ("  " + " ".join(f"{k}={v}" for k, v in extras.items()) if extras else "")


def setup_logging(settings: Settings | None = None, *, json_lines: bool | None = None, level: str = "info") -> None:
    if settings is not None:
        json_lines = settings.log.json if json_lines is None else json_lines
        level = settings.log.level
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if json_lines else PlainWithExtras(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
