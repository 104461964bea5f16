"""http backend: direct download links (``https://...`` and MedPerf's ``direct:https://...``).

Ranges and ETags are used when the server offers them: a resumed download
sends ``Range`` with ``If-Range`` so the server itself guarantees the object
did not change. Share links and web pages are refused with a hint.
"""

from __future__ import annotations

import contextlib
import re
from urllib.parse import parse_qs, urlsplit

from hostkit.backend import (
    IDENTITY,
    HttpStatus,
    network_error,
    open_range,
    raise_for_status,
    request,
    retry_after,
    status_error,
)
from hostkit.errors import HostkitError, NotAFile, NotDirectLink, TransientError, UsageError
from hostkit.headers import md5_from_base64
from hostkit.hookspecs import hookimpl
from hostkit.redact import redact_url, url_cache_key
from hostkit.remote import BackendInfo, Body, Remote, RemoteInfo, strong_validator

_HTML_START = re.compile(rb"^\s*(<!doctype\s+html|<html|<head|<body)", re.I)
#: What a direct link's answers mean, in this backend's words (see ``status_error``).
_TEXTS = {
    "not_found": ("not found ({status})",
                  "check the link; the file may have moved or been deleted"),
    "credentials": ("the server refused anonymous access ({status})",
                    "direct links must allow anonymous GET; ask the publisher for a public "
                    "link or use a backend with credentials (synapse:, s3://)"),
    "changed": ("server answered {status} {reason}", "check the link"),
    "busy": ("server answered {status}", "the server is busy or failing; try again later"),
    "other": ("server answered {status} {reason}", "check the link"),
}
_HINTS = {"unreachable": "check the host name and your network; the server may be down",
          "failed": "try again"}


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
    refuse_empty_segments(ref)
    refuse_share_links(ref.identifier)
    return HttpRemote(ref.identifier, context, display=ref.display, key=ref.key,
                      anonymous=not ref.credentialed)


def refuse_empty_segments(ref) -> None:
    """Refuse a path with an empty segment (``//``, a trailing ``/``) or no file at all.

    Servers and proxies merge or keep ``//`` as they please, so such a link may
    name another file than its cache key says; and a path ending in ``/`` names
    a folder (an index page), never one file.
    """
    path = urlsplit(ref.identifier).path
    if path in ("", "/") or path.endswith("/"):
        raise NotAFile(f"{ref.display} names a folder or a site, not one file",
                       hint="link the file itself: https://host/path/file",
                       identifier=ref.display)
    if "//" in path:
        raise UsageError(f"{ref.display!r} has an empty path segment ('//')",
                         hint="write the path without empty segments")


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
        try:
            async with request(self.context, "HEAD", self.url, headers=IDENTITY,
                               encoded=False, max_redirects=10) as resp:
                raise_for_status(resp, self.display, texts=_TEXTS)
                return _info(resp.headers)
        except HostkitError:
            raise  # ours (NotFound is an OSError too): not a network failure
        except (TimeoutError, OSError, _client_errors()) as exc:
            raise self._network_error(exc) from None

    @contextlib.asynccontextmanager
    async def open(self, offset: int = 0, validator: str | None = None):
        """GET from ``offset`` when ``validator`` can be checked by the server, else from 0.

        The toolkit's ranged GET sends ``If-Range`` and drops any answer that
        does not continue at ``offset`` under that validator (starting over
        from 0).
        """
        if not strong_validator(validator):
            offset = 0
        async with contextlib.AsyncExitStack() as stack:
            try:
                ranged = await stack.enter_async_context(
                    open_range(self.context, self.url, offset, if_range=validator,
                               encoded=False, max_redirects=10))
            except HttpStatus as exc:
                raise status_error(exc.status, self.display, texts=_TEXTS, reason=exc.reason,
                                   retry_after=retry_after(exc.headers)) from None
            except HostkitError:
                raise  # ours (NotFound is an OSError too): not a network failure
            except (TimeoutError, OSError, _client_errors()) as exc:
                raise self._network_error(exc) from None
            info = _info(ranged.response.headers)
            if ranged.start or ranged.response.status == 206:
                info.size = ranged.total
            yield Body(info, ranged.start, self._chunks(ranged.chunks(), info))

    async def _chunks(self, chunks, info: RemoteInfo):
        first = True
        try:
            async for chunk in chunks:
                if first:
                    first = False
                    self._refuse_html(info, chunk)
                yield chunk
        except HostkitError:
            raise
        except (TimeoutError, OSError, _client_errors()) as exc:
            raise self._network_error(exc) from None

    def _refuse_html(self, info: RemoteInfo, first_chunk: bytes) -> None:
        looks_html = _HTML_START.match(first_chunk[:512]) is not None
        declared_html = (info.content_type or "").startswith(("text/html", "application/xhtml"))
        wants_html = urlsplit(self.url).path.lower().endswith((".html", ".htm"))
        if (declared_html or looks_html) and not wants_html:
            raise NotDirectLink(
                f"{self.display} returned a web page (HTML), not a file",
                hint="this is a share or login page; use a permanent direct download link "
                     "(`wget URL` must download the file itself)", identifier=self.display)

    def _network_error(self, exc: BaseException) -> HostkitError:
        return network_error(exc, self.display, hints=_HINTS) or TransientError(
            f"{self.display}: connection failed ({type(exc).__name__})", hint="try again",
            identifier=self.display)


def _client_errors():
    import aiohttp

    return aiohttp.ClientError


def _info(headers) -> RemoteInfo:
    etag = headers.get("ETag")
    size = headers.get("Content-Length")
    validator = etag or (f"lm:{headers['Last-Modified']}" if "Last-Modified" in headers else None)
    md5 = md5_from_base64(headers.get("Content-MD5"))
    digests = {"md5": md5} if md5 else {}
    return RemoteInfo(size=int(size) if size and size.isdigit() else None, validator=validator,
                      digests=digests, content_type=headers.get("Content-Type"))
