"""Identifiers as people write them, parsed into a :class:`Ref`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import UsageError

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):(.+)$", re.S)
#: MedPerf's prefix for a direct download link.
DIRECT_PREFIX = "direct:"


@dataclass(frozen=True)
class Ref:
    """A parsed identifier.

    ``identifier`` is the canonical form (``direct:`` stripped, whitespace trimmed);
    ``raw`` is what the user wrote; ``scheme`` is lowercase (``https``, ``synapse``,
    ``s3``, ``minio``, ``gs``, ``az``...). ``rest`` is everything after ``scheme:``.
    """

    raw: str
    identifier: str
    scheme: str
    rest: str


def parse_identifier(text: str) -> Ref:
    """Parse an identifier; backends decide later whether they accept its scheme."""
    raw = text
    text = text.strip()
    if text.lower().startswith(DIRECT_PREFIX):
        text = text[len(DIRECT_PREFIX):].strip()
        if not text.lower().startswith(("http://", "https://")):
            raise UsageError(f"{raw!r}: direct: must be followed by an http(s) URL",
                             hint="write direct:https://host/path/file")
    match = _SCHEME.match(text)
    if not match or any(c.isspace() for c in text):
        raise UsageError(f"{raw!r} is not an identifier",
                         hint="use a URL such as https://host/file, direct:https://..., "
                              "synapse:syn123, s3://bucket/key; `hostkit plugins` lists all forms")
    scheme, rest = match.group(1).lower(), match.group(2)
    return Ref(raw=raw, identifier=f"{scheme}:{rest}", scheme=scheme, rest=rest)
