"""What the object-store backends (s3/minio, gs, az) share.

A backend parses its identifiers into a :class:`Location` (no I/O, no heavy
imports) and supplies a :class:`Store`: the requests for one endpoint with one
set of credentials, built on first use from its client library (s3fs's
aiobotocore client, gcsfs's credentials and session, the Azure SDK that adlfs
wraps). This module turns a Store into what the resolver and the CLI use:

- :class:`ObjectRemote`: ``stat`` is one HEAD. ``open`` reads exactly the
  object that HEAD saw (pinned by versionId / generation, or If-Match on the
  ETag) as ranged parts, ``concurrency`` of them in flight, handed over in
  order so the resolver still hashes and writes one stream. Parts waiting for
  their turn read ahead at most :data:`READ_AHEAD` bytes together, then TCP
  flow control holds the server back: memory stays flat whatever the part
  size and concurrency. A resumed download starts at the
  resolver's offset, so an interrupted transfer keeps every byte before the
  first part that failed.
- :class:`ObjectUploader`: streams a file up (in parts when it is larger than
  one part), hashing sha256 in the same pass; refuses to replace a different
  object unless asked; identical bytes already there are a no-op.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import importlib
import logging
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hostkit.errors import (
    AlreadyExists,
    BucketNotFound,
    HostkitError,
    MissingExtra,
    NotFound,
    SourceChanged,
    TransientError,
    TruncatedBody,
    UsageError,
)
from hostkit.headers import content_range
from hostkit.remote import Body, Remote, RemoteInfo, Uploader, UploadResult, upload_source_size

log = logging.getLogger("hostkit.objectstore")

#: Largest chunk handed to the resolver at once.
CHUNK = 1 << 20
#: Bytes the parts waiting for their turn may hold in memory, all together: 7 x 8 MiB, so
#: 8 parts of 8 MiB (the old defaults) or 4 of 16 MiB never wait; larger settings do.
READ_AHEAD = 56 << 20
#: Smallest upload part most stores accept (S3: 5 MiB for all but the last part).
MIN_UPLOAD_PART = 5 << 20
#: GCS resumable uploads want parts in multiples of 256 KiB.
PART_ALIGN = 256 << 10


def require(module: str, extra: str, scheme: str):
    """Import ``module`` for a backend, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(
            f"{scheme} identifiers need {module.split('.')[0]}, which is not installed: "
            f"pip install 'hostkit[{extra}]'",
            hint=f"pip install 'hostkit[{extra}]' (or 'hostkit[all]')") from None


def shown(ref) -> str:
    """The identifier as written, quoted for a message: no userinfo, no signed query values."""
    return repr(ref.display)


def check_key(ref, key: str, example: str) -> None:
    """Refuse a key with an empty, ``.`` or ``..`` segment, or a leading ``/``.

    Stores take such keys literally, but URL clients normalise them (``a/../b``
    is requested as ``b``, ``a//b`` by some as ``a/b``), so the object read or
    written would not be the one the identifier and the cache key name. An
    empty key (the bucket itself, as an upload prefix) is allowed here.
    """
    if key and any(segment in ("", ".", "..") for segment in key.split("/")):
        raise UsageError(f"{shown(ref)}: a key has no empty, '.' or '..' segments and does "
                         "not start with '/'", hint=f"write e.g. {example}")


def after_slashes(ref, form: str) -> str:
    """What follows ``scheme://``; UsageError without ``//`` or with credentials (``user@``)."""
    if not ref.rest.startswith("//"):
        raise UsageError(f"{shown(ref)} is not of the form {form}", hint=f"write {form}")
    body = ref.rest[2:]
    if "@" in body.partition("/")[0]:
        raise UsageError(f"{shown(ref)}: credentials do not go in the identifier",
                         hint=f"write {form} (credentials come from the environment or a "
                              "profile, never the identifier)")
    return body


@dataclass(frozen=True)
class Location:
    """Where an object lives: an endpoint, a bucket (container) and a key.

    ``base`` is how identifiers of this form start (``s3://``,
    ``minio://host:9000/``, ``gs://``, ``az://``) and ``version_form`` how a
    version pin is written after the key (``?versionId={}``, ``#{}``).
    ``endpoint`` is part of every cache key, so the same bucket/key on two
    endpoints never shares an index entry.
    """

    backend: str
    base: str
    endpoint: str
    bucket: str
    key: str
    version: str | None = None
    version_form: str = "?versionId={}"

    def identifier(self, key: str | None = None, version: str | None = None) -> str:
        """The identifier people write for ``key`` (default: this one), pinned to ``version``."""
        key = self.key if key is None else key
        version = self.version if key == self.key and version is None else version
        pin = self.version_form.format(version) if version else ""
        return f"{self.base}{self.bucket}/{key}{pin}"

    @property
    def cache_key(self) -> str:
        """``<backend>+<endpoint>/<bucket>/<key>[?version=<v>]``: unique across endpoints."""
        pin = f"?version={self.version}" if self.version else ""
        return f"{self.backend}+{self.endpoint}/{self.bucket}/{self.key}{pin}"

    def at(self, key: str) -> Location:
        """The same bucket at another key, unpinned."""
        return replace(self, key=key, version=None)


@dataclass
class ObjectMeta:
    """What one HEAD says about an object."""

    size: int
    etag: str | None = None
    #: versionId / generation of these bytes; reads ask for exactly this version.
    version: str | None = None
    #: md5 hex the server vouches for (S3 single-part ETag, GCS md5Hash, Azure Content-MD5).
    md5: str | None = None
    #: sha256 hex hostkit recorded at upload (object metadata); used only to spot identical
    #: bytes when uploading, never trusted for a download.
    sha256: str | None = None
    content_type: str | None = None

    @property
    def validator(self) -> str | None:
        """Changes whenever the bytes may have changed: the version if any, else the ETag."""
        return self.version or self.etag


class Store:
    """Requests against one endpoint with one set of credentials. One subclass per backend.

    Every method raises :mod:`hostkit.errors` types (map the client library's
    exceptions with the message and next step a user needs). Clients are made
    lazily on first use, inside the event loop, and closed by :meth:`aclose`.
    """

    #: GCS resumable uploads take their parts strictly in order, one at a time.
    parallel_upload_parts = True

    async def head(self, loc: Location) -> ObjectMeta:
        """Metadata of ``loc`` (its pinned version when it has one)."""
        raise NotImplementedError

    def read(self, loc: Location, meta: ObjectMeta, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``[start, end)`` of exactly the object ``meta`` describes.

        Pin the read to ``meta.version`` or make it conditional on ``meta.etag``
        and raise :class:`~hostkit.errors.TransientError` when the object changed.
        """
        raise NotImplementedError

    async def exists(self, loc: Location) -> ObjectMeta | None:
        """Metadata of ``loc``, or None when there is no such object (the bucket must exist)."""
        try:
            return await self.head(loc)
        except BucketNotFound:
            raise
        except NotFound:  # no such key
            return None

    async def recorded_sha256(self, loc: Location, meta: ObjectMeta) -> str | None:
        """The sha256 hostkit recorded when it uploaded this object, if any."""
        return meta.sha256

    async def put(self, loc: Location, data: bytes, *, sha256: str,
                  if_absent: bool) -> str | None:
        """Write a small object in one request; return its new version (None if unversioned).

        With ``if_absent``, raise :class:`AlreadyExists` when the key exists by then.
        """
        raise NotImplementedError

    async def begin_upload(self, loc: Location, size: int, *, sha256: str | None,
                           if_absent: bool) -> Any:
        """Start a multipart (block, resumable) upload; return a handle for the parts.

        ``sha256`` is known here only when the file was hashed beforehand;
        ``if_absent`` asks the finished upload to fail if the key exists by then.
        """
        raise NotImplementedError

    async def upload_part(self, upload: Any, number: int, offset: int, data: bytes,
                          last: bool) -> Any:
        """Send part ``number`` (from 1) at ``offset``; return what completing needs."""
        raise NotImplementedError

    async def complete_upload(self, upload: Any, parts: list, *, sha256: str,
                              if_absent: bool) -> str | None:
        """Finish the upload, record ``sha256`` with it; return the new version (or None)."""
        raise NotImplementedError

    async def abort_upload(self, upload: Any) -> None:
        """Drop the parts of an unfinished upload (best effort)."""

    async def aclose(self) -> None:
        """Close the client."""


def store_for(context, key: str, make: Callable[[], Store]) -> Store:
    """The Store for ``key`` (endpoint + credentials) kept on the resolver's context."""
    store = context.clients.get(key)
    if store is None:
        store = context.clients[key] = make()
    return store


def object_store_hooks(schemes: tuple[str, ...], parse, store_class, *, example: str,
                       container: str = "bucket", item: str = "object"):
    """The ``hostkit_resolve`` and ``hostkit_upload`` hooks of an object-store backend.

    ``parse(ref, settings)`` splits an identifier of one of ``schemes`` into a
    :class:`Location` and a config (no I/O); the config's ``client_key`` names
    the ``store_class(config, context)`` kept on the resolver's context for that
    endpoint and those credentials. ``example`` names one object, for the hint
    when an identifier names a ``container`` or a folder instead of one ``item``.
    A backend module assigns both: ``hostkit_resolve, hostkit_upload = ...``.
    """
    from hostkit.errors import NotAFile
    from hostkit.hookspecs import hookimpl

    def store(context, conf) -> Callable[[], Store]:
        return lambda: store_for(context, conf.client_key, lambda: store_class(conf, context))

    @hookimpl
    def hostkit_resolve(ref, context):
        """Claim the backend's identifiers (no I/O: configuration files at most)."""
        if ref.scheme not in schemes:
            return None
        loc, conf = parse(ref, context.settings)
        if not loc.key or loc.key.endswith("/"):
            raise NotAFile(f"{loc.identifier()} names a {container} or a folder, not one {item}",
                           hint=f"name one {item}: {example}", identifier=loc.identifier())
        check_key(ref, loc.key, example)
        return ObjectRemote(loc, store(context, conf), context.settings)

    @hookimpl
    def hostkit_upload(destination, context):
        """Upload to a key, or under a prefix ending in ``/``."""
        if destination.scheme not in schemes:
            return None
        loc, conf = parse(destination, context.settings)
        check_key(destination, loc.key.removesuffix("/"), example)
        return ObjectUploader(loc, store(context, conf), context.settings)

    return hostkit_resolve, hostkit_upload


# -- reading ------------------------------------------------------------------


class ObjectRemote(Remote):
    """An object in a bucket. ``stat`` is one HEAD; ``open`` reads ranged parts in parallel."""

    def __init__(self, loc: Location, store: Callable[[], Store], settings):
        self.loc = loc
        self.cache_key = loc.cache_key
        self.display = loc.identifier()
        self.immutable = loc.version is not None
        self._store = store
        self.part_size = max(int(settings.part_size), 64 << 10)
        self.concurrency = max(int(settings.concurrency), 1)
        #: what the last ``stat`` saw, for the ``open`` that follows it (used once)
        self._stat_meta: ObjectMeta | None = None

    async def stat(self) -> RemoteInfo:
        """One HEAD: size, validator (version or ETag), advertised md5."""
        self._stat_meta = await self._store().head(self.loc)
        return self._info(self._stat_meta)

    def _info(self, meta: ObjectMeta) -> RemoteInfo:
        return RemoteInfo(size=meta.size, validator=meta.validator,
                          digests={"md5": meta.md5} if meta.md5 else {},
                          immutable=self.immutable, content_type=meta.content_type,
                          filename=self.loc.key.rsplit("/", 1)[-1] or None)

    @contextlib.asynccontextmanager
    async def open(self, offset: int = 0, validator: str | None = None):
        """Bytes from ``offset`` when the object still matches ``validator``, else from 0."""
        store = self._store()
        # a revalidation's HEAD serves the download right after it; a retry HEADs again.
        # The reads are pinned to what that HEAD saw, so a change meanwhile fails them.
        meta, self._stat_meta = self._stat_meta, None
        if meta is None:
            meta = await store.head(self.loc)
        info = self._info(meta)
        resume = bool(offset and validator and validator == info.validator
                      and offset <= meta.size)
        start = offset if resume else 0
        chunks = ordered_parts(lambda a, b: store.read(self.loc, meta, a, b), start, meta.size,
                               self.part_size, self.concurrency)
        try:
            yield Body(info, start, chunks)
        finally:
            await chunks.aclose()  # stops the parts still in flight


async def ordered_parts(fetch: Callable[[int, int], AsyncIterator[bytes]], start: int, end: int,
                        part_size: int, concurrency: int,
                        read_ahead: int | None = None) -> AsyncIterator[bytes]:
    """Yield bytes ``[start, end)`` in order, fetching up to ``concurrency`` ranges at once.

    ``fetch(a, b)`` iterates over bytes ``[a, b)``. The oldest part streams
    straight through; the others read ahead until their turn, together at most
    ``read_ahead`` bytes: past that a part stops reading, and TCP flow control
    holds the server back (aiohttp drops the read timeout while it is paused).
    So memory stays flat whatever the part size, and parts can be large, which
    spares the server a request per few MiB. A failed part raises only once
    every byte before it was yielded, so the caller keeps the longest prefix and
    resumes from there.
    """
    if start >= end:
        return
    if end - start <= part_size or concurrency <= 1:
        async with contextlib.aclosing(_exact(fetch, start, end)) as chunks:
            async for chunk in chunks:
                yield chunk
        return
    bounds = iter([(a, min(a + part_size, end)) for a in range(start, end, part_size)])
    window: collections.deque[_Part] = collections.deque()
    read_ahead = READ_AHEAD if read_ahead is None else read_ahead
    cap = max(read_ahead // (concurrency - 1), CHUNK)

    def launch() -> None:
        nxt = next(bounds, None)
        if nxt is not None:
            window.append(_Part(fetch, *nxt, cap))

    for _ in range(concurrency):
        launch()
    try:
        while window:
            async for chunk in window[0].drain():
                yield chunk
            window.popleft()
            launch()
    finally:
        for part in window:
            part.task.cancel()
        await asyncio.gather(*(part.task for part in window), return_exceptions=True)


async def _exact(fetch, a: int, b: int) -> AsyncIterator[bytes]:
    """``fetch(a, b)``, raising TruncatedBody unless it gave exactly ``b - a`` bytes."""
    got = 0
    async with contextlib.aclosing(fetch(a, b)) as chunks:
        async for chunk in chunks:
            got += len(chunk)
            if got > b - a:
                raise TruncatedBody(f"asked for {b - a} bytes at {a}, got more",
                                    hint="the server ignored the range; try again")
            yield chunk
    if got != b - a:
        raise TruncatedBody(f"the body ended after {got} of {b - a} bytes at offset {a}",
                            hint="the connection dropped; run again to resume")


class _Part:
    """One range fetched in the background; its chunks queue (up to ``cap`` bytes) until drained."""

    def __init__(self, fetch, a: int, b: int, cap: int):
        self.chunks: collections.deque[bytes] = collections.deque()
        self.done = False
        self.error: BaseException | None = None
        self._queued = 0
        self._cap = cap
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self.task = asyncio.ensure_future(self._run(fetch, a, b))

    async def _run(self, fetch, a: int, b: int) -> None:
        try:
            async with contextlib.aclosing(_exact(fetch, a, b)) as chunks:
                async for chunk in chunks:
                    self.chunks.append(chunk)
                    self._queued += len(chunk)
                    self._wake.set()
                    if self._queued >= self._cap:  # full: stop reading until drained
                        self._room.clear()
                        await self._room.wait()
        except Exception as exc:
            self.error = exc
        finally:
            self.done = True
            self._wake.set()

    async def drain(self) -> AsyncIterator[bytes]:
        """The part's bytes in order as they arrive; its error once they are all out."""
        while True:
            while self.chunks:
                chunk = self.chunks.popleft()
                self._queued -= len(chunk)
                if self._queued < self._cap:
                    self._room.set()
                yield chunk
            if self.done:
                if self.chunks:
                    continue
                if self.error is not None:
                    raise self.error
                return
            self._wake.clear()
            await self._wake.wait()


# -- uploading ----------------------------------------------------------------


class ObjectUploader(Uploader):
    """Uploads a local file to a key (or under a prefix ending in ``/``)."""

    def __init__(self, loc: Location, store: Callable[[], Store], settings):
        self.loc = loc
        self._store = store
        self.part_size = max(int(settings.part_size), MIN_UPLOAD_PART)
        self.concurrency = max(int(settings.concurrency), 1)

    async def upload(self, source: Path, *, overwrite: bool = False,
                     content_addressed: bool = False, progress=None) -> UploadResult:
        """Stream ``source`` up with sha256 in the same pass; return the identifier and sha256.

        With ``content_addressed`` the key is ``<prefix>/<sha256>``. An existing
        object with the same bytes is left alone (``created=False``); a different
        one is replaced only with ``overwrite``.
        """
        source = Path(source)
        size = upload_source_size(source)
        if self.loc.version:
            raise UsageError(f"cannot upload to a pinned version ({self.loc.identifier()})",
                             hint="name the key without a version; the upload prints the new one")
        store = self._store()
        known: dict[str, str] = {}
        key = self.loc.key
        if content_addressed:
            known = await _hash_file(source, ("sha256",))
            key = (key if key.endswith("/") or not key else key + "/") + known["sha256"]
        elif not key or key.endswith("/"):
            key = key + source.name
        loc = self.loc.at(key)
        existing = await store.exists(loc)
        if existing is not None:
            same, known = await self._same(store, loc, existing, source, size, known)
            if same:
                log.info("%s already holds these bytes; nothing uploaded", loc.identifier())
                return UploadResult(loc.identifier(version=existing.version), known["sha256"],
                                    size, created=False)
            if not overwrite:
                raise AlreadyExists(
                    f"{loc.identifier()} already exists and holds different bytes "
                    f"({existing.size} bytes)",
                    hint="pass --overwrite to replace it, upload under another key, or use "
                         "--content-addressed", identifier=loc.identifier())
        if progress is not None:
            progress.start(loc.identifier(), size, 0)
        try:
            version, sha256 = await self._send(store, loc, source, size, known.get("sha256"),
                                               if_absent=existing is None, progress=progress)
        finally:
            if progress is not None:
                progress.close()
        if known.get("sha256") and known["sha256"] != sha256:
            raise SourceChanged(f"{source} changed while it was being uploaded",
                               hint="upload it again once nothing writes to it")
        return UploadResult(loc.identifier(version=version), sha256, size, created=True)

    async def _same(self, store: Store, loc: Location, existing: ObjectMeta, source: Path,
                    size: int, known: dict[str, str]) -> tuple[bool, dict[str, str]]:
        if existing.size != size:  # different bytes: no need to read the file here
            return False, known
        recorded = await store.recorded_sha256(loc, existing)
        # one pass for what the comparison needs, on top of what is known already
        algs = ("sha256",) if recorded or not existing.md5 else ("sha256", "md5")
        if not all(a in known for a in algs):
            known = {**known, **await _hash_file(source, algs)}
        if recorded:
            return recorded == known["sha256"], known
        return bool(existing.md5) and existing.md5 == known.get("md5"), known

    async def _send(self, store: Store, loc: Location, source: Path, size: int,
                    sha256: str | None, *, if_absent: bool, progress) -> tuple[str | None, str]:
        hasher = hashlib.sha256()
        with open(source, "rb") as f:
            if size <= self.part_size:
                data = await asyncio.to_thread(_read_hashed, f, size + 1, hasher)
                if len(data) != size:
                    raise SourceChanged(f"{source} changed size while it was being uploaded",
                                       hint="upload it again once nothing writes to it")
                version = await store.put(loc, data, sha256=hasher.hexdigest(),
                                          if_absent=if_absent)
                if progress is not None:
                    progress.advance(size)
                return version, hasher.hexdigest()
            part_size = _upload_part_size(size, self.part_size)
            upload = await store.begin_upload(loc, size, sha256=sha256, if_absent=if_absent)
            try:
                parts = await self._send_parts(store, upload, f, size, part_size, hasher,
                                               progress)
                digest = hasher.hexdigest()
                version = await store.complete_upload(upload, parts, sha256=digest,
                                                      if_absent=if_absent)
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.shield(store.abort_upload(upload))
                raise
        return version, digest

    async def _send_parts(self, store: Store, upload, f, size: int, part_size: int, hasher,
                          progress) -> list:
        limit = self.concurrency if store.parallel_upload_parts else 1
        running: set[asyncio.Task] = set()
        tasks: list[asyncio.Task] = []

        async def send(number: int, offset: int, data: bytes):
            result = await store.upload_part(upload, number, offset, data,
                                             offset + len(data) >= size)
            if progress is not None:
                progress.advance(len(data))
            return result

        try:
            offset, number = 0, 0
            while offset < size:
                data = await asyncio.to_thread(_read_hashed, f, min(part_size, size - offset),
                                               hasher)
                if not data:
                    raise SourceChanged("the file got shorter while it was being uploaded",
                                       hint="upload it again once nothing writes to it")
                number += 1
                task = asyncio.ensure_future(send(number, offset, data))
                tasks.append(task)
                running.add(task)
                task.add_done_callback(running.discard)
                offset += len(data)
                while len(running) >= limit:
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    for t in tasks:
                        if t.done() and t.exception() is not None:
                            raise t.exception()
            if f.read(1):
                raise SourceChanged("the file grew while it was being uploaded",
                                   hint="upload it again once nothing writes to it")
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise


def _upload_part_size(size: int, wanted: int) -> int:
    # at most 10,000 parts (S3), each a multiple of 256 KiB (GCS)
    part = max(wanted, MIN_UPLOAD_PART, -(-size // 10_000))
    return -(-part // PART_ALIGN) * PART_ALIGN


def _read_hashed(f, n: int, hasher) -> bytes:
    data = f.read(n)
    hasher.update(data)
    return data


async def _hash_file(path: Path, algs) -> dict[str, str]:
    from hostkit.hashes import hash_file

    return await asyncio.to_thread(hash_file, path, algs)


# -- helpers for backends -----------------------------------------------------


class ObjectChanged(Exception):
    """A part's answer names another object than the HEAD saw (a different validator)."""

    def __init__(self, header: str, expected: str, found: str | None):
        super().__init__(f"{header} {found!r} instead of {expected!r}")
        self.header = header


class HttpStatus(Exception):
    """A ranged GET answered something other than the part: status and the start of the body."""

    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


@contextlib.asynccontextmanager
async def http_request(context, method: str, url: str, *, headers=None, ssl=True):
    """One request through the resolver's pooled aiohttp session, URL sent as given.

    The URL is already percent-encoded (it may be signed: it must go out byte
    for byte), proxies come from the environment, redirects are not followed.
    """
    from yarl import URL

    session = await context.http_session()
    target = URL(url, encoded=True)
    async with session.request(method, target, headers=headers, ssl=ssl,
                               allow_redirects=False, **context.proxy_for(target)) as resp:
        yield resp


def range_headers(start: int, end: int) -> dict[str, str]:
    """The headers of a ranged read of bytes ``[start, end)`` (no content coding)."""
    return {"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "identity"}


async def ranged_get(context, url: str, start: int, end: int, *, headers=None,
                     ssl=True, expect: dict[str, str] | None = None,
                     pinned_by_url: bool = False) -> AsyncIterator[bytes]:
    """Stream bytes ``[start, end)`` of ``url`` through the resolver's pooled aiohttp session.

    The object stores sign the request (S3: SigV4 headers over the same Range)
    or pass auth ``headers`` (GCS); the bytes then arrive through the same tuned
    session as any direct link. Raises :class:`HttpStatus` for an answer that
    is not the asked part. The URL may carry a signature: it never goes into a
    message.

    ``expect`` maps response headers to the values the HEAD saw (the ETag, a
    version id, a generation). A part is taken only when its answer carries
    every one of them: a server that ignores ``If-Match`` or a version pin and
    sends another object's bytes raises :class:`ObjectChanged`, and the
    resolver starts over from byte 0 instead of mixing two objects. With
    ``pinned_by_url`` (the URL itself names the version, as GCS's
    ``generation=``), an answer without those headers is taken; one that names
    another version is not.
    """
    request_headers = {**range_headers(start, end), **(headers or {})}
    async with http_request(context, "GET", url, headers=request_headers, ssl=ssl) as resp:
        whole = resp.status == 200 and start == 0 and resp.content_length == end
        if resp.status != 206 and not whole:
            body = await resp.content.read(4096)
            raise HttpStatus(resp.status, body.decode("utf-8", "replace"))
        for name, value in (expect or {}).items():
            found = resp.headers.get(name)
            if found != value and not (found is None and pinned_by_url):
                raise ObjectChanged(name, value, found)
        if resp.status == 206:
            first, _ = content_range(resp.headers) or ("?", None)
            if first != start:
                raise TruncatedBody(f"asked for bytes from {start}, got {first}",
                                    hint="the server ignored the range; try again")
        async for chunk in resp.content.iter_any():
            yield chunk


def no_bucket(loc: Location, where: str, hint: str, *, container: str = "bucket"
              ) -> BucketNotFound:
    """BucketNotFound for a missing bucket (container): ``exists`` must not take it for a key."""
    return BucketNotFound(f"{loc.identifier()}: there is no {container} {loc.bucket!r} at "
                          f"{where}", hint=hint, identifier=loc.identifier())


def created_meanwhile(loc: Location) -> AlreadyExists:
    """A conditional write found the key taken: someone else created it since we looked."""
    return AlreadyExists(f"{loc.identifier()} was created by someone else meanwhile",
                         hint="check what is there now; pass --overwrite to replace it",
                         identifier=loc.identifier())


def vanished(display: str, item: str = "object") -> TransientError:
    """A 404 while reading what the HEAD just saw: it changed or was deleted meanwhile."""
    return TransientError(f"{display}: the {item} disappeared during the download",
                          hint="try again", identifier=display)


def changed(display: str, item: str = "object") -> TransientError:
    """A read conditional on the HEAD's validator failed (412): the object changed."""
    return TransientError(f"{display}: the {item} changed during the download",
                          hint="run again to fetch the new version", identifier=display)


def busy(display: str, answer) -> TransientError:
    """A 429 or 5xx: worth retrying later."""
    return TransientError(f"{display}: the server answered {answer}",
                          hint="the server is busy or failing; try again later",
                          identifier=display)


def env_true(name: str) -> bool:
    """An environment flag set to 1/true/yes/on."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def network_error(exc: BaseException, display: str, endpoint: str) -> HostkitError | None:
    """Map a connection-level failure (aiohttp, OSError, timeouts) to Unreachable/Transient.

    A body cut short is TruncatedBody, a connection that could not be made Unreachable.
    """
    import socket

    import aiohttp

    from hostkit.errors import TransientError, Unreachable
    from hostkit.redact import redact_text

    # signed URLs carry credentials in their query: cut every query out of the text
    detail = re.sub(r"\?\S*", "?...", redact_text(str(exc) or type(exc).__name__))[:200]
    if isinstance(exc, aiohttp.ClientPayloadError):
        return TruncatedBody(f"{display}: the download from {endpoint} ended early",
                             identifier=display,
                             hint="the connection dropped; run again to resume")
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError
                  | ConnectionRefusedError | socket.gaierror):
        return Unreachable(f"{display}: cannot connect to {endpoint} ({detail})",
                           identifier=display,
                           hint="check the endpoint and your network; the server may be down "
                                "or the endpoint misconfigured")
    if isinstance(exc, TimeoutError):
        return TransientError(f"{display}: {endpoint} timed out", identifier=display,
                              hint="the server is slow or unreachable; raise "
                                   "HOSTKIT_READ_TIMEOUT or try again later")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return TransientError(f"{display}: the connection failed ({detail})",
                              identifier=display, hint="try again; a rerun resumes")
    return None
