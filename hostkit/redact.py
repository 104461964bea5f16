"""Keep secrets out of messages, logs and output."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Query parameters that carry credentials in presigned or tokenised URLs.
_SECRET_PARAMS = re.compile(
    r"(signature|sig|token|key|secret|credential|password|auth|session|code|sv|se|sp|skoid|sktid)",
    re.I)
_SECRET_WORDS = re.compile(
    r"((?:access|secret|account)[_-]?key|token|password|authorization|sig)(\s*[=:]\s*)([^\s&;,'\"]+)",
    re.I)


def redact_url(url: str) -> str:
    """Drop userinfo and mask credential-bearing query values of a URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if _SECRET_PARAMS.search(k) else v) for k, v in pairs],
                          safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_text(text: str) -> str:
    """Mask ``key=value`` style secrets, bearer tokens and userinfo anywhere in free text."""
    text = re.sub(r"(\w+://)[^/@\s]+@", r"\1", text)
    text = re.sub(r"\b(Bearer|Basic)\s+[^\s,;'\"]+", r"\1 ***", text, flags=re.I)
    return _SECRET_WORDS.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
