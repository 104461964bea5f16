"""Structured logs: one JSON object per line on stderr (journald-friendly).

Every request and every download writes one line. Identifiers go through
:func:`hostkit.redact.redact_url` and free text through
:func:`hostkit.redact.redact_text`, so presigned query strings, userinfo and
``token=...`` never reach the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import sys
import time
from json.encoder import encode_basestring_ascii as _quote

from hostkit.redact import redact_text, redact_url

_stream = sys.stderr
_loop: asyncio.AbstractEventLoop | None = None  # the daemon's loop, once attached
_pending: list[str] = []
_flush_scheduled = False


def attach(loop: asyncio.AbstractEventLoop | None) -> None:
    """Batch the lines written on ``loop`` (the daemon's); None writes every line at once."""
    global _loop
    flush()
    _loop = loop


def _write(line: str) -> None:
    """Queue a line; lines queued in one event-loop pass go out in one write.

    Under load several requests finish per pass, so this saves a system call per
    request and still writes within the same pass. Lines from anywhere but the
    attached loop (other threads, no loop) are written at once.
    """
    global _flush_scheduled
    if _loop is None or asyncio._get_running_loop() is not _loop:
        _emit(line)
        return
    _pending.append(line)
    if not _flush_scheduled:
        _flush_scheduled = True
        _loop.call_soon(flush)


def flush() -> None:
    """Write queued lines now."""
    global _flush_scheduled
    _flush_scheduled = False
    if _pending:
        data = "".join(_pending)
        _pending.clear()
        _emit(data)


def _emit(data: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # a broken stderr must not stop the daemon
        _stream.write(data)


@functools.lru_cache(maxsize=1024)
def redact_identifier(identifier: str | None) -> str | None:
    """An identifier safe to log: URLs lose userinfo and secret query values."""
    if identifier is None:
        return None
    identifier = str(identifier)[:2000]
    if "://" in identifier:
        return redact_url(identifier)
    return redact_text(identifier)


_FREE_TEXT = frozenset({"message", "hint", "path", "traceback"})
_dumps = json.JSONEncoder(default=str, separators=(",", ":")).encode


@functools.lru_cache(maxsize=1024)
def _quoted(text: str, key: str) -> str:
    """``text`` as a JSON string, redacted as its field ``key`` requires (memoised)."""
    if key == "identifier":
        text = redact_identifier(text)
    elif key in _FREE_TEXT:
        text = redact_text(text)
    return _quote(text)


def _value(key: str, value) -> str:
    if isinstance(value, str):
        return _quoted(value, key)
    if type(value) in (int, float):
        return repr(value)
    return _dumps(value)


def event(kind: str, /, **fields) -> None:
    """Write one JSON line ``{"ts", "event": kind, ...fields}`` (None fields left out).

    ``kind`` is positional only, so a field may be called ``kind`` too (a job's kind).

    Formatted by hand (strings through the json module's C quoting): this runs
    once per request, so it is kept to a few microseconds.
    """
    parts = [f'{{"ts":{time.time():.3f},"event":{_quote(kind)}']
    for key, value in fields.items():
        if value is not None:
            parts.append(f",{_quote(key)}:{_value(key, value)}")
    parts.append("}\n")
    _write("".join(parts))


def request(method: str, route: str, status: int, seconds: float, info: dict) -> None:
    """The per-request line: :func:`event` specialised for speed (it runs on every request).

    ``info`` holds the handler's extra fields (identifier, outcome, bytes, ...).
    """
    extra = "".join(f",{_quote(k)}:{_value(k, v)}" for k, v in info.items() if v is not None)
    line = (f'{{"ts":{time.time():.3f},"event":"request","method":{_quoted(method, "m")},'
            f'"route":{_quoted(route, "r")},"status":{status},'
            f'"duration_ms":{seconds * 1000:.2f}{extra}}}\n')
    _write(line)


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
