"""mlflow backend: artifacts of MLflow runs and registered models, through a tracking server.

Identifiers::

    runs:/<run_id>/<path>             a run's artifact (a file, or a folder: a tree)
    runs:/<run_id>                    all of a run's artifacts (a tree)
    models:/<name>/<version>          a registered model version's artifacts (a tree)
    models:/<name>/<version>/<path>   one file (or folder) of that version
    models:/<name>@<alias>[/<path>]   the version an alias names now
    models:/<name>/latest[/<path>]    the newest version
    mlflow-artifacts:/<path>          a path in the server's artifact proxy

Names, aliases and paths may be percent-encoded (``models:/my%20model/1``).

**The server and its credentials.** ``MLFLOW_TRACKING_URI`` (an ``http(s)://``
tracking server; missing, it is a :class:`~hostkit.errors.UsageError` naming
it) and MLflow's own ``MLFLOW_TRACKING_TOKEN`` (bearer) or
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (basic auth), sent
to that server only (:mod:`hostkit_backends.mlflow_api`); cache keys name the
server (``mlflow+http://host:5000/runs:/...``) with no credential.

**Where the bytes come from.** An artifact whose store is ``s3://`` is read
from the store directly when S3 credentials are configured (the AWS variables
or files, and ``MLFLOW_S3_ENDPOINT_URL`` for MinIO or SeaweedFS, as MLflow's
clients set them), through the s3 backend: its endpoint and credential chain,
parallel ranged reads, a resumable download, the md5 of a single-part ETag
checked. Anything else is read through the server: ``/get-artifact`` for a
run, ``/model-versions/get-artifact`` for a model version,
``/api/2.0/mlflow-artifacts/artifacts/`` for ``mlflow-artifacts:/``. MLflow
gives those answers no stable ETag (and, for a store behind the proxy, no
length and no ranges), so such a download cannot resume: a cut starts over
from byte 0, and a log line says so. ``HOSTKIT_MLFLOW_ARTIFACTS`` = ``auto``
(the default), ``direct`` or ``proxy`` forces one way.

**What may change.** A registered model version is immutable: once cached it
is answered with no request. An alias (and ``latest``) is looked up on every
resolve and resolved as the version it names (``Resolved.identifier`` is
``models:/name/<version>/...`` and ``pinned_from`` the alias): a moved alias
fetches the new version's bytes. A run's artifacts can be logged again, so
``runs:/`` and ``mlflow-artifacts:/`` are revalidated. MLflow records no
digest of an artifact: read directly, the store's ETag is the validator;
through the proxy it is the size in the server's listing (``W/size:N``), so a
file logged again with other bytes of the same size is not noticed until the
entry is dropped (``hostkit cache rm``) or pinned by hash. The first resolve
records the sha256 as trust on first use (a tree: its manifest's digest, which
is what to pin).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from hostkit.backend import HttpStatus, network_error, open_range
from hostkit.errors import (
    BackendError,
    CredentialsNeeded,
    CredentialsRefused,
    HostkitError,
    NotAFile,
    NotFound,
    OfflineMiss,
    TransientError,
    UsageError,
)
from hostkit.hookspecs import hookimpl
from hostkit.identifiers import Ref
from hostkit.remote import BackendInfo, Body, Remote, RemoteInfo
from hostkit.settings import Option

from .mlflow_api import FileInfo, MlflowApi, TrackingServer, api_error, server_from_env

log = logging.getLogger("hostkit.mlflow")

SCHEMES = ("runs", "models", "mlflow-artifacts")
_FORMS = ("runs:/RUN_ID/PATH, models:/NAME/VERSION[/PATH], models:/NAME@ALIAS[/PATH], "
          "mlflow-artifacts:/PATH")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_ALIAS = re.compile(r"^[A-Za-z0-9_-]+$")
_STAGES = ("production", "staging", "archived", "none")
#: What a path segment keeps unquoted in the identifiers hostkit shows.
_SAFE = "/:@!$&'()*+,;=-._~"
_TREE_HINT = ("name one file in it, or resolve the folder itself (a read-only snapshot folder "
              "whose manifest's sha256 you can pin); if it was a file when it was cached, "
              "`hostkit cache rm IDENTIFIER` forgets that first")


@hookimpl
def hostkit_backends():
    """The mlflow backend: MLflow run artifacts and registered model versions."""
    return [BackendInfo(
        name="mlflow", schemes=SCHEMES,
        summary="MLflow run artifacts and registered models through MLFLOW_TRACKING_URI: "
                "versions cached for good, aliases followed, s3:// stores read directly",
        examples=("runs:/RUN_ID/path/file", "models:/NAME/VERSION", "models:/NAME@ALIAS",
                  "mlflow-artifacts:/path"))]


@hookimpl
def hostkit_settings():
    """``HOSTKIT_MLFLOW_ARTIFACTS``: where artifact bytes come from (auto, direct, proxy)."""
    return [Option("mlflow", "artifacts", "str", "auto",
                   "where MLflow artifact bytes come from: auto (an s3:// store directly when "
                   "S3 credentials are set, else the tracking server), direct, or proxy")]


@hookimpl
def hostkit_resolve(ref, context):
    """Claim ``runs:/``, ``models:/`` and ``mlflow-artifacts:/`` (no I/O: the environment)."""
    if ref.scheme not in SCHEMES:
        return None
    parsed = parse(ref)
    server = server_from_env(parsed.display)
    how = _Access(server, context)
    if parsed.scheme == "runs":
        return RunArtifact(how, parsed.run_id, parsed.path, folder=parsed.folder)
    if parsed.scheme == "mlflow-artifacts":
        return ProxiedArtifact(how, parsed.path, folder=parsed.folder)
    if parsed.version is not None:
        return ModelArtifact(how, parsed.name, parsed.version, parsed.path, folder=parsed.folder)
    return ModelAlias(how, parsed.name, parsed.alias, parsed.path, folder=parsed.folder)


@hookimpl
def hostkit_check(ref, remote, context):
    """For ``hostkit check``: MedPerf cannot read MLflow identifiers; which ones can change."""
    if ref.scheme not in SCHEMES:
        return None
    return _check(ref, remote)


async def _check(ref, remote):
    from hostkit.hookspecs import Findings, Verdict

    found = Findings(anonymous=Verdict(
        False, f"MedPerf cannot download {ref.scheme}: identifiers",
        "host the file where MedPerf can read it: an https URL a plain GET returns, or "
        "synapse:synN"))
    parsed = parse(ref)
    if parsed.scheme == "models" and parsed.version is None:
        what = f"alias {parsed.alias!r}" if parsed.alias else "latest"
        pinned = remote.display if isinstance(remote, ModelArtifact) else None
        found.permanent = Verdict(
            False, f"{parsed.display} follows the model's {what}, which moves to other versions",
            f"name the version: {pinned}" if pinned else "name a version: "
            "models:/NAME/VERSION", pinned)
    elif parsed.scheme == "models":
        found.permanent = Verdict(True, "a registered model version cannot change")
    else:
        found.permanent = Verdict(
            True, "holds what was last logged at that path (MLflow keeps no versions of a "
                  "run's artifacts): the sha256 you submit guards the bytes; a registered "
                  "model version (models:/NAME/VERSION) cannot change")
    return found


# -- identifiers -------------------------------------------------------------------------


@dataclass(frozen=True)
class Parsed:
    """An MLflow identifier, split (no I/O)."""

    scheme: str
    display: str
    path: str = ""
    folder: bool = False  # written with a trailing "/"
    run_id: str = ""
    name: str = ""
    version: str | None = None
    alias: str | None = None  # None with no version: "latest"


def _shown_path(path: str) -> str:
    return quote(path, safe=_SAFE)


def parse(ref) -> Parsed:
    """Split ``runs:/``, ``models:/`` or ``mlflow-artifacts:/``; UsageError for anything else."""
    rest, shown = ref.rest, ref.display
    form = {"runs": "runs:/RUN_ID/PATH", "models": "models:/NAME/VERSION[/PATH] or "
            "models:/NAME@ALIAS[/PATH]", "mlflow-artifacts": "mlflow-artifacts:/PATH"}[ref.scheme]
    if "?" in rest or "#" in rest:
        raise UsageError(f"{shown!r}: MLflow identifiers take no query or fragment",
                         hint=f"write {form}", identifier=shown)
    if rest.startswith("//"):
        hint = (f"write {form}: the server is MLFLOW_TRACKING_URI" if ref.scheme ==
                "mlflow-artifacts" else f"write {form} (one slash after the colon)")
        raise UsageError(f"{shown!r}: a host in the identifier is not supported", hint=hint,
                         identifier=shown)
    if not rest.startswith("/"):
        raise UsageError(f"{shown!r} is not of the form {form}", hint=f"write {form}",
                         identifier=shown)
    folder = rest.endswith("/") and len(rest) > 1
    body = rest[1:-1] if folder else rest[1:]
    segments = [unquote(s) for s in body.split("/")] if body else []
    if any(s in ("", ".", "..") or "/" in s for s in segments):
        raise UsageError(f"{shown!r} has an empty, '.' or '..' path segment",
                         hint=f"write {form}", identifier=shown)
    if ref.scheme == "runs":
        if not segments or not _RUN_ID.match(segments[0]):
            raise UsageError(f"{shown!r} names no run", hint=f"write {form}", identifier=shown)
        path = "/".join(segments[1:])
        display = f"runs:/{segments[0]}" + (f"/{_shown_path(path)}" if path else "")
        return Parsed("runs", display, path, folder, run_id=segments[0])
    if ref.scheme == "mlflow-artifacts":
        if not segments:
            raise UsageError(f"{shown!r} names no artifact", hint=f"write {form}",
                             identifier=shown)
        path = "/".join(segments)
        return Parsed("mlflow-artifacts", f"mlflow-artifacts:/{_shown_path(path)}", path,
                      folder)
    return _parse_model(segments, shown, form, folder)


def _parse_model(segments: list[str], shown: str, form: str, folder: bool) -> Parsed:
    if not segments:
        raise UsageError(f"{shown!r} names no model", hint=f"write {form}", identifier=shown)
    head, alias, version = segments[0], None, None
    if "@" in head:
        head, _, alias = head.partition("@")
        if not _ALIAS.match(alias):
            raise UsageError(f"{shown!r}: {alias!r} is not an alias",
                             hint="aliases are letters, digits, '_' and '-'", identifier=shown)
        path_segments = segments[1:]
    else:
        if len(segments) < 2:
            logged = re.fullmatch(r"m-[0-9a-f]{32}", head) is not None
            raise UsageError(
                f"{shown!r} names no version",
                hint="a logged model (models:/m-...) is resolved once registered: "
                     f"write {form}" if logged else f"write {form}", identifier=shown)
        version = segments[1]
        if version.lower() in _STAGES:
            raise UsageError(f"{shown!r}: model stages are not supported (MLflow deprecated "
                             "them)", hint="name a version (models:/NAME/3) or an alias "
                                           "(models:/NAME@champion)", identifier=shown)
        if version == "latest":
            version = None
        elif not re.fullmatch(r"[1-9][0-9]*", version):
            raise UsageError(f"{shown!r}: {version!r} is not a version number",
                             hint=f"write {form}", identifier=shown)
        path_segments = segments[2:]
    if not head or ":" in head:
        raise UsageError(f"{shown!r} names no model", hint=f"write {form}", identifier=shown)
    path = "/".join(path_segments)
    name = quote(head, safe=_SAFE.replace("/", "").replace("@", ""))
    which = f"@{alias}" if alias else f"/{version}" if version else "/latest"
    display = f"models:/{name}{which}" + (f"/{_shown_path(path)}" if path else "")
    return Parsed("models", display, path, folder, name=head, version=version, alias=alias)


# -- how a resolve reaches the server and the store ---------------------------------------


class _Access:
    """The server, its API client on the resolver's context, and the direct-read decision."""

    def __init__(self, server: TrackingServer, context):
        self.server = server
        self.context = context
        mode = str(context.option("mlflow", "artifacts") or "auto").strip().lower()
        if mode not in ("auto", "direct", "proxy"):
            raise UsageError(f"HOSTKIT_MLFLOW_ARTIFACTS is {mode!r}",
                             hint="set it to auto, direct or proxy")
        self.mode = mode
        self.direct = mode == "direct" or (mode == "auto" and _s3_configured(context))

    @property
    def api(self) -> MlflowApi:
        api = self.context.clients.get(self.server.client_key)
        if api is None:
            api = self.context.clients[self.server.client_key] = _ClosableApi(self.server,
                                                                             self.context)
        return api

    @property
    def anonymous(self) -> bool:
        """No credential at all: neither for the server nor for a store read directly."""
        return not self.server.credentialed and not self.direct

    def key(self, display: str) -> str:
        return f"mlflow+{self.server.key}/{display}"


class _ClosableApi(MlflowApi):
    async def aclose(self) -> None:
        """Nothing to close: requests use the resolver's pooled session."""


def _s3_configured(context) -> bool:
    """Whether S3 reads may be signed (or are meant to be unsigned): decided with no I/O."""
    if importlib.util.find_spec("botocore") is None:
        return False  # hostkit[s3] is not installed: the server reads the store for us
    with contextlib.suppress(KeyError):  # the s3 backend declares it (absent: not installed)
        if context.option("s3", "anonymous"):
            return True
    env = os.environ
    if (env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY")) or \
            any(env.get(k) for k in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE",
                                     "AWS_WEB_IDENTITY_TOKEN_FILE",
                                     "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                                     "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")):
        return True
    shared = env.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.expanduser("~/.aws/credentials")
    return Path(shared).is_file()


@dataclass
class _Where:
    """Where an identifier's artifacts are, found with the server's help.

    Paths are relative to the identifier's root (the run's artifact root, the
    model version's, or the proxy's). ``list`` lists one folder (None when the
    server cannot list this store); ``proxy_url`` is the URL the server serves a
    file at; ``root`` the store's URI of the root (``s3://...`` may be read
    directly).
    """

    root: str | None
    list: Callable[[str], Awaitable[list[FileInfo]]] | None
    proxy_url: Callable[[str], str]


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def _strip(base: str, items: list[FileInfo]) -> list[FileInfo]:
    if not base:
        return items
    return [FileInfo(f.path[len(base) + 1:], f.is_dir, f.size) for f in items
            if f.path.startswith(base + "/")]


def _weak(size: int | None) -> str | None:
    """The validator of a file read through the server: its listed size (weak: see the module)."""
    return None if size is None else f"W/size:{size}"


# -- the Remotes ------------------------------------------------------------------------


class _Artifact(Remote):
    """A file or folder of MLflow artifacts. Subclasses say how to find them (``_locate``)."""

    def __init__(self, how: _Access, display: str, path: str, *, folder: bool = False,
                 where: _Where | None = None, known: FileInfo | None = None):
        self.how = how
        self.path = path
        self.display = display
        self.cache_key = how.key(display)
        self.anonymous = how.anonymous
        #: a folder when written so or naming a whole run / version; else only a listing tells
        self.tree = True if folder or not path else None
        self._where = where
        self._known = known
        self._direct: Remote | None = None
        self._opened = 0

    # subclasses

    async def _locate(self) -> _Where:
        """Find the identifier's root (server calls); kept for this Remote's lifetime."""
        raise NotImplementedError

    def _child(self, path: str, where: _Where, known: FileInfo) -> _Artifact:
        """The Remote of one file under this folder, as its own identifier would give it."""
        raise NotImplementedError

    # metadata

    async def where(self) -> _Where:
        if self._where is None:
            self._where = await self._locate()
        return self._where

    async def _describe(self) -> FileInfo:
        """What the listing of the parent folder says about this path."""
        if self._known is not None:
            return self._known
        where = await self.where()
        if not self.path:
            self._known = FileInfo("", True)
        elif where.list is None:
            self._known = FileInfo(self.path, False)  # the server cannot list: take it as a file
        else:
            parent = self.path.rpartition("/")[0]
            found = next((f for f in await where.list(parent) if f.path == self.path), None)
            if found is None:
                raise NotFound(f"{self.display}: no such artifact",
                               hint="check the path (`mlflow artifacts list` or the MLflow UI "
                                    "shows what is there)", identifier=self.display)
            self._known = found
        return self._known

    async def is_tree(self) -> bool:
        """Whether the path is a folder: one listing of its parent."""
        return (await self._describe()).is_dir

    async def _file(self) -> FileInfo:
        found = await self._describe()
        if found.is_dir:
            raise NotAFile(f"{self.display} names a folder of artifacts, not one file",
                           hint=_TREE_HINT, identifier=self.display)
        return found

    def _reads_direct(self, where: _Where) -> bool:
        """Whether files under ``where`` are read from their ``s3://`` store directly."""
        return self.how.direct and bool(where.root) and str(where.root).startswith("s3://")

    def _direct_remote(self, where: _Where) -> Remote | None:
        """The s3 backend's Remote for this file when it is read from the store directly."""
        if not self._reads_direct(where):
            return None
        if self._direct is None:
            from . import s3

            uri = f"{where.root.rstrip('/')}/{self.path}"
            ref = Ref(identifier=uri, scheme="s3", rest=uri[3:], display=uri, key=uri)
            self._direct = s3.hostkit_resolve(ref, self.how.context)
            log.debug("%s: reading %s from the store directly", self.display, uri)
        return self._direct

    async def stat(self) -> RemoteInfo:
        """Size and validator: the store's HEAD when read directly, else the listing's size."""
        found = await self._file()
        where = await self.where()
        direct = self._direct_remote(where)
        if direct is not None:
            try:
                info = await direct.stat()
            except (CredentialsNeeded, CredentialsRefused) as exc:
                raise self._store_refused(exc) from None
            info.immutable = self.immutable
            return info
        return RemoteInfo(size=found.size, validator=_weak(found.size), immutable=self.immutable,
                          filename=self.path.rsplit("/", 1)[-1])

    @contextlib.asynccontextmanager
    async def open(self, offset: int = 0, validator: str | None = None):
        """The bytes: from the store (resumable) or through the server (always from 0)."""
        found = await self._file()
        where = await self.where()
        self._opened += 1
        direct = self._direct_remote(where)
        if direct is not None:
            try:
                async with direct.open(offset, validator) as body:
                    body.info.immutable = self.immutable
                    yield body
            except (CredentialsNeeded, CredentialsRefused) as exc:
                raise self._store_refused(exc) from None
            return
        if self._opened > 1 or offset:
            log.info("%s: starting over from byte 0: the MLflow server's artifact proxy "
                     "cannot resume a download (MLflow gives its answers no stable ETag, and "
                     "no length or ranges for a store behind it)", self.display)
        url = where.proxy_url(self.path)
        async with contextlib.AsyncExitStack() as stack:
            try:
                ranged = await stack.enter_async_context(open_range(
                    self.how.context, url, 0, headers=self.how.server.headers(),
                    ssl=self.how.server.ssl(), max_redirects=5, display=self.display))
            except HttpStatus as exc:
                raise api_error(exc.status, exc.body, self.display, self.how.server,
                                headers=exc.headers) from None
            except HostkitError:
                raise
            except Exception as exc:
                raise network_error(exc, self.display, self.how.server.shown) or exc from None
            headers = ranged.response.headers
            length = headers.get("Content-Length")
            size = int(length) if length and length.isdigit() else found.size
            if found.size is not None and size != found.size:
                self._known = None  # the retry lists again
                raise TransientError(f"{self.display}: the server sends {size} bytes, its "
                                     f"listing says {found.size}: the artifact changed",
                                     hint="run again", identifier=self.display)
            info = RemoteInfo(size=size, validator=_weak(found.size), immutable=self.immutable,
                              content_type=headers.get("Content-Type"),
                              filename=self.path.rsplit("/", 1)[-1])
            yield Body(info, 0, ranged.chunks())

    def _store_refused(self, exc: HostkitError) -> HostkitError:
        hint = (f"{exc.hint}; or set HOSTKIT_MLFLOW_ARTIFACTS=proxy to read it through the "
                "MLflow server" if exc.hint else "set HOSTKIT_MLFLOW_ARTIFACTS=proxy to read "
                "it through the MLflow server")
        return type(exc)(f"{self.display}: reading the artifact store directly: {exc.message}",
                         hint=hint, identifier=self.display)

    # folders

    async def list(self):
        """Every file under this folder (a walk of the server's one-level listings)."""
        from hostkit.remote import TreeEntry

        where = await self.where()
        if where.list is None:
            raise BackendError(f"{self.display}: the MLflow server cannot list these "
                               "artifacts (their store is not one it lists)",
                               hint="name one file in it", identifier=self.display)
        if not (await self._describe()).is_dir:
            raise NotAFile(f"{self.display} names a file, not a folder",
                           hint="resolve it as a file", identifier=self.display)
        direct = self._reads_direct(where)
        folders = [self.path]
        while folders:
            folder = folders.pop()
            for found in await where.list(folder):
                # only what lies below the folder listed: a server listing a folder in
                # itself (or its parent) would otherwise be walked for ever
                below = found.path[len(folder) + 1:] if folder else found.path
                if (folder and not found.path.startswith(folder + "/")) or \
                        any(s in ("", ".", "..") for s in below.split("/")):
                    raise BackendError(f"{self.display}: the server listed "
                                       f"{found.path[:100]!r} in {folder or 'the root'!r}",
                                       hint="the server is not answering as an MLflow "
                                            "tracking server does; check MLFLOW_TRACKING_URI",
                                       identifier=self.display)
                if found.is_dir:
                    folders.append(found.path)
                    continue
                inner = found.path[len(self.path) + 1:] if self.path else found.path
                child = self._child(found.path, where, found)
                yield TreeEntry(path=inner, remote=child, size=found.size,
                                validator=None if direct else _weak(found.size))


class RunArtifact(_Artifact):
    """``runs:/<run_id>/<path>``: mutable (artifacts can be logged again): revalidated."""

    def __init__(self, how: _Access, run_id: str, path: str, **kwargs):
        self.run_id = run_id
        display = f"runs:/{run_id}" + (f"/{_shown_path(path)}" if path else "")
        super().__init__(how, display, path, **kwargs)

    async def _locate(self) -> _Where:
        api, run_id = self.how.api, self.run_id
        root = await api.run_root(run_id, self.display)

        async def listing(folder: str) -> list[FileInfo]:
            return await api.list_run(run_id, folder, self.display)

        return _Where(root, listing,
                      lambda path: api.url("/get-artifact", {"path": path, "run_uuid": run_id}))

    def _child(self, path, where, known):
        return RunArtifact(self.how, self.run_id, path, where=where, known=known)


class ModelArtifact(_Artifact):
    """``models:/<name>/<version>[/<path>]``: a registered version never changes: immutable."""

    immutable = True

    def __init__(self, how: _Access, name: str, version: str, path: str, **kwargs):
        self.name = name
        self.version = version
        display = f"models:/{quote(name, safe=_SAFE.replace('/', ''))}/{version}" + \
            (f"/{_shown_path(path)}" if path else "")
        super().__init__(how, display, path, **kwargs)

    async def _locate(self) -> _Where:
        api, name, version, shown = self.how.api, self.name, self.version, self.display
        found = await api.model_version(name, version, shown)
        status = str(found.get("status") or "READY")
        if status == "PENDING_REGISTRATION":
            raise TransientError(f"{shown}: the version is still being registered",
                                 hint="try again in a moment", identifier=shown)
        if status != "READY":
            raise BackendError(f"{shown}: the version's registration failed ({status})",
                               hint="register the model again", identifier=shown)
        source = str(found.get("source") or "")
        uri = await api.download_uri(name, version, shown)

        def proxy_url(path: str) -> str:
            return api.url("/model-versions/get-artifact",
                           {"name": name, "version": version, "path": path})

        if uri.startswith("runs:/"):  # registered from a run's path: that run's artifacts
            run_id, _, base = uri[len("runs:/"):].partition("/")
            root = _join(await api.run_root(run_id, shown), base)

            async def run_listing(folder: str) -> list[FileInfo]:
                return _strip(base, await api.list_run(run_id, _join(base, folder), shown))

            # the server's /model-versions/get-artifact fails for such a version whose run
            # logs through the proxy (MLflow 3.17: a 500 about the tracking URI); the run's
            # own route serves it in every mode
            return _Where(root, run_listing, lambda path: api.url(
                "/get-artifact", {"path": _join(base, path), "run_uuid": run_id}))
        if re.fullmatch(r"models:/m-[0-9a-f]+", source):  # MLflow 3: a logged model
            model_id = source[len("models:/"):]

            async def model_listing(folder: str) -> list[FileInfo]:
                return await api.list_logged_model(model_id, folder, shown)

            return _Where(uri, model_listing, proxy_url)
        if uri.startswith("mlflow-artifacts:"):
            base = _proxied_path(uri)

            async def proxied_listing(folder: str) -> list[FileInfo]:
                return _strip(base, await api.list_proxied(_join(base, folder), shown))

            return _Where(uri, proxied_listing, proxy_url)
        return _Where(uri, None, proxy_url)

    def _child(self, path, where, known):
        return ModelArtifact(self.how, self.name, self.version, path, where=where, known=known)


class ProxiedArtifact(_Artifact):
    """``mlflow-artifacts:/<path>``: a path in the server's artifact proxy; revalidated."""

    def __init__(self, how: _Access, path: str, **kwargs):
        super().__init__(how, f"mlflow-artifacts:/{_shown_path(path)}", path, **kwargs)

    async def _locate(self) -> _Where:
        api, shown = self.how.api, self.display

        async def listing(folder: str) -> list[FileInfo]:
            return await api.list_proxied(folder, shown)

        return _Where(None, listing, lambda path: api.url(
            "/api/2.0/mlflow-artifacts/artifacts/" + quote(path, safe="/")))

    def _child(self, path, where, known):
        return ProxiedArtifact(self.how, path, where=where, known=known)


def _proxied_path(uri: str) -> str:
    """The path of ``mlflow-artifacts:/PATH`` (or ``mlflow-artifacts://host/PATH``)."""
    rest = uri[len("mlflow-artifacts:"):]
    if rest.startswith("//"):
        rest = "/" + rest[2:].partition("/")[2]
    return rest.strip("/")


class ModelAlias(Remote):
    """``models:/<name>@<alias>`` (or ``/latest``): looked up on every resolve, then pinned.

    Aliases move, so the resolver asks :meth:`pin` first, each time: the answer
    is the version the alias names now (immutable, cached for good), and
    ``Resolved.pinned_from`` names the alias. Unlike a branch, an alias is
    meant to be followed: it is pinned whatever the ``pin`` setting says.
    """

    movable = True

    def __init__(self, how: _Access, name: str, alias: str | None, path: str, *,
                 folder: bool = False):
        self.how = how
        self.name = name
        self.alias = alias
        self.path = path
        self.folder = folder
        which = f"@{alias}" if alias else "/latest"
        self.display = f"models:/{quote(name, safe=_SAFE.replace('/', '').replace('@', ''))}" \
            f"{which}" + (f"/{_shown_path(path)}" if path else "")
        self.cache_key = how.key(self.display)
        self.anonymous = how.anonymous
        self.tree = True if folder or not path else None

    async def pin(self, *, allow: bool, offline: bool) -> Remote:
        """The version the alias names now (``registered-models/alias``), as its own Remote."""
        what = f"alias {self.alias!r}" if self.alias else "the latest version"
        if offline:
            raise OfflineMiss(f"{self.display}: offline, {what} of model {self.name!r} cannot "
                              "be looked up", hint="run once online, or name the version: "
                              "models:/NAME/VERSION", identifier=self.display)
        api = self.how.api
        if self.alias:
            version = await api.alias_version(self.name, self.alias, self.display)
        else:
            version = await api.latest_version(self.name, self.display)
        pinned = ModelArtifact(self.how, self.name, version, self.path, folder=self.folder)
        log.debug("%s names version %s", self.display, version)
        return pinned

    async def stat(self) -> RemoteInfo:
        """Never called: the resolver pins a movable Remote first."""
        raise NotImplementedError

    def open(self, offset: int = 0, validator: str | None = None):
        """Never called: the resolver pins a movable Remote first."""
        raise NotImplementedError
