"""Background work: ``POST /v1/prefetch`` and ``POST /v1/resolve`` with ``"wait": false``.

A job is a list of (identifier, hash) items resolved through the same
Resolver as everything else, a few at a time. Polling ``GET /v1/jobs/{id}``
shows each item's state, bytes done / total (while its download runs) and its
result or error. Finished jobs are kept for an hour (at most ``keep`` of them).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field

from hostkit.errors import HostkitError

from . import logs

#: Items of one job resolved concurrently.
CONCURRENCY = 4
#: Seconds a finished job stays visible.
KEEP_SECONDS = 3600.0


@dataclass
class Item:
    """One identifier of a job."""

    identifier: str
    hash: str | None
    display: str  # the resolver's redacted name for it: the key of its running download
    state: str = "queued"  # queued | running | done | failed | cancelled
    result: dict | None = None
    error: dict | None = None
    bytes_total: int | None = None
    bytes_done: int = 0
    options: dict = field(default_factory=dict)  # offline / require_hash for the resolver

    def to_dict(self, downloads) -> dict:
        """JSON form; running items read live progress from the download tracker."""
        done, total = self.bytes_done, self.bytes_total
        if self.state == "running" and (p := downloads.get(self.display)) is not None:
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
    task: asyncio.Task | None = None

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
    """All jobs of one daemon."""

    def __init__(self, resolver, downloads, observe, *, keep: int = 1000):
        self.resolver = resolver
        self.downloads = downloads
        self.observe = observe  # callable(seconds, outcome, error_kind) for metrics
        self.keep = keep
        self._jobs: dict[str, Job] = {}
        self._sem = asyncio.Semaphore(CONCURRENCY)
        self.accepting = True

    def __len__(self) -> int:
        return len(self._jobs)

    def active(self) -> int:
        """Jobs not finished yet."""
        return sum(1 for j in self._jobs.values() if j.finished is None)

    def get(self, job_id: str) -> Job | None:
        """A job by id (None if unknown or expired)."""
        return self._jobs.get(job_id)

    def submit(self, kind: str, items: list[Item]) -> Job:
        """Start working on ``items`` in the background; return the job at once."""
        self._expire()
        job = Job(secrets.token_hex(8), kind, items)
        self._jobs[job.id] = job
        job.task = asyncio.ensure_future(self._run(job))
        return job

    def tasks(self) -> list[asyncio.Task]:
        """Tasks of unfinished jobs."""
        return [j.task for j in self._jobs.values() if j.task and not j.task.done()]

    async def _run(self, job: Job) -> None:
        started = time.monotonic()
        try:
            await asyncio.gather(*(self._run_item(item) for item in job.items))
        finally:
            for item in job.items:
                if item.state in ("queued", "running"):
                    item.state = "cancelled"
            job.finished = time.time()
            logs.event("job", id=job.id, kind=job.kind, state=job.state, items=len(job.items),
                       duration_ms=round((time.monotonic() - started) * 1000, 1))

    async def _run_item(self, item: Item) -> None:
        async with self._sem:
            if not self.accepting:  # shutting down: do not start new downloads
                item.state = "cancelled"
                return
            item.state = "running"
            started = time.monotonic()
            try:
                resolved = await self.resolver.resolve(item.identifier, item.hash,
                                                       progress=self.downloads.progress(),
                                                       **item.options)
            except HostkitError as exc:
                item.state, item.error = "failed", exc.to_dict()
                self.observe(time.monotonic() - started, "error", exc.kind)
            except asyncio.CancelledError:
                item.state = "cancelled"
                raise
            except Exception as exc:  # a bug, not the caller's mistake: report it, keep going
                item.state = "failed"
                item.error = {"error": "internal", "message": f"internal error: {exc!r}",
                              "hint": "see the daemon log", "identifier": item.display}
                logs.event("internal_error", where="job", message=repr(exc))
                self.observe(time.monotonic() - started, "error", "internal")
            else:
                item.state, item.result = "done", resolved.to_dict()
                item.bytes_done = item.bytes_total = resolved.size
                self.observe(time.monotonic() - started, "hit" if resolved.cached else "miss",
                             None)

    def _expire(self) -> None:
        now = time.time()
        done = [j for j in self._jobs.values() if j.finished is not None]
        for job in done:
            if now - job.finished > KEEP_SECONDS or len(self._jobs) > self.keep:
                del self._jobs[job.id]
