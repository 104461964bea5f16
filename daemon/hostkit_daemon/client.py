"""A small synchronous client for the daemon (standard library only: no asyncio).

Used by ``hostkit resolve`` and ``hostkit.resolve`` when a daemon is found
(``HOSTKIT_DAEMON_URL``, or this user's default socket: :mod:`.runtime`), and by
``hostkit status``. Daemon URLs are ``http://host:port`` or
``unix:/path/to.sock``; the token of a TCP daemon comes from
``HOSTKIT_DAEMON_TOKEN`` or from the file the daemon wrote for its owner.

Errors come back as the same :class:`~hostkit.errors.HostkitError` subclass
the in-process resolver would have raised, rebuilt from the JSON ``error``
kind, so callers cannot tell the two paths apart. When no daemon answers,
:class:`DaemonUnavailable` is raised and callers resolve in-process.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from hostkit.errors import HostkitError, TransientError, UsageError
from hostkit.results import Resolved

log = logging.getLogger("hostkit.daemon.client")

TOKEN_ENV = "HOSTKIT_DAEMON_TOKEN"


class DaemonUnavailable(Exception):
    """No hostkit daemon answered at the URL (refused, no socket, timed out, went away)."""


@dataclass(frozen=True)
class Address:
    """Where a daemon listens: TCP ``host:port`` or a unix socket ``path``."""

    host: str | None = None
    port: int | None = None
    path: str | None = None

    @property
    def url(self) -> str:
        """The address as a daemon URL."""
        if self.path is not None:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def parse_url(url: str) -> Address:
    """``http://host:port`` or ``unix:/path`` (also ``unix:///path``) -> :class:`Address`."""
    text = (url or "").strip()
    if text.startswith("unix:"):
        path = text[5:]
        if path.startswith("//"):
            path = path[2:]
        if path:
            return Address(path=os.path.expanduser(path))
    else:
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError:
            parts, port = None, None
        if parts is not None and parts.scheme == "http" and parts.hostname:
            return Address(host=parts.hostname, port=port or 80)
    raise UsageError(f"cannot use daemon URL {url!r}",
                     hint="write http://127.0.0.1:8765 or unix:/run/hostkit/hostkit.sock "
                          "(HOSTKIT_DAEMON_URL)")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _error_classes() -> dict[str, type[HostkitError]]:
    found: dict[str, type[HostkitError]] = {}
    todo = [HostkitError]
    while todo:
        cls = todo.pop()
        found.setdefault(cls.__dict__.get("kind", cls.kind), cls)
        todo.extend(cls.__subclasses__())
    return found


def error_from_dict(data: dict, status: int | None = None) -> HostkitError:
    """Rebuild the :class:`HostkitError` subclass a daemon's JSON error names.

    Unknown kinds (the daemon's own, such as ``bad_json`` or ``unauthorized``)
    become a UsageError (4xx) or HostkitError carrying that kind.
    """
    kind = str(data.get("error") or "error")
    cls = _error_classes().get(kind)
    if cls is None:
        cls = UsageError if status is not None and 400 <= status < 500 else HostkitError
    err = cls.__new__(cls)
    HostkitError.__init__(err, str(data.get("message") or kind), hint=data.get("hint"),
                          identifier=data.get("identifier"))
    if err.kind != kind:
        err.kind = kind
    if status is not None:
        err.http_status = status
    for extra in ("expected", "found"):
        if extra in data:
            setattr(err, extra, data[extra])
    if isinstance(err, TransientError):
        err.retry_after = data.get("retry_after")
    return err


class DaemonClient:
    """Talks to one daemon. A new connection per call: cheap on loopback, thread-safe."""

    def __init__(self, url: str, token: str | None = None, *, connect_timeout: float = 2.0):
        self.address = parse_url(url)
        self.url = url
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self.connect_timeout = connect_timeout

    def request(self, method: str, path: str, body=None, *,
                timeout: float | None = 30.0) -> tuple[int, bytes]:
        """Send one request; return (status, body). DaemonUnavailable if nobody answers."""
        a = self.address
        conn = (_UnixConnection(a.path, self.connect_timeout) if a.path is not None
                else http.client.HTTPConnection(a.host, a.port, timeout=self.connect_timeout))
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            try:
                conn.connect()
            except OSError as exc:
                raise DaemonUnavailable(f"no daemon at {self.url}: "
                                        f"{exc.strerror or type(exc).__name__}") from None
            conn.sock.settimeout(timeout)
            try:
                conn.request(method, path, body=payload, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException) as exc:
                raise DaemonUnavailable(f"the daemon at {self.url} went away "
                                        f"({type(exc).__name__})") from None
        finally:
            conn.close()

    def call(self, method: str, path: str, body=None, *,
             timeout: float | None = 30.0) -> tuple[int, dict]:
        """A JSON request; DaemonUnavailable if the answer is not hostkit's JSON."""
        status, raw = self.request(method, path, body, timeout=timeout)
        try:
            data = json.loads(raw)
        except ValueError:
            raise DaemonUnavailable(f"{self.url} answered {status} without JSON; "
                                    "is it a hostkit daemon?") from None
        if not isinstance(data, dict):
            raise DaemonUnavailable(f"{self.url} answered unexpected JSON")
        return status, data

    def resolve(self, identifier: str, expected: str | None = None, *,
                offline: bool | None = None, require_hash: bool | None = None) -> Resolved:
        """``POST /v1/resolve`` and wait (no read timeout: downloads take what they take)."""
        body: dict = {"identifier": identifier}
        for key, value in (("hash", expected), ("offline", offline),
                           ("require_hash", require_hash)):
            if value is not None:
                body[key] = value
        status, data = self.call("POST", "/v1/resolve", body, timeout=None)
        if status == 503 and data.get("error") == "shutting_down":
            raise DaemonUnavailable(f"the daemon at {self.url} is shutting down")
        if status != 200:
            raise error_from_dict(data, status)
        try:
            return Resolved(Path(data["path"]), data["sha256"], int(data["size"]),
                            bool(data["cached"]), data["identifier"], bool(data["verified"]),
                            dict(data.get("digests") or {}))
        except (KeyError, TypeError, ValueError):
            raise DaemonUnavailable(f"{self.url} answered an unexpected resolve body") from None

    def status(self) -> dict:
        """``GET /v1/status`` (raises the daemon's error, e.g. a 401 without token)."""
        status, data = self.call("GET", "/v1/status", timeout=5.0)
        if status != 200:
            raise error_from_dict(data, status)
        return data

    def remove(self, ident: str) -> dict:
        """``DELETE /v1/cache/{ident}``."""
        status, data = self.call("DELETE", f"/v1/cache/{quote(ident, safe='')}")
        if status != 200:
            raise error_from_dict(data, status)
        return data


def client_for(settings, url: str, *, connect_timeout: float = 2.0) -> DaemonClient:
    """A client for ``url`` carrying the token this user has for it (env or token file)."""
    from .runtime import token_for

    address = parse_url(url)
    return DaemonClient(url, token_for(settings, address.host, address.port) or "",
                        connect_timeout=connect_timeout)


def resolve_through_daemon(settings, url: str, identifier: str, expected: str | None = None,
                           *, offline: bool | None = None,
                           require_hash: bool | None = None) -> Resolved | None:
    """Resolve through the daemon at ``url``; None when no daemon answers (resolve in-process).

    Also None when the daemon's path is not readable here (a daemon on another
    host, or a container without the cache mounted): the caller then resolves
    in-process, which gives the same bytes.
    """
    client = client_for(settings, url, connect_timeout=min(settings.connect_timeout, 2.0))
    # the caller's own strictness travels with the request (the daemon may be stricter still)
    if offline is None and settings.offline:
        offline = True
    if require_hash is None and settings.require_hash:
        require_hash = True
    try:
        resolved = client.resolve(identifier, expected, offline=offline,
                                  require_hash=require_hash)
    except DaemonUnavailable as exc:
        log.info("%s; resolving in-process", exc)
        return None
    if not os.access(resolved.path, os.R_OK):
        log.info("the daemon's copy %s is not readable here; resolving in-process",
                 resolved.path)
        return None
    return resolved
