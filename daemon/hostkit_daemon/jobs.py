"""Background work: ``POST /v1/prefetch`` and ``POST /v1/resolve`` with ``"wait": false``.

A job is a list of (identifier, hash) items resolved through the same
Resolver as everything else. Polling ``GET /v1/jobs/{id}`` shows each item's
state, bytes done / total (while its download runs) and its result or error.
Finished jobs are kept for an hour (at most ``keep`` of them).

The queue is bounded and shared fairly:

- at most ``max_pending`` items wait or run per caller (``max_pending * 4`` in
  all); more is refused with 429 and ``Retry-After``, nothing is half-accepted;
- ``concurrency`` slots run items; a free slot goes to the waiting caller that
  holds the fewest slots, and among those to the one served longest ago, so one
  caller's big or slow batch never starves another's;
- an item whose download made no progress (less than the ``min_rate`` setting)
  for ``stall_seconds`` is stopped and fails with kind ``stalled``, freeing its
  slot: stalled origins cannot hold every slot, and nothing runs without a
  slot. Its download is cancelled too
  unless another request or item waits for it (then it goes on for them); a
  cancelled download keeps its partial, so the next resolve resumes it.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

from hostkit.errors import HostkitError, Stalled

from . import logs
from .defaults import CONCURRENCY, MAX_PENDING, STALL_SECONDS
from .downloads import stop
from .errors import QueueFull, ShuttingDown

#: Seconds a client is told to wait after a 429.
RETRY_AFTER = 5
#: Seconds a finished job stays visible.
KEEP_SECONDS = 3600.0


@dataclass
class Item:
    """One identifier of a job."""

    identifier: str
    hash: str | None
    display: str  # the resolver's redacted name for it
    key: str  # its cache key: the name of its download in the resolver's events
    state: str = "queued"  # queued | running | done | failed | cancelled
    result: dict | None = None
    error: dict | None = None
    bytes_total: int | None = None
    bytes_done: int = 0
    options: dict = field(default_factory=dict)  # offline / require_hash for the resolver
    stalled: bool = False  # made no progress for stall_seconds: stopped, failed

    def to_dict(self, downloads) -> dict:
        """JSON form; running items read live progress from the download tracker."""
        done, total = self.bytes_done, self.bytes_total
        if self.state == "running" and (p := downloads.get(self.key)) is not None:
            done, total = p.done, p.total
        d = {"identifier": self.display, "hash": self.hash, "state": self.state,
             "bytes_done": done, "bytes_total": total}
        if self.result is not None:
            d["result"] = self.result
        if self.error is not None:
            d["error"] = self.error
        return d


@dataclass
class Job:
    """A batch of items and the task working through it."""

    id: str
    kind: str  # "prefetch" or "resolve"
    items: list[Item]
    created: float = field(default_factory=time.time)
    finished: float | None = None
    left: int = 0  # items not finished yet

    @property
    def state(self) -> str:
        """``queued``, ``running``, ``done`` (no item failed), ``failed`` or ``cancelled``."""
        states = {i.state for i in self.items}
        if self.finished is None:
            return "running" if states - {"queued"} else "queued"
        if "failed" in states:
            return "failed"
        return "cancelled" if "cancelled" in states else "done"

    def to_dict(self, downloads) -> dict:
        """JSON form of ``GET /v1/jobs/{id}``."""
        items = [i.to_dict(downloads) for i in self.items]
        return {"id": self.id, "kind": self.kind, "state": self.state,
                "created": self.created, "finished": self.finished,
                "bytes_done": sum(i["bytes_done"] or 0 for i in items),
                "bytes_total": sum(i["bytes_total"] or 0 for i in items),
                "errors": sum(1 for i in self.items if i.state == "failed"),
                "items": items}


class Jobs:
    """All jobs of one daemon, and the slots their items run in."""

    def __init__(self, resolver, downloads, observe, *, keep: int = 1000,
                 concurrency: int = CONCURRENCY, max_pending: int = MAX_PENDING,
                 stall_seconds: float = STALL_SECONDS):
        self.resolver = resolver
        self.downloads = downloads
        self.observe = observe  # callable(seconds, outcome, error_kind) for metrics
        self.keep = keep
        self.concurrency = concurrency
        self.max_pending = max_pending
        self.stall_seconds = stall_seconds
        self.accepting = True
        self._jobs: dict[str, Job] = {}
        #: caller -> its waiting items, oldest first
        self._waiting: dict[str, deque[tuple[Job, Item]]] = {}
        self._served: dict[str, int] = {}  # caller -> when it last got a slot (a counter)
        self._turns = 0
        self._pending: dict[str, int] = {}  # caller -> items waiting or running
        self._slots: dict[str, int] = {}  # caller -> slots held
        self._tasks: set[asyncio.Task] = set()

    def __len__(self) -> int:
        return len(self._jobs)

    def active(self) -> int:
        """Jobs not finished yet."""
        return sum(1 for j in self._jobs.values() if j.finished is None)

    def get(self, job_id: str) -> Job | None:
        """A job by id (None if unknown or expired)."""
        return self._jobs.get(job_id)

    def submit(self, kind: str, items: list[Item], caller: str = "") -> Job:
        """Queue ``items`` for ``caller``; return the job at once (QueueFull, 429, when full)."""
        if not self.accepting:
            raise ShuttingDown("the daemon is shutting down",
                               hint="retry in a moment, or resolve in-process")
        pending = self._pending.get(caller, 0)
        if (pending + len(items) > self.max_pending
                or sum(self._pending.values()) + len(items) > 4 * self.max_pending):
            raise QueueFull(f"the job queue is full ({pending} of your items are waiting or "
                            f"running; at most {self.max_pending})",
                            hint=f"retry after {RETRY_AFTER} s, or wait for your jobs to finish",
                            retry_after=RETRY_AFTER)
        self._expire()
        job = Job(secrets.token_hex(8), kind, items, left=len(items))
        self._jobs[job.id] = job
        self._pending[caller] = pending + len(items)
        self._waiting.setdefault(caller, deque()).extend((job, item) for item in items)
        self._dispatch()
        return job

    def stop(self) -> None:
        """Accept no more work; waiting items are cancelled, running ones go on."""
        self.accepting = False
        waiting, self._waiting = self._waiting, {}
        for caller, queue in waiting.items():
            for job, item in queue:
                item.state = "cancelled"
                self._finish(job, item, caller)

    def tasks(self) -> list[asyncio.Task]:
        """Tasks of the items running now."""
        return [t for t in self._tasks if not t.done()]

    def _dispatch(self) -> None:
        while self.accepting and self._waiting and sum(self._slots.values()) < self.concurrency:
            caller = min(self._waiting,
                         key=lambda c: (self._slots.get(c, 0), self._served.get(c, -1)))
            queue = self._waiting[caller]
            job, item = queue.popleft()
            if not queue:
                del self._waiting[caller]
            self._turns += 1
            self._served[caller] = self._turns
            self._slots[caller] = self._slots.get(caller, 0) + 1
            task = asyncio.ensure_future(self._run_item(job, item, caller))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _release(self, caller: str) -> None:
        self._slots[caller] -= 1
        if not self._slots[caller]:
            del self._slots[caller]
        self._dispatch()

    def _finish(self, job: Job, item: Item, caller: str) -> None:
        self._pending[caller] -= 1
        if not self._pending[caller]:
            del self._pending[caller]
        job.left -= 1
        if job.left == 0:
            job.finished = time.time()
            logs.event("job", id=job.id, kind=job.kind, state=job.state, items=len(job.items),
                       duration_ms=round((job.finished - job.created) * 1000, 1))

    async def _run_item(self, job: Job, item: Item, caller: str) -> None:
        item.state = "running"
        started = time.monotonic()
        # the resolve runs as a task of its own: the stall watch stops it, and awaiting it
        # through asyncio.wait tells its stop (or its download's) from this item's own
        # cancellation at shutdown
        resolving = asyncio.ensure_future(
            self.resolver.resolve(item.identifier, item.hash, **item.options))
        watch = asyncio.ensure_future(self._watch(item, resolving))
        try:
            with self.downloads.waiting(item.key):
                try:
                    await asyncio.wait({resolving})
                except asyncio.CancelledError:
                    stop(resolving)
                    item.state = "cancelled"
                    raise
            self._settle(item, resolving, started)
        finally:
            watch.cancel()
            self._release(caller)
            self._finish(job, item, caller)

    async def _watch(self, item: Item, resolving: asyncio.Future) -> None:
        """Stop the item's resolve once its download stops making progress.

        Progress is at least the ``min_rate`` setting (bytes/s; at least one byte)
        over each window of ``stall_seconds``: a server trickling a byte a second
        is as stalled as a silent one.
        """
        need = max(1, int(self.resolver.settings.min_rate * self.stall_seconds))
        start_done, since = -1, time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, self.stall_seconds / 4))
            p = self.downloads.get(item.key)
            done = p.done if p is not None else -1
            now = time.monotonic()
            if done >= 0 > start_done or done < start_done:  # (re)started: a fresh window
                start_done, since = done, now
            elif now - since >= self.stall_seconds:
                if done - start_done >= need:
                    start_done, since = done, now
                    continue
                item.stalled = True
                logs.event("job_item_stalled", identifier=item.display,
                           bytes_done=max(done, 0), seconds=round(now - since, 1))
                resolving.cancel()
                return

    def _settle(self, item: Item, resolving: asyncio.Future, started: float) -> None:
        """Record the outcome of the item's finished resolve."""
        seconds = time.monotonic() - started
        if resolving.cancelled():
            if not self.accepting:  # the download was cancelled as the daemon stops
                item.state = "cancelled"
                return
            # stopped by the stall watch, or its download was abandoned as stalled under
            # it; no longer waiting: the download stops too unless someone else waits for it
            abandoned = self.downloads.abandon(item.key)
            item.stalled = True
            item.state = "failed"
            item.error = Stalled(
                f"{item.display}: no progress for {self.stall_seconds:g} s; stopped to free "
                "its job slot" + (" (its download goes on for others waiting for it)"
                                  if not abandoned and self.downloads.waiters.get(item.key)
                                  else ""),
                hint="the origin is not sending; what was received is kept, so a later "
                     "prefetch or resolve resumes it (start the daemon with a larger --stall "
                     "for very slow origins)", identifier=item.display).to_dict()
            self.observe(seconds, "error", "stalled")
            return
        exc = resolving.exception()
        if isinstance(exc, HostkitError):
            item.state, item.error = "failed", exc.to_dict()
            self.observe(seconds, "error", exc.kind)
        elif exc is not None:  # a bug, not the caller's mistake: report it, keep going
            item.state = "failed"
            item.error = {"error": "internal", "message": f"internal error: {exc!r}",
                          "hint": "see the daemon log", "identifier": item.display}
            logs.event("internal_error", where="job", message=repr(exc))
            self.observe(seconds, "error", "internal")
        else:
            resolved = resolving.result()
            item.state, item.result = "done", resolved.to_dict()
            item.bytes_done = item.bytes_total = resolved.size
            self.observe(seconds, "hit" if resolved.cached else "miss", None)

    def _expire(self) -> None:
        now = time.time()
        done = [j for j in self._jobs.values() if j.finished is not None]
        for job in done:
            if now - job.finished > KEEP_SECONDS or len(self._jobs) > self.keep:
                del self._jobs[job.id]
