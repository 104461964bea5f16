"""The cache's index: one SQLite database (WAL) of entries and blobs, and all its SQL.

``entries`` map a backend's cache key (identifier + endpoint/account) to a
blob; ``blobs`` record each blob's size, every digest computed for it and its
last use. ``trees`` map the cache key of a folder (a prefix, a Synapse folder)
to its manifest's sha256 (the manifest is a blob too), and ``tree_blobs`` name
the blobs each manifest lists (its files and itself), so removing a blob can
drop the snapshots that link it and pinning a tree keeps its files.

Opening waits out a busy index (another process creating it or recovering
its WAL) up to :data:`OPEN_WAIT`; a lock held by a dead process is gone with
it. When the cache cannot be written (a read-only mount, a full disk) the
index opens read-only: reads work, writes raise a
:class:`~hostkit.errors.CacheError` saying why. SQLite errors never escape as
anything else.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import CacheError, UsageError
from .layout import Layout

log = logging.getLogger("hostkit.store")

#: ``PRAGMA user_version`` of the index: 1 since keys and identifiers hold no secrets,
#: 2 since entries say whether their bytes were fetched anonymously, 3 since folders
#: (trees) are recorded.
SCHEMA_VERSION = 3

#: Seconds opening a busy index (another process creating it or recovering its WAL)
#: may wait before it is an error. Statements wait the same through SQLite's busy timeout.
OPEN_WAIT = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    sha256 TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    digests TEXT NOT NULL,          -- JSON {alg: hex} of every digest computed
    created REAL NOT NULL,
    accessed REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,           -- backend cache key: identifier + endpoint/account
    identifier TEXT NOT NULL,       -- as shown to people (no secrets)
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    validator TEXT,                 -- ETag / versionId / generation at download time
    immutable INTEGER NOT NULL DEFAULT 0,
    verified INTEGER NOT NULL DEFAULT 0,  -- 1: matched a given hash; 0: trust on first use
    pinned INTEGER NOT NULL DEFAULT 0,
    anonymous INTEGER NOT NULL DEFAULT 0, -- 1: fetched with no credential of anyone's
    created REAL NOT NULL,          -- when the key got these bytes (its sha256)
    accessed REAL NOT NULL,
    checked REAL NOT NULL           -- last time the origin confirmed the validator
);
CREATE INDEX IF NOT EXISTS entries_sha256 ON entries(sha256);
""" + """
CREATE TABLE IF NOT EXISTS trees (
    key TEXT PRIMARY KEY,           -- backend cache key of the folder (prefix + endpoint)
    identifier TEXT NOT NULL,       -- as shown to people (no secrets)
    sha256 TEXT NOT NULL,           -- the manifest's sha256: the tree's digest
    size INTEGER NOT NULL,          -- bytes of its files
    files INTEGER NOT NULL,
    immutable INTEGER NOT NULL DEFAULT 0,
    verified INTEGER NOT NULL DEFAULT 0,  -- 1: matched a given manifest digest
    pinned INTEGER NOT NULL DEFAULT 0,
    anonymous INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,          -- when the key got this manifest
    accessed REAL NOT NULL,
    checked REAL NOT NULL           -- last time a listing confirmed it
);
CREATE INDEX IF NOT EXISTS trees_sha256 ON trees(sha256);
CREATE TABLE IF NOT EXISTS tree_blobs (
    tree TEXT NOT NULL,             -- a manifest's sha256
    sha256 TEXT NOT NULL,           -- a blob it lists (a file), or the manifest itself
    PRIMARY KEY (tree, sha256)
);
CREATE INDEX IF NOT EXISTS tree_blobs_sha256 ON tree_blobs(sha256);
"""


@dataclass
class Entry:
    """An index row: one identifier (at one endpoint) pointing at one blob."""

    key: str
    identifier: str
    sha256: str
    size: int
    validator: str | None
    immutable: bool
    verified: bool
    pinned: bool
    created: float
    accessed: float
    checked: float
    #: True when the bytes were fetched with no credential (no token, key, userinfo or
    #: signature): only such entries make a blob servable to callers without access.
    anonymous: bool = False
    #: None for a file. For a folder (a tree, from the ``trees`` table): how many files it
    #: has; ``sha256`` is then its manifest's, ``size`` the bytes of its files.
    files: int | None = None

    @property
    def tree(self) -> bool:
        """Whether this entry is a folder (a tree) rather than a file."""
        return self.files is not None


@dataclass
class Blob:
    """A stored file and every digest known for it."""

    sha256: str
    size: int
    digests: dict[str, str]
    created: float
    accessed: float
    path: Path


@dataclass
class StoredFile:
    """A blob just moved into place and the entry to point at it (:meth:`Index.add_files`)."""

    key: str
    identifier: str
    sha256: str
    size: int
    digests: dict[str, str]
    validator: str | None
    immutable: bool
    verified: bool
    anonymous: bool


class Index:
    """The SQLite index of the cache at ``layout``. Safe across threads and processes."""

    def __init__(self, layout: Layout):
        self.layout = layout
        #: Why the index is open read-only (``"read-only"`` or ``"full"``), or None.
        self.read_only: str | None = None
        self._db: sqlite3.Connection | None = None
        self._db_lock = threading.RLock()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = self._open()
        return self._db

    def _open(self) -> sqlite3.Connection:
        """Open the index read-write (waiting out a busy one), or read-only if it cannot be."""
        reason = self._prepare_dirs()
        deadline = time.monotonic() + OPEN_WAIT
        delay = 0.005
        while True:
            try:
                db = self._open_rw() if reason is None else self._open_ro()
                self.read_only = reason
                db.row_factory = sqlite3.Row
                return db
            except sqlite3.OperationalError as exc:
                if _busy(exc) and time.monotonic() < deadline:
                    time.sleep(delay)  # a live process holds it briefly; a dead one's lock is gone
                    delay = min(delay * 2, 0.25)
                    continue
                if reason is None and (why := self._unwritable(exc)):
                    reason = why
                    continue
                raise self._index_error(exc) from None
            except (OSError, sqlite3.Error) as exc:
                if reason is None and (why := self._unwritable(exc)):
                    reason = why
                    continue
                raise self._index_error(exc) from None

    def _prepare_dirs(self) -> str | None:
        """Create the private layout; return why it cannot be written, or None."""
        try:
            created = not self.layout.root.exists()
            self.layout.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not created:
                _make_private(self.layout.root, 0o700)
            for d in self.layout.private_dirs():
                d.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            if self.layout.root.is_dir() and (why := self._unwritable(exc)):
                return why
            raise CacheError(f"cannot create the cache at {self.layout.root}: "
                             f"{exc.strerror or exc}",
                             hint="set HOSTKIT_CACHE_DIR to a writable folder") from None
        return None

    def _open_rw(self) -> sqlite3.Connection:
        if not self.layout.index_path.exists():  # born owner-only; SQLite gives -wal/-shm its mode
            os.close(os.open(self.layout.index_path, os.O_WRONLY | os.O_CREAT, 0o600))
        else:
            _make_private(self.layout.index_path, 0o600)
        db = sqlite3.connect(self.layout.index_path, timeout=OPEN_WAIT / 2, check_same_thread=False,
                             isolation_level=None)
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            if db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name IN "
                          "('blobs','entries')").fetchone()[0] < 2:
                db.executescript(_SCHEMA)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            else:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version < 1:
                    self._forget_secrets(db)
                if version < 2:
                    with contextlib.suppress(sqlite3.OperationalError):  # another opener did
                        db.execute("ALTER TABLE entries ADD COLUMN anonymous INTEGER NOT NULL "
                                   "DEFAULT 0")
                if version < 3:
                    db.executescript(_SCHEMA)  # CREATE ... IF NOT EXISTS: adds the tree tables
                if version < SCHEMA_VERSION:
                    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            db.close()
            raise
        return db

    def _forget_secrets(self, db: sqlite3.Connection) -> None:
        """Upgrade an index written before keys were secret-free (schema version 0).

        Such an index may hold URL userinfo and signed query strings in its keys
        and identifiers. Rewrite them as the parser now makes them (the newer
        row wins when two collapse into one key), zero the freed pages, and drop
        resume sidecars that name the old keys.
        """
        from ..redact import redact_url, url_cache_key

        db.execute("PRAGMA secure_delete=ON")
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = db.execute("SELECT key, identifier FROM entries ORDER BY accessed").fetchall()
            for key, identifier in rows:
                try:
                    new_key = url_cache_key(key) if "://" in key else key
                except ValueError:
                    new_key = key
                new_identifier = redact_url(identifier)
                if (new_key, new_identifier) != (key, identifier):
                    db.execute("DELETE FROM entries WHERE key=? AND key<>?", (new_key, key))
                    db.execute("UPDATE entries SET key=?, identifier=? WHERE key=?",
                               (new_key, new_identifier, key))
            db.execute("PRAGMA user_version=1")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for side in self.layout.all_sidecars():
            meta = _read_json(side)
            key = meta.get("key") if isinstance(meta, dict) else None
            with contextlib.suppress(ValueError):
                if isinstance(key, str) and "://" in key and url_cache_key(key) != key:
                    self.layout.partial_of(side).unlink(missing_ok=True)
                    side.unlink(missing_ok=True)

    def _open_ro(self) -> sqlite3.Connection:
        """A read-only view: the index as it is, or an empty one when there is none."""
        from urllib.parse import quote

        if not self.layout.index_path.exists():
            db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            db.executescript(_SCHEMA)
            return db
        uri = f"file:{quote(str(self.layout.index_path))}"
        for mode in ("?mode=ro", "?immutable=1"):  # immutable: no -shm can be made here
            db = sqlite3.connect(uri + mode, uri=True, timeout=OPEN_WAIT / 2,
                                 check_same_thread=False, isolation_level=None)
            try:
                db.execute("SELECT COUNT(*) FROM blobs").fetchone()
                return db
            except sqlite3.OperationalError as exc:
                db.close()
                if _busy(exc) or mode == "?immutable=1":
                    raise
        raise AssertionError("unreachable")

    def _unwritable(self, exc: BaseException) -> str | None:
        """``"read-only"`` or ``"full"`` when ``exc`` means the cache cannot be written."""
        text = str(exc).lower()
        code = getattr(exc, "errno", None)
        if code in (errno.EROFS, errno.EACCES, errno.EPERM) or "readonly" in text \
                or "read-only" in text:
            return "read-only"
        if code in (errno.ENOSPC, errno.EDQUOT) or "full" in text:
            return "full"
        if "unable to open" in text or "disk i/o" in text:
            return "full" if _disk_full(self.layout.root) else "read-only"
        return None

    def _index_error(self, exc: BaseException) -> CacheError:
        """A CacheError that says what is wrong with the index and what to do."""
        index = self.layout.index_path
        if isinstance(exc, sqlite3.Error) and _busy(exc):
            return CacheError(f"the cache index at {index} stayed locked by another "
                              "process", hint="wait for the other hostkit process to finish, "
                              "then run the command again")
        import shlex

        text = str(exc).lower()
        if isinstance(exc, sqlite3.DatabaseError) and (
                "not a database" in text or "malformed" in text):
            return CacheError(f"the cache index at {index} is damaged ({exc})",
                              hint=f"move it aside (mv {shlex.quote(str(index))} "
                                   f"{shlex.quote(f'{index}.broken')}): the next "
                                   "resolve starts a new index and downloads again what it "
                                   "needs")
        why = self.read_only or self._unwritable(exc)
        if why == "full":
            return CacheError(f"disk full: cannot update the cache index at {index}",
                              hint="free space, run `hostkit cache prune --max-size SIZE` or "
                                   "`hostkit cache rm ID`; nothing was half-written")
        if why == "read-only":
            return CacheError(f"the cache at {self.layout.root} is read-only",
                              hint="cached files can still be resolved (try --offline); to "
                                   "download, set HOSTKIT_CACHE_DIR to a writable folder")
        return CacheError(f"cannot use the cache index at {index}: {exc}",
                          hint="check the folder's permissions and free space, or set "
                               "HOSTKIT_CACHE_DIR to another folder")

    def require_writable(self) -> None:
        """Raise CacheError when nothing can be stored (read-only cache or full disk)."""
        self._conn()
        if self.read_only == "full" and not _disk_full(self.layout.root):
            self._reopen()  # space was freed since
        if self.read_only:
            raise self._index_error(OSError(self.read_only))

    def _reopen(self) -> None:
        with self._db_lock:
            self.close()
            self.read_only = None
            self._conn()

    @contextlib.contextmanager
    def _tx(self):
        with self._db_lock:
            db = self._conn()
            if self.read_only:
                raise self._index_error(OSError(self.read_only))
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._index_error(exc) from None
            try:
                yield db
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise self._index_error(exc) from None
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
            try:
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise self._index_error(exc) from None

    def _query(self, sql: str, args=()) -> list[sqlite3.Row]:
        with self._db_lock:
            try:
                return self._conn().execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise self._index_error(exc) from None

    def _query_trees(self, sql: str, args=()) -> list[sqlite3.Row]:
        """:meth:`_query` for statements on the tree tables, which a read-only index written
        by an older hostkit lacks: it has no trees then."""
        with self._db_lock:
            try:
                return self._conn().execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc) and self.read_only:
                    return []
                raise self._index_error(exc) from None
            except sqlite3.Error as exc:
                raise self._index_error(exc) from None

    def close(self) -> None:
        """Close the index connection."""
        with self._db_lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def entry(self, key: str) -> Entry | None:
        """The index row for a cache key, if any."""
        rows = self._query("SELECT * FROM entries WHERE key=?", (key,))
        return _entry(rows[0]) if rows else None

    def entries(self) -> list[Entry]:
        """All index rows, files and folders (trees), most recently used first."""
        rows = [_entry(r) for r in self._query("SELECT * FROM entries ORDER BY accessed DESC")]
        trees = self.trees()
        if not trees:
            return rows
        return sorted(rows + trees, key=lambda e: e.accessed, reverse=True)

    def blob_rows(self, *, after: str | None = None, limit: int | None = None,
                  unpinned_lru: bool = False) -> list[Blob]:
        """Blob rows: most recently used first; or in sha256 order after ``after``;
        or (``unpinned_lru``) those no pinned entry holds, least recently used first."""
        if unpinned_lru:
            rows = self._query_trees("SELECT * FROM blobs WHERE sha256 NOT IN (SELECT sha256 FROM "
                               "entries WHERE pinned=1) AND sha256 NOT IN (SELECT tb.sha256 "
                               "FROM tree_blobs tb JOIN trees t ON t.sha256=tb.tree WHERE "
                               "t.pinned=1) ORDER BY accessed ASC")
        elif after is not None:
            rows = self._query("SELECT * FROM blobs WHERE sha256 > ? ORDER BY sha256 LIMIT ?",
                               (after, limit or -1))
        else:
            rows = self._query("SELECT * FROM blobs ORDER BY accessed DESC")
        return [_blob(r, self.layout.blob_path(r["sha256"])) for r in rows]

    def blob_row(self, sha256: str) -> Blob | None:
        """The blob row of ``sha256`` (its file may be missing)."""
        rows = self._query("SELECT * FROM blobs WHERE sha256=?", (sha256,))
        return _blob(rows[0], self.layout.blob_path(sha256)) if rows else None

    def shas_with_digest(self, alg: str, hexdigest: str) -> list[str]:
        """The sha256 of every blob whose recorded digests include ``alg:hexdigest``."""
        pattern = f'%"{alg}": "{hexdigest}"%'
        return [r["sha256"] for r in
                self._query("SELECT sha256 FROM blobs WHERE digests LIKE ?", (pattern,))]

    def keys_of(self, sha256: str) -> list[str]:
        """The keys of the entries pointing at a blob."""
        return [r["key"] for r in self._query("SELECT key FROM entries WHERE sha256=?",
                                              (sha256,))] + \
            [r["key"] for r in self._query_trees("SELECT key FROM trees WHERE sha256=?",
                                                 (sha256,))]

    def lookup(self, ident: str) -> tuple[list[Entry], list[Blob]]:
        """Entries and blobs matching a key, identifier, sha256 or sha256 prefix (>= 6)."""
        ident = ident.strip()
        if ident.startswith("sha256:"):
            ident = ident[7:]
        entries = [_entry(r) for r in self._query(
            "SELECT * FROM entries WHERE key=? OR identifier=?", (ident, ident))] + \
            [_tree(r) for r in self._query_trees(
                "SELECT * FROM trees WHERE key=? OR identifier=?", (ident, ident))]
        shas = {e.sha256 for e in entries}
        if not entries and len(ident) >= 6 and all(c in "0123456789abcdef" for c in ident):
            rows = self._query("SELECT sha256 FROM blobs WHERE sha256 LIKE ?", (ident + "%",))
            shas = {r["sha256"] for r in rows}
            if len(shas) > 1:
                raise UsageError(f"{ident} matches {len(shas)} blobs",
                                 hint="give more digits of the sha256")
            entries = [_entry(r) for s in shas for r in self._query(
                "SELECT * FROM entries WHERE sha256=?", (s,))] + \
                [_tree(r) for s in shas for r in self._query_trees(
                    "SELECT * FROM trees WHERE sha256=?", (s,))]
        blobs = [b for s in shas if (b := self.blob_row(s))]
        return entries, blobs

    def total_size(self) -> int:
        """Bytes held in blobs according to the index."""
        return self._query("SELECT COALESCE(SUM(size), 0) AS n FROM blobs")[0]["n"]

    def counts(self) -> tuple[int, int]:
        """``(entries, blobs)`` in the index, counted by SQLite (no rows loaded)."""
        row = self._query("SELECT (SELECT COUNT(*) FROM entries) AS e, "
                          "(SELECT COUNT(*) FROM blobs) AS b")[0]
        trees = self._query_trees("SELECT COUNT(*) AS t FROM trees")
        return row["e"] + (trees[0]["t"] if trees else 0), row["b"]

    # -- writes -------------------------------------------------------------

    def add_blob_row(self, sha256: str, size: int, digests: dict[str, str]) -> dict[str, str]:
        """Record a stored blob (or its new use); return every digest now known for it."""
        with self._tx() as db:
            return _add_blob(db, sha256, size, digests, time.time())

    def add_digests(self, sha256: str, digests: dict[str, str]) -> None:
        """Record more digests for an existing blob (after a re-hash)."""
        with self._tx() as db:
            _merge_digests(db, sha256, digests)

    def put_entry(self, key: str, identifier: str, blob: Blob, *, validator: str | None,
                  immutable: bool, verified: bool, anonymous: bool = False) -> Entry:
        """Point ``key`` at ``blob`` (replacing an older target, keeping the pin).

        ``created`` is when the key got its current bytes: kept while the sha256 stays,
        reset when it changes (trust on first use reports it as the old bytes' time).
        """
        with self._tx() as db:
            _put_entry(db, key, identifier, blob.sha256, blob.size, validator, immutable,
                       verified, anonymous, time.time())
        return self.entry(key)  # type: ignore[return-value]

    def add_files(self, files: list[StoredFile]) -> list[dict[str, str]]:
        """Record many stored blobs and point each one's key at it, in one transaction
        (a folder's small files: one commit for the batch); return each blob's digests."""
        now = time.time()
        with self._tx() as db:
            merged = []
            for f in files:
                merged.append(_add_blob(db, f.sha256, f.size, f.digests, now))
                _put_entry(db, f.key, f.identifier, f.sha256, f.size, f.validator,
                           f.immutable, f.verified, f.anonymous, now)
            return merged

    def touch(self, sha256: str, key: str | None = None, *, checked: bool = False) -> None:
        """Record a use (for LRU eviction); ``checked`` also records a revalidation.

        Best effort: a hit on a read-only cache or a full disk is still a hit.
        """
        now = time.time()
        try:
            with self._tx() as db:
                db.execute("UPDATE blobs SET accessed=? WHERE sha256=?", (now, sha256))
                if key is not None:
                    db.execute("UPDATE entries SET accessed=?" + (", checked=?" if checked else "")
                               + " WHERE key=?", (now, now, key) if checked else (now, key))
        except CacheError as exc:
            log.debug("not recording the use of %s: %s", sha256[:12], exc.message)

    def set_pinned(self, ident: str, pinned: bool) -> list[Entry]:
        """Pin or unpin the entries matching ``ident``; pinned blobs are never evicted."""
        entries, _ = self.lookup(ident)
        with self._tx() as db:
            for e in entries:
                db.execute(f"UPDATE {'trees' if e.tree else 'entries'} SET pinned=? "
                           "WHERE key=?", (int(pinned), e.key))
        return [self.tree(e.key) if e.tree else self.entry(e.key)  # type: ignore[misc]
                for e in entries]

    def forget(self, keys, shas) -> None:
        """Drop index rows: entries by key, and blobs (with every entry pointing at them)."""
        if self.read_only == "full":
            self._reopen()
        with self._tx() as db:
            for key in keys:
                db.execute("DELETE FROM entries WHERE key=?", (key,))
                db.execute("DELETE FROM trees WHERE key=?", (key,))
            for sha in shas:
                db.execute("DELETE FROM entries WHERE sha256=?", (sha,))
                db.execute("DELETE FROM blobs WHERE sha256=?", (sha,))
                # a manifest that goes takes its trees along (its files stay theirs)
                db.execute("DELETE FROM trees WHERE sha256=?", (sha,))
                db.execute("DELETE FROM tree_blobs WHERE tree=?", (sha,))


    # -- trees (folders) -------------------------------------------------------

    def tree(self, key: str) -> Entry | None:
        """The ``trees`` row of a folder's cache key, if any (an :class:`Entry` with files)."""
        rows = self._query_trees("SELECT * FROM trees WHERE key=?", (key,))
        return _tree(rows[0]) if rows else None

    def trees(self) -> list[Entry]:
        """Every ``trees`` row, most recently used first."""
        return [_tree(r) for r in
                self._query_trees("SELECT * FROM trees ORDER BY accessed DESC")]

    def put_tree(self, key: str, identifier: str, sha256: str, size: int, files: int,
                 members: set[str], *, immutable: bool, verified: bool,
                 anonymous: bool) -> Entry:
        """Point folder ``key`` at the manifest ``sha256`` listing the blobs ``members``.

        Like :meth:`put_entry`: the pin is kept, ``created`` is kept while the manifest
        stays and reset when it changes, ``verified`` never drops for the same manifest.
        """
        now = time.time()
        with self._tx() as db:
            db.executemany("INSERT OR IGNORE INTO tree_blobs(tree, sha256) VALUES(?,?)",
                           [(sha256, m) for m in sorted(members | {sha256})])
            db.execute(_TREE_UPSERT, (key, identifier, sha256, size, files, int(immutable),
                                      int(verified), int(anonymous), now, now, now))
        return self.tree(key)  # type: ignore[return-value]

    def touch_tree(self, sha256: str, key: str | None = None, *, checked: bool = False) -> None:
        """Record a use of a tree: its row (``key``) and every blob its manifest lists.

        Best effort, like :meth:`touch`.
        """
        now = time.time()
        try:
            with self._tx() as db:
                db.execute("UPDATE blobs SET accessed=? WHERE sha256 IN (SELECT sha256 FROM "
                           "tree_blobs WHERE tree=?)", (now, sha256))
                if key is not None:
                    db.execute("UPDATE trees SET accessed=?" + (", checked=?" if checked else "")
                               + " WHERE key=?", (now, now, key) if checked else (now, key))
        except CacheError as exc:
            log.debug("not recording the use of tree %s: %s", sha256[:12], exc.message)

    def tree_members(self, sha256: str) -> list[str]:
        """The blobs the manifest ``sha256`` lists (its files and itself); empty if unknown."""
        return [r["sha256"] for r in
                self._query_trees("SELECT sha256 FROM tree_blobs WHERE tree=?", (sha256,))]

    def manifests_with(self, shas) -> list[str]:
        """The manifests (sha256) that list any of the blobs ``shas``."""
        found: set[str] = set()
        shas = list(shas)
        for start in range(0, len(shas), 500):
            chunk = shas[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(r["tree"] for r in self._query_trees(
                f"SELECT DISTINCT tree FROM tree_blobs WHERE sha256 IN ({marks})", chunk))
        return sorted(found)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _busy(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _disk_full(path: Path) -> bool:
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < (1 << 20)


def _make_private(path: Path, mode: int) -> None:
    """Tighten an existing cache path we own that others could read (older releases)."""
    with contextlib.suppress(OSError):
        st = path.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.chmod(path, mode)


def _add_blob(db: sqlite3.Connection, sha256: str, size: int, digests: dict[str, str],
              now: float) -> dict[str, str]:
    """Insert or touch a blob row and merge its digests (inside a transaction)."""
    db.execute("INSERT OR IGNORE INTO blobs(sha256,size,digests,created,accessed) "
               "VALUES(?,?,'{}',?,?)", (sha256, size, now, now))
    db.execute("UPDATE blobs SET accessed=? WHERE sha256=?", (now, sha256))
    return _merge_digests(db, sha256, digests)


def _put_entry(db: sqlite3.Connection, key: str, identifier: str, sha256: str, size: int,
               validator: str | None, immutable: bool, verified: bool, anonymous: bool,
               now: float) -> None:
    """Insert or update an entry row (inside a transaction); see :meth:`Index.put_entry`."""
    db.execute(_ENTRY_UPSERT, (key, identifier, sha256, size, validator, int(immutable),
                               int(verified), int(anonymous), now, now, now))


def _upsert(table: str, column: str) -> str:
    """The statement that points a key of ``table`` (``entries``, or ``trees`` for folders)
    at a sha256, with its own ``column`` (a validator, a file count). The pin is kept;
    ``created`` is kept while the sha256 stays and reset when it changes (trust on first
    use reports it as the old bytes' time); ``verified`` never drops for the same sha256."""
    same = f"{table}.sha256=excluded.sha256"
    return (f"INSERT INTO {table}(key,identifier,sha256,size,{column},immutable,verified,"
            "pinned,anonymous,created,accessed,checked) VALUES(?,?,?,?,?,?,?,0,?,?,?,?) "
            "ON CONFLICT(key) DO UPDATE SET identifier=excluded.identifier, "
            f"sha256=excluded.sha256, size=excluded.size, {column}=excluded.{column}, "
            "immutable=excluded.immutable, anonymous=excluded.anonymous, "
            f"verified=MAX(excluded.verified, CASE WHEN {same} THEN {table}.verified ELSE 0 "
            f"END), created=CASE WHEN {same} THEN {table}.created ELSE excluded.created END, "
            "accessed=excluded.accessed, checked=excluded.checked")


_ENTRY_UPSERT = _upsert("entries", "validator")
_TREE_UPSERT = _upsert("trees", "files")


def _merge_digests(db: sqlite3.Connection, sha256: str, digests: dict[str, str]) -> dict:
    """Add ``digests`` to a blob row's known digests (inside a transaction); return them all."""
    row = db.execute("SELECT digests FROM blobs WHERE sha256=?", (sha256,)).fetchone()
    if row is None:
        return dict(digests)
    merged = {**json.loads(row["digests"]), **digests}
    db.execute("UPDATE blobs SET digests=? WHERE sha256=?",
               (json.dumps(merged, sort_keys=True), sha256))
    return merged


def _entry(row: sqlite3.Row) -> Entry:
    anonymous = bool(row["anonymous"]) if "anonymous" in row.keys() else False  # noqa: SIM118
    return Entry(row["key"], row["identifier"], row["sha256"], row["size"], row["validator"],
                 bool(row["immutable"]), bool(row["verified"]), bool(row["pinned"]),
                 row["created"], row["accessed"], row["checked"], anonymous)


def _tree(row: sqlite3.Row) -> Entry:
    return Entry(row["key"], row["identifier"], row["sha256"], row["size"], None,
                 bool(row["immutable"]), bool(row["verified"]), bool(row["pinned"]),
                 row["created"], row["accessed"], row["checked"], bool(row["anonymous"]),
                 files=row["files"])


def _blob(row: sqlite3.Row, path: Path) -> Blob:
    return Blob(row["sha256"], row["size"], json.loads(row["digests"]), row["created"],
                row["accessed"], path)


