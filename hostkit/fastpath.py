"""The warm-cache fast path of ``hostkit resolve IDENTIFIER HASH``.

Most runs of a MedPerf client ask for something already cached by its sha256.
Answering that must cost about a Python start-up, so this module imports only
``os``, ``sys`` and ``sqlite3`` and handles just the common case: a sha256
given, no daemon configured, no config file, a blob that is present. Anything
else returns None and the full CLI takes over with the same result. The
tests check that both paths print the same thing.
"""

from __future__ import annotations

import os
import sys


def _user_dir(xdg_var: str, fallback: str) -> str | None:
    # platformdirs' answer on Linux, without importing it; elsewhere, no fast path
    if not sys.platform.startswith("linux"):
        return None
    base = os.environ.get(xdg_var, "").strip() or os.path.expanduser(fallback)
    return os.path.join(base, "hostkit")


def _sha256_hex(text: str) -> str | None:
    text = text.strip().lower()
    if text.startswith("sha256:"):
        text = text[7:]
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        return text
    return None


def try_resolve(argv: list[str]) -> int | None:
    """Answer ``resolve ID HASH [--json] [-q]`` from the cache, or None to fall back."""
    if len(argv) < 3 or argv[0] != "resolve" or any(
            k in os.environ for k in ("HOSTKIT_DAEMON_URL", "HOSTKIT_CONFIG",
                                      "HOSTKIT_VERIFY_ON_HIT")):
        return None
    positional, as_json, hash_opt = [], False, None
    it = iter(argv[1:])
    for arg in it:
        if arg == "--json":
            as_json = True
        elif arg in ("-q", "--quiet"):
            continue
        elif arg == "--hash":
            hash_opt = next(it, None)
        elif arg.startswith("--hash="):
            hash_opt = arg[7:]
        elif arg.startswith("-"):
            return None
        else:
            positional.append(arg)
    if len(positional) == 2 and hash_opt is None:
        hash_opt = positional.pop()
    if len(positional) != 1 or hash_opt is None or positional[0].strip().startswith("-"):
        return None
    digest = _sha256_hex(hash_opt)
    config_dir = _user_dir("XDG_CONFIG_HOME", "~/.config")
    if digest is None or config_dir is None or os.path.exists(os.path.join(config_dir,
                                                                           "config.toml")):
        return None
    cache_dir = os.environ.get("HOSTKIT_CACHE_DIR") or _user_dir("XDG_CACHE_HOME", "~/.cache")
    return _answer(os.path.expanduser(cache_dir), positional[0], digest, as_json)


def _answer(cache_dir: str, identifier: str, digest: str, as_json: bool) -> int | None:
    import sqlite3

    index = os.path.join(cache_dir, "index.db")
    path = os.path.join(cache_dir, "blobs", "sha256", digest)
    if not os.path.exists(index):
        return None
    try:
        db = sqlite3.connect(index, timeout=30, isolation_level=None)
        row = db.execute("SELECT size, digests FROM blobs WHERE sha256=?", (digest,)).fetchone()
        if row is None or os.stat(path).st_size != row[0]:
            return None
    except (OSError, sqlite3.Error):
        return None
    try:  # best effort: a hit on a full or read-only cache is still a hit
        db.execute("UPDATE blobs SET accessed=strftime('%s','now') WHERE sha256=?", (digest,))
    except sqlite3.Error as exc:
        del exc
    db.close()
    identifier = identifier.strip()
    if identifier.lower().startswith("direct:"):
        identifier = identifier[7:].strip()
    scheme, sep, rest = identifier.partition(":")
    if not sep or not scheme.isalnum():
        return None  # let the full parser explain what is wrong
    identifier = f"{scheme.lower()}:{rest}"
    if as_json:
        import json

        from .redact import redact_url  # as the resolver shows it: no credentials

        print(json.dumps({"path": path, "sha256": digest, "size": row[0], "cached": True,
                          "identifier": redact_url(identifier), "verified": True,
                          "digests": json.loads(row[1])}, indent=2))
    else:
        print(path)
    return 0
