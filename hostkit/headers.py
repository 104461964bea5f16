"""Reading HTTP response headers the same way in every backend."""

from __future__ import annotations

import base64
import binascii
import re

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def content_range(headers) -> tuple[int, int | None] | None:
    """(first byte, total size or None) of a 206's ``Content-Range``; None if unusable."""
    match = _CONTENT_RANGE.match(headers.get("Content-Range", ""))
    if not match:
        return None
    total = match.group(3)
    return int(match.group(1)), None if total == "*" else int(total)


def md5_from_base64(value: str | None) -> str | None:
    """Hex MD5 from a base64 header value (Content-MD5, GCS md5Hash); None if not one."""
    if not value:
        return None
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest.hex() if len(digest) == 16 else None
