"""synapse backend: files on Synapse (Sage Bionetworks), MedPerf's ``synapse:syn123``.

Identifiers::

    synapse:syn123      the entity's current version (revalidated: its file handle id)
    synapse:syn123.4    version 4: immutable, a cached copy is served with no network

Endpoints: ``HOSTKIT_SYNAPSE_ENDPOINT`` (one base URL serving ``/repo/v1``,
``/auth/v1`` and ``/file/v1``), else the ``[endpoints]`` section of the Synapse
config file, else production. The config file is ``HOSTKIT_SYNAPSE_CONFIG``,
else ``~/.synapseConfig``. The token is found as synapseclient's ``login()``
finds it: the config file's ``[default]`` (or ``[profile $SYNAPSE_PROFILE]``)
``authtoken``, then ``SYNAPSE_AUTH_TOKEN``. Without one, requests are anonymous
(enough for public files).

The real synapseclient (``hostkit[synapse]``, imported on first use) makes the
Synapse calls, in a worker thread because it is synchronous: login
(``GET /userProfile``), the entity bundle (name, size, MD5, file handle id),
then ``fileHandle/batch`` for a presigned URL. The bytes come from that URL
through hostkit's own aiohttp session, so the resolver hashes while writing,
checks the MD5 Synapse advertises, and resumes with ``Range``; the client's own
download cache is never used, so files are not stored twice. The bearer token
goes only to the Synapse endpoints, never to the storage host, and presigned
query strings never appear in messages.

``hostkit upload FILE synapse:synPARENT`` stores FILE under that folder or
project through synapseclient (``File(...).store()``) and prints
``synapse:synNEW.VERSION`` with the sha256.
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from hostkit.backend import HttpStatus, network_error, open_range, require, status_error
from hostkit.errors import (
    AlreadyExists,
    BackendError,
    CredentialsNeeded,
    CredentialsRefused,
    HostkitError,
    NotAFile,
    NotFound,
    SourceChanged,
    TransientError,
    Unreachable,
    UsageError,
)
from hostkit.hookspecs import hookimpl
from hostkit.redact import redact_text, redact_url, url_cache_key
from hostkit.remote import (
    BackendInfo,
    Body,
    Remote,
    RemoteInfo,
    Uploader,
    UploadResult,
    upload_source_size,
)
from hostkit.settings import Option

log = logging.getLogger("hostkit.synapse")

PRODUCTION_REPO = "https://repo-prod.prod.sagebase.org/repo/v1"
PORTAL = "https://www.synapse.org"
FILE_ENTITY = "org.sagebionetworks.repo.model.FileEntity"
_ID = re.compile(r"^(syn\d+)(?:\.([1-9]\d*))?$")
_FORMS = ("synapse:syn123 (the current version) or synapse:syn123.4 (version 4, "
          "cached for good)")
_BUNDLE_REQUEST = {"includeEntity": True, "includeAnnotations": True,
                   "includeFileHandles": True, "includeRestrictionInformation": True}
#: How long entity metadata fetched by stat() is reused by open() in the same resolve.
_META_TTL = 60.0


@hookimpl
def hostkit_backends():
    """The synapse backend (MedPerf's ``synapse:`` identifiers)."""
    return [BackendInfo(
        name="synapse", schemes=("synapse",),
        summary="Synapse files: token from ~/.synapseConfig or SYNAPSE_AUTH_TOKEN, MD5 "
                "checked, versions pinned, resumable; upload into a folder",
        examples=("synapse:syn123", "synapse:syn123.4"),
        extra="synapse")]


@hookimpl
def hostkit_resolve(ref, context):
    """Claim ``synapse:`` identifiers (no I/O: the Synapse config file at most)."""
    if ref.scheme != "synapse":
        return None
    entity_id, version = parse(ref)
    return SynapseRemote(entity_id, version, config_for(context), context)


@hookimpl
def hostkit_upload(destination, context):
    """Upload into ``synapse:synPARENT`` (a folder or project)."""
    if destination.scheme != "synapse":
        return None
    entity_id, version = parse(destination)
    if version is not None:
        raise UsageError(f"cannot upload into a version ({destination.display})",
                         hint="name the parent folder or project: synapse:syn123")
    return SynapseUploader(entity_id, config_for(context), context)


def parse(ref) -> tuple[str, int | None]:
    """``synapse:syn123[.4]`` -> ``("syn123", 4 or None)``; UsageError for anything else."""
    match = _ID.match(ref.rest)
    if not match:
        raise UsageError(f"{ref.display!r} is not a Synapse identifier",
                         hint=f"write {_FORMS}", identifier=ref.display)
    return match.group(1), int(match.group(2)) if match.group(2) else None


# -- configuration ---------------------------------------------------------------


@dataclass(frozen=True)
class SynapseConfig:
    """Where Synapse is and which config file the client reads, decided without I/O."""

    config_path: str
    #: endpoints given by HOSTKIT_SYNAPSE_ENDPOINT; None: the client reads the config file
    repo: str | None = None
    auth: str | None = None
    file: str | None = None
    #: the repository endpoint in effect (for cache keys and messages)
    repo_effective: str = PRODUCTION_REPO
    cache_root: str = ""

    @property
    def client_key(self) -> str:
        return "synapse|" + "|".join((self.config_path, str(self.repo), str(self.auth),
                                       str(self.file), self.repo_effective))

    @property
    def production(self) -> bool:
        return self.repo_effective.rstrip("/") == PRODUCTION_REPO

    def cache_key(self, entity_id: str, version: int | None) -> str:
        name = f"{entity_id}.{version}" if version else entity_id
        if self.production:
            return f"synapse:{name}"
        return f"synapse+{url_cache_key(self.repo_effective)}:{name}"

    def where(self) -> str:
        return "Synapse" if self.production else f"Synapse at {redact_url(self.repo_effective)}"


@hookimpl
def hostkit_settings():
    """``config`` and ``endpoint`` (``HOSTKIT_SYNAPSE_CONFIG``, ``HOSTKIT_SYNAPSE_ENDPOINT``)."""
    return [Option("synapse", "config", "path", None,
                   "the Synapse config file (default ~/.synapseConfig)"),
            Option("synapse", "endpoint", "str", None,
                   "one base URL serving /repo/v1, /auth/v1 and /file/v1 (default: the "
                   "config file's [endpoints], else production)")]


def config_for(context) -> SynapseConfig:
    """Endpoints and config file from this backend's settings (no I/O but the config file)."""
    path = str(context.option("synapse", "config") or Path.home() / ".synapseConfig")
    base = (context.option("synapse", "endpoint") or "").strip().rstrip("/")
    cache_root = str(Path(context.settings.cache_dir) / "synapse-client")
    if base:
        base = re.sub(r"/repo/v1$", "", base)
        if not base.startswith(("http://", "https://")):
            raise UsageError(f"HOSTKIT_SYNAPSE_ENDPOINT={redact_url(base)!r} is not a URL",
                             hint="set it to the base URL serving /repo/v1, /auth/v1 and "
                                  "/file/v1, e.g. https://repo-prod.prod.sagebase.org")
        return SynapseConfig(path, f"{base}/repo/v1", f"{base}/auth/v1", f"{base}/file/v1",
                             f"{base}/repo/v1", cache_root)
    repo = PRODUCTION_REPO
    parser = _read_config(path)
    if parser is not None and parser.has_option("endpoints", "repoEndpoint"):
        repo = parser.get("endpoints", "repoEndpoint").strip().rstrip("/")
    return SynapseConfig(path, repo_effective=repo, cache_root=cache_root)


def _read_config(path: str) -> configparser.RawConfigParser | None:
    parser = configparser.RawConfigParser()
    try:
        parser.read(path)
    except (configparser.Error, OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the Synapse config file {path}: {type(exc).__name__}",
                         hint="fix or move the file (it is an INI file with [default] "
                              "authtoken = ... and optional [endpoints])") from None
    return parser


def _token_source(conf: SynapseConfig) -> str:
    """Where synapseclient's login found (or would find) a token, for messages."""
    parser = _read_config(conf.config_path)
    profile = os.environ.get("SYNAPSE_PROFILE") or "default"
    sections = ["default" if profile == "default" else f"profile {profile}", "authentication"]
    if parser is not None and any(parser.has_option(s, "authtoken") for s in sections):
        return conf.config_path
    if os.environ.get("SYNAPSE_AUTH_TOKEN"):
        return "SYNAPSE_AUTH_TOKEN"
    if os.environ.get("SYNAPSE_TOKEN_AWS_SSM_PARAMETER_NAME"):
        return "the AWS SSM parameter SYNAPSE_TOKEN_AWS_SSM_PARAMETER_NAME"
    return "your Synapse credentials"


def _token_hint(conf: SynapseConfig) -> str:
    return (f"create a personal access token (scopes view and download) at "
            f"{PORTAL}/#!PersonalAccessTokens: and set SYNAPSE_AUTH_TOKEN, or put "
            f"`authtoken = <token>` under [default] in {conf.config_path} (mode 0600)")


# -- the client ---------------------------------------------------------------------


def _synapseclient():
    return require("synapseclient", "synapse", "synapse:")


class SynapseClient:
    """One synapseclient per endpoint and config file, logged in once, kept in Context.clients.

    Every method here blocks: call it with :func:`asyncio.to_thread`.
    """

    def __init__(self, conf: SynapseConfig, settings):
        self.conf = conf
        self.settings = settings
        self._syn = None
        self._lock = threading.Lock()
        #: True when a token was found and accepted; False: anonymous.
        self.logged_in = False
        self.username: str | None = None

    def client(self, what: str = "Synapse"):
        """The logged-in (or anonymous) ``synapseclient.Synapse``; ``what`` names the caller's
        identifier in a login error."""
        with self._lock:
            if self._syn is not None:
                return self._syn
            _synapseclient()
            from synapseclient.core.exceptions import (
                SynapseAuthenticationError,
                SynapseNoCredentialsError,
            )

            # synapseclient makes this folder world-readable; make it private first
            os.makedirs(self.conf.cache_root, mode=0o700, exist_ok=True)
            syn = _client_class()(
                repoEndpoint=self.conf.repo, authEndpoint=self.conf.auth,
                fileHandleEndpoint=self.conf.file, skip_checks=True, silent=True,
                configPath=self.conf.config_path, cache_root_dir=self.conf.cache_root,
                cache_client=False, http_timeout_seconds=self.settings.read_timeout)
            # the resolver retries and resumes itself: keep the client's own retries short
            syn.hostkit_retry = {"retries": 2, "wait": self.settings.backoff,
                                 "max_wait": self.settings.max_backoff, "back_off": 2}
            syn.hostkit_retry_async = {"retry_base_wait": self.settings.backoff,
                                       "retry_max_back_off": self.settings.max_backoff,
                                       "retry_max_wait_before_failure": 60.0}
            syn.cache = _no_cache_class()(self.conf.cache_root)
            try:
                syn.login(silent=True)
                self.logged_in = True
                self.username = getattr(syn.credentials, "username", None)
            except SynapseNoCredentialsError:
                self.logged_in = False  # anonymous: public files only
            except SynapseAuthenticationError as exc:
                if _status_of(exc) in (401, 403):
                    raise CredentialsRefused(
                        f"{what}: {self.conf.where()} refused the access token from "
                        f"{_token_source(self.conf)} ({_status_of(exc)})",
                        hint="the token is wrong, expired or revoked; " + _token_hint(self.conf),
                        identifier=what) from None
                raise CredentialsNeeded(
                    f"{what}: Synapse login failed: {_message(exc)}",
                    hint=_token_hint(self.conf), identifier=what) from None
            self._syn = syn
            return syn

    def bundle(self, entity_id: str, version: int | None, what: str) -> dict:
        """The entity bundle (entity, file handles, restrictions), as ``syn.get`` asks for it."""
        syn = self.client(what)
        uri = f"/entity/{entity_id}/version/{version}/bundle2" if version \
            else f"/entity/{entity_id}/bundle2"
        return syn.restPOST(uri, body=json.dumps(_BUNDLE_REQUEST))

    def presigned(self, file_handle_id: str, entity_id: str, what: str) -> dict:
        """``fileHandle/batch`` with a presigned URL for the entity's file handle."""
        from synapseclient.api import get_file_handle_for_download

        return get_file_handle_for_download(file_handle_id, entity_id, "FileEntity",
                                            synapse_client=self.client(what))

    def close(self) -> None:
        syn, self._syn = self._syn, None
        if syn is not None:
            with contextlib.suppress(Exception):
                syn._requests_session.close()
            with contextlib.suppress(Exception):
                syn._requests_session_storage.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)


_CLIENT_CLASS = None


def _client_class():
    """``synapseclient.Synapse`` with retries bounded by hostkit's settings.

    Left alone the client retries 429/5xx and connection errors for about 30
    minutes (60 tries), login included; hostkit retries (and resumes) itself.
    Its async calls (the upload) give up after 60 s of retries instead of 20 minutes.
    """
    global _CLIENT_CLASS
    if _CLIENT_CLASS is None:
        from synapseclient import Synapse

        class HostkitSynapse(Synapse):
            hostkit_retry: dict = {}
            hostkit_retry_async: dict = {}

            def _build_retry_policy(self, retryPolicy=None):  # noqa: N803 (the client's name)
                return {**super()._build_retry_policy(retryPolicy or {}), **self.hostkit_retry}

            def _build_retry_policy_async(self, retry_policy=None):
                return {**super()._build_retry_policy_async(retry_policy or {}),
                        **self.hostkit_retry_async}

        _CLIENT_CLASS = HostkitSynapse
    return _CLIENT_CLASS


_NO_CACHE_CLASS = None


def _no_cache_class():
    """synapseclient's file cache, made to remember nothing.

    hostkit keeps its own cache, and the client's judges a local file unchanged
    when its mtime matches to the second (``Cache.contains`` never looks at the
    bytes): a file rewritten within a second of its last upload would be
    "stored" again as the old file handle.
    """
    global _NO_CACHE_CLASS
    if _NO_CACHE_CLASS is None:
        from synapseclient.core.cache import Cache

        class NoCache(Cache):
            def contains(self, file_handle_id, path) -> bool:
                return False

            def add(self, file_handle_id, path, md5=None) -> dict:
                return {}

        _NO_CACHE_CLASS = NoCache
    return _NO_CACHE_CLASS


def client_for(context, conf: SynapseConfig) -> SynapseClient:
    """The context's client for ``conf`` (created on first use, closed with the context)."""
    client = context.clients.get(conf.client_key)
    if client is None:
        client = context.clients[conf.client_key] = SynapseClient(conf, context.settings)
    return client


def _status_of(exc: BaseException | None) -> int | None:
    seen = 0
    while exc is not None and seen < 5:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return status
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _reason(exc: BaseException) -> str | None:
    """The ``reason`` of a Synapse error answer (a requests.Response is falsy when not ok)."""
    for candidate in (exc, exc.__cause__):
        response = getattr(candidate, "response", None)
        if response is not None:
            with contextlib.suppress(Exception):
                return str(response.json().get("reason") or "")[:300] or None
    return None


def _message(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return re.sub(r"\?\S*", "?...", redact_text(text))[:300]


def synapse_error(exc: BaseException, what: str, client: SynapseClient) -> HostkitError:
    """Map a synapseclient / requests failure to a hostkit error (never with the token)."""
    import requests
    from synapseclient.core import exceptions as sx

    conf = client.conf
    status = _status_of(exc)
    reason = _reason(exc)
    detail = f": {redact_text(reason)}" if reason else ""
    if isinstance(exc, HostkitError):
        return exc
    if status == 404 or isinstance(exc, sx.SynapseFileNotFoundError | sx.SynapseNotFoundError):
        return NotFound(f"{what}: not found on {conf.where()}{detail}",
                        hint="check the Synapse ID (and version); the entity may have been "
                             "deleted or the version may not exist", identifier=what)
    if status in (401, 403) or isinstance(exc, sx.SynapseAuthenticationError
                                          | sx.SynapseAuthorizationError):
        return no_access(what, client, status, reason)
    if status == 429 or (status or 0) >= 500:
        return TransientError(f"{what}: {conf.where()} answered {status}{detail}",
                              identifier=what, hint="Synapse is busy or failing; try again later")
    if isinstance(exc, requests.ConnectionError):
        return Unreachable(f"{what}: cannot connect to {conf.where()} ({_message(exc)})",
                           identifier=what,
                           hint="check your network and HOSTKIT_SYNAPSE_ENDPOINT / the "
                                f"[endpoints] of {conf.config_path}")
    if isinstance(exc, requests.RequestException):
        return TransientError(f"{what}: talking to {conf.where()} failed ({_message(exc)})",
                              identifier=what, hint="try again; a rerun resumes")
    if status is not None:
        return BackendError(f"{what}: {conf.where()} answered {status}{detail}",
                            identifier=what, hint="check the identifier")
    if isinstance(exc, sx.SynapseError):
        return BackendError(f"{what}: {_message(exc)}", identifier=what,
                            hint="check the identifier and your access on Synapse")
    return BackendError(f"{what}: synapseclient failed ({type(exc).__name__}: {_message(exc)})",
                        identifier=what, hint="try again; report it if it persists")


def no_access(what: str, client: SynapseClient, status: int | None = None,
              reason: str | None = None) -> HostkitError:
    """CredentialsNeeded when anonymous, CredentialsRefused when logged in."""
    entity = what.removeprefix("synapse:").split(".")[0]
    shown = f" ({status})" if status else ""
    if not client.logged_in:
        return CredentialsNeeded(
            f"{what} is not public: {client.conf.where()} needs a token to download it{shown}",
            hint=_token_hint(client.conf), identifier=what)
    who = f" ({client.username})" if client.username else ""
    detail = f": {redact_text(reason)}" if reason else ""
    return CredentialsRefused(
        f"{what}: your Synapse account{who} may not download this file{shown}{detail}",
        hint=f"request access on {PORTAL}/#!Synapse:{entity} (accept its conditions of use), "
             "or ask its owner to share it with you", identifier=what)


# -- downloading ---------------------------------------------------------------------


@dataclass
class _Meta:
    info: RemoteInfo
    file_handle_id: str
    version: int | None
    fetched: float


class SynapseRemote(Remote):
    """One Synapse FileEntity (optionally one version of it)."""

    def __init__(self, entity_id: str, version: int | None, conf: SynapseConfig, context):
        self.entity_id = entity_id
        self.version = version
        self.conf = conf
        self.context = context
        self.display = f"synapse:{entity_id}.{version}" if version else f"synapse:{entity_id}"
        self.cache_key = conf.cache_key(entity_id, version)
        self.immutable = version is not None
        self._meta: _Meta | None = None

    @property
    def client(self) -> SynapseClient:
        return client_for(self.context, self.conf)

    async def _call(self, fn, *args):
        client = self.client
        try:
            return await asyncio.to_thread(fn, *args)
        except HostkitError as exc:
            exc.identifier = exc.identifier or self.display
            raise
        except Exception as exc:
            raise synapse_error(exc, self.display, client) from None

    async def _metadata(self, fresh: bool = False) -> _Meta:
        if (not fresh and self._meta is not None
                and time.monotonic() - self._meta.fetched < _META_TTL):
            return self._meta
        bundle = await self._call(self.client.bundle, self.entity_id, self.version,
                                  self.display)
        self._meta = self._parse_bundle(bundle)
        return self._meta

    def _parse_bundle(self, bundle: dict) -> _Meta:
        entity = bundle.get("entity") or {}
        kind = entity.get("concreteType", "")
        if kind != FILE_ENTITY:
            what = kind.rpartition(".")[2] or bundle.get("entityType") or "entity"
            raise NotAFile(
                f"{self.display} is a {what} ({entity.get('name', '?')!r}), not a file",
                hint="name one file inside it: its Synapse page lists the files' IDs "
                     f"({PORTAL}/#!Synapse:{self.entity_id})", identifier=self.display)
        fh_id = str(entity.get("dataFileHandleId") or "")
        handle = next((h for h in bundle.get("fileHandles") or ()
                       if str(h.get("id")) == fh_id), None)
        if not fh_id or handle is None:
            # no matching file handle: the caller may see the entity but not download it
            unmet = (bundle.get("restrictionInformation") or {}).get("hasUnmetAccessRequirement")
            raise no_access(self.display, self.client, reason="it has access requirements "
                            "you have not met" if unmet else None)
        digests = {}
        md5 = str(handle.get("contentMd5") or "").lower()
        if re.fullmatch(r"[0-9a-f]{32}", md5):
            digests["md5"] = md5
        size = handle.get("contentSize")
        version = entity.get("versionNumber")
        info = RemoteInfo(size=int(size) if size is not None else None,
                          validator=f"fh:{fh_id}", digests=digests,
                          immutable=self.version is not None,
                          content_type=handle.get("contentType"),
                          filename=handle.get("fileName") or entity.get("name"))
        if self.version is None and version is not None:
            log.debug("%s is at version %s (file handle %s)", self.display, version, fh_id)
        return _Meta(info, fh_id, version, time.monotonic())

    async def stat(self) -> RemoteInfo:
        """The entity bundle: size, MD5 and file handle id (the validator)."""
        return (await self._metadata(fresh=True)).info

    @contextlib.asynccontextmanager
    async def open(self, offset: int = 0, validator: str | None = None):
        """Presigned URL from ``fileHandle/batch``, streamed from ``offset`` when unchanged."""
        meta = await self._metadata()
        info = RemoteInfo(**vars(meta.info))
        if not offset or validator != info.validator:
            offset = 0
        answer = await self._call(self.client.presigned, meta.file_handle_id, self.entity_id,
                                  self.display)
        url = answer.get("preSignedURL")
        if not url:
            raise no_access(self.display, self.client) if answer.get("failureCode") \
                else BackendError(f"{self.display}: Synapse gave no download URL",
                                  hint="try again later", identifier=self.display)
        host = _host(url)
        # no Authorization: the URL is signed. A storage host that cannot continue at
        # offset (416, a 206 from elsewhere) is asked for the whole file instead
        async with contextlib.AsyncExitStack() as stack:
            try:
                ranged = await stack.enter_async_context(
                    open_range(self.context, url, offset, max_redirects=5))
            except HttpStatus as exc:
                raise self._refused(exc.status, host) from None
            except HostkitError:
                raise
            except Exception as exc:
                raise self._network_error(exc, host) from None
            if info.size is None:
                info.size = ranged.total
            yield Body(info, ranged.start, self._chunks(ranged.chunks(), host))

    def _refused(self, status: int, host: str) -> HostkitError:
        """The error for a storage host's answer that is not the file."""
        where = f"the storage host {host} answered {status}"
        if status in (400, 401, 403):
            # an expired or refused presigned URL: a retry asks Synapse for a fresh one
            return TransientError(f"{self.display}: {where} (presigned URL refused or expired)",
                                  identifier=self.display,
                                  hint="try again; each attempt gets a fresh URL from Synapse")
        return status_error(status, self.display, texts={
            "not_found": (f"{where}: the file is missing from its storage",
                          "the file's storage lost it; tell the entity's owner"),
            "busy": (where, "the storage host is busy or failing; try again later"),
            "changed": (where, "try again later"),
            "other": (where, "try again later")})

    async def _chunks(self, chunks, host: str):
        try:
            async for chunk in chunks:
                yield chunk
        except Exception as exc:
            raise self._network_error(exc, host) from None

    def _network_error(self, exc: BaseException, host: str) -> HostkitError:
        return network_error(exc, self.display, host) or BackendError(
            f"{self.display}: download from {host} failed ({type(exc).__name__})",
            identifier=self.display, hint="try again")


def _host(url: str) -> str:
    """The scheme and host of a URL: safe to show (no path, no signed query)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


# -- uploading -----------------------------------------------------------------------


class SynapseUploader(Uploader):
    """Stores a local file as a FileEntity under a Synapse folder or project."""

    def __init__(self, parent_id: str, conf: SynapseConfig, context):
        self.parent_id = parent_id
        self.conf = conf
        self.context = context
        self.display = f"synapse:{parent_id}"

    async def upload(self, source: Path, *, overwrite: bool = False,
                     content_addressed: bool = False, progress=None) -> UploadResult:
        """Store ``source`` under the parent; return ``synapse:synNEW.VERSION`` and its sha256.

        The entity is named after the file (its sha256 with ``content_addressed``).
        An entity of that name holding the same bytes is left alone
        (``created=False``); different bytes become a new version only with
        ``overwrite``.
        """
        source = Path(source)
        size = upload_source_size(source)
        from hostkit.hashes import hash_file

        digests = await asyncio.to_thread(hash_file, source, ("sha256", "md5"))
        name = digests["sha256"] if content_addressed else source.name
        client = client_for(self.context, self.conf)
        if progress is not None:
            progress.start(f"{self.display}/{name}", size, 0)
        try:
            entity_id, version, created = await self._call(
                client, self._store, client, source, name, digests, overwrite)
            if progress is not None:
                progress.advance(size)
        finally:
            if progress is not None:
                progress.close()
        return UploadResult(f"synapse:{entity_id}.{version}", digests["sha256"], size,
                            created=created)

    async def _call(self, client, fn, *args):
        try:
            return await asyncio.to_thread(fn, *args)
        except HostkitError:
            raise
        except Exception as exc:
            raise synapse_error(exc, self.display, client) from None

    def _store(self, client: SynapseClient, source: Path, name: str, digests: dict,
               overwrite: bool) -> tuple[str, int, bool]:
        """Blocking: find an existing entity of that name, compare, store (a new version)."""
        from synapseclient.models import File

        syn = client.client(self.display)
        if not client.logged_in:
            raise CredentialsNeeded(f"uploading to {self.display} needs a Synapse token",
                                    hint=_token_hint(self.conf), identifier=self.display)
        parent = syn.restPOST(f"/entity/{self.parent_id}/bundle2",
                              body=json.dumps({"includeEntity": True}))["entity"]
        if parent.get("concreteType", "").rpartition(".")[2] not in ("Folder", "Project"):
            raise NotAFile(f"{self.display} is not a folder or project",
                           hint="upload into a folder or project: synapse:synPARENT",
                           identifier=self.display)
        existing = self._existing(syn, name)
        if existing is not None:
            entity, handle = existing
            if str(handle.get("contentMd5", "")).lower() == digests["md5"] \
                    and int(handle.get("contentSize", -1)) == source.stat().st_size:
                log.info("synapse:%s already holds these bytes; nothing uploaded", entity["id"])
                return entity["id"], int(entity["versionNumber"]), False
            if not overwrite:
                raise AlreadyExists(
                    f"{self.display} already has a file named {name!r} (synapse:"
                    f"{entity['id']}) holding different bytes",
                    hint="pass --overwrite to store a new version of it, rename the file, or "
                         "use --content-addressed", identifier=self.display)
        stored = File(path=str(source), parent_id=self.parent_id, name=name,
                      synapse_store=True).store(synapse_client=syn)
        # the md5 hashed in the same pass as the sha256 must be the md5 of what Synapse holds
        stored_md5 = getattr(stored.file_handle, "content_md5", None)
        if str(stored_md5 or "").lower() != digests["md5"]:
            raise SourceChanged(f"{source} changed while it was being uploaded (Synapse holds "
                               f"md5:{stored_md5}, hashed md5:{digests['md5']})",
                               hint="upload it again once nothing writes to it")
        return stored.id, int(stored.version_number), True

    def _existing(self, syn, name: str):
        from synapseclient.core.exceptions import SynapseHTTPError

        try:
            found = syn.restPOST("/entity/child", body=json.dumps(
                {"entityName": name, "parentId": self.parent_id}))
        except SynapseHTTPError as exc:
            if _status_of(exc) == 404:
                return None
            raise
        entity_id = found.get("id") if isinstance(found, dict) else None
        if not entity_id:
            return None
        bundle = syn.restPOST(f"/entity/{entity_id}/bundle2", body=json.dumps(_BUNDLE_REQUEST))
        entity = bundle.get("entity") or {}
        if entity.get("concreteType") != FILE_ENTITY:
            raise NotAFile(f"{self.display} already has a {entity.get('concreteType', '?')} "
                           f"named {name!r}", hint="rename the file", identifier=self.display)
        handle = next((h for h in bundle.get("fileHandles") or ()
                       if str(h.get("id")) == str(entity.get("dataFileHandleId"))), {})
        return entity, handle

