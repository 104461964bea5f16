"""github backend: files in GitHub repositories, always the bytes at one commit.

Forms (each names a file at a commit; a cached copy is served with no network)::

    github:OWNER/REPO@COMMIT/PATH
    https://raw.githubusercontent.com/OWNER/REPO/COMMIT/PATH
    https://github.com/OWNER/REPO/blob/COMMIT/PATH     (and .../raw/...: the raw file)
    github:OWNER/REPO@COMMIT/DIR/                      a folder (``@COMMIT/``: the whole
                                                       repository), listed by the git trees
                                                       API, each file as its raw URL

At a 40-hex commit a reference is immutable; every form is shown, and
recorded, as the raw URL at its commit (what is fetched, and what any
downloader can use). A branch or tag (also written ``refs/heads/NAME`` or
``refs/tags/NAME``) can move: it is looked up through the REST API and refused
with that pinned raw URL to use instead (:class:`~hostkit.errors.NotPermanent`,
``suggestion``), or with the ``pin`` setting (``hostkit resolve --pin``)
resolved and recorded under it. A short SHA (7 to 39 hex digits) is expanded
by the same call.

A private repository needs a token (``GH_TOKEN`` or ``GITHUB_TOKEN``); it is
sent to the API, raw and LFS hosts only (see :mod:`.github_api`), and a blob
fetched with it is not anonymous (a shared daemon does not serve it to others).
A raw file that is a Git LFS pointer (a small body starting with the LFS spec
line) is replaced by its object from the LFS batch API, checked against the
pointer's ``oid sha256:`` and size. ``hostkit check`` probes what a plain
anonymous GET gets: for an LFS file that is the pointer, so the raw URL is no
direct download there and GitHub's media URL (which serves the object) is
suggested. Settings (``[backends.github]`` or
``HOSTKIT_GITHUB_*``): ``api_url``, ``raw_url``, ``lfs_url`` for GitHub
Enterprise or a mirror, ``branch`` for uploads (``hostkit upload --branch``).
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from hostkit.backend import HttpStatus, network_error, read_body, retry_after, status_error
from hostkit.errors import (
    BackendError,
    HashMismatch,
    HostkitError,
    NotFound,
    NotPermanent,
    OfflineMiss,
    TransientError,
    UsageError,
)
from hostkit.hookspecs import hookimpl
from hostkit.redact import redact_url, url_cache_key
from hostkit.remote import BackendInfo, Body, Remote, RemoteInfo, TreeEntry, strong_validator
from hostkit.settings import Option

from .github_api import (
    API_HOST,
    RAW_HOST,
    WEB_HOST,
    GitHub,
    GitHubConfig,
    _base,
    config_for,
    is_name,
    is_ref,
    origin,
    quote_path,
)

log = logging.getLogger("hostkit.github")

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
#: A ref that may be a commit written short (expanded through the API).
_SHORT = re.compile(r"^[0-9a-fA-F]{7,40}$")
_FORM = "github:owner/repo@<40-hex commit>/path/to/file"
#: A Git LFS pointer file starts with this line and is smaller than POINTER_MAX bytes.
LFS_VERSION = b"version https://git-lfs.github.com/spec/v1\n"
POINTER_MAX = 1024
_LFS_VALIDATOR = "lfs:sha256:"


@hookimpl
def hostkit_backends():
    """The github backend."""
    return [BackendInfo(
        name="github", schemes=("github", "https"),
        summary="GitHub files at a commit (immutable): github:, raw and blob URLs; a branch "
                "or tag is refused with its pinned form, or pinned with --pin; private "
                "repositories with GH_TOKEN/GITHUB_TOKEN; Git LFS objects checked; upload "
                "commits a file",
        examples=("github:owner/repo@<commit>/path",
                  "https://raw.githubusercontent.com/owner/repo/<commit>/path",
                  "https://github.com/owner/repo/blob/<commit>/path"))]


@hookimpl
def hostkit_settings():
    """``api_url``, ``raw_url``, ``lfs_url`` (GitHub Enterprise, mirrors) and ``branch``."""
    return [Option("github", "raw_url", "str", RAW_HOST,
                   "where raw files are served (GitHub Enterprise, a mirror)"),
            Option("github", "api_url", "str", API_HOST,
                   "the REST API (GitHub Enterprise: https://HOST/api/v3)"),
            Option("github", "lfs_url", "str", WEB_HOST,
                   "the Git LFS server: {lfs_url}/OWNER/REPO.git/info/lfs/objects/batch"),
            Option("github", "branch", "str", None,
                   "the branch `hostkit upload ... github:...` commits to (--branch); "
                   "default: the repository's default branch")]


@hookimpl
def hostkit_resolve(ref, context):
    """Claim ``github:`` identifiers, raw URLs and github.com ``blob``/``raw`` URLs (no I/O)."""
    if ref.scheme not in ("github", "http", "https"):
        return None
    loc = parse(ref, _base(context, "raw_url", RAW_HOST))
    if loc is None:
        return None
    gh = GitHub(config_for(context), context)
    # a github.com page URL's query (?raw=true, ?plain=1) is for the page: not sent
    credentialed = ref.credentialed and loc.form != "web"
    if _COMMIT.match(loc.ref):
        return at_commit(loc, loc.ref, gh, credentialed=credentialed)
    return GitHubRef(loc, gh, display=ref.display, key=ref.key, credentialed=credentialed)


def at_commit(loc: Location, commit: str, gh: GitHub, *, credentialed: bool) -> Remote:
    """The Remote of ``loc`` at ``commit``: a file, or a folder (``github:o/r@C/dir/``)."""
    if loc.folder:
        return GitHubTreeRemote(loc, commit, gh, credentialed=credentialed)
    return GitHubRemote(loc, commit, gh, credentialed=credentialed)


@hookimpl
def hostkit_upload(destination, context):
    """Commit a file to ``github:owner/repo[@BRANCH]/path`` through the contents API."""
    if destination.scheme != "github":
        return None
    from .github_upload import GitHubUploader, parse_destination

    owner, repo, branch, path = parse_destination(destination)
    flag = context.option("github", "branch")
    if branch and flag and branch != flag:
        raise UsageError(f"{destination.display!r} names branch {branch!r} and --branch "
                         f"{flag!r}", hint="name the branch once")
    return GitHubUploader(owner, repo, branch or flag, path,
                          GitHub(config_for(context), context), destination.display)


#: Where GitHub serves Git LFS objects themselves (its raw host serves their pointers).
MEDIA_HOST = "https://media.githubusercontent.com/media"
#: What an anonymous 404 from GitHub means (it answers so for a private repository's files).
_HIDDEN = ("GitHub shows no such file to a caller without a token: the repository is private, "
           "or the file is not at this commit",
           "MedPerf's users have no token: host the file in a public repository (or elsewhere: "
           "hostkit publish); if it is public, check the commit and the path")


@hookimpl
def hostkit_check(ref, remote, context):
    """For ``hostkit check``: the file at its commit, as a plain anonymous GET gets it.

    That is the URL as written, or for ``github:`` the raw URL; no token is sent.
    A Git LFS pointer there is not the file (MedPerf's users would get the
    pointer): the GitHub media URL serving the object is suggested instead. A
    URL at a branch (refused: ``remote`` None) is probed as written all the same;
    a ``github:`` one is left to the core, which looks at its pinned form.
    """
    if isinstance(remote, GitHubRemote):
        return _check(ref, remote.loc, remote.commit, remote.url, context)
    if remote is None and ref.scheme in ("http", "https"):
        try:
            loc = parse(ref, _base(context, "raw_url", RAW_HOST))
        except HostkitError:
            return None
        if loc is not None and not loc.folder:
            return _check(ref, loc, None, ref.identifier, context)
    return None


async def _check(ref, loc: Location, commit: str | None, url: str, context):
    from hostkit.errors import NotDirectLink
    from hostkit.identifiers import parse_identifier

    from .http import check_url

    target = ref if ref.scheme in ("http", "https") else parse_identifier(url)
    media = f"{MEDIA_HOST}/{loc.owner}/{loc.repo}/{commit}/{loc.path}" \
        if commit and target.identifier.startswith(RAW_HOST + "/") else None

    def inspect(first: bytes, display: str) -> HostkitError | None:
        try:
            pointer = parse_pointer(first, display)
        except BackendError:
            return None  # a damaged pointer: the download says what is wrong with it
        if pointer is None:
            return None
        return NotDirectLink(
            f"{display} is a Git LFS pointer ({len(first)} bytes naming a {pointer.size}-byte "
            "object): a plain GET of it returns the pointer, not the file",
            hint=f"use {media}, where GitHub serves the LFS object itself" if media else
                 "give MedPerf a URL that serves the LFS object itself (GitHub's media host), "
                 "or host the file elsewhere (hostkit publish)",
            identifier=display, suggestion=media)

    found = await check_url(target, context, hidden=_HIDDEN, inspect=inspect)
    found.fetch = True  # the caller's token may read what no anonymous GET can
    return found


# -- identifiers ---------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """A file in a repository at a ref, and how the identifier was written."""

    owner: str
    repo: str
    #: a 40-hex commit, or what must be looked up: a branch, a tag, ``heads/X``,
    #: ``tags/X`` (from ``refs/heads/X``), a short SHA
    ref: str
    #: the path in the repository, URL-encoded as written
    path: str
    #: ``github`` (github:), ``raw`` (a raw host URL) or ``web`` (a github.com page URL)
    form: str
    #: the raw URL's query (a private raw link's ``?token=``): sent, never shown or keyed
    query: str = ""
    #: a folder (``github:o/r@C/dir/``; ``path`` is then without the slash, "" the root)
    folder: bool = False

    @property
    def name(self) -> str:
        """The ref as people name it."""
        return self.ref.removeprefix("heads/").removeprefix("tags/")

    @property
    def what(self) -> str:
        """``the branch 'main'``, ``the tag 'v1'``, ``the branch or tag 'x'``."""
        kind = {"heads/": "the branch", "tags/": "the tag"}.get(self.ref[:self.ref.find("/") + 1],
                                                              "the branch or tag")
        return f"{kind} {self.name!r}"


def parse(ref, raw_base: str) -> Location | None:
    """The Location a ``github:`` identifier or a GitHub URL names; None if not GitHub's.

    :raises UsageError: a malformed identifier of this backend.
    """
    if ref.scheme == "github":
        match = re.match(r"^([^/@]+)/([^/@]+)@(.+)$", ref.rest, re.S)
        if not match:
            raise UsageError(f"{ref.display!r} is not a github: identifier", hint=f"write {_FORM}",
                             identifier=ref.display)
        owner, repo, rest = match.groups()
        form = "github"
    else:
        ident = ref.identifier
        for base in dict.fromkeys((raw_base, RAW_HOST)):
            if ident.startswith(base + "/"):
                owner, _, rest = ident[len(base) + 1:].partition("/")
                repo, _, rest = rest.partition("/")
                form = "raw"
                break
        else:
            parts = urlsplit(ident)
            match = re.match(r"^/([^/]+)/([^/]+)/(?:blob|raw)/(.+)$", parts.path, re.S)
            if ref.scheme != "https" or (parts.hostname or "").lower() not in (
                    "github.com", "www.github.com") or "@" in parts.netloc or not match:
                return None
            owner, repo, rest = match.groups()
            form = "web"
    rest, query = re.match(r"^([^?#]*)(.*)$", rest, re.S).groups()  # type: ignore[union-attr]
    if form == "web":
        query = ""
    gitref, path = _split_ref(rest)
    shown = ref.display
    folder = form == "github" and rest.endswith("/") and bool(gitref)
    if folder:
        path = path[:-1] if path.endswith("/") else path  # "": the repository's root
    if not (is_name(owner) and is_name(repo) and is_ref(gitref)) or (
            not path and not folder):
        raise UsageError(f"{shown!r} does not name a file in a repository",
                         hint=f"write {_FORM} or {RAW_HOST}/owner/repo/<commit>/path",
                         identifier=shown)
    if path and any(s in ("", ".", "..") for s in path.split("/")) \
            or re.search(r"\\|%2f|%5c", path, re.I):
        # an empty segment (or a leading '/') is resolved differently by raw hosts and
        # could name another file than the pinned path
        raise UsageError(f"{shown!r}: the path must name a file inside the repository",
                         hint=f"write {_FORM} (no empty, '.' or '..' segments, no encoded or "
                              "back slashes)", identifier=shown)
    return Location(owner, repo, gitref, path, form, query, folder)


def _split_ref(rest: str) -> tuple[str, str]:
    """``REF/path`` -> (REF, path); ``refs/heads/NAME/path`` -> (``heads/NAME``, path)."""
    if rest.startswith(("refs/heads/", "refs/tags/")):
        parts = rest.split("/", 3)
        return (f"{parts[1]}/{parts[2]}", parts[3]) if len(parts) == 4 else ("", "")
    gitref, _, path = rest.partition("/")
    return gitref, path


class _InRepository(Remote):
    """What every Remote of this backend holds: the location, GitHub's hosts, and whether
    its bytes are fetched with no credential (a shared daemon serves only those to anyone)."""

    def __init__(self, loc: Location, gh: GitHub, *, credentialed: bool):
        self.loc = loc
        self.gh = gh
        self.context = gh.context
        self.credentialed = credentialed
        # the token goes with every request to GitHub's hosts, public repositories' too
        self.anonymous = gh.config.token is None and not credentialed


# -- a branch, tag or short SHA: looked up, then refused or pinned ---------------------


class GitHubRef(_InRepository):
    """A file at a ref that must be looked up: a branch, a tag, a short SHA."""

    movable = True

    def __init__(self, loc: Location, gh: GitHub, *, display: str, key: str,
                 credentialed: bool):
        super().__init__(loc, gh, credentialed=credentialed)
        self.display = display
        self.cache_key = key

    def at(self, commit: str) -> Remote:
        """The Remote of this file (or folder) at ``commit`` (a file's identifier: the raw
        URL there)."""
        return at_commit(self.loc, commit, self.gh, credentialed=self.credentialed)

    async def pin(self, *, allow: bool, offline: bool) -> Remote:
        """Look the ref up (``GET /repos/{owner}/{repo}/commits/{ref}``); refuse or pin it.

        A short SHA that expands to a commit starting with it is pinned
        whatever ``allow`` says: it names that commit, not something that moves.
        """
        loc, shown = self.loc, self.display
        short = _SHORT.match(loc.ref) is not None
        ls_remote = f"`git ls-remote {WEB_HOST}/{loc.owner}/{loc.repo} {loc.name}`"
        form = f"{self.gh.config.raw}/{loc.owner}/{loc.repo}/<commit>/{loc.path}"
        if offline:
            if short:
                raise OfflineMiss(f"{shown}: the short commit id {loc.ref!r} must be expanded "
                                  "through GitHub's API, and offline mode is on",
                                  hint="write the full 40-hex commit (`git rev-parse "
                                       f"{loc.ref}` prints it)", identifier=shown)
            if not allow:
                raise NotPermanent(f"{shown} names {loc.what}, which can change later; offline, "
                                   "its commit cannot be looked up", hint=f"pin a commit: "
                                   f"{ls_remote} prints it; then use {form}", identifier=shown)
            raise OfflineMiss(f"{shown}: offline, {loc.what} cannot be looked up to pin it",
                              hint="run once online with --pin, then use the pinned identifier "
                                   "it prints", identifier=shown)
        try:
            # only a courtesy when refusing: no retries for it
            commit = await self.gh.commit_for(loc.owner, loc.repo, loc.ref, shown,
                                              retry=allow or short)
        except NotFound:
            raise
        except HostkitError as exc:
            if allow or short:
                raise
            why = exc.message.removeprefix(f"{shown}: ")
            raise NotPermanent(f"{shown} names {loc.what}, which can change later (its commit "
                               f"could not be looked up: {why})",
                               hint=f"pin a commit: {ls_remote} prints it; then use {form}",
                               identifier=shown) from None
        pinned = self.at(commit)
        if short and commit.startswith(loc.ref.lower()):
            return pinned
        if not allow:
            raise NotPermanent(
                f"{shown} names {loc.what}, which can change later; it is at commit "
                f"{commit} now: {pinned.display}",
                hint=f"use {pinned.display} (it always names these bytes), or pass --pin to "
                     "resolve it and record that pinned identifier",
                identifier=shown, suggestion=pinned.display)
        log.info("%s: %s is at commit %s", shown, loc.what, commit)
        return pinned

    async def stat(self) -> RemoteInfo:
        """The pinned file's metadata (a short SHA), or NotPermanent (a branch or tag)."""
        pinned = await self.pin(allow=False, offline=self.context.settings.offline)
        return await pinned.stat()

    @contextlib.asynccontextmanager
    async def open(self, offset: int = 0, validator: str | None = None):
        """As :meth:`stat`: a short SHA's bytes, or NotPermanent."""
        pinned = await self.pin(allow=False, offline=self.context.settings.offline)
        async with pinned.open(offset, validator) as body:
            yield body


# -- a folder at a commit --------------------------------------------------------------


class GitHubTreeRemote(_InRepository):
    """A folder at one commit (immutable): its files, listed by the git trees API, each
    fetched as its own raw URL (Git LFS objects included)."""

    tree = True
    immutable = True

    def __init__(self, loc: Location, commit: str, gh: GitHub, *, credentialed: bool):
        super().__init__(loc, gh, credentialed=credentialed)
        self.commit = commit
        self.folder = unquote(loc.path)
        inside = f"{loc.path}/" if loc.path else ""
        self.display = f"github:{loc.owner}/{loc.repo}@{commit}/{inside}"
        # the raw host's URL of the folder: unique per endpoint, never a file's key
        self.cache_key = url_cache_key(f"{gh.config.raw}/{loc.owner}/{loc.repo}/{commit}/"
                                       f"{inside}")

    async def list(self):  # type: ignore[override]  # an async generator
        """``GET /repos/{o}/{r}/git/trees/{commit}?recursive=1``: the files under the folder.

        One call lists the whole commit (GitHub truncates past 100,000 entries or
        7 MB: refused then). A symbolic link is refused (hostkit places files only),
        a submodule skipped (it is another repository).
        """
        loc, shown = self.loc, self.display
        url = self.gh.repo_url(loc.owner, loc.repo, f"/git/trees/{self.commit}?recursive=1")
        # the resolver retries a listing: one try here
        answer = await self.gh.call("GET", url, display=shown, retry=False)
        if answer.status in (404, 422, 409):
            raise NotFound(f"{shown}: {loc.owner}/{loc.repo} has no commit {self.commit} (or "
                           "the repository is private and no token may read it)",
                           hint=self.gh.config.token_hint(), identifier=shown)
        if answer.status != 200:
            raise self.gh.refused(answer, shown)
        data = answer.json(shown)
        items = data.get("tree") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise BackendError(f"{shown}: GitHub's tree listing has no 'tree'",
                               hint="check the api_url setting", identifier=shown)
        if data.get("truncated"):
            raise BackendError(f"{shown}: GitHub truncated the listing of commit "
                               f"{self.commit} (over 100,000 entries or 7 MB)",
                               hint="clone the repository at that commit instead",
                               identifier=shown)
        prefix = f"{self.folder}/" if self.folder else ""
        found = not prefix
        for item in items:
            path = item.get("path") if isinstance(item, dict) else None
            if not isinstance(path, str):
                raise BackendError(f"{shown}: GitHub's tree listing holds an entry without "
                                   "a path", hint="check the api_url setting", identifier=shown)
            kind = item.get("type")
            if path == self.folder and kind == "tree":
                found = True
            if not path.startswith(prefix) or kind != "blob":
                continue  # elsewhere, a folder, or a submodule (another repository)
            found = True
            if item.get("mode") == "120000":
                from hostkit.store.snapshots import unsafe

                raise unsafe(shown, f"{path[len(prefix):]!r} is a symbolic link (hostkit "
                                    "places files only)")
            size = item.get("size")
            file_loc = Location(loc.owner, loc.repo, self.commit, quote_path(path), "github")
            yield TreeEntry(path[len(prefix):],
                            GitHubRemote(file_loc, self.commit, self.gh,
                                         credentialed=self.credentialed),
                            # a small file may be a Git LFS pointer: its object's size differs
                            size=size if isinstance(size, int) and size >= POINTER_MAX
                            else None, validator=item.get("sha") or None)
        if not found:
            raise NotFound(f"{shown}: there is no folder {self.folder!r} at commit "
                           f"{self.commit}", hint="check the path (it is case-sensitive)",
                           identifier=shown)


# -- a file at a commit ----------------------------------------------------------------


@dataclass(frozen=True)
class Pointer:
    """A Git LFS pointer: the object's sha256 and size."""

    oid: str
    size: int

    @property
    def validator(self) -> str:
        """A strong validator naming the object's exact bytes."""
        return _LFS_VALIDATOR + self.oid


def parse_pointer(data: bytes, display: str) -> Pointer | None:
    """The Pointer ``data`` is, or None when it is not one (any file but a pointer).

    :raises BackendError: a small file starting with the LFS spec line that is not a
        valid pointer.
    """
    if len(data) >= POINTER_MAX or not data.startswith(LFS_VERSION):
        return None
    fields: dict[str, str] = {}
    with contextlib.suppress(UnicodeDecodeError, ValueError):
        fields = dict(line.split(" ", 1) for line in data.decode("ascii").splitlines() if line)
    oid, size = fields.get("oid", ""), fields.get("size", "")
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", oid) or not size.isdigit():
        raise BackendError(f"{display} starts like a Git LFS pointer but is not one (no "
                           "'oid sha256:<64 hex>' and 'size N' lines)",
                           hint="tell the repository's owner: the file is damaged",
                           identifier=display)
    return Pointer(oid[len("sha256:"):], int(size))


class GitHubRemote(_InRepository):
    """One file at one commit: immutable. Its Git LFS object when the raw file is a pointer."""

    immutable = True

    def __init__(self, loc: Location, commit: str, gh: GitHub, *, credentialed: bool):
        super().__init__(loc, gh, credentialed=credentialed)
        self.commit = commit
        self.config: GitHubConfig = gh.config
        #: what is requested (the query may hold a credential: never shown or stored)
        self.url = f"{self.config.raw}/{loc.owner}/{loc.repo}/{commit}/{loc.path}{loc.query}"
        self.cache_key = url_cache_key(self.url)
        #: every form is shown as what is fetched, the raw URL at the commit: the pinned
        #: identifier any downloader (MedPerf's too) can use
        self.display = redact_url(self.url)

    async def stat(self) -> RemoteInfo:
        """A HEAD of the raw file; a small one is read, and if it is an LFS pointer its
        object is looked up (its size and sha256, no bytes of it)."""
        async with self.gh.head(self.url, display=self.display) as resp:
            if resp.status != 200:
                raise self._refused(resp.status, resp.headers)
            info = _raw_info(resp.headers, resp.content_length)
        if info.size is not None and info.size >= POINTER_MAX:
            return info
        async with contextlib.AsyncExitStack() as stack:
            got = await self._raw(stack, 0, None)
        if isinstance(got, Pointer):
            await self.gh.lfs_download(self.loc.owner, self.loc.repo, got.oid, got.size,
                                       self.display)
            return _lfs_info(got)
        return info

    @contextlib.asynccontextmanager
    async def open(self, offset: int = 0, validator: str | None = None):
        """The raw file from ``offset`` (``If-Range``: the validator), or its LFS object.

        A raw answer from byte 0 that is small is read first: an LFS pointer is
        replaced by its object (from ``offset`` when the validator names that
        object), anything else is streamed on, its first bytes included.
        """
        lfs_resume = bool(validator and validator.startswith(_LFS_VALIDATOR))
        if lfs_resume or not strong_validator(validator):
            start, if_range = 0, None
        else:
            start, if_range = offset, validator
        async with contextlib.AsyncExitStack() as stack:
            got = await self._raw(stack, start, if_range)
            if isinstance(got, Pointer):
                await stack.aclose()  # the pointer is read: its answer is done with
                got = await self._lfs_body(stack, got, offset if lfs_resume
                                           and validator == got.validator else 0)
            yield got

    async def _raw(self, stack: contextlib.AsyncExitStack, offset: int,
                   if_range: str | None) -> Body | Pointer:
        try:
            ranged = await stack.enter_async_context(self.gh.open_bytes(
                self.url, offset, display=self.display, credentials=self.config.auth,
                if_range=if_range))
        except HttpStatus as exc:
            raise self._refused(exc.status, exc.headers) from None
        headers = ranged.response.headers
        info = _raw_info(headers, ranged.total)
        if ranged.start or (ranged.total or 0) >= POINTER_MAX:
            return Body(info, ranged.start, self._chunks(ranged.chunks()))
        head = await self._read_head(ranged)
        pointer = parse_pointer(head, self.display)
        if pointer is None:
            return Body(info, 0, self._chunks(_prefixed(head, ranged.chunks())))
        log.info("%s is a Git LFS pointer (sha256:%s, %d bytes)", self.display, pointer.oid,
                 pointer.size)
        return pointer

    async def _read_head(self, ranged) -> bytes:
        """Up to POINTER_MAX bytes of the answer (all of a pointer, the start of any file)."""
        try:
            return await read_body(ranged.response, POINTER_MAX - 1)
        except Exception as exc:
            raise self._network_error(exc) from None

    async def _lfs_body(self, stack: contextlib.AsyncExitStack, pointer: Pointer,
                        offset: int) -> Body:
        """The pointer's object from the LFS storage, checked against its size (and, by the
        resolver, against its sha256: advertised as a digest)."""
        href, headers = await self.gh.lfs_download(self.loc.owner, self.loc.repo, pointer.oid,
                                                   pointer.size, self.display)
        storage = origin(href)
        host = urlsplit(href).netloc.rpartition("@")[2]

        def credentials(url: str) -> dict[str, str]:
            # the batch answer's headers are for its storage host only; the token never
            return headers if origin(url) == storage else {}

        try:
            ranged = await stack.enter_async_context(self.gh.open_bytes(
                href, offset, display=self.display, credentials=credentials, encoded=True,
                where=f"the LFS storage {host}"))
        except HttpStatus as exc:
            raise self._lfs_refused(exc, pointer, host) from None
        if ranged.total is not None and ranged.total != pointer.size:
            raise self._not_the_object(pointer, f"{ranged.total} bytes")
        return Body(_lfs_info(pointer), ranged.start,
                    self._chunks(self._at_most(ranged.chunks(), pointer, ranged.start)))

    async def _at_most(self, chunks, pointer: Pointer, start: int):
        got = start
        async for chunk in chunks:
            got += len(chunk)
            if got > pointer.size:
                raise self._not_the_object(pointer, f"more than {pointer.size} bytes")
            yield chunk

    def _not_the_object(self, pointer: Pointer, found: str) -> HashMismatch:
        return HashMismatch(self.display, f"sha256:{pointer.oid} ({pointer.size} bytes, the "
                            "Git LFS pointer's)", found,
                            hint="the LFS storage served other bytes than the pointer names; "
                                 "tell the repository's owner")

    async def _chunks(self, chunks):
        try:
            async for chunk in chunks:
                yield chunk
        except HostkitError:
            raise
        except Exception as exc:
            raise self._network_error(exc) from None

    def _network_error(self, exc: BaseException) -> HostkitError:
        return network_error(exc, self.display) or TransientError(
            f"{self.display}: the download failed ({type(exc).__name__})", hint="try again",
            identifier=self.display)

    def _refused(self, status: int, headers) -> HostkitError:
        """The error for a raw host's answer that is not the file."""
        loc = self.loc
        where = f"{WEB_HOST}/{loc.owner}/{loc.repo}/tree/{self.commit}"
        hint = self.config.token_hint()
        texts = {
            "not_found": (f"not found ({{status}}): {loc.owner}/{loc.repo} has no such file at "
                          f"commit {self.commit}, or GitHub does not show the repository",
                          f"check the commit and the path ({where}); {hint}"),
            "credentials": ("access refused ({status})", hint),
            "other": ("the raw host answered {status} {reason}",
                      "check the raw_url setting; run with -v for details"),
        }
        return status_error(status, self.display, texts=texts,
                            credentials_sent=not self.anonymous,
                            retry_after=retry_after(headers))

    def _lfs_refused(self, exc: HttpStatus, pointer: Pointer, host: str) -> HostkitError:
        where = f"the LFS storage {host} answered {exc.status}"
        if exc.status in (401, 403):
            # a download link that expired: the next try asks the LFS server for a fresh one
            return TransientError(f"{self.display}: {where} (the download link was refused "
                                  "or expired)", hint="try again",
                                  identifier=self.display)
        return status_error(exc.status, self.display, texts={
            "not_found": (f"{where}: it lost the Git LFS object sha256:{pointer.oid}",
                          "tell the repository's owner"),
            "busy": (where, "the LFS storage is busy or failing; try again later"),
            "changed": (where, "try again"),
            "other": (where, "try again later")}, retry_after=retry_after(exc.headers))


def _raw_info(headers, size: int | None) -> RemoteInfo:
    etag = headers.get("ETag")
    return RemoteInfo(size=size, validator=etag or None, immutable=True,
                      content_type=headers.get("Content-Type"))


def _lfs_info(pointer: Pointer) -> RemoteInfo:
    return RemoteInfo(size=pointer.size, validator=pointer.validator,
                      digests={"sha256": pointer.oid}, immutable=True)


async def _prefixed(head: bytes, chunks):
    if head:
        yield head
    async for chunk in chunks:
        yield chunk

