"""The warm-cache fast path of ``hostkit resolve IDENTIFIER HASH``.

Most runs of a MedPerf client ask for something already cached by its sha256.
Answering that must cost about a Python start-up, so this module loads only
the identifier parser and the store's layout (no plugins, no asyncio) and
handles just the common case: a sha256 given, no daemon configured, no config
file, and an index entry of this very identifier holding that blob (so its
backend accepted the identifier when the entry was written), or a folder's
row of this very identifier naming that manifest, with its snapshot folder in
place. Anything else returns None and the full CLI takes over with the same
result. The tests check that both paths print the same thing.
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


# REQUIRE_SAME: the fast path answers only a given hash, which trust on first use never checks
_BOOLS = ("OFFLINE", "REQUIRE_HASH", "REQUIRE_SAME", "REVALIDATE", "QUIET")
_NUMBERS = ("CONNECT_TIMEOUT", "READ_TIMEOUT", "MIN_RATE", "DEADLINE", "RETRIES", "BACKOFF",
            "MAX_BACKOFF", "PROGRESS_MIN_BYTES", "PART_SIZE", "CONCURRENCY")


#: Environment settings the fast path knows: any other HOSTKIT_* (a plugin's) sends the
#: call to the full path, which checks it.
_KNOWN = {*_BOOLS, *_NUMBERS, "CACHE_DIR", "CONFIG", "DAEMON_TOKEN"}
_WHOLE = ("RETRIES", "MIN_RATE", "PROGRESS_MIN_BYTES", "PART_SIZE", "CONCURRENCY")


def _settings_parse() -> bool:
    """Whether the environment holds only core settings that parse (else the full path,
    which loads the plugins' options and names what does not parse)."""
    for var, value in os.environ.items():
        if not var.startswith("HOSTKIT_"):
            continue
        name = var[8:]
        if name not in _KNOWN:
            return False
        text = value.strip()
        if name in _BOOLS and text.lower() not in (
                "1", "true", "yes", "on", "0", "false", "no", "off", ""):
            return False
        if name in _NUMBERS and not (text.isdigit() if name in _WHOLE else
                                     text.replace(".", "", 1).isdigit()):
            return False  # the full path says why (negative, nan, 1.5 retries, ...)
    return True


#: Global options the fast path understands before ``resolve`` (any other: the full path).
_LEADING = ("--json", "-q", "--quiet")


def try_resolve(argv: list[str]) -> int | None:
    """Answer ``[--json] [-q] resolve ID HASH [--json] [-q]`` from the cache, or None to
    fall back to the full path."""
    start = 0
    while start < len(argv) and argv[start] in _LEADING:
        start += 1
    if len(argv) - start < 3 or argv[start] != "resolve" or any(
            k in os.environ for k in ("HOSTKIT_DAEMON_URL", "HOSTKIT_VERIFY_ON_HIT")) \
            or not _settings_parse():
        return None
    positional, as_json, hash_opt = [], "--json" in argv[:start], None
    it = iter(argv[start + 1:])
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
    if digest is None or config_dir is None:
        return None
    config = os.environ.get("HOSTKIT_CONFIG") or os.path.join(config_dir, "config.toml")
    if os.path.exists(config):
        return None  # settings the fast path does not read: the full path applies them
    cache_dir = os.environ.get("HOSTKIT_CACHE_DIR") or _user_dir("XDG_CACHE_HOME", "~/.cache")
    if not cache_dir:
        return None
    return _answer(os.path.expanduser(cache_dir), positional[0], digest, as_json)


def _answer(cache_dir: str, identifier: str, digest: str, as_json: bool) -> int | None:
    """Print the cached blob when this identifier's backend accepted it before.

    The identifier is parsed as the resolver parses it, and the answer is given
    only when an index entry of that very identifier holds this blob: its
    backend checked the identifier (its rules, e.g. a commit pin) when the
    entry was written. Anything else (``ftp://…``, a branch-pinned github
    identifier, an identifier never resolved here) goes to the full resolver.
    """
    import sqlite3

    from .errors import HostkitError
    from .identifiers import parse_identifier
    from .store.layout import Layout

    try:
        ref = parse_identifier(identifier)
    except HostkitError:
        return None  # the full path explains what is wrong
    layout = Layout(cache_dir)
    path = layout.blob_path(digest)
    if not layout.index_path.exists():
        return None
    try:
        db = sqlite3.connect(layout.index_path, timeout=30, isolation_level=None)
        row = db.execute(
            "SELECT size, digests FROM blobs WHERE sha256=? AND EXISTS (SELECT 1 FROM entries "
            "WHERE entries.sha256=blobs.sha256 AND entries.identifier=?)",
            (digest, ref.display)).fetchone()
        if row is None:
            return _tree_answer(db, layout, ref.display, digest, as_json)
        if os.stat(path).st_size != row[0]:
            return None
    except (OSError, sqlite3.Error):
        return None
    try:  # best effort: a hit on a full or read-only cache is still a hit
        db.execute("UPDATE blobs SET accessed=strftime('%s','now') WHERE sha256=?", (digest,))
    except sqlite3.Error as exc:
        del exc
    db.close()
    if as_json:
        import json

        print(json.dumps({"path": str(path), "sha256": digest, "size": row[0], "cached": True,
                          "identifier": ref.display, "verified": True,
                          "digests": json.loads(row[1])}, indent=2))
    else:
        print(path)
    return 0


def _tree_answer(db, layout, shown: str, digest: str, as_json: bool) -> int | None:
    """Print a folder's snapshot when this identifier's row names the manifest ``digest`` and
    the snapshot is in place (what the full path answers for a pinned folder)."""
    import sqlite3

    try:
        row = db.execute("SELECT size, files FROM trees WHERE identifier=? AND sha256=?",
                         (shown, digest)).fetchone()
    except sqlite3.Error:
        return None  # an index from before folders
    path = layout.snapshot_path(digest)
    if row is None or not path.is_dir() or not layout.snapshot_manifest(digest).is_file():
        return None
    try:  # best effort, as for a file: the folder and every blob it lists were used
        db.execute("UPDATE trees SET accessed=strftime('%s','now') WHERE identifier=?",
                   (shown,))
        db.execute("UPDATE blobs SET accessed=strftime('%s','now') WHERE sha256 IN (SELECT "
                   "sha256 FROM tree_blobs WHERE tree=?)", (digest,))
    except sqlite3.Error as exc:
        del exc
    db.close()
    if as_json:
        import json

        print(json.dumps({"path": str(path), "sha256": digest, "size": row[0], "cached": True,
                          "identifier": shown, "verified": True, "digests": {"sha256": digest},
                          "tree": True, "files": row[1]}, indent=2))
    else:
        print(path)
    return 0
