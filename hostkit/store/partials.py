"""Partial downloads: a temp file in the cache that hashes every byte as it is written.

Hashing and writing run in two threads per download (hashlib and writev
release the GIL), fed the same ~1 MiB batches through a short window, so the
event loop keeps receiving while the bytes are hashed and written: download
and verification overlap and memory stays flat whatever the file size.

Partials are named ``tmp/<keyhash>.<pid>-<random>.part`` with a ``.json``
sidecar (cache key, validator, size) so a later process can resume them. A
partial is claimed by renaming it, which is atomic: two processes can never
append to the same file, with or without the advisory lock.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import functools
import json
import os
import secrets
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import CacheError
from ..failpoints import failpoint
from ..hashes import CHUNK, MultiHasher
from .layout import Layout, pid_alive

_BATCH_BYTES = CHUNK
_WINDOW = 4
_WRITEBACK_EVERY = 16 << 20
_ACTIVE: set[str] = set()  # partials this process is writing right now


def partial_owner_alive(part: Path) -> bool:
    """Whether the process that named this partial is running (or it is ours and active)."""
    owner = Layout.partial_owner(part)
    if owner is None:
        return False
    if owner == os.getpid():
        return str(part) in _ACTIVE
    return pid_alive(owner)


def _write_sidecar(path: Path, meta: dict) -> None:
    """Write a resume sidecar atomically (a kill mid-write never leaves half a sidecar)."""
    temp = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(meta))
        os.replace(temp, path)
    except OSError:
        temp.unlink(missing_ok=True)
        raise


def _read_sidecar(path: Path) -> dict | None:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def claim_partial(layout: Layout, key: str) -> tuple[Path, dict] | None:
    """Take over the largest abandoned partial download of ``key``, if any.

    Abandoned means its owner process is gone (killed, crashed) or it is ours
    and idle. Returns the renamed path and its sidecar, or None. The sidecar
    moves with the partial (written under the new name before the rename), so
    a claimed partial stays resumable however often its download is cut.
    """
    candidates = []
    for part in layout.partials_of(key):
        try:
            candidates.append((part.stat().st_size, part))
        except OSError:
            continue
    for _, part in sorted(candidates, reverse=True):
        if partial_owner_alive(part):
            continue
        meta = _read_sidecar(Layout.sidecar(part))
        mine = layout.new_partial(key)
        if not meta or meta.get("key") != key:
            with contextlib.suppress(OSError):
                os.rename(part, mine)  # claimed only to delete it: nobody else may use it
                mine.unlink()
                Layout.sidecar(part).unlink(missing_ok=True)
            continue
        try:
            _write_sidecar(Layout.sidecar(mine), meta)
        except OSError:
            return None  # cannot even write a sidecar (full, read-only): leave it be
        try:
            os.rename(part, mine)
        except OSError:
            Layout.sidecar(mine).unlink(missing_ok=True)
            continue  # somebody else claimed it first
        Layout.sidecar(part).unlink(missing_ok=True)
        return mine, meta
    return None


def finished_blob(layout: Layout, key: str, entry_checked: float | None) -> dict | None:
    """The sidecar of a download of ``key`` that was killed after its blob was moved in place.

    Such a run stored a whole, verified blob but not (all of) its index rows.
    Returns the sidecar (``blob`` is the sha256) and deletes it, or None. A
    sidecar older than the key's index entry was left by a run killed after
    writing the entry: it is stale and only deleted.
    """
    for side in layout.sidecars_of(key):
        if Layout.partial_of(side).exists():
            continue
        meta = _read_sidecar(side)
        try:
            written = side.stat().st_mtime
        except OSError:
            continue
        if not meta or meta.get("key") != key or not meta.get("blob"):
            continue
        if partial_owner_alive(Layout.partial_of(side)):
            continue  # its process is storing it right now
        side.unlink(missing_ok=True)
        if entry_checked is None or entry_checked < written:
            return meta
    return None


def partial_progress(layout: Layout, key: str) -> tuple[int | None, int | None]:
    """``(bytes on disk, total)`` of the partial another live process is writing for ``key``."""
    for part in layout.partials_of(key):
        if not partial_owner_alive(part) or str(part) in _ACTIVE:
            continue
        try:
            done = part.stat().st_size
        except OSError:
            continue
        meta = _read_sidecar(Layout.sidecar(part)) or {}
        total = meta.get("size")
        return done, total if isinstance(total, int) else None
    return None, None


def stale_sidecars(layout: Layout, older_than: float) -> list[Path]:
    """Sidecars whose partial is gone, untouched for ``older_than`` seconds (for prune)."""
    import time

    cutoff = time.time() - older_than
    out = []
    for side in layout.all_sidecars():
        with contextlib.suppress(OSError):
            if not Layout.partial_of(side).exists() and side.stat().st_mtime < cutoff:
                out.append(side)
    return out


class PartialDownload:
    """A partial file being written, hashed in the same pass.

    Use ``await start(algs, offset)``, then ``await write(chunk)`` repeatedly, then
    ``await finish()`` for the digests, or ``discard()`` / ``keep()`` on failure.
    """

    def __init__(self, layout: Layout, key: str, *, claimed: tuple[Path, dict] | None = None):
        self.layout = layout
        self.key = key
        self.algs: tuple[str, ...] = ()
        self.path, self.meta = claimed if claimed else (layout.new_partial(key), {})
        self.size = self.path.stat().st_size if claimed else 0
        self._resumed_from = self.size
        self._hasher = MultiHasher()
        # one thread hashes while another writes: both overlap the download
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hostkit-writer")
        self._hash_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hostkit-hash")
        self._pending: collections.deque = collections.deque()
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._fd = -1
        self._written = self._flushed = 0  # bytes written this session / handed to writeback

    @property
    def validator(self) -> str | None:
        """The validator the bytes on disk were fetched under (for resume)."""
        return self.meta.get("validator")

    @property
    def downloaded(self) -> int:
        """Bytes written in this run (not counting what an earlier run left)."""
        return max(self.size - self._resumed_from, 0)

    @property
    def complete(self) -> bool:
        """Whether every byte of the object is on disk (a run was killed after the last one)."""
        total = self.meta.get("size")
        return isinstance(total, int) and total > 0 and self.size == total

    def forget_validator(self) -> None:
        """The bytes on disk can no longer be resumed: the next open starts from byte 0."""
        self.meta = {**self.meta, "validator": None}

    async def start(self, algs, offset: int) -> None:
        """Open the file, keeping its first ``offset`` bytes (hashed again), dropping the rest."""
        self.algs = tuple(algs)
        self._hasher = MultiHasher(self.algs)
        _ACTIVE.add(str(self.path))
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError as exc:
            raise write_error(exc, self.layout.root) from None
        self.size = min(offset, self.size)
        await self._run(self._rehash_prefix)
        self._resumed_from = self.size

    def _rehash_prefix(self) -> None:
        self.size = self._hasher.update_from_file(self.path, limit=self.size)
        os.ftruncate(self._fd, self.size)
        os.lseek(self._fd, self.size, os.SEEK_SET)
        self._written = self._flushed = self.size

    def record(self, *, validator: str | None, total: int | None, identifier: str,
               digests: dict[str, str] | None = None, anonymous: bool = False) -> None:
        """Write the sidecar that lets a later process resume this partial.

        ``anonymous`` says the bytes came with no credential: a later anonymous
        request may adopt them as anonymous only if they did.
        """
        self.meta = {"key": self.key, "validator": validator, "size": total,
                     "identifier": identifier, "digests": digests or {},
                     "anonymous": anonymous}
        with contextlib.suppress(OSError):
            _write_sidecar(Layout.sidecar(self.path), self.meta)

    async def record_source(self, **meta) -> None:
        """:meth:`record` in the writer thread (the download loop calls this)."""
        await self._run(functools.partial(self.record, **meta))

    def mark_stored(self, sha256: str, immutable: bool) -> None:
        """Note in the sidecar that the blob is about to be moved in place.

        A run killed between that move and the index write leaves this note,
        and the next run adopts the blob instead of downloading it again.
        """
        self.meta = {**self.meta, "blob": sha256, "immutable": immutable}
        with contextlib.suppress(OSError):
            _write_sidecar(Layout.sidecar(self.path), self.meta)

    async def restart(self) -> None:
        """Drop the bytes so far (the object changed, or the server ignored Range)."""
        await self._drain()
        await self._run(os.ftruncate, self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self.size = self._written = self._flushed = self._resumed_from = 0
        self._hasher = MultiHasher(self.algs)

    async def write(self, chunk: bytes) -> None:
        """Queue a chunk; applies back-pressure when the writer falls behind."""
        self._batch.append(chunk)
        self._batch_bytes += len(chunk)
        self.size += len(chunk)
        if self._batch_bytes >= _BATCH_BYTES:
            await self._submit()

    async def _submit(self) -> None:
        if self._batch:
            batch = self._batch
            loop = asyncio.get_running_loop()
            writing = loop.run_in_executor(self._pool, self._write_batch, batch)
            self._batch, self._batch_bytes = [], 0  # handed over: the writer has it now
            self._pending.append(asyncio.gather(
                writing, loop.run_in_executor(self._hash_pool, self._hash_batch, batch)))
        while len(self._pending) >= _WINDOW:
            await self._pending.popleft()

    async def _drain(self) -> None:
        await self._submit()
        while self._pending:
            await self._pending.popleft()

    def _hash_batch(self, batch: list[bytes]) -> None:
        for chunk in batch:
            self._hasher.update(chunk)

    def _write_batch(self, batch: list[bytes]) -> None:
        try:
            written = os.writev(self._fd, batch)
            total = sum(map(len, batch))
            if written < total:  # short write: finish it plainly
                rest = b"".join(batch)[written:]
                while rest:
                    rest = rest[os.write(self._fd, rest):]
        except OSError as exc:
            raise write_error(exc, self.layout.root) from None
        self._written += total
        if self._written - self._flushed >= _WRITEBACK_EVERY:
            # start writing back to disk now so the final fsync has little left to wait for
            _start_writeback(self._fd, self._flushed, self._written - self._flushed)
            self._flushed = self._written

    async def finish(self) -> dict[str, str]:
        """Flush, fsync and close; return the digests of everything written."""
        await self._drain()
        failpoint("fsync")
        await self._run(os.fsync, self._fd)
        self._close()
        return self._hasher.hexdigests()

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _close(self) -> None:
        while self._pending:  # after a failed write the rest are not awaited: retrieve them
            self._pending.popleft().add_done_callback(
                lambda f: f.cancelled() or f.exception())
        for pool in (self._pool, self._hash_pool):
            pool.shutdown(wait=True)  # no thread may outlive the fd
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        _ACTIVE.discard(str(self.path))

    async def keep(self) -> None:
        """Stop writing but leave the partial and sidecar for a later resume."""
        with contextlib.suppress(Exception):
            await self._drain()
        if self._batch and self._fd >= 0:
            # no thread may start any more (the interpreter is exiting): write the rest here;
            # it is not hashed, and need not be: a resume hashes the bytes on disk again
            with contextlib.suppress(OSError):
                self._pool.shutdown(wait=True)
                os.writev(self._fd, self._batch)
            self._batch = []
        self._close()

    def discard(self) -> None:
        """Delete the partial and its sidecar."""
        self._close()
        self.path.unlink(missing_ok=True)
        Layout.sidecar(self.path).unlink(missing_ok=True)

    def stored(self) -> None:
        """The blob and its index rows are in place: drop the sidecar (the partial moved)."""
        self._close()
        Layout.sidecar(self.path).unlink(missing_ok=True)


def _writeback_function():
    """Linux ``sync_file_range`` (as RocksDB's bytes_per_sync uses it), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.sync_file_range
        fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
        return fn
    except (OSError, AttributeError):
        return None


_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range = _writeback_function()


def _start_writeback(fd: int, offset: int, nbytes: int) -> None:
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)


def write_error(exc: OSError, root: Path) -> CacheError:
    """The CacheError for a failed write under the cache at ``root`` (disk full, or why)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return CacheError(f"disk full while writing to the cache at {root}",
                          hint="free space, run `hostkit cache prune --max-size SIZE`, "
                               "or set HOSTKIT_CACHE_DIR to a bigger disk; nothing was cached")
    return CacheError(f"cannot write to the cache at {root}: {exc.strerror or exc}",
                      hint="check permissions or set HOSTKIT_CACHE_DIR")
