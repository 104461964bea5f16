"""http backend: direct download links (``https://...`` and MedPerf's ``direct:https://...``).

Ranges and ETags are used when the server offers them: a resumed download
sends ``Range`` with ``If-Range`` so the server itself guarantees the object
did not change. Share links and web pages are refused with a hint.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from urllib.parse import parse_qs, urlsplit

from hostkit.errors import (
    BackendError,
    CredentialsNeeded,
    HostkitError,
    NotDirectLink,
    NotFound,
    TransientError,
    TruncatedBody,
    Unreachable,
)
from hostkit.headers import content_range, md5_from_base64
from hostkit.hookspecs import hookimpl
from hostkit.redact import redact_url, url_cache_key
from hostkit.remote import BackendInfo, Body, Remote, RemoteInfo

_HTML_START = re.compile(rb"^\s*(<!doctype\s+html|<html|<head|<body)", re.I)
_REQUEST_HEADERS = {"Accept-Encoding": "identity"}  # we hash the bytes as published


@hookimpl
def hostkit_backends():
    """The http backend: any permanent, anonymous direct download link."""
    return [BackendInfo(
        name="http", schemes=("http", "https"),
        summary="direct download links; resumes with Range/If-Range, refuses web pages",
        examples=("https://host/path/file", "direct:https://host/path/file"))]


@hookimpl(trylast=True)
def hostkit_resolve(ref, context):
    """Claim ``http``/``https`` identifiers (after more specific backends had their turn)."""
    if ref.scheme not in ("http", "https"):
        return None
    refuse_share_links(ref.identifier)
    return HttpRemote(ref.identifier, context, display=ref.display, key=ref.key,
                      anonymous=not ref.credentialed)


def refuse_share_links(url: str) -> None:
    """Raise NotDirectLink for well-known share links that serve a page, not the file."""
    parts, shown = urlsplit(url), redact_url(url)
    host, path = parts.hostname or "", parts.path
    if host in ("drive.google.com", "docs.google.com"):
        raise NotDirectLink(
            f"{shown} is a Google Drive share page, not the file",
            hint="host the file where a plain GET returns it (Synapse, a bucket, a web "
                 "server); Drive interposes pages for large files", identifier=shown)
    if host.endswith("dropbox.com") and parse_qs(parts.query).get("dl") != ["1"]:
        raise NotDirectLink(f"{shown} is a Dropbox share page, not the file",
                            hint="use the same link with ?dl=1", identifier=shown)
    match = re.match(r"^/([^/]+)/([^/]+)/blob/([^/]+)/(.+)$", path)
    if host == "github.com" and match:
        owner, repo, gitref, file = match.groups()
        raise NotDirectLink(
            f"{shown} is GitHub's page for the file, not the file",
            hint=f"use https://raw.githubusercontent.com/{owner}/{repo}/<40-hex commit>/"
                 f"{redact_url(file)} (pin a commit, not {gitref!r})", identifier=shown)


class HttpRemote(Remote):
    """A file behind a direct link.

    ``url`` is what is requested (it may hold credentials: never shown or stored);
    ``display`` and ``cache_key`` come from the parsed identifier (or are derived
    from ``url`` by :mod:`hostkit.redact` when not given).
    """

    def __init__(self, url: str, context, *, display: str | None = None,
                 key: str | None = None, anonymous: bool = False):
        self.url = url
        self.cache_key = key or url_cache_key(url)
        self.display = display or redact_url(url)
        self.anonymous = anonymous
        self.context = context

    async def stat(self) -> RemoteInfo:
        """HEAD the URL (following redirects) for size and validator."""
        session = await self.context.http_session()
        try:
            async with session.head(self.url, allow_redirects=True, headers=_REQUEST_HEADERS,
                                    **self.context.proxy_for(self.url)) as resp:
                self._check_status(resp)
                return _info(resp)
        except HostkitError:
            raise  # ours (NotFound is an OSError too): not a network failure
        except (TimeoutError, OSError, _client_errors()) as exc:
            raise self._network_error(exc) from None

    @contextlib.asynccontextmanager
    async def open(self, offset: int = 0, validator: str | None = None):
        """GET from ``offset`` when ``validator`` can be checked by the server, else from 0."""
        session = await self.context.http_session()
        headers = dict(_REQUEST_HEADERS)
        if offset and _usable_for_if_range(validator):
            headers["Range"] = f"bytes={offset}-"
            headers["If-Range"] = validator
        else:
            offset = 0
        try:
            proxy = self.context.proxy_for(self.url)
            resp = await session.get(self.url, headers=headers, max_redirects=10, **proxy)
            try:
                if resp.status == 416 and offset:  # nothing past offset: start over
                    resp.release()
                    offset, headers = 0, dict(_REQUEST_HEADERS)
                    resp = await session.get(self.url, headers=headers, max_redirects=10,
                                             **proxy)
                self._check_status(resp)
                info = _info(resp)
                start = 0
                if resp.status == 206:
                    # the resolver appends only from the offset it asked for, under its
                    # validator; any other answer makes it start over
                    start, info.size = self._content_range(resp.headers)
                yield Body(info, start, self._chunks(resp, info))
            finally:
                resp.release()
        except HostkitError:
            raise  # ours (NotFound is an OSError too): not a network failure
        except (TimeoutError, OSError, _client_errors()) as exc:
            raise self._network_error(exc) from None

    async def _chunks(self, resp, info: RemoteInfo):
        first = True
        async for chunk in resp.content.iter_any():
            if first:
                first = False
                self._refuse_html(info, chunk)
            yield chunk

    def _refuse_html(self, info: RemoteInfo, first_chunk: bytes) -> None:
        looks_html = _HTML_START.match(first_chunk[:512]) is not None
        declared_html = (info.content_type or "").startswith(("text/html", "application/xhtml"))
        wants_html = urlsplit(self.url).path.lower().endswith((".html", ".htm"))
        if (declared_html or looks_html) and not wants_html:
            raise NotDirectLink(
                f"{self.display} returned a web page (HTML), not a file",
                hint="this is a share or login page; use a permanent direct download link "
                     "(`wget URL` must download the file itself)", identifier=self.display)

    def _check_status(self, resp) -> None:
        status = resp.status
        if status in (200, 206):
            return
        where = self.display
        if status in (404, 410):
            raise NotFound(f"{where}: not found ({status})",
                           hint="check the link; the file may have moved or been deleted",
                           identifier=where)
        if status in (401, 403):
            raise CredentialsNeeded(
                f"{where}: the server refused anonymous access ({status})",
                hint="direct links must allow anonymous GET; ask the publisher for a public "
                     "link or use a backend with credentials (synapse:, s3://)",
                identifier=where)
        if status == 429 or status >= 500:
            raise TransientError(f"{where}: server answered {status}",
                                 retry_after=_retry_after(resp), identifier=where,
                                 hint="the server is busy or failing; try again later")
        raise BackendError(f"{where}: server answered {status} {resp.reason or ''}".strip(),
                           hint="check the link", identifier=where)

    def _content_range(self, headers) -> tuple[int, int | None]:
        parsed = content_range(headers)
        if parsed is None:
            raise TransientError(f"{self.display}: 206 without a usable Content-Range")
        return parsed

    def _network_error(self, exc: BaseException) -> BackendError:
        import aiohttp

        if isinstance(exc, aiohttp.ClientPayloadError):
            return TruncatedBody(f"{self.display}: the body ended early ({_short(exc)})",
                                 identifier=self.display,
                                 hint="the connection dropped; run again to resume")
        if isinstance(exc, aiohttp.TooManyRedirects):
            return BackendError(f"{self.display}: too many redirects",
                               hint="the link loops; ask the publisher for a direct link",
                               identifier=self.display)
        if isinstance(exc, aiohttp.RedirectClientError):
            # file://, data:, or a URL without a host: a permanent answer, never retried
            return BackendError(f"{self.display}: the server redirected to a URL that is not "
                                f"an http(s) URL with a host ({_short(exc)})",
                                hint="ask the publisher for a direct http(s) link",
                                identifier=self.display)
        if isinstance(exc, TimeoutError | asyncio.TimeoutError):
            return TransientError(f"{self.display}: timed out", identifier=self.display,
                                  hint="the server is slow or unreachable; raise "
                                       "HOSTKIT_READ_TIMEOUT or try again later")
        if isinstance(exc, aiohttp.ClientConnectorError | ConnectionRefusedError):
            return Unreachable(f"{self.display}: cannot connect ({_short(exc)})",
                               identifier=self.display,
                               hint="check the host name and your network; the server may be down")
        return TransientError(f"{self.display}: connection failed ({_short(exc)})",
                              identifier=self.display, hint="try again")


def _client_errors():
    import aiohttp

    return aiohttp.ClientError


def _short(exc: BaseException) -> str:
    from hostkit.redact import redact_text

    return redact_text(str(exc) or type(exc).__name__)[:200]


def _info(resp) -> RemoteInfo:
    headers = resp.headers
    etag = headers.get("ETag")
    size = headers.get("Content-Length")
    validator = etag or (f"lm:{headers['Last-Modified']}" if "Last-Modified" in headers else None)
    md5 = md5_from_base64(headers.get("Content-MD5"))
    digests = {"md5": md5} if md5 else {}
    return RemoteInfo(size=int(size) if size and size.isdigit() else None, validator=validator,
                      digests=digests, content_type=headers.get("Content-Type"))


def _usable_for_if_range(validator: str | None) -> bool:
    # only a strong ETag guards a resume: weak ones may not be used in If-Range, and
    # Last-Modified has one-second resolution
    return bool(validator) and not validator.startswith("W/") and not validator.startswith("lm:")


def _retry_after(resp) -> float | None:
    value = resp.headers.get("Retry-After", "")
    return min(float(value), 60.0) if value.isdigit() else None
