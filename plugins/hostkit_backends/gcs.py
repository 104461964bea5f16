"""gcs backend: Google Cloud Storage.

Identifiers::

    gs://bucket/key                 the live object (revalidated by generation)
    gs://bucket/key#GENERATION      one generation: immutable, cached for good
                                    (``?generation=N`` is accepted too)

Credentials come through gcsfs (``hostkit[gcs]``): ``GOOGLE_APPLICATION_CREDENTIALS``
(a service-account or authorized-user file), else Google's application default
credentials (``gcloud auth application-default login``, metadata server).
``HOSTKIT_GCS_ANONYMOUS=1`` sends unauthenticated requests (public buckets).
``STORAGE_EMULATOR_HOST`` points everything at an emulator.

gcsfs provides the credentials; the requests themselves (JSON API, media
downloads with Range, resumable uploads) go through the resolver's pooled
aiohttp session, so a dead endpoint fails fast instead of after gcsfs's six
retries, and downloads stream in parallel ranged parts like S3's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
from dataclasses import dataclass
from urllib.parse import quote

from hostkit.backend import (
    HttpStatus,
    ObjectChanged,
    network_error,
    ranged_get,
    read_body,
    request,
    require,
    status_error,
)
from hostkit.errors import (
    BackendError,
    CredentialsNeeded,
    CredentialsRefused,
    HostkitError,
    NotFound,
    TransientError,
    UsageError,
)
from hostkit.headers import md5_from_base64
from hostkit.hookspecs import hookimpl
from hostkit.remote import BackendInfo
from hostkit.settings import Option

from .objectstore import (
    Location,
    ObjectMeta,
    Store,
    after_slashes,
    changed,
    check_public_url,
    created_meanwhile,
    no_bucket,
    object_store_hooks,
    shown,
    vanished,
)

GOOGLE_ENDPOINT = "https://storage.googleapis.com"
#: Objects asked for per page of a folder's listing (GCS's own maximum).
LIST_PAGE = 1000
#: The most a JSON API answer (an object resource, a listing page) may hold.
_MAX_ANSWER = 16 << 20


@hookimpl
def hostkit_backends():
    """The gcs backend: Google Cloud Storage objects."""
    return [BackendInfo(
        name="gcs", schemes=("gs",),
        summary="Google Cloud Storage: application default credentials, generation pins, "
                "parallel ranged reads, upload",
        examples=("gs://bucket/key", "gs://bucket/key#GENERATION"), extra="gcs")]


@hookimpl
def hostkit_settings():
    """``HOSTKIT_GCS_ANONYMOUS`` (or ``anonymous`` in ``[backends.gcs]``)."""
    return [Option("gcs", "anonymous", "bool", False,
                   "send unauthenticated requests (public buckets)")]


@dataclass(frozen=True)
class GcsConfig:
    """The endpoint and which credentials to use, decided without I/O."""

    endpoint: str
    token: str  # "anon", "google_default" or a credentials file path

    @property
    def client_key(self) -> str:
        return f"gcs|{self.endpoint}|{self.token}"


def parse(ref, context) -> tuple[Location, GcsConfig]:
    """Split ``gs://bucket/key[#generation]`` and decide endpoint and credentials."""
    body, version = after_slashes(ref, "gs://bucket/key or gs://bucket/key#GENERATION"), None
    if match := re.fullmatch(r"(.*?)(?:#|\?generation=)(\d+)", body, re.S):
        body, version = match.groups()
    elif "#" in body or "?" in body:
        raise UsageError(f"{shown(ref)}: a generation is digits",
                         hint="write gs://bucket/key#GENERATION")
    bucket, _, key = body.partition("/")
    if not 3 <= len(bucket) <= 222 or not re.fullmatch(r"[a-z0-9._-]+", bucket):
        raise UsageError(f"{shown(ref)}: {bucket!r} is not a bucket name",
                         hint="write gs://bucket/key (bucket names are lowercase)")
    emulator = os.environ.get("STORAGE_EMULATOR_HOST", "").strip()
    if emulator and emulator != "default":
        endpoint = emulator if "://" in emulator else f"http://{emulator}"
    else:
        endpoint = GOOGLE_ENDPOINT
    endpoint = endpoint.rstrip("/")
    if context.option("gcs", "anonymous"):
        token = "anon"
    elif path := os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        token = path
    else:
        token = "google_default"
    loc = Location(backend="gs", base="gs://", endpoint=endpoint, bucket=bucket, key=key,
                   version=version, version_form="#{}")
    return loc, GcsConfig(endpoint, token)


class GcsStore(Store):
    """JSON-API requests to one GCS endpoint, authorized by gcsfs's credentials."""

    parallel_upload_parts = False  # resumable uploads take their chunks in order

    def __init__(self, conf: GcsConfig, context):
        self.conf = conf
        self.context = context
        self._credentials = None
        self._lock = asyncio.Lock()

    # plumbing

    async def _auth(self, loc: Location, headers: dict | None = None) -> dict:
        """``headers`` plus Authorization (refreshing the token when it is about to expire)."""
        if self._credentials is None:
            async with self._lock:
                if self._credentials is None:
                    self._credentials = await asyncio.to_thread(self._connect, loc)
        out = dict(headers or {})
        try:
            await asyncio.to_thread(self._credentials.apply, out)
        except Exception as exc:
            raise CredentialsRefused(
                f"{loc.identifier()}: the Google credentials could not be refreshed "
                f"({type(exc).__name__})",
                hint="log in again (gcloud auth application-default login) or check "
                     "GOOGLE_APPLICATION_CREDENTIALS", identifier=loc.identifier()) from None
        return out

    def _connect(self, loc: Location):
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # no gRPC probes
        credentials = require("gcsfs.credentials", "gcs", "gs://")
        token = self.conf.token
        display = loc.identifier()
        if token not in ("anon", "google_default") and not os.path.isfile(token):
            raise CredentialsNeeded(
                f"{display}: GOOGLE_APPLICATION_CREDENTIALS names {token}, which does not exist",
                hint="point GOOGLE_APPLICATION_CREDENTIALS at a service-account JSON file, or "
                     "unset it to use application default credentials", identifier=display)
        try:
            return credentials.GoogleCredentials(project=None, access="full_control",
                                                 token=token)
        except Exception as exc:
            if token == "google_default":
                raise CredentialsNeeded(
                    f"{display}: no Google credentials found ({type(exc).__name__})",
                    hint="run `gcloud auth application-default login`, set "
                         "GOOGLE_APPLICATION_CREDENTIALS to a service-account file, or set "
                         "HOSTKIT_GCS_ANONYMOUS=1 for a public bucket",
                    identifier=display) from None
            raise CredentialsNeeded(
                f"{display}: {token} is not a usable Google credentials file "
                f"({type(exc).__name__})",
                hint="download a service-account key (JSON) again, or unset "
                     "GOOGLE_APPLICATION_CREDENTIALS", identifier=display) from None

    def _object_url(self, loc: Location) -> str:
        return f"{self.conf.endpoint}/storage/v1/b/{quote(loc.bucket)}/o/{quote(loc.key, safe='')}"

    async def _request(self, method: str, url: str, loc: Location, *, params=None,
                       json_body=None, data=None, headers=None, ok=(200,),
                       reading: bool = False):
        """One JSON-API request; returns (status, headers, parsed JSON or None).

        Through the toolkit's :func:`~hostkit.backend.request`: the proxy settings, no
        redirect followed with the token, an answer read up to :data:`_MAX_ANSWER`.
        """
        from yarl import URL

        hdrs = await self._auth(loc, headers)
        if json_body is not None:
            data, hdrs = json.dumps(json_body).encode(), {**hdrs,
                                                          "Content-Type": "application/json"}
        target = str(URL(url).extend_query(params)) if params else url
        try:
            async with request(self.context, method, target, data=data, headers=hdrs) as resp:
                body = await read_body(resp, _MAX_ANSWER)
                if len(body) > _MAX_ANSWER:
                    raise BackendError(f"{loc.identifier()}: the server answered more than "
                                       f"{_MAX_ANSWER >> 20} MiB",
                                       hint="the endpoint is not answering as GCS does; check "
                                            "STORAGE_EMULATOR_HOST / the endpoint setting",
                                       identifier=loc.identifier())
                if resp.status not in ok:
                    raise self._status_error(resp.status, body.decode("utf-8", "replace"), loc,
                                             reading=reading)
                parsed = None
                if body and resp.content_type == "application/json":
                    parsed = json.loads(body)
                return resp.status, resp.headers, parsed
        except HostkitError:
            raise
        except Exception as exc:
            raise self._error(exc, loc) from None

    # reading

    def public_url(self, loc: Location, version: str | None = None) -> str | None:
        """``storage.googleapis.com/BUCKET/KEY`` on GCS; an emulator's media download URL."""
        if self.conf.endpoint == GOOGLE_ENDPOINT:
            return (f"{GOOGLE_ENDPOINT}/{quote(loc.bucket)}/{quote(loc.key, safe='/~')}"
                    + (f"?generation={version}" if version else ""))
        return (f"{self.conf.endpoint}/download/storage/v1/b/{quote(loc.bucket)}/o/"
                f"{quote(loc.key, safe='')}?alt=media"
                + (f"&generation={version}" if version else ""))

    async def head(self, loc: Location) -> ObjectMeta:
        params = {"generation": loc.version} if loc.version else None
        try:
            _, _, obj = await self._request("GET", self._object_url(loc), loc, params=params)
        except NotFound:
            if await self._bucket_missing(loc):
                raise self._no_bucket(loc) from None
            raise
        return _meta(obj or {})

    async def list(self, loc: Location):
        """The JSON API's object list under ``loc.key``, page after page (``pageToken``).

        Each item is the object resource a HEAD gives (size, generation, md5Hash).
        """
        url = f"{self.conf.endpoint}/storage/v1/b/{quote(loc.bucket)}/o"
        token: str | None = None
        seen: set[str] = set()
        while True:
            params = {"prefix": loc.key, "maxResults": str(LIST_PAGE)}
            if token:
                params["pageToken"] = token
            try:
                _, _, page = await self._request("GET", url, loc, params=params)
            except NotFound:
                if await self._bucket_missing(loc):
                    raise self._no_bucket(loc) from None
                raise
            if not isinstance(page, dict) or not isinstance(page.get("items", []), list):
                raise BackendError(f"{loc.identifier()}: the server's listing is not a GCS "
                                   "object list", identifier=loc.identifier(),
                                   hint="check STORAGE_EMULATOR_HOST or the endpoint")
            for item in page.get("items") or ():
                name = item.get("name") if isinstance(item, dict) else None
                if not isinstance(name, str):
                    raise BackendError(f"{loc.identifier()}: the listing holds an object "
                                       "without a name", identifier=loc.identifier(),
                                       hint="report it to the server's operator")
                yield name, _meta(item)
            token = page.get("nextPageToken") or None
            if token is None:
                return
            if token in seen:
                raise BackendError(f"{loc.identifier()}: the server's listing repeats a page "
                                   "token", identifier=loc.identifier(),
                                   hint="report it to the server's operator")
            seen.add(token)

    async def _bucket_missing(self, loc: Location) -> bool:
        try:
            await self._request("GET", f"{self.conf.endpoint}/storage/v1/b/{quote(loc.bucket)}",
                                loc)
        except NotFound:
            return True
        except HostkitError:
            return False
        return False

    def _no_bucket(self, loc: Location) -> NotFound:
        return no_bucket(loc, self.conf.endpoint, "check the bucket name (and "
                         "STORAGE_EMULATOR_HOST if you use an emulator)")

    async def read(self, loc: Location, meta: ObjectMeta, start: int, end: int):
        generation = meta.version or loc.version
        url = (f"{self.conf.endpoint}/download/storage/v1/b/{quote(loc.bucket)}/o/"
               f"{quote(loc.key, safe='')}?alt=media"
               + (f"&generation={generation}" if generation else ""))
        headers = await self._auth(loc)
        # a part naming another generation is refused (GCS names it; emulators may not)
        expect = {"x-goog-generation": str(generation)} if generation else {}
        try:
            async for chunk in ranged_get(self.context, url, start, end, headers=headers,
                                          expect=expect, pinned_by_url=True, size=meta.size):
                yield chunk
        except ObjectChanged:
            raise changed(loc.identifier()) from None
        except HttpStatus as exc:
            raise self._status_error(exc.status, exc.body, loc, reading=True) from None
        except HostkitError:
            raise
        except Exception as exc:
            raise self._error(exc, loc) from None

    # writing

    def _upload_url(self, loc: Location) -> str:
        return f"{self.conf.endpoint}/upload/storage/v1/b/{quote(loc.bucket)}/o"

    async def put(self, loc: Location, data: bytes, *, sha256: str, if_absent: bool):
        boundary = secrets.token_hex(16)
        meta = json.dumps({"name": loc.key, "metadata": {"sha256": sha256}}).encode()
        body = b"".join([
            f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
            meta, f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode(),
            data, f"\r\n--{boundary}--\r\n".encode()])
        params = {"uploadType": "multipart", **({"ifGenerationMatch": "0"} if if_absent else {})}
        content_type = f"multipart/related; boundary={boundary}"
        _, _, obj = await self._write("POST", self._upload_url(loc), loc, params=params,
                                      data=body, headers={"Content-Type": content_type})
        return _generation(obj)

    async def begin_upload(self, loc: Location, size: int, *, sha256: str | None,
                           if_absent: bool):
        params = {"uploadType": "resumable", **({"ifGenerationMatch": "0"} if if_absent else {})}
        body = {"name": loc.key, **({"metadata": {"sha256": sha256}} if sha256 else {})}
        _, headers, _ = await self._request("POST", self._upload_url(loc), loc, params=params,
                                            json_body=body,
                                            headers={"X-Upload-Content-Length": str(size)})
        session_url = headers.get("Location")
        if not session_url:
            raise BackendError(f"{loc.identifier()}: the server started no resumable upload",
                               hint="try again")
        return {"loc": loc, "url": session_url, "size": size, "sha_in_meta": bool(sha256)}

    async def upload_part(self, upload, number: int, offset: int, data: bytes, last: bool):
        loc, size = upload["loc"], upload["size"]
        total = str(size) if last else "*"
        content_range = f"bytes {offset}-{offset + len(data) - 1}/{total}"
        status, _, obj = await self._write("PUT", upload["url"], loc, data=data,
                                           headers={"Content-Range": content_range},
                                           ok=(200, 201, 308))
        if last and status not in (200, 201):
            raise BackendError(f"{loc.identifier()}: the upload did not complete ({status})",
                               hint="try again")
        return obj

    async def complete_upload(self, upload, parts: list, *, sha256: str, if_absent: bool):
        loc = upload["loc"]
        obj = parts[-1] or {}
        generation = _generation(obj)
        if not upload["sha_in_meta"]:
            params = {"generation": generation} if generation else None
            # if this fails, identical re-uploads are still spotted by md5Hash
            with contextlib.suppress(HostkitError):
                await self._request("PATCH", self._object_url(loc), loc, params=params,
                                    json_body={"metadata": {"sha256": sha256}})
        return generation

    async def abort_upload(self, upload) -> None:
        async with request(self.context, "DELETE", upload["url"], encoded=False):
            pass

    async def _write(self, method, url, loc, **kwargs):
        """A request whose failed precondition (ifGenerationMatch=0) means the key exists."""
        try:
            return await self._request(method, url, loc, **kwargs)
        except _PreconditionFailed:
            raise created_meanwhile(loc) from None

    # errors

    def _status_error(self, status: int, body: str, loc: Location, *,
                      reading: bool = False) -> HostkitError:
        display = loc.identifier()
        reason = ""
        try:
            reason = json.loads(body)["error"]["message"][:160]
        except (ValueError, KeyError, TypeError):
            reason = ""
        if status == 404 and reading:
            return vanished(display)
        if status == 412:
            return _PreconditionFailed(f"{display}: precondition failed (412): the object changed",
                                       hint="run again", identifier=display)
        what = "that generation" if loc.version else "that object"
        said = f": {reason}" if reason else ""
        anonymous = self.conf.token == "anon"
        refused = (f"anonymous access was refused ({status})", "the bucket is not public: "
                   "unset HOSTKIT_GCS_ANONYMOUS and log in (gcloud auth application-default "
                   "login)") if anonymous else (
            f"Google refused the credentials ({status}{said})",
            "check that the account may read this bucket (roles/storage.objectViewer)")
        return status_error(status, display, credentials_sent=not anonymous, texts={
            "not_found": (f"no such object ({what} is not in bucket {loc.bucket!r} at "
                          f"{self.conf.endpoint})", "check the key and generation; `gcloud "
                          "storage ls gs://BUCKET/PREFIX/` lists what is there"),
            "credentials": refused,
            "other": (f"the server answered {status}{said}", "run with -v for details")})

    def _error(self, exc: BaseException, loc: Location) -> HostkitError:
        if isinstance(exc, HostkitError):
            return exc
        display = loc.identifier()
        if (net := network_error(exc, display, self.conf.endpoint)) is not None:
            return net
        return BackendError(f"{display}: {type(exc).__name__}",
                            hint="run with -v for details", identifier=display)


class _PreconditionFailed(TransientError):
    """412: the object is not the generation the request was conditional on."""


def _generation(obj: dict | None) -> str | None:
    value = (obj or {}).get("generation")
    return str(value) if value not in (None, "") else None


def _meta(obj: dict) -> ObjectMeta:
    return ObjectMeta(size=int(obj.get("size") or 0), etag=obj.get("etag"),
                      version=_generation(obj), md5=md5_from_base64(obj.get("md5Hash")),
                      sha256=(obj.get("metadata") or {}).get("sha256"),
                      content_type=obj.get("contentType"))


# -- the hooks (last: they use the parser and the store above) ------------------------

hostkit_resolve, hostkit_upload = object_store_hooks(
    ("gs",), parse, GcsStore, example="gs://bucket/path/to/file")


@hookimpl
def hostkit_check(ref, remote, context):
    """For ``hostkit check``: the object's public URL, probed with no credential."""
    if ref.scheme != "gs" or remote is None:
        return None
    return _check(remote, context)


async def _check(remote, context):
    loc = remote.loc
    return await check_public_url(remote, context, private=(
        f"the object is private ({loc.identifier()})",
        "make it publicly readable (grant allUsers the Storage Object Viewer role on the "
        "bucket, or `gcloud storage objects update URL --add-acl-grant=entity=AllUsers,"
        "role=READER`), or share it otherwise (e.g. on Synapse)"),
        pinned=f"pinned to generation {loc.version}: its bytes cannot change")
