"""Sending a whole blob while hashing it, so rotten bytes are never served as verified.

A stored blob is named by its sha256, and a client may trust a complete body
whose ETag is that digest. So a full ``GET /v1/blobs/{sha256}`` is sent with
sendfile (the kernel copies from the page cache) while a worker thread hashes
the same file in parallel; the last :data:`TAIL` bytes go out only once the
digest is known to match. If it does not, the connection is aborted instead,
so the client sees a truncated body (a failed download), never a wrong
complete one, and the caller quarantines the blob. Ranged requests cannot be
checked against the digest (they carry part of the bytes) and are sent with
sendfile; the background scrub covers them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading

from aiohttp import hdrs, web

#: Bytes held back until the digest is known.
TAIL = 1 << 20
#: Bytes read (and hashed) per step in the worker thread.
CHUNK = 4 << 20


def _hash_file(path, stop: threading.Event) -> str | None:
    """sha256 of the file, read into one reused buffer; None if ``stop`` was set."""
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            if stop.is_set():
                return None
            h.update(view[:n])
    return h.hexdigest()


async def send_verified(request: web.Request, path, digest: str, size: int, headers: dict,
                        *, on_sent, on_corrupt) -> web.StreamResponse:
    """Send the blob at ``path``, ``on_sent(n)`` for every part handed to the connection.

    If the bytes do not hash to ``digest`` (or the file is not ``size`` bytes
    long any more), ``await on_corrupt()`` runs and the connection is aborted
    before the last part.
    """
    resp = web.StreamResponse(status=200, headers={
        **headers, hdrs.CONTENT_TYPE: "application/octet-stream",
        hdrs.ACCEPT_RANGES: "bytes", hdrs.CONTENT_LENGTH: str(size)})
    loop = asyncio.get_running_loop()
    stop = threading.Event()
    hashing = asyncio.ensure_future(asyncio.to_thread(_hash_file, path, stop))
    f = await asyncio.to_thread(open, path, "rb")
    ok = False
    try:
        await resp.prepare(request)
        transport = request.transport
        head = max(size - TAIL, 0)
        if head and transport is not None:  # prepare() sent the headers already
            await loop.sendfile(transport, f, 0, head)
            on_sent(head)
        found = await asyncio.shield(hashing)
        ok = found == digest and os.fstat(f.fileno()).st_size == size
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
