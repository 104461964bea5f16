"""Talking to a hostkit daemon: where it listens, its token, and a small synchronous client.

Standard library only (no asyncio, no aiohttp): ``hostkit resolve`` and
``hostkit.resolve`` use it when a daemon is found, and fall back to resolving
in-process when none answers (:class:`DaemonUnavailable`).

**Where.** ``settings.daemon_url`` (``HOSTKIT_DAEMON_URL``: ``http://host:port``
or ``unix:/path/to.sock``), else this user's default socket
``$XDG_RUNTIME_DIR/hostkit/daemon.sock`` (``<cache dir>/run`` without
``XDG_RUNTIME_DIR``) if it exists: with no daemon, discovery is one ``stat``.

**Token.** ``HOSTKIT_DAEMON_TOKEN``, else the ``daemon-<port>.json`` a TCP daemon
of this user wrote (0600) in that runtime directory, as Jupyter's runtime files.

**Errors** come back as the same :class:`~hostkit.errors.HostkitError` class the
in-process resolver would have raised, rebuilt from the JSON ``error`` kind by
:func:`hostkit.errors.error_class` (the daemon registers its own kinds, as any
plugin does), so callers cannot tell the two paths apart.

**Progress.** Given a :class:`~hostkit.results.Progress`, :meth:`DaemonClient.resolve`
asks for the answer as NDJSON (``Accept: application/x-ndjson``): one line per
resolver event (:func:`event_to_dict`), the answer or the error last. The events
drive the caller's progress exactly as in-process ones do.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from . import events
from .errors import (
    ContentChanged,
    HashMismatch,
    HostkitError,
    TransientError,
    UsageError,
    error_class,
)
from .results import Progress, ProgressListener, Resolved

log = logging.getLogger("hostkit.client")

TOKEN_ENV = "HOSTKIT_DAEMON_TOKEN"
SOCKET_NAME = "daemon.sock"
#: The media type of a streamed answer: events, then the answer, one JSON object a line.
NDJSON = "application/x-ndjson"
_LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}


# -- where the daemon listens ------------------------------------------------------------


def runtime_dir(settings) -> Path:
    """``$XDG_RUNTIME_DIR/hostkit``, or ``run`` inside the cache dir."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    return Path(base) / "hostkit" if base else Path(settings.cache_dir) / "run"


def default_socket(settings) -> Path:
    """The unix socket ``hostkit daemon`` listens on when given no address."""
    return runtime_dir(settings) / SOCKET_NAME


def daemon_url(settings) -> str | None:
    """``settings.daemon_url``, else the default socket if one exists, else None."""
    if settings.daemon_url:
        return settings.daemon_url
    path = default_socket(settings)
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            return f"unix:{path}"
    except OSError:
        pass
    return None


def token_file(settings, port: int) -> Path:
    """Where a TCP daemon on ``port`` writes its URL and token for its owner."""
    return runtime_dir(settings) / f"daemon-{port}.json"


def token_for(settings, host: str | None, port: int | None) -> str | None:
    """``HOSTKIT_DAEMON_TOKEN``, else the token a daemon of this user wrote for that address."""
    if env := os.environ.get(TOKEN_ENV, "").strip():
        return env
    if host is None or port is None:
        return None
    path = token_file(settings, port)
    try:
        if os.stat(path).st_uid != os.geteuid():  # planted by someone else: not ours to send
            return None
        data = json.loads(path.read_text())
        written = parse_url(data["url"])
    except (OSError, ValueError, KeyError, TypeError, UsageError):
        return None
    same_host = written.host == host or {written.host, host} <= _LOOPBACK_NAMES
    token = data.get("token")
    return token if same_host and written.port == port and isinstance(token, str) else None


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


# -- the wire format -------------------------------------------------------------------


class DaemonUnavailable(Exception):
    """No hostkit daemon answered at the URL (refused, no socket, timed out, went away)."""


class UnknownDaemonError(HostkitError):
    """An error kind no class is registered for here (a newer daemon's, a plugin missing)."""

    def __init__(self, kind: str, status: int | None, message: str, **kwargs):
        super().__init__(message, **kwargs)
        self.kind = kind
        self.http_status = status or 500

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        """2 for a refusal of the request (4xx), 1 otherwise."""
        return 2 if 400 <= self.http_status < 500 else 1


def error_from_dict(data: dict, status: int | None = None) -> HostkitError:
    """Rebuild the :class:`HostkitError` a daemon's JSON error names (by its ``error`` kind)."""
    kind = str(data.get("error") or HostkitError.kind)
    cls = error_class(kind)
    if cls is HostkitError and kind != HostkitError.kind:
        from .plugins import load_plugins

        load_plugins()  # plugins (the daemon among them) register their kinds when loaded
        cls = error_class(kind)
    message = str(data.get("message") or kind)
    extra = {"hint": data.get("hint"), "identifier": data.get("identifier")}
    if cls is HostkitError and kind != HostkitError.kind:
        return UnknownDaemonError(kind, status, message, **extra)
    err = cls.__new__(cls)  # subclasses' own __init__ take other arguments: set the fields
    HostkitError.__init__(err, message, **extra, suggestion=data.get("suggestion"))
    if isinstance(err, HashMismatch):
        err.expected, err.found = str(data.get("expected")), str(data.get("found"))
    if isinstance(err, ContentChanged):
        err.recorded_at = str(data.get("recorded_at"))
    if isinstance(err, TransientError):
        err.retry_after = data.get("retry_after")
    return err


#: Event classes by their name on the wire.
_EVENTS = {cls.__name__: cls for cls in (
    events.Hit, events.Revalidated, events.Waiting, events.DownloadStarted,
    events.Progressed, events.Retrying, events.Finished, events.Failed, events.Changed,
    events.TierHit, events.TierRejected)}


def event_to_dict(event: events.Event) -> dict:
    """An event as one NDJSON line's object, without its cache key (it may embed a secret)."""
    data = {"event": type(event).__name__}
    data.update((f.name, getattr(event, f.name)) for f in dataclasses.fields(event)
                if f.name != "key")
    return data


def event_from_dict(data: dict) -> events.Event | None:
    """The event an NDJSON line describes; None for a kind this version does not know."""
    cls = _EVENTS.get(data.get("event"))  # type: ignore[arg-type]
    if cls is None:
        return None
    try:
        return cls(key="", **{f.name: data[f.name] for f in dataclasses.fields(cls)
                              if f.name != "key" and f.name in data})
    except TypeError:
        return None


def resolved_from_dict(data: dict) -> Resolved:
    """A :class:`Resolved` from the daemon's JSON answer (ValueError if it is not one)."""
    try:
        changed = data.get("changed_from")
        return Resolved(Path(data["path"]), data["sha256"], int(data["size"]),
                        bool(data["cached"]), data["identifier"], bool(data["verified"]),
                        dict(data.get("digests") or {}),
                        changed_from={str(k): str(v) for k, v in changed.items()}
                        if isinstance(changed, dict) else None,
                        tree=data.get("tree") is True,
                        files=int(data["files"]) if data.get("files") is not None else None)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a resolve answer ({exc!r})") from None


# -- the client ------------------------------------------------------------------------


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


def connection(address: Address, timeout: float | None) -> http.client.HTTPConnection:
    """An (unconnected) HTTP connection to ``address``: TCP or unix socket."""
    if address.path is not None:
        return _UnixConnection(address.path, timeout)
    return http.client.HTTPConnection(address.host or "127.0.0.1", address.port,
                                      timeout=timeout)


class DaemonClient:
    """Talks to one daemon. A new connection per call: cheap on loopback, thread-safe."""

    def __init__(self, url: str, token: str | None = None, *, connect_timeout: float = 2.0):
        self.address = parse_url(url)
        self.url = url
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self.connect_timeout = connect_timeout

    def _send(self, method: str, path: str, body, timeout: float | None,
              accept: str = "application/json"
              ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = connection(self.address, self.connect_timeout)
        headers = {"Accept": accept}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            raise DaemonUnavailable(f"no daemon at {self.url}: "
                                    f"{exc.strerror or type(exc).__name__}") from None
        try:
            conn.sock.settimeout(timeout)
            conn.request(method, path, body=payload, headers=headers)
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise DaemonUnavailable(f"the daemon at {self.url} went away "
                                    f"({type(exc).__name__})") from None

    def request(self, method: str, path: str, body=None, *,
                timeout: float | None = 30.0) -> tuple[int, bytes]:
        """Send one request; return (status, body). DaemonUnavailable if nobody answers."""
        conn, resp = self._send(method, path, body, timeout)
        try:
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
        return status, self._json(raw, status)

    def _json(self, raw: bytes, status: int) -> dict:
        try:
            data = json.loads(raw)
        except ValueError:
            raise DaemonUnavailable(f"{self.url} answered {status} without JSON; "
                                    "is it a hostkit daemon?") from None
        if not isinstance(data, dict):
            raise DaemonUnavailable(f"{self.url} answered unexpected JSON")
        return data

    def resolve(self, identifier: str, expected: str | None = None, *,
                offline: bool | None = None, require_hash: bool | None = None,
                progress: Progress | None = None,
                require_same: bool | None = None) -> Resolved:
        """``POST /v1/resolve`` and wait (no read timeout: downloads take what they take).

        With ``progress``, the answer is streamed and the daemon's events drive it.
        """
        body: dict = {"identifier": identifier}
        for key, value in (("hash", expected), ("offline", offline),
                           ("require_hash", require_hash), ("require_same", require_same)):
            if value is not None:
                body[key] = value
        accept = NDJSON if progress is not None else "application/json"
        conn, resp = self._send("POST", "/v1/resolve", body, None, accept)
        try:
            if resp.getheader("Content-Type", "").startswith(NDJSON):
                status, data = self._stream(resp, ProgressListener(progress or Progress()))
            else:
                status, data = resp.status, self._json(resp.read(), resp.status)
        except (OSError, http.client.HTTPException) as exc:
            raise DaemonUnavailable(f"the daemon at {self.url} went away "
                                    f"({type(exc).__name__})") from None
        finally:
            conn.close()
        if status == 503 and data.get("error") == "shutting_down":
            raise DaemonUnavailable(f"the daemon at {self.url} is shutting down")
        if status != 200:
            raise error_from_dict(data, status)
        try:
            return resolved_from_dict(data)
        except ValueError:
            raise DaemonUnavailable(f"{self.url} answered an unexpected resolve body") from None

    def _stream(self, resp: http.client.HTTPResponse,
                listener: ProgressListener) -> tuple[int, dict]:
        """Feed the streamed events to ``listener``; return the last line's status and body."""
        last: dict | None = None
        for line in resp:
            if not line.strip():
                continue
            last = self._json(line, resp.status)
            event = event_from_dict(last)
            if event is not None:
                listener(event)
        if last is None or last.get("event") not in ("resolved", "error"):
            raise DaemonUnavailable(f"the daemon at {self.url} ended its answer early")
        status = int(last.get("status") or 200)
        return status, last

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
    address = parse_url(url)
    return DaemonClient(url, token_for(settings, address.host, address.port) or "",
                        connect_timeout=connect_timeout)


#: A shared daemon's refusals that this caller may answer itself, in-process, with its own
#: credentials: the daemon's are not lent to it, or it may not send its own to the daemon.
RESOLVE_HERE = frozenset({"credentials_not_lent", "credentials_not_accepted"})


def resolve_through_daemon(settings, url: str, identifier: str, expected: str | None = None,
                           *, offline: bool | None = None, require_hash: bool | None = None,
                           progress: Progress | None = None,
                           require_same: bool | None = None) -> Resolved | None:
    """Resolve through the daemon at ``url``; None when no daemon answers (resolve in-process).

    Also None when the daemon's path is not readable here (a daemon on another
    host, a container without the cache mounted, another user's shared daemon),
    or when a shared daemon declines to act for this caller with credentials
    (:data:`RESOLVE_HERE`: its own are not lent, the caller's not accepted): the
    caller then resolves in-process, with its own credentials and cache, which
    gives the same bytes.
    """
    client = client_for(settings, url, connect_timeout=min(settings.connect_timeout, 2.0))
    # the caller's own strictness travels with the request (the daemon may be stricter still)
    if offline is None and settings.offline:
        offline = True
    if require_hash is None and settings.require_hash:
        require_hash = True
    if require_same is None and settings.require_same:
        require_same = True
    try:
        resolved = client.resolve(identifier, expected, offline=offline,
                                  require_hash=require_hash, progress=progress,
                                  require_same=require_same)
    except DaemonUnavailable as exc:
        log.info("%s; resolving in-process", exc)
        return None
    except HostkitError as exc:
        if exc.kind not in RESOLVE_HERE:
            raise
        log.info("the shared daemon declined (%s); resolving in-process", exc.kind)
        return None
    if not os.access(resolved.path, os.R_OK):
        log.info("the daemon's copy %s is not readable here; resolving in-process",
                 resolved.path)
        return None
    return resolved
