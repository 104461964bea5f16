"""AWS Signature Version 4 for S3 requests, with :mod:`hmac` and :mod:`hashlib` alone.

Importing botocore to sign a HEAD and a few ranged GETs costs more than the
download of a small object: its import pulls in urllib3, its HTTP session and
its parsers (about 0.2 s and 10 MiB here). This module signs exactly as
botocore's ``S3SigV4Auth`` does (same canonical request, same headers signed,
``X-Amz-Content-SHA256`` always sent), which ``tests/test_objectstores.py``
checks header for header against botocore itself, and against SeaweedFS with
right and wrong keys.

Credentials taken here are only the static keys of the environment
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, with ``AWS_SESSION_TOKEN``),
which botocore's chain would use first too; everything else (profiles, SSO,
roles, expiring keys) is left to botocore's chain.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

#: sha256 of an empty body: what a HEAD or GET signs as its payload.
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: Headers botocore never signs (proxies and clients may change them).
UNSIGNED_HEADERS = frozenset({
    "baggage", "connection", "expect", "keep-alive", "proxy-authenticate",
    "proxy-authorization", "te", "traceparent", "tracestate", "trailer", "transfer-encoding",
    "upgrade", "user-agent", "x-amzn-trace-id"})
#: Headers the signature itself sets (any given are replaced).
_OWN = frozenset({"authorization", "x-amz-date", "x-amz-content-sha256",
                  "x-amz-security-token"})


@dataclass(frozen=True)
class StaticCredentials:
    """An access key, its secret and a session token, if any.

    Quacks like botocore's credentials (``get_frozen_credentials``), so code
    that signs with botocore (uploads, the shared tier) takes it as well.
    """

    access_key: str
    secret_key: str
    token: str | None = None

    def get_frozen_credentials(self) -> StaticCredentials:
        """These credentials (they never change)."""
        return self

    def __repr__(self) -> str:  # never the secret, nor the token
        return f"StaticCredentials(access_key={self.access_key!r}, secret_key=***)"


def environment_credentials() -> StaticCredentials | None:
    """The environment's static keys as botocore's ``EnvProvider`` reads them, or None.

    None also when they are incomplete (one of the two) or expire
    (``AWS_CREDENTIAL_EXPIRATION``): botocore's chain then says what is wrong,
    or refreshes them.
    """
    env = os.environ
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if not key or not secret or env.get("AWS_CREDENTIAL_EXPIRATION"):
        return None
    token = env.get("AWS_SESSION_TOKEN") or env.get("AWS_SECURITY_TOKEN") or None
    return StaticCredentials(key, secret, token)


def _host(url: str) -> str:
    """The ``Host`` an HTTP client sends for ``url`` (no default port; IPv6 in brackets)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != {"http": 80, "https": 443}.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


def _query(query: str) -> str:
    """The canonical query: the URL's own (already encoded) pairs, sorted."""
    if not query:
        return ""
    pairs = sorted(pair.partition("=")[::2] for pair in query.split("&"))
    return "&".join(f"{key}={value}" for key, value in pairs)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


@functools.lru_cache(maxsize=16)
def _signing_key(secret_key: str, day: str, region: str, service: str) -> bytes:
    """SigV4's key for one day, region and service (four HMACs: kept, as botocore does not)."""
    key = _hmac(f"AWS4{secret_key}".encode(), day)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return key


def sign(credentials: StaticCredentials, method: str, url: str, headers: dict[str, str],
         region: str, *, payload: str = EMPTY_SHA256, service: str = "s3",
         now: datetime | None = None) -> dict[str, str]:
    """``headers`` plus ``X-Amz-Date``, ``X-Amz-Content-SHA256`` (``payload``, the body's
    sha256 hex), the session token if any, and ``Authorization`` for ``method url``.

    ``url`` is sent as it is (percent-encoded already): S3 signs the path unchanged.
    """
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    out = {k: v for k, v in headers.items() if k.lower() not in _OWN}
    out["X-Amz-Date"] = stamp
    if credentials.token:
        out["X-Amz-Security-Token"] = credentials.token
    out["X-Amz-Content-SHA256"] = payload
    signed: dict[str, list[str]] = {}
    for name, value in out.items():
        lname = name.lower()
        if lname not in UNSIGNED_HEADERS:
            signed.setdefault(lname, []).append(" ".join(str(value).split()))
    if "host" not in signed:
        signed["host"] = [_host(url)]
    names = sorted(signed)
    canonical_headers = "".join(f"{n}:{','.join(signed[n])}\n" for n in names)
    signed_headers = ";".join(names)
    parts = urlsplit(url)
    canonical = "\n".join([method.upper(), parts.path or "/", _query(parts.query),
                           canonical_headers, signed_headers, payload])
    scope = f"{stamp[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = _signing_key(credentials.secret_key, stamp[:8], region, service)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
                            f"SignedHeaders={signed_headers}, Signature={signature}")
    return out
