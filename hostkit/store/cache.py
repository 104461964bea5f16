"""The content-addressed cache: blob tiers plus the index, under one layout.

A blob enters a tier only by an atomic move of a fully written, fsynced,
verified partial file, so a crash leaves nothing or a whole blob. The index
is written after the blob is in place; a blob left without its row by a
crash is adopted when its bytes match its name (:meth:`Cache.adopt_orphan`).

The cache is private: directories 0700, ``index.db`` 0600, blobs 0400. It
stays readable when it cannot be written (a read-only mount, a full disk):
hits, listings and report-only verification work; writes fail with a
:class:`~hostkit.errors.CacheError` that says why. Every method may block
(SQLite, file I/O, hashing): async callers run them in a worker thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CacheError
from ..failpoints import failpoint
from ..hashes import hash_file
from .index import Blob, Entry, Index, StoredFile
from .layout import CONTENT_ALG, MIN_SHA256_PREFIX, Layout, key_hash
from .partials import _ACTIVE, partial_owner_alive, stale_sidecars, write_error
from .snapshots import TreeFile, build_snapshot, drop_snapshot, parse_manifest, snapshot_ready
from .tiers import LocalTier
from .trees import drop_tree

log = logging.getLogger("hostkit.store")

#: Partial downloads abandoned for longer than this are deleted by ``prune``.
PARTIAL_MAX_AGE = 86400.0



@dataclass
class DeletionPlan:
    """What a ``remove`` or ``prune`` will delete, worked out before anything is deleted.

    Plan, show (or ask), then :meth:`Cache.execute` the same plan: a dry run and
    the real run can never disagree about what goes (huggingface_hub's
    ``DeleteCacheStrategy`` shape). Planning only reads.
    """

    #: ``"remove"`` or ``"prune"``.
    action: str
    #: Index rows that go (for a prune: every entry pointing at an evicted blob).
    entries: list[Entry]
    #: Blobs whose files go.
    blobs: list[Blob]
    #: Partial downloads (and their sidecars) abandoned long enough to go (prune).
    partials: list[Path] = field(default_factory=list)
    stale_sidecars: list[Path] = field(default_factory=list)
    #: Bytes of the partial files that go.
    partial_bytes: int = 0
    #: Bytes held in blobs before the plan runs, and after.
    total_before: int = 0
    total_after: int = 0
    #: Bytes held by blobs that a pinned entry keeps (prune never evicts them).
    pinned_bytes: int = 0
    #: Entry keys the plan removes (a remove by identifier keeps blobs others still use).
    keys: frozenset[str] = frozenset()
    #: True when the plan removes blobs by digest (every entry pointing at them goes).
    by_digest: bool = False

    @property
    def expected_freed_size(self) -> int:
        """Bytes the plan frees: its blobs and abandoned partial files."""
        return sum(b.size for b in self.blobs) + self.partial_bytes

    def identifiers_of(self, sha256: str) -> list[str]:
        """The identifiers (as stored: no secrets) of the planned entries pointing at a blob."""
        return [e.identifier for e in self.entries if e.sha256 == sha256]


class Cache:
    """Blob store and index at ``root``. Safe across threads and processes."""

    def __init__(self, root: Path | str):
        self.layout = Layout(root)
        self.index = Index(self.layout)
        self.tier = LocalTier(self.layout)
        self._scrub_after = ""

    # -- where things are ------------------------------------------------------

    @property
    def root(self) -> Path:
        """The cache's root folder."""
        return self.layout.root

    @property
    def blob_dir(self) -> Path:
        """``blobs/sha256/``."""
        return self.layout.blob_dir

    @property
    def tmp_dir(self) -> Path:
        """``tmp/``: partial downloads and their sidecars."""
        return self.layout.tmp_dir

    @property
    def lock_dir(self) -> Path:
        """``locks/``."""
        return self.layout.lock_dir

    @property
    def quarantine_dir(self) -> Path:
        """``quarantine/``."""
        return self.layout.quarantine_dir

    @property
    def read_only(self) -> str | None:
        """Why the cache cannot be written now (``"read-only"``, ``"full"``), or None."""
        return self.index.read_only

    def blob_path(self, sha256: str) -> Path:
        """Where the blob with this sha256 lives (whether or not it exists)."""
        return self.tier.path(sha256)

    def close(self) -> None:
        """Close the index connection."""
        self.index.close()

    def require_writable(self) -> None:
        """Raise CacheError when nothing can be stored (read-only cache or full disk)."""
        self.index.require_writable()

    # -- reads -----------------------------------------------------------------

    def entry(self, key: str) -> Entry | None:
        """The index row for a cache key, if any."""
        return self.index.entry(key)

    def entries(self) -> list[Entry]:
        """All index rows, most recently used first."""
        return self.index.entries()

    def blob(self, sha256: str) -> Blob | None:
        """The blob with this sha256 if its row and its file both exist with the right size."""
        blob = self.index.blob_row(sha256)
        return blob if blob is not None and self.tier.has(sha256, blob.size) else None

    def find_blob(self, alg: str, hexdigest: str) -> Blob | None:
        """A stored blob with this digest in any algorithm we recorded."""
        if alg == CONTENT_ALG:
            return self.blob(hexdigest)
        for sha in self.index.shas_with_digest(alg, hexdigest):
            if blob := self.blob(sha):
                return blob
        return None

    def blobs(self) -> list[Blob]:
        """All blob rows, most recently used first."""
        return self.index.blob_rows()

    def lookup(self, ident: str) -> tuple[list[Entry], list[Blob]]:
        """Entries and blobs matching a key, identifier, sha256 or sha256 prefix (>= 6)."""
        return self.index.lookup(ident)

    def short_prefix(self, ident: str) -> bool:
        """Whether ``ident`` looks like a sha256 prefix too short for :meth:`lookup` to take
        (and names no entry): the caller should ask for more digits, not say "no match"."""
        text = ident.strip().lower().removeprefix("sha256:")
        return 0 < len(text) < MIN_SHA256_PREFIX and \
            all(c in "0123456789abcdef" for c in text) and not self.lookup(ident)[0]

    def total_size(self) -> int:
        """Bytes held in blobs according to the index."""
        return self.index.total_size()

    def counts(self) -> tuple[int, int]:
        """``(entries, blobs)`` in the index."""
        return self.index.counts()

    # -- writes ----------------------------------------------------------------

    def add_blob(self, temp: Path, digests: dict[str, str], size: int) -> Blob:
        """Move a fully written, fsynced, verified temp file into place and index it."""
        sha = digests[CONTENT_ALG]
        try:
            final = self.tier.put(temp, sha)
        except OSError as exc:
            raise CacheError(f"cannot store blob {sha[:12]} in {self.blob_dir}: {exc}",
                             hint="free disk space or point HOSTKIT_CACHE_DIR elsewhere") from None
        failpoint("index")
        try:
            merged = self.index.add_blob_row(sha, size, digests)
        except CacheError:  # e.g. disk full at the index write
            self._unstore([sha])
            raise
        now = time.time()
        return Blob(sha, size, merged, now, now, final)

    def _unstore(self, shas: list[str]) -> None:
        """Take blobs just moved in back out after a failure, unless another process
        indexed the same bytes meanwhile, so nothing is left half-stored (best effort)."""
        with contextlib.suppress(CacheError, OSError):
            for sha in shas:
                if self.index.blob_row(sha) is None:
                    self.tier.remove(sha)

    def add_small_files(self, files: list[tuple[bytes, StoredFile]]) -> list[Blob]:
        """Store many small, verified files held in memory and index them, as a batch.

        Each is written to ``tmp/`` (named as a partial: a killed run's leftovers are
        reaped by the next batch storing the same files, or as any abandoned partial by
        ``prune``) and fsynced; then all are moved in with one
        directory fsync and indexed in one transaction. Same promise as
        :meth:`add_blob`: a blob appears whole and verified, and a failure leaves none
        of this batch indexed and no file of it behind unless another process had
        indexed the same bytes.

        :raises CacheError: the disk is full, the cache cannot be written.
        """
        temps: list[Path] = []
        moving = False
        try:
            fds = []
            try:
                for data, f in files:
                    temp = self.layout.new_partial(f.key)
                    temps.append(temp)
                    # being written: this process's single-file path must not claim it as
                    # an abandoned partial of the same key (and delete it)
                    _ACTIVE.add(str(temp))
                    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    fds.append(fd)
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                for fd in fds:
                    os.fsync(fd)
            finally:
                for fd in fds:
                    os.close(fd)
            failpoint("batch-rename")
            moving = True
            finals = self.tier.put_many(
                [(t, f.sha256) for t, (_, f) in zip(temps, files, strict=True)])
        except OSError as exc:
            # the files moved in before the failure (their temps are gone) go back out too
            moved = [f.sha256 for t, (_, f) in zip(temps, files, strict=True)
                     if not t.exists()] if moving else []
            for temp in temps:
                with contextlib.suppress(OSError):
                    temp.unlink()
            self._unstore(moved)
            raise write_error(exc, self.root) from None
        finally:
            _ACTIVE.difference_update(map(str, temps))
        failpoint("batch-index")
        try:
            merged = self.index.add_files([f for _, f in files])
        except CacheError:
            self._unstore([f.sha256 for _, f in files])
            raise
        # a killed run's batch left these files' partials (no sidecar: nothing to resume)
        # that no claim of the single-file path will reap: they are stored now
        names = {key_hash(f.key) for _, f in files}
        for part in self.layout.all_partials():
            if part.name.partition(".")[0] in names and not partial_owner_alive(part) \
                    and not Layout.sidecar(part).exists():
                with contextlib.suppress(OSError):  # best effort: the batch is stored
                    part.unlink()
        now = time.time()
        return [Blob(f.sha256, f.size, digests, now, now, final)
                for (_, f), digests, final in zip(files, merged, finals, strict=True)]

    def add_digests(self, sha256: str, digests: dict[str, str]) -> None:
        """Record more digests for an existing blob (after a re-hash)."""
        self.index.add_digests(sha256, digests)

    def put_entry(self, key: str, identifier: str, blob: Blob, *, validator: str | None,
                  immutable: bool, verified: bool, anonymous: bool = False) -> Entry:
        """Point ``key`` at ``blob`` (replacing an older target, keeping the pin)."""
        return self.index.put_entry(key, identifier, blob, validator=validator,
                                    immutable=immutable, verified=verified, anonymous=anonymous)

    def touch(self, sha256: str, key: str | None = None, *, checked: bool = False) -> None:
        """Record a use (best effort: a hit on a read-only or full cache is still a hit)."""
        self.index.touch(sha256, key, checked=checked)

    def set_pinned(self, ident: str, pinned: bool) -> list[Entry]:
        """Pin or unpin the entries matching ``ident``; pinned blobs are never evicted."""
        return self.index.set_pinned(ident, pinned)

    def remove(self, ident: str) -> tuple[list[Entry], list[Blob]]:
        """Drop entries matching ``ident``; drop blobs no entry points at any more.

        Given a digest, removes the blob and every entry pointing at it.
        """
        done = self.execute(self.plan_remove(ident))
        return done.entries, done.blobs

    def plan_remove(self, ident: str) -> DeletionPlan:
        """What :meth:`remove` would delete for ``ident`` (nothing is deleted)."""
        entries, blobs = self.lookup(ident)
        shas = {e.sha256 for e in entries} | {b.sha256 for b in blobs}
        by_digest = not any(ident.strip() in (e.key, e.identifier) for e in entries)
        keys = frozenset(e.key for e in entries)
        doomed = {sha for sha in shas if by_digest or set(self.index.keys_of(sha)) <= keys}
        total = self.total_size()
        gone = [b for b in blobs if b.sha256 in doomed]
        return DeletionPlan("remove", entries, gone, total_before=total,
                            total_after=total - sum(b.size for b in gone), keys=keys,
                            by_digest=by_digest)

    def plan_prune(self, max_size: int) -> DeletionPlan:
        """What :meth:`prune` would delete to fit ``max_size`` bytes (nothing is deleted)."""
        partials = self.abandoned_partials(older_than=PARTIAL_MAX_AGE)
        partial_bytes = 0
        for part in partials:
            with contextlib.suppress(OSError):
                partial_bytes += part.stat().st_size
        total = self.total_size()
        unpinned = self.index.blob_rows(unpinned_lru=True)
        pinned_bytes = total - sum(b.size for b in unpinned)
        left, evicted = total, []
        for blob in unpinned:
            if left <= max_size:
                break
            left -= blob.size
            evicted.append(blob)
        doomed = {b.sha256 for b in evicted}
        entries = [e for e in self.entries() if e.sha256 in doomed]
        return DeletionPlan("prune", entries, evicted, partials=partials,
                            stale_sidecars=stale_sidecars(self.layout,
                                                          older_than=PARTIAL_MAX_AGE),
                            partial_bytes=partial_bytes, total_before=total, total_after=left,
                            pinned_bytes=pinned_bytes, by_digest=True)

    def execute(self, plan: DeletionPlan) -> DeletionPlan:
        """Delete what ``plan`` names; return what was deleted.

        Time may pass between planning and executing (a person reading a
        prompt), so each blob is checked once more: a prune keeps a blob pinned
        since, a remove by identifier keeps a blob another entry now uses.
        Files go first: on a full disk that frees the space the index update
        needs; a row left without its file reads as absent, never as a wrong file.
        """
        for part in plan.partials:
            part.unlink(missing_ok=True)
            Layout.sidecar(part).unlink(missing_ok=True)
        for side in plan.stale_sidecars:
            side.unlink(missing_ok=True)
        if (plan.blobs or plan.entries) and self.read_only == "read-only":
            self.index.require_writable()
        blobs = [b for b in plan.blobs if self._still_doomed(plan, b.sha256)]
        self._drop_snapshots([b.sha256 for b in blobs])  # before their links are all that's left
        for blob in blobs:
            self.tier.remove(blob.sha256)
            drop_tree(self.layout, blob.sha256)  # an archive's extracted tree goes with it
        keys = () if plan.action == "prune" else plan.keys
        if keys or blobs:
            self.index.forget(keys, [b.sha256 for b in blobs])
        kept = {b.sha256 for b in plan.blobs} - {b.sha256 for b in blobs}
        entries = [e for e in plan.entries if e.key in keys or e.sha256 not in kept]
        return DeletionPlan(plan.action, entries, blobs, partials=plan.partials,
                            stale_sidecars=plan.stale_sidecars, partial_bytes=plan.partial_bytes,
                            total_before=plan.total_before,
                            total_after=plan.total_before - sum(b.size for b in blobs),
                            pinned_bytes=plan.pinned_bytes, keys=plan.keys,
                            by_digest=plan.by_digest)

    def _still_doomed(self, plan: DeletionPlan, sha256: str) -> bool:
        entries = self.index.lookup(sha256)[0]
        if plan.action == "prune":
            return not any(e.pinned for e in entries)
        return plan.by_digest or {e.key for e in entries} <= plan.keys

    def abandoned_partials(self, older_than: float = 0.0) -> list[Path]:
        """Partial downloads whose process is gone, untouched for ``older_than`` seconds."""
        cutoff = time.time() - older_than
        out = []
        for part in self.layout.all_partials():
            with contextlib.suppress(OSError):
                if part.stat().st_mtime < cutoff and not partial_owner_alive(part):
                    out.append(part)
        return out

    def prune(self, max_size: int) -> list[Blob]:
        """Evict least recently used unpinned blobs until the total is <= ``max_size``.

        Partial downloads abandoned for over a day go too (younger ones are
        kept so that the next resolve can resume them).
        """
        return self.execute(self.plan_prune(max_size)).blobs

    # -- folders (trees) ---------------------------------------------------------

    def tree(self, key: str) -> Entry | None:
        """The index row of a folder's cache key (an :class:`Entry` with ``files``), if any."""
        return self.index.tree(key)

    def snapshot(self, sha256: str) -> Path | None:
        """The complete snapshot of the tree whose manifest is ``sha256``, if there is one."""
        return snapshot_ready(self.layout, sha256)

    def store_manifest(self, data: bytes) -> Blob:
        """Store a manifest as a blob (content-addressed like any file); return it."""
        import hashlib

        sha = hashlib.sha256(data).hexdigest()
        if (blob := self.blob(sha)) is not None:
            return blob
        self.layout.tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        temp = self.layout.new_manifest_tmp(sha)
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise CacheError(f"cannot write a manifest in {self.tmp_dir}: {exc.strerror}",
                             hint="free disk space or point HOSTKIT_CACHE_DIR elsewhere"
                             ) from None
        try:
            return self.add_blob(temp, {CONTENT_ALG: sha}, len(data))
        finally:
            temp.unlink(missing_ok=True)

    def manifest(self, sha256: str) -> list[TreeFile] | None:
        """The files of the stored manifest ``sha256`` (None when it is not stored, or its
        bytes are not a manifest)."""
        blob = self.blob(sha256)
        if blob is None:
            return None
        try:
            data = blob.path.read_bytes()
        except OSError:
            return None
        import hashlib

        if hashlib.sha256(data).hexdigest() != sha256:
            return None
        try:
            return parse_manifest(data)
        except (ValueError, UnicodeDecodeError):
            return None

    def build_snapshot(self, sha256: str, files: list[TreeFile]) -> Path:
        """The snapshot of manifest ``sha256`` (stored) listing ``files`` (stored): built from
        their blobs if it does not exist yet (see :func:`snapshots.build_snapshot`)."""
        return build_snapshot(self.layout, sha256, files, self.tier.path,
                              self.tier.path(sha256))

    def put_tree(self, key: str, identifier: str, sha256: str, files: list[TreeFile], *,
                 immutable: bool, verified: bool, anonymous: bool) -> Entry:
        """Point folder ``key`` at manifest ``sha256`` (and record which blobs it lists)."""
        return self.index.put_tree(key, identifier, sha256, sum(f.size for f in files),
                                   len(files), {f.sha256 for f in files}, immutable=immutable,
                                   verified=verified, anonymous=anonymous)

    def touch_tree(self, sha256: str, key: str | None = None, *, checked: bool = False) -> None:
        """Record a use of a tree and of every blob it lists (best effort)."""
        self.index.touch_tree(sha256, key, checked=checked)

    def _drop_snapshots(self, shas) -> None:
        """Delete the snapshots that link any of the blobs ``shas`` (their manifests and
        index rows stay: the next resolve rebuilds the snapshot, fetching what is missing)."""
        if not self.layout.snapshot_dir.is_dir():
            return
        for manifest in self.index.manifests_with(shas):
            drop_snapshot(self.layout, manifest)

    # -- integrity ---------------------------------------------------------------

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
                for name in list(self.tier.names()):
                    with contextlib.suppress(OSError):
                        if name not in known and \
                                self.tier.path(name).stat().st_ctime < settled:
                            self.adopt_orphan(name)
        return problems

    def adopt_orphan(self, sha256: str) -> Blob | None:
        """Index a blob file that has no row, if its bytes match its name; else delete it.

        A process killed between moving a verified blob into place and writing
        the index leaves such a file: it is whole and verified, so it is kept.
        """
        if (blob := self.blob(sha256)) is not None:
            return blob
        path = self.tier.path(sha256)
        try:
            size = path.stat().st_size
            digests = hash_file(path, (CONTENT_ALG,))
        except OSError:
            return None
        if digests[CONTENT_ALG] != sha256:
            self.tier.remove(sha256)
            return None
        self.index.add_blob_row(sha256, size, digests)
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
        """Move a blob whose bytes no longer match aside and forget it.

        The file is kept under ``quarantine/`` for inspection; entries that
        pointed at it are dropped, so the next resolve downloads them again.

        :raises CacheError: the cache cannot be changed (read-only): the caller
            must then refuse to serve the blob.
        """
        log.warning("quarantining blob %s: %s", sha256[:12], reason)
        try:
            self.tier.quarantine(sha256)
        except OSError as exc:
            raise CacheError(
                f"blob {sha256[:12]} in {self.blob_dir} is corrupt ({reason}) and cannot "
                f"be removed: {exc.strerror or exc}",
                hint=f"the cache at {self.root} is read-only or not yours; delete "
                     f"{self.blob_path(sha256)} or run `hostkit cache verify` where it is "
                     "writable") from None
        drop_tree(self.layout, sha256)  # extracted from bytes no longer trusted
        self._drop_snapshots([sha256])  # they link the rotten file
        self.index.forget((), [sha256])

    def scrub(self, max_bytes: int, pace=None) -> list[tuple[Blob, str]]:
        """Re-hash the next blobs in turn, about ``max_bytes`` of them; quarantine bad ones.

        Called repeatedly (the daemon's background scrub), it walks every blob
        in sha256 order and starts over at the end. ``pace(n)`` is called after
        each read of ``n`` bytes, so a caller can hold the reads under a rate
        however large a blob is. Returns ``(blob, problem)``.
        """
        rows = self.index.blob_rows(after=self._scrub_after, limit=256)
        if not rows:
            self._scrub_after = ""
            return []
        problems, budget = [], max_bytes
        for blob in rows:
            self._scrub_after = blob.sha256
            if (problem := self.check_blob(blob, pace)) is not None:
                problems.append((blob, problem))
                self.quarantine(blob.sha256, problem)
            budget -= max(blob.size, 1)
            if budget <= 0:
                break
        return problems
