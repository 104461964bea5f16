"""A folder's small files: fetched whole into memory, stored in batches.

A folder of a thousand 64 KiB files spends its time per file, not per byte: the
single-file path gives each one a lock file, a resume sidecar, a partial file
with its own writer and hasher threads, two fsyncs and two index transactions.
For a listed file whose size is known and at most :data:`SMALL_FILE`,
:mod:`hostkit.trees` uses this path instead:

- the same download loop (:meth:`hostkit.resolver.Resolver.transfer`: retries with
  backoff, stalls, truncation, If-Range resumes within the run), received into
  memory and hashed as it arrives (:class:`MemoryPart`);
- the same checks: the server's advertised digests (an S3 ETag's md5), a pinned
  sha256 from the folder's manifest, strict trust on first use;
- stored with the others in batches (:meth:`hostkit.store.cache.Cache.add_small_files`):
  every file written and fsynced, all moved in with one directory fsync, indexed in
  one transaction. A blob appears whole and verified, as on the single-file path.

What it leaves out, on purpose: a small file is never resumed across runs. A killed
run fetches again what it held in memory, not yet stored: the files of the last
:data:`BATCH_SECONDS`, at most :data:`HELD_BYTES` (the disk slower than the
network), and a batch killed between its move into place and its index transaction
(its blobs are found and indexed then, with no second copy). Two processes fetching
the same folder at the same moment may both fetch a small file (it is stored once).
A download of the same file already running in this process is joined, and a file
that turns out larger than :data:`SMALL_FILE` (a Git LFS pointer listed by its
pointer's size) goes through the single-file path.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .events import Finished
from .hashes import Digest, MultiHasher
from .outcomes import check_digests, failed_event, note_change
from .results import Resolved
from .store.index import Entry, StoredFile

if TYPE_CHECKING:
    from .remote import Remote
    from .resolver import Resolver

#: Files of at most this many bytes (by the listing) take the small-file path.
SMALL_FILE = 1 << 20
#: A batch is stored once it holds this many bytes or :data:`BATCH_FILES` files.
BATCH_BYTES = 4 << 20
BATCH_FILES = 64
#: ... or once its first file has waited this many seconds (what a killed run can lose).
BATCH_SECONDS = 0.5
#: Fetching waits for the disk while this many bytes are held in memory.
HELD_BYTES = 8 * BATCH_BYTES


class _TooLarge(Exception):
    """The file is larger than the listing said: it takes the single-file path instead."""


class MemoryPart:
    """A small file received into memory, hashed as it arrives.

    The part the download loop (:meth:`hostkit.resolver.Resolver.transfer`) writes
    into, as it writes into a :class:`~hostkit.store.partials.PartialDownload`; it
    refuses more than ``limit`` bytes (:class:`_TooLarge`).
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.size = 0
        self.meta: dict = {}
        self._chunks: list[bytes] = []
        self._hasher = MultiHasher()
        self._algs: tuple[str, ...] = ()

    @property
    def validator(self) -> str | None:
        """The validator the bytes so far came under (a resume within the run uses it)."""
        return self.meta.get("validator")

    @property
    def downloaded(self) -> int:
        """Bytes received (all of them: a small file never resumes across runs)."""
        return self.size

    def forget_validator(self) -> None:
        """The bytes so far cannot be resumed: the next request starts from byte 0."""
        self.meta = {**self.meta, "validator": None}

    async def start(self, algs, offset: int) -> None:
        """Begin receiving (``offset`` is 0: nothing is kept across runs)."""
        self._algs = tuple(algs)
        await self.restart()

    async def restart(self) -> None:
        """Drop the bytes so far."""
        self._chunks = []
        self.size = 0
        self._hasher = MultiHasher(self._algs)

    async def record_source(self, *, validator: str | None, total: int | None, **_) -> None:
        """Note what the server said of the object; too large for memory: :class:`_TooLarge`."""
        if total is not None and total > self.limit:
            raise _TooLarge
        self.meta = {"validator": validator, "size": total}

    async def write(self, chunk: bytes) -> None:
        """Keep and hash ``chunk``."""
        self.size += len(chunk)
        if self.size > self.limit:
            raise _TooLarge
        self._hasher.update(chunk)
        self._chunks.append(chunk)

    async def finish(self) -> dict[str, str]:
        """The digests of every byte received."""
        return self._hasher.hexdigests()

    def data(self) -> bytes:
        """The bytes received."""
        return b"".join(self._chunks)


class SmallFiles:
    """The small files of one folder resolve, fetched into memory and stored in batches.

    :meth:`fetch` each file, then :meth:`close` once all are fetched (or :meth:`abandon`
    on a cancel): a fetched file is stored, and its blob path valid, only after the
    batch that takes it is stored. Batches are stored in a worker thread, one at a
    time, while the next one is fetched; fetching waits only when
    :data:`HELD_BYTES` are held in memory.
    """

    def __init__(self, resolver: Resolver, *, looked: float, same: bool):
        self.resolver = resolver
        self.looked = looked
        self.same = same
        self._pending: list[tuple[bytes, StoredFile, Remote]] = []
        self._bytes = 0  # held: pending, and in the batch being stored
        self._storing: asyncio.Task | None = None
        self._failed: BaseException | None = None
        self._timer: asyncio.Task | None = None
        self._writable = False  # the cache was found writable (checked once, first fetch)

    async def fetch(self, remote: Remote, digest: Digest | None, old: Entry | None) -> Resolved:
        """Fetch and verify one small file; it is stored with its batch.

        ``old`` is the file's index entry, if any (trust on first use compares with it).
        """
        resolver = self.resolver
        if resolver.download_for(remote.cache_key) is not None:  # join it
            return await resolver.resolve_file(remote, digest, looked=self.looked,
                                               same=self.same)
        if not self._writable:  # as the single-file path: refused before any byte is fetched
            await asyncio.to_thread(resolver.cache.require_writable)
            self._writable = True
        part = MemoryPart(SMALL_FILE)
        try:
            info, digests = await resolver.transfer(remote, digest, part)
            check_digests(remote, info, digests, digest)
            sha = digests["sha256"]
            if digest is None and old is not None and old.sha256 != sha:
                note_change(resolver.events, remote, old, sha, self.same)
        except _TooLarge:
            return await resolver.resolve_file(remote, digest, looked=self.looked,
                                               same=self.same)
        except BaseException as exc:
            resolver.events.publish(failed_event(remote, exc))
            raise
        resolver.stats["misses"] += 1
        resolver.stats["downloads"] += 1
        data = part.data()
        self._pending.append((data, StoredFile(
            remote.cache_key, remote.display, sha, len(data), digests, info.validator,
            remote.immutable or info.immutable, digest is not None, remote.anonymous), remote))
        self._bytes += len(data)
        if self._bytes >= BATCH_BYTES or len(self._pending) >= BATCH_FILES:
            self._store_soon()
        elif self._timer is None or self._timer.done():
            self._timer = asyncio.get_running_loop().create_task(self._store_later())
        while self._bytes >= HELD_BYTES and self._storing is not None:
            await asyncio.shield(self._storing)  # memory stays flat: wait for the disk
        if self._failed is not None:
            raise self._failed
        return Resolved(resolver.cache.blob_path(sha), sha, len(data), False, remote.display,
                        digest is not None, digests)

    def _store_soon(self) -> None:
        """Start storing what is pending, unless a batch is being stored (it goes on)."""
        if self._storing is None:
            self._storing = asyncio.get_running_loop().create_task(self._store_all())

    async def _store_later(self) -> None:
        await asyncio.sleep(BATCH_SECONDS)
        self._store_soon()

    async def _store_all(self) -> None:
        """Store batch after batch until nothing is pending; keep the first failure."""
        try:
            while self._pending and self._failed is None:
                batch, self._pending = self._pending, []
                try:
                    await asyncio.to_thread(self.resolver.cache.add_small_files,
                                            [(data, stored) for data, stored, _ in batch])
                except Exception as exc:
                    self._failed = exc
                    return
                finally:
                    self._bytes -= sum(len(data) for data, _, _ in batch)
                for _, stored, remote in batch:
                    self.resolver.events.publish(Finished(
                        remote.cache_key, remote.display, stored.sha256, stored.size,
                        stored.size))
        finally:
            self._storing = None

    async def close(self) -> None:
        """Store every file fetched so far; the batch timer stops.

        :raises CacheError: a batch could not be stored.
        """
        if self._timer is not None:
            self._timer.cancel()
        self._store_soon()  # (a batch being stored goes on to store what is pending)
        while self._storing is not None:
            await self._storing
        if self._failed is not None:
            raise self._failed

    def abandon(self) -> None:
        """Stop the batch timer without storing (the resolve was cancelled); a batch being
        stored in a worker thread is stored all the same."""
        if self._timer is not None:
            self._timer.cancel()
