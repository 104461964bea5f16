"""What a backend gives the resolver: a :class:`Remote` to read and an :class:`Uploader`.

A backend's ``hostkit_resolve`` hook turns a :class:`~hostkit.identifiers.Ref`
into a :class:`Remote` without any I/O. The resolver then asks the Remote for
metadata (``stat``) when it needs to revalidate, and for bytes (``open``) when
it downloads. A Remote that names a folder (``tree``) is asked for its files
instead (``list``), each one a Remote of its own. Everything that touches the
network is async.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .settings import Settings


@dataclass
class RemoteInfo:
    """What a backend knows about an object before (or while) downloading it.

    ``validator`` is an opaque change token (ETag, versionId, generation,
    Last-Modified): equal validators mean equal bytes. ``digests`` holds
    digests the server advertises (``{"md5": hex}``), checked as an extra guard.
    ``immutable`` is true when the reference can never point at other bytes.
    """

    size: int | None = None
    validator: str | None = None
    digests: dict[str, str] = field(default_factory=dict)
    immutable: bool = False
    content_type: str | None = None
    filename: str | None = None


def strong_validator(validator: str | None) -> bool:
    """Whether a validator names exact bytes: a strong ETag, a version id or a generation.

    Only such a validator may guard a resume (``If-Range``, or appending a 206 to
    a partial): a weak ETag (``W/...``) may stand for other bytes, and
    ``Last-Modified`` (``lm:...``) has a one-second resolution.
    """
    return validator is not None and validator != "" and \
        not validator.startswith(("W/", "lm:"))


@dataclass
class Body:
    """An open download: metadata and an async stream of chunks.

    ``offset`` is where the streamed bytes start in the object: the requested
    offset when the backend resumed, or 0 when it had to start over (for
    example because the object changed since the partial download).
    """

    info: RemoteInfo
    offset: int
    chunks: AsyncIterator[bytes]


@dataclass
class TreeEntry:
    """One file of a folder, as its backend's listing names it (see :meth:`Remote.list`).

    ``path`` is the file's path inside the folder, ``/``-separated, exactly as the
    source names it relative to the folder (the core refuses unsafe names, see
    :mod:`hostkit.store.snapshots`; do not clean them up). ``remote`` is the file's
    own Remote, made with no I/O, with the cache key a single-file identifier of it
    would have, so the file is cached, resumed and shared exactly as that
    identifier would be. ``size``, ``validator`` (the ETag, version or generation
    the listing shows; equal validators mean equal bytes) and ``digests`` (what
    the server vouches for: ``{"md5": hex}``) are what the listing says, or None
    / empty when it says nothing: an unchanged file (same validator and size as
    its cache entry) is then not fetched again. A name ending in ``/`` with size
    0 is a folder placeholder: the core skips it.
    """

    path: str
    remote: Remote
    size: int | None = None
    validator: str | None = None
    digests: dict[str, str] = field(default_factory=dict)


class Remote:
    """One object at a backend. Subclass it in a backend plugin.

    Contract:
    - ``cache_key`` identifies the object across endpoints/accounts (the same
      ``bucket/key`` on two endpoints has two keys). The index is keyed on it.
    - ``display`` is the identifier to show people: no secrets in it.
    - ``immutable`` is true when known before any I/O (commit pin, versionId).
    - ``open`` resumes from ``offset`` only when the object still matches
      ``validator``; otherwise it streams from 0 and says so in ``Body.offset``.
    - Failures raise :mod:`hostkit.errors` types; :class:`~hostkit.errors.TransientError`
      means the resolver may retry (and resume).
    """

    cache_key: str
    display: str
    immutable: bool = False
    #: True only when the bytes are fetched with no credential at all (an anonymous
    #: GET of a URL without userinfo, token or signature). Such blobs may be shown
    #: to callers a shared daemon does not lend its credentials to.
    anonymous: bool = False
    #: True when the identifier names something that can move (a branch, a tag) or must
    #: be looked up to name one object (a short commit id): the resolver first calls
    #: :meth:`pin` and goes on with the Remote it returns, so the cache entry and the
    #: answer name the pinned identifier.
    movable: bool = False
    #: What the identifier names: False a file (the default); True a folder (a tree),
    #: resolved through :meth:`list` into a snapshot folder; None when only the backend
    #: can tell, with a request (``synapse:syn123``: a file or a folder): the resolver
    #: then asks :meth:`is_tree`, unless the cache already knows the answer.
    tree: bool | None = False

    async def is_tree(self) -> bool:
        """Whether the identifier names a folder (one metadata request). Called only when
        ``tree`` is None; raise :mod:`hostkit.errors` types as :meth:`stat` does."""
        raise NotImplementedError

    def list(self) -> AsyncIterator[TreeEntry]:
        """The files of the folder this Remote names: an async iterator of :class:`TreeEntry`.

        Called only for a folder (``tree`` true, or :meth:`is_tree` said so).
        Contract:

        - Yield every file under the folder, at any depth, in any order, paging
          through the backend's listing as it goes (S3 ``ListObjectsV2`` with its
          continuation token, GCS ``pageToken``, Azure's ``marker``, Synapse's
          ``nextPageToken``; a recursive walk where the API lists one level). The
          core stops iterating (``aclose``) once a listing exceeds its caps
          (``tree_max_files``, ``tree_max_bytes``), so yield as pages arrive.
        - Yield names as listed, relative to the folder: the core refuses ``..``,
          absolute paths, empty segments, backslashes, names that collide, a name
          that is a file and a folder, and skips zero-byte ``name/`` folder
          placeholders. Do not clean names up: a name that cannot be written as
          it is listed must be refused, not silently renamed.
        - Each entry's ``remote`` is what ``hostkit_resolve`` would return for that
          one file (no I/O to make it). It may carry what the listing said (size,
          ETag) so that its download needs no extra metadata request, as long as
          its reads stay pinned to those bytes (a changed file fails the read).
        - ``self.immutable`` true promises the listing never changes (a commit,
          a model version): the core then answers a cached tree with no request.
        - Failures raise :mod:`hostkit.errors` types, as :meth:`stat` does (a
          missing bucket or folder: :class:`~hostkit.errors.NotFound`;
          :class:`~hostkit.errors.TransientError` is retried by the core, listing
          again from the start). A listing with no files is the core's
          :class:`~hostkit.errors.NotFound`.
        """
        raise NotImplementedError

    async def pin(self, *, allow: bool, offline: bool) -> Remote:
        """The Remote of the one immutable object this reference names now (a lookup).

        Called by the resolver, only when ``movable``, before any cached answer.
        ``allow`` is the ``pin`` setting (``hostkit resolve --pin``): without it a
        reference that may move later raises :class:`~hostkit.errors.NotPermanent`,
        with the pinned identifier in its message and as its ``suggestion``. With
        ``offline`` nothing can be looked up: raise an error that says so.
        """
        raise NotImplementedError

    async def stat(self) -> RemoteInfo:
        """Metadata without the body (HEAD or the backend's equivalent)."""
        raise NotImplementedError

    def open(self, offset: int = 0, validator: str | None = None
             ) -> contextlib.AbstractAsyncContextManager[Body]:
        """Async context manager yielding a :class:`Body` from ``offset``."""
        raise NotImplementedError


@dataclass
class UploadResult:
    """Where an upload landed: an identifier that resolves to exactly these bytes."""

    identifier: str
    sha256: str
    size: int
    created: bool = True  # False when identical bytes were already there
    #: A plain http(s) URL of the object, when the store has one (a GET with no
    #: credentials reads it only if the object is public); None otherwise.
    url: str | None = None


def upload_source_size(source: Path) -> int:
    """Size of a file about to be uploaded; UsageError if it is missing or not a file."""
    from .errors import UsageError

    try:
        size = source.stat().st_size
        if not source.is_file():
            raise IsADirectoryError(source)
    except OSError as exc:
        raise UsageError(f"cannot upload {source}: {exc.strerror or 'not a file'}",
                         hint="name a readable file") from None
    return size


class Uploader:
    """Writes a local file to a destination. Returned by the ``hostkit_upload`` hook."""

    async def upload(self, source: Path, *, overwrite: bool = False,
                     content_addressed: bool = False, progress=None) -> UploadResult:
        """Stream ``source`` up, hashing sha256 in the same pass; return the permanent id.

        Must refuse to replace an existing different object unless ``overwrite``;
        uploading identical bytes again returns the same identifier (created=False).
        """
        raise NotImplementedError


@dataclass(frozen=True)
class BackendInfo:
    """How a backend describes itself in ``hostkit plugins`` and in errors."""

    name: str
    schemes: tuple[str, ...]
    summary: str
    examples: tuple[str, ...] = ()
    #: pip extra that installs the backend's client library, if any.
    extra: str | None = None


@dataclass
class Context:
    """Shared state handed to backends: settings and a pooled HTTP session."""

    settings: Settings
    _http: Any = None
    #: Long-lived clients a backend keeps for this resolver's lifetime (an object-store
    #: client per endpoint and credentials), under keys the backend chooses. Each value
    #: has an async ``aclose()``; :meth:`aclose` closes them all.
    clients: dict[str, Any] = field(default_factory=dict)
    #: The options plugins declared (``hostkit_settings``), by ``(backend, key)``; filled
    #: by the resolver when it loads the plugins.
    declared: dict[tuple[str, str], Any] = field(default_factory=dict)

    def option(self, backend: str, key: str) -> Any:
        """The value of a plugin's declared option (environment, config file or default).

        :raises KeyError: no plugin declared ``(backend, key)``: declare it in
            ``hostkit_settings`` first.
        :raises hostkit.errors.UsageError: the value set does not parse.
        """
        return self.settings.option(self.declared[(backend, key)])

    async def http_session(self):
        """The shared :class:`aiohttp.ClientSession` (created on first use)."""
        if self._http is None or self._http.closed:
            import aiohttp

            from .hostmap import resolver_for

            self._http = aiohttp.ClientSession(
                auto_decompress=False,  # the bytes on the wire are the bytes we hash
                # no trust_env: it would also apply ~/.netrc, which clashes with signed
                # requests' Authorization headers; proxies come from proxy_for() instead
                read_bufsize=1 << 20,
                # sock_connect, not connect: aiohttp's connect timeout also counts the wait
                # for a free pooled connection (-j above HTTP_CONNECTIONS), no fault of the host
                timeout=aiohttp.ClientTimeout(total=None,
                                              sock_connect=self.settings.connect_timeout,
                                              sock_read=self.settings.read_timeout),
                headers={"User-Agent": f"hostkit/{_version()}"},
                connector=aiohttp.TCPConnector(limit=HTTP_CONNECTIONS,
                                               resolver=resolver_for(self.settings.resolve)),
            )
        return self._http

    @staticmethod
    def proxy_for(url) -> dict:
        """``proxy``/``proxy_auth`` request arguments from HTTP(S)_PROXY and NO_PROXY.

        aiohttp's lookup reads the whole environment and ``~/.netrc`` on every call
        (a tenth of a small file's CPU): its answer is kept per scheme and host for as
        long as the variables it reads stay the same.
        """
        from yarl import URL

        target = URL(str(url), encoded=True)
        env = tuple(os.environ.get(name) for name in _PROXY_VARIABLES)
        memo = (env, target.scheme, target.host)
        found = _PROXIES.get(memo)
        if found is None:
            from aiohttp.helpers import get_env_proxy_for_url

            try:
                proxy, proxy_auth = get_env_proxy_for_url(target)
                found = {"proxy": proxy, "proxy_auth": proxy_auth}
            except LookupError:
                found = {}
            if len(_PROXIES) > 1024:
                _PROXIES.clear()
            _PROXIES[memo] = found
        return found

    async def aclose(self) -> None:
        """Close pooled connections and the backends' clients."""
        clients, self.clients = list(self.clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):
                await client.aclose()
        if self._http is not None and not self._http.closed:
            await self._http.close()


#: The variables aiohttp's proxy lookup reads (urllib's ``getproxies``, ``no_proxy``, netrc).
_PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "ws_proxy",
                    "WS_PROXY", "wss_proxy", "WSS_PROXY", "no_proxy", "NO_PROXY", "NETRC",
                    "HOME", "REQUEST_METHOD")
_PROXIES: dict[tuple, dict] = {}

#: Connections the shared HTTP session opens at once; further requests wait for one.
HTTP_CONNECTIONS = 64


def _version() -> str:
    from ._version import __version__

    return __version__
