"""s3 and minio backends: Amazon S3 and S3-compatible stores (MinIO, SeaweedFS, Ceph).

Identifiers::

    s3://bucket/key                   endpoint, region and keys from the AWS chain
    s3://bucket/key?versionId=ID      one object version: immutable, cached for good
    minio://host[:port]/bucket/key    the endpoint travels with the identifier

Which endpoint, region and profile an identifier means is :mod:`.s3_config`'s
(``AWS_ENDPOINT_URL_S3`` and the AWS config file, MLflow's
``MLFLOW_S3_ENDPOINT_URL``, else AWS). ``minio://`` speaks https unless the host
is listed in ``HOSTKIT_MINIO_INSECURE_HOSTS``; path-style addressing, region
``us-east-1`` unless configured. Credentials follow botocore's chain
(environment keys, ``AWS_PROFILE``, shared files, SSO, instance roles).
``HOSTKIT_S3_ANONYMOUS=1`` sends unsigned requests (public buckets).

Downloads sign a HEAD and ranged GETs with SigV4 (:mod:`.sigv4`, hmac alone)
and send them through the resolver's pooled aiohttp session; with keys in the
environment nothing else is loaded, otherwise botocore's credential chain
(``hostkit[s3]``) finds them. Uploads use s3fs's aiobotocore client, imported
on first use.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from hostkit.backend import (
    HttpStatus,
    ObjectChanged,
    network_error,
    range_headers,
    ranged_get,
    read_body,
    request,
    require,
    status_error,
)
from hostkit.errors import (
    BackendError,
    BucketNotFound,
    CredentialsNeeded,
    HostkitError,
    NotFound,
    TransientError,
    Unreachable,
)
from hostkit.hookspecs import hookimpl
from hostkit.remote import BackendInfo
from hostkit.settings import Option

from .objectstore import (
    Location,
    ObjectMeta,
    Store,
    changed,
    check_public_url,
    created_meanwhile,
    no_bucket,
    object_store_hooks,
    vanished,
)
from .s3_config import S3Config, default_region, parse
from .sigv4 import environment_credentials, sign

log = logging.getLogger("hostkit.s3")
#: Keys asked for per ListObjectsV2 page (S3's own maximum).
LIST_PAGE = 1000
#: Bytes one ListObjectsV2 page may have (1000 keys of 1 KiB each, and their XML).
_MAX_LISTING = 8 << 20
_MD5_ETAG = re.compile(r'^"?([0-9a-fA-F]{32})"?$')
_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "NoSuchVersion", "NotFound", "404"}
_REFUSED = {"AccessDenied", "403", "401", "InvalidAccessKeyId", "SignatureDoesNotMatch",
            "ExpiredToken", "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled",
            "AuthorizationHeaderMalformed", "InvalidSecurity", "AccountProblem"}
_KEYS_HINT = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE naming a profile "
              "in the AWS credentials file; for a public bucket set HOSTKIT_S3_ANONYMOUS=1")
_TRANSIENT = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout",
              "RequestTimeTooSkewed", "Throttling", "ThrottlingException", "503", "500"}


@hookimpl
def hostkit_backends():
    """The s3 backend: AWS S3 and S3-compatible stores such as MinIO."""
    return [BackendInfo(
        name="s3", schemes=("s3", "minio"),
        summary="S3 and MinIO: AWS credential chain and endpoints, versionId pins, parallel "
                "ranged reads, upload",
        examples=("s3://bucket/key", "s3://bucket/key?versionId=ID",
                  "minio://host:port/bucket/key"),
        extra="s3")]


@hookimpl
def hostkit_settings():
    """``HOSTKIT_S3_ANONYMOUS`` and ``HOSTKIT_MINIO_INSECURE_HOSTS`` (or ``[backends.*]``)."""
    return [Option("s3", "anonymous", "bool", False,
                   "send unsigned requests (public buckets) instead of looking for credentials"),
            Option("minio", "insecure_hosts", "str", None,
                   "minio:// hosts (host or host:port, comma-separated) spoken to over plain "
                   "http instead of https")]


# -- the store ------------------------------------------------------------------


class S3Store(Store):
    """Requests to one S3 endpoint.

    Reads (HEAD, ranged GETs) are signed with :mod:`.sigv4` (keys from the
    environment, or botocore's credential chain) and go through the resolver's
    pooled aiohttp session: no client, no service model, nothing of s3fs or
    aiobotocore is loaded to download. Writes (uploads, tags) use s3fs's aiobotocore client, made on
    first use.
    """

    def __init__(self, conf: S3Config, context):
        self.conf = conf
        self.context = context
        self.settings = context.settings
        self._fs = None
        self._lock = asyncio.Lock()
        self._signer: _Signer | None = None
        self._signer_lock = asyncio.Lock()
        #: AWS: the region of each bucket, once a redirect named it
        self._regions: dict[str, str] = {}
        self._ssl_context = None

    async def client(self, bucket: str, loc: Location | None = None):
        """The aiobotocore client for ``bucket`` (its region's, on AWS); only writes need it."""
        if self._fs is None:
            async with self._lock:
                if self._fs is None:
                    self._fs = await self._connect(loc)
        try:
            return await self._fs.get_s3(bucket)
        except Exception as exc:
            raise self._error(exc, loc) from None

    async def _connect(self, loc):
        s3fs = require("s3fs", "s3", "s3://")
        conf, settings = self.conf, self.settings
        config = {"connect_timeout": settings.connect_timeout,
                  "read_timeout": settings.read_timeout,
                  "retries": {"max_attempts": 3, "mode": "standard"},
                  "max_pool_connections": max(10, 2 * int(settings.concurrency))}
        if conf.path_style:
            config["s3"] = {"addressing_style": "path"}
        client_kwargs = {}
        if conf.region:
            client_kwargs["region_name"] = conf.region
        if not conf.verify:
            client_kwargs["verify"] = False
        fs = s3fs.S3FileSystem(anon=conf.anonymous, profile=conf.profile,
                               endpoint_url=conf.endpoint, client_kwargs=client_kwargs,
                               config_kwargs=config, asynchronous=True, skip_instance_cache=True)
        try:
            await fs.set_session()
        except Exception as exc:
            raise self._error(exc, loc) from None
        return fs

    async def aclose(self) -> None:
        fs, self._fs = self._fs, None
        creator = getattr(fs, "_s3creator", None)
        if creator is not None:
            await creator.__aexit__(None, None, None)

    # signed requests

    async def _signed(self, loc: Location) -> _Signer:
        """The signer (credentials found once, in a thread: the chain may do I/O)."""
        if self._signer is None:
            async with self._signer_lock:
                if self._signer is None:
                    try:
                        self._signer = await asyncio.to_thread(_Signer.make, self.conf)
                    except Exception as exc:
                        raise self._error(exc, loc) from None
        return self._signer

    def _url(self, loc: Location, region: str, *, version: str | None = None,
             bucket_only: bool = False) -> str:
        """The percent-encoded URL of the object (or its bucket), as botocore would send it."""
        if self.conf.endpoint:
            base = f"{self.conf.endpoint}/{loc.bucket}/"
        else:
            base = _aws_base(loc.bucket, region)
        if bucket_only:
            return base
        query = f"?versionId={quote(version, safe='')}" if version else ""
        return f"{base}{quote(loc.key, safe='/~')}{query}"

    def public_url(self, loc: Location, version: str | None = None) -> str | None:
        """The endpoint's path-style URL (MinIO, SeaweedFS), else AWS's (us-east-1 form)."""
        region = self._regions.get(loc.bucket) or self.conf.region or "us-east-1"
        return self._url(loc, region, version=version)

    async def versioning(self, loc: Location) -> str | None:
        """The bucket's versioning status (GetBucketVersioning): ``Enabled``, ``Suspended``
        or None (never turned on). Signed with the caller's credentials."""
        def url(region: str) -> str:
            base = self._url(loc, region, bucket_only=True)
            return (base.rstrip("/") if base.endswith(f"/{loc.bucket}/") else base) + \
                "?versioning"

        status, _, data = await self._ask("GET", loc, url, limit=64 << 10)
        body = data.decode("utf-8", "replace")
        if status != 200:
            raise self._status_error(error_code(body) or str(status), status, loc)
        found = re.search(r"<Status>\s*([A-Za-z]+)\s*</Status>", body)
        return found.group(1) if found else None

    async def _head(self, loc: Location, *, version: str | None = None,
                    bucket_only: bool = False):
        """A signed HEAD of the object (or its bucket): (status, headers)."""
        status, headers, _ = await self._ask(
            "HEAD", loc, lambda region: self._url(loc, region, version=version,
                                                  bucket_only=bucket_only))
        return status, headers

    async def _ask(self, method: str, loc: Location, url: Callable[[str], str], *,
                   limit: int = 0) -> tuple[int, Any, bytes]:
        """One signed request without a body to ``url(region)``: ``(status, headers, body)``,
        at most ``limit + 1`` bytes of the body read (a caller seeing more knows it is
        too large).

        On AWS a bucket in another region answers with its region: asked again there.
        """
        from hostkit.redact import redact_text

        signer = await self._signed(loc)
        region = self._regions.get(loc.bucket, signer.region)
        for _ in range(2):
            target = url(region)
            try:
                async with request(self.context, method, target, ssl=self._ssl(),
                                   headers=signer.sign(method, target, {}, region)) as resp:
                    status, headers = resp.status, resp.headers
                    body = await read_body(resp, limit) if limit else b""
            except HostkitError:
                raise
            except Exception as exc:
                raise self._error(exc, loc) from None
            moved = headers.get("x-amz-bucket-region")
            if self.conf.endpoint or not moved or moved == region or status < 300:
                break
            log.debug("%s: bucket %s is in %s", redact_text(loc.identifier()), loc.bucket, moved)
            region = self._regions[loc.bucket] = moved
        return status, headers, body

    # reading

    async def head(self, loc: Location) -> ObjectMeta:
        status, headers = await self._head(loc, version=loc.version)
        if status != 200:
            error = self._status_error(str(status), status, loc)
            if isinstance(error, NotFound) and not isinstance(error, BucketNotFound):
                bucket_status, _ = await self._head(loc, bucket_only=True)
                if bucket_status == 404:
                    raise self._bucket_missing(loc)
            raise error
        return _meta(_head_response(headers))

    async def read(self, loc: Location, meta: ObjectMeta, start: int, end: int):
        """A signed ranged GET through the resolver's pooled aiohttp session.

        The read is pinned to the version the HEAD saw, or conditional on its ETag.
        """
        signer = await self._signed(loc)
        region = self._regions.get(loc.bucket, signer.region)
        url = self._url(loc, region, version=meta.version)
        headers = range_headers(start, end)
        if not meta.version and meta.etag:
            headers["If-Match"] = meta.etag
        # and every part must say it is that version / ETag: a server may ignore both
        expect = {"x-amz-version-id": meta.version} if meta.version else \
            {"ETag": meta.etag} if meta.etag else {}
        try:
            async for chunk in ranged_get(self.context, url, start, end, ssl=self._ssl(),
                                          headers=signer.sign("GET", url, headers, region),
                                          expect=expect, size=meta.size):
                yield chunk
        except ObjectChanged:
            raise changed(loc.identifier()) from None
        except HttpStatus as exc:
            raise self._status_error(error_code(exc.body) or str(exc.status), exc.status,
                                     loc, reading=True) from None
        except Exception as exc:
            raise self._error(exc, loc, reading=True) from None

    async def list(self, loc: Location):
        """ListObjectsV2 under ``loc.key``, signed, page after page (continuation tokens).

        Keys come URL-encoded (``encoding-type=url``: XML cannot carry every byte a
        key may hold). The listing gives size and ETag (no md5: the ETag of an object
        encrypted with SSE-KMS is not one, and the listing does not say which are).
        """
        from urllib.parse import unquote_plus

        token: str | None = None
        seen_tokens: set[str] = set()
        while True:
            params = {"list-type": "2", "prefix": loc.key, "encoding-type": "url",
                      "max-keys": str(LIST_PAGE)}
            if token:
                params["continuation-token"] = token
            query = "&".join(f"{k}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()))
            status, _, data = await self._ask(
                "GET", loc, lambda region, query=query:
                f"{self._url(loc, region, bucket_only=True)}?{query}", limit=_MAX_LISTING)
            if len(data) > _MAX_LISTING:
                raise BackendError(f"{loc.identifier()}: a listing page is over "
                                   f"{_MAX_LISTING} bytes", hint="check the endpoint is an S3 "
                                   "API", identifier=loc.identifier())
            body = data.decode("utf-8", "replace")
            if status != 200:
                code = error_code(body) or str(status)
                if code == "NoSuchKey":  # some servers say so for an empty prefix
                    return
                raise self._status_error(code, status, loc)
            page = _list_page(body)
            if page is None:
                raise BackendError(f"{loc.identifier()}: the server's listing is not "
                                   "ListObjectsV2 XML", identifier=loc.identifier(),
                                   hint="check the endpoint is an S3 API")
            url_encoded, truncated, token, contents = page
            for key, size, etag, modified in contents:
                yield (unquote_plus(key) if url_encoded else key), \
                    ObjectMeta(size=size, etag=etag, modified=_iso_time(modified))
            if not truncated:
                return
            if not token or token in seen_tokens:
                raise BackendError(f"{loc.identifier()}: the server's listing goes round in "
                                   "circles (a continuation token missing or repeated)",
                                   identifier=loc.identifier(),
                                   hint="report it to the server's operator")
            seen_tokens.add(token)

    def _ssl(self):
        """What aiohttp's ``ssl=`` gets: verification as botocore would do it (made once)."""
        if self._ssl_context is None:
            if not self.conf.verify:
                self._ssl_context = False
            elif (bundle := os.environ.get("AWS_CA_BUNDLE")) and \
                    (self.conf.endpoint or "https:").startswith("https:"):
                import ssl

                self._ssl_context = ssl.create_default_context(cafile=bundle)
            else:
                self._ssl_context = True
        return self._ssl_context

    async def recorded_sha256(self, loc: Location, meta: ObjectMeta) -> str | None:
        if meta.sha256:
            return meta.sha256
        client = await self.client(loc.bucket, loc)
        pin = {"VersionId": meta.version} if meta.version else {}
        try:
            resp = await client.get_object_tagging(Bucket=loc.bucket, Key=loc.key, **pin)
        except Exception:
            return None  # no tagging permission or support: compare by md5 instead
        return next((t["Value"] for t in resp.get("TagSet", []) if t.get("Key") == "sha256"),
                    None)

    # writing

    async def put(self, loc: Location, data: bytes, *, sha256: str, if_absent: bool):
        client = await self.client(loc.bucket, loc)
        resp = await self._write(client.put_object, loc, if_absent, Bucket=loc.bucket,
                                 Key=loc.key, Body=data, Metadata={"sha256": sha256})
        return _version(resp)

    async def begin_upload(self, loc: Location, size: int, *, sha256: str | None,
                           if_absent: bool):
        client = await self.client(loc.bucket, loc)
        meta = {"Metadata": {"sha256": sha256}} if sha256 else {}
        try:
            resp = await client.create_multipart_upload(Bucket=loc.bucket, Key=loc.key, **meta)
        except Exception as exc:
            raise self._error(exc, loc) from None
        return {"loc": loc, "id": resp["UploadId"], "client": client, "tagged": bool(sha256)}

    async def upload_part(self, upload, number: int, offset: int, data: bytes, last: bool):
        loc = upload["loc"]
        try:
            resp = await upload["client"].upload_part(Bucket=loc.bucket, Key=loc.key,
                                                      UploadId=upload["id"],
                                                      PartNumber=number, Body=data)
        except Exception as exc:
            raise self._error(exc, loc) from None
        return {"ETag": resp["ETag"], "PartNumber": number}

    async def complete_upload(self, upload, parts: list, *, sha256: str, if_absent: bool):
        loc, client = upload["loc"], upload["client"]
        resp = await self._write(client.complete_multipart_upload, loc, if_absent,
                                 Bucket=loc.bucket, Key=loc.key, UploadId=upload["id"],
                                 MultipartUpload={"Parts": parts})
        version = _version(resp)
        if not upload["tagged"]:  # metadata is fixed at the start; a tag can come last
            pin = {"VersionId": version} if version else {}
            try:
                await client.put_object_tagging(
                    Bucket=loc.bucket, Key=loc.key, **pin,
                    Tagging={"TagSet": [{"Key": "sha256", "Value": sha256}]})
            except Exception as exc:
                from hostkit.redact import redact_text

                log.info(
                    "%s: could not tag the sha256 (%s); identical re-uploads will be "
                    "compared by size only", loc.identifier(), redact_text(str(exc))[:120])
        return version

    async def abort_upload(self, upload) -> None:
        loc = upload["loc"]
        await upload["client"].abort_multipart_upload(Bucket=loc.bucket, Key=loc.key,
                                                      UploadId=upload["id"])

    async def _write(self, method, loc: Location, if_absent: bool, **kwargs):
        """A write that refuses to replace an existing key when ``if_absent``."""
        from botocore.exceptions import ClientError

        try:
            return await method(**kwargs, **({"IfNoneMatch": "*"} if if_absent else {}))
        except ClientError as exc:
            code = _code(exc)
            if if_absent and code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise created_meanwhile(loc) from None
            if if_absent and code in ("NotImplemented", "501"):  # no conditional writes here
                try:
                    return await method(**kwargs)
                except Exception as again:
                    raise self._error(again, loc) from None
            raise self._error(exc, loc) from None
        except Exception as exc:
            raise self._error(exc, loc) from None

    # errors

    def _bucket_missing(self, loc: Location) -> NotFound:
        return no_bucket(loc, self.conf.where,
                         "check the bucket name and the endpoint (AWS_ENDPOINT_URL, the "
                         "profile's endpoint_url, or the host in a minio:// identifier)")

    def _error(self, exc: BaseException, loc: Location | None, *,
               reading: bool = False) -> HostkitError:
        """A hostkit error for a botocore/aiohttp failure; never includes a secret."""
        if isinstance(exc, HostkitError):
            return exc
        display = loc.identifier() if loc else self.conf.where
        conf = self.conf
        if not type(exc).__module__.startswith(("botocore", "aiobotocore")):
            # an aiohttp or OS error (downloads with the environment's keys never load
            # botocore, which may not even be installed)
            if _tls_failure(exc):
                return self._tls_error(display)
            return network_error(exc, display, conf.where) or self._other_error(exc, display)
        from botocore import exceptions as bx

        if isinstance(exc, bx.ProfileNotFound):
            return CredentialsNeeded(f"{display}: AWS profile {exc.kwargs.get('profile')!r} "
                                     "is not in the AWS config or credentials file",
                                     hint="fix AWS_PROFILE, or add the profile", identifier=display)
        if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError
                      | bx.CredentialRetrievalError):
            return CredentialsNeeded(f"{display}: no usable AWS credentials were found for "
                                     f"{conf.where}", hint=_KEYS_HINT, identifier=display)
        if isinstance(exc, bx.ClientError):
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return self._status_error(_code(exc), status, loc, reading=reading)
        if isinstance(exc, bx.SSLError) or _tls_failure(exc):
            return self._tls_error(display)
        if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError
                      | bx.ProxyConnectionError):
            return Unreachable(f"{display}: cannot connect to {conf.where}",
                               hint="check the endpoint and your network; the server may be "
                                    "down", identifier=display)
        if isinstance(exc, bx.ReadTimeoutError | bx.ResponseStreamingError
                      | bx.IncompleteReadError | bx.HTTPClientError):
            return TransientError(f"{display}: the connection to {conf.where} failed",
                                  hint="try again; a rerun resumes", identifier=display)
        return network_error(exc, display, conf.where) or self._other_error(exc, display)

    def _tls_error(self, display: str) -> HostkitError:
        return Unreachable(f"{display}: TLS with {self.conf.where} failed",
                           hint="for a server on plain http list its host in "
                                "HOSTKIT_MINIO_INSECURE_HOSTS (minio://) or use an http:// "
                                "endpoint URL; for a private CA set AWS_CA_BUNDLE",
                           identifier=display)

    @staticmethod
    def _other_error(exc: BaseException, display: str) -> HostkitError:
        from hostkit.redact import redact_text

        return BackendError(f"{display}: {type(exc).__name__}: "
                            f"{redact_text(str(exc))[:200]}",
                            hint="run with -v for details", identifier=display)

    def _status_error(self, code: str, status: int | None, loc: Location | None, *,
                      reading: bool = False) -> HostkitError:
        """A hostkit error for an S3 error code and HTTP status."""
        display = loc.identifier() if loc else self.conf.where
        conf = self.conf
        if code == "NoSuchBucket" and loc is not None:
            return self._bucket_missing(loc)
        if code == "InvalidRange":
            return TransientError(f"{display}: the object shrank during the download",
                                  hint="run again", identifier=display)
        # S3's error code says more than its status (a HEAD's answer has no body at all)
        status = (404 if code in _NOT_FOUND else 403 if code in _REFUSED
                  else 412 if code == "PreconditionFailed" else 503 if code in _TRANSIENT
                  else status or 0)
        if status == 404 and reading:  # the HEAD just saw it: it changed or vanished meanwhile
            return vanished(display)
        what = "that version of the object" if loc and loc.version else "that key"
        bucket = loc.bucket if loc else "?"
        answer = code or str(status)
        if conf.anonymous:
            refused = (f"anonymous access was refused ({code})",
                       "the bucket is not public: unset HOSTKIT_S3_ANONYMOUS and "
                       + _KEYS_HINT.split("; for")[0])
        else:
            refused = (f"{conf.where} refused the credentials ({code})",
                       "check that the access key and secret are right and allowed to use "
                       f"bucket {bucket!r} (AWS_ACCESS_KEY_ID / AWS_PROFILE); for a public "
                       "bucket set HOSTKIT_S3_ANONYMOUS=1")
        return status_error(status, display, credentials_sent=not conf.anonymous, texts={
            "not_found": (f"no such object ({what} is not in bucket {bucket!r} at "
                          f"{conf.where})", "check the key and version; `aws s3 ls "
                          "s3://BUCKET/PREFIX/` lists what is there"),
            "credentials": refused,
            "busy": (f"the server answered {answer}",
                     "the server is busy or failing; try again later"),
            "other": (f"the server answered {answer}", "run with -v for details")})


def _tls_failure(exc: BaseException) -> bool:
    """Whether an aiohttp/ssl failure is the TLS handshake (or certificate) failing."""
    import ssl

    import aiohttp

    return isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError)


class _Signer:
    """SigV4 headers for S3 requests (:mod:`.sigv4`), with the keys botocore's credential
    chain would find (or none: anonymous)."""

    def __init__(self, credentials, region: str):
        self.credentials = credentials
        self.region = region

    @classmethod
    def make(cls, conf: S3Config) -> _Signer:
        """Find credentials as botocore does (env, profile, SSO, roles); blocking, may do I/O."""
        if conf.anonymous:
            return cls(None, conf.region or default_region())
        if conf.profile is None:
            # botocore's chain asks the environment first unless a profile is passed:
            # with static keys there, botocore is not even imported
            credentials = environment_credentials()
            if credentials is not None:
                return cls(credentials, conf.region or default_region())
        botocore = require("botocore.credentials", "s3", "s3://")
        if conf.profile is None:
            credentials = botocore.EnvProvider().load()  # expiring keys: refreshed by botocore
            if credentials is not None:
                return cls(credentials, conf.region or default_region())
        from botocore.session import Session

        session = Session(profile=conf.profile)
        credentials = session.get_credentials()
        if credentials is None:
            from botocore.exceptions import NoCredentialsError

            raise NoCredentialsError()
        region = conf.region or session.get_config_variable("region") or "us-east-1"
        return cls(credentials, region)

    def sign(self, method: str, url: str, headers: dict[str, str], region: str
             ) -> dict[str, str]:
        """``headers`` plus SigV4 authorization for ``method url`` (an empty body)."""
        if self.credentials is None:
            return headers
        return sign(self.credentials.get_frozen_credentials(), method, url, headers, region)


_VIRTUAL_HOSTABLE = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")


def _aws_base(bucket: str, region: str) -> str:
    """AWS S3's URL for a bucket: virtual-hosted when the name allows it (no dots), as botocore."""
    host = "s3.amazonaws.com" if region == "us-east-1" else f"s3.{region}.amazonaws.com"
    if _VIRTUAL_HOSTABLE.fullmatch(bucket):
        return f"https://{bucket}.{host}/"
    return f"https://{host}/{bucket}/"


def _head_response(headers) -> dict:
    """A HEAD's response headers in the shape botocore's ``head_object`` returns."""
    meta = {k[len("x-amz-meta-"):].lower(): v for k, v in headers.items()
            if k.lower().startswith("x-amz-meta-")}
    return {"ETag": headers.get("ETag"), "ContentLength": headers.get("Content-Length", 0),
            "VersionId": headers.get("x-amz-version-id"),
            "ServerSideEncryption": headers.get("x-amz-server-side-encryption"),
            "SSECustomerAlgorithm":
                headers.get("x-amz-server-side-encryption-customer-algorithm"),
            "Metadata": meta, "ContentType": headers.get("Content-Type")}


def _list_page(body: str) -> tuple[bool, bool, str | None,
                                  list[tuple[str, int, str | None, str | None]]] | None:
    """``(keys url-encoded, truncated, next token, [(key, size, etag, last modified)])`` of a
    ListObjectsV2 answer; None when it is not one."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    if not root.tag.endswith("ListBucketResult"):
        return None

    def text(node, name: str) -> str | None:
        for child in node:
            if child.tag.rsplit("}", 1)[-1] == name:
                return child.text or ""
        return None

    contents = []
    for node in root:
        if node.tag.rsplit("}", 1)[-1] != "Contents":
            continue
        key, size = text(node, "Key"), text(node, "Size")
        if key is None or size is None or not size.strip().isdigit():
            return None
        contents.append((key, int(size), text(node, "ETag") or None,
                         text(node, "LastModified") or None))
    return ((text(root, "EncodingType") or "").lower() == "url",
            (text(root, "IsTruncated") or "").strip().lower() == "true",
            text(root, "NextContinuationToken") or None, contents)


def _iso_time(text: str | None) -> float | None:
    """A listing's ``LastModified`` (ISO-8601, UTC) as Unix time; None if absent or odd."""
    from datetime import UTC, datetime

    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def error_code(body: str | bytes) -> str:
    """The ``<Code>`` of an S3 error answer (``NoSuchKey``...); "" when it has none."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    match = re.search(r"<Code>([^<]{1,100})</Code>", text)
    return match.group(1) if match else ""


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _version(resp: dict) -> str | None:
    version = resp.get("VersionId")
    return None if version in (None, "", "null") else version


def _meta(resp: dict) -> ObjectMeta:
    etag = resp.get("ETag")
    md5 = None
    match = _MD5_ETAG.match(etag or "")
    # an ETag is the MD5 only for a single-part upload without SSE-KMS/SSE-C
    if match and resp.get("ServerSideEncryption") in (None, "AES256") \
            and not resp.get("SSECustomerAlgorithm"):
        md5 = match.group(1).lower()
    return ObjectMeta(size=int(resp.get("ContentLength", 0)), etag=etag,
                      version=_version(resp), md5=md5,
                      sha256=(resp.get("Metadata") or {}).get("sha256"),
                      content_type=resp.get("ContentType"))


# -- the hooks (last: they use the parser and the store above) ------------------------

hostkit_resolve, hostkit_upload = object_store_hooks(
    ("s3", "minio"), parse, S3Store, example="s3://bucket/path/to/file")


@hookimpl
def hostkit_blob_tier(settings, context):
    """The site's shared tier on a bucket: ``s3://bucket/prefix`` or ``minio://host:port/...``."""
    if not settings.tier:
        return None
    from .s3_tier import s3_tier

    return s3_tier(settings.tier, context)


@hookimpl
def hostkit_check(ref, remote, context):
    """For ``hostkit check``: the object's plain URL, probed with no credential; its versioning."""
    if ref.scheme not in ("s3", "minio") or remote is None:
        return None
    return _check(remote, context)


#: What to do about an object no anonymous GET may read.
PRIVATE_FIX = ("make it public-read (a bucket policy granting s3:GetObject to everyone, or "
               "`aws s3api put-object-acl --acl public-read`), or share it otherwise "
               "(e.g. on Synapse, granting MedPerf's users access)")


async def _check(remote, context):
    from hostkit.hookspecs import Verdict

    store, loc = remote._store(), remote.loc
    found = await check_public_url(
        remote, context, private=(f"the object is private ({loc.identifier()})", PRIVATE_FIX),
        pinned=f"pinned to version {loc.version}: its bytes cannot change")
    if found is None or loc.version:
        return found
    try:
        status = await store.versioning(loc)
    except HostkitError as exc:
        found.permanent = Verdict(None, f"could not ask whether bucket {loc.bucket!r} keeps "
                                        f"versions: {exc.message}")
        return found
    if status != "Enabled":
        found.permanent = Verdict(True, f"bucket {loc.bucket!r} keeps no versions: the key "
                                        "holds what was last written to it, and the sha256 "
                                        "you submit guards those bytes")
        return found
    message = (f"bucket {loc.bucket!r} keeps versions: {loc.identifier()} names whichever "
               "version is current, so the next upload to that key changes it")
    try:
        current = (await store.head(loc)).version
    except HostkitError:
        current = None
    if not current:
        found.permanent = Verdict(False, message, "pin a version: "
                                  f"{loc.identifier(version='ID')} (`aws s3api "
                                  "list-object-versions` lists them)")
        return found
    pinned = loc.identifier(version=current)
    found.permanent = Verdict(
        False, message, f"pin the current version: {pinned}, whose URL "
                        f"{store.public_url(loc, current)} always serves those bytes", pinned)
    return found

