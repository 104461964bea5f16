"""The one resolver: identifier -> verified local file. CLI, API and daemon all use it.

Order of business for ``resolve(identifier, expected)``:

1. A given hash whose blob is already stored answers at once: no plugin,
   no network, no re-hash (content addressing).
2. The backend plugin turns the identifier into a Remote (no I/O). A movable
   one (a branch) is looked up first (``Remote.pin``): refused, or with the
   ``pin`` setting replaced by the Remote of what it names now.
3. An index entry for the Remote's cache key answers when it is still good:
   the hash matches, or the reference is immutable, or a cheap ``stat``
   shows the same validator (mutable references, when revalidation is on).
4. Otherwise one download per cache key: in-process single flight, plus an
   advisory file lock so other processes wait instead of downloading too.
   Bytes are hashed while written; retries resume with ranges; the blob is
   moved into place only once verified. With a shared tier (``settings.tier``)
   the site's bucket is asked first and one node fetches for all
   (:mod:`hostkit.tier`).

A Remote that names a folder (``Remote.tree``) goes to :mod:`hostkit.trees`
instead, which lists it and resolves each file through :meth:`Resolver.resolve_file`
(steps 1, 3 and 4 for one file), then builds a snapshot folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import weakref
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import (
    CacheError,
    ContentChanged,
    DeadlineExceeded,
    HashMismatch,
    HashRequired,
    HostkitError,
    NotAFile,
    NotDirectLink,
    NotFound,
    OfflineMiss,
    Stalled,
    TransientError,
    TruncatedBody,
    UnknownScheme,
    UsageError,
)
from .events import (
    Changed,
    DownloadStarted,
    EventBus,
    Finished,
    Hit,
    Progressed,
    Retrying,
    Waiting,
)
from .failpoints import failpoint
from .hashes import Digest, hash_file, parse_hash
from .identifiers import Ref, parse_identifier
from .outcomes import check_digests, content_changed, failed_event, note_change
from .remote import Context, Remote, RemoteInfo, strong_validator
from .results import Progress, ProgressListener, Resolved
from .settings import Settings, load_settings
from .store.cache import Cache
from .store.index import Blob, Entry

if TYPE_CHECKING:
    from .plugins import LoadedPlugins
    from .tier import SharedTier

log = logging.getLogger("hostkit")


class Resolver:
    """Resolves identifiers into files in one cache. Create one per process (or daemon)."""

    def __init__(self, settings: Settings | None = None, *, cache: Cache | None = None,
                 plugins: LoadedPlugins | None = None):
        self.settings = settings or load_settings()
        self.cache = cache or Cache(self.settings.cache_dir)
        self._plugins = plugins
        self.context = Context(self.settings)
        self._inflight: dict[str, asyncio.Task] = {}
        #: The expected hash each running download was started with (a joiner with
        #: another hash is not failed by that download's mismatch).
        self._started_with: weakref.WeakKeyDictionary[asyncio.Task, Digest | None] = \
            weakref.WeakKeyDictionary()
        #: What happens, for whoever listens: progress bars, the daemon, metrics.
        self.events = EventBus()
        #: Counters for status and metrics (the resolver's own: subscribers only read them).
        self.stats = {"hits": 0, "misses": 0, "bytes_from_origin": 0, "downloads": 0}
        self._tier: SharedTier | None = None

    @property
    def plugins(self) -> LoadedPlugins:
        """Loaded backends (entry points are read on first use only)."""
        if self._plugins is None:
            from .plugins import load_plugins

            self._plugins = load_plugins()
        if not self.context.declared:
            from .settings import check_options

            declared = self._plugins.options()
            check_options(self.settings, declared)  # a bad value fails every resolve
            self.context.declared = declared
        return self._plugins

    def in_flight(self) -> list[str]:
        """Cache keys being downloaded right now."""
        return [flight.rsplit(" ", 1)[0] for flight in self._inflight]

    def downloads(self) -> list[asyncio.Task]:
        """The tasks of the downloads running now, one per cache key (for a graceful shutdown).

        Awaiting one waits for that download; cancelling one stops it, leaving at
        most a resumable partial.
        """
        return [t for t in self._inflight.values() if not t.done()]

    def download_for(self, key: str) -> asyncio.Task | None:
        """The download of cache ``key`` running in this process, if any.

        Cancelling it stops it (its partial is kept for a resume, its lock
        released); do so only when nobody else waits for it.
        """
        for flight, task in self._inflight.items():
            if flight.rsplit(" ", 1)[0] == key and not task.done():
                return task
        return None

    async def aclose(self) -> None:
        """Close network sessions and the index."""
        await self.context.aclose()
        self.cache.close()

    # -- public -------------------------------------------------------------

    async def resolve(self, identifier: str, expected: str | None = None, *,
                      offline: bool | None = None, require_hash: bool | None = None,
                      progress: Progress | None = None, pin: bool | None = None,
                      require_same: bool | None = None) -> Resolved:
        """Return a local path holding exactly the bytes ``identifier`` names.

        ``expected`` is ``alg:hex`` or bare sha256 hex; without it the computed
        sha256 is recorded as trust on first use. Raises :mod:`hostkit.errors`.
        Without a hash, bytes other than the ones recorded before are a change: the
        answer's ``changed_from`` names the old ones and a :class:`~hostkit.events.Changed`
        event is published; with ``require_same`` (default: the setting) it is a
        :class:`~hostkit.errors.ContentChanged` instead, and the cache keeps the old bytes.
        With the ``verify_on_hit`` setting a cached answer is re-hashed first; a
        blob whose bytes changed on disk is quarantined and fetched again.
        ``pin`` (default: the ``pin`` setting) resolves a movable reference (a
        branch) as what it names now, under the pinned identifier, instead of
        refusing it (see :meth:`hostkit.remote.Remote.pin`).
        """
        deadline = self.settings.deadline or None
        try:
            async with asyncio.timeout(deadline) as limit:
                while True:
                    resolved = await self._resolve_once(
                        identifier, expected, offline=offline, require_hash=require_hash,
                        progress=progress, pin=pin, require_same=require_same)
                    # (a folder's files are re-hashed by hostkit.trees itself)
                    if not (resolved.cached and self.settings.verify_on_hit) or resolved.tree:
                        return resolved
                    blob = await _io(self.cache.blob, resolved.sha256)
                    problem = await asyncio.to_thread(self.cache.check_blob, blob) \
                        if blob else "gone"
                    if problem is None:
                        return resolved
                    await asyncio.to_thread(self.cache.quarantine, resolved.sha256, problem)
        except TimeoutError:
            if not limit.expired():
                raise  # a Stalled (also a TimeoutError) from inside: not our deadline
            raise _deadline_error(parse_identifier(identifier).display, deadline) from None

    async def _resolve_once(self, identifier: str, expected: str | None, *,
                            offline: bool | None, require_hash: bool | None,
                            progress: Progress | None, pin: bool | None = None,
                            require_same: bool | None = None) -> Resolved:
        offline = self.settings.offline if offline is None else offline
        same = self.settings.require_same if require_same is None else require_same
        strict = self.settings.require_hash if require_hash is None else require_hash
        ref = parse_identifier(identifier)
        shown = ref.display
        digest = parse_hash(expected) if expected else None
        if strict and digest is None:
            raise HashRequired(f"{shown}: a hash is required (strict mode)",
                               hint="pass --hash sha256:<hex>, or unset HOSTKIT_REQUIRE_HASH",
                               identifier=shown)
        looked = time.time()
        # the backend sees every identifier first (its rules, no I/O), even for a cached answer
        remote = self.remote_for(ref)
        if remote.movable:  # a branch: looked up, then refused or pinned
            remote = await remote.pin(allow=self.settings.pin if pin is None else pin,
                                      offline=offline)
            log.info("%s: pinned as %s", shown, remote.display)
            resolved = await self._resolve_remote(remote, remote.display, digest, offline,
                                                  progress, looked, same)
            return replace(resolved, pinned_from=shown)
        return await self._resolve_remote(remote, shown, digest, offline, progress, looked,
                                          same)

    async def _resolve_remote(self, remote: Remote, shown: str, digest: Digest | None,
                              offline: bool, progress: Progress | None,
                              looked: float, same: bool = False) -> Resolved:
        """Steps 1, 3 and 4 of the module's order of business, for the backend's Remote."""
        if remote.tree is not False and await self._names_tree(remote, digest, offline):
            from .trees import resolve_tree

            return await resolve_tree(self, remote, shown, digest, offline=offline,
                                      progress=progress, looked=looked, same=same)
        if digest and (blob := await _io(self.cache.find_blob, digest.alg, digest.hex)):
            return await self._hit(blob, shown, verified=True, event_key=remote.cache_key)
        entry = await _io(self.cache.entry, remote.cache_key)
        if entry and (hit := await self._cached(remote, entry, digest, offline)):
            return hit
        if offline:
            raise OfflineMiss(f"{remote.display} is not in the cache and offline mode is on",
                              hint="resolve it once while online, or unset HOSTKIT_OFFLINE",
                              identifier=remote.display)
        unsubscribe = self.events.subscribe(ProgressListener(progress), key=remote.cache_key) \
            if progress is not None else None
        # strict trust on first use: a download started here must not move the entry
        keep = same and digest is None and entry is not None
        try:
            resolved = await self._join_or_start(remote, digest, looked, keep)
        except ContentChanged as exc:  # refused where it was stored; the entry stayed
            if entry is not None:
                self.events.publish(Changed(remote.cache_key, remote.display, entry.sha256,
                                            exc.found.removeprefix("sha256:"), entry.created,
                                            False))
            raise
        finally:
            if unsubscribe is not None:
                unsubscribe()
        if digest:  # the download may have been started with another (or no) expected hash
            found = await _io(self._digest, resolved, digest.alg)
            if found != digest.hex:
                raise HashMismatch(remote.display, str(digest), f"{digest.alg}:{found}")
            resolved.verified = True
        elif entry is not None and resolved.sha256 != entry.sha256:
            # other bytes than recorded (even when another process stored them meanwhile)
            resolved.changed_from = note_change(self.events, remote, entry, resolved.sha256,
                                                same)
        return resolved

    async def resolve_file(self, remote: Remote, digest: Digest | None, *, looked: float,
                           same: bool = False) -> Resolved:
        """Resolve one file of a folder through the single-file path (steps 1, 3 and 4).

        For :mod:`hostkit.trees`: ``remote`` is a listed file's own Remote; it is
        verified, resumed, stored and shared exactly as its own identifier would be.
        ``looked`` is when the folder's resolve began.
        """
        return await self._resolve_remote(remote, remote.display, digest, False, None, looked,
                                          same)

    async def _names_tree(self, remote: Remote, digest: Digest | None, offline: bool) -> bool:
        """Whether ``remote`` names a folder: its ``tree``, else what the cache knows, else
        the backend's answer (one request; never offline, never before a stored blob)."""
        if remote.tree is not None:
            return remote.tree
        if await _io(self.cache.entry, remote.cache_key) is not None:
            return False
        if await _io(self.cache.tree, remote.cache_key) is not None:
            return True
        if digest and digest.alg == "sha256" and await _io(self.cache.snapshot, digest.hex):
            return True
        if offline or (digest and await _io(self.cache.find_blob, digest.alg, digest.hex)):
            return False
        return await remote.is_tree()

    async def _join_or_start(self, remote: Remote, digest: Digest | None,
                             looked: float, keep: bool = False) -> Resolved:
        """Wait for the download of ``remote`` running in this process, or start it.

        ``keep``: the download must leave the key's entry as it is when the bytes
        differ (strict trust on first use); such downloads are not shared with others.
        """
        while True:
            flight = _flight_key(remote, keep)
            task = self._inflight.get(flight)
            joined = task is not None
            if task is None:
                task = asyncio.ensure_future(self._download(remote, digest, looked, keep))
                self._inflight[flight] = task
                self._started_with[task] = digest
                task.add_done_callback(functools.partial(self._forget, flight))
            else:
                log.debug("joining the download already running for %s", remote.display)
            try:
                # shield: one caller giving up must not cancel the download others wait for
                resolved = replace(await asyncio.shield(task))
            except HashMismatch:
                if joined and self._started_with.get(task) != digest:
                    continue  # the other caller's hash was wrong, not ours: fetch for us
                raise
            return resolved

    def _forget(self, key: str, task: asyncio.Task) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: a failure nobody waits for is not "never retrieved"

    def remote_for(self, ref: Ref | str) -> Remote:
        """The backend's Remote for an identifier; UnknownScheme if none accepts it."""
        ref = parse_identifier(ref) if isinstance(ref, str) else ref
        from .plugins import call_first

        remote = call_first(self.plugins, "hostkit_resolve", ref=ref, context=self.context)
        if remote is None:
            raise UnknownScheme(
                f"no backend accepts {ref.display!r} (scheme {ref.scheme!r})",
                hint=f"accepted forms: {self.plugins.accepted_forms()}; "
                     "`hostkit plugins` lists installed backends and extras",
                identifier=ref.display)
        return remote

    async def upload(self, source, destination: str, *, overwrite: bool = False,
                     content_addressed: bool = False, progress: Progress | None = None):
        """Upload a local file through the destination's backend (its ``hostkit_upload`` hook).

        Returns the backend's :class:`~hostkit.remote.UploadResult`: an identifier
        that resolves to exactly these bytes, and their sha256.
        """
        from .plugins import call_first

        ref = parse_identifier(destination)
        uploader = call_first(self.plugins, "hostkit_upload", destination=ref,
                              context=self.context)
        if uploader is None:
            raise UnknownScheme(
                f"no backend uploads to {ref.display!r} (scheme {ref.scheme!r})",
                hint=f"upload to one of {', '.join(self.plugins.upload_schemes()) or 'nothing'}"
                     " (with the matching extra); `hostkit plugins` lists installed backends",
                identifier=ref.display)
        return await uploader.upload(Path(source), overwrite=overwrite,
                                     content_addressed=content_addressed, progress=progress)

    # -- cache answers --------------------------------------------------------

    async def _hit(self, blob: Blob, identifier: str, *, verified: bool, key: str | None = None,
                   checked: bool = False, event_key: str | None = None) -> Resolved:
        await _io(self.cache.touch, blob.sha256, key, checked=checked)
        self.stats["hits"] += 1
        self.events.publish(Hit(event_key or key or blob.sha256, identifier, blob.sha256,
                                blob.size, revalidated=checked))
        return Resolved(blob.path, blob.sha256, blob.size, True, identifier, verified,
                        blob.digests)

    def _digest(self, stored: Blob | Resolved, alg: str) -> str:
        """A stored file's digest in ``alg``: recorded, or computed once and recorded.

        Blocking (it may hash the whole file): call it in a worker thread.
        """
        if alg not in stored.digests:
            found = hash_file(stored.path, (alg,))
            self.cache.add_digests(stored.sha256, found)
            stored.digests.update(found)
        return stored.digests[alg]

    async def _cached(self, remote: Remote, entry: Entry, digest: Digest | None,
                      offline: bool) -> Resolved | None:
        blob = await _io(self.cache.blob, entry.sha256)
        if blob is None:
            return None  # index row without its file: download again
        if digest:
            # a different hash than cached means the publisher moved on: fetch again
            same = await _io(self._digest, blob, digest.alg) == digest.hex
            return await self._hit(blob, entry.identifier, verified=True, key=entry.key) \
                if same else None
        if offline or entry.immutable or remote.immutable or not self.settings.revalidate:
            return await self._hit(blob, entry.identifier, verified=entry.verified,
                                   key=entry.key)
        try:
            async with asyncio.timeout(self._answer_limit()):  # a trickled HEAD ends too
                info = await remote.stat()
        except (TransientError, TimeoutError) as exc:
            log.warning("could not revalidate %s (%s); serving the cached copy",
                        remote.display, getattr(exc, "message", "no answer in time"))
            return await self._hit(blob, entry.identifier, verified=entry.verified,
                                   key=entry.key)
        if info.validator and info.validator == entry.validator:
            return await self._hit(blob, entry.identifier, verified=entry.verified,
                                   key=entry.key, checked=True)
        log.info("%s changed at the origin (%s -> %s); downloading again", remote.display,
                 entry.validator, info.validator)
        return None

    # -- downloading ----------------------------------------------------------

    async def _download(self, remote: Remote, digest: Digest | None, looked: float,
                        keep: bool = False) -> Resolved:
        """Download under the key's advisory lock, unless another process just did."""
        from filelock import FileLock, Timeout

        await _io(self.cache.require_writable)
        lock = FileLock(self.cache.layout.lock_path(remote.cache_key), thread_local=False,
                        mode=0o600)
        deadline = self.settings.deadline or None
        try:
            # the download task has its own deadline: nobody may have to wait for it
            async with asyncio.timeout(deadline) as limit:
                waited = 0
                while True:
                    try:
                        lock.acquire(timeout=0)
                        break
                    except Timeout:
                        if waited % 10 == 0:  # twice a second: how far the other process is
                            await self._publish_waiting(remote)
                        waited += 1
                        await asyncio.sleep(0.05)
                try:
                    # another process may have finished it while we waited for the lock
                    entry = await _io(self.cache.entry, remote.cache_key)
                    blob = await _io(self.cache.blob, entry.sha256) \
                        if entry and entry.checked >= looked else None
                    if blob and (not digest or blob.digests.get(digest.alg) == digest.hex):
                        return await self._hit(blob, entry.identifier,
                                         verified=bool(digest) or entry.verified, key=entry.key)
                    self.stats["misses"] += 1
                    self.stats["downloads"] += 1
                    return await self._fetch_shared(remote, digest, keep)
                finally:
                    lock.release()
        except TimeoutError:
            if not limit.expired():
                raise  # a Stalled (also a TimeoutError) from inside: not our deadline
            raise _deadline_error(remote.display, deadline) from None

    def shared_tier(self) -> SharedTier | None:
        """The site's shared tier (``settings.tier``), made on first use; None without one.

        :raises UsageError: no installed backend serves the tier's URL.
        """
        if not self.settings.tier:
            return None
        if self._tier is None:
            from .plugins import call_first
            from .tier import SharedTier

            store = call_first(self.plugins, "hostkit_blob_tier", settings=self.settings,
                               context=self.context)
            if store is None:
                from .redact import redact_text

                shown = redact_text(self.settings.tier)
                raise UsageError(f"no backend serves the tier {shown!r}",
                                 hint="set tier (HOSTKIT_TIER) to s3://bucket/prefix or "
                                      "minio://host:port/bucket/prefix (hostkit[s3]), or unset it")
            self._tier = SharedTier(store, self.settings, self.cache, self.events, self.stats)
        return self._tier

    async def _fetch_shared(self, remote: Remote, digest: Digest | None, keep: bool = False
                            ) -> Resolved:
        """Step 4 through the site's shared tier when there is one (:mod:`hostkit.tier`):
        the tier, else the origin under a site-wide lease, then published."""
        tier = self.shared_tier()
        if tier is None:
            return await self._fetch(remote, digest, keep)
        return await tier.resolve(
            remote, digest, origin=lambda: self._fetch(remote, digest, keep),
            store=lambda info, part, digests: self._stored(remote, info, part, digests, digest,
                                                           keep))

    def _answer_limit(self) -> float:
        """Seconds a server may take to answer a request (its headers), however it trickles."""
        return self.settings.connect_timeout + self.settings.read_timeout

    async def _publish_waiting(self, remote: Remote) -> None:
        from .store.partials import partial_progress

        done, total = await _io(partial_progress, self.cache.layout, remote.cache_key)
        self.events.publish(Waiting(remote.cache_key, remote.display, done, total))

    async def _fetch(self, remote: Remote, digest: Digest | None, keep: bool = False
                     ) -> Resolved:
        """What an earlier run left on disk first (a stored blob, a partial), then the origin.

        ``keep``: bytes other than the key's entry holds are refused (ContentChanged)
        instead of recorded.
        """
        from .store.partials import PartialDownload, claim_partial, finished_blob

        layout = self.cache.layout
        entry = await _io(self.cache.entry, remote.cache_key)
        meta = await _io(finished_blob, layout, remote.cache_key,
                         entry.checked if entry else None)
        if meta is not None and \
                (adopted := await _io(self._adopt_blob, remote, meta, digest, keep)) is not None:
            return adopted
        claimed = await _io(claim_partial, layout, remote.cache_key)
        part = PartialDownload(layout, remote.cache_key, claimed=claimed)
        try:
            if part.complete:  # killed after the last byte: verify what is there, no request
                info = RemoteInfo(size=part.size, validator=part.validator,
                                  digests=dict(part.meta.get("digests") or {}))
                await part.start(_algs(digest, info), part.size)
                digests = await part.finish()
                if _matches(digests, info, digest):
                    log.info("%s: adopted the complete download an interrupted run left",
                             remote.display)
                    return await self._stored(remote, info, part, digests, digest, keep)
                part.discard()
                part = PartialDownload(layout, remote.cache_key)
            info, digests = await self.transfer(remote, digest, part)
        except BaseException as exc:
            self.events.publish(failed_event(remote, exc))
            # kept for a later resume unless the failure shows the bytes are no good, or
            # they carry no validator to resume against (a cut, Ctrl-C, a deadline: kept)
            if isinstance(exc, _BYTES_NO_GOOD) or not (
                    part.size and (strong_validator(part.validator) or part.complete)):
                part.discard()
            else:
                await part.keep()
            raise
        return await self._stored(remote, info, part, digests, digest, keep)

    async def transfer(self, remote: Remote, digest: Digest | None,
                       part) -> tuple[RemoteInfo, dict[str, str]]:
        """The download loop: open, append, retry with backoff, resume; return info and digests.

        ``part`` receives the bytes: a :class:`~hostkit.store.partials.PartialDownload`
        (a file in the cache), or a folder's small file held in memory
        (:class:`hostkit.small_files.MemoryPart`); both hash as they receive.

        Bytes are appended to a partial only when the server answered from the
        offset asked for and vouched, with the partial's own strong validator,
        that the object is the one those bytes came from. Anything else (a
        server ignoring ``If-Range``, a changed or missing validator, a weak
        ETag) starts over from byte 0.
        """
        info = RemoteInfo()
        attempt, started = 0, False
        while True:
            asked = part.size if part.size and strong_validator(part.validator) else 0
            try:
                async with self._answered(remote) as guard, \
                        remote.open(asked, part.validator if asked else None) as body:
                    guard.reschedule(None)  # headers in: min_rate watches the body now
                    info = body.info
                    if body.offset and not _may_append(part, body, asked):
                        if not asked:
                            raise TransientError(
                                f"{remote.display}: asked for the whole object, the server "
                                f"sent it from byte {body.offset}", identifier=remote.display,
                                hint="the server mishandles ranges; try again later")
                        log.info("%s: the server did not confirm the partial download "
                                 "(asked from byte %d under %s, got %s from byte %d); starting "
                                 "over", remote.display, asked, part.validator,
                                 info.validator, body.offset)
                        part.forget_validator()
                        continue
                    if not started:
                        await part.start(_algs(digest, info), body.offset)
                        started = True
                    elif body.offset != part.size:
                        await part.restart()
                    if body.offset == 0:
                        await part.record_source(validator=info.validator, total=info.size,
                                                 anonymous=remote.anonymous,
                                                 identifier=remote.display,
                                                 digests=info.digests)
                    self.events.publish(DownloadStarted(remote.cache_key, remote.display,
                                                        info.size, part.size))
                    await self._receive(remote, body, part, info.size)
                if info.size is not None and part.size != info.size:
                    raise TruncatedBody(
                        f"{remote.display}: got {part.size} of {info.size} bytes",
                        hint="the connection dropped; run the command again to resume")
                digests = await part.finish()
                failpoint("verify")
                return info, digests
            except TransientError as exc:
                from .backend.errors import retry_delay, retry_limit  # only when retrying

                attempt += 1
                limit = retry_limit(exc, self.settings)
                if attempt > limit:
                    raise
                delay = retry_delay(exc, attempt, self.settings)
                log.warning("%s; retry %d/%d in %.1fs", exc.message, attempt, limit, delay)
                self.events.publish(Retrying(remote.cache_key, remote.display, attempt, limit,
                                             delay, exc.message))
                await asyncio.sleep(delay)

    @contextlib.asynccontextmanager
    async def _answered(self, remote: Remote):
        """A timer for a server's answer (its headers, however slowly it trickles them).

        Yields the :func:`asyncio.timeout` so the caller can stop it once the
        answer is in; expiry is a :class:`Stalled` (retried, resuming).
        """
        limit = self._answer_limit()
        try:
            async with asyncio.timeout(limit) as guard:
                yield guard
        except TimeoutError:
            if not guard.expired():
                raise
            raise Stalled(f"{remote.display}: the server did not answer within {limit:g} s",
                          hint="the server is slow or stuck; a rerun resumes. Raise "
                               "HOSTKIT_READ_TIMEOUT for a very slow server",
                          identifier=remote.display) from None

    async def _receive(self, remote: Remote, body, part, total: int | None) -> None:
        """Append the body's chunks, at ``min_rate`` at least.

        Each ``read_timeout`` window must bring ``min_rate * read_timeout``
        bytes; a window that does not (a trickle, a silent part of an object
        store download) is a :class:`Stalled`, retried and resumed like a cut.
        """
        window = max(self.settings.read_timeout, 0.001)
        need = self.settings.min_rate * window
        loop = asyncio.get_running_loop()
        got = 0
        try:
            async with asyncio.timeout_at(loop.time() + window if need else None) as watch:
                async for chunk in body.chunks:
                    await part.write(chunk)
                    self.stats["bytes_from_origin"] += len(chunk)
                    self.events.publish(Progressed(remote.cache_key, remote.display, part.size,
                                                   total))
                    got += len(chunk)
                    if need and got >= need:  # this window is served: the next one starts
                        got = 0
                        watch.reschedule(loop.time() + window)
        except TimeoutError:
            if not watch.expired():
                raise
            raise Stalled(
                f"{remote.display}: the transfer stalled ({got} bytes in the last "
                f"{window:g} s, below {self.settings.min_rate} bytes/s)",
                hint="the server is trickling; a rerun resumes. Lower HOSTKIT_MIN_RATE "
                     "(0 turns the check off) for a very slow link",
                identifier=remote.display) from None

    async def _stored(self, remote: Remote, info: RemoteInfo, part, digests: dict[str, str],
                      digest: Digest | None, keep: bool = False) -> Resolved:
        """Verify and store the finished partial (in a worker thread), then say so."""
        try:
            resolved = await _io(self._store, remote, info, part, digests, digest, keep)
        except BaseException as exc:  # a mismatch with the hash or the server's digests
            self.events.publish(failed_event(remote, exc))
            raise
        self.events.publish(Finished(remote.cache_key, remote.display, resolved.sha256,
                                     resolved.size, part.downloaded))
        return resolved

    def _adopt_blob(self, remote: Remote, meta: dict, digest: Digest | None,
                    keep: bool = False) -> Resolved | None:
        """Index the blob a killed run moved into place (see ``partials.finished_blob``)."""
        blob = self.cache.adopt_orphan(str(meta["blob"]))
        if blob is None:
            return None
        if digest and self._digest(blob, digest.alg) != digest.hex:
            return None
        self._refuse_change(remote, blob.sha256, keep)
        log.info("%s: adopted the blob an interrupted run stored", remote.display)
        entry = self.cache.put_entry(remote.cache_key, remote.display, blob,
                                     validator=meta.get("validator"),
                                     immutable=bool(meta.get("immutable")) or remote.immutable,
                                     verified=digest is not None,
                                     anonymous=bool(meta.get("anonymous")) and remote.anonymous)
        return Resolved(blob.path, blob.sha256, blob.size, False, entry.identifier,
                        digest is not None, blob.digests)

    def _store(self, remote: Remote, info: RemoteInfo, part, digests: dict[str, str],
               digest: Digest | None, keep: bool = False) -> Resolved:
        try:
            check_digests(remote, info, digests, digest)
            self._refuse_change(remote, digests["sha256"], keep)  # before it is stored
            immutable = remote.immutable or info.immutable
            part.mark_stored(digests["sha256"], immutable)
            failpoint("rename")
            blob = self.cache.add_blob(part.path, digests, part.size)
        except HostkitError:
            part.discard()
            raise
        failpoint("entry")
        try:
            entry = self.cache.put_entry(remote.cache_key, remote.display, blob,
                                         validator=info.validator, immutable=immutable,
                                         verified=digest is not None,
                                         anonymous=remote.anonymous and part.meta.get(
                                             "anonymous", True) is not False)
        except HostkitError:
            part.discard()  # the blob stays indexed (prune can evict it); no stale sidecar
            raise
        failpoint("sidecar")
        part.stored()
        if digest is None:
            log.info("%s: no hash given; recorded sha256:%s (trust on first use)",
                     remote.display, blob.sha256)
        return Resolved(blob.path, blob.sha256, blob.size, False, entry.identifier,
                        digest is not None, blob.digests)

    def _refuse_change(self, remote: Remote, sha256: str, keep: bool) -> None:
        """ContentChanged when ``keep`` and the key's entry holds other bytes (blocking)."""
        if keep and (old := self.cache.entry(remote.cache_key)) and old.sha256 != sha256:
            raise content_changed(remote.display, old, sha256)


#: Failures that show the bytes on disk are of no use: the partial is deleted.
_BYTES_NO_GOOD = (HashMismatch, CacheError, NotFound, NotDirectLink, NotAFile)


def _deadline_error(display: str, deadline: float | None) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"{display}: not resolved within the {deadline:g} s deadline",
        hint="run again: the bytes downloaded so far are kept and resumed; or raise "
             "HOSTKIT_DEADLINE (0: no limit)", identifier=display)


async def _io(fn, /, *args, **kwargs):
    """Run blocking store work (SQLite and its busy waits, file I/O, hashing, fsync) in a
    worker thread, so the event loop (the daemon's, serving everyone) never stalls on it."""
    return await asyncio.to_thread(fn, *args, **kwargs)


def _flight_key(remote: Remote, keep: bool = False) -> str:
    """Downloads are shared per cache key, but never between anonymous and credentialed
    requests: each must get what its own credentials (or none) give; nor between
    strict trust on first use (``keep``: changed bytes refused) and the rest."""
    return (f"{remote.cache_key} {'anonymous' if remote.anonymous else 'credentialed'}"
            f"{'+keep' if keep else ''}")


def _algs(digest: Digest | None, info: RemoteInfo) -> list[str]:
    """The digests to compute while writing: the caller's and every one the server advertises."""
    return [a for a in (digest and digest.alg, *info.digests) if a]


def _may_append(part, body, asked: int) -> bool:
    """Whether a ranged answer continues the bytes on disk (see ``Resolver._transfer``)."""
    total = part.meta.get("size")
    return (body.offset == asked == part.size and strong_validator(body.info.validator)
            and body.info.validator == part.validator
            and (total is None or body.info.size is None or total == body.info.size))


def _matches(digests: dict[str, str], info: RemoteInfo, digest: Digest | None) -> bool:
    """Whether computed digests agree with the caller's hash and every advertised one."""
    if digest and digests.get(digest.alg) != digest.hex:
        return False
    return all(digests.get(alg, hexd) == hexd for alg, hexd in info.digests.items())
