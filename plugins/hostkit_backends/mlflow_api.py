"""The MLflow tracking server's REST API, as the mlflow backend uses it (no mlflow client).

:class:`TrackingServer` is ``MLFLOW_TRACKING_URI`` and MLflow's own credential
variables, read with no I/O: ``MLFLOW_TRACKING_TOKEN`` (sent as a bearer token),
else ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (basic auth, as
is a ``user:password@`` in the URI); ``MLFLOW_TRACKING_INSECURE_TLS``,
``MLFLOW_TRACKING_SERVER_CERT_PATH`` and ``MLFLOW_TRACKING_CLIENT_CERT_PATH`` as
MLflow's client reads them. The credentials live in the ``Authorization``
header of requests to that server only: never in a message, a log line or a
cache key (:attr:`TrackingServer.shown` and :attr:`TrackingServer.key` have
none). A redirect to another host loses the header (aiohttp drops
``Authorization`` when the origin changes; the tests check it).

:class:`MlflowApi` makes the calls (JSON over the resolver's pooled session)
and maps what the server answers to hostkit's errors in one place
(:func:`api_error`): MLflow answers JSON errors such as
``{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": ...}``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

from hostkit.backend import network_error, read_body, request, retry_after
from hostkit.errors import (
    BackendError,
    CredentialsNeeded,
    CredentialsRefused,
    HostkitError,
    NotAFile,
    NotFound,
    TransientError,
    UsageError,
)
from hostkit.redact import redact_text, redact_url

#: How much of a JSON answer is read (an artifact listing page is far smaller).
_MAX_JSON = 64 << 20
_NEEDS = ("set MLFLOW_TRACKING_TOKEN (sent as a bearer token), or MLFLOW_TRACKING_USERNAME "
          "and MLFLOW_TRACKING_PASSWORD (basic auth), as for MLflow's own client")
_REFUSED = ("check MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD: the server did not accept them (or they may not read this)")
#: A store's "no such object" inside the 500 the artifact proxy answers for a missing file.
_MISSING_IN_STORE = re.compile(r"\(404\)|NoSuchKey|Not Found|No such file|does not exist", re.I)
#: A model version number, as MLflow numbers them (a version is cached for good under it).
_VERSION = re.compile(r"[1-9][0-9]{0,17}")
_NOT_MLFLOW = ("the server is not answering as an MLflow tracking server does; check "
               "MLFLOW_TRACKING_URI")


def _obj(value: Any) -> dict:
    """``value`` when it is a JSON object, else an empty one (a server may answer any shape)."""
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class TrackingServer:
    """Where the tracking server is and how to authenticate to it (``repr`` has no secret)."""

    url: str  # base URL: no userinfo, no trailing slash
    token: str | None = field(default=None, repr=False)
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    insecure: bool = False
    ca_bundle: str | None = None
    client_cert: str | None = None

    @property
    def shown(self) -> str:
        """The server as it may be shown: the base URL (it has no credentials)."""
        return self.url

    @property
    def key(self) -> str:
        """The server in cache keys: scheme, lowercase host, port, path; no credentials."""
        parts = urlsplit(self.url)
        host = (parts.hostname or "").lower()
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme.lower()}://{host}{port}{parts.path}"

    @property
    def credentialed(self) -> bool:
        """Whether requests carry a credential (a token or a username)."""
        return bool(self.token or self.username)

    @property
    def client_key(self) -> str:
        """The key of this server's :class:`MlflowApi` on the resolver's context.

        Credentials are part of it (a test may change them between resolves) only
        as a digest, so that the key itself holds no secret.
        """
        import hashlib

        secret = hashlib.sha256(repr((self.token, self.username, self.password)).encode())
        return f"mlflow|{self.url}|{secret.hexdigest()[:16]}|{self.insecure}|" \
               f"{self.ca_bundle}|{self.client_cert}"

    def headers(self) -> dict[str, str]:
        """The ``Authorization`` header for this server (empty without credentials)."""
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self.username:
            import base64

            pair = f"{self.username}:{self.password or ''}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
        return {}

    def ssl(self) -> Any:
        """aiohttp's ``ssl=``: verification as MLflow's client does it."""
        if self.insecure:
            return False
        if not (self.ca_bundle or self.client_cert):
            return True
        import ssl

        context = ssl.create_default_context(cafile=self.ca_bundle)
        if self.client_cert:
            context.load_cert_chain(self.client_cert)
        return context


def server_from_env(shown: str) -> TrackingServer:
    """The tracking server from ``MLFLOW_TRACKING_URI`` and MLflow's auth variables (no I/O).

    :param shown: the identifier being resolved, for messages.
    :raises UsageError: the variable is missing, or names no http(s) server.
    """
    raw = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not raw:
        raise UsageError(f"{shown} needs an MLflow tracking server, and MLFLOW_TRACKING_URI is "
                         "not set", hint="export MLFLOW_TRACKING_URI=http://HOST:5000 (the "
                                         "server's address, as for MLflow's own client)",
                         identifier=shown)
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise UsageError(f"MLFLOW_TRACKING_URI is not a URL ({redact_url(raw)!r})",
                         hint="set it to the server's address: http://HOST:PORT",
                         identifier=shown) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"MLFLOW_TRACKING_URI is {redact_url(raw)!r}: hostkit reads MLflow artifacts "
            "through a tracking server, which needs an http:// or https:// address",
            hint="start `mlflow server` and set MLFLOW_TRACKING_URI=http://HOST:PORT (a "
                 "local file or database store has no server to ask)", identifier=shown)
    if parts.query or parts.fragment:
        raise UsageError("MLFLOW_TRACKING_URI has a query or a fragment",
                         hint="set it to the server's base address: http://HOST:PORT[/PATH]",
                         identifier=shown)
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    url = f"{parts.scheme.lower()}://{host}{f':{port}' if port else ''}{parts.path.rstrip('/')}"
    username = os.environ.get("MLFLOW_TRACKING_USERNAME") or \
        (unquote(parts.username) if parts.username else None)
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD") if \
        os.environ.get("MLFLOW_TRACKING_USERNAME") else \
        (unquote(parts.password) if parts.password else None)
    return TrackingServer(
        url=url, token=os.environ.get("MLFLOW_TRACKING_TOKEN") or None,
        username=username, password=password,
        insecure=os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").strip().lower()
        in ("1", "true", "yes"),
        ca_bundle=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None,
        client_cert=os.environ.get("MLFLOW_TRACKING_CLIENT_CERT_PATH") or None)


@dataclass
class FileInfo:
    """One entry of an artifact listing: ``path`` relative to the root listed from."""

    path: str
    is_dir: bool
    size: int | None = None


def api_error(status: int, body: str, display: str, server: TrackingServer, *,
              headers=None) -> HostkitError:
    """The hostkit error for an MLflow answer that is not a success.

    MLflow's JSON ``error_code`` decides where it says more than the status:
    ``RESOURCE_DOES_NOT_EXIST`` (and a 500 of the artifact proxy whose store
    said 404) is :class:`NotFound`, a directory where a file was asked for
    :class:`NotAFile`. 401/403 are :class:`CredentialsNeeded` when no
    credential was sent, else :class:`CredentialsRefused`.
    """
    code, said = "", ""
    try:
        data = json.loads(body)
        if isinstance(data, dict):
            code, said = str(data.get("error_code") or ""), str(data.get("message") or "")
    except ValueError:
        said = body if not body.lstrip().startswith("<") else ""
    said = redact_text(said.strip())[:300]
    where = f"the MLflow server at {server.shown}"
    if status in (401, 403):
        if server.credentialed:
            return CredentialsRefused(f"{display}: {where} refused the credentials ({status})",
                                      hint=_REFUSED, identifier=display)
        return CredentialsNeeded(f"{display}: {where} needs credentials ({status})", hint=_NEEDS,
                                 identifier=display)
    if "refers to a directory" in said:
        return NotAFile(f"{display} names a folder of artifacts, not one file",
                        hint="name one file under it, or resolve the folder itself (a tree)",
                        identifier=display)
    missing = code == "RESOURCE_DOES_NOT_EXIST" or status == 404 or \
        (code == "INVALID_PARAMETER_VALUE" and "not found" in said.lower()) or \
        (status == 500 and _MISSING_IN_STORE.search(said) is not None)
    if missing:
        return NotFound(f"{display}: not found ({said or status})",
                        hint="check the run id, model name, version or alias and the path "
                             "(`mlflow artifacts list` or the MLflow UI shows what is there)",
                        identifier=display)
    if status == 503 and "serve-artifacts" in said:
        return BackendError(f"{display}: {where} does not serve artifacts ({said})",
                            hint="name the artifact by its run or model (runs:/RUN/PATH, "
                                 "models:/NAME/VERSION/PATH): hostkit then reads the artifact "
                                 "store itself", identifier=display)
    if status == 429 or status >= 500:
        return TransientError(f"{display}: {where} answered {status}"
                              + (f" ({said})" if said else ""),
                              hint="the server is busy or failing; try again later",
                              identifier=display,
                              retry_after=retry_after(headers) if headers is not None else None)
    return BackendError(f"{display}: {where} answered {status}" + (f" ({said})" if said else ""),
                        hint="run with -v for details; check MLFLOW_TRACKING_URI",
                        identifier=display)


class MlflowApi:
    """REST calls to one tracking server through the resolver's pooled session."""

    def __init__(self, server: TrackingServer, context):
        self.server = server
        self.context = context
        #: run id -> the run's artifact root (it never changes for a run)
        self._roots: dict[str, str] = {}

    def url(self, path: str, params: dict[str, str] | None = None) -> str:
        """The server's URL for ``path`` (already quoted) with ``params`` (quoted here)."""
        query = ("?" + urlencode(params, quote_via=quote)) if params else ""
        return f"{self.server.url}{path}{query}"

    async def get(self, path: str, params: dict[str, str] | None, display: str) -> dict:
        """GET ``path`` as JSON; hostkit errors for anything but a JSON object."""
        url = self.url(path, params)
        try:
            async with request(self.context, "GET", url, headers=self.server.headers(),
                               ssl=self.server.ssl(), max_redirects=5) as resp:
                body = await read_body(resp, _MAX_JSON)
                status, headers = resp.status, resp.headers
                kind = resp.headers.get("Content-Type", "")
        except HostkitError:
            raise
        except Exception as exc:
            raise network_error(exc, display, self.server.shown) or exc from None
        text = body.decode("utf-8", "replace")
        if not 200 <= status < 300:
            raise api_error(status, text, display, self.server, headers=headers)
        if len(body) > _MAX_JSON:
            raise BackendError(f"{display}: {self.server.shown} answered more than "
                               f"{_MAX_JSON >> 20} MiB to {path}", hint=_NOT_MLFLOW,
                               identifier=display)
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            login = "html" in kind.lower() and re.search(r"type\s*=\s*[\"']?password|login|"
                                                         r"sign[ -]?in", text, re.I)
            if login:
                raise CredentialsNeeded(f"{display}: {self.server.shown} answered a login page, "
                                        "not MLflow's API", hint=_NEEDS, identifier=display)
            raise BackendError(f"{display}: {self.server.shown} did not answer like an MLflow "
                               f"tracking server ({kind or 'no content type'})",
                               hint="check MLFLOW_TRACKING_URI: it is the server's base address "
                                    "(http://HOST:PORT)", identifier=display)
        return data

    # runs

    async def run_root(self, run_id: str, display: str) -> str:
        """The run's artifact root (``runs/get``: ``run.info.artifact_uri``)."""
        if run_id not in self._roots:
            data = await self.get("/api/2.0/mlflow/runs/get", {"run_id": run_id}, display)
            root = _obj(_obj(data.get("run")).get("info")).get("artifact_uri")
            if not isinstance(root, str) or not root:
                raise BackendError(f"{display}: the server gave no artifact location for run "
                                   f"{run_id}", hint="check the run in the MLflow UI",
                                   identifier=display)
            self._roots[run_id] = root
        return self._roots[run_id]

    async def list_run(self, run_id: str, path: str, display: str) -> list[FileInfo]:
        """One level of a run's artifacts under ``path`` (paths relative to the run's root)."""
        params = {"run_id": run_id, **({"path": path} if path else {})}
        return await self._pages("/api/2.0/mlflow/artifacts/list", params, display,
                                 lambda p: p)

    async def list_logged_model(self, model_id: str, path: str, display: str
                                ) -> list[FileInfo]:
        """One level of a logged model's artifacts (paths relative to its root)."""
        params = {"artifact_directory_path": path} if path else {}
        return await self._pages(f"/api/2.0/mlflow/logged-models/{quote(model_id, safe='')}"
                                 "/artifacts/directories", params, display, lambda p: p)

    async def list_proxied(self, path: str, display: str) -> list[FileInfo]:
        """One level of the artifact proxy's store under ``path`` (``mlflow-artifacts:/``).

        The proxy names entries by their base name: they are given back as ``path/name``.
        """
        prefix = f"{path}/" if path else ""
        return await self._pages("/api/2.0/mlflow-artifacts/artifacts",
                                 {"path": path} if path else {}, display,
                                 lambda p: prefix + p.rsplit("/", 1)[-1])

    async def _pages(self, path: str, params: dict[str, str], display: str,
                     name) -> list[FileInfo]:
        found: list[FileInfo] = []
        token = None
        tokens: set[str] = set()
        for _ in range(100_000):
            data = await self.get(path, {**params, **({"page_token": token} if token else {})},
                                  display)
            files = data.get("files") or ()
            for item in files if isinstance(files, list) else ():
                if not isinstance(item, dict) or not isinstance(item.get("path"), str):
                    continue
                size = item.get("file_size")
                if size is not None and (type(size) is not int or size < 0):
                    raise BackendError(f"{display}: the artifact listing gives "
                                       f"{item['path'][:100]!r} a size that is not a byte "
                                       f"count ({str(size)[:40]!r})", hint=_NOT_MLFLOW,
                                       identifier=display)
                found.append(FileInfo(name(item["path"]), bool(item.get("is_dir")), size))
            token = data.get("next_page_token")
            if not token:
                return found
            token = str(token)
            if token in tokens:
                raise BackendError(f"{display}: the artifact listing repeats a page token",
                                   hint=_NOT_MLFLOW, identifier=display)
            tokens.add(token)
        raise BackendError(f"{display}: the artifact listing never ended",
                           hint="the server keeps answering more pages", identifier=display)

    # the model registry

    async def model_version(self, name: str, version: str, display: str) -> dict:
        """``model-versions/get``: source, run_id, status."""
        data = await self.get("/api/2.0/mlflow/model-versions/get",
                              {"name": name, "version": version}, display)
        return _obj(data.get("model_version"))

    async def download_uri(self, name: str, version: str, display: str) -> str:
        """``model-versions/get-download-uri``: where the version's artifacts are."""
        data = await self.get("/api/2.0/mlflow/model-versions/get-download-uri",
                              {"name": name, "version": version}, display)
        uri = data.get("artifact_uri")
        if not isinstance(uri, str) or not uri:
            raise BackendError(f"{display}: the server gave no artifact location",
                               hint="check the model version in the MLflow UI",
                               identifier=display)
        return uri

    async def alias_version(self, name: str, alias: str, display: str) -> str:
        """The version an alias names now (``registered-models/alias``)."""
        data = await self.get("/api/2.0/mlflow/registered-models/alias",
                              {"name": name, "alias": alias}, display)
        version = _obj(data.get("model_version")).get("version")
        if not version:
            raise NotFound(f"{display}: the alias names no version",
                           hint="set it: MlflowClient().set_registered_model_alias(...)",
                           identifier=display)
        if not _VERSION.fullmatch(str(version)):
            raise BackendError(f"{display}: the alias names {str(version)[:40]!r}, not a "
                               "version number", hint=_NOT_MLFLOW, identifier=display)
        return str(version)

    async def latest_version(self, name: str, display: str) -> str:
        """The newest version of a registered model (``registered-models/get-latest-versions``)."""
        data = await self.get("/api/2.0/mlflow/registered-models/get-latest-versions",
                              {"name": name}, display)
        listed = data.get("model_versions")
        versions = [int(v["version"]) for v in (listed if isinstance(listed, list) else ())
                    if isinstance(v, dict) and _VERSION.fullmatch(str(v.get("version", "")))]
        if not versions:
            raise NotFound(f"{display}: the model has no versions",
                           hint="register one first", identifier=display)
        return str(max(versions))
