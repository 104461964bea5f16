"""What the daemon's resolver is downloading right now, seen through its events.

The tracker subscribes to :attr:`hostkit.resolver.Resolver.events` once. One
origin download of a cache key runs from its first
:class:`~hostkit.events.DownloadStarted` (bytes start flowing) to its
:class:`~hostkit.events.Finished` or :class:`~hostkit.events.Failed`; a retry
that starts again within the same download (another ``DownloadStarted``) does
not count as a new one. Each download writes a ``download_start`` and one
``download`` log line and counts in ``hostkit_downloads_total{outcome}``,
whether or not any client still waits for it. A download the resolver ends
without either event (cancelled at shutdown or as abandoned; a failure outside
the transfer) is closed when its task ends, which the tracker learns from
:meth:`Resolver.download_for`.

It also counts who in the daemon waits for each key (requests and job items):
a job item that stalls stops waiting, and :meth:`DownloadTracker.abandon` then
cancels the download only when nobody else waits for it (the resolver keeps
its partial for a resume and releases the key's lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from hostkit import events
from hostkit.errors import HostkitError

from . import logs


@dataclass
class Download:
    """One origin download of a cache key, as its events told it."""

    key: str
    identifier: str  # the resolver's display form (no secrets)
    total: int | None
    done: int
    received: int = 0  # bytes that came from the origin (a resume's offset excluded)
    started: float = field(default_factory=time.monotonic)

    def to_dict(self) -> dict:
        """JSON form for ``/v1/status``."""
        return {"identifier": logs.redact_identifier(self.identifier), "bytes_done": self.done,
                "bytes_total": self.total,
                "seconds": round(time.monotonic() - self.started, 3)}


class DownloadTracker:
    """Active downloads by cache key, who waits for them, and totals for metrics."""

    def __init__(self) -> None:
        self.active: dict[str, Download] = {}
        self.finished: Counter[str] = Counter()  # outcome -> downloads
        self.waiters: Counter[str] = Counter()  # cache key -> requests and items waiting
        self._resolver = None
        self._unsubscribe: Callable[[], None] | None = None

    def attach(self, resolver) -> None:
        """Follow ``resolver``'s events (until :meth:`detach`)."""
        self._resolver = resolver
        self._unsubscribe = resolver.events.subscribe(self._on_event)

    def detach(self) -> None:
        """Stop following the resolver's events."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    @contextlib.contextmanager
    def waiting(self, key: str | None):
        """Count the caller as waiting for the download of ``key`` while in the block."""
        if key is None:
            yield
            return
        self.waiters[key] += 1
        try:
            yield
        finally:
            self.waiters[key] -= 1
            if self.waiters[key] <= 0:
                del self.waiters[key]

    def abandon(self, key: str) -> bool:
        """Cancel the running download of ``key`` if nobody in the daemon waits for it.

        Returns True when a download was cancelled. Its partial stays on disk for a
        resume, and the key's lock is released as the download task unwinds.
        """
        if self.waiters.get(key) or self._resolver is None:
            return False
        task = self._resolver.download_for(key)
        if task is None:
            return False
        task.cancel()
        return True

    def get(self, key: str) -> Download | None:
        """The running download of cache ``key``, if any."""
        return self.active.get(key)

    def _on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Progressed):  # the common case first: once per chunk
            d = self.active.get(event.key)
            if d is not None:
                d.received += max(0, event.done - d.done)
                d.done, d.total = event.done, event.total
        elif isinstance(event, events.DownloadStarted):
            d = self.active.get(event.key)
            if d is None:
                self._begin(event)
            else:  # a retry within the same download: resumed at offset, or from 0
                d.done, d.total = event.offset, event.total
        elif isinstance(event, events.Finished):
            self._end(event.key, "ok", None)
        elif isinstance(event, events.Failed):
            self._end(event.key, "error", event.kind)

    def _begin(self, event: events.DownloadStarted) -> None:
        d = self.active[event.key] = Download(event.key, event.identifier, event.total,
                                              event.offset)
        logs.event("download_start", identifier=d.identifier, bytes_total=d.total,
                   resume_from=d.done or None)
        task = self._resolver.download_for(event.key) if self._resolver is not None else None
        if task is not None:
            task.add_done_callback(lambda t, d=d: self._task_ended(d, t))

    def _task_ended(self, d: Download, task) -> None:
        """The download's task ended: close it if no Finished or Failed event did."""
        if self.active.get(d.key) is not d:
            return
        if task.cancelled():
            self._end(d.key, "cancelled", None)
        elif (exc := task.exception()) is not None:
            self._end(d.key, "error",
                      exc.kind if isinstance(exc, HostkitError) else type(exc).__name__)
        else:
            self._end(d.key, "ok", None)

    def _end(self, key: str, outcome: str, error: str | None) -> None:
        d = self.active.pop(key, None)
        if d is None:
            return  # failed before any byte flowed: not an origin download
        self.finished[outcome] += 1
        logs.event("download", identifier=d.identifier, outcome=outcome, error=error,
                   bytes=d.received, bytes_total=d.total,
                   duration_ms=round((time.monotonic() - d.started) * 1000, 1))


def stop(waiting: asyncio.Future) -> None:
    """Cancel a resolve nobody awaits any more (an error it already had counts as seen)."""
    if not waiting.cancel() and not waiting.cancelled():
        waiting.exception()
