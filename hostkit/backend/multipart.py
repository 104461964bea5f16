"""The multipart uploader: a file streamed up in parts, sha256 hashed in the same pass.

A backend describes where the bytes go as a :class:`MultipartTarget` (one
request for a small file; begin, parts, complete, abort for a large one) and
:func:`send_file` does the rest: reads the file once, hashes while reading,
sends up to ``concurrency`` parts at once (one at a time where the store takes
them strictly in order), aborts the upload on any failure, and notices a file
that changed size while it was read.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path
from typing import Any

from hostkit.errors import SourceChanged

#: Smallest upload part most stores accept (S3: 5 MiB for all but the last part).
MIN_UPLOAD_PART = 5 << 20
#: GCS resumable uploads want parts in multiples of 256 KiB.
PART_ALIGN = 256 << 10


class MultipartTarget:
    """Where one upload goes. A backend subclasses it (or adapts its client to it)."""

    #: False when the store takes the parts strictly in order, one at a time.
    parallel = True

    async def put(self, data: bytes, *, sha256: str) -> str | None:
        """Write a small file in one request; return its new version (None if unversioned)."""
        raise NotImplementedError

    async def begin(self, size: int, *, sha256: str | None) -> Any:
        """Start a multipart upload of ``size`` bytes; return a handle for the parts.

        ``sha256`` is known here only when the file was hashed beforehand.
        """
        raise NotImplementedError

    async def part(self, upload: Any, number: int, offset: int, data: bytes, last: bool) -> Any:
        """Send part ``number`` (from 1) at ``offset``; return what completing needs."""
        raise NotImplementedError

    async def complete(self, upload: Any, parts: list, *, sha256: str) -> str | None:
        """Finish the upload, record ``sha256`` with it; return the new version (or None)."""
        raise NotImplementedError

    async def abort(self, upload: Any) -> None:
        """Drop the parts of an unfinished upload (best effort)."""


def upload_part_size(size: int, wanted: int) -> int:
    """The part size for ``size`` bytes: ``wanted`` or more, within every store's limits."""
    # at most 10,000 parts (S3), each a multiple of 256 KiB (GCS)
    part = max(wanted, MIN_UPLOAD_PART, -(-size // 10_000))
    return -(-part // PART_ALIGN) * PART_ALIGN


def read_hashed(f, n: int, hasher) -> bytes:
    """Up to ``n`` bytes of ``f``, fed to ``hasher`` too (blocking: run it in a thread)."""
    data = f.read(n)
    hasher.update(data)
    return data


async def hash_file(path: Path, algs) -> dict[str, str]:
    """Digests ``{alg: hex}`` of a local file, computed in a worker thread."""
    from hostkit.hashes import hash_file as _hash

    return await asyncio.to_thread(_hash, path, algs)


def _changed(source, how: str) -> SourceChanged:
    return SourceChanged(f"{source} {how} while it was being uploaded",
                         hint="upload it again once nothing writes to it")


async def send_file(target: MultipartTarget, source: Path, size: int, *, part_size: int,
                    concurrency: int, sha256: str | None = None,
                    progress=None) -> tuple[str | None, str]:
    """Stream ``source`` (``size`` bytes) to ``target``; return ``(version, sha256)``.

    A file of at most ``part_size`` bytes goes in one request, a larger one in
    parts of :func:`upload_part_size`. ``progress`` (``advance(n)``) hears of
    every byte sent.

    :raises hostkit.errors.SourceChanged: the file grew or shrank meanwhile.
    """
    hasher = hashlib.sha256()
    with open(source, "rb") as f:
        if size <= part_size:
            data = await asyncio.to_thread(read_hashed, f, size + 1, hasher)
            if len(data) != size:
                raise _changed(source, "changed size")
            version = await target.put(data, sha256=hasher.hexdigest())
            if progress is not None:
                progress.advance(size)
            return version, hasher.hexdigest()
        upload = await target.begin(size, sha256=sha256)
        try:
            parts = await _send_parts(target, upload, f, size, upload_part_size(size, part_size),
                                      concurrency if target.parallel else 1, hasher, progress)
            digest = hasher.hexdigest()
            version = await target.complete(upload, parts, sha256=digest)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(target.abort(upload))
            raise
    return version, digest


async def _send_parts(target: MultipartTarget, upload, f, size: int, part_size: int,
                      limit: int, hasher, progress) -> list:
    running: set[asyncio.Task] = set()
    tasks: list[asyncio.Task] = []

    async def send(number: int, offset: int, data: bytes):
        result = await target.part(upload, number, offset, data, offset + len(data) >= size)
        if progress is not None:
            progress.advance(len(data))
        return result

    try:
        offset, number = 0, 0
        while offset < size:
            data = await asyncio.to_thread(read_hashed, f, min(part_size, size - offset), hasher)
            if not data:
                raise _changed("the file", "got shorter")
            number += 1
            task = asyncio.ensure_future(send(number, offset, data))
            tasks.append(task)
            running.add(task)
            task.add_done_callback(running.discard)
            offset += len(data)
            while len(running) >= limit:
                await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for t in tasks:
                    if t.done() and (failure := t.exception()) is not None:
                        raise failure
        if f.read(1):
            raise _changed("the file", "grew")
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
