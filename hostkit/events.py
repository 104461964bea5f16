"""What the resolver reports while it works: typed events and the bus they travel on.

The resolver publishes; the CLI's progress bar, the Python API, the daemon's
metrics, job progress and streamed answers subscribe. Nobody reaches into the
resolver's internals for this. Every event names the download's cache
``key`` (one download per key at a time) and the ``identifier`` as shown.

A subscriber is a plain callable taking one event. It runs on the resolver's
event loop, so it must be quick and must not block; an exception in it is
logged and does not disturb the download or the other subscribers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("hostkit.events")


@dataclass(frozen=True)
class Event:
    """Base of every event: which download (cache key) and how to show it."""

    key: str
    identifier: str


@dataclass(frozen=True)
class Hit(Event):
    """Answered from the cache; ``revalidated`` when the origin confirmed it first."""

    sha256: str
    size: int
    revalidated: bool = False


@dataclass(frozen=True)
class Revalidated(Event):
    """A cheap check at the origin (HEAD) for a cached mutable reference."""

    changed: bool


@dataclass(frozen=True)
class Waiting(Event):
    """Another process is downloading this key; this one waits for it.

    ``done`` and ``total`` are that process's bytes so far, read from its
    partial file (None when they cannot be seen).
    """

    done: int | None
    total: int | None


@dataclass(frozen=True)
class DownloadStarted(Event):
    """Bytes start to flow: ``total`` (None if unknown), ``offset`` already on disk."""

    total: int | None
    offset: int


@dataclass(frozen=True)
class Progressed(Event):
    """More bytes are on disk: ``done`` of ``total``."""

    done: int
    total: int | None


@dataclass(frozen=True)
class Retrying(Event):
    """A transient failure; the download resumes after ``delay`` seconds."""

    attempt: int
    limit: int
    delay: float
    reason: str


@dataclass(frozen=True)
class Finished(Event):
    """Downloaded, verified and stored."""

    sha256: str
    size: int
    downloaded: int


@dataclass(frozen=True)
class Changed(Event):
    """Resolved without a hash, the identifier gave other bytes than the ones recorded.

    ``old_recorded_at`` is when ``old_sha256`` was recorded (Unix time). ``accepted``:
    the cache entry now points at ``new_sha256``; False in strict mode
    (``require_same``), where the old bytes are kept and the resolve fails.
    """

    old_sha256: str
    new_sha256: str
    old_recorded_at: float
    accepted: bool


@dataclass(frozen=True)
class Failed(Event):
    """The download failed; ``kind`` is the error's kind (see :mod:`hostkit.errors`)."""

    kind: str
    message: str


@dataclass(frozen=True)
class TierHit(Event):
    """Fetched from the site's shared tier instead of the origin, every byte checked
    against ``sha256`` (see :mod:`hostkit.tier`)."""

    sha256: str
    size: int


@dataclass(frozen=True)
class TierRejected(Event):
    """The shared tier's copy of ``sha256`` failed verification (``reason``): it was
    quarantined, never served, and the origin is asked instead."""

    sha256: str
    reason: str


Subscriber = Callable[[Event], None]


class EventBus:
    """Delivers events to subscribers: all of them, or those of one cache key."""

    def __init__(self) -> None:
        self._all: list[Subscriber] = []
        self._by_key: dict[str, list[Subscriber]] = {}

    def subscribe(self, callback: Subscriber, *, key: str | None = None
                  ) -> Callable[[], None]:
        """Call ``callback`` with every event (of ``key`` only, if given).

        :returns: a function that unsubscribes it.
        """
        group = self._all if key is None else self._by_key.setdefault(key, [])
        group.append(callback)

        def unsubscribe() -> None:
            if callback in group:
                group.remove(callback)
            if key is not None and not group:
                self._by_key.pop(key, None)

        return unsubscribe

    def publish(self, event: Event) -> None:
        """Hand ``event`` to its subscribers; one that raises is logged and skipped."""
        for callback in (*self._all, *self._by_key.get(event.key, ())):
            try:
                callback(event)
            except Exception:  # a subscriber's bug must not break a download
                log.exception("an event subscriber failed on %s", type(event).__name__)
