"""The shared tier on an S3 bucket (SeaweedFS, MinIO, AWS): the requests behind :mod:`hostkit.tier`.

``tier = "s3://bucket/prefix"`` reaches the bucket as ``s3://`` identifiers do
(``AWS_ENDPOINT_URL_S3``, the profile's ``endpoint_url``, ... and botocore's
credential chain); ``minio://host:port/bucket/prefix`` names the endpoint
(``HOSTKIT_MINIO_INSECURE_HOSTS`` for plain http). Requests are signed with
SigV4 and sent through the resolver's pooled aiohttp session, as the s3
backend's downloads are: HEAD, GET (a blob in parallel ranged parts, pinned to
the ETag its HEAD saw), ListObjectsV2, and the writes the rules need:

- a blob: ``PUT`` with ``If-None-Match: *`` (create-only) and
  ``x-amz-checksum-sha256`` (the server refuses other bytes); the signature
  covers the payload's sha256 too. A server that answers ``NotImplemented`` to
  the condition gets no unconditional write: the blob is not published;
- leases: ``PUT`` with ``If-None-Match: *`` or ``If-Match: <etag>``;
- refs: a plain ``PUT``; deletes with ``If-Match`` when asked.

A 412 is :class:`hostkit.tier.TierConflict`; anything else that is not an
answer goes out as the s3 backend's errors (never with a secret).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

from multidict import CIMultiDict

from hostkit.backend import ordered_parts, part_settings, read_body, request
from hostkit.errors import HostkitError, UsageError
from hostkit.identifiers import parse_identifier
from hostkit.tier import TierConflict, TierObject, TierStore

from .objectstore import Location, ObjectMeta, check_key, store_for
from .s3 import S3Store, error_code, parse
from .sigv4 import sign

#: Statuses and codes that mean "the condition failed": someone else wrote first.
_CONFLICT = {"PreconditionFailed", "ConditionalRequestConflict"}


def s3_tier(url: str, context) -> S3TierStore | None:
    """The tier store for an ``s3://`` or ``minio://`` URL; None for other schemes.

    :raises UsageError: a malformed URL (no bucket, a version, credentials in it).
    """
    ref = parse_identifier(url)
    if ref.scheme not in ("s3", "minio"):
        return None
    if "?" in ref.rest:
        raise UsageError(f"tier {ref.display!r}: a tier is a bucket and a prefix, not a version",
                         hint="write tier = \"s3://bucket/prefix\"")
    loc, conf = parse(ref, context)
    prefix = loc.key.strip("/")
    check_key(ref, prefix, "s3://bucket/prefix")
    return store_for(context, f"tier|{conf.client_key}|{loc.bucket}|{prefix}",
                     lambda: S3TierStore(loc, S3Store(conf, context), context))


class S3TierStore(TierStore):
    """Requests on ``bucket/prefix/`` at one endpoint, with the s3 backend's credentials."""

    def __init__(self, loc: Location, s3: S3Store, context):
        self.loc = loc
        self.s3 = s3
        self.context = context
        self.prefix = loc.key.strip("/")
        self.url = loc.identifier(self.prefix)
        self.part_size, self.concurrency = part_settings(context.settings)

    def _at(self, key: str) -> Location:
        return self.loc.at(f"{self.prefix}/{key}" if self.prefix else key)

    # reading

    async def head(self, key: str) -> TierObject | None:
        """One HEAD (None: no such key)."""
        loc = self._at(key)
        status, headers, body = await self._send("HEAD", loc)
        if status == 404:
            return None
        self._check(status, body, loc)
        try:
            size = int(headers.get("Content-Length", ""))
        except ValueError:
            raise self.s3._status_error("", 502, loc) from None
        return TierObject(key, size, headers.get("ETag"))

    async def read(self, key: str, limit: int) -> tuple[TierObject, bytes] | None:
        """One GET of a small object (a ref, a lease)."""
        status, headers, body = await self._send("GET", self._at(key), limit=limit)
        if status == 404:
            return None
        self._check(status, body, self._at(key))
        return TierObject(key, len(body), headers.get("ETag")), body

    @contextlib.asynccontextmanager
    async def open(self, obj: TierObject):
        """The blob's bytes, in parallel ranged GETs pinned to the ETag its HEAD saw."""
        loc = self._at(obj.key)
        meta = ObjectMeta(size=obj.size, etag=obj.etag)
        chunks = ordered_parts(lambda a, b: self.s3.read(loc, meta, a, b), 0, obj.size,
                               self.part_size, self.concurrency)
        try:
            yield chunks
        finally:
            await chunks.aclose()

    async def list(self, prefix: str) -> AsyncIterator[TierObject]:
        """ListObjectsV2 under the tier's prefix + ``prefix``, page after page."""
        base = f"{self.prefix}/" if self.prefix else ""
        async for key, meta in self.s3.list(self._at(prefix)):
            if key.startswith(base):
                yield TierObject(key[len(base):], meta.size, meta.etag, meta.modified)

    # writing

    async def put(self, key: str, data: bytes, *, if_absent: bool = False,
                  if_match: str | None = None) -> TierObject:
        """PUT a small object, create-only or compare-and-swap when asked."""
        headers = {"Content-Type": "application/json"}
        if if_absent:
            headers["If-None-Match"] = "*"
        if if_match is not None:
            headers["If-Match"] = if_match
        loc = self._at(key)
        status, got, body = await self._send("PUT", loc, headers=headers, data=data,
                                             payload=hashlib.sha256(data).hexdigest())
        if status == 412 or error_code(body) in _CONFLICT or (if_match and status == 404):
            raise TierConflict(key)
        self._check(status, body, loc, conditional=if_absent or if_match is not None)
        return TierObject(key, len(data), got.get("ETag"))

    async def put_file(self, key: str, path: Path, size: int, sha256: str) -> bool:
        """PUT a blob create-only, its sha256 checked by the server; False when it existed."""
        loc = self._at(key)
        digest = base64.b64encode(bytes.fromhex(sha256)).decode()
        headers = {"If-None-Match": "*", "x-amz-checksum-sha256": digest,
                   "Content-Length": str(size), "Content-Type": "application/octet-stream"}
        status, _, body = await self._send("PUT", loc, headers=headers,
                                           data=_chunks(path, size), payload=sha256)
        if status == 412 or error_code(body) in _CONFLICT:
            return False
        self._check(status, body, loc, conditional=True)
        return True

    async def delete(self, key: str, *, if_match: str | None = None) -> None:
        """DELETE (a missing key is fine), conditional on the ETag when asked."""
        loc = self._at(key)
        status, _, body = await self._send("DELETE", loc,
                                           headers={"If-Match": if_match} if if_match else {})
        if status == 412 or error_code(body) in _CONFLICT:
            raise TierConflict(key)
        if status != 404:
            self._check(status, body, loc)

    # plumbing

    async def _send(self, method: str, loc: Location, *, headers: dict | None = None,
                    data=None, payload: str | None = None, limit: int = 64 << 10
                    ) -> tuple[int, CIMultiDict, bytes]:
        """One signed request: ``(status, headers, body)`` (at most ``limit`` bytes of it)."""
        signer = await self.s3._signed(loc)
        region = self.s3._regions.get(loc.bucket, signer.region)
        url = self.s3._url(loc, region)
        sent = _sign(signer, method, url, dict(headers or {}), region,
                     payload or hashlib.sha256(b"").hexdigest())
        try:
            async with request(self.context, method, url, headers=sent, data=data,
                               ssl=self.s3._ssl()) as resp:
                body = await read_body(resp, limit)
                if len(body) > limit and resp.status < 300:
                    raise _too_big(loc, limit)
                return resp.status, CIMultiDict(resp.headers), body
        except HostkitError:
            raise
        except Exception as exc:
            raise self.s3._error(exc, loc) from None

    def _check(self, status: int, body: bytes, loc: Location, *,
               conditional: bool = False) -> None:
        """Raise the s3 backend's error for an answer that is not a success."""
        if 200 <= status < 300:
            return
        code = error_code(body) or str(status)
        if conditional and code in ("NotImplemented", "501"):
            raise UsageError(f"{self.url}: the server does not take conditional writes "
                             "(If-None-Match / If-Match), which the tier needs",
                             hint="use SeaweedFS, a current MinIO or AWS S3 for the tier")
        raise self.s3._status_error(code, status, loc)


async def _chunks(path: Path, size: int) -> AsyncIterator[bytes]:
    """The file's first ``size`` bytes in 1 MiB reads, each in a worker thread."""
    import asyncio

    with open(path, "rb") as f:
        left = size
        while left > 0:
            block = await asyncio.to_thread(f.read, min(left, 1 << 20))
            if not block:
                return
            left -= len(block)
            yield block


def _sign(signer, method: str, url: str, headers: dict, region: str, payload: str) -> dict:
    """SigV4 headers for a request whose body has the sha256 ``payload`` (hex)."""
    if signer.credentials is None:
        return {**headers, "x-amz-content-sha256": payload}
    return sign(signer.credentials.get_frozen_credentials(), method, url, headers, region,
                payload=payload)


def _too_big(loc: Location, limit: int) -> HostkitError:
    from hostkit.errors import BackendError

    return BackendError(f"{loc.identifier()}: larger than the {limit} bytes a tier record "
                        "may have", hint="the tier holds something else there; check it",
                        identifier=loc.identifier())
