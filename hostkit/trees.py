"""Folders (trees): a folder identifier -> a verified, read-only snapshot folder.

A backend's Remote names a folder when its ``tree`` is true (``s3://bucket/prefix/``,
``gs://…/``, ``az://…/``, ``minio://…/``, a Synapse folder, a GitHub directory at a
commit). The resolver hands such a Remote to :func:`resolve_tree`, whose order of
business is the file resolver's, one level up:

1. A given manifest digest whose snapshot is stored (or can be rebuilt from stored
   blobs) answers at once: no network.
2. The folder's index row answers when it is still good: the reference is immutable
   (a commit, a model version), offline mode is on, or revalidation is off.
3. Otherwise the folder is listed (paginated by the backend; hostile names refused,
   caps on files and bytes), and every file goes through the resolver's single-file
   path (:meth:`hostkit.resolver.Resolver.resolve_file`: verified, resumable, single
   flight, content-addressed), ``tree_jobs`` at a time. A file whose listed validator
   and size match its own index entry is not fetched again. The manifest (see
   :mod:`hostkit.store.snapshots`) is built, checked against a given digest, stored
   as a blob; the snapshot is built from the blobs and renamed into place; then the
   folder's row is written. A failure leaves no snapshot and no row: files already
   stored stay stored (the next run does not fetch them again) and a partial file
   resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .backend.errors import retry_delay, retry_limit
from .errors import (
    CacheError,
    HashMismatch,
    NotFound,
    OfflineMiss,
    TransientError,
    UsageError,
)
from .events import DownloadStarted, Hit, Progressed, Waiting
from .hashes import Digest
from .outcomes import note_change
from .remote import Remote, TreeEntry
from .results import Progress, Resolved
from .small_files import SMALL_FILE, SmallFiles
from .store.index import Entry
from .store.snapshots import ListingCheck, TreeFile, UnsafeTree, manifest_bytes

if TYPE_CHECKING:
    from .resolver import Resolver

log = logging.getLogger("hostkit")


@dataclass
class _Fetched:
    file: TreeFile
    fetched: bool
    anonymous: bool


async def resolve_tree(resolver: Resolver, remote: Remote, shown: str, digest: Digest | None,
                       *, offline: bool, progress: Progress | None, looked: float,
                       same: bool = False) -> Resolved:
    """Resolve the folder ``remote`` names (see the module's order of business)."""
    cache = resolver.cache
    settings = resolver.settings
    if digest is not None and digest.alg != "sha256":
        raise UsageError(f"{shown} is a folder: it is pinned by the sha256 of its manifest, "
                         f"not by {digest.alg}", identifier=shown,
                         hint="pass --hash sha256:<hex> as `hostkit resolve --json` printed it "
                              "for the folder (its sha256)")
    record = await _io(cache.tree, remote.cache_key)
    if digest is not None and (held := await _held(resolver, digest.hex)) is not None:
        path, files = held
        if record is None or record.sha256 == digest.hex:
            # the folder's row names the pinned manifest (the fast path answers it next
            # time); best effort: a read-only cache still answers
            with contextlib.suppress(CacheError):
                await _io(cache.put_tree, remote.cache_key, remote.display, digest.hex, files,
                          immutable=remote.immutable or bool(record and record.immutable),
                          verified=True, anonymous=bool(record and record.anonymous))
        return await _hit(resolver, remote, path, digest.hex, files, verified=True)
    if record is not None and (digest is None or record.sha256 == digest.hex) and (
            offline or record.immutable or remote.immutable or not settings.revalidate) \
            and (held := await _held(resolver, record.sha256)) is not None:
        path, files = held
        return await _hit(resolver, remote, path, record.sha256, files,
                          verified=record.verified or digest is not None, key=record.key)
    if offline:
        raise OfflineMiss(f"{remote.display} is not in the cache and offline mode is on",
                          hint="resolve it once while online, or unset HOSTKIT_OFFLINE",
                          identifier=remote.display)
    entries = await _listing(resolver, remote)
    expected: dict[str, str] = {}
    if digest is not None:  # the manifest may be stored while some of its files are not
        expected = {f.path: f.sha256 for f in await _io(cache.manifest, digest.hex) or ()}
    fetched = await _fetch_all(resolver, remote, entries, expected, progress, looked, same)
    files = [f.file for f in fetched]
    data = manifest_bytes(files)
    sha = hashlib.sha256(data).hexdigest()
    if digest is not None and sha != digest.hex:
        raise HashMismatch(remote.display, str(digest), f"sha256:{sha}",
                           hint="the folder holds other files than the manifest you pinned "
                                "(`hostkit resolve --json` without the hash shows what it "
                                "holds now); nothing was placed")
    changed_from = None
    if digest is None and record is not None and record.sha256 != sha:
        changed_from = note_change(resolver.events, remote, record, sha, same)
    await _io(cache.store_manifest, data)
    path = await _io(cache.build_snapshot, sha, files)
    await _io(cache.put_tree, remote.cache_key, remote.display, sha, files,
              immutable=remote.immutable, verified=digest is not None,
              anonymous=remote.anonymous and all(f.anonymous for f in fetched))
    await _io(cache.touch_tree, sha, remote.cache_key, checked=True)  # its files: used now
    downloaded = any(f.fetched for f in fetched)
    if not downloaded:
        resolver.stats["hits"] += 1
        resolver.events.publish(Hit(remote.cache_key, remote.display, sha,
                                    sum(f.size for f in files), revalidated=True))
    if digest is None:
        log.info("%s: no hash given; recorded the manifest sha256:%s (trust on first use)",
                 remote.display, sha)
    return Resolved(path, sha, sum(f.size for f in files), not downloaded, remote.display,
                    digest is not None, {"sha256": sha}, changed_from=changed_from,
                    tree=True, files=len(files))


# -- answers from the cache -------------------------------------------------------------


async def _held(resolver: Resolver, sha256: str) -> tuple[object, list[TreeFile]] | None:
    """The snapshot of manifest ``sha256`` and its files, when the cache holds them: the
    snapshot itself, or every blob it lists (it is rebuilt then). With ``verify_on_hit``
    every file is re-hashed first; a bad one is quarantined (and the snapshot with it)."""
    cache = resolver.cache
    files = await _io(cache.manifest, sha256)
    if not files:
        return None
    path = await _io(cache.snapshot, sha256)
    if path is None:
        if not await _io(_all_stored, cache, files):
            return None
        path = await _io(cache.build_snapshot, sha256, files)
    if resolver.settings.verify_on_hit and not await _io(_intact, cache, files):
        return None
    return path, files


def _all_stored(cache, files: list[TreeFile]) -> bool:
    return all(cache.blob(sha) is not None for sha in {f.sha256 for f in files})


def _intact(cache, files: list[TreeFile]) -> bool:
    """Re-hash every blob the files name; quarantine bad ones (blocking). True if all good."""
    good = True
    for sha in sorted({f.sha256 for f in files}):
        blob = cache.blob(sha)
        problem = cache.check_blob(blob) if blob is not None else "gone"
        if problem is not None:
            good = False
            if blob is not None:
                cache.quarantine(sha, problem)
    return good


async def _hit(resolver: Resolver, remote: Remote, path, sha256: str, files: list[TreeFile],
               *, verified: bool, key: str | None = None) -> Resolved:
    size = sum(f.size for f in files)
    await _io(resolver.cache.touch_tree, sha256, key or remote.cache_key)
    resolver.stats["hits"] += 1
    resolver.events.publish(Hit(remote.cache_key, remote.display, sha256, size))
    return Resolved(path, sha256, size, True, remote.display, verified, {"sha256": sha256},
                    tree=True, files=len(files))


# -- listing ----------------------------------------------------------------------------


async def _listing(resolver: Resolver, remote: Remote) -> list[TreeEntry]:
    """The folder's files, checked (names, caps), retried on transient failures."""
    settings = resolver.settings
    attempt = 0
    while True:
        try:
            return await _list_once(remote, settings.tree_max_files, settings.tree_max_bytes)
        except TransientError as exc:
            attempt += 1
            limit = retry_limit(exc, settings)
            if attempt > limit:
                raise
            delay = retry_delay(exc, attempt, settings)
            log.warning("%s; listing again (%d/%d) in %.1fs", exc.message, attempt, limit,
                        delay)
            await asyncio.sleep(delay)


async def _list_once(remote: Remote, max_files: int, max_bytes: int) -> list[TreeEntry]:
    shown = remote.display
    check = ListingCheck(shown)
    entries: list[TreeEntry] = []
    total = 0
    listing = remote.list()
    try:
        async for entry in listing:
            if isinstance(entry.path, str) and entry.path.endswith("/") and not entry.size:
                continue  # a folder placeholder (a zero-byte "name/" object)
            check.add(entry.path)
            entries.append(entry)
            if len(entries) > max_files:
                raise _too_large(shown, f"more than {max_files} files", "HOSTKIT_TREE_MAX_FILES")
            total += entry.size or 0
            if total > max_bytes:
                raise _too_large(shown, f"more than {max_bytes} bytes", "HOSTKIT_TREE_MAX_BYTES")
    finally:
        await listing.aclose()  # type: ignore[attr-defined]
    check.finish()
    if not entries:
        raise NotFound(f"{shown}: there are no files in this folder",
                       hint="check the prefix (a folder identifier ends with '/'); the "
                            "backend's own listing shows what is there", identifier=shown)
    return entries


def _too_large(shown: str, what: str, variable: str) -> UnsafeTree:
    return UnsafeTree(f"{shown} lists {what}; nothing was fetched past the limit",
                      hint=f"raise {variable} if this folder is meant to be that large, or "
                           "name a smaller folder", identifier=shown)


# -- fetching ---------------------------------------------------------------------------


async def _fetch_all(resolver: Resolver, remote: Remote, entries: list[TreeEntry],
                     expected: dict[str, str], progress: Progress | None, looked: float,
                     same: bool) -> list[_Fetched]:
    """Every file through the single-file path, ``tree_jobs`` at a time (and as many small
    files through :mod:`hostkit.small_files`); the first failure stops the rest (their
    bytes so far stay for a resume)."""
    cache = resolver.cache
    settings = resolver.settings
    # small files take their own slots: a few large downloads do not hold them up
    slots = asyncio.Semaphore(max(1, settings.tree_jobs))
    small_slots = asyncio.Semaphore(max(1, settings.tree_jobs))
    known = await _io(_known_entries, cache, entries, expected)
    total = 0
    stored: list[_Fetched | None] = [None] * len(entries)
    for index, entry in enumerate(entries):
        hit = known[index]
        if hit.stored and hit.entry is not None and \
                _unchanged(entry, hit.entry, expected.get(entry.path)):
            stored[index] = _Fetched(TreeFile(entry.path, hit.entry.size, hit.entry.sha256),
                                     False, hit.entry.anonymous)
    meter = _TreeMeter(resolver, remote, entries, stored, progress)
    fetched_bytes = 0
    # the shared tier works blob by blob: with one, every file takes the single-file path
    small = None if settings.tier else SmallFiles(resolver, looked=looked, same=same)

    async def one(index: int, entry: TreeEntry) -> None:
        nonlocal fetched_bytes
        want = expected.get(entry.path)
        digest = Digest("sha256", want) if want else None
        if small is not None and entry.size is not None and entry.size <= SMALL_FILE \
                and not known[index].wanted_stored:
            async with small_slots:
                resolved = await small.fetch(entry.remote, digest, known[index].entry)
        else:
            async with slots:
                resolved = await resolver.resolve_file(entry.remote, digest, looked=looked,
                                                       same=same)
        fetched_bytes += resolved.size
        if fetched_bytes + total > settings.tree_max_bytes:
            raise _too_large(remote.display, f"more than {settings.tree_max_bytes} bytes",
                             "HOSTKIT_TREE_MAX_BYTES")
        stored[index] = _Fetched(TreeFile(entry.path, resolved.size, resolved.sha256),
                                 not resolved.cached, entry.remote.anonymous)

    total = sum(s.file.size for s in stored if s is not None)
    # largest first: the long downloads start at once and the small ones fill in around them
    todo = sorted(((i, e) for i, e in enumerate(entries) if stored[i] is None),
                  key=lambda item: -(item[1].size or 0))
    try:
        if todo:
            log.info("%s: %d of %d files to fetch", remote.display, len(todo), len(entries))
            try:
                async with asyncio.TaskGroup() as group:
                    for index, entry in todo:
                        group.create_task(one(index, entry))
            except BaseExceptionGroup as group:
                failure = _first(group)
                if small is not None:
                    if isinstance(failure, asyncio.CancelledError):
                        small.abandon()
                    else:  # the small files fetched so far are kept: a rerun does not fetch them
                        with contextlib.suppress(Exception):
                            await small.close()
                raise failure from None
            except BaseException:  # cancelled from outside
                if small is not None:
                    small.abandon()
                raise
            if small is not None:
                await small.close()
    finally:
        meter.close()
    return [s for s in stored if s is not None]


def _first(group: BaseExceptionGroup) -> BaseException:
    """The error to raise for a failed fetch: the first one not caused by another's."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]


@dataclass
class _Known:
    """What the cache knows of a listed file before anything is fetched."""

    #: Its index entry, if any.
    entry: Entry | None
    #: Whether that entry's blob is stored.
    stored: bool
    #: Whether the blob a pinned manifest names for it is stored (a cache answer, then).
    wanted_stored: bool


def _known_entries(cache, entries: list[TreeEntry], expected: dict[str, str]) -> list[_Known]:
    """What the cache knows of each listed file (blocking)."""
    out: list[_Known] = []
    for entry in entries:
        found = cache.entry(entry.remote.cache_key)
        want = expected.get(entry.path)
        out.append(_Known(found, found is not None and cache.blob(found.sha256) is not None,
                          want is not None and cache.blob(want) is not None))
    return out


def _unchanged(entry: TreeEntry, known: Entry, want: str | None) -> bool:
    """Whether the listed file is the one its index entry holds (no request needed)."""
    if want is not None:
        return known.sha256 == want
    if entry.size is not None and entry.size != known.size:
        return False
    if entry.remote.immutable or known.immutable:
        return True
    return entry.validator is not None and entry.validator == known.validator


class _TreeMeter:
    """One progress for a folder: the bytes of all its files, from the files' events."""

    def __init__(self, resolver: Resolver, remote: Remote, entries: list[TreeEntry],
                 stored: list, progress: Progress | None):
        self.progress = progress
        self._done: dict[str, int] = {}
        self._unsubscribe = None
        if progress is None:
            return
        keys = {e.remote.cache_key for i, e in enumerate(entries) if stored[i] is None}
        sizes = [e.size for e in entries]
        total = sum(s for s in sizes if s is not None) if None not in sizes else None
        cached = sum(s.file.size for s in stored if s is not None)
        progress.start(remote.display, total, cached)

        def listen(event) -> None:
            if event.key not in keys:
                return
            if isinstance(event, Progressed | Waiting) and event.done is not None:
                self._advance(event.key, event.done)
            elif isinstance(event, DownloadStarted):
                self._advance(event.key, event.offset)

        self._unsubscribe = resolver.events.subscribe(listen)

    def _advance(self, key: str, done: int) -> None:
        before = self._done.get(key, 0)
        if done > before:
            self._done[key] = done
            assert self.progress is not None
            self.progress.advance(done - before)

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self.progress is not None:
            self.progress.close()


async def _io(fn, /, *args, **kwargs):
    """Blocking store work in a worker thread (as the resolver's ``_io``)."""
    return await asyncio.to_thread(fn, *args, **kwargs)

