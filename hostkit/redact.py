"""Keep secrets out of messages, logs, output and the cache.

One list of credential-bearing query parameters (:data:`SECRET_PARAMS` plus
:data:`_SECRET_PART`) serves both uses:

- :func:`redact_url` is the display form of an identifier: no userinfo, the
  values of secret parameters masked. Every output shows identifiers this way.
- :func:`url_cache_key` is the cache key of a URL: no userinfo, secret
  parameters removed; a signed (presigned / SAS) URL also loses the rest of
  its signing parameters, so two signatures of one object share one entry,
  while ordinary query parameters (``?id=123``) stay: they name the file.

:func:`redact_text` masks the same things in free text (exception messages).
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

#: Query parameters whose values are credentials (lowercase, without ``-`` and ``_``).
SECRET_PARAMS = frozenset({
    "xamzsignature", "xamzcredential", "xamzsecuritytoken",  # S3 SigV4 presigned
    "xgoogsignature", "xgoogcredential",  # GCS V4 signed
    "sig", "skoid", "sktid",  # Azure SAS: signature, user-delegation object / tenant ids
    "signature", "awsaccesskeyid", "googleaccessid",  # S3 / GCS V2 signed, CloudFront
    "key", "apikey", "xapikey", "auth", "session", "sessionid", "pwd", "passwd", "jwt",
})
#: Any parameter whose name (without ``-`` and ``_``) contains one of these is one too.
_SECRET_PART = re.compile(r"token|secret|passw|signature|credential|accesskey|authoriz|apikey|"
                          r"privatekey|bearer|jwt", re.I)
#: Parameters that make a URL a signed one: its key drops every signing parameter.
_SIGNATURES = frozenset({"x-amz-signature", "x-goog-signature", "sig", "signature"})
#: The other parameters of the signing protocols (S3, GCS, Azure SAS, CloudFront).
_SIGNING_PARAMS = frozenset({
    "expires", "key-pair-id", "policy",
    "sv", "ss", "srt", "sp", "se", "st", "spr", "sr", "si", "skt", "ske", "sks", "skv",
    "sdd", "ses", "sduoid", "scid", "rscc", "rscd", "rsce", "rscl", "rsct",
})
_SIGNING_PREFIXES = ("x-amz-", "x-goog-")
#: A URL inside free text, or a ``prefix:`` (MedPerf's ``direct:``) before one.
_URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
_NESTED = re.compile(r"^((?:[a-zA-Z][a-zA-Z0-9+.-]*:)+)([a-zA-Z][a-zA-Z0-9+.-]*://.*)$", re.S)
_SECRET_WORDS = re.compile(
    r"((?:access|secret|account)[_-]?key|token|password|authorization|sig)(\s*[=:]\s*)([^\s&;,'\"]+)",
    re.I)
_PAIR_IN_TEXT = re.compile(r"([\w.-]+)=([^\s&;,'\"]+)")
MASK = "***"


def is_secret_param(name: str) -> bool:
    """Whether a query parameter (as written, maybe percent-encoded) carries a credential."""
    name = re.sub(r"[-_.\s]", "", unquote_plus(name).lower())
    return name in SECRET_PARAMS or _SECRET_PART.search(name) is not None


def _is_signing_param(name: str) -> bool:
    name = unquote_plus(name).strip().lower()
    return name in _SIGNATURES or name in _SIGNING_PARAMS or name.startswith(_SIGNING_PREFIXES)


def _pairs(query: str) -> list[tuple[str, str]]:
    """``a=1&b`` -> ``[("a", "a=1"), ("b", "b")]``: names and the segments exactly as written."""
    return [(seg.partition("=")[0], seg) for seg in query.split("&") if seg]


def _mask_query(query: str) -> str:
    return "&".join(f"{name}={MASK}" if is_secret_param(name) else _nested_clean(seg)
                    for name, seg in _pairs(query))


def _key_query(query: str) -> str:
    pairs = _pairs(query)
    signed = any(unquote_plus(name).strip().lower() in _SIGNATURES for name, _ in pairs)
    return "&".join(_nested_clean(seg) for name, seg in pairs
                    if not is_secret_param(name) and not (signed and _is_signing_param(name)))


def _nested_clean(segment: str) -> str:
    """A ``name=value`` segment whose value is a URL with userinfo loses the userinfo."""
    name, eq, value = segment.partition("=")
    plain = unquote_plus(value)
    if "://" not in plain or "@" not in plain:
        return segment
    cleaned = _URL_IN_TEXT.sub(lambda m: _without_userinfo(m.group(0)), plain)
    if cleaned == plain:
        return segment
    return f"{name}{eq}{quote(cleaned, safe=':/?=&%')}"


def _without_userinfo(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    authority, slash, tail = rest.partition("/")
    return f"{scheme}{sep}{authority.rpartition('@')[2]}{slash}{tail}"


def _split(url: str):
    """``(prefix, parts)`` for a URL, maybe behind ``direct:``-style prefixes; None if not one."""
    prefix = ""
    if match := _NESTED.match(url):
        prefix, url = match.groups()
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return prefix, parts


def _host(netloc: str) -> str:
    """``netloc`` without userinfo (the host is lowercased: it is case-insensitive)."""
    hostport = netloc.rpartition("@")[2]
    host, sep, port = hostport.rpartition(":") if not hostport.endswith("]") else ("", "", "")
    if sep and port.isdigit():
        return f"{host.lower()}:{port}"
    return hostport.lower()


def _unsplit(url: str, scheme: str, netloc: str, path: str, query: str, fragment: str) -> str:
    """urlunsplit, keeping the ``//`` of an empty authority (``minio:///b/k`` stays so)."""
    out = urlunsplit((scheme, netloc, path, query, fragment))
    rest = out[len(scheme) + 1:]
    if scheme and not netloc and url.partition(":")[2].startswith("//") \
            and not rest.startswith("//"):
        out = f"{scheme}://{rest}"
    return out


def redact_url(url: str) -> str:
    """The display form of an identifier or URL: no userinfo, secret query values masked.

    Works on anything a user may write: ``https://...``, ``direct:https://...``,
    ``s3://...``, ``synapse:syn123``. A fragment made of ``k=v`` pairs is masked
    like a query.
    """
    split = _split(url)
    if split is None:
        return "<unparseable url>"
    prefix, parts = split
    netloc = parts.netloc.rpartition("@")[2]
    fragment = _mask_query(parts.fragment) if "=" in parts.fragment else parts.fragment
    return prefix + _unsplit(url[len(prefix):], parts.scheme, netloc, parts.path,
                             _mask_query(parts.query), fragment)


def url_cache_key(url: str) -> str:
    """The cache key of a URL: no userinfo, no secret parameters, no http fragment.

    A signed URL (``X-Amz-Signature``, ``X-Goog-Signature``, Azure ``sig``,
    ``Signature``) also drops its other signing parameters (dates, expiry,
    permissions), so every signature of one object maps to one key. Other
    query parameters are kept: they may name a different file.
    """
    split = _split(url)
    if split is None:
        raise ValueError("not a URL")
    prefix, parts = split
    scheme = parts.scheme.lower()
    # an http fragment never reaches the server; elsewhere (gs://b/k#GENERATION) it may count
    fragment = "" if scheme in ("http", "https") else (
        _key_query(parts.fragment) if "=" in parts.fragment else parts.fragment)
    return prefix + _unsplit(url[len(prefix):], scheme, _host(parts.netloc), parts.path,
                             _key_query(parts.query), fragment)


def redact_text(text: str) -> str:
    """Mask secrets anywhere in free text: URLs (as :func:`redact_url`), ``key=value``
    pairs whose key is a secret, bearer / basic credentials."""
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    text = re.sub(r"\b(Bearer|Basic)\s+[^\s,;'\"]+", r"\1 ***", text, flags=re.I)
    text = _PAIR_IN_TEXT.sub(
        lambda m: f"{m.group(1)}={MASK}" if is_secret_param(m.group(1)) else m.group(0), text)
    return _SECRET_WORDS.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
