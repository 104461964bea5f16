"""Identifiers as people write them, parsed into a :class:`Ref`.

Parsing is the one place an identifier is split into what may be shown and
stored (``display``, ``key``: every secret removed) and what is only used for
the request itself (``identifier``, kept in memory, never printed, logged or
written). It also refuses what no backend should ever see: a host that is not a
host name, a port outside 1..65535, ``.``/``..`` path segments (which clients
normalise away, so the bytes fetched would not be the ones the key names).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from .errors import UsageError
from .redact import redact_url, url_cache_key

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):(.+)$", re.S)
#: MedPerf's prefix for a direct download link.
DIRECT_PREFIX = "direct:"
#: Schemes whose ``//authority`` is a network host (the others name buckets, containers...).
HOST_SCHEMES = frozenset({"http", "https", "minio"})
_HOST_FORMS = {"minio": "minio://host:port/bucket/key"}
_FORMS_HINT = ("use a URL such as https://host/file, direct:https://..., synapse:syn123, "
               "s3://bucket/key; `hostkit plugins` lists all forms")


class Ref:
    """A parsed identifier (immutable).

    ``display`` is the identifier to show (userinfo dropped, secret query
    values masked); ``key`` has every secret removed (the basis of cache keys).
    ``identifier`` is the canonical form the request uses (``direct:`` stripped,
    whitespace trimmed, the host IDNA-encoded): it may hold credentials, so it
    lives only in memory for the request and is left out of ``repr``.
    ``scheme`` is lowercase (``https``, ``synapse``, ``s3``...); ``rest`` is
    everything after ``scheme:`` (secrets included, like ``identifier``).
    ``credentialed`` is true when the identifier itself carries a credential
    (userinfo, a token, a signature).

    A plain class rather than a dataclass: the CLI's fast path parses one on
    every warm hit, and importing :mod:`dataclasses` costs more than that.
    """

    __slots__ = ("identifier", "scheme", "rest", "display", "key", "credentialed")

    identifier: str
    scheme: str
    rest: str
    display: str
    key: str
    credentialed: bool

    def __init__(self, *, identifier: str, scheme: str, rest: str, display: str, key: str,
                 credentialed: bool = False):
        for name, value in (("identifier", identifier), ("scheme", scheme), ("rest", rest),
                            ("display", display), ("key", key),
                            ("credentialed", credentialed)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError(f"Ref is immutable: cannot set {name!r}")

    def __eq__(self, other) -> bool:
        return isinstance(other, Ref) and all(
            getattr(self, n) == getattr(other, n) for n in Ref.__slots__)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, n) for n in Ref.__slots__))

    def __repr__(self) -> str:
        return (f"Ref(scheme={self.scheme!r}, display={self.display!r}, key={self.key!r}, "
                f"credentialed={self.credentialed!r})")

    @property
    def raw(self) -> str:
        """What the user wrote, as it may be shown: the same as ``display``."""
        return self.display


def _bad(text: str, why: str, hint: str = _FORMS_HINT) -> UsageError:
    return UsageError(f"{redact_url(text)!r} {why}", hint=hint)


def parse_identifier(text: str) -> Ref:
    """Parse an identifier; backends decide later whether they accept its scheme.

    Raises :class:`~hostkit.errors.UsageError` (credentials never in its message)
    for malformed input.
    """
    text = text.strip()
    if _has_surrogates(text):
        raise UsageError("the identifier is not valid UTF-8 (undecodable bytes or lone "
                         "surrogates)", hint=_FORMS_HINT)
    if not text.isprintable():
        raise _bad(text, "is not an identifier (it has control characters)")
    if text.lower().startswith(DIRECT_PREFIX):
        text = text[len(DIRECT_PREFIX):].strip()
        if not text.lower().startswith(("http://", "https://")):
            raise _bad(text, "follows direct:, which must be followed by an http(s) URL",
                       hint="write direct:https://host/path/file")
    match = _SCHEME.match(text)
    if not match or any(c.isspace() for c in text):
        raise _bad(text, "is not an identifier")
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme in HOST_SCHEMES:
        rest = _canonical_authority(text, scheme, rest)
    _refuse_dot_segments(text, rest)
    identifier = f"{scheme}:{rest}"
    try:
        display, key = redact_url(identifier), url_cache_key(identifier)
    except ValueError:
        raise _bad(text, "is not a URL") from None
    return Ref(identifier=identifier, scheme=scheme, rest=rest, display=display, key=key,
               credentialed=display != identifier)


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _canonical_authority(text: str, scheme: str, rest: str) -> str:
    """``rest`` with its host IDNA-encoded; UsageError for a bad host or port."""
    form = _HOST_FORMS.get(scheme, f"{scheme}://host/path")
    if not rest.startswith("//"):
        raise _bad(text, "is not a URL", hint=f"write {form}")
    authority, sep, tail = rest[2:], "", ""
    for i, c in enumerate(authority):
        if c in "/?#":
            authority, sep, tail = authority[:i], c, authority[i + 1:]
            break
    userinfo, at, hostport = authority.rpartition("@")
    if hostport.startswith("["):
        host, close, port = hostport[1:].partition("]")
        if not close or (port and not port.startswith(":")) or not _ipv6(host):
            raise _bad(text, "has a malformed IPv6 address", hint="write http://[::1]:8080/path")
        host, port = f"[{host}]", port[1:]
        colon = ":" if port or hostport.endswith(":") else ""
    else:
        host, colon, port = hostport.partition(":")
        host = _idna(text, host)
    if not host or host == "[]":
        raise _bad(text, "has no host", hint=f"write {form}")
    if colon and not (port.isdigit() and port.isascii() and 1 <= int(port) <= 65535):
        raise _bad(text, f"has an invalid port {port[:20]!r}",
                   hint="a port is a number from 1 to 65535")
    return f"//{userinfo}{at}{host}{colon}{port}{sep}{tail}"


def _ipv6(text: str) -> bool:
    """An IPv6 literal as it may stand in brackets (a zone id allowed)."""
    import ipaddress

    try:
        ipaddress.IPv6Address(unquote(text))
    except ValueError:
        return False
    return True


def _idna(text: str, host: str) -> str:
    """An ASCII host name for ``host`` (IDNA, as browsers and yarl encode it)."""
    if host.isascii():
        # what the resolver's getaddrinfo and yarl will do with it: an empty or overlong
        # label, or an 'xn--' label that is no punycode, fails there with a UnicodeError
        try:
            host.encode("idna")
            if "xn--" in host.lower():
                host.encode("ascii").decode("idna")
        except UnicodeError:
            raise _bad(text, "does not have a valid host name",
                       hint="check the host name: no empty labels ('a..b'), each label at "
                            "most 63 characters") from None
        return host
    import idna  # a dependency of yarl, hence of aiohttp

    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        raise _bad(text, "does not have a valid host name",
                   hint="check the host name (international names are IDNA-encoded)") from None


def _refuse_dot_segments(text: str, rest: str) -> None:
    """Refuse ``.`` and ``..`` path segments, literal or percent-encoded.

    Clients (yarl, botocore) normalise them away, so the request would fetch
    another path than the one the identifier (and the cache key) names: a
    pinned ``github:owner/repo@commit/../../x`` would leave its repository.
    """
    path = re.split(r"[?#]", rest, maxsplit=1)[0]
    if path.startswith("//"):
        path = path[2:].partition("/")[2]
    for segment in path.split("/"):
        if unquote(segment) in (".", ".."):
            raise _bad(text, "has a '.' or '..' path segment",
                       hint="write the path without '.' and '..' segments")
