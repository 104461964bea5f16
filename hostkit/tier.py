"""The shared tier: a site's nodes share verified blobs through one object-store bucket.

With ``tier = "s3://bucket/prefix"`` (or ``minio://host:port/bucket/prefix``) a
resolve that misses the local cache asks the tier before the origin, and a node
that fetched from the origin publishes what it got. A plugin gives the requests
(a :class:`TierStore` from the ``hostkit_blob_tier`` hook: the s3 backend, with
its endpoint and credential chain); the rules live here, the same for every
engine. Layout under the prefix::

    cas/sha256/<hex>   a blob: written create-only (If-None-Match: *) with the
                       server checking its sha256, so no racing or lying writer
                       replaces it
    refs/<k>           JSON: sha256, size, validator, immutable, identifier (as
                       shown: no secrets), for resolves without a hash
    leases/<k>         JSON: which node fetches the key from the origin now
                       (<k>: the sha256 of the cache key, identifier + endpoint)

**Untrusted.** Every byte read from the tier is hashed on the way in against
the sha256 expected (the caller's hash, or the ref's); a blob that fails is
never served: it is moved to the local ``quarantine/``, counted
(``tier_rejected``), announced (:class:`~hostkit.events.TierRejected`, a
warning), deleted from the tier when it is still the object read, and fetched
from the origin. A ref is trusted as far as the local index is: an immutable
one stays good, a mutable one is revalidated at the origin by its cheap check
(``Remote.stat``: the validator must match), so a changed origin is never
answered from the tier. With a hash the tier is trusted for nothing.

**Private sources.** The tier never makes bytes readable to a node that could
not read them at the origin. Only resolutions with a hash (a capability: the
tier is then a content-addressed cache, as the local one) or of anonymous
sources (``Remote.anonymous``) are published; refs only for the latter. A
credentialed resolve without a hash never touches the tier, unless
``tier_private`` declares the site one trust domain.

**Single flight across nodes.** One node wins a create-only lease on the key
and fetches from the origin, renewing the lease every third of ``tier_lease``;
it publishes ``cas/`` then ``refs/``, then marks the lease released with the
outcome. The others poll the lease and read ``cas/`` once it is released. They
do not stream from the winner's daemon: the tier is an engine built to serve
many readers (its volume servers spread them), the winner's uplink is not, so
waiting for ``cas/`` scales to a 200-node site with no peer-to-peer path, no
cluster token on the data path and no peer to trust; it costs one upload plus
one download at the site's speed after the origin transfer (see
``benchmarks/bench_tier.py`` for the figures, and docs/cluster.md). A lease not
renewed for ``tier_lease`` seconds (its holder died) is taken over with a
compare-and-swap on its ETag (``If-Match``); a holder that failed to publish
releases with that outcome and the waiters go to the origin at once, each on
its own, rather than queueing behind one another.

**Failure.** Each tier request has ``tier_timeout`` seconds, and a download
from the tier must keep bringing bytes within each such window; a failure
marks the tier down for :data:`DOWN_FOR` seconds and the resolve goes to the
origin. A site never fails because its tier did.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CacheError, HostkitError, TransientError
from .events import DownloadStarted, EventBus, Progressed, TierHit, TierRejected, Waiting
from .remote import Remote, RemoteInfo

if TYPE_CHECKING:
    from .hashes import Digest
    from .results import Resolved
    from .settings import Settings
    from .store.cache import Cache
    from .store.partials import PartialDownload

log = logging.getLogger("hostkit.tier")

CAS = "cas/sha256/"
REFS = "refs/"
LEASES = "leases/"
#: Largest ref or lease read (they are a few hundred bytes; the tier is untrusted).
SMALL = 64 << 10
#: Seconds the tier is skipped after it failed a request (no timeout paid per resolve).
DOWN_FOR = 30.0
#: Seconds between two looks at a lease someone else holds: first, and at most.
POLL_FIRST, POLL_MAX = 0.1, 0.5
#: Slowest upload rate a publish is given time for, on top of ``tier_timeout``.
PUT_FLOOR_RATE = 4 << 20
#: Counters the tier keeps in the resolver's ``stats`` (for /v1/status and /metrics).
STATS = ("tier_hits", "tier_misses", "tier_bytes", "tier_published", "tier_rejected",
         "tier_errors", "tier_waits", "tier_takeovers")

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def key_name(cache_key: str) -> str:
    """The name of a cache key's ref and lease: its sha256 (cache keys hold no secrets;
    hashed, they do not even show bucket and key names)."""
    return hashlib.sha256(cache_key.encode()).hexdigest()


# -- what a plugin gives -------------------------------------------------------------


@dataclass
class TierObject:
    """One object of the tier: its key (under the tier's prefix), size, ETag, write time."""

    key: str
    size: int
    etag: str | None = None
    #: When it was written (Unix time, the server's clock), if known.
    modified: float | None = None


class TierConflict(Exception):
    """A conditional write found the object otherwise (HTTP 412): someone else wrote first."""


class TierStore:
    """Requests on the tier's bucket and prefix: what the ``hostkit_blob_tier`` hook returns.

    Keys are relative to the prefix. Every method may do network I/O and raises
    :mod:`hostkit.errors` types for failures (any exception other than
    :class:`TierConflict` marks the tier down for a while); none of them retries
    (the caller falls back to the origin instead). No message may hold a secret.
    """

    #: The tier as shown to people (``s3://bucket/prefix``): no secrets.
    url: str = ""

    async def head(self, key: str) -> TierObject | None:
        """The object's metadata, or None when there is no such key."""
        raise NotImplementedError

    async def read(self, key: str, limit: int) -> tuple[TierObject, bytes] | None:
        """A small object's metadata and bytes (at most ``limit``: more is an error), or None."""
        raise NotImplementedError

    def open(self, obj: TierObject) -> contextlib.AbstractAsyncContextManager[
            AsyncIterator[bytes]]:
        """Stream the object ``obj`` (as :meth:`head` saw it): its bytes as they arrive.

        Pin the read to ``obj.etag`` where the server allows it (a replaced object
        then fails rather than mixes); the caller hashes every byte anyway.
        """
        raise NotImplementedError

    async def put(self, key: str, data: bytes, *, if_absent: bool = False,
                  if_match: str | None = None) -> TierObject:
        """Write a small object; return it (with its new ETag).

        :raises TierConflict: ``if_absent`` and the key exists, or ``if_match`` and its
            ETag is another (or it is missing).
        """
        raise NotImplementedError

    async def put_file(self, key: str, path: Path, size: int, sha256: str) -> bool:
        """Write a blob create-only, the server checking its sha256; False when it existed.

        A store that cannot write create-only (no conditional writes) must refuse
        (raise) rather than overwrite.
        """
        raise NotImplementedError

    async def delete(self, key: str, *, if_match: str | None = None) -> None:
        """Delete an object (missing is fine).

        :raises TierConflict: ``if_match`` names another ETag than the object's.
        """
        raise NotImplementedError

    def list(self, prefix: str) -> AsyncIterator[TierObject]:
        """Every object whose key starts with ``prefix``."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close clients (the pooled HTTP session is the resolver's)."""


# -- records ---------------------------------------------------------------------------


@dataclass
class Ref:
    """``refs/<k>``: what an identifier at an endpoint gave when a node fetched it."""

    sha256: str
    size: int
    validator: str | None
    immutable: bool
    identifier: str = ""
    node: str = ""
    created: float = 0.0

    def to_json(self) -> bytes:
        """The object's bytes."""
        return json.dumps({"sha256": self.sha256, "size": self.size,
                           "validator": self.validator, "immutable": self.immutable,
                           "identifier": self.identifier, "node": self.node,
                           "created": self.created}).encode()

    @classmethod
    def parse(cls, data: bytes) -> Ref | None:
        """The ref in ``data``, or None when it is not one (the tier is untrusted)."""
        try:
            d = json.loads(data)
            ref = cls(str(d["sha256"]), int(d["size"]), d.get("validator"),
                      d.get("immutable") is True, _clean(d.get("identifier"), 2000),
                      _clean(d.get("node"), 200), float(d.get("created") or 0))
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        if not _HEX64.match(ref.sha256) or ref.size < 0 or not (
                ref.validator is None or (isinstance(ref.validator, str)
                                          and len(ref.validator) <= 1024)):
            return None
        return ref


@dataclass
class LeaseState:
    """``leases/<k>`` as read: who holds it until when, or how it was released."""

    etag: str | None
    node: str = ""
    pid: int = 0
    expires: float = 0.0
    released: bool = False
    #: How the holder's fetch ended: ``published``, ``unpublished`` or ``failed``.
    outcome: str | None = None

    @classmethod
    def parse(cls, etag: str | None, data: bytes) -> LeaseState:
        """The lease in ``data``; an unreadable one counts as released (anyone may take it)."""
        try:
            d = json.loads(data)
            return cls(etag, _clean(d.get("node"), 200), int(d.get("pid") or 0),
                       float(d.get("expires") or 0), d.get("released") is True,
                       d.get("outcome") if isinstance(d.get("outcome"), str) else None)
        except (ValueError, TypeError, AttributeError):
            return cls(etag, released=True, outcome="unreadable")


@dataclass
class _Lease:
    """A lease this node holds: its key and current ETag (what the next CAS must name)."""

    key: str
    etag: str | None
    lost: bool = False
    #: Taken over from a holder that stopped renewing: it may have published before dying.
    taken_over: bool = False


@dataclass
class _Watch:
    """A waiter's view of a lease: the ETag it saw last and since when (its own clock)."""

    etag: str | None = None
    since: float = 0.0


class _TierDown(Exception):
    """A tier request failed (unreachable, too slow, refused): the resolve goes to the origin."""


# -- the rules -------------------------------------------------------------------------

Origin = Callable[[], Awaitable["Resolved"]]
Store = Callable[[RemoteInfo, "PartialDownload", dict], Awaitable["Resolved"]]


class SharedTier:
    """The resolver's view of the shared tier: look up, fetch verified, single flight, publish.

    Made by the resolver on first use (:meth:`hostkit.resolver.Resolver.shared_tier`);
    its counters go to the resolver's ``stats`` (keys in :data:`STATS`).
    """

    def __init__(self, store: TierStore, settings: Settings, cache: Cache, events: EventBus,
                 stats: dict):
        self.store = store
        self.settings = settings
        self.cache = cache
        self.events = events
        self.stats = stats
        for name in STATS:
            stats.setdefault(name, 0)
        self.node = socket.gethostname()
        self.timeout = max(settings.tier_timeout, 0.001)
        self.lease_seconds = max(settings.tier_lease, 0.3)
        self._down_until = 0.0

    @property
    def url(self) -> str:
        """The tier as shown (no secrets)."""
        return self.store.url

    @property
    def available(self) -> bool:
        """False for :data:`DOWN_FOR` seconds after the tier failed a request."""
        return time.monotonic() >= self._down_until

    def shares(self, remote: Remote) -> bool:
        """Whether refs may be read and written for ``remote`` (anonymous, or a private site)."""
        return remote.anonymous or self.settings.tier_private

    async def resolve(self, remote: Remote, digest: Digest | None, *, origin: Origin,
                      store: Store) -> Resolved:
        """The tier, else the origin under a site-wide lease; then publish what came.

        ``origin()`` downloads from the origin and stores (the resolver's own
        path); ``store(info, part, digests)`` stores a verified partial.
        Errors of the origin propagate; the tier's never do.
        """
        shared = self.shares(remote)
        if not (shared or digest is not None) or not self.available:
            return await origin()  # private without a hash: never through the tier
        sha = digest.hex if digest is not None and digest.alg == "sha256" else None
        try:
            found = await self._lookup(remote, digest, sha, shared, store)
            if found is not None:
                return found
            self.stats["tier_misses"] += 1
            if sha is None and not shared:
                # pinned by another digest, no ref to find it by: nobody could wait for it
                resolved = await origin()
                await self._publish(remote, resolved, shared)
                return resolved
            return await self._single_flight(remote, digest, sha, shared, origin, store)
        except _TierDown:
            return await origin()

    # -- reading ---------------------------------------------------------------------

    async def _lookup(self, remote: Remote, digest: Digest | None, sha: str | None,
                      shared: bool, store: Store) -> Resolved | None:
        """The blob from the tier (by hash, else through a ref still good), or None."""
        validator, immutable, checked = None, remote.immutable, None
        if sha is None:
            if not shared:
                return None
            ref = await self._ref(remote)
            if ref is None:
                return None
            sha, validator = ref.sha256, ref.validator
            # only what this node knows makes a reference immutable, never the ref's word
            if not (remote.immutable or not self.settings.revalidate):
                checked = await self._revalidate(remote, ref)
                if checked is None:
                    return None
                immutable = checked.immutable
        return await self._fetch(remote, sha, digest, validator, immutable, checked, store)

    async def _ref(self, remote: Remote) -> Ref | None:
        got = await self._call(self.store.read(REFS + key_name(remote.cache_key), SMALL))
        if got is None:
            return None
        ref = Ref.parse(got[1])
        if ref is None:
            log.warning("%s: the tier's ref for it is not readable; ignored", remote.display)
        return ref

    async def _revalidate(self, remote: Remote, ref: Ref) -> RemoteInfo | None:
        """The origin's cheap check of a mutable ref: its info when the validator still
        matches, None when the origin changed (or cannot say which bytes it has)."""
        limit = self.settings.connect_timeout + self.settings.read_timeout
        try:
            async with asyncio.timeout(limit):
                info = await remote.stat()
        except (TransientError, TimeoutError) as exc:
            # the local index's rule: an origin that cannot be asked has not changed
            log.warning("could not revalidate %s (%s); using the tier's copy", remote.display,
                        getattr(exc, "message", "no answer in time"))
            return RemoteInfo(size=ref.size, validator=ref.validator)
        if info.validator and info.validator == ref.validator:
            return info
        log.info("%s changed at the origin since the tier recorded it (%s -> %s)",
                 remote.display, ref.validator, info.validator)
        return None

    async def _fetch(self, remote: Remote, sha: str, digest: Digest | None,
                     validator: str | None, immutable: bool, checked: RemoteInfo | None,
                     store: Store) -> Resolved | None:
        """Download ``cas/sha256/<sha>`` into a partial, verify every byte, store it."""
        from .store.partials import PartialDownload

        key = CAS + sha
        head = await self._call(self.store.head(key))
        if head is None:
            return None
        advertised = dict(checked.digests) if checked is not None else {}
        algs = sorted({"sha256", *advertised, *([digest.alg] if digest else [])})
        part = PartialDownload(self.cache.layout, remote.cache_key)
        too_long = False
        try:
            await part.start(algs, 0)
            self.events.publish(DownloadStarted(remote.cache_key, remote.display, head.size, 0))
            try:
                await self._receive(remote, head, part)
            except _TooLong:
                too_long = True
            digests = await part.finish()
        except BaseException:
            part.discard()
            raise
        problem = f"more bytes than the {head.size} announced" if too_long else \
            _problem(digests, sha, head.size, part.size, advertised)
        if problem is not None:
            await self._reject(remote, sha, head, part, problem,
                               bad_ref=problem.startswith("the origin"))
            return None
        if digest is not None and digests.get(digest.alg) != digest.hex:
            part.discard()  # other bytes than the caller pinned (by another alg): not ours
            return None
        info = RemoteInfo(size=part.size,
                          validator=checked.validator if checked is not None else validator,
                          digests=advertised, immutable=immutable)
        resolved = await store(info, part, digests)
        self.stats["tier_hits"] += 1
        self.events.publish(TierHit(remote.cache_key, remote.display, sha, part.size))
        log.info("%s: sha256:%s from the tier %s", remote.display, sha, self.url)
        return resolved

    async def _receive(self, remote: Remote, head: TierObject, part) -> None:
        """Append the object's bytes: each ``tier_timeout`` window must bring some
        (``min_rate`` bytes/s at least), else the tier is stalled and the resolve moves on."""
        loop = asyncio.get_running_loop()
        window = self.timeout
        need = max(self.settings.min_rate * window, 1)
        got, size = 0, head.size
        try:
            async with asyncio.timeout(window) as watch:
                async with self.store.open(head) as chunks:
                    watch.reschedule(loop.time() + window)
                    async for chunk in chunks:
                        if part.size + len(chunk) > size:
                            raise _TooLong()
                        await part.write(chunk)
                        self.stats["tier_bytes"] += len(chunk)
                        self.events.publish(Progressed(remote.cache_key, remote.display,
                                                       part.size, size))
                        got += len(chunk)
                        if got >= need:
                            got = 0
                            watch.reschedule(loop.time() + window)
        except (CacheError, _TooLong):
            raise  # the local disk, or the object grew: not the tier being down
        except TimeoutError:
            raise self._down(f"a download stalled ({got} bytes in {window:g} s)") from None
        except Exception as exc:
            raise self._down(_why(exc)) from None

    async def _reject(self, remote: Remote, sha: str, head: TierObject, part, problem: str,
                      *, bad_ref: bool) -> None:
        """Never serve it: quarantine the bytes, say so, remove the bad object or ref."""
        target = await asyncio.to_thread(_quarantine, self.cache, part.path, sha)
        part.discard()
        self.stats["tier_rejected"] += 1
        log.warning("%s: the tier's copy of sha256:%s failed verification (%s); never served, "
                    "quarantined%s; fetching from the origin", remote.display, sha, problem,
                    f" as {target}" if target else "")
        self.events.publish(TierRejected(remote.cache_key, remote.display, sha, problem))
        with contextlib.suppress(_TierDown, TierConflict):
            if bad_ref:  # the blob matches its name; the ref paired it with the wrong origin
                await self._call(self.store.delete(REFS + key_name(remote.cache_key)))
            elif head.etag:  # only the object read, not one a node published since
                await self._call(self.store.delete(head.key, if_match=head.etag))

    # -- single flight ---------------------------------------------------------------

    async def _single_flight(self, remote: Remote, digest: Digest | None, sha: str | None,
                             shared: bool, origin: Origin, store: Store) -> Resolved:
        """One node of the site fetches from the origin; the others wait for its result."""
        key = LEASES + key_name(remote.cache_key)
        watch = _Watch()
        waited, vanished = False, 0
        while True:
            got = await self._acquire(key, watch)
            if isinstance(got, _Lease):
                return await self._hold(got, remote, digest, sha, shared, origin, store)
            if got.etag is None:  # deleted while we looked (a prune): ask again, a few times
                vanished += 1
                if vanished > 3:
                    return await origin()
                continue
            if not waited:
                waited = True
                self.stats["tier_waits"] += 1
                log.info("%s: node %s (pid %d) fetches it for the site; waiting for the tier",
                         remote.display, got.node, got.pid)
            state = await self._wait(key, remote, watch)
            if state is None or not state.released:
                continue  # deleted (a prune) or its holder is gone: take it over
            found = await self._lookup(remote, digest, sha, shared, store)
            if found is not None:
                return found
            if state.outcome != "published":
                # the holder could not publish: each fetches for itself, not one after another
                log.info("%s: the fetching node ended %s; fetching from the origin",
                         remote.display, state.outcome)
                return await origin()

    async def _acquire(self, key: str, watch: _Watch) -> _Lease | LeaseState:
        """Take the lease (create-only; a released or dead one by CAS), or say who holds it."""
        try:
            obj = await self._call(self.store.put(key, self._lease_body(), if_absent=True))
            return _Lease(key, obj.etag)
        except TierConflict:
            pass
        state = await self._read_lease(key)
        if state is None:
            return LeaseState(None, released=True)  # gone meanwhile: the caller asks again
        if not (state.released or self._stale(state, watch)):
            return state
        try:
            if not state.etag:  # no compare-and-swap without an ETag: never overwrite blindly
                raise TierConflict(key)
            obj = await self._call(self.store.put(key, self._lease_body(), if_match=state.etag))
        except TierConflict:  # another node took it first
            return await self._read_lease(key) or LeaseState(None, released=True)
        if not state.released:
            self.stats["tier_takeovers"] += 1
            log.warning("took over the lease of node %s (pid %d): not renewed for %g s",
                        state.node, state.pid, self.lease_seconds)
        return _Lease(key, obj.etag, taken_over=not state.released)

    async def _read_lease(self, key: str) -> LeaseState | None:
        got = await self._call(self.store.read(key, SMALL))
        return None if got is None else LeaseState.parse(got[0].etag, got[1])

    def _stale(self, state: LeaseState, watch: _Watch) -> bool:
        """Whether a lease's holder is gone: not renewed for a whole lease (seen with this
        node's own clock), or expired a lease ago by its own (clocks a lease apart are fine)."""
        if state.expires + self.lease_seconds < time.time():
            return True
        if state.etag != watch.etag:
            watch.etag, watch.since = state.etag, time.monotonic()
            return False
        return time.monotonic() - watch.since >= self.lease_seconds

    async def _wait(self, key: str, remote: Remote, watch: _Watch) -> LeaseState | None:
        """Poll the lease until it is released, stale or gone."""
        poll = POLL_FIRST
        while True:
            self.events.publish(Waiting(remote.cache_key, remote.display, None, None))
            await asyncio.sleep(poll * (0.75 + random.random() / 2))
            poll = min(poll * 1.5, POLL_MAX)
            state = await self._read_lease(key)
            if state is None or state.released or self._stale(state, watch):
                return state

    async def _hold(self, lease: _Lease, remote: Remote, digest: Digest | None,
                    sha: str | None, shared: bool, origin: Origin, store: Store) -> Resolved:
        """Fetch from the origin for the site, renewing the lease; publish; release."""
        renewing = asyncio.ensure_future(self._renew(lease))
        outcome = "failed"
        try:
            if lease.taken_over:  # its dead holder may have published just before dying
                found = await self._lookup(remote, digest, sha, shared, store)
                if found is not None:
                    outcome = "published"
                    return found
            resolved = await origin()
            outcome = await self._publish(remote, resolved, shared)
            return resolved
        finally:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
            await self._release(lease, outcome)

    async def _renew(self, lease: _Lease) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                if not lease.etag:
                    raise TierConflict(lease.key)
                obj = await self._call(self.store.put(lease.key, self._lease_body(),
                                                      if_match=lease.etag), mark=False)
                lease.etag = obj.etag
            except TierConflict:
                lease.lost = True
                log.warning("this node's lease was taken over (renewals were late); "
                            "finishing the download all the same")
                return
            except _TierDown:
                continue

    async def _release(self, lease: _Lease, outcome: str) -> None:
        if lease.lost or not lease.etag or not self.available:
            return
        body = json.dumps({"node": self.node, "pid": os.getpid(), "released": True,
                           "outcome": outcome, "at": time.time()}).encode()
        with contextlib.suppress(_TierDown, TierConflict):
            await self._call(self.store.put(lease.key, body, if_match=lease.etag))

    def _lease_body(self) -> bytes:
        return json.dumps({"node": self.node, "pid": os.getpid(),
                           "expires": time.time() + self.lease_seconds,
                           "nonce": random.random()}).encode()

    # -- publishing ------------------------------------------------------------------

    async def _publish(self, remote: Remote, resolved: Resolved, shared: bool) -> str:
        """Put the blob (create-only, checked) and, for a shared source, its ref."""
        if not self.available:
            return "unpublished"
        entry = await asyncio.to_thread(self.cache.entry, remote.cache_key)
        limit = self.timeout + resolved.size / PUT_FLOOR_RATE
        try:
            # a refusal of this blob (too large for one PUT, a quota) is no reason to skip
            # the tier for everything else: only a request that got no answer marks it down
            created = await self._call(
                self.store.put_file(CAS + resolved.sha256, resolved.path, resolved.size,
                                    resolved.sha256), limit=limit, mark="unanswered")
            if shared and entry is not None and entry.sha256 == resolved.sha256:
                ref = Ref(resolved.sha256, resolved.size, entry.validator, entry.immutable,
                          remote.display, self.node, time.time())
                await self._call(self.store.put(REFS + key_name(remote.cache_key),
                                                ref.to_json()), mark="unanswered")
        except (_TierDown, TierConflict) as exc:
            log.warning("%s: could not publish sha256:%s to the tier (%s); the site's other "
                        "nodes fetch it from the origin", remote.display, resolved.sha256,
                        str(exc) or type(exc).__name__)
            return "unpublished"
        if created:
            self.stats["tier_published"] += 1
            log.info("%s: published sha256:%s to the tier %s", remote.display,
                     resolved.sha256, self.url)
        return "published"

    # -- plumbing --------------------------------------------------------------------

    async def _call(self, request: Awaitable, *, limit: float | None = None,
                    mark: bool | str = True):
        """One tier request within ``tier_timeout`` (or ``limit``); a failure is a
        :class:`_TierDown`, marking the tier down when ``mark`` is True, or when it is
        ``"unanswered"`` and the request got no answer (a refusal of one write does not)."""
        try:
            async with asyncio.timeout(limit or self.timeout):
                return await request
        except TierConflict:
            raise
        except TimeoutError:
            raise self._down(f"no answer within {limit or self.timeout:g} s",
                             mark is not False) from None
        except Exception as exc:
            down = mark is True or (mark == "unanswered" and isinstance(exc, ConnectionError))
            raise self._down(_why(exc), down) from None

    def _down(self, why: str, mark: bool = True) -> _TierDown:
        self.stats["tier_errors"] += 1
        if mark:
            if self.available:
                log.warning("the tier %s failed (%s); using the origin for the next %g s",
                            self.url, why, DOWN_FOR)
            self._down_until = time.monotonic() + DOWN_FOR
        return _TierDown(why)


class _TooLong(Exception):
    """The tier sent more bytes than the object's size."""


def _problem(digests: dict[str, str], sha: str, size: int, got: int,
             advertised: dict[str, str]) -> str | None:
    """What is wrong with bytes read from the tier as ``sha``, or None."""
    if got != size:
        return f"{got} bytes, not the {size} announced"
    if digests["sha256"] != sha:
        return f"its bytes hash to sha256:{digests['sha256']}"
    for alg, hexd in advertised.items():
        if digests.get(alg) != hexd:
            return f"the origin advertises {alg}:{hexd}, the bytes hash to {alg}:{digests.get(alg)}"
    return None


def _clean(value, limit: int) -> str:
    """Text read from the tier, fit to print: no control characters, at most ``limit``."""
    text = str(value or "")[:limit]
    return "".join(c if c.isprintable() else "?" for c in text)


def _why(exc: BaseException) -> str:
    if isinstance(exc, HostkitError):
        return exc.message
    from .redact import redact_text

    return redact_text(f"{type(exc).__name__}: {exc}")[:200]


def _quarantine(cache: Cache, path: Path, sha: str) -> Path | None:
    """Move bytes that claimed to be ``sha`` to ``quarantine/`` (deleted if that fails)."""
    with contextlib.suppress(OSError):  # a read-only cache: the bytes are not used anyway
        return cache.tier.quarantine_file(path, sha)
    return None


# -- operating the tier (``hostkit tier``) ----------------------------------------------


@dataclass
class TierBlob:
    """A blob in the tier, with the identifiers whose refs point at it."""

    sha256: str
    size: int
    modified: float | None
    identifiers: list[str]


@dataclass
class TierSurvey:
    """What the tier holds: blobs, refs, leases (from one listing)."""

    url: str
    blobs: list[TierBlob]
    refs: dict[str, Ref]  # ref object key -> ref
    bad_refs: list[str]  # ref object keys that are not refs
    leases: list[tuple[TierObject, LeaseState]]
    stray: list[TierObject]  # objects under cas/ that are not named by a sha256
    ref_count: int = 0  # ref objects listed (read or not)

    @property
    def total_size(self) -> int:
        """Bytes held in blobs."""
        return sum(b.size for b in self.blobs)


async def survey(store: TierStore, *, refs: bool = True) -> TierSurvey:
    """List the tier: every blob, ref (read, with ``refs``) and lease."""
    blobs, stray = [], []
    async for obj in store.list(CAS):
        name = obj.key[len(CAS):]
        if _HEX64.match(name):
            blobs.append(TierBlob(name, obj.size, obj.modified, []))
        else:
            stray.append(obj)
    by_sha = {b.sha256: b for b in blobs}
    found: dict[str, Ref] = {}
    bad: list[str] = []
    ref_objects = [obj async for obj in store.list(REFS)]
    if refs:
        for obj in ref_objects:
            got = await store.read(obj.key, SMALL)
            ref = Ref.parse(got[1]) if got is not None else None
            if ref is None:
                bad.append(obj.key)
                continue
            found[obj.key] = ref
            if (blob := by_sha.get(ref.sha256)) is not None and ref.identifier:
                blob.identifiers.append(ref.identifier)
    leases = []
    async for obj in store.list(LEASES):
        got = await store.read(obj.key, SMALL)
        if got is not None:
            leases.append((obj, LeaseState.parse(got[0].etag, got[1])))
    blobs.sort(key=lambda b: b.modified or 0, reverse=True)
    return TierSurvey(store.url, blobs, found, bad, leases, stray, len(ref_objects))


@dataclass
class TierPrunePlan:
    """What ``hostkit tier prune`` deletes, worked out before anything is deleted."""

    blobs: list[TierBlob]
    refs: list[str]  # ref object keys: pointing at a blob that goes or is gone, or unreadable
    leases: list[str]  # lease object keys released or dead for over an hour
    total_before: int
    total_after: int

    @property
    def freed(self) -> int:
        """Bytes of the blobs that go."""
        return sum(b.size for b in self.blobs)


#: Seconds after which a released or dead lease is removed by prune.
LEASE_KEEP = 3600.0


def plan_prune(found: TierSurvey, *, max_size: int | None = None,
               older_than: float | None = None, now: float | None = None) -> TierPrunePlan:
    """Blobs written more than ``older_than`` seconds ago go, then the oldest-written until
    the rest fit in ``max_size`` bytes (object stores record no reads: eviction is by age);
    refs left without their blob, unreadable refs and old leases go too."""
    now = time.time() if now is None else now
    doomed: list[TierBlob] = []
    kept = sorted(found.blobs, key=lambda b: b.modified or 0)  # oldest first
    if older_than is not None:
        doomed = [b for b in kept if b.modified is not None and now - b.modified > older_than]
        kept = [b for b in kept if b not in doomed]
    left = sum(b.size for b in kept)
    if max_size is not None:
        while kept and left > max_size:
            blob = kept.pop(0)
            doomed.append(blob)
            left -= blob.size
    alive = {b.sha256 for b in kept}
    refs = [k for k, r in found.refs.items() if r.sha256 not in alive] + list(found.bad_refs)
    leases = [obj.key for obj, state in found.leases
              if (state.released or state.expires < now)
              and obj.modified is not None and now - obj.modified > LEASE_KEEP]
    return TierPrunePlan(doomed, refs, leases, found.total_size, left)


async def execute_prune(store: TierStore, plan: TierPrunePlan) -> None:
    """Delete what ``plan`` names: refs first (no ref ever points at a deleted blob)."""
    for key in plan.refs:
        await store.delete(key)
    for blob in plan.blobs:
        await store.delete(CAS + blob.sha256)
    for key in plan.leases:
        await store.delete(key)
