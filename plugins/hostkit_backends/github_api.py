"""GitHub's hosts for the github backend: the REST API, the raw host and the LFS server.

- ``GET {api}/repos/{owner}/{repo}/commits/{ref}`` (``Accept:
  application/vnd.github.sha``): the commit a branch, tag or short SHA names;
- ``GET {api}/repos/{owner}/{repo}`` (the default branch), ``GET`` and ``PUT
  {api}/repos/{owner}/{repo}/contents/{path}`` (uploads);
- ``GET {raw}/{owner}/{repo}/{commit}/{path}``: the bytes, resumable with ``Range``;
- ``POST {lfs}/{owner}/{repo}.git/info/lfs/objects/batch``: where a Git LFS object is.

The token (``GH_TOKEN``, else ``GITHUB_TOKEN``, as the ``gh`` command reads them)
goes only to the configured API, raw and LFS hosts: redirects are followed
here, hop by hop, and a hop to any other host (the storage a raw or LFS URL
redirects to) gets no token. It never appears in a message, a log line, a key.

Rate limits: a 403 or 429 with ``x-ratelimit-remaining: 0`` or ``Retry-After``
is a :class:`~hostkit.errors.TransientError` waiting that long when the limit
resets within :data:`MAX_WAIT` seconds (the resolver, and :meth:`GitHub.call`,
wait at least that long before trying again), and :class:`RateLimited` (no
retry) when it resets later, naming the time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from hostkit.backend import (
    HttpStatus,
    network_error,
    open_range,
    read_body,
    request,
    retry_delay,
    retry_limit,
)
from hostkit.errors import (
    BackendError,
    CredentialsNeeded,
    CredentialsRefused,
    HostkitError,
    NotFound,
    TransientError,
    UsageError,
    register,
)
from hostkit.redact import redact_url

log = logging.getLogger("hostkit.github")

API_HOST = "https://api.github.com"
RAW_HOST = "https://raw.githubusercontent.com"
WEB_HOST = "https://github.com"
#: Environment variables holding a token, in the order ``gh`` reads them.
TOKEN_VARIABLES = ("GH_TOKEN", "GITHUB_TOKEN")
#: The longest wait for a rate limit to reset that is waited out; a later reset fails at once.
MAX_WAIT = 60.0
#: Redirect statuses followed (by hand, so that credentials stay on their hosts).
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_HOPS = 10
#: The most of an API answer read (a contents answer holds a file of up to 1 MB, base64).
_MAX_JSON = 8 << 20
JSON = "application/vnd.github+json"
LFS_JSON = "application/vnd.git-lfs+json"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_NAME = re.compile(r"^[\w.-]+$")


@register
class RateLimited(BackendError):
    """GitHub's rate limit is exhausted until a time too far away to wait for."""

    kind = "github_rate_limited"
    http_status = 429


@dataclass(frozen=True)
class GitHubConfig:
    """The hosts and the token, decided without I/O (settings and the environment)."""

    api: str = API_HOST
    raw: str = RAW_HOST
    lfs: str = WEB_HOST
    token: str | None = field(default=None, repr=False)
    #: the variable the token came from (for messages), or None
    token_source: str | None = None

    def auth(self, url: str, kind: str = "bearer") -> dict[str, str]:
        """The token's header for ``url`` when it is on one of the configured hosts, else {}.

        ``kind`` ``basic`` is Git's form (the LFS server), ``bearer`` the API's and raw's.
        """
        if self.token is None or origin(url) not in {origin(self.api), origin(self.raw),
                                                      origin(self.lfs)}:
            return {}
        if kind == "basic":
            pair = base64.b64encode(f"x-access-token:{self.token}".encode()).decode()
            return {"Authorization": f"Basic {pair}"}
        return {"Authorization": f"Bearer {self.token}"}

    def token_hint(self, what: str = "read") -> str:
        """What to do about the token, for a refusal."""
        if self.token is None:
            return (f"a private repository needs a token that may {what} it: set GH_TOKEN or "
                    "GITHUB_TOKEN (`gh auth token` prints yours)")
        return (f"check that the token in {self.token_source} may {what} this repository "
                "(a fine-grained token needs the repository and Contents access)")


def config_for(context) -> GitHubConfig:
    """The backend's hosts (``api_url``, ``raw_url``, ``lfs_url``) and the token, if any."""
    token, source = None, None
    for name in TOKEN_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            token, source = value, name
            break
    return GitHubConfig(api=_base(context, "api_url", API_HOST),
                        raw=_base(context, "raw_url", RAW_HOST),
                        lfs=_base(context, "lfs_url", WEB_HOST), token=token,
                        token_source=source)


def _base(context, key: str, default: str) -> str:
    value = (context.option("github", key) or default).strip().rstrip("/")
    if not usable_url(value) or urlsplit(value).query:
        raise UsageError(f"HOSTKIT_GITHUB_{key.upper()}={redact_url(value)!r} is not an "
                         "http(s) base URL", hint=f"set it like {default} (or [backends.github] "
                                                  f"{key} in config.toml), with no "
                                                  "user:password (the token is sent instead)")
    return value


def usable_url(url: str) -> bool:
    """Whether a request may go to ``url``: http(s), a host, a port in range, no user info.

    A ``user:password@`` would be sent beside the token (aiohttp refuses the pair)
    or, without one, shown in every message naming the host; a port out of range
    fails every parse of the URL (:func:`origin` too).
    """
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018  # raises for a port out of range
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and "@" not in parts.netloc


def origin(url: str) -> str:
    """``scheme://host:port`` of a URL (the unit a credential is bound to)."""
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower(), 0)
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}:{port}"


def is_name(text: str | None) -> bool:
    """Whether ``text`` may be an owner or repository name: word characters, ``.`` and ``-``,
    but not ``.`` or ``..`` (URLs are normalised: ``/repos/../x`` is ``/x``)."""
    return bool(text) and _NAME.match(text or "") is not None and set(text or "") != {"."}


def is_ref(text: str | None) -> bool:
    """Whether ``text`` may be a branch, tag or commit: git's rules that keep it one URL
    path's worth (no ``..``, no empty component, none starting with ``.``)."""
    return bool(text) and ".." not in (text or "") and not any(
        not part or part.startswith(".") for part in (text or "").split("/"))


def quote_path(path: str) -> str:
    """A repository path as a URL path (already-encoded ``%XX`` escapes are kept)."""
    return quote(path, safe="/%:@!$&'()*+,;=~-._")


def _next_hop(url: str, location: str | None, display: str) -> str:
    target = urljoin(url, location or "")
    if not location or not usable_url(target):
        raise BackendError(f"{display}: GitHub redirected to a URL that is not an http(s) URL "
                           "with a host and a valid port, and no user:password",
                           hint="check the api_url / raw_url settings", identifier=display)
    return target


# -- rate limits ----------------------------------------------------------------------


def rate_limit_error(status: int, headers: Mapping[str, str], display: str,
                     config: GitHubConfig, now: float | None = None) -> HostkitError | None:
    """The error for a rate-limited answer (403/429 saying so), or None for another answer."""
    if status not in (403, 429):
        return None
    now = time.time() if now is None else now
    retry = (headers.get("Retry-After") or "").strip()
    remaining = (headers.get("x-ratelimit-remaining") or "").strip()
    reset = (headers.get("x-ratelimit-reset") or "").strip()
    wait: float | None = None
    if _whole(retry):
        wait = float(retry)
    elif remaining == "0" and _whole(reset):
        wait = max(0.0, float(reset) - now)
    elif remaining != "0" and status == 403:
        return None  # a plain refusal
    tip = "" if config.token else ("; or set GH_TOKEN or GITHUB_TOKEN: GitHub allows far "
                                   "more requests with a token than without")
    if wait is None:  # a 429 (or an exhausted limit) that does not say until when
        return TransientError(f"{display}: GitHub's rate limit is reached ({status})",
                              hint=f"try again in a while{tip}", identifier=display)
    when = _clock(now + wait)
    if wait <= MAX_WAIT:
        return TransientError(f"{display}: GitHub's rate limit is reached; it resets in "
                              f"{wait:.0f} s ({when})", hint=f"try again after {when}{tip}",
                              identifier=display, retry_after=max(wait, 1.0))
    span = f"in {wait / 60:.0f} min" if wait < 86400 else "more than a day away"
    return RateLimited(f"{display}: GitHub's rate limit is reached until {when} ({span})",
                       hint=f"try again after {when}{tip}", identifier=display)


def _whole(text: str) -> bool:
    """Whether a header holds whole seconds (ASCII digits: ``str.isdigit`` also takes ``²``)."""
    return text.isascii() and text.isdigit()


def _clock(timestamp: float) -> str:
    """``HH:MM:SS UTC`` of a time a server named (it may name one no clock can show)."""
    try:
        return time.strftime("%H:%M:%S UTC", time.gmtime(timestamp))
    except (OverflowError, OSError, ValueError):
        return "a time too far away to show"


# -- requests -------------------------------------------------------------------------


@dataclass
class Answer:
    """An API answer, read whole: status, headers, body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self, display: str) -> Any:
        """The body as JSON; BackendError when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            raise BackendError(f"{display}: GitHub answered {self.status} without JSON",
                               hint="check the api_url setting (GitHub Enterprise: "
                                    "https://HOST/api/v3)", identifier=display) from None

    def message(self) -> str:
        """GitHub's ``message`` field (shown in errors; it never holds the token)."""
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            return str(json.loads(self.body).get("message") or "")[:200]
        return ""


async def _read(resp, display: str) -> bytes:
    """A whole API answer, refused past :data:`_MAX_JSON` bytes (a server may lie)."""
    body = await read_body(resp, _MAX_JSON)
    if len(body) > _MAX_JSON:
        raise BackendError(f"{display}: GitHub's answer is over {_MAX_JSON} bytes",
                           hint="check the api_url setting", identifier=display)
    return body


class GitHub:
    """GitHub's hosts for one resolver context (its pooled session and settings)."""

    def __init__(self, config: GitHubConfig, context):
        self.config = config
        self.context = context

    # -- the API -----------------------------------------------------------------------

    async def call(self, method: str, url: str, *, display: str, accept: str = JSON,
                   body: Any = None, auth: str = "bearer", retry: bool = True,
                   content_type: str = "application/json",
                   length: int | None = None) -> Answer:
        """One API request (redirects followed by hand); 5xx and short rate limits retried
        (``retry`` False: not, for a caller the resolver retries already).

        ``body`` is JSON-able, or an async iterable of bytes of ``length`` bytes
        (sent once: no retry, no redirect). Returns any answer that is not a
        rate limit or a 5xx: the caller reads its status.
        """
        attempt, settings = 0, self.context.settings
        while True:
            try:
                return await self._call(method, url, display=display, accept=accept,
                                        body=body, auth=auth, content_type=content_type,
                                        length=length)
            except TransientError as exc:
                attempt += 1
                limit = retry_limit(exc, settings)
                if not retry or attempt > limit:
                    raise
                delay = retry_delay(exc, attempt, settings)
                log.warning("%s; retry %d/%d in %.1fs", exc.message, attempt, limit, delay)
                await asyncio.sleep(delay)

    async def _call(self, method: str, url: str, *, display: str, accept: str, body: Any,
                    auth: str, content_type: str, length: int | None) -> Answer:
        streamed = body is not None and not isinstance(body, dict | list)
        data = json.dumps(body).encode() if body is not None and not streamed else body
        for _ in range(_MAX_HOPS + 1):
            headers = {"Accept": accept, "X-GitHub-Api-Version": "2022-11-28",
                       **self.config.auth(url, auth)}
            if data is not None:
                headers["Content-Type"] = content_type
                if length is not None:
                    headers["Content-Length"] = str(length)
            try:
                async with request(self.context, method, url, data=data, headers=headers,
                                   encoded=False) as resp:
                    answer = Answer(resp.status, resp.headers, await _read(resp, display))
            except HostkitError:
                raise
            except Exception as exc:
                raise network_error(exc, display, urlsplit(url).netloc) or exc from None
            if answer.status in _REDIRECTS and not streamed:
                url = _next_hop(url, answer.headers.get("Location"), display)
                if answer.status == 303:
                    method, data = "GET", None
                continue
            limited = rate_limit_error(answer.status, answer.headers, display, self.config)
            if limited is not None:
                raise limited
            if answer.status >= 500:
                raise TransientError(f"{display}: GitHub answered {answer.status}",
                                     hint="GitHub is busy or failing; try again later",
                                     identifier=display)
            return answer
        raise BackendError(f"{display}: too many redirects from GitHub",
                           hint="check the api_url setting", identifier=display)

    def repo_url(self, owner: str, repo: str, tail: str = "") -> str:
        """``{api}/repos/{owner}/{repo}{tail}``."""
        return f"{self.config.api}/repos/{owner}/{repo}{tail}"

    async def commit_for(self, owner: str, repo: str, ref: str, display: str, *,
                         retry: bool = True) -> str:
        """The 40-hex commit ``ref`` (a branch, tag, ``heads/X``, ``tags/X``, short SHA) names.

        :raises NotFound: no such repository (or a private one the token may not
            read) or no such ref in it.
        """
        answer = await self.call("GET", self.repo_url(owner, repo, f"/commits/{quote(ref)}"),
                                 display=display, accept="application/vnd.github.sha",
                                 retry=retry)
        if answer.status == 200:
            sha = answer.body.decode("ascii", "replace").strip()
            if not _COMMIT.match(sha):
                with contextlib.suppress(ValueError, AttributeError, TypeError):
                    sha = str(json.loads(answer.body).get("sha") or "")
            if _COMMIT.match(sha):
                return sha
            raise BackendError(f"{display}: GitHub did not answer with a commit for {ref!r}",
                               hint="check the api_url setting", identifier=display)
        name = ref.removeprefix("heads/").removeprefix("tags/")
        if answer.status in (404, 422, 409):
            if answer.status == 404:
                raise self.no_repo(owner, repo, display)
            raise NotFound(
                f"{display}: {owner}/{repo} has no branch, tag or commit {name!r}"
                + (f" ({answer.message()})" if answer.message() else ""),
                hint=f"`git ls-remote {WEB_HOST}/{owner}/{repo}` lists its branches and tags "
                     "(a branch whose name holds '/' cannot be written in this form: pin "
                     "its commit)", identifier=display)
        raise self.refused(answer, display)

    async def default_branch(self, owner: str, repo: str, display: str) -> str:
        """The repository's default branch."""
        answer = await self.call("GET", self.repo_url(owner, repo), display=display)
        if answer.status == 404:
            raise self.no_repo(owner, repo, display)
        if answer.status != 200:
            raise self.refused(answer, display)
        data = answer.json(display)
        branch = data.get("default_branch") if isinstance(data, dict) else None
        if not isinstance(branch, str) or not branch:
            raise BackendError(f"{display}: GitHub named no default branch for {owner}/{repo}",
                               hint="pass --branch", identifier=display)
        return branch

    def no_repo(self, owner: str, repo: str, display: str, what: str = "read") -> NotFound:
        """NotFound for a repository GitHub does not show (absent, or private to others)."""
        return NotFound(f"{display}: GitHub shows no repository {owner}/{repo}",
                        hint=f"check the owner and name; {self.config.token_hint(what)}",
                        identifier=display)

    def refused(self, answer: Answer, display: str, what: str = "read") -> HostkitError:
        """The error for an answer no caller expected (401, 403, others)."""
        said = f": {answer.message()}" if answer.message() else ""
        if answer.status == 401:
            cls = CredentialsRefused if self.config.token else CredentialsNeeded
            return cls(f"{display}: GitHub refused the request (401{said})",
                       hint=("the token in " + str(self.config.token_source) +
                             " is wrong, expired or revoked") if self.config.token
                       else self.config.token_hint(what), identifier=display)
        if answer.status == 403:
            cls = CredentialsRefused if self.config.token else CredentialsNeeded
            return cls(f"{display}: GitHub refused access (403{said})",
                       hint=self.config.token_hint(what), identifier=display)
        return BackendError(f"{display}: GitHub answered {answer.status}{said}",
                            hint="run with -v for details", identifier=display)

    # -- Git LFS -------------------------------------------------------------------------

    async def lfs_download(self, owner: str, repo: str, oid: str, size: int,
                           display: str) -> tuple[str, dict[str, str]]:
        """Ask the LFS server where object ``oid`` is: ``(href, headers to send with it)``.

        Tried once: it is asked from a Remote's ``stat``/``open``, which the resolver retries.

        :raises NotFound: the server does not have the object (or the repository).
        """
        url = f"{self.config.lfs}/{owner}/{repo}.git/info/lfs/objects/batch"
        body = {"operation": "download", "transfers": ["basic"], "hash_algo": "sha256",
                "objects": [{"oid": oid, "size": size}]}
        what = f"its Git LFS object sha256:{oid} ({size} bytes)"
        answer = await self.call("POST", url, display=display, accept=LFS_JSON, body=body,
                                 auth="basic", content_type=LFS_JSON, retry=False)
        if answer.status == 404:
            raise NotFound(f"{display} is a Git LFS pointer, and the LFS server at "
                           f"{redact_url(self.config.lfs)} shows no LFS store for "
                           f"{owner}/{repo}", hint=self.config.token_hint(),
                           identifier=display)
        if answer.status != 200:
            raise self.refused(answer, display)
        data = answer.json(display)
        objects = data.get("objects") if isinstance(data, dict) else None
        found = next((o for o in objects or () if isinstance(o, dict)
                      and o.get("oid") == oid), None)
        if found is None:
            raise BackendError(f"{display}: the LFS server's answer does not name {what}",
                               hint="try again later; report it if it persists",
                               identifier=display)
        error = found.get("error")
        if isinstance(error, dict):
            code, said = error.get("code"), str(error.get("message") or "")[:200]
            if code in (404, 410):
                raise NotFound(f"{display} is a Git LFS pointer, and the LFS server does not "
                               f"have {what}: {said or code}",
                               hint="the object was never pushed (`git lfs push --all`) or "
                                    "was deleted; tell the repository's owner",
                               identifier=display)
            raise BackendError(f"{display} is a Git LFS pointer, and the LFS server refused "
                               f"{what}: {code} {said}", hint="tell the repository's owner",
                               identifier=display)
        actions = found.get("actions")
        action = actions.get("download") if isinstance(actions, dict) else None
        if not isinstance(action, dict):
            action = {}
        href = action.get("href")
        if not isinstance(href, str) or not usable_url(href):
            raise BackendError(f"{display} is a Git LFS pointer, and the LFS server gave no "
                               f"usable download link for {what}",
                               hint="the repository's LFS storage may be disabled or over its "
                                    "quota; tell its owner", identifier=display)
        headers = action.get("header")
        return href, {str(k): str(v) for k, v in (headers or {}).items()} \
            if isinstance(headers, dict) else {}

    # -- bytes ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def open_bytes(self, url: str, offset: int, *, display: str,
                         credentials: Callable[[str], dict[str, str]],
                         if_range: str | None = None, encoded: bool = False,
                         where: str | None = None):
        """A ranged GET of ``url`` from ``offset`` (the toolkit's :func:`open_range`).

        Redirects are followed here: each hop gets ``credentials(hop_url)``, so a
        token or a header meant for one host never reaches another. Yields the
        toolkit's ``Ranged``. Errors: :class:`HttpStatus` for the last answer,
        or the hostkit error for a network failure.
        """
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(_MAX_HOPS + 1):
                try:
                    ranged = await stack.enter_async_context(open_range(
                        self.context, url, offset, if_range=if_range,
                        headers=credentials(url), encoded=encoded, display=display))
                    break
                except HttpStatus as exc:
                    if exc.status not in _REDIRECTS:
                        limited = rate_limit_error(exc.status, exc.headers, display,
                                                   self.config)
                        if limited is not None:
                            raise limited from None
                        raise
                    url, encoded = _next_hop(url, exc.headers.get("Location"), display), False
            else:
                raise BackendError(f"{display}: too many redirects from {where or 'GitHub'}",
                                   hint="ask the repository's owner", identifier=display)
            yield ranged

    @contextlib.asynccontextmanager
    async def head(self, url: str, *, display: str):
        """A HEAD of a raw URL (redirects followed by hand); yields the response."""
        from hostkit.backend import request

        for _ in range(_MAX_HOPS + 1):
            async with request(self.context, "HEAD", url,
                               headers={"Accept-Encoding": "identity",
                                        **self.config.auth(url)},
                               encoded=False, display=display) as resp:
                if resp.status in _REDIRECTS:
                    url = _next_hop(url, resp.headers.get("Location"), display)
                    continue
                limited = rate_limit_error(resp.status, resp.headers, display, self.config)
                if limited is not None:
                    raise limited
                yield resp
                return
        raise BackendError(f"{display}: too many redirects from GitHub",
                           hint="check the raw_url setting", identifier=display)
