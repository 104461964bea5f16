"""Synapse's REST API through hostkit's own HTTP session: login, entity bundles, download URLs.

The few calls a download needs are made here rather than through synapseclient,
so downloads work with any synapseclient (MedPerf pins 4.1.1) or none, without
reaching into the client's private retry policy or file cache, and without a
worker thread per call. They are the calls the real client makes (see
``synapse-rest.md``):

- ``GET  {repo}/userProfile``: checks a token once (a refused token fails at once);
- ``POST {repo}/entity/{id}[/version/{v}]/bundle2``: name, size, MD5, file handle;
- ``POST {file}/fileHandle/batch``: a presigned URL for the file handle;
- ``POST {repo}/entity/child``: an entity by name under a parent (uploads).

The token is found as synapseclient's ``login()`` finds it: the config file's
``[default]`` (or ``[profile $SYNAPSE_PROFILE]``, or the old ``[authentication]``)
``authtoken``, then ``SYNAPSE_AUTH_TOKEN``. It is sent only to the Synapse
endpoints, never shown. hostkit's resolver retries and resumes, so a call here
is one request: 429 and 5xx are raised as :class:`TransientError`.
"""

from __future__ import annotations

import asyncio
import configparser
import json
import os
import re
from dataclasses import dataclass

from hostkit.backend import network_error, read_body, request
from hostkit.backend.errors import retry_after
from hostkit.errors import (
    BackendError,
    CredentialsNeeded,
    CredentialsRefused,
    HostkitError,
    NotFound,
    TransientError,
    UsageError,
)
from hostkit.redact import redact_text, redact_url, url_cache_key

PRODUCTION = "https://repo-prod.prod.sagebase.org"
PRODUCTION_REPO = f"{PRODUCTION}/repo/v1"
PORTAL = "https://www.synapse.org"
#: How much of a JSON answer is read (an entity bundle or a page of children is far smaller).
_MAX_JSON = 16 << 20
BUNDLE_REQUEST = {"includeEntity": True, "includeAnnotations": True,
                  "includeFileHandles": True, "includeRestrictionInformation": True}


@dataclass(frozen=True)
class SynapseConfig:
    """Where Synapse is, which config file holds the token, decided without network I/O."""

    config_path: str
    repo: str = PRODUCTION_REPO
    auth: str = f"{PRODUCTION}/auth/v1"
    file: str = f"{PRODUCTION}/file/v1"
    portal: str = PORTAL
    #: a private folder for synapseclient's own file cache (uploads only)
    cache_root: str = ""

    @property
    def client_key(self) -> str:
        return "synapse|" + "|".join((self.config_path, self.repo, self.auth, self.file))

    @property
    def production(self) -> bool:
        return self.repo.rstrip("/") == PRODUCTION_REPO

    def cache_key(self, entity_id: str, version: int | None) -> str:
        """The cache key: the entity (and version) on this repository endpoint."""
        name = f"{entity_id}.{version}" if version else entity_id
        if self.production:
            return f"synapse:{name}"
        return f"synapse+{url_cache_key(self.repo)}:{name}"

    def where(self) -> str:
        """The endpoint as messages name it (no credentials)."""
        return "Synapse" if self.production else f"Synapse at {redact_url(self.repo)}"


def read_config(path: str) -> configparser.RawConfigParser:
    """The Synapse config file (an INI file; empty when absent)."""
    parser = configparser.RawConfigParser()
    try:
        parser.read(path)
    except (configparser.Error, OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the Synapse config file {path}: {type(exc).__name__}",
                         hint="fix or move the file (it is an INI file with [default] "
                              "authtoken = ... and optional [endpoints])") from None
    return parser


def endpoints_from(path: str, base: str | None, cache_root: str) -> SynapseConfig:
    """Endpoints from one base URL (``HOSTKIT_SYNAPSE_ENDPOINT``), else the config file's
    ``[endpoints]``, else production."""
    if base:
        base = re.sub(r"/repo/v1$", "", base.strip().rstrip("/"))
        if not base.startswith(("http://", "https://")):
            raise UsageError(f"HOSTKIT_SYNAPSE_ENDPOINT={redact_url(base)!r} is not a URL",
                             hint="set it to the base URL serving /repo/v1, /auth/v1 and "
                                  "/file/v1, e.g. https://repo-prod.prod.sagebase.org")
        return SynapseConfig(path, f"{base}/repo/v1", f"{base}/auth/v1", f"{base}/file/v1",
                             f"{base}/", cache_root)
    parser = read_config(path)

    def endpoint(key: str, default: str) -> str:
        if parser.has_option("endpoints", key):
            value = parser.get("endpoints", key).strip().rstrip("/")
            if not value.startswith(("http://", "https://")):
                raise UsageError(f"{path}: [endpoints] {key} is not an http(s) URL",
                                 hint="fix it, or remove it to use Synapse itself")
            return value
        return default

    repo = endpoint("repoEndpoint", PRODUCTION_REPO)
    return SynapseConfig(path, repo, endpoint("authEndpoint", f"{PRODUCTION}/auth/v1"),
                         endpoint("fileHandleEndpoint", f"{PRODUCTION}/file/v1"),
                         endpoint("portalEndpoint", PORTAL), cache_root)


def find_token(conf: SynapseConfig) -> tuple[str, str] | None:
    """``(token, where it came from)``, looked up as synapseclient's ``login()`` does."""
    parser = read_config(conf.config_path)
    profile = os.environ.get("SYNAPSE_PROFILE") or "default"
    sections = ["default"] if profile == "default" else [f"profile {profile}"]
    for section in (*sections, "authentication"):
        if parser.has_option(section, "authtoken"):
            token = parser.get(section, "authtoken").strip()
            if token:
                return token, conf.config_path
    if token := os.environ.get("SYNAPSE_AUTH_TOKEN", "").strip():
        return token, "SYNAPSE_AUTH_TOKEN"
    return None


def token_hint(conf: SynapseConfig) -> str:
    """How to give hostkit a Synapse token."""
    return (f"create a personal access token (scopes view and download) at "
            f"{PORTAL}/#!PersonalAccessTokens: and set SYNAPSE_AUTH_TOKEN, or put "
            f"`authtoken = <token>` under [default] in {conf.config_path} (mode 0600)")


class SynapseApi:
    """One endpoint's REST calls, with one token (or none); kept in ``Context.clients``."""

    def __init__(self, conf: SynapseConfig, context, *, anonymous: bool = False):
        self.conf = conf
        self.context = context
        found = None if anonymous else find_token(conf)
        self._token, self.token_source = found if found else (None, None)
        self._checked = False
        self._login_lock = asyncio.Lock()
        #: the account's user name once the token was accepted
        self.username: str | None = None

    @property
    def token(self) -> str | None:
        """The token found (None: anonymous). Never log or show it."""
        return self._token

    @property
    def logged_in(self) -> bool:
        """True when a token is used (and, after the first call, was accepted)."""
        return self._token is not None

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    async def login(self, what: str) -> None:
        """Check the token once (``GET /userProfile``): a refused token fails at once."""
        if self._token is None or self._checked:
            return
        async with self._login_lock:
            if self._checked:
                return
            profile = await self._call("GET", f"{self.conf.repo}/userProfile", what, login=True)
            self.username = str(profile.get("userName") or "") or None
            self._checked = True

    async def bundle(self, entity_id: str, version: int | None, what: str,
                     parts: dict | None = None) -> dict:
        """The entity bundle (entity, file handles, restrictions), as ``syn.get`` asks for it;
        ``parts`` asks for other parts instead (``{"includeBenefactorACL": True}``...)."""
        await self.login(what)
        path = f"/entity/{entity_id}/version/{version}/bundle2" if version \
            else f"/entity/{entity_id}/bundle2"
        return await self._call("POST", self.conf.repo + path, what, parts or BUNDLE_REQUEST)

    async def presigned(self, file_handle_id: str, entity_id: str, what: str) -> dict:
        """``fileHandle/batch``: the file handle and a presigned URL to download it."""
        await self.login(what)
        answer = await self._call("POST", f"{self.conf.file}/fileHandle/batch", what, {
            "includeFileHandles": True, "includePreSignedURLs": True,
            "requestedFiles": [{"fileHandleId": file_handle_id, "associateObjectId": entity_id,
                                "associateObjectType": "FileEntity"}]})
        files = answer.get("requestedFiles")
        first = files[0] if isinstance(files, list) and files else {}
        return first if isinstance(first, dict) else {}

    async def child(self, parent_id: str, name: str, what: str) -> str | None:
        """The id of the entity named ``name`` under ``parent_id``, or None."""
        await self.login(what)
        try:
            found = await self._call("POST", f"{self.conf.repo}/entity/child", what,
                                     {"entityName": name, "parentId": parent_id})
        except NotFound:
            return None
        return str(found.get("id") or "") or None

    async def children(self, parent_id: str, token: str | None, what: str) -> dict:
        """One page of a container's files and folders (``POST /entity/children``):
        ``{"page": [EntityHeader...], "nextPageToken": ...}``."""
        await self.login(what)
        body = {"parentId": parent_id, "includeTypes": ["file", "folder"], "sortBy": "NAME",
                "sortDirection": "ASC"}
        if token:
            body["nextPageToken"] = token
        return await self._call("POST", f"{self.conf.repo}/entity/children", what, body)

    async def _call(self, method: str, url: str, what: str, body: dict | None = None, *,
                    login: bool = False) -> dict:
        """One JSON request; the hostkit error for any failure (never showing the token)."""
        data = json.dumps(body).encode() if body is not None else None
        try:
            async with request(self.context, method, url, data=data,
                               headers=self._headers(), encoded=False) as resp:
                body = await read_body(resp, _MAX_JSON)
                if len(body) > _MAX_JSON:
                    raise BackendError(
                        f"{what}: {self.conf.where()} answered more than {_MAX_JSON >> 20} MiB",
                        hint="the server is not answering as Synapse does; check "
                             "HOSTKIT_SYNAPSE_ENDPOINT", identifier=what)
                text = body.decode("utf-8", "replace")
                if 200 <= resp.status < 300:
                    try:
                        answer = json.loads(text) if text.strip() else {}
                    except ValueError:
                        raise BackendError(
                            f"{what}: {self.conf.where()} answered something that is not "
                            "JSON", hint="check HOSTKIT_SYNAPSE_ENDPOINT / the [endpoints] "
                            f"of {self.conf.config_path}", identifier=what) from None
                    return answer if isinstance(answer, dict) else {}
                if login and resp.status in (401, 403):
                    raise CredentialsRefused(
                        f"{what}: {self.conf.where()} refused the access token from "
                        f"{self.token_source} ({resp.status})",
                        hint="the token is wrong, expired or revoked; " + token_hint(self.conf),
                        identifier=what)
                raise self.status_error(resp.status, what, _reason(text),
                                        retry_after(resp.headers))
        except HostkitError:
            raise
        except Exception as exc:
            raise network_error(exc, what, self.conf.where(), hints={
                "unreachable": "check your network and HOSTKIT_SYNAPSE_ENDPOINT / the "
                               f"[endpoints] of {self.conf.config_path}"}) or BackendError(
                f"{what}: talking to {self.conf.where()} failed ({type(exc).__name__})",
                hint="try again", identifier=what) from None

    def status_error(self, status: int, what: str, reason: str | None = None,
                     wait: float | None = None) -> HostkitError:
        """The error for a Synapse answer that is not a success."""
        detail = f": {redact_text(reason)}" if reason else ""
        if status == 404:
            return NotFound(f"{what}: not found on {self.conf.where()}{detail}",
                            hint="check the Synapse ID (and version); the entity may have been "
                                 "deleted or the version may not exist", identifier=what)
        if status in (401, 403):
            return self.no_access(what, status, reason)
        if status == 429 or status >= 500:
            return TransientError(f"{what}: {self.conf.where()} answered {status}{detail}",
                                  identifier=what, retry_after=wait,
                                  hint="Synapse is busy or failing; try again later")
        return BackendError(f"{what}: {self.conf.where()} answered {status}{detail}",
                            identifier=what, hint="check the identifier")

    def no_access(self, what: str, status: int | None = None,
                  reason: str | None = None) -> HostkitError:
        """CredentialsNeeded when anonymous, CredentialsRefused when logged in."""
        entity = what.removeprefix("synapse:").split(".")[0]
        shown = f" ({status})" if status else ""
        if not self.logged_in:
            return CredentialsNeeded(
                f"{what} is not public: {self.conf.where()} needs a token to download it"
                f"{shown}", hint=token_hint(self.conf), identifier=what)
        who = f" ({self.username})" if self.username else ""
        detail = f": {redact_text(reason)}" if reason else ""
        return CredentialsRefused(
            f"{what}: your Synapse account{who} may not download this file{shown}{detail}",
            hint=f"request access on {self.conf.portal.rstrip('/')}/#!Synapse:{entity} (accept "
                 "its conditions of use), or ask its owner to share it with you",
            identifier=what)

    async def aclose(self) -> None:
        """Nothing to close: the requests went through the context's shared session."""


def _reason(text: str) -> str | None:
    """The ``reason`` of a Synapse error answer, at most 300 characters."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    reason = data.get("reason") if isinstance(data, dict) else None
    return str(reason)[:300] if reason else None
