"""http backend: direct download links (``https://...`` and MedPerf's ``direct:https://...``).

Ranges and ETags are used when the server offers them: a resumed download
sends ``Range`` with ``If-Range`` so the server itself guarantees the object
did not change. Share links and web pages are refused with a hint, and with
the direct form as the error's ``suggestion`` where there is one.

For ``hostkit check`` (the ``hostkit_check`` hook) this backend probes a URL
the way MedPerf's users fetch it: one anonymous GET of its first bytes, with
nothing but what the URL itself carries; and it knows what makes a URL
impermanent (a presigned URL's expiry).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

from hostkit.backend import (
    IDENTITY,
    HttpStatus,
    network_error,
    open_range,
    raise_for_status,
    read_body,
    request,
    retry_after,
    status_error,
)
from hostkit.errors import (
    CredentialsNeeded,
    CredentialsRefused,
    HostkitError,
    NotAFile,
    NotDirectLink,
    NotFound,
    NotPermanent,
    TransientError,
    UsageError,
)
from hostkit.headers import content_range, md5_from_base64
from hostkit.hookspecs import Findings, Verdict, hookimpl
from hostkit.redact import is_secret_param, redact_url, url_cache_key
from hostkit.remote import BackendInfo, Body, Remote, RemoteInfo, strong_validator

#: A page's start: after any byte order mark, XML declaration and comments (servers that
#: call a page application/octet-stream send those too).
_HTML_START = re.compile(rb"^(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*"
                         rb"(<!doctype\s+html|<html|<head|<body)", re.I | re.S)
#: A page asking for a password (a login form): the link needs a login.
_LOGIN_FORM = re.compile(rb"<input[^>]*type\s*=\s*[\"']?password|<form[^>]*"
                         rb"(?:login|log-in|signin|sign-in|sign_in|auth)", re.I)
#: Where a share link's direct form is not enough: "host it elsewhere".
_ELSEWHERE = ("host the file where a plain GET returns it: Synapse, a public bucket (hostkit "
              "publish / hostkit upload), a web server, or GitHub at a commit")
_DRIVE_HOSTS = ("drive.google.com", "docs.google.com")
_DRIVE_BIG = ("files over about 100 MB get a virus-scan confirmation page from Drive instead "
              "of the file, which no plain GET gets past: host those elsewhere")
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
    refuse_share_links(ref.identifier)  # first: a share link's own words say more
    refuse_empty_segments(ref)
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
    """Raise the error of :func:`share_link_problem` for a share link; nothing otherwise."""
    if (problem := share_link_problem(url)) is not None:
        raise problem


def share_link_problem(url: str) -> HostkitError | None:
    """Why a well-known share link is not a direct download, with its direct form if any.

    Dropbox (``dl=0``: ``dl=1``, or ``raw=1``, is the file), Google Drive
    (``/file/d/ID/view``, ``open?id=ID``, ``uc?export=view&id=ID``:
    ``uc?export=download&id=ID``, or ``uc?id=ID``, is the file, for files small
    enough to skip Drive's virus-scan page), GitHub's ``blob`` pages (the raw URL
    at a commit), OneDrive and SharePoint (no permanent direct form:
    host elsewhere). :class:`NotDirectLink` (a page) or :class:`NotPermanent`,
    whose ``suggestion`` is the direct form; None for anything else.
    """
    parts, shown = urlsplit(url), redact_url(url)
    host, path = (parts.hostname or "").lower(), parts.path
    query = parse_qs(parts.query)
    if host in _DRIVE_HOSTS:
        uc = path.rstrip("/") == "/uc"
        if uc and query.get("id") and query.get("export", ["download"]) == ["download"]:
            # Drive's direct form, export=download being uc's default (gdown's uc?id=ID);
            # small files only: a big one answers a page
            return None
        match = re.match(r"^/file/d/([\w-]+)", path)
        ids = [match.group(1)] if match else query.get("id", []) if path == "/open" or uc \
            else []
        if ids and re.fullmatch(r"[\w-]+", ids[0]):
            direct = f"https://drive.google.com/uc?export=download&id={ids[0]}"
            return NotDirectLink(
                f"{shown} is a Google Drive share page, not the file",
                hint=f"use Drive's direct form {direct}; {_DRIVE_BIG}", identifier=shown,
                suggestion=direct)
        return NotDirectLink(f"{shown} is a Google Drive page, not a file",
                             hint=_ELSEWHERE + "; Drive interposes pages for large files",
                             identifier=shown)
    if (host == "dropbox.com" or host.endswith(".dropbox.com")) and query.get("dl") != ["1"] \
            and query.get("raw") != ["1"]:  # raw=1 serves the file too
        pairs = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "dl"]
        direct = urlunsplit((parts.scheme, parts.netloc, path,
                             urlencode([*pairs, ("dl", "1")]), ""))
        # a suggestion is printed whole (resolve --json, the daemon's answers): none that
        # would carry the link's token
        return NotDirectLink(f"{shown} is a Dropbox share page, not the file",
                             hint=f"use the same link with dl=1: {redact_url(direct)}",
                             identifier=shown,
                             suggestion=direct if redact_url(direct) == direct else None)
    if host in ("1drv.ms", "onedrive.live.com", "onedrive.com") or \
            host.endswith((".sharepoint.com", ".onedrive.com")):
        what = "SharePoint" if "sharepoint" in host else "OneDrive"
        return NotPermanent(
            f"{shown} is a {what} share link: not a permanent direct link (it opens a page, "
            "and the download addresses behind it are temporary)",
            hint=_ELSEWHERE, identifier=shown)
    match = re.match(r"^/([^/]+)/([^/]+)/blob/([^/]+)/(.+)$", path)
    if host == "github.com" and match:
        owner, repo, gitref, file = match.groups()
        pinned = re.fullmatch(r"[0-9a-f]{40}", gitref) is not None
        raw = f"https://raw.githubusercontent.com/{owner}/{repo}/{gitref}/{file}"
        return NotDirectLink(
            f"{shown} is GitHub's page for the file, not the file",
            hint=f"use {redact_url(raw)}" if pinned else
                 f"use https://raw.githubusercontent.com/{owner}/{repo}/<40-hex commit>/"
                 f"{redact_url(file)} (pin a commit, not {gitref!r})",
            identifier=shown, suggestion=raw if pinned else None)
    return None


def page_problem(url: str, display: str, content_type: str | None,
                 first: bytes) -> HostkitError | None:
    """Why an answer starting with ``first`` is not the file: a login page, a web page; or None.

    A page is HTML declared (``text/html``) or recognisable at its start, unless
    the URL itself names an ``.html`` file. A page with a password field or a
    login form is :class:`CredentialsNeeded`; any other :class:`NotDirectLink`.
    """
    looks_html = _HTML_START.match(first[:512]) is not None
    declared_html = (content_type or "").startswith(("text/html", "application/xhtml"))
    wants_html = urlsplit(url).path.lower().endswith((".html", ".htm"))
    if not (declared_html or looks_html) or wants_html:
        return None
    if _LOGIN_FORM.search(first):
        return CredentialsNeeded(
            f"{display} returned a login page (an HTML form asking for a password), not the "
            "file", hint="the link needs a login; direct links must allow an anonymous GET: "
                         "make the file public, or " + _ELSEWHERE, identifier=display)
    drive = (urlsplit(url).hostname or "").lower() in _DRIVE_HOSTS
    return NotDirectLink(
        f"{display} returned a web page (HTML), not a file",
        hint=("Google Drive " + _DRIVE_BIG) if drive else
             "this is a share or login page; use a permanent direct download link "
             "(`wget URL` must download the file itself)", identifier=display)


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
        if (problem := page_problem(self.url, self.display, info.content_type,
                                    first_chunk)) is not None:
            raise problem

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


# -- hostkit check ---------------------------------------------------------------------

#: Bytes a probe reads: enough to tell a file from a page, never a whole large file.
PROBE_BYTES = 4096
#: A backend's reading of a probe's first bytes: ``(first bytes, display) -> error or None``.
Inspect = Callable[[bytes, str], HostkitError | None]
_PUBLIC_FIX = ("direct links must allow an anonymous GET: make the file public, or "
               + _ELSEWHERE)
_SIGNED_FIX = ("host the file at a permanent address: make the object publicly readable and "
               "submit its plain URL, or upload it where MedPerf reads it (hostkit publish)")


@hookimpl(trylast=True)
def hostkit_check(ref, context):
    """Judge an ``http``/``https`` URL as MedPerf's users would fetch it (see :func:`check_url`)."""
    if ref.scheme not in ("http", "https"):
        return None
    return check_url(ref, context)


async def probe(context, url: str, display: str, inspect: Inspect | None = None
                ) -> tuple[int, str | None, int | None]:
    """One GET of the first :data:`PROBE_BYTES` of ``url``, sending only what the URL carries.

    Follows redirects; reads at most that much, then drops the connection
    (a server ignoring ``Range`` does not send the whole file). ``inspect``
    (a backend's own reading of those first bytes, e.g. github's Git LFS
    pointers) may return the error that says they are not the file.

    :returns: ``(status, content type, size)``: the size from ``Content-Range``
        or ``Content-Length``, None if the server did not say.
    :raises hostkit.errors.HostkitError: what a download would raise: a page
        (:class:`NotDirectLink`), a login (:class:`CredentialsNeeded`, also for
        a 200 login form), not found, unreachable...
    """
    headers = {**IDENTITY, "Range": f"bytes=0-{PROBE_BYTES - 1}"}
    try:
        async with request(context, "GET", url, headers=headers, encoded=False,
                           max_redirects=10) as resp:
            raise_for_status(resp, display, texts=_TEXTS)
            first = await read_body(resp, PROBE_BYTES - 1)
            content_type = resp.headers.get("Content-Type")
            problem = page_problem(url, display, content_type, first) or (
                inspect(first, display) if inspect is not None else None)
            if problem is not None:
                raise problem
            total = content_range(resp.headers)[1] if resp.status == 206 and \
                content_range(resp.headers) else resp.content_length
            return resp.status, content_type, total
    except HostkitError:
        raise
    except (TimeoutError, OSError, _client_errors()) as exc:
        raise network_error(exc, display, hints=_HINTS) or TransientError(
            f"{display}: connection failed ({type(exc).__name__})", hint="try again",
            identifier=display) from None


def carried_credentials(url: str) -> str | None:
    """What credential a URL carries itself (userinfo, a signature, a token), or None."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        return "a user name and password"
    if signed_expiry(url) is not None:  # every signature parameter makes one
        return "a signature"
    if any(is_secret_param(k) for k, _ in parse_qsl(parts.query, keep_blank_values=True)):
        return "a token or key in its query"
    return None


def signed_expiry(url: str) -> tuple[datetime | None, str] | None:
    """When a presigned URL expires, and whose signing it is: S3, GCS, Azure SAS, CloudFront.

    ``X-Amz-Date`` + ``X-Amz-Expires``, ``X-Goog-Date`` + ``X-Goog-Expires``,
    Azure's ``se`` (with ``sig``), ``Expires`` (epoch seconds, with ``Signature``).
    The time is None for a signed URL that does not say when in a form that can be
    read (no date, an odd one, one no calendar holds, an Azure stored access policy);
    None for a URL that is not signed at all.
    """
    query = {k.lower(): v for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
    for prefix, who in (("x-amz-", "S3"), ("x-goog-", "Google Cloud Storage")):
        date, expires = query.get(f"{prefix}date"), query.get(f"{prefix}expires")
        if f"{prefix}signature" in query or (date is not None and expires is not None):
            return _expiry(_signed_plus, date, expires), who
    if "sig" in query:
        who = "Azure (a SAS)" if {"sv", "se", "sp", "sr"} & set(query) else "a signed URL"
        return _expiry(_iso, query.get("se")), who
    if "signature" in query:
        return _expiry(_seconds, query.get("expires")), "a signed URL"
    return None


def _signed_plus(date: str | None, expires: str | None) -> float:
    """SigV4's ``X-Amz-Date`` (``20240101T000000Z``) plus ``X-Amz-Expires`` seconds."""
    signed = datetime.strptime(date or "", "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return signed.timestamp() + _seconds(expires)


def _iso(text: str | None) -> float:
    """An ISO 8601 time (Azure's ``se``; UTC when it names no zone)."""
    moment = datetime.fromisoformat((text or "").replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _seconds(text: str | None) -> float:
    """Whole seconds written in ASCII digits (``str.isdigit`` also takes ``²``)."""
    if not (text and text.isascii() and text.isdigit()):
        raise ValueError(text)
    return float(text)


def _expiry(timestamp, *texts: str | None) -> datetime | None:
    """The time ``timestamp(*texts)`` reads from a URL's parameters; None if it cannot
    (a malformed date, or one past what ``datetime`` holds)."""
    try:
        return datetime.fromtimestamp(timestamp(*texts), UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _span(seconds: float) -> str:
    seconds = abs(seconds)
    for limit, unit in ((120, "second"), (7200, "minute"), (172800, "hour")):
        if seconds < limit:
            n = int(seconds // {"second": 1, "minute": 60, "hour": 3600}[unit])
            return f"{n} {unit}{'s' if n != 1 else ''}"
    n = int(seconds // 86400)
    return f"{n} day{'s' if n != 1 else ''}"


def _without_credentials(url: str) -> str:
    """The URL with no userinfo and no signing or secret parameters (what anyone can ask for)."""
    return url_cache_key(url)


async def check_url(ref, context, *, private: tuple[str, str] | None = None,
                    hidden: tuple[str, str] | None = None,
                    inspect: Inspect | None = None) -> Findings:
    """The findings for an http(s) URL: probed as given, then without its own credentials.

    ``private`` is the ``(message, fix)`` to give when an anonymous GET is
    refused, for a backend that knows why (an object store: "the object is
    private"); ``hidden`` the same for a 404, from a host that answers so to
    whoever may not read a file (GitHub); the http backend's own texts
    otherwise. ``inspect`` is passed to :func:`probe`.
    """
    url, shown = ref.identifier, ref.display
    found = Findings(medperf=None if ref.credentialed else url)
    anonymous, direct = await _probed(context, url, shown, private, hidden, inspect)
    found.anonymous, found.direct = anonymous, direct
    found.fetch = direct.ok is True
    share = share_link_problem(url)
    if share is not None:
        if isinstance(share, NotPermanent):
            found.permanent = Verdict.failed(share)
        else:
            found.direct = Verdict.failed(share)
            found.fetch = False
    carried = carried_credentials(url)
    plain: str | None = None
    if carried is not None:
        bare = _without_credentials(url)
        plain_ok, _ = await _probed(context, bare, redact_url(bare), private, hidden, inspect)
        if plain_ok.ok:
            plain = bare
            fix = f"submit it without them: {redact_url(bare)} is readable by anyone"
        else:
            fix = ((private[1] if private else "the file is private without them: make it "
                    "publicly readable, and submit its plain URL " + redact_url(bare))
                   + f" ({plain_ok.message})")
        found.anonymous = Verdict(
            False, f"the link carries its own credential ({carried}): MedPerf's users must "
                   "need none, and a link that holds one hands it to everyone",
            fix, plain)
    if (expiry := signed_expiry(url)) is not None:
        when, who = expiry
        if when is None:
            found.permanent = Verdict(
                False, f"a presigned URL ({who}): when it expires cannot be read from it; a "
                       "signed link stops working when it does", _SIGNED_FIX, plain)
            return found
        left = when.timestamp() - time.time()
        at = when.strftime("%Y-%m-%d %H:%M:%S UTC")
        said = f"expires {at} (in {_span(left)})" if left > 0 else \
            f"expired {at} ({_span(left)} ago)"
        found.permanent = Verdict(
            False, f"a presigned URL ({who}): it {said}; after that every download fails",
            _SIGNED_FIX, plain)
    return found


async def _probed(context, url: str, shown: str, private: tuple[str, str] | None,
                  hidden: tuple[str, str] | None = None,
                  inspect: Inspect | None = None) -> tuple[Verdict, Verdict]:
    """``(anonymous, direct)`` verdicts from one probe of ``url``."""
    try:
        status, content_type, size = await probe(context, url, shown, inspect)
    except (CredentialsNeeded, CredentialsRefused) as exc:
        message, fix = private if private else (exc.message, _PUBLIC_FIX)
        if private:
            message = f"{message}: {exc.message}"
        return (Verdict(False, message, fix),
                Verdict(None, "not reached: a login comes before any file"))
    except NotDirectLink as exc:
        return (Verdict(True, "an anonymous GET is answered, with no login"),
                Verdict.failed(exc))
    except NotFound as exc:
        message, fix = (f"{hidden[0]}: {exc.message}", hidden[1]) if hidden else \
            (exc.message, exc.hint)
        return (Verdict(False, message, fix),
                Verdict(None, "not reached: there is nothing at this address"))
    except HostkitError as exc:
        return (Verdict(False, exc.message, exc.hint),
                Verdict(None, "not reached: no answer from the server"))
    from hostkit.formatting import format_size

    kind = (content_type or "no content type").split(";")[0].strip()
    sized = f", {format_size(size)}" if size is not None else ""
    return (Verdict(True, f"an anonymous GET returns it (HTTP {status}), no credential sent"),
            Verdict(True, f"the file itself ({kind}{sized}), not a web page"))
