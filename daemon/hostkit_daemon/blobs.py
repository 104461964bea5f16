"""Sending blobs so that rotten bytes are never served as verified.

A stored blob is named by its sha256, and a client may trust a body whose ETag
is that digest. So:

- a full ``GET /v1/blobs/{sha256}`` is sent with sendfile (the kernel copies
  from the page cache) while a worker thread hashes the same file in parallel;
  the last :data:`TAIL` bytes go out only once the digest is known to match. If
  it does not, the connection is aborted instead, so the client sees a
  truncated body (a failed download), never a wrong complete one, and the
  caller quarantines the blob. A blob hashed whole within the last
  :data:`FRESH_FOR` seconds, in the very file now open (same stat key, see
  below), is sent with sendfile alone: hashing 1 GiB costs a core for about a
  second, which on a small machine is the difference between serving as fast
  as nginx and serving at two thirds of it. Any write to the file changes its
  key, so only bytes that rot on the medium itself without a write could go
  out unhashed, and only within that window (the scrub re-hashes every blob
  over time);
- a ranged request or a ``HEAD`` (part of the bytes, or none, under the same
  ETag) goes out only for a blob this daemon has hashed whole and found right:
  :class:`VerifiedBlobs` remembers those by ``(sha256, inode, size, mtime_ns,
  ctime_ns)`` (filled by full sends, by these checks and by the background
  scrub), and :func:`verify_blob` hashes the whole blob first, in a thread,
  when it is not remembered. Any write to the file (or its replacement)
  changes the key, so a memo never vouches for bytes changed since.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from aiohttp import web

#: Bytes held back until the digest is known.
TAIL = 1 << 20
#: Bytes read (and hashed) per step in the worker thread.
CHUNK = 4 << 20
#: Verified blobs remembered (oldest forgotten first).
MEMO_ENTRIES = 65536
#: Seconds a whole-blob hash vouches for a full GET of the same, unchanged file.
FRESH_FOR = 600.0


def stat_key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What identifies a file's current bytes short of reading them."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class VerifiedBlobs:
    """Blobs hashed whole and found right, by sha256 and the file's stat key.

    Thread-safe: the scrub adds to it from its worker thread.
    """

    def __init__(self, limit: int = MEMO_ENTRIES, clock=time.monotonic):
        self.limit = limit
        self._clock = clock
        self._ok: dict[str, tuple[tuple, float]] = {}  # sha256 -> (stat key, hashed at)
        self._lock = threading.Lock()
        self._checks: dict[str, asyncio.Future] = {}  # sha256 -> whole-blob check running

    def add(self, sha256: str, st: os.stat_result) -> None:
        """Remember that the file with this stat held exactly the bytes of ``sha256`` now."""
        with self._lock:
            self._ok.pop(sha256, None)
            self._ok[sha256] = (stat_key(st), self._clock())
            while len(self._ok) > self.limit:
                self._ok.pop(next(iter(self._ok)))

    def holds(self, sha256: str, st: os.stat_result) -> bool:
        """True when ``sha256`` was verified in a file with exactly this stat."""
        with self._lock:
            found = self._ok.get(sha256)
            return found is not None and found[0] == stat_key(st)

    def fresh(self, sha256: str, st: os.stat_result, within: float = FRESH_FOR) -> bool:
        """True when ``sha256`` was verified in a file with exactly this stat, at most
        ``within`` seconds ago."""
        with self._lock:
            found = self._ok.get(sha256)
            return found is not None and found[0] == stat_key(st) \
                and self._clock() - found[1] <= within

    def discard(self, sha256: str) -> None:
        """Forget a blob (quarantined or removed)."""
        with self._lock:
            self._ok.pop(sha256, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._ok)


def _hash_file(path, stop: threading.Event | None = None
               ) -> tuple[str | None, os.stat_result, os.stat_result]:
    """(sha256 or None if ``stop`` was set, stat before, stat after) of the file at ``path``."""
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        before = os.fstat(f.fileno())
        while n := f.readinto(buf):
            if stop is not None and stop.is_set():
                return None, before, before
            h.update(view[:n])
        return h.hexdigest(), before, os.fstat(f.fileno())


def _check_whole(path, digest: str, size: int, memo: VerifiedBlobs) -> bool | None:
    """Hash the whole file: True if it holds ``digest``'s bytes (remembered), None if gone."""
    try:
        found, before, after = _hash_file(path)
    except FileNotFoundError:
        return None
    ok = found == digest and before.st_size == size
    if ok and stat_key(before) == stat_key(after):
        memo.add(digest, before)
    return ok


async def verify_blob(path, digest: str, size: int, memo: VerifiedBlobs) -> bool | None:
    """Before a ranged send or a HEAD: True when the blob is known good or hashes right now.

    False: its bytes do not hash to ``digest`` (the caller quarantines it and refuses).
    None: the file is gone. Concurrent checks of one blob share a single hashing pass.
    """
    try:
        st = await asyncio.to_thread(os.stat, path)
    except FileNotFoundError:
        return None
    if st.st_size != size:
        return False
    if memo.holds(digest, st):
        return True
    running = memo._checks.get(digest)
    if running is None:
        running = asyncio.ensure_future(asyncio.to_thread(_check_whole, path, digest, size, memo))
        memo._checks[digest] = running
        running.add_done_callback(lambda _t: memo._checks.pop(digest, None))
    return await asyncio.shield(running)  # one caller hanging up does not stop the others'


async def send_verified(request: web.Request, path, digest: str, size: int, headers: dict,
                        *, on_sent, on_corrupt,
                        memo: VerifiedBlobs | None = None) -> web.StreamResponse:
    """Send the blob at ``path``, ``on_sent(n)`` for every part handed to the connection.

    If the bytes do not hash to ``digest`` (or the file is not ``size`` bytes
    long any more), ``await on_corrupt()`` runs and the connection is aborted
    before the last part. A blob found right is added to ``memo``; one ``memo``
    found right within :data:`FRESH_FOR` seconds, in this very file, is sent
    without hashing it again.
    """
    from aiohttp import hdrs, web  # here: the CLI imports this module (for the scrub's
    # defaults) on every start, and aiohttp.web is needed only by a running daemon

    resp = web.StreamResponse(status=200, headers={
        **headers, hdrs.CONTENT_TYPE: "application/octet-stream",
        hdrs.ACCEPT_RANGES: "bytes", hdrs.CONTENT_LENGTH: str(size)})
    loop = asyncio.get_running_loop()
    f = await asyncio.to_thread(open, path, "rb")
    opened = os.fstat(f.fileno())
    if memo is not None and opened.st_size == size and memo.fresh(digest, opened):
        try:
            await resp.prepare(request)
            if request.transport is not None:
                on_sent(size)
                await loop.sendfile(request.transport, f, 0, size)
                await resp.write_eof()
        finally:
            await asyncio.to_thread(f.close)
        return resp
    stop = threading.Event()
    hashing = asyncio.ensure_future(asyncio.to_thread(_hash_file, path, stop))
    ok = False
    try:
        await resp.prepare(request)
        transport = request.transport
        head = max(size - TAIL, 0)
        if head and transport is not None:  # prepare() sent the headers already
            await loop.sendfile(transport, f, 0, head)
            on_sent(head)
        found, before, after = await asyncio.shield(hashing)
        sent = os.fstat(f.fileno())
        ok = found == digest and sent.st_size == size
        if ok and memo is not None and stat_key(before) == stat_key(after) == stat_key(sent):
            memo.add(digest, sent)  # hashed whole, and the file we send is that file
        if ok and transport is not None:
            on_sent(size - head)
            await loop.sendfile(transport, f, head, size - head)
            await resp.write_eof()
    finally:
        stop.set()
        await asyncio.gather(hashing, return_exceptions=True)  # no thread outlives the file
        await asyncio.to_thread(f.close)
    if not ok:
        await on_corrupt()
        if request.transport is not None:
            request.transport.abort()  # a truncated body: the client cannot take it for whole
    return resp
