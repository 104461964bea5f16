"""Structured logs: one JSON object per line on stderr (journald-friendly).

Every request and every download writes one line. Identifiers go through
:func:`hostkit.redact.redact_url` and free text through
:func:`hostkit.redact.redact_text`, so presigned query strings, userinfo and
``token=...`` never reach the log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time

from hostkit.redact import redact_text, redact_url

_stream = sys.stderr


def redact_identifier(identifier: str | None) -> str | None:
    """An identifier safe to log: URLs lose userinfo and secret query values."""
    if identifier is None:
        return None
    identifier = str(identifier)[:2000]
    if "://" in identifier:
        return redact_url(identifier)
    return redact_text(identifier)


def event(kind: str, **fields) -> None:
    """Write one JSON line ``{"ts", "event": kind, ...fields}``."""
    record = {"ts": round(time.time(), 3), "event": kind}
    for key, value in fields.items():
        if value is None:
            continue
        if key == "identifier":
            value = redact_identifier(value)
        elif isinstance(value, str) and key in ("message", "hint", "path", "traceback"):
            value = redact_text(value)
        record[key] = value
    line = json.dumps(record, default=str, separators=(",", ":")) + "\n"
    with contextlib.suppress(OSError, ValueError):  # a broken stderr must not stop the daemon
        _stream.write(line)


class JsonFormatter(logging.Formatter):
    """Formats ``logging`` records (the resolver's, aiohttp's) as redacted JSON lines."""

    def format(self, record: logging.LogRecord) -> str:
        data = {"ts": round(record.created, 3), "event": "log", "level": record.levelname.lower(),
                "logger": record.name, "message": redact_text(record.getMessage())}
        if record.exc_info:
            data["traceback"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(data, default=str, separators=(",", ":"))


def configure(verbose: bool = False, stream=None) -> None:
    """Send ``hostkit`` and ``aiohttp`` logs to ``stream`` (stderr) as JSON lines."""
    global _stream
    _stream = stream or sys.stderr
    handler = logging.StreamHandler(_stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # aiohttp's access log is replaced by our own request lines
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
