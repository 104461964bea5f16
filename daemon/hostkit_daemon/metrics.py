"""Counters and the Prometheus text exposition format (version 0.0.4) at ``/metrics``.

Hand-written: a handful of counters, one histogram, no dependency. Labels
carry only route templates, status codes and error kinds, never identifiers,
so nothing secret (and nothing unbounded) reaches a scraper.
"""

from __future__ import annotations

import bisect
from collections import Counter

#: Upper bounds (seconds) of the resolve latency histogram buckets.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
           10.0, 30.0, 60.0, 120.0, 300.0)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The daemon's own counters (the resolver keeps hits, misses and origin bytes)."""

    def __init__(self):
        self.requests: Counter = Counter()     # (route, method, status) -> n
        self.errors: Counter = Counter()       # error kind -> n
        self.resolves: Counter = Counter()     # outcome (hit | miss | error) -> n
        self.bytes_served = 0
        self.quarantined: Counter = Counter()  # found by (scrub | serve) -> blobs
        self.in_progress = 0                   # requests being handled right now
        self._buckets = [0] * len(BUCKETS)
        self._sum = 0.0
        self._count = 0

    def observe_resolve(self, seconds: float, outcome: str) -> None:
        """Record one resolve answered with ``outcome`` after ``seconds``."""
        self.resolves[outcome] += 1
        i = bisect.bisect_left(BUCKETS, seconds)
        if i < len(self._buckets):
            self._buckets[i] += 1
        self._sum += seconds
        self._count += 1

    def render(self, *, stats: dict, in_flight: int, cache_bytes: int, cache_entries: int,
               jobs_active: int, downloads: dict, scrubbed_bytes: int = 0) -> str:
        """The exposition text, with the resolver's ``stats`` and current gauges."""
        out: list[str] = []

        def metric(name, kind, help_, samples):
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lab = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                out.append(f"{name}{{{lab}}} {value}" if lab else f"{name} {value}")

        metric("hostkit_cache_hits_total", "counter",
               "Resolves answered from the cache without downloading.",
               [((), stats.get("hits", 0))])
        metric("hostkit_cache_misses_total", "counter",
               "Resolves that needed an origin download.", [((), stats.get("misses", 0))])
        metric("hostkit_downloads_total", "counter", "Origin downloads finished, by outcome.",
               [((("outcome", k),), v) for k, v in sorted(downloads.items())]
               or [((("outcome", "ok"),), 0)])
        metric("hostkit_origin_bytes_total", "counter", "Bytes received from origins.",
               [((), stats.get("bytes_from_origin", 0))])
        for name, key, help_ in _TIER:
            metric(name, "counter", help_, [((), stats.get(key, 0))])
        metric("hostkit_served_bytes_total", "counter",
               "Blob bytes sent to clients by /v1/blobs.", [((), self.bytes_served)])
        metric("hostkit_quarantined_blobs_total", "counter",
               "Blobs whose bytes no longer matched their sha256, by who found them.",
               [((("found_by", k),), v) for k, v in sorted(self.quarantined.items())]
               or [((("found_by", "scrub"),), 0)])
        metric("hostkit_scrubbed_bytes_total", "counter",
               "Bytes the background scrub re-hashed (held to --scrub-rate).",
               [((), scrubbed_bytes)])
        metric("hostkit_inflight_downloads", "gauge", "Origin downloads running now.",
               [((), in_flight)])
        metric("hostkit_http_requests_in_progress", "gauge", "Requests being handled now.",
               [((), self.in_progress)])
        metric("hostkit_jobs_active", "gauge", "Prefetch and background jobs not finished.",
               [((), jobs_active)])
        metric("hostkit_cache_bytes", "gauge", "Bytes stored in cache blobs.",
               [((), cache_bytes)])
        metric("hostkit_cache_entries", "gauge", "Identifiers in the cache index.",
               [((), cache_entries)])
        metric("hostkit_errors_total", "counter", "Errors answered, by kind.",
               [((("kind", k),), v) for k, v in sorted(self.errors.items())])
        metric("hostkit_resolves_total", "counter", "Resolve answers by outcome.",
               [((("outcome", k),), v) for k, v in sorted(self.resolves.items())])
        metric("hostkit_http_requests_total", "counter", "HTTP requests by route and status.",
               [((("route", r), ("method", m), ("status", str(s))), v)
                for (r, m, s), v in sorted(self.requests.items())])
        out.append("# HELP hostkit_resolve_duration_seconds Time to answer a resolve.")
        out.append("# TYPE hostkit_resolve_duration_seconds histogram")
        cumulative = 0
        for bound, n in zip(BUCKETS, self._buckets, strict=True):
            cumulative += n
            out.append(f'hostkit_resolve_duration_seconds_bucket{{le="{bound}"}} {cumulative}')
        out.append(f'hostkit_resolve_duration_seconds_bucket{{le="+Inf"}} {self._count}')
        out.append(f"hostkit_resolve_duration_seconds_sum {self._sum:.6f}")
        out.append(f"hostkit_resolve_duration_seconds_count {self._count}")
        return "\n".join(out) + "\n"


#: The shared tier's counters (:data:`hostkit.tier.STATS`, 0 without a tier): name, stat, help.
_TIER = (
    ("hostkit_tier_hits_total", "tier_hits",
     "Local misses answered from the site's shared tier, every byte verified."),
    ("hostkit_tier_misses_total", "tier_misses",
     "Local misses the shared tier could not answer (fetched by a node from the origin)."),
    ("hostkit_tier_bytes_total", "tier_bytes",
     "Bytes received from the shared tier instead of an origin (origin bytes saved)."),
    ("hostkit_tier_published_total", "tier_published", "Blobs this node put in the tier."),
    ("hostkit_tier_rejected_total", "tier_rejected",
     "Tier blobs that failed verification: quarantined, never served."),
    ("hostkit_tier_errors_total", "tier_errors",
     "Tier requests that failed or timed out (the resolve went to the origin)."),
    ("hostkit_tier_waits_total", "tier_waits",
     "Resolves that waited for another node's origin download (single flight)."),
    ("hostkit_tier_takeovers_total", "tier_takeovers",
     "Leases taken over from a node that stopped renewing them (it died)."),
)


def _escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
