"""Requests and ranged GETs through the resolver's pooled aiohttp session.

:func:`open_range` is the one ranged GET every backend uses, for a resumed
download (``bytes=N-``) and for one part of a parallel read (``bytes=A-B``)
alike. It holds the rule that keeps two objects from being mixed: a 206 is
used only when it starts at the offset asked and carries the validator
expected (the ``If-Range`` sent, or the headers a HEAD saw). A resume the
server cannot honour (416, a 206 from elsewhere or of another object) starts
over from byte 0; a part that is not the part asked for raises, since a part
cannot start over. The resolver checks the same rule again before it appends
(``hostkit.resolver._may_append``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from hostkit.errors import TruncatedBody
from hostkit.headers import content_range

from .errors import network_error

#: What a download asks for: the bytes as published, no content coding.
IDENTITY = {"Accept-Encoding": "identity"}


class HttpStatus(Exception):
    """An answer that is not the bytes asked for: its status, reason, headers, start of body.

    Map it with :func:`hostkit.backend.status_error` (or the backend's own
    reading of the body, such as S3's ``<Code>``).
    """

    def __init__(self, status: int, body: str = "", reason: str = "",
                 headers: Mapping[str, str] | None = None):
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body
        self.reason = reason
        self.headers = headers or {}


class ObjectChanged(Exception):
    """A part's answer names another object than expected (a different validator)."""

    def __init__(self, header: str, expected: str, found: str | None):
        super().__init__(f"{header} {found!r} instead of {expected!r}")
        self.header = header


#: What aiohttp buffers of one part of a parallel read before it stops reading the socket
#: (twice this): parts waiting for their turn then leave the rest in the kernel's socket
#: buffer, where it costs the process no memory (see :mod:`hostkit.backend.parts`).
PART_READ_BUFSIZE = 256 << 10


@contextlib.asynccontextmanager
async def request(context, method: str, url: str, *, headers=None, ssl: Any = True,
                  encoded: bool = True, max_redirects: int = 0, display: str | None = None,
                  read_bufsize: int | None = None, data: Any = None):
    """One request through the context's pooled aiohttp session; yields the response.

    ``data`` is the request body (bytes, or an async iterable of bytes for a stream).

    With ``encoded`` the URL is sent byte for byte (it may be signed);
    otherwise yarl quotes it as a browser would. Proxies come from the
    environment; redirects are followed up to ``max_redirects`` (0: none).
    With ``display`` (the identifier as shown) a failure to get an answer is
    raised as the hostkit error :func:`~hostkit.backend.network_error` maps it to.
    ``read_bufsize`` overrides the session's body buffer for this response.
    """
    from yarl import URL

    session = await context.http_session()
    target = URL(url, encoded=encoded)
    follow: dict[str, Any] = {"max_redirects": max_redirects} if max_redirects \
        else {"allow_redirects": False}
    if read_bufsize is not None:
        follow["read_bufsize"] = read_bufsize
    try:
        resp = await session.request(method, target, headers=headers, ssl=ssl, data=data,
                                     **follow, **context.proxy_for(target))
    except Exception as exc:
        if display is None:
            raise
        raise network_error(exc, display) or exc from None
    async with resp:
        yield resp


def range_headers(start: int, end: int | None = None) -> dict[str, str]:
    """The headers of a read of bytes ``[start, end)`` (``end`` None: to the end)."""
    last = "" if end is None else str(end - 1)
    return {"Range": f"bytes={start}-{last}", **IDENTITY}


@dataclass
class Ranged:
    """An answer :func:`open_range` accepted: the bytes from ``start`` of a ``total``-byte object.

    ``total`` is None when the server did not say. ``response`` is the aiohttp
    response (headers for the backend's metadata; read it with :meth:`chunks`).
    """

    response: Any
    start: int
    total: int | None
    #: When set, a connection failing mid-body is raised as :func:`network_error` says.
    display: str | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, as it arrives."""
        try:
            async for chunk in self.response.content.iter_any():
                yield chunk
        except Exception as exc:
            if self.display is None:
                raise
            raise network_error(exc, self.display) or exc from None


async def read_body(resp, limit: int) -> bytes:
    """The whole body of a small answer (a listing, a JSON document), at most ``limit + 1``
    bytes: a caller seeing more than ``limit`` knows the answer was too large.

    ``resp.content.read(n)`` returns what has arrived so far, not ``n`` bytes: a body
    that comes in several pieces (a server flushing as it writes, a slow link) would
    be cut at the first one and read as malformed.
    """
    data = bytearray()
    while len(data) <= limit:
        chunk = await resp.content.read(limit + 1 - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


async def _body_start(resp) -> str:
    with contextlib.suppress(Exception):
        return (await resp.content.read(4096)).decode("utf-8", "replace")
    return ""


@contextlib.asynccontextmanager
async def open_range(context, url: str, offset: int = 0, end: int | None = None, *,
                     headers: Mapping[str, str] | None = None, if_range: str | None = None,
                     expect: Mapping[str, str] | None = None, pinned_by_url: bool = False,
                     ssl: Any = True, encoded: bool = True, max_redirects: int = 0,
                     display: str | None = None, size: int | None = None):
    """GET bytes ``[offset, end)`` of ``url`` (``end`` None: to the end); yields a :class:`Ranged`.

    ``size`` is the object's whole size as the caller learnt it (a listing, a HEAD):
    an answer for an object of another size (a 206's ``Content-Range`` total, a 200's
    length) is another object (:class:`ObjectChanged`), however well its range fits.

    ``if_range`` (a strong ETag) is sent with a resume; a 206 must carry it
    back as its ``ETag``. ``expect`` maps response headers to the values the
    object must have (an ETag, a version id): every answer must carry them,
    except that with ``pinned_by_url`` (the URL names the version itself) an
    answer without them is taken and one naming another version is not.

    Without ``end`` (a resume) an answer that cannot continue at ``offset``
    (416, a 206 from elsewhere or without the validator) is dropped and the
    whole object asked for instead: the Ranged then starts at 0. With ``end``
    (a part) such an answer raises :class:`ObjectChanged` (another object)
    or :class:`~hostkit.errors.TruncatedBody` (another range); a 200 is taken
    only when it is exactly the bytes asked for.

    With ``display`` (the identifier as shown), a network failure, on
    connecting or while the body streams, is raised as the hostkit error
    :func:`~hostkit.backend.network_error` maps it to.

    :raises HttpStatus: any other answer (map it with ``status_error``).
    """
    async with _open_range(context, url, offset, end, headers=headers, if_range=if_range,
                           expect=expect, pinned_by_url=pinned_by_url, ssl=ssl,
                           encoded=encoded, max_redirects=max_redirects,
                           display=display, size=size) as ranged:
        ranged.display = display
        yield ranged


@contextlib.asynccontextmanager
async def _open_range(context, url: str, offset: int, end: int | None, *, headers,
                      if_range, expect, pinned_by_url: bool, ssl, encoded: bool,
                      max_redirects: int, display: str | None, size: int | None):
    base = {**IDENTITY, **(headers or {})}
    ranged = bool(offset) or end is not None
    sent = {**base, **range_headers(offset, end)} if ranged else base
    if if_range and offset:
        sent["If-Range"] = if_range
    expected = dict(expect or {})
    if if_range and offset:
        expected.setdefault("ETag", if_range)
    async with contextlib.AsyncExitStack() as stack:
        resp = await stack.enter_async_context(
            request(context, "GET", url, headers=sent, ssl=ssl, encoded=encoded,
                    max_redirects=max_redirects, display=display,
                    read_bufsize=None if end is None else PART_READ_BUFSIZE))
        start, total = _accepted(resp, offset, end, expected, pinned_by_url)
        if start is None and end is None and offset and resp.status in (206, 416):
            # the resume cannot continue here: ask for the whole object instead
            await stack.aclose()
            resp = await stack.enter_async_context(
                request(context, "GET", url, headers=base, ssl=ssl, encoded=encoded,
                        max_redirects=max_redirects, display=display))
            offset, expected = 0, dict(expect or {})
            start, total = _accepted(resp, 0, None, expected, pinned_by_url)
        if start is not None and None not in (size, total) and total != size:
            raise ObjectChanged("size", str(size), str(total))
        if start is None:
            if end is not None and resp.status in (200, 206):
                _refuse_part(resp, offset, end, expected, pinned_by_url, size)
            raise HttpStatus(resp.status, await _body_start(resp), resp.reason or "",
                             resp.headers)
        yield Ranged(resp, start, total)


def _validators_match(resp, expected: Mapping[str, str], pinned_by_url: bool) -> bool:
    for name, value in expected.items():
        found = resp.headers.get(name)
        if found != value and not (found is None and pinned_by_url):
            return False
    return True


def _accepted(resp, offset: int, end: int | None, expected, pinned_by_url: bool
              ) -> tuple[int | None, int | None]:
    """``(start, total)`` when ``resp`` serves ``[offset, end)``, else ``(None, None)``."""
    if resp.status == 206:
        first, total = content_range(resp.headers) or (None, None)
        if first != offset or not _validators_match(resp, expected, pinned_by_url):
            return None, None
        return first, total
    if resp.status == 200:
        if end is None:  # the whole object, from 0 (a resume the server declined)
            return 0, resp.content_length
        if offset == 0 and resp.content_length == end \
                and _validators_match(resp, expected, pinned_by_url):
            return 0, end
    return None, None


def _refuse_part(resp, offset: int, end: int, expected, pinned_by_url: bool,
                 size: int | None = None) -> None:
    """Raise why an answer is not the part asked for: another object, or another range."""
    if resp.status == 200 and size is not None and resp.content_length is not None \
            and resp.content_length != size:
        raise ObjectChanged("size", str(size), str(resp.content_length))
    if resp.status == 200 and not (offset == 0 and resp.content_length == end):
        return  # not a part at all: an HttpStatus
    for name, value in expected.items():
        found = resp.headers.get(name)
        if found != value and not (found is None and pinned_by_url):
            raise ObjectChanged(name, value, found)
    first, _ = content_range(resp.headers) or ("?", None)
    raise TruncatedBody(f"asked for bytes from {offset}, got {first}",
                        hint="the server ignored the range; try again")


async def ranged_get(context, url: str, start: int, end: int, **options) -> AsyncIterator[bytes]:
    """Iterate over bytes ``[start, end)`` of ``url``: one part of a parallel read.

    ``options`` are those of :func:`open_range` (``headers``, ``expect``,
    ``pinned_by_url``, ``ssl``). The URL may carry a signature: it never goes
    into a message.
    """
    async with open_range(context, url, start, end, **options) as ranged:
        async for chunk in ranged.chunks():
            yield chunk
