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

Downloads make Synapse's REST calls through hostkit's own HTTP session
(:mod:`hostkit_backends.synapse_api`): a token check (``GET /userProfile``), the
entity bundle (name, size, MD5, file handle id), then ``fileHandle/batch`` for a
presigned URL, whose bytes the resolver streams, hashes while writing, checks
against the MD5 Synapse advertises, and resumes with ``Range``. They need no
synapseclient (any version, or none). The bearer token goes only to the Synapse
endpoints, never to the storage host, and presigned query strings never appear
in messages.

``hostkit upload FILE synapse:synPARENT`` stores FILE under that folder or
project through synapseclient's public API (``hostkit[synapse]``: any
synapseclient from 4.1.1, MedPerf's pin) and prints ``synapse:synNEW.VERSION``
with the sha256.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from hostkit.backend import HttpStatus, network_error, open_range, require, status_error
from hostkit.errors import (
    AlreadyExists,
    BackendError,
    CredentialsNeeded,
    HostkitError,
    NotAFile,
    NotFound,
    SourceChanged,
    TransientError,
    UsageError,
)
from hostkit.hookspecs import hookimpl
from hostkit.redact import redact_text
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

from .synapse_api import (
    PORTAL,
    SynapseApi,
    SynapseConfig,
    endpoints_from,
    find_token,
    token_hint,
)

log = logging.getLogger("hostkit.synapse")

FILE_ENTITY = "org.sagebionetworks.repo.model.FileEntity"
#: Containers resolved as folders (trees): ``synapse:synN`` naming one of these.
CONTAINERS = ("org.sagebionetworks.repo.model.Folder", "org.sagebionetworks.repo.model.Project")
_ID = re.compile(r"^(syn\d+)(?:\.([1-9]\d*))?$")
_FORMS = ("synapse:syn123 (the current version) or synapse:syn123.4 (version 4, "
          "cached for good)")
#: How long entity metadata fetched by stat() is reused by open() in the same resolve.
_META_TTL = 60.0


@hookimpl
def hostkit_backends():
    """The synapse backend (MedPerf's ``synapse:`` identifiers)."""
    return [BackendInfo(
        name="synapse", schemes=("synapse",),
        summary="Synapse files: token from ~/.synapseConfig or SYNAPSE_AUTH_TOKEN, MD5 "
                "checked, versions pinned, resumable; upload into a folder (needs the extra)",
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
    cache_root = str(Path(context.settings.cache_dir) / "synapse-client")
    return endpoints_from(path, context.option("synapse", "endpoint"), cache_root)


def api_for(context, conf: SynapseConfig) -> SynapseApi:
    """The context's REST client for ``conf`` (created on first use)."""
    api = context.clients.get(conf.client_key)
    if api is None:
        api = context.clients[conf.client_key] = SynapseApi(conf, context)
    return api


def _synapseclient():
    return require("synapseclient", "synapse", "uploading to synapse:")


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
        # shared (daemon) blobs only when nothing but an anonymous request fetched them
        self.anonymous = find_token(conf) is None
        self._meta: _Meta | None = None
        #: synapse:synN may be a folder (or project): its bundle tells; a version is a file
        self.tree = None if version is None else False

    @property
    def api(self) -> SynapseApi:
        return api_for(self.context, self.conf)

    async def _metadata(self, fresh: bool = False) -> _Meta:
        if (not fresh and self._meta is not None
                and time.monotonic() - self._meta.fetched < _META_TTL):
            return self._meta
        bundle = await self.api.bundle(self.entity_id, self.version, self.display)
        self._meta = self._parse_bundle(bundle)
        return self._meta

    def _parse_bundle(self, bundle: dict) -> _Meta:
        entity, handles = bundle.get("entity") or {}, bundle.get("fileHandles") or []
        if not isinstance(entity, dict) or not isinstance(handles, list):
            raise self._lying("is not one", about="the entity bundle")
        kind = str(entity.get("concreteType") or "")
        if kind != FILE_ENTITY:
            what = kind.rpartition(".")[2] or str(bundle.get("entityType") or "entity")
            raise NotAFile(
                f"{self.display} is a {what[:100]} ({str(entity.get('name', '?'))[:200]!r}), "
                "not a file",
                hint="name one file inside it: its Synapse page lists the files' IDs "
                     f"({PORTAL}/#!Synapse:{self.entity_id})", identifier=self.display)
        fh_id = str(entity.get("dataFileHandleId") or "")
        handle = next((h for h in handles if isinstance(h, dict) and str(h.get("id")) == fh_id),
                      None)
        if not fh_id or handle is None:
            # no matching file handle: the caller may see the entity but not download it
            unmet = (bundle.get("restrictionInformation") or {}).get("hasUnmetAccessRequirement")
            raise self.api.no_access(self.display, reason="it has access requirements you "
                                     "have not met" if unmet else None)
        digests = {}
        md5 = str(handle.get("contentMd5") or "").lower()
        if re.fullmatch(r"[0-9a-f]{32}", md5):
            digests["md5"] = md5
        size = handle.get("contentSize")
        if size is not None and (type(size) is not int or size < 0):
            raise self._lying(f"gives the file a size that is not a byte count "
                              f"({str(size)[:40]!r})", about="the entity bundle")
        version = entity.get("versionNumber")
        info = RemoteInfo(size=size,
                          validator=f"fh:{fh_id}", digests=digests,
                          immutable=self.version is not None,
                          content_type=handle.get("contentType"),
                          filename=handle.get("fileName") or entity.get("name"))
        if self.version is None and version is not None:
            log.debug("%s is at version %s (file handle %s)", self.display, version, fh_id)
        return _Meta(info, fh_id, version, time.monotonic())

    async def is_tree(self) -> bool:
        """Whether the entity is a folder or project (its bundle; a file's is kept for the
        download that follows, so a file costs no extra request)."""
        bundle = await self.api.bundle(self.entity_id, None, self.display)
        if (bundle.get("entity") or {}).get("concreteType") in CONTAINERS:
            return True
        self._meta = self._parse_bundle(bundle)
        return False

    async def list(self):  # type: ignore[override]  # an async generator
        """Every file under the folder, folders walked breadth first, each page of
        ``entity/children`` in turn (``nextPageToken``). Each file is pinned to the version
        listed (``synapse:synM.V``: immutable, so a cached one needs no request)."""
        seen = {self.entity_id}
        folders = [(self.entity_id, "")]
        while folders:
            parent, prefix = folders.pop(0)
            token: str | None = None
            tokens: set[str] = set()
            while True:
                page = await self.api.children(parent, token, self.display)
                for header in page.get("page") or ():
                    entry = self._child(header, prefix, seen, folders)
                    if entry is not None:
                        yield entry
                token = page.get("nextPageToken") or None
                if token is None:
                    break
                if token in tokens:
                    raise self._lying("repeats a page token")
                tokens.add(token)

    def _child(self, header, prefix: str, seen: set[str], folders: list):
        """The TreeEntry of a file header (a folder header is queued; others skipped)."""
        if not isinstance(header, dict):
            raise self._lying("holds a child that is not an entity header")
        kind, name, child = header.get("type"), header.get("name"), str(header.get("id"))
        if not isinstance(name, str) or not re.fullmatch(r"syn\d+", child):
            raise self._lying(f"holds a child without a name or Synapse ID ({child[:40]!r})")
        if kind in CONTAINERS:
            if child in seen:
                raise self._lying(f"lists folder {child} twice (a cycle?)")
            seen.add(child)
            folders.append((child, f"{prefix}{name}/"))
            return None
        if kind != FILE_ENTITY:
            return None  # tables, links, views: not files
        version = header.get("versionNumber")
        if not isinstance(version, int) or version < 1:
            raise self._lying(f"gives {child} no version number")
        from hostkit.remote import TreeEntry

        return TreeEntry(prefix + name, SynapseRemote(child, version, self.conf, self.context),
                         validator=f"v{version}")

    def _lying(self, what: str, *, about: str = "the folder listing") -> BackendError:
        return BackendError(f"{self.display}: {about} {what}",
                            identifier=self.display,
                            hint="the server is not answering as Synapse does; check "
                                 "HOSTKIT_SYNAPSE_ENDPOINT")

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
        answer = await self.api.presigned(meta.file_handle_id, self.entity_id, self.display)
        url = answer.get("preSignedURL")
        if not url or not isinstance(url, str):
            raise self.api.no_access(self.display) if answer.get("failureCode") \
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
        api = api_for(self.context, self.conf)
        if not api.logged_in:
            raise CredentialsNeeded(f"uploading to {self.display} needs a Synapse token",
                                    hint=token_hint(self.conf), identifier=self.display)
        parent = (await api.bundle(self.parent_id, None, self.display)).get("entity") or {}
        if parent.get("concreteType", "").rpartition(".")[2] not in ("Folder", "Project"):
            raise NotAFile(f"{self.display} is not a folder or project",
                           hint="upload into a folder or project: synapse:synPARENT",
                           identifier=self.display)
        existing = await self._existing(api, name)
        if existing is not None:
            entity, handle = existing
            if str(handle.get("contentMd5", "")).lower() == digests["md5"] \
                    and int(handle.get("contentSize", -1)) == size:
                log.info("synapse:%s already holds these bytes; nothing uploaded", entity["id"])
                return UploadResult(f"synapse:{entity['id']}.{int(entity['versionNumber'])}",
                                    digests["sha256"], size, created=False)
            if not overwrite:
                raise AlreadyExists(
                    f"{self.display} already has a file named {name!r} (synapse:"
                    f"{entity['id']}) holding different bytes",
                    hint="pass --overwrite to store a new version of it, rename the file, or "
                         "use --content-addressed", identifier=self.display)
        _synapseclient()
        if progress is not None:
            progress.start(f"{self.display}/{name}", size, 0)
        try:
            entity_id, version = await asyncio.to_thread(self._store, api, source, name,
                                                         digests)
            if progress is not None:
                progress.advance(size)
        finally:
            if progress is not None:
                progress.close()
        return UploadResult(f"synapse:{entity_id}.{version}", digests["sha256"], size,
                            created=True)

    def _store(self, api: SynapseApi, source: Path, name: str,
               digests: dict) -> tuple[str, int]:
        """Blocking: upload through synapseclient's public API (a new entity or version).

        The client is made for this one upload, with its own empty file cache: the
        client judges a file unchanged by its mtime alone, so a file rewritten within
        a second of its last upload would otherwise be "stored" as the old file handle.
        """
        from synapseclient import Synapse
        from synapseclient.models import File

        os.makedirs(self.conf.cache_root, mode=0o700, exist_ok=True)
        scratch = tempfile.mkdtemp(prefix="upload-", dir=self.conf.cache_root)
        try:
            syn = Synapse(repoEndpoint=self.conf.repo, authEndpoint=self.conf.auth,
                          fileHandleEndpoint=self.conf.file, portalEndpoint=self.conf.portal,
                          skip_checks=True, silent=True, configPath=self.conf.config_path,
                          cache_root_dir=scratch)
            try:
                syn.login(authToken=api.token, silent=True)
                stored = File(path=str(source), parent_id=self.parent_id, name=name,
                              synapse_store=True).store(synapse_client=syn)
            except HostkitError:
                raise
            except Exception as exc:
                raise _upload_error(exc, self.display, api) from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        # the md5 hashed in the same pass as the sha256 must be the md5 of what Synapse holds
        stored_md5 = getattr(stored.file_handle, "content_md5", None)
        if str(stored_md5 or "").lower() != digests["md5"]:
            raise SourceChanged(f"{source} changed while it was being uploaded (Synapse holds "
                                f"md5:{stored_md5}, hashed md5:{digests['md5']})",
                                hint="upload it again once nothing writes to it")
        return str(stored.id), int(stored.version_number)

    async def _existing(self, api: SynapseApi, name: str):
        """The FileEntity named ``name`` in the parent and its file handle, or None."""
        entity_id = await api.child(self.parent_id, name, self.display)
        if not entity_id:
            return None
        bundle = await api.bundle(entity_id, None, self.display)
        entity = bundle.get("entity") or {}
        if entity.get("concreteType") != FILE_ENTITY:
            raise NotAFile(f"{self.display} already has a {entity.get('concreteType', '?')} "
                           f"named {name!r}", hint="rename the file", identifier=self.display)
        handle = next((h for h in bundle.get("fileHandles") or ()
                       if str(h.get("id")) == str(entity.get("dataFileHandleId"))), {})
        return entity, handle


def _upload_error(exc: BaseException, what: str, api: SynapseApi) -> HostkitError:
    """A synapseclient failure during an upload, as a hostkit error (never with the token)."""
    status = None
    seen, cur = 0, exc
    while cur is not None and seen < 5 and status is None:
        status = getattr(getattr(cur, "response", None), "status_code", None)
        cur, seen = cur.__cause__ or cur.__context__, seen + 1
    text = re.sub(r"\?\S*", "?...", redact_text(str(exc).splitlines()[0] if str(exc)
                                              else type(exc).__name__))[:300]
    if isinstance(status, int):
        return api.status_error(status, what, text)
    return BackendError(f"{what}: the upload through synapseclient failed "
                        f"({type(exc).__name__}: {text})", identifier=what,
                        hint="try again; report it if it persists")


# -- hostkit check (one block: the check hook and what it needs) -------------------------

#: Synapse's well-known principals: everyone (anonymous callers too), any logged-in user.
_PUBLIC_GROUP, _AUTHENTICATED_USERS = 273948, 273949
_LOGIN_FIX = ("MedPerf users must log in (`synapse login`, with a personal access token) and "
              "be granted access: share it with them or a team on Synapse, or make it public "
              "(its Sharing Settings)")


@hookimpl
def hostkit_check(ref, context):
    """For ``hostkit check``: who may download the entity (asked with no token), its version."""
    if ref.scheme != "synapse":
        return None
    entity_id, version = parse(ref)
    return _check_entity(entity_id, version, config_for(context), context)


async def _anonymous_bundle(conf, context, entity_id: str, version: int | None):
    """``(status, bundle)`` of an entity bundle asked with no token at all."""
    api = SynapseApi(conf, context, anonymous=True)
    try:
        return 200, await api.bundle(entity_id, version, f"synapse:{entity_id}", {
            "includeEntity": True, "includeFileHandles": True,
            "includeRestrictionInformation": True, "includePermissions": True})
    except NotFound:
        return 404, {}
    except CredentialsNeeded as exc:
        return (403 if "(403)" in exc.message else 401), {}


def who_can_download(acl: dict | None) -> str | None:
    """Whom an entity's access list (its benefactor's ACL) lets download; None if unknown."""
    entries = (acl or {}).get("resourceAccess") or []
    if not entries:
        return None
    downloading = {int(e.get("principalId", -1)) for e in entries
                   if "DOWNLOAD" in (e.get("accessType") or [])}
    if _PUBLIC_GROUP in downloading:
        return "anyone (its access list lets the public download it)"
    if _AUTHENTICATED_USERS in downloading:
        return "any Synapse user who logs in (its access list lets all registered users download)"
    count = len(downloading)
    return (f"only the {count} user{'s' if count != 1 else ''} or team{'s' if count != 1 else ''} "
            "on its access list" if count else "nobody but its administrators")


async def _check_entity(entity_id: str, version: int | None, conf, context):
    from hostkit.hookspecs import Findings, Verdict

    shown = f"synapse:{entity_id}.{version}" if version else f"synapse:{entity_id}"
    found = Findings(medperf=f"synapse:{entity_id}")  # MedPerf has no version form
    try:
        status, bundle = await _anonymous_bundle(conf, context, entity_id, version)
    except Exception as exc:
        error = network_error(exc, shown, conf.where())
        found.anonymous = Verdict(False, error.message if error else f"{shown}: "
                                  f"{type(exc).__name__}", error.hint if error else None)
        return found
    who = None
    api = api_for(context, conf)
    if api.logged_in and (status in (401, 403) or
                          (status == 200 and not bundle.get("fileHandles"))):
        try:  # the author's own view: who the access list lets download
            acl_bundle = await api.bundle(entity_id, None, shown, {"includeBenefactorACL": True})
            who = who_can_download(acl_bundle.get("benefactorAcl"))
        except HostkitError:
            who = None
    who_text = f"; it can be downloaded by {who}" if who else ""
    entity = bundle.get("entity") or {}
    if status == 404:
        found.anonymous = Verdict(False, f"{shown}: not found on {conf.where()}",
                                  "check the Synapse ID (and version)")
    elif status in (401, 403):
        found.anonymous = Verdict(
            False, f"{shown} is private: an anonymous caller may not even see it ({status})"
                   f"{who_text}", _LOGIN_FIX)
    elif status != 200:
        found.anonymous = Verdict(False, f"{shown}: {conf.where()} answered {status}",
                                  "try again later")
    elif entity.get("concreteType") != FILE_ENTITY:
        kind = str(entity.get("concreteType", "")).rpartition(".")[2] or "entity"
        found.anonymous = Verdict(True, f"{shown} is visible to anyone")
        found.direct = Verdict(False, f"{shown} is a {kind}, not a file",
                               "name one file inside it: its Synapse page lists the files' IDs")
        found.fetch = False
    elif bundle.get("fileHandles"):
        found.anonymous = Verdict(True, f"{shown} is public: anyone can download it with no "
                                        "login")
    elif (bundle.get("restrictionInformation") or {}).get("hasUnmetAccessRequirement"):
        found.anonymous = Verdict(
            False, f"{shown}: anyone can see it, but it has access requirements (conditions of "
                   f"use) each user must meet on Synapse before downloading{who_text}",
            "MedPerf users must log in (`synapse login`) and meet them on the file's Synapse "
            "page; or host a copy without them")
    else:
        found.anonymous = Verdict(
            False, f"{shown}: anyone can see it, but only logged-in users allowed to may "
                   f"download it{who_text}", _LOGIN_FIX)
    if found.direct is None and status == 200:
        found.direct = Verdict(True, "Synapse hands out the file itself (MedPerf's Synapse "
                                     "client downloads it), not a page")
    found.permanent = await _version_verdict(entity_id, version, conf, context, bundle
                                             if version is None else None)
    return found


async def _version_verdict(entity_id: str, version: int | None, conf, context,
                           current_bundle: dict | None):
    """Whether the identifier names one version, and what ``synapse:synN`` names now."""
    from hostkit.hookspecs import Verdict

    current = ((current_bundle or {}).get("entity") or {}).get("versionNumber")
    if current is None:
        try:
            status, bundle = await _anonymous_bundle(conf, context, entity_id, None)
            current = (bundle.get("entity") or {}).get("versionNumber") if status == 200 \
                else None
            if current is None:  # private: the author's own token may see it
                bundle = await api_for(context, conf).bundle(entity_id, None,
                                                             f"synapse:{entity_id}")
                current = (bundle.get("entity") or {}).get("versionNumber")
        except Exception:
            current = None
    if version is not None:
        if current is not None and int(current) != version:
            return Verdict(
                False, f"version {version} cannot change, but MedPerf stores no version: "
                       f"synapse:{entity_id} downloads the current version, {current}",
                f"submit synapse:{entity_id} with version {current}'s sha256, or make version "
                f"{version} the current one again", f"synapse:{entity_id}.{current}")
        return Verdict(True, f"version {version}: its bytes cannot change (MedPerf stores "
                             f"synapse:{entity_id}; the sha256 you submit pins version "
                             f"{version}, the current one)")
    if current is None:
        return Verdict(False, f"synapse:{entity_id} names whatever version is current; a new "
                              "version changes the bytes under the same identifier",
                       f"pin a version: synapse:{entity_id}.N (could not look up the current "
                       "one: it needs a Synapse login)")
    return Verdict(
        False, f"synapse:{entity_id} names whatever version is current (now {current}); a new "
               "version changes the bytes under the same identifier",
        f"pin synapse:{entity_id}.{current} wherever hostkit reads it; MedPerf stores only "
        f"synapse:{entity_id}, so the sha256 you submit is what pins version {current} there "
        "(a later version then fails MedPerf's hash check instead of changing silently)",
        f"synapse:{entity_id}.{current}")
