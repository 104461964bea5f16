"""What the daemon's handlers share: :class:`DaemonState` on the app, and the request keys."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiohttp import web

from hostkit.resolver import Resolver

from . import logs
from .access import Caller, Policy
from .blobs import VerifiedBlobs
from .downloads import DownloadTracker
from .jobs import Jobs
from .metrics import Metrics
from .scrub import Scrubber
from .warm import WarmHits


@dataclass
class DaemonState:
    """Everything the handlers share, kept on the app under :data:`STATE`."""

    resolver: Resolver
    token: str | None = None
    listen: str | None = None
    policy: Policy = field(default_factory=Policy)
    owns_resolver: bool = True
    metrics: Metrics = field(default_factory=Metrics)
    downloads: DownloadTracker = field(default_factory=DownloadTracker)
    jobs: Jobs | None = None
    warm: WarmHits | None = None
    draining: bool = False
    started: float = field(default_factory=time.time)
    scrub_rate: int = 0
    scrubber: Scrubber | None = None
    scrub_task: asyncio.Task | None = None
    #: Blobs hashed whole and found right (full sends, ranged checks, the scrub).
    verified: VerifiedBlobs = field(default_factory=VerifiedBlobs)

    def quarantine(self, sha256: str, reason: str, found_by: str) -> None:
        """Log and count a blob whose bytes no longer match (already quarantined)."""
        logs.event("quarantined", sha256=sha256, reason=reason, found_by=found_by)
        self.metrics.quarantined[found_by] += 1
        self.verified.discard(sha256)
        self.warm.forget()

    def stats(self) -> dict:
        """The resolver's counters, with the hits the daemon answered itself (warm memo)."""
        stats = dict(self.resolver.stats)
        stats["hits"] = stats.get("hits", 0) + self.warm.hits
        return stats

    def observe(self, seconds: float, outcome: str, error: str | None) -> None:
        """Count one resolve answer (and its error kind) for /metrics."""
        self.metrics.observe_resolve(seconds, outcome)
        if error:
            self.metrics.errors[error] += 1


STATE = web.AppKey("hostkit_state", DaemonState)
#: Per-request fields for the request's log line (identifier, outcome, bytes...).
LOG = web.RequestKey("hostkit_log", dict) if hasattr(web, "RequestKey") else "hostkit_log"
#: The request's :class:`~.access.Caller`.
CALLER = web.RequestKey("hostkit_caller", Caller) if hasattr(web, "RequestKey") \
    else "hostkit_caller"
