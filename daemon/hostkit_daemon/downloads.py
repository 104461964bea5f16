"""What the daemon's resolver is downloading right now.

Every resolve the daemon makes passes a fresh :class:`TrackedProgress`. The
resolver calls a progress object only for the call that *starts* a download
(joiners share the leader's task), so ``start`` marks a real origin download.
It runs inside the download task itself, so the tracker hooks that task's
completion: the download is logged and counted once, whether or not any
client is still waiting for it.

The tracker also counts who in the daemon waits for each download (requests
and job items, by display identifier): a job item that stalls stops waiting,
and :meth:`DownloadTracker.abandon` then cancels the download itself only when
nobody else waits for it (the resolver keeps its partial for a resume and
releases the key's lock). Downloads others wait for go on for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter

from hostkit.errors import HostkitError
from hostkit.results import Progress

from . import logs


class TrackedProgress(Progress):
    """Progress of one download (created per resolve call; used only by a leader)."""

    __slots__ = ("tracker", "identifier", "total", "done", "received", "started", "_task")

    def __init__(self, tracker: DownloadTracker):
        self.tracker = tracker
        self.identifier: str | None = None
        self.total: int | None = None
        self.done = 0
        self.received = 0
        self.started = 0.0
        self._task: asyncio.Task | None = None

    def start(self, identifier: str, total: int | None, done: int) -> None:
        """Called by the resolver when bytes start flowing (again, after a retry)."""
        self.total, self.done = total, done
        if self._task is None:
            self.identifier = identifier
            self.started = time.monotonic()
            self._task = asyncio.current_task()
            self.tracker._begin(self)
            if self._task is not None:
                self._task.add_done_callback(self._finished)

    def advance(self, nbytes: int) -> None:
        """More bytes arrived from the origin."""
        self.done += nbytes
        self.received += nbytes

    def _finished(self, task: asyncio.Task) -> None:
        if task.cancelled():
            outcome, error = "cancelled", None
        elif (exc := task.exception()) is not None:
            outcome = "error"
            error = exc.kind if isinstance(exc, HostkitError) else type(exc).__name__
        else:
            outcome, error = "ok", None
        self.tracker._end(self, outcome, error)

    def to_dict(self) -> dict:
        """JSON form for ``/v1/status``."""
        return {"identifier": logs.redact_identifier(self.identifier), "bytes_done": self.done,
                "bytes_total": self.total,
                "seconds": round(time.monotonic() - self.started, 3)}


class DownloadTracker:
    """Active downloads by display identifier, plus totals for metrics."""

    def __init__(self):
        self.active: dict[str, TrackedProgress] = {}
        self.finished: dict[str, int] = {}  # outcome -> count
        self.waiters: Counter[str] = Counter()  # display -> requests and items waiting

    @contextlib.contextmanager
    def waiting(self, display: str | None):
        """Count the caller as waiting for the download of ``display`` while in the block."""
        if display is None:
            yield
            return
        self.waiters[display] += 1
        try:
            yield
        finally:
            self.waiters[display] -= 1
            if self.waiters[display] <= 0:
                del self.waiters[display]

    def abandon(self, display: str) -> bool:
        """Cancel the running download of ``display`` if nobody in the daemon waits for it.

        Returns True when a download was cancelled. Its partial stays on disk for a
        resume, and the key's lock is released as the download task unwinds.
        """
        if self.waiters.get(display):
            return False
        p = self.active.get(display)
        task = p._task if p is not None else None
        if task is None or task.done():
            return False
        task.cancel()
        return True

    def progress(self) -> TrackedProgress:
        """A progress object to pass to :meth:`Resolver.resolve`."""
        return TrackedProgress(self)

    def get(self, display: str) -> TrackedProgress | None:
        """The running download of ``display`` (the resolver's redacted identifier), if any."""
        return self.active.get(display)

    def _begin(self, p: TrackedProgress) -> None:
        self.active[p.identifier] = p
        logs.event("download_start", identifier=p.identifier, bytes_total=p.total,
                   resume_from=p.done or None)

    def _end(self, p: TrackedProgress, outcome: str, error: str | None) -> None:
        if self.active.get(p.identifier) is p:
            del self.active[p.identifier]
        self.finished[outcome] = self.finished.get(outcome, 0) + 1
        logs.event("download", identifier=p.identifier, outcome=outcome, error=error,
                   bytes=p.received, bytes_total=p.total,
                   duration_ms=round((time.monotonic() - p.started) * 1000, 1))
