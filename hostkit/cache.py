"""The content-addressed cache: blobs named by sha256 plus a SQLite index.

Layout under the cache root::

    blobs/sha256/<hex>        whole, verified files, read-only
    tmp/<keyhash>.<owner>.part   partial downloads (+ .json sidecar for resume)
    locks/<keyhash>.lock      advisory locks that avoid duplicate downloads
    index.db                  SQLite (WAL): entries (identifier -> blob) and blobs

A blob enters ``blobs/`` only by ``os.replace`` of a fully written, fsynced,
verified temp file, so a crash leaves nothing or a whole blob. The index is
written after the blob is in place; a blob without an index row is an orphan
that ``verify`` and ``prune`` sweep.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import CacheError, UsageError
from .hashes import CONTENT_ALG, hash_file

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
        self._db: sqlite3.Connection | None = None
        self._db_lock = threading.RLock()

    # -- plumbing -----------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                for d in (self.blob_dir, self.tmp_dir, self.lock_dir):
                    d.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.root / "index.db", timeout=30,
                                     check_same_thread=False, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(_SCHEMA)
            except (OSError, sqlite3.Error) as exc:
                raise CacheError(f"cannot open the cache at {self.root}: {exc}",
                                 hint="set HOSTKIT_CACHE_DIR to a writable folder") from None
            db.row_factory = sqlite3.Row
            self._db = db
        return self._db

    @contextlib.contextmanager
    def _tx(self):
        with self._db_lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _query(self, sql: str, args=()) -> list[sqlite3.Row]:
        with self._db_lock:
            return self._conn().execute(sql, args).fetchall()

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
            os.chmod(temp, 0o444)
            os.replace(temp, final)  # atomic; identical content may already be there
            _fsync_dir(final.parent)
        except OSError as exc:
            raise CacheError(f"cannot store blob {sha[:12]} in {self.blob_dir}: {exc}",
                             hint="free disk space or point HOSTKIT_CACHE_DIR elsewhere") from None
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO blobs(sha256,size,digests,created,accessed) "
                       "VALUES(?,?,'{}',?,?)", (sha, size, now, now))
            db.execute("UPDATE blobs SET accessed=? WHERE sha256=?", (now, sha))
            merged = _merge_digests(db, sha, digests)
        return Blob(sha, size, merged, now, now, final)

    def add_digests(self, sha256: str, digests: dict[str, str]) -> None:
        """Record more digests for an existing blob (after a re-hash)."""
        with self._tx() as db:
            _merge_digests(db, sha256, digests)

    def put_entry(self, key: str, identifier: str, blob: Blob, *, validator: str | None,
                  immutable: bool, verified: bool) -> Entry:
        """Point ``key`` at ``blob`` (replacing an older target, keeping the pin)."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO entries(key,identifier,sha256,size,validator,immutable,verified,"
                "pinned,created,accessed,checked) VALUES(?,?,?,?,?,?,?,0,?,?,?) "
                "ON CONFLICT(key) DO UPDATE SET identifier=excluded.identifier, "
                "sha256=excluded.sha256, size=excluded.size, validator=excluded.validator, "
                "immutable=excluded.immutable, "
                "verified=MAX(excluded.verified, CASE WHEN entries.sha256=excluded.sha256 "
                "THEN entries.verified ELSE 0 END), "
                "accessed=excluded.accessed, checked=excluded.checked",
                (key, identifier, blob.sha256, blob.size, validator, int(immutable),
                 int(verified), now, now, now))
        return self.entry(key)  # type: ignore[return-value]

    def touch(self, sha256: str, key: str | None = None, *, checked: bool = False) -> None:
        """Record a use (for LRU eviction); ``checked`` also records a revalidation."""
        now = time.time()
        with self._tx() as db:
            db.execute("UPDATE blobs SET accessed=? WHERE sha256=?", (now, sha256))
            if key is not None:
                db.execute("UPDATE entries SET accessed=?" + (", checked=?" if checked else "")
                           + " WHERE key=?", (now, now, key) if checked else (now, key))

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
        shas = {e.sha256 for e in entries} | {b.sha256 for b in blobs}
        by_digest = not any(ident.strip() in (e.key, e.identifier) for e in entries)
        removed_blobs = []
        with self._tx() as db:
            for e in entries:
                db.execute("DELETE FROM entries WHERE key=?", (e.key,))
            for sha in shas:
                left = db.execute("SELECT COUNT(*) FROM entries WHERE sha256=?", (sha,))
                if by_digest or left.fetchone()[0] == 0:
                    db.execute("DELETE FROM entries WHERE sha256=?", (sha,))
                    db.execute("DELETE FROM blobs WHERE sha256=?", (sha,))
                    removed_blobs.append(sha)
        for sha in removed_blobs:
            self.blob_path(sha).unlink(missing_ok=True)
        return entries, [b for b in blobs if b.sha256 in removed_blobs]

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
        for part in self.abandoned_partials(older_than=86400):
            part.unlink(missing_ok=True)
            part.with_suffix(".json").unlink(missing_ok=True)
        total = self.total_size()
        rows = self._query(
            "SELECT * FROM blobs WHERE sha256 NOT IN (SELECT sha256 FROM entries WHERE pinned=1) "
            "ORDER BY accessed ASC")
        evicted = []
        for row in rows:
            if total <= max_size:
                break
            self.remove(row["sha256"])
            total -= row["size"]
            evicted.append(_blob(row, self.blob_path(row["sha256"])))
        return evicted

    def verify(self, ident: str | None = None, *, repair: bool = True) -> list[tuple[Blob, str]]:
        """Re-hash blobs (all, or those matching ``ident``); return ``(blob, problem)`` pairs.

        With ``repair``, corrupt or missing blobs are removed from the cache
        (they will be downloaded again on the next resolve), and files in
        ``blobs/`` that the index does not know are deleted.
        """
        blobs = self.lookup(ident)[1] if ident else self.blobs()
        problems = []
        for blob in blobs:
            try:
                found = hash_file(blob.path, blob.digests.keys())
            except OSError as exc:
                problems.append((blob, f"unreadable: {exc.strerror or exc}"))
            else:
                bad = [alg for alg, hexd in blob.digests.items() if found.get(alg) != hexd]
                if bad or found[CONTENT_ALG] != blob.sha256:
                    problems.append((blob, f"content changed: sha256 is now {found[CONTENT_ALG]}"))
        if repair:
            for blob, _ in problems:
                self.remove(blob.sha256)
            if ident is None:
                known = {b.sha256 for b in self.blobs()}
                settled = time.time() - 60  # a just-renamed blob may not be indexed yet
                for path in self.blob_dir.iterdir():
                    if path.name not in known and path.stat().st_ctime < settled:
                        path.unlink(missing_ok=True)
        return problems


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
    return Entry(row["key"], row["identifier"], row["sha256"], row["size"], row["validator"],
                 bool(row["immutable"]), bool(row["verified"]), bool(row["pinned"]),
                 row["created"], row["accessed"], row["checked"])


def _blob(row: sqlite3.Row, path: Path) -> Blob:
    return Blob(row["sha256"], row["size"], json.loads(row["digests"]), row["created"],
                row["accessed"], path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
