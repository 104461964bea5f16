"""The parallel ordered parts reader: one stream of bytes from ranged parts fetched at once.

A backend that can read any byte range of an object (object stores, any
server honouring ``Range``) hands :func:`ordered_parts` a ``fetch(a, b)``
and gets back the object's bytes in order, so the resolver still hashes and
writes one stream. Parts waiting for their turn read ahead at most
:data:`READ_AHEAD` bytes together, then TCP flow control holds the server
back: memory stays flat (a few MiB) whatever the part size and concurrency. A resumed
download starts at the resolver's offset, so an interrupted transfer keeps
every byte before the first part that failed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from hostkit.errors import TruncatedBody

#: Largest chunk handed to the resolver at once.
CHUNK = 1 << 20
#: Bytes the parts waiting for their turn may hold in memory, all together. Past that
#: each leaves what arrives in its socket's kernel buffer (which grows to a few MiB on a
#: fast or distant link, and costs the process nothing), then TCP holds the server back.
#: Holding whole parts here (56 MiB) cost 48 MiB of peak memory with the defaults (4 parts
#: of 16 MiB) and no speed on loopback, where the parts are served faster than hashed.
READ_AHEAD = 4 << 20


def part_settings(settings) -> tuple[int, int]:
    """``(part_size, concurrency)`` from the core settings, each at least workable."""
    return max(int(settings.part_size), 64 << 10), max(int(settings.concurrency), 1)


async def ordered_parts(fetch: Callable[[int, int], AsyncIterator[bytes]], start: int, end: int,
                        part_size: int, concurrency: int,
                        read_ahead: int | None = None) -> AsyncIterator[bytes]:
    """Yield bytes ``[start, end)`` in order, fetching up to ``concurrency`` ranges at once.

    ``fetch(a, b)`` iterates over bytes ``[a, b)``. The oldest part streams
    straight through; the others read ahead until their turn, together at most
    ``read_ahead`` bytes: past that a part stops reading, and TCP flow control
    holds the server back (aiohttp drops the read timeout while it is paused).
    So memory stays flat whatever the part size, and parts can be large, which
    spares the server a request per few MiB. A failed part raises only once
    every byte before it was yielded, so the caller keeps the longest prefix and
    resumes from there.
    """
    if start >= end:
        return
    if end - start <= part_size or concurrency <= 1:
        async with contextlib.aclosing(_exact(fetch, start, end)) as chunks:
            async for chunk in chunks:
                yield chunk
        return
    bounds = iter([(a, min(a + part_size, end)) for a in range(start, end, part_size)])
    window: collections.deque[_Part] = collections.deque()
    read_ahead = READ_AHEAD if read_ahead is None else read_ahead
    cap = max(read_ahead // (concurrency - 1), CHUNK)

    def launch() -> None:
        nxt = next(bounds, None)
        if nxt is not None:
            window.append(_Part(fetch, *nxt, cap))

    for _ in range(concurrency):
        launch()
    try:
        while window:
            async for chunk in window[0].drain():
                yield chunk
            window.popleft()
            launch()
    finally:
        for part in window:
            part.task.cancel()
        await asyncio.gather(*(part.task for part in window), return_exceptions=True)


async def _exact(fetch, a: int, b: int) -> AsyncGenerator[bytes, None]:
    """``fetch(a, b)``, raising TruncatedBody unless it gave exactly ``b - a`` bytes."""
    got = 0
    async with contextlib.aclosing(fetch(a, b)) as chunks:
        async for chunk in chunks:
            got += len(chunk)
            if got > b - a:
                raise TruncatedBody(f"asked for {b - a} bytes at {a}, got more",
                                    hint="the server ignored the range; try again")
            yield chunk
    if got != b - a:
        raise TruncatedBody(f"the body ended after {got} of {b - a} bytes at offset {a}",
                            hint="the connection dropped; run again to resume")


class _Part:
    """One range fetched in the background; its chunks queue (up to ``cap`` bytes) until drained."""

    def __init__(self, fetch, a: int, b: int, cap: int):
        self.chunks: collections.deque[bytes] = collections.deque()
        self.done = False
        self.error: BaseException | None = None
        self._queued = 0
        self._cap = cap
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self.task = asyncio.ensure_future(self._run(fetch, a, b))

    async def _run(self, fetch, a: int, b: int) -> None:
        try:
            async with contextlib.aclosing(_exact(fetch, a, b)) as chunks:
                async for chunk in chunks:
                    self.chunks.append(chunk)
                    self._queued += len(chunk)
                    self._wake.set()
                    if self._queued >= self._cap:  # full: stop reading until drained
                        self._room.clear()
                        await self._room.wait()
        except Exception as exc:
            self.error = exc
        finally:
            self.done = True
            self._wake.set()

    async def drain(self) -> AsyncIterator[bytes]:
        """The part's bytes in order as they arrive; its error once they are all out."""
        while True:
            while self.chunks:
                chunk = self.chunks.popleft()
                self._queued -= len(chunk)
                if self._queued < self._cap:
                    self._room.set()
                yield chunk
            if self.done:
                if self.chunks:
                    continue
                if self.error is not None:
                    raise self.error
                return
            self._wake.clear()
            await self._wake.wait()
