"""Who may ask this daemon for what.

- **Address checks** (every route but ``/healthz``): on TCP the ``Host`` header must
  name the address the connection arrived at (loopback names for a loopback
  address, or a name given with ``--allow-host``), and an ``Origin`` header, if a
  browser sent one, must be that same ``http://host:port``. A web page cannot
  reach the daemon through DNS rebinding or a cross-site request.
- **Callers**: on a unix socket the caller is the uid the kernel reports
  (``SO_PEERCRED``); on TCP it is whoever holds the token, i.e. the owner.
- **Credentials are never lent**: a *trusted* caller (the daemon's own uid, or a
  uid given with ``--allow-user``) may resolve anything and manage the cache.
  Anyone else may resolve only anonymous sources (``http``/``https`` URLs with
  no userinfo and no signature: nobody's credential is sent) and read only blobs
  whose index entry says an anonymous fetch gave them (``Entry.anonymous``).
- **Nor borrowed**: an untrusted caller's identifier carrying credentials of its
  own (userinfo, a presigned query) is refused too. Its bytes would be stored in
  the daemon's cache, where the daemon cannot tell whose they are, and every
  trusted caller may read any blob: they would be served to callers not allowed
  for them. Such a caller resolves in-process, into a cache of its own.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import pwd
import socket
import struct
from dataclasses import dataclass, field

from aiohttp import hdrs, web

from hostkit.errors import UsageError
from hostkit.identifiers import parse_identifier

from .errors import (
    CredentialsNotAccepted,
    CredentialsNotLent,
    Forbidden,
    ForbiddenHost,
    ForbiddenOrigin,
)

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_PEERCRED = struct.Struct("3i")


@dataclass(frozen=True)
class Caller:
    """Who sent a request: ``uid`` (unix socket) or None (TCP), and whether it is trusted."""

    uid: int | None
    trusted: bool

    @property
    def key(self) -> str:
        """The caller's name for fair sharing of job slots."""
        return "token" if self.uid is None else f"uid:{self.uid}"


@dataclass(frozen=True)
class Policy:
    """The daemon's access rules: trusted uids and extra accepted ``Host`` names."""

    trusted_uids: frozenset[int] = field(default_factory=lambda: frozenset({os.geteuid()}))
    hosts: frozenset[str] = frozenset()

    def caller(self, request: web.Request) -> Caller:
        """The request's caller (unix socket: by SO_PEERCRED; TCP: the token holder)."""
        uid = peer_uid(request)
        return Caller(uid, uid is None or uid in self.trusted_uids)

    def check_address(self, request: web.Request) -> None:
        """403 unless ``Host`` (TCP) and ``Origin`` (if any) name this daemon."""
        host = request.headers.get(hdrs.HOST, "")
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if isinstance(sockname, tuple) and not _host_ok(host, sockname[0], sockname[1],
                                                        self.hosts):
            raise ForbiddenHost(f"Host {host[:100]!r} is not this daemon's address",
                                hint="connect to the address the daemon listens on (127.0.0.1:PORT "
                                     "or localhost:PORT), or start it with --allow-host NAME")
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and origin.strip().lower() != f"http://{host.lower()}":
            raise ForbiddenOrigin("requests from web pages of other origins are refused",
                                  hint="call the daemon from a program, not from a browser page")


@functools.lru_cache(maxsize=256)  # every request asks; a few Host values ever answer
def _host_ok(host: str, address, port: int, allowed: frozenset[str]) -> bool:
    """Whether the ``Host`` header names the address ``(address, port)`` a request came to."""
    name, asked = split_host(host)
    if name is None or asked != port:
        return False
    local = str(address).lower()
    if name == local or name in allowed:
        return True
    try:
        loopback = ipaddress.ip_address(local).is_loopback
    except ValueError:
        loopback = False
    return loopback and name in _LOOPBACK_NAMES


def split_host(host: str) -> tuple[str | None, int | None]:
    """``Host`` header -> (lower-case name without brackets, port; 80 when absent)."""
    host = host.strip().lower()
    if not host:
        return None, None
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif host.count(":") == 1:
        name, _, port = host.partition(":")
    else:
        name, port = host, ""
    if port and not (port.isascii() and port.isdigit()):  # not '²' or other Unicode digits
        return None, None
    return name, int(port) if port else 80


def peer_uid(request: web.Request) -> int | None:
    """The uid at the other end of a unix socket (SO_PEERCRED); None on TCP."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    _pid, uid, _gid = _PEERCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return uid


def require_lendable(caller: Caller, identifier: str, resolver) -> None:
    """403 unless the daemon may fetch this for the caller with nobody's credentials.

    An untrusted caller gets ``credentials_not_accepted`` for an identifier that
    carries its own credentials (userinfo, a signed query): bytes fetched with
    those would be stored in the daemon's cache and served to its trusted
    callers. It gets ``credentials_not_lent`` for a source the daemon would
    fetch with its own credentials: decided by the backend's Remote
    (``Remote.anonymous``, known before any I/O), not by the scheme, since an
    https URL may carry the daemon's token too (a private GitHub repository's
    raw URL with ``GH_TOKEN`` set).
    """
    if caller.trusted:
        return
    ref = parse_identifier(identifier)
    if ref.credentialed:
        raise CredentialsNotAccepted(
            f"this daemon does not fetch with credentials sent by uid {caller.uid} "
            "(the bytes would be shared through its cache)",
            hint="resolve it in-process, into your own cache (`hostkit resolve --cache-dir "
                 "DIR`, or without HOSTKIT_DAEMON_URL)")
    if not resolver.remote_for(identifier).anonymous:
        raise CredentialsNotLent(
            f"this daemon does not use its credentials for uid {caller.uid}",
            hint="resolve it in-process with your own credentials (`hostkit resolve "
                 "--cache-dir DIR`, or without HOSTKIT_DAEMON_URL), or ask the daemon's owner "
                 "to add you with --allow-user")


def require_trusted(caller: Caller, what: str) -> None:
    """403 for an untrusted caller (cache management)."""
    if not caller.trusted:
        raise Forbidden(f"{what} is for the daemon's allowed users only",
                        hint="ask the daemon's owner to add you with --allow-user")


def blob_is_public(cache, sha256: str) -> bool:
    """True when an index entry says these bytes were fetched with no credential at all.

    ``Entry.anonymous`` is the resolver's record of how the bytes came (an http
    URL with userinfo or a signature is not anonymous, though its cache key,
    stripped of secrets, looks like one). Entries are written only by downloads,
    never by a hit on a hash or key already held, so naming a private blob's
    sha256 next to some https URL does not make it public.
    """
    entries, _ = cache.lookup(sha256)
    return any(e.sha256 == sha256 and e.anonymous for e in entries)


def uids(names: list[str] | None) -> frozenset[int]:
    """User names or numeric uids (``--allow-user``) -> uids; UsageError for unknown names."""
    found = set()
    for name in names or ():
        for part in filter(None, (p.strip() for p in name.split(","))):
            if part.isdigit():
                found.add(int(part))
                continue
            try:
                found.add(pwd.getpwnam(part).pw_uid)
            except KeyError:
                raise UsageError(f"no such user: {part!r}",
                                 hint="--allow-user takes user names or uids") from None
    return frozenset(found)
