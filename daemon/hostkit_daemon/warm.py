"""Repeat answers for warm resolves, from memory, exactly as the resolver would give them.

The resolver answers a resolve *with a hash* whose blob is stored without any
network or re-hash (step 1 of :meth:`hostkit.resolver.Resolver.resolve`): the
answer depends only on the identifier, the hash and the blob being present
(not for a movable reference, a branch or a short commit: the resolver looks it
up first and answers under what it names now; nor for a folder).
The daemon remembers those answers (already encoded as JSON) so the next
identical request costs one ``stat`` of the blob instead of two SQLite queries
and a write transaction. This is a memo of the resolver's own answers, not a
second resolution path: a miss, a blob that went away, or any request without a
hash goes to the resolver. With the ``verify_on_hit`` setting every hit must
re-hash its blob, which is the resolver's job: the memo then stays empty and
never answers.

Uses are still recorded for least-recently-used eviction: access times are
collected here and written to the index once a second (and on shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os

from hostkit.identifiers import parse_identifier
from hostkit.redact import redact_url
from hostkit.results import Resolved

#: Answers remembered (oldest forgotten first).
MAX_ENTRIES = 4096
#: Request bodies longer than this are not remembered (a body is a few hundred bytes; a
#: caller padding bodies must not make the daemon hold MAX_ENTRIES large ones).
MAX_BODY = 4096
#: Seconds between writes of collected access times to the index.
TOUCH_EVERY = 1.0


class WarmHits:
    """``(identifier, hash) -> (blob path, size, sha256, JSON body)`` of hash-verified hits."""

    def __init__(self, resolver):
        self.resolver = resolver
        self._answers: dict[tuple[str, str], tuple[str, int, str, bytes]] = {}
        self._touched: set[str] = set()
        #: ``(caller, request body) -> (identifier, hash)``: bodies answered by ``get``
        self._bodies: dict[tuple[object, bytes], tuple[str, str]] = {}
        self._flusher: asyncio.Task | None = None
        #: Resolves answered here (the resolver's own ``stats`` count the others).
        self.hits = 0

    def get(self, identifier: str, expected: str) -> tuple[bytes, int] | None:
        """(JSON answer, size) for a repeat of a verified hit whose blob is still there.

        Always None with ``verify_on_hit``: the resolver re-hashes every hit then.
        """
        if self.resolver.settings.verify_on_hit:
            return None
        hit = self._answers.get((identifier, expected))
        if hit is None:
            return None
        path, size, sha, body = hit
        try:
            if os.stat(path).st_size != size:
                raise FileNotFoundError(path)
        except OSError:  # removed or pruned behind our back: ask the resolver
            del self._answers[(identifier, expected)]
            return None
        self._touched.add(sha)
        self.hits += 1
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_later())
        return body, size

    def get_body(self, caller, raw: bytes) -> tuple[bytes, int, str] | None:
        """(JSON answer, size, identifier) for a request body ``caller`` sent before and
        that was answered by :meth:`get` then (so it passed every check of the route)."""
        seen = self._bodies.get((caller, raw))
        if seen is None:
            return None
        hit = self.get(*seen)
        if hit is None:
            del self._bodies[(caller, raw)]
            return None
        return hit[0], hit[1], seen[0]

    def remember_body(self, caller, raw: bytes, identifier: str, expected: str) -> None:
        """``caller``'s request body ``raw`` was answered by :meth:`get` for the pair."""
        if len(raw) > MAX_BODY:
            return
        if len(self._bodies) >= MAX_ENTRIES:
            self._bodies.pop(next(iter(self._bodies)))
        self._bodies[(caller, raw)] = (identifier, expected)

    def remember(self, identifier: str, expected: str, resolved: Resolved) -> None:
        """After a successful resolve with a hash: remember step 1's answer for the pair.

        Built from the resolver's own answer (no index query on the event loop).
        """
        if self.resolver.settings.verify_on_hit or resolved.tree or resolved.pinned_from:
            # every hit is the resolver's, to be re-hashed; a folder is not one blob; a
            # pinned movable reference (a branch, a short commit) is answered under what a
            # lookup finds now, not under the identifier and hash alone
            return
        # exactly what Resolver.resolve returns for a stored blob matching the given hash,
        # with the identifier redacted as the resolver does (no presigned secrets echoed)
        shown = redact_url(parse_identifier(identifier).identifier)
        answer = Resolved(resolved.path, resolved.sha256, resolved.size, True, shown, True,
                          dict(resolved.digests)).to_dict()
        answer["blob"] = f"/v1/blobs/{resolved.sha256}"
        if len(self._answers) >= MAX_ENTRIES:
            self._answers.pop(next(iter(self._answers)))
        self._answers[(identifier, expected)] = (str(resolved.path), resolved.size,
                                                 resolved.sha256, json.dumps(answer).encode())

    def forget(self) -> None:
        """Drop every remembered answer (after cache removals)."""
        self._answers.clear()
        self._bodies.clear()

    async def _flush_later(self) -> None:
        await asyncio.sleep(TOUCH_EVERY)
        await asyncio.to_thread(self.flush)  # SQLite (and its busy waits) off the loop

    def flush(self) -> None:
        """Write collected access times to the index."""
        touched, self._touched = self._touched, set()
        for sha in touched:
            with contextlib.suppress(Exception):  # a busy index only delays LRU bookkeeping
                self.resolver.cache.touch(sha)

    def close(self) -> None:
        """Flush and stop the timer."""
        if self._flusher is not None:
            self._flusher.cancel()
        self.flush()
