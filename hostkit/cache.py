"""The content-addressed cache: blobs named by sha256 plus a SQLite index.

Layout under the cache root::

    blobs/sha256/<hex>        whole, verified files, read-only to their owner
    tmp/<keyhash>.<owner>.part   partial downloads (+ .json sidecar for resume)
    locks/<keyhash>.lock      advisory locks that avoid duplicate downloads
    quarantine/<hex>.<time>   blobs whose bytes no longer match their name (bit rot)
    index.db                  SQLite (WAL): entries (identifier -> blob) and blobs

The cache is private: directories 0700, ``index.db`` 0600, blobs 0400. It
stays readable when it cannot be written (a read-only mount, a full disk):
hits, listings and report-only verification work; writes fail with a
:class:`~hostkit.errors.CacheError` that says why.

A blob enters ``blobs/`` only by ``os.replace`` of a fully written, fsynced,
verified temp file, so a crash leaves nothing or a whole blob. The index is
written after the blob is in place; a blob without an index row is an orphan
that ``verify`` and ``prune`` sweep.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import CacheError, UsageError
from .failpoints import failpoint
from .hashes import CONTENT_ALG, hash_file

log = logging.getLogger("hostkit.cache")

#: ``PRAGMA user_version`` of the index: 1 since keys and identifiers hold no secrets,
#: 2 since entries say whether their bytes were fetched anonymously.
SCHEMA_VERSION = 2

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
    created REAL NOT NULL,
    accessed REAL NOT NULL,
    checked REAL NOT NULL           -- last time the origin confirmed the validator
);
CREATE INDEX IF NOT EXISTS entries_sha256 ON entries(sha256);
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


@dataclass
class Blob:
    """A stored file and every digest known for it."""

    sha256: str
    size: int
    digests: dict[str, str]
    created: float
    accessed: float
    path: Path


def key_hash(key: str) -> str:
    """Short stable file-name-safe name for a cache key (temp and lock files)."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class Cache:
    """Blob store and index at ``root``. Safe across threads and processes."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.blob_dir = self.root / "blobs" / CONTENT_ALG
        self.tmp_dir = self.root / "tmp"
        self.lock_dir = self.root / "locks"
        self.quarantine_dir = self.root / "quarantine"
        self.index_path = self.root / "index.db"
        #: Why the index is open read-only (``"read-only"`` or ``"full"``), or None.
        self.read_only: str | None = None
        self._db: sqlite3.Connection | None = None
        self._db_lock = threading.RLock()
        self._scrub_after = ""

    # -- plumbing -----------------------------------------------------------

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
            created = not self.root.exists()
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not created:
                _make_private(self.root, 0o700)
            for d in (self.root / "blobs", self.blob_dir, self.tmp_dir, self.lock_dir):
                d.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            if self.root.is_dir() and (why := self._unwritable(exc)):
                return why
            raise CacheError(f"cannot create the cache at {self.root}: {exc.strerror or exc}",
                             hint="set HOSTKIT_CACHE_DIR to a writable folder") from None
        return None

    def _open_rw(self) -> sqlite3.Connection:
        if not self.index_path.exists():  # born owner-only; SQLite gives -wal/-shm its mode
            os.close(os.open(self.index_path, os.O_WRONLY | os.O_CREAT, 0o600))
        else:
            _make_private(self.index_path, 0o600)
        db = sqlite3.connect(self.index_path, timeout=OPEN_WAIT / 2, check_same_thread=False,
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
        from .redact import redact_url, url_cache_key

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
        for side in self.tmp_dir.glob("*.json"):
            meta = _read_json(side)
            key = meta.get("key") if isinstance(meta, dict) else None
            with contextlib.suppress(ValueError):
                if isinstance(key, str) and "://" in key and url_cache_key(key) != key:
                    side.with_suffix(".part").unlink(missing_ok=True)
                    side.unlink(missing_ok=True)

    def _open_ro(self) -> sqlite3.Connection:
        """A read-only view: the index as it is, or an empty one when there is none."""
        from urllib.parse import quote

        if not self.index_path.exists():
            db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            db.executescript(_SCHEMA)
            return db
        uri = f"file:{quote(str(self.index_path))}"
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
            return "full" if _disk_full(self.root) else "read-only"
        return None

    def _index_error(self, exc: BaseException) -> CacheError:
        """A CacheError that says what is wrong with the index and what to do."""
        if isinstance(exc, sqlite3.Error) and _busy(exc):
            return CacheError(f"the cache index at {self.index_path} stayed locked by another "
                              "process", hint="wait for the other hostkit process to finish, "
                              "then run the command again")
        why = self.read_only or self._unwritable(exc)
        if why == "full":
            return CacheError(f"disk full: cannot update the cache index at {self.index_path}",
                              hint="free space, run `hostkit cache prune --max-size SIZE` or "
                                   "`hostkit cache rm ID`; nothing was half-written")
        if why == "read-only":
            return CacheError(f"the cache at {self.root} is read-only",
                              hint="cached files can still be resolved (try --offline); to "
                                   "download, set HOSTKIT_CACHE_DIR to a writable folder")
        return CacheError(f"cannot use the cache index at {self.index_path}: {exc}",
                          hint="check the folder's permissions and free space, or set "
                               "HOSTKIT_CACHE_DIR to another folder")

    def require_writable(self) -> None:
        """Raise CacheError when nothing can be stored (read-only cache or full disk)."""
        self._conn()
        if self.read_only == "full" and not _disk_full(self.root):
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

    def close(self) -> None:
        """Close the index connection."""
        with self._db_lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def blob_path(self, sha256: str) -> Path:
        """Where the blob with this sha256 lives (whether or not it exists)."""
        return self.blob_dir / sha256

    # -- reads --------------------------------------------------------------

    def entry(self, key: str) -> Entry | None:
        """The index row for a cache key, if any."""
        rows = self._query("SELECT * FROM entries WHERE key=?", (key,))
        return _entry(rows[0]) if rows else None

    def blob(self, sha256: str) -> Blob | None:
        """The blob with this sha256 if its row and its file both exist with the right size."""
        blob = self._blob_row(sha256)
        try:
            if blob is None or blob.path.stat().st_size != blob.size:
                return None
        except OSError:
            return None
        return blob

    def find_blob(self, alg: str, hexdigest: str) -> Blob | None:
        """A stored blob with this digest in any algorithm we recorded."""
        if alg == CONTENT_ALG:
            return self.blob(hexdigest)
        pattern = f'%"{alg}": "{hexdigest}"%'
        for row in self._query("SELECT sha256 FROM blobs WHERE digests LIKE ?", (pattern,)):
            if blob := self.blob(row["sha256"]):
                return blob
        return None

    def entries(self) -> list[Entry]:
        """All index rows, most recently used first."""
        return [_entry(r) for r in self._query("SELECT * FROM entries ORDER BY accessed DESC")]

    def blobs(self) -> list[Blob]:
        """All blob rows, most recently used first."""
        return [_blob(r, self.blob_path(r["sha256"]))
                for r in self._query("SELECT * FROM blobs ORDER BY accessed DESC")]

    def lookup(self, ident: str) -> tuple[list[Entry], list[Blob]]:
        """Entries and blobs matching a key, identifier, sha256 or sha256 prefix (>= 6)."""
        ident = ident.strip()
        if ident.startswith("sha256:"):
            ident = ident[7:]
        entries = [_entry(r) for r in self._query(
            "SELECT * FROM entries WHERE key=? OR identifier=?", (ident, ident))]
        shas = {e.sha256 for e in entries}
        if not entries and len(ident) >= 6 and all(c in "0123456789abcdef" for c in ident):
            rows = self._query("SELECT sha256 FROM blobs WHERE sha256 LIKE ?", (ident + "%",))
            shas = {r["sha256"] for r in rows}
            if len(shas) > 1:
                raise UsageError(f"{ident} matches {len(shas)} blobs",
                                 hint="give more digits of the sha256")
            entries = [_entry(r) for s in shas for r in self._query(
                "SELECT * FROM entries WHERE sha256=?", (s,))]
        blobs = [b for s in shas if (b := self._blob_row(s))]
        return entries, blobs

    def _blob_row(self, sha256: str) -> Blob | None:
        rows = self._query("SELECT * FROM blobs WHERE sha256=?", (sha256,))
        return _blob(rows[0], self.blob_path(sha256)) if rows else None

    def total_size(self) -> int:
        """Bytes held in blobs according to the index."""
        return self._query("SELECT COALESCE(SUM(size), 0) AS n FROM blobs")[0]["n"]

    def counts(self) -> tuple[int, int]:
        """``(entries, blobs)`` in the index, counted by SQLite (no rows loaded)."""
        row = self._query("SELECT (SELECT COUNT(*) FROM entries) AS e, "
                          "(SELECT COUNT(*) FROM blobs) AS b")[0]
        return row["e"], row["b"]

    # -- writes -------------------------------------------------------------

    def add_blob(self, temp: Path, digests: dict[str, str], size: int) -> Blob:
        """Move a fully written, fsynced, verified temp file into place and index it."""
        sha = digests[CONTENT_ALG]
        final = self.blob_path(sha)
        now = time.time()
        try:
            os.chmod(temp, 0o400)
            os.replace(temp, final)  # atomic; identical content may already be there
            _fsync_dir(final.parent)
        except OSError as exc:
            raise CacheError(f"cannot store blob {sha[:12]} in {self.blob_dir}: {exc}",
                             hint="free disk space or point HOSTKIT_CACHE_DIR elsewhere") from None
        failpoint("index")
        try:
            with self._tx() as db:
                db.execute("INSERT OR IGNORE INTO blobs(sha256,size,digests,created,accessed) "
                           "VALUES(?,?,'{}',?,?)", (sha, size, now, now))
                db.execute("UPDATE blobs SET accessed=? WHERE sha256=?", (now, sha))
                merged = _merge_digests(db, sha, digests)
        except CacheError:
            # e.g. disk full at the index write: take the file back out unless another
            # process indexed the same bytes meanwhile, so nothing is left half-stored
            with contextlib.suppress(CacheError, OSError):
                if self._blob_row(sha) is None:
                    final.unlink()
            raise
        return Blob(sha, size, merged, now, now, final)

    def add_digests(self, sha256: str, digests: dict[str, str]) -> None:
        """Record more digests for an existing blob (after a re-hash)."""
        with self._tx() as db:
            _merge_digests(db, sha256, digests)

    def put_entry(self, key: str, identifier: str, blob: Blob, *, validator: str | None,
                  immutable: bool, verified: bool, anonymous: bool = False) -> Entry:
        """Point ``key`` at ``blob`` (replacing an older target, keeping the pin)."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO entries(key,identifier,sha256,size,validator,immutable,verified,"
                "pinned,anonymous,created,accessed,checked) VALUES(?,?,?,?,?,?,?,0,?,?,?,?) "
                "ON CONFLICT(key) DO UPDATE SET identifier=excluded.identifier, "
                "sha256=excluded.sha256, size=excluded.size, validator=excluded.validator, "
                "immutable=excluded.immutable, anonymous=excluded.anonymous, "
                "verified=MAX(excluded.verified, CASE WHEN entries.sha256=excluded.sha256 "
                "THEN entries.verified ELSE 0 END), "
                "accessed=excluded.accessed, checked=excluded.checked",
                (key, identifier, blob.sha256, blob.size, validator, int(immutable),
                 int(verified), int(anonymous), now, now, now))
        return self.entry(key)  # type: ignore[return-value]

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
                db.execute("UPDATE entries SET pinned=? WHERE key=?", (int(pinned), e.key))
        return [self.entry(e.key) for e in entries]  # type: ignore[misc]

    def remove(self, ident: str) -> tuple[list[Entry], list[Blob]]:
        """Drop entries matching ``ident``; drop blobs no entry points at any more.

        Given a digest, removes the blob and every entry pointing at it.
        """
        entries, blobs = self.lookup(ident)
        if self.read_only == "read-only":
            raise self._index_error(OSError("read-only"))
        shas = {e.sha256 for e in entries} | {b.sha256 for b in blobs}
        by_digest = not any(ident.strip() in (e.key, e.identifier) for e in entries)
        keys = {e.key for e in entries}
        doomed = [sha for sha in shas if by_digest or not self._query(
            "SELECT 1 FROM entries WHERE sha256=? LIMIT 1", (sha,)) or all(
            r["key"] in keys for r in self._query("SELECT key FROM entries WHERE sha256=?",
                                                  (sha,)))]
        # files first: on a full disk that frees the space the index update needs; a row
        # left without its file reads as absent, never as a wrong file
        for sha in doomed:
            self.blob_path(sha).unlink(missing_ok=True)
        self._forget(keys, doomed)
        return entries, [b for b in blobs if b.sha256 in doomed]

    def _forget(self, keys, shas) -> None:
        """Drop index rows: entries by key, and blobs (with every entry pointing at them)."""
        if self.read_only == "full":
            self._reopen()
        with self._tx() as db:
            for key in keys:
                db.execute("DELETE FROM entries WHERE key=?", (key,))
            for sha in shas:
                db.execute("DELETE FROM entries WHERE sha256=?", (sha,))
                db.execute("DELETE FROM blobs WHERE sha256=?", (sha,))

    def abandoned_partials(self, older_than: float = 0.0) -> list[Path]:
        """Partial downloads whose process is gone, untouched for ``older_than`` seconds."""
        from .sink import partial_owner_alive

        cutoff = time.time() - older_than
        out = []
        for part in self.tmp_dir.glob("*.part") if self.tmp_dir.exists() else ():
            try:
                if part.stat().st_mtime < cutoff and not partial_owner_alive(part):
                    out.append(part)
            except OSError:
                continue
        return out

    def prune(self, max_size: int) -> list[Blob]:
        """Evict least recently used unpinned blobs until the total is <= ``max_size``.

        Partial downloads abandoned for over a day go too (younger ones are
        kept so that the next resolve can resume them).
        """
        from .sink import stale_sidecars

        for part in self.abandoned_partials(older_than=86400):
            part.unlink(missing_ok=True)
            part.with_suffix(".json").unlink(missing_ok=True)
        for side in stale_sidecars(self, older_than=86400):
            side.unlink(missing_ok=True)
        if self.read_only == "read-only":
            raise self._index_error(OSError("read-only"))
        total = self.total_size()
        rows = self._query(
            "SELECT * FROM blobs WHERE sha256 NOT IN (SELECT sha256 FROM entries WHERE pinned=1) "
            "ORDER BY accessed ASC")
        evicted = []
        for row in rows:
            if total <= max_size:
                break
            total -= row["size"]
            evicted.append(_blob(row, self.blob_path(row["sha256"])))
        for blob in evicted:  # files first, as in remove()
            blob.path.unlink(missing_ok=True)
        if evicted:
            self._forget((), [b.sha256 for b in evicted])
        return evicted

    def verify(self, ident: str | None = None, *, repair: bool = True) -> list[tuple[Blob, str]]:
        """Re-hash blobs (all, or those matching ``ident``); return ``(blob, problem)`` pairs.

        With ``repair``, corrupt or missing blobs are quarantined (the next
        resolve downloads them again), and files in ``blobs/`` that the index
        does not know are adopted when their bytes match their name (a crash
        between the rename and the index write) and deleted otherwise.
        """
        blobs = self.lookup(ident)[1] if ident else self.blobs()
        problems = [(blob, problem) for blob in blobs
                    if (problem := self.check_blob(blob)) is not None]
        if repair:
            for blob, problem in problems:
                self.quarantine(blob.sha256, problem)
            if ident is None:
                known = {b.sha256 for b in self.blobs()}
                settled = time.time() - 60  # a just-renamed blob may not be indexed yet
                for path in self.blob_dir.iterdir():
                    if path.name not in known and path.stat().st_ctime < settled:
                        self.adopt_orphan(path.name)
        return problems

    def adopt_orphan(self, sha256: str) -> Blob | None:
        """Index a file in ``blobs/`` that has no row, if its bytes match its name; else delete it.

        A process killed between moving a verified blob into place and writing
        the index leaves such a file: it is whole and verified, so it is kept.
        """
        if (blob := self.blob(sha256)) is not None:
            return blob
        path = self.blob_path(sha256)
        try:
            size = path.stat().st_size
            digests = hash_file(path, (CONTENT_ALG,))
        except OSError:
            return None
        if digests[CONTENT_ALG] != sha256:
            path.unlink(missing_ok=True)
            return None
        now = time.time()
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO blobs(sha256,size,digests,created,accessed) "
                       "VALUES(?,?,?,?,?)", (sha256, size, json.dumps(digests), now, now))
        log.info("adopted blob %s left unindexed by an interrupted run", sha256[:12])
        return self.blob(sha256)

    def check_blob(self, blob: Blob, pace=None) -> str | None:
        """Re-hash one blob; return what is wrong with it, or None when its bytes match.

        ``pace(n)`` is called after each read of ``n`` bytes (a rate limit may sleep there).
        """
        try:
            found = hash_file(blob.path, blob.digests.keys() | {CONTENT_ALG}, pace=pace)
        except OSError as exc:
            return f"unreadable: {exc.strerror or exc}"
        if found[CONTENT_ALG] != blob.sha256 or any(
                found.get(alg) != hexd for alg, hexd in blob.digests.items()):
            return f"content changed: sha256 is now {found[CONTENT_ALG]}"
        return None

    def quarantine(self, sha256: str, reason: str) -> None:
        """Move a blob whose bytes no longer match out of ``blobs/`` and forget it.

        The file is kept under ``quarantine/`` for inspection; entries that
        pointed at it are dropped, so the next resolve downloads them again.
        Raises CacheError when the cache cannot be changed (read-only): the
        caller must then refuse to serve the blob.
        """
        log.warning("quarantining blob %s: %s", sha256[:12], reason)
        path = self.blob_path(sha256)
        try:
            self.quarantine_dir.mkdir(mode=0o700, exist_ok=True)
            os.replace(path, self.quarantine_dir / f"{sha256}.{int(time.time())}")
        except FileNotFoundError:
            pass
        except OSError:
            try:
                path.unlink()  # cannot keep it: never serve it
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise CacheError(
                    f"blob {sha256[:12]} in {self.blob_dir} is corrupt ({reason}) and cannot "
                    f"be removed: {exc.strerror or exc}",
                    hint=f"the cache at {self.root} is read-only or not yours; delete "
                         f"{path} or run `hostkit cache verify` where it is writable") from None
        self._forget((), [sha256])

    def scrub(self, max_bytes: int, pace=None) -> list[tuple[Blob, str]]:
        """Re-hash the next blobs in turn, about ``max_bytes`` of them; quarantine bad ones.

        Called repeatedly (the daemon's background scrub), it walks every blob
        in sha256 order and starts over at the end. ``pace(n)`` is called after
        each read of ``n`` bytes, so a caller can hold the reads under a rate
        however large a blob is. Returns ``(blob, problem)``.
        """
        rows = self._query("SELECT * FROM blobs WHERE sha256 > ? ORDER BY sha256 LIMIT 256",
                           (self._scrub_after,))
        if not rows:
            self._scrub_after = ""
            return []
        problems, budget = [], max_bytes
        for row in rows:
            blob = _blob(row, self.blob_path(row["sha256"]))
            self._scrub_after = blob.sha256
            if (problem := self.check_blob(blob, pace)) is not None:
                problems.append((blob, problem))
                self.quarantine(blob.sha256, problem)
            budget -= max(blob.size, 1)
            if budget <= 0:
                break
        return problems


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


def _blob(row: sqlite3.Row, path: Path) -> Blob:
    return Blob(row["sha256"], row["size"], json.loads(row["digests"]), row["created"],
                row["accessed"], path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
