"""What the object-store backends (s3/minio, gs, az) share.

A backend parses its identifiers into a :class:`Location` (no I/O, no heavy
imports) and supplies a :class:`Store`: the requests for one endpoint with one
set of credentials, built on first use from its client library (s3fs's
aiobotocore client, gcsfs's credentials and session, the Azure SDK that adlfs
wraps). This module turns a Store into what the resolver and the CLI use:

- :class:`ObjectRemote`: ``stat`` is one HEAD. ``open`` reads exactly the
  object that HEAD saw (pinned by versionId / generation, or If-Match on the
  ETag) as ranged parts, ``concurrency`` of them in flight, handed over in
  order (the toolkit's :func:`hostkit.backend.ordered_parts`) so the resolver
  still hashes and writes one stream. A resumed download starts at the
  resolver's offset, so an interrupted transfer keeps every byte before the
  first part that failed.
- :class:`ObjectTreeRemote`: a folder (a key ending in ``/``, or ``bucket/``):
  its ``list`` pages through the store's listing (:meth:`Store.list`) and
  gives each object an :class:`ObjectRemote` that already holds what the
  listing said, so a file costs its GETs and no HEAD.
- :class:`ObjectUploader`: decides what an upload does (which key, whether
  the bytes are there already) and streams the file up through the toolkit's
  :func:`hostkit.backend.send_file`; refuses to replace a different
  object unless asked; identical bytes already there are a no-op.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hostkit.backend import (
    MultipartTarget,
    hash_file,
    ordered_parts,
    part_settings,
    send_file,
)
from hostkit.backend.multipart import MIN_UPLOAD_PART
from hostkit.errors import (
    AlreadyExists,
    BackendError,
    BucketNotFound,
    NotFound,
    SourceChanged,
    TransientError,
    UsageError,
)
from hostkit.remote import (
    Body,
    Remote,
    RemoteInfo,
    TreeEntry,
    Uploader,
    UploadResult,
    upload_source_size,
)

log = logging.getLogger("hostkit.objectstore")


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
    #: When the object was written (Unix time), where the answer says (a listing).
    modified: float | None = None

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

    def public_url(self, loc: Location, version: str | None = None) -> str | None:
        """The plain http(s) URL of ``loc`` (readable with no credentials only if public)."""
        return None

    def list(self, loc: Location) -> AsyncIterator[tuple[str, ObjectMeta]]:
        """``(key, metadata)`` of every object whose key starts with ``loc.key``, at any
        depth, page after page as the listing answers (one request per page)."""
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

    ``parse(ref, context)`` splits an identifier of one of ``schemes`` into a
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
        """Claim the backend's identifiers (no I/O: configuration files at most); a key
        ending in ``/`` (or ``bucket/``) names a folder."""
        if ref.scheme not in schemes:
            return None
        loc, conf = parse(ref, context)
        if loc.key.endswith("/") or (not loc.key and names_folder(ref)):
            if loc.version:
                raise UsageError(f"{shown(ref)} names a folder, which has no version",
                                 hint="pin a folder by its manifest's sha256 (--hash), as "
                                      "`hostkit resolve --json` prints it", identifier=ref.display)
            check_key(ref, loc.key.removesuffix("/"), example)
            return ObjectTreeRemote(loc, store(context, conf), context.settings)
        if not loc.key:
            raise NotAFile(f"{loc.identifier()} names a {container} or a folder, not one {item}",
                           hint=f"name one {item}: {example}", identifier=loc.identifier())
        check_key(ref, loc.key, example)
        return ObjectRemote(loc, store(context, conf), context.settings)

    @hookimpl
    def hostkit_upload(destination, context):
        """Upload to a key, or under a prefix ending in ``/``."""
        if destination.scheme not in schemes:
            return None
        loc, conf = parse(destination, context)
        check_key(destination, loc.key.removesuffix("/"), example)
        return ObjectUploader(loc, store(context, conf), context.settings)

    return hostkit_resolve, hostkit_upload


def names_folder(ref) -> bool:
    """Whether an identifier with an empty key ends in ``/`` (``s3://bucket/``: the whole
    bucket as a folder), before any version or generation."""
    body = ref.rest.split("?", 1)[0].split("#", 1)[0]
    return body.endswith("/") and body.strip("/").count("/") <= (1 if ref.scheme == "minio"
                                                               else 0)


# -- reading ------------------------------------------------------------------


class ObjectRemote(Remote):
    """An object in a bucket. ``stat`` is one HEAD; ``open`` reads ranged parts in parallel."""

    def __init__(self, loc: Location, store: Callable[[], Store], settings,
                 listed: ObjectMeta | None = None):
        self.loc = loc
        self.cache_key = loc.cache_key
        self.display = loc.identifier()
        self.immutable = loc.version is not None
        self._store = store
        self.part_size, self.concurrency = part_settings(settings)
        #: what the last ``stat`` saw, for the ``open`` that follows it (used once); a
        #: folder's listing gives it for the first download (reads stay pinned to it)
        self._stat_meta: ObjectMeta | None = listed

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


class ObjectTreeRemote(Remote):
    """A folder in a bucket: every object under a prefix (``s3://bucket/prefix/``)."""

    tree = True

    def __init__(self, loc: Location, store: Callable[[], Store], settings):
        self.loc = loc
        self.cache_key = loc.cache_key
        self.display = loc.identifier()
        self._store = store
        self._settings = settings

    async def list(self):  # type: ignore[override]  # an async generator
        """Every object under the prefix, page by page: a :class:`TreeEntry` each, whose
        Remote reads exactly the object listed (its version or ETag)."""
        prefix = self.loc.key
        async for key, meta in self._store().list(self.loc):
            if not key.startswith(prefix):
                raise BackendError(f"{self.display}: the listing named {key[:200]!r}, which is "
                                   "not under the prefix asked for", identifier=self.display,
                                   hint="the server's listing is wrong; report it to its "
                                        "operator")
            loc = self.loc.at(key)
            yield TreeEntry(key[len(prefix):], ObjectRemote(loc, self._store, self._settings,
                                                            listed=meta),
                            size=meta.size, validator=meta.validator,
                            digests={"md5": meta.md5} if meta.md5 else {})


# -- uploading ----------------------------------------------------------------


class ObjectUploader(Uploader):
    """Uploads a local file to a key (or under a prefix ending in ``/``)."""

    def __init__(self, loc: Location, store: Callable[[], Store], settings):
        self.loc = loc
        self._store = store
        part_size, self.concurrency = part_settings(settings)
        self.part_size = max(part_size, MIN_UPLOAD_PART)

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
            known = await hash_file(source, ("sha256",))
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
                                    size, created=False,
                                    url=store.public_url(loc, existing.version))
            if not overwrite:
                raise AlreadyExists(
                    f"{loc.identifier()} already exists and holds different bytes "
                    f"({existing.size} bytes)",
                    hint="pass --overwrite to replace it, upload under another key, or use "
                         "--content-addressed", identifier=loc.identifier())
        if progress is not None:
            progress.start(loc.identifier(), size, 0)
        try:
            version, sha256 = await send_file(
                _StoreTarget(store, loc, if_absent=existing is None), source, size,
                part_size=self.part_size, concurrency=self.concurrency,
                sha256=known.get("sha256"), progress=progress)
        finally:
            if progress is not None:
                progress.close()
        if known.get("sha256") and known["sha256"] != sha256:
            raise SourceChanged(f"{source} changed while it was being uploaded",
                               hint="upload it again once nothing writes to it")
        return UploadResult(loc.identifier(version=version), sha256, size, created=True,
                            url=store.public_url(loc, version))

    async def _same(self, store: Store, loc: Location, existing: ObjectMeta, source: Path,
                    size: int, known: dict[str, str]) -> tuple[bool, dict[str, str]]:
        if existing.size != size:  # different bytes: no need to read the file here
            return False, known
        recorded = await store.recorded_sha256(loc, existing)
        # one pass for what the comparison needs, on top of what is known already
        algs = ("sha256",) if recorded or not existing.md5 else ("sha256", "md5")
        if not all(a in known for a in algs):
            known = {**known, **await hash_file(source, algs)}
        if recorded:
            return recorded == known["sha256"], known
        return bool(existing.md5) and existing.md5 == known.get("md5"), known

class _StoreTarget(MultipartTarget):
    """One upload to ``loc`` through a :class:`Store`, as the toolkit's uploader sees it."""

    def __init__(self, store: Store, loc: Location, *, if_absent: bool):
        self.store, self.loc, self.if_absent = store, loc, if_absent
        self.parallel = store.parallel_upload_parts

    async def put(self, data: bytes, *, sha256: str) -> str | None:
        return await self.store.put(self.loc, data, sha256=sha256, if_absent=self.if_absent)

    async def begin(self, size: int, *, sha256: str | None) -> Any:
        return await self.store.begin_upload(self.loc, size, sha256=sha256,
                                             if_absent=self.if_absent)

    async def part(self, upload: Any, number: int, offset: int, data: bytes, last: bool) -> Any:
        return await self.store.upload_part(upload, number, offset, data, last)

    async def complete(self, upload: Any, parts: list, *, sha256: str) -> str | None:
        return await self.store.complete_upload(upload, parts, sha256=sha256,
                                                if_absent=self.if_absent)

    async def abort(self, upload: Any) -> None:
        await self.store.abort_upload(upload)


# -- helpers for backends -----------------------------------------------------


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


def env_true(name: str) -> bool:
    """An environment flag set to 1/true/yes/on."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


async def check_public_url(remote, context, *, private: tuple[str, str],
                           pinned: str | None = None):
    """``hostkit check``'s part common to the object stores: probe the object's plain URL
    with no credential (:func:`hostkit_backends.http.check_url`). Returns its Findings,
    with ``permanent`` passed as ``pinned`` says for an identifier naming a version; None
    when the store has no URL to give (an unknown endpoint).

    :param private: the message and fix when no anonymous GET may read the object.
    """
    from hostkit.hookspecs import Verdict
    from hostkit.identifiers import parse_identifier

    from .http import check_url

    loc = remote.loc
    url = remote._store().public_url(loc, loc.version)
    if url is None:
        return None
    found = await check_url(parse_identifier(url), context, private=private)
    found.fetch = True  # the caller's own credentials may read what no anonymous GET can
    if loc.version and pinned:
        found.permanent = Verdict(True, pinned)
    return found
