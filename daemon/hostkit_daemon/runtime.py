"""The daemon's side of discovery: the private runtime directory and its token files.

Where the files are is :mod:`hostkit.client`'s to say (:func:`~hostkit.client.runtime_dir`,
:func:`~hostkit.client.default_socket`, :func:`~hostkit.client.token_file`), so the
daemon writes exactly where this user's CLI and API look:

- ``daemon.sock`` in the runtime directory is the default address: ``hostkit daemon``
  with no address listens on it (0600);
- ``daemon-<port>.json`` there (0600) holds ``{"url", "token", "pid"}`` of a TCP
  daemon, so the same user's CLI and API send its token without being told.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path

from hostkit.client import token_file
from hostkit.errors import UsageError


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
