"""Where this user's daemon listens, found with no configuration (as Jupyter's runtime files).

- :func:`runtime_dir`: ``$XDG_RUNTIME_DIR/hostkit``, or ``<cache dir>/run`` when there is
  no ``XDG_RUNTIME_DIR``; created 0700 and owned by this user.
- ``daemon.sock`` there is the default address: ``hostkit daemon`` with no address listens
  on it (0600) and the CLI and the Python API try it when ``daemon_url`` is not set.
- ``daemon-<port>.json`` there (0600) holds ``{"url", "token", "pid"}`` of a TCP daemon, so
  the same user's CLI and API send its token without being told.

Standard library only, and cheap: with no daemon, discovery is one ``stat``.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path

from hostkit.errors import UsageError

SOCKET_NAME = "daemon.sock"
TOKEN_ENV = "HOSTKIT_DAEMON_TOKEN"
_LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}


def runtime_dir(settings) -> Path:
    """``$XDG_RUNTIME_DIR/hostkit``, or ``run`` inside the cache dir."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    return Path(base) / "hostkit" if base else Path(settings.cache_dir) / "run"


def default_socket(settings) -> Path:
    """The unix socket ``hostkit daemon`` listens on when given no address."""
    return runtime_dir(settings) / SOCKET_NAME


def private_dir(path: Path) -> Path:
    """Create ``path`` 0700 if missing; refuse one owned by another user; tighten its mode."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise UsageError(f"{path} is not a directory owned by this user",
                         hint="remove it, or choose another --socket / XDG_RUNTIME_DIR")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


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
    """Where a TCP daemon on ``port`` writes its URL and token."""
    return runtime_dir(settings) / f"daemon-{port}.json"


def write_token_file(settings, url: str, port: int, token: str) -> Path:
    """Write ``{"url", "token", "pid"}`` 0600 (atomically) for this user's clients."""
    path = token_file(settings, port)
    private_dir(path.parent)
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, json.dumps({"url": url, "token": token, "pid": os.getpid()}).encode())
    finally:
        os.close(fd)
    os.replace(temp, path)
    return path


def remove_token_file(path: Path) -> None:
    """Remove a token file this process wrote (if it is still ours)."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


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
        from .client import parse_url

        written = parse_url(data["url"])
    except (OSError, ValueError, KeyError, TypeError, UsageError):
        return None
    same_host = written.host == host or {written.host, host} <= _LOOPBACK_NAMES
    token = data.get("token")
    return token if same_host and written.port == port and isinstance(token, str) else None
