"""Background scrub: re-hash the cache's blobs over time; quarantine any whose bytes changed.

Answers never re-hash a stored blob (that is what makes hits cheap), so bit rot
would go unnoticed until ``hostkit cache verify``. The daemon walks every blob
in turn instead (in sha256 order, one pass after another with a pause of
:data:`PASS_PAUSE` seconds between passes), hashing in a worker thread (never on
the event loop). Reads are held to ``rate`` bytes per second by a token bucket
(:class:`Pace`) that sleeps in that thread after every read, so a blob of any
size is read at the rate, not at disk speed. A blob that fails is moved to
``quarantine/`` and its entries are dropped, so the next resolve downloads it
again; one that passes is remembered as verified (``/v1/blobs`` ranged sends
rely on that memo). On shutdown :meth:`Scrubber.stop` makes the pacing raise at
once, so the worker thread returns within one read.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

from . import logs
from .blobs import VerifiedBlobs, stat_key

#: Seconds between two passes over the cache (and after an error).
PASS_PAUSE = 5.0
#: Bytes charged per blob on top of its size (opening and stat-ing files costs too).
PER_BLOB = 4096


class ScrubStopped(Exception):
    """Raised inside the worker thread once the scrub is told to stop."""


class Pace:
    """Token bucket: ``pace(n)`` after reading ``n`` bytes sleeps so reads average ``rate``/s.

    Called from the hashing thread. At most one second's worth of reads is
    saved up while idle. Raises :class:`ScrubStopped` at once when ``stop`` is
    set, including in the middle of a sleep.
    """

    def __init__(self, rate: int, stop: threading.Event):
        self.rate = float(max(1, rate))
        self.stop = stop
        self.tokens = 0.0
        self.last = time.monotonic()
        self.consumed = 0

    def __call__(self, n: int) -> None:
        """Account for ``n`` bytes just read; sleep off any debt."""
        if self.stop.is_set():
            raise ScrubStopped
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate) - n
        self.last = now
        self.consumed += n
        if self.tokens < 0 and self.stop.wait(-self.tokens / self.rate):
            raise ScrubStopped


class Scrubber:
    """The daemon's background scrub of ``cache`` at ``rate`` bytes/s.

    ``on_problem(sha256, reason)`` runs on the event loop for each blob quarantined.
    """

    def __init__(self, cache, rate: int, memo: VerifiedBlobs, on_problem):
        self.cache = cache
        self.memo = memo
        self.on_problem = on_problem
        self._stop = threading.Event()
        self.pace = Pace(rate, self._stop)
        self._todo: list[str] = []  # sha256s left in this pass, last one next

    @property
    def bytes_read(self) -> int:
        """Bytes charged to the rate so far (blob bytes read plus a little per blob)."""
        return self.pace.consumed

    def stop(self) -> None:
        """Stop soon: the worker thread returns within one read, the task right after."""
        self._stop.set()

    async def run(self) -> None:
        """Walk the cache, pass after pass, until :meth:`stop` (or cancellation)."""
        first = True
        while not self._stop.is_set():
            try:
                if not self._todo:
                    if not first:
                        await self._pause()
                    first = False
                    self._todo = await asyncio.to_thread(self._snapshot)
                    continue
                sha256 = self._todo.pop()
                problem = await asyncio.to_thread(self._check, sha256)
            except ScrubStopped:
                return
            except Exception as exc:  # a busy or vanished index: try again later
                logs.event("scrub_error", message=repr(exc)[:300])
                await self._pause()
                continue
            if problem is not None:
                self.on_problem(sha256, problem)

    async def _pause(self) -> None:
        deadline = time.monotonic() + PASS_PAUSE
        while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(0.25, left))

    def _snapshot(self) -> list[str]:
        """The blobs of the next pass, in sha256 order (the last of the list comes first)."""
        return sorted((b.sha256 for b in self.cache.blobs()), reverse=True)

    def _row(self, sha256: str):
        return next((b for b in self.cache.lookup(sha256)[1] if b.sha256 == sha256), None)

    def _check(self, sha256: str) -> str | None:
        """In the worker thread: re-hash one blob at the pace; quarantine it if it changed."""
        blob = self._row(sha256)
        if blob is None:
            return None  # removed since the pass began
        self.pace(PER_BLOB)
        try:
            before = os.stat(blob.path)
        except OSError:
            before = None
        problem = self.cache.check_blob(blob, self.pace)
        if problem is None:
            try:
                after = os.stat(blob.path)
            except OSError:
                return None
            if before is not None and stat_key(after) == stat_key(before):
                self.memo.add(sha256, before)  # these very bytes hashed right
            return None
        if self._row(sha256) is None:
            return None  # removed (cache rm, prune) while we read it: not rot
        self.cache.quarantine(sha256, problem)
        return problem
