"""Sending a whole blob while hashing it, so rotten bytes are never served as verified.

A stored blob is named by its sha256, and a client may trust a complete body
whose ETag is that digest. So a full ``GET /v1/blobs/{sha256}`` is read in
large chunks in a worker thread, hashed as it is read, and sent one chunk
behind: the last chunk goes out only once the digest is known to match. If it
does not, the connection is aborted instead, so the client sees a truncated
body (a failed download), never a wrong complete one, and the caller
quarantines the blob. Ranged requests cannot be checked against the digest
(they carry part of the bytes) and are sent with sendfile; the background
scrub covers them.
"""

from __future__ import annotations

import asyncio
import hashlib

from aiohttp import hdrs, web

#: Bytes read (and hashed) per step in the worker thread.
CHUNK = 4 << 20


def _read(f, h, n: int) -> bytes:
    chunk = f.read(n)
    h.update(chunk)
    return chunk


async def send_verified(request: web.Request, path, digest: str, size: int, headers: dict,
                        *, on_sent, on_corrupt) -> web.StreamResponse:
    """Send the blob at ``path``, ``on_sent(n)`` for every chunk handed to the connection.

    If the bytes do not hash to ``digest``, ``await on_corrupt()`` runs and the
    connection is aborted before the last chunk.
    """
    resp = web.StreamResponse(status=200, headers={
        **headers, hdrs.CONTENT_TYPE: "application/octet-stream",
        hdrs.ACCEPT_RANGES: "bytes", hdrs.CONTENT_LENGTH: str(size)})
    h = hashlib.sha256()
    f = await asyncio.to_thread(open, path, "rb")
    remaining, last = size, b""
    reading: asyncio.Future | None = None
    try:
        await resp.prepare(request)
        while remaining > 0:
            chunk = await (reading or asyncio.to_thread(_read, f, h, min(CHUNK, remaining)))
            reading = None
            if not chunk:  # shorter than the index says
                break
            remaining -= len(chunk)
            if remaining <= 0:
                last = chunk  # held back until the digest is known
                break
            # read and hash the next chunk while this one goes out
            reading = asyncio.ensure_future(
                asyncio.to_thread(_read, f, h, min(CHUNK, remaining)))
            on_sent(len(chunk))  # counted first: the client may hang up as soon as it has them
            await resp.write(chunk)
        ok = remaining == 0 and h.hexdigest() == digest
        if ok:
            on_sent(len(last))
            await resp.write(last)
    finally:
        if reading is not None:  # the client went away mid-read: let the thread finish first
            await asyncio.gather(reading, return_exceptions=True)
        await asyncio.to_thread(f.close)
    if not ok:
        await on_corrupt()
        if request.transport is not None:
            request.transport.abort()  # a truncated body: the client cannot take it for whole
    return resp
