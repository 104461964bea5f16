"""A GitHub stand-in for the tests: the REST API, the raw host and the Git LFS batch API,
plus a second host (a CDN, the LFS storage) that records every Authorization it receives.

Real aiohttp servers on 127.0.0.1, in a thread of their own (like tests/origin.py):

    site "api" (port A)   GET  /api/repos/{o}/{r}                       default branch
                          GET  /api/repos/{o}/{r}/commits/{ref}          a branch, tag, heads/X,
                               tags/X, full or short SHA -> the commit (vnd.github.sha or JSON)
                          GET  /api/repos/{o}/{r}/contents/{path}?ref=   file JSON (blob sha)
                          GET  /api/repos/{o}/{r}/git/trees/{commit}?recursive=1   the
                               commit's tree (folders "tree", files "blob"; :attr:`Repo.modes`)
                          PUT  /api/repos/{o}/{r}/contents/{path}        commit a file (base64)
                          POST /lfs/{o}/{r}.git/info/lfs/objects/batch  where an LFS object is
    site "raw" (port B)   GET/HEAD /raw/{o}/{r}/{ref}/{path}             the bytes (Range, ETag)
    site "cdn" (port C)   GET/HEAD /cdn/{sha256}                         a raw redirect's target
                          GET  /lfs-objects/{oid}                        LFS objects (needs the
                               batch answer's header)

Data-driven: :attr:`GitHubStandin.repos` maps ``"owner/repo"`` to a :class:`Repo`
(commits -> files, branches, tags, private or not). Private repositories answer 404
to anyone without :data:`TOKEN` (``Bearer``/``token`` for the API and raw host,
Git's ``Basic`` for LFS), as GitHub does; a wrong token gets 401 from the API.
:meth:`GitHubStandin.fail` makes a site answer with a status and headers (rate
limits) a number of times. Every request is recorded in :attr:`GitHubStandin.hits`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field

from aiohttp import web

from tests.origin import _send

TOKEN = "ghp_StandinToken0123456789abcdefABCDEF01"
LFS_SPEC = "version https://git-lfs.github.com/spec/v1"


def blob_sha(data: bytes) -> str:
    """Git's blob id of ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def pointer_for(data: bytes) -> bytes:
    """The Git LFS pointer file of ``data``."""
    return (f"{LFS_SPEC}\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
            f"size {len(data)}\n").encode()


@dataclass
class Repo:
    """One repository: commits (sha -> {path: bytes}), branches and tags (name -> sha)."""

    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    private: bool = False
    default_branch: str = "main"
    #: git file modes other than 100644 (``"120000"``: a symbolic link), by path
    modes: dict[str, str] = field(default_factory=dict)

    def resolve(self, ref: str) -> str | None:
        """The commit a ref names, as GitHub's commits endpoint finds it."""
        if ref.startswith("heads/"):
            return self.branches.get(ref[6:])
        if ref.startswith("tags/"):
            return self.tags.get(ref[5:])
        if ref in self.commits:
            return ref
        if ref in self.branches:
            return self.branches[ref]
        if ref in self.tags:
            return self.tags[ref]
        if len(ref) >= 7:
            found = [c for c in self.commits if c.startswith(ref.lower())]
            if len(found) == 1:
                return found[0]
        return None


@dataclass
class Hit:
    """One request a site saw."""

    site: str
    method: str
    path: str
    authorization: str | None
    range: str | None
    at: float


@dataclass
class Failure:
    site: str
    status: int
    headers: dict[str, str]
    times: int
    message: str = "API rate limit exceeded"
    #: sent instead of the JSON message (a web page, a huge answer), as ``content_type``
    body: bytes | None = None
    content_type: str = "application/json"


@dataclass
class GitHubStandin:
    """The stand-in's data and request log, shared with the server thread."""

    repos: dict[str, Repo] = field(default_factory=dict)
    #: LFS objects the storage host serves, by oid (a test may change the bytes)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)
    #: (owner/repo, path) whose raw answers redirect to the CDN host
    redirects: set[tuple[str, str]] = field(default_factory=set)
    #: LFS objects whose first download is cut after 40% (then served normally)
    cut_once: set[str] = field(default_factory=set)
    #: the download link the LFS batch answer gives for an oid instead of the storage's
    lfs_hrefs: dict[str, str] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    hits: list[Hit] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)
    _cdn: dict[str, bytes] = field(default_factory=dict)
    _counter: int = 0

    @property
    def api_url(self) -> str:
        return self.urls["api"] + "/api"

    @property
    def raw_url(self) -> str:
        return self.urls["raw"] + "/raw"

    @property
    def lfs_url(self) -> str:
        return self.urls["api"] + "/lfs"

    def reset(self) -> None:
        """Forget every repository, object, failure and hit."""
        self.repos.clear()
        self.lfs_objects.clear()
        self.redirects.clear()
        self.cut_once.clear()
        self.lfs_hrefs.clear()
        self.failures.clear()
        self.hits.clear()
        self._cdn.clear()

    # -- data -------------------------------------------------------------------------

    def commit(self, name: str, files: dict[str, bytes], *, branch: str = "main",
               private: bool = False) -> str:
        """Commit ``files`` on top of ``branch`` (creating the repository); return the sha."""
        repo = self.repos.setdefault(name, Repo(private=private))
        parent = repo.branches.get(branch)
        tree = {**(repo.commits[parent] if parent else {}), **files}
        self._counter += 1
        sha = hashlib.sha1(f"{name}{self._counter}{sorted(tree)}".encode()).hexdigest()
        repo.commits[sha] = tree
        repo.branches[branch] = sha
        return sha

    def tag(self, name: str, tag: str, commit: str) -> None:
        """Tag ``commit``."""
        self.repos[name].tags[tag] = commit

    def lfs(self, data: bytes) -> bytes:
        """Store ``data`` as an LFS object; return its pointer file (to commit)."""
        self.lfs_objects[hashlib.sha256(data).hexdigest()] = data
        return pointer_for(data)

    def fail(self, site: str, status: int, headers: dict[str, str], times: int = 1,
             message: str = "API rate limit exceeded", *, body: bytes | None = None,
             content_type: str = "application/json") -> None:
        """Make ``site`` (api, raw, lfs, cdn) answer ``status`` with ``headers`` ``times`` times
        (a JSON body whose ``message`` is ``message``, or ``body`` as ``content_type``)."""
        self.failures.append(Failure(site, status, headers, times, message, body,
                                     content_type))

    def seen(self, site: str, method: str | None = None) -> list[Hit]:
        """The requests ``site`` saw (of ``method``)."""
        return [h for h in self.hits if h.site == site and method in (None, h.method)]

    # -- access -----------------------------------------------------------------------

    @staticmethod
    def _bearer_ok(request) -> bool | None:
        """True: the token; False: another credential; None: none."""
        auth = request.headers.get("Authorization")
        if auth is None:
            return None
        return auth in (f"Bearer {TOKEN}", f"token {TOKEN}")

    @staticmethod
    def _basic_ok(request) -> bool:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return False
        try:
            _, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return password == TOKEN


def _json(data, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def _site(state: GitHubStandin, request: web.Request) -> str:
    port = request.transport.get_extra_info("sockname")[1] if request.transport else 0
    site = next((s for s, url in state.urls.items() if url.endswith(f":{port}")), "?")
    return "lfs" if site == "api" and request.path.startswith("/lfs/") else site


def _app(state: GitHubStandin) -> web.Application:
    app = web.Application(client_max_size=200 << 20)

    @web.middleware
    async def log_and_fail(request, handler):
        site = _site(state, request)
        state.hits.append(Hit(site, request.method, request.path_qs,
                              request.headers.get("Authorization"), request.headers.get("Range"),
                              time.monotonic()))
        for failure in state.failures:
            if failure.site == site and failure.times > 0:
                failure.times -= 1
                if failure.body is not None:
                    return web.Response(body=failure.body, status=failure.status,
                                        headers=failure.headers,
                                        content_type=failure.content_type)
                return web.json_response({"message": failure.message},
                                         status=failure.status, headers=failure.headers)
        return await handler(request)

    app.middlewares.append(log_and_fail)

    def repo_for(request, *, write: bool = False) -> Repo:
        """The repository, or the answer GitHub gives (401 bad token, 404 not shown)."""
        name = f"{request.match_info['owner']}/{request.match_info['repo']}"
        token = state._bearer_ok(request)
        if token is False:
            raise web.HTTPUnauthorized(text=json.dumps({"message": "Bad credentials"}),
                                       content_type="application/json")
        if write and token is None:
            raise web.HTTPUnauthorized(text=json.dumps({"message": "Requires authentication"}),
                                       content_type="application/json")
        repo = state.repos.get(name)
        if repo is None or (repo.private and not token):
            raise web.HTTPNotFound(text=json.dumps({"message": "Not Found"}),
                                   content_type="application/json")
        return repo

    async def repo_info(request):
        repo = repo_for(request)
        return _json({"full_name": f"{request.match_info['owner']}/{request.match_info['repo']}",
                      "private": repo.private, "default_branch": repo.default_branch})

    async def commits(request):
        repo = repo_for(request)
        ref = request.match_info["ref"]
        commit = repo.resolve(ref)
        if commit is None:
            return _json({"message": f"No commit found for SHA: {ref}"}, 422)
        if "application/vnd.github.sha" in request.headers.get("Accept", ""):
            return web.Response(text=commit, content_type="application/vnd.github.sha")
        return _json({"sha": commit})

    async def contents(request):
        repo = repo_for(request)
        path = request.match_info["path"]
        ref = request.query.get("ref") or repo.default_branch
        commit = repo.resolve(ref)
        if commit is None:
            return _json({"message": f"No commit found for the ref {ref}"}, 404)
        tree = repo.commits[commit]
        if path in tree:
            data = tree[path]
            return _json({"type": "file", "name": path.rsplit("/", 1)[-1], "path": path,
                          "sha": blob_sha(data), "size": len(data),
                          "encoding": "base64", "content": base64.b64encode(data).decode()})
        inside = sorted(p for p in tree if p.startswith(path + "/"))
        if inside:
            return _json([{"type": "file", "path": p, "sha": blob_sha(tree[p])} for p in inside])
        return _json({"message": "Not Found"}, 404)

    async def git_tree(request):
        repo = repo_for(request)
        commit = repo.resolve(request.match_info["sha"])
        if commit is None:
            return _json({"message": "Not Found"}, 404)
        files = repo.commits[commit]
        if request.query.get("recursive") not in ("1", "true"):
            return _json({"message": "only recursive listings are modelled"}, 422)
        folders = {"/".join(p.split("/")[:n]) for p in files for n in range(1, p.count("/") + 1)}
        tree = [{"path": d, "mode": "040000", "type": "tree", "sha": "0" * 40}
                for d in folders] + [
            {"path": p, "mode": repo.modes.get(p, "100644"), "type": "blob",
             "sha": blob_sha(data), "size": len(data)} for p, data in files.items()]
        return _json({"sha": commit, "tree": sorted(tree, key=lambda t: t["path"]),
                      "truncated": False})

    async def put_contents(request):
        repo = repo_for(request, write=True)
        name = f"{request.match_info['owner']}/{request.match_info['repo']}"
        path = request.match_info["path"]
        try:
            body = json.loads(await request.read())
            data = base64.b64decode(body["content"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            return _json({"message": "Problems parsing JSON"}, 400)
        branch = body.get("branch") or repo.default_branch
        head = repo.branches.get(branch)
        if head is None:
            return _json({"message": f"Branch {branch} not found"}, 422)
        current = repo.commits[head].get(path)
        if current is not None and "sha" not in body:
            return _json({"message": 'Invalid request.\n\n"sha" wasn\'t supplied.'}, 422)
        if "sha" in body and (current is None or body["sha"] != blob_sha(current)):
            return _json({"message": f"{path} does not match {body['sha']}"}, 409)
        commit = state.commit(name, {path: data}, branch=branch)
        return _json({"content": {"name": path.rsplit("/", 1)[-1], "path": path,
                                  "sha": blob_sha(data), "size": len(data)},
                      "commit": {"sha": commit, "message": body.get("message")}},
                     201 if current is None else 200)

    async def raw(request):
        name = f"{request.match_info['owner']}/{request.match_info['repo']}"
        repo = state.repos.get(name)
        token = state._bearer_ok(request)
        if repo is None or (repo.private and not token):
            raise web.HTTPNotFound(text="404: Not Found")
        commit = repo.resolve(request.match_info["ref"])
        path = request.match_info["path"]
        if commit is None or path not in repo.commits[commit]:
            raise web.HTTPNotFound(text="404: Not Found")
        data = repo.commits[commit][path]
        if (name, path) in state.redirects:
            sha = hashlib.sha256(data).hexdigest()
            state._cdn[sha] = data
            raise web.HTTPFound(f"{state.urls['cdn']}/cdn/{sha}")
        return await _send(request, data)

    async def lfs_batch(request):
        name = f"{request.match_info['owner']}/{request.match_info['repo']}"
        repo = state.repos.get(name)
        if repo is not None and repo.private and not state._basic_ok(request):
            return _json({"message": "Repository not found"}, 404)
        if repo is None:
            return _json({"message": "Repository not found"}, 404)
        body = json.loads(await request.read())
        if body.get("operation") != "download":
            return _json({"message": "download only"}, 422)
        objects = []
        for obj in body.get("objects", []):
            oid = obj.get("oid")
            if oid in state.lfs_objects:
                objects.append({"oid": oid, "size": obj.get("size"), "authenticated": True,
                                "actions": {"download": {
                                    "href": state.lfs_hrefs.get(
                                        oid, f"{state.urls['cdn']}/lfs-objects/{oid}"),
                                    "header": {"Authorization": f"RemoteAuth ticket-{oid[:8]}"},
                                    "expires_in": 3600}}})
            else:
                objects.append({"oid": oid, "size": obj.get("size"),
                                "error": {"code": 404, "message": "Object does not exist"}})
        return web.json_response({"transfer": "basic", "objects": objects},
                                 content_type="application/vnd.git-lfs+json")

    async def cdn(request):
        data = state._cdn.get(request.match_info["sha"])
        if data is None:
            raise web.HTTPNotFound()
        return await _send(request, data)

    async def lfs_object(request):
        oid = request.match_info["oid"]
        if request.headers.get("Authorization") != f"RemoteAuth ticket-{oid[:8]}":
            raise web.HTTPForbidden(text="no ticket")
        data = state.lfs_objects.get(oid)
        if data is None:
            raise web.HTTPNotFound()
        if oid in state.cut_once and request.method == "GET":
            state.cut_once.discard(oid)
            return await _send(request, data, reset_at=int(len(data) * 0.4))
        return await _send(request, data)

    repo_path = "/api/repos/{owner}/{repo}"
    app.router.add_get(repo_path, repo_info)
    app.router.add_get(repo_path + "/commits/{ref:.+}", commits)
    app.router.add_get(repo_path + "/contents/{path:.+}", contents)
    app.router.add_get(repo_path + "/git/trees/{sha}", git_tree)
    app.router.add_put(repo_path + "/contents/{path:.+}", put_contents)
    app.router.add_route("GET", "/raw/{owner}/{repo}/{ref}/{path:.+}", raw)
    app.router.add_route("HEAD", "/raw/{owner}/{repo}/{ref}/{path:.+}", raw)
    app.router.add_post("/lfs/{owner}/{repo:[^/]+}.git/info/lfs/objects/batch", lfs_batch)
    app.router.add_route("GET", "/cdn/{sha}", cdn)
    app.router.add_route("HEAD", "/cdn/{sha}", cdn)
    app.router.add_get("/lfs-objects/{oid}", lfs_object)
    return app


class GitHubServer:
    """Runs a :class:`GitHubStandin` on three loopback ports (api, raw, cdn) in a thread."""

    def __init__(self):
        self.standin = GitHubStandin()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(_app(self.standin), access_log=None)
        self._loop.run_until_complete(runner.setup())
        for site in ("api", "raw", "cdn"):
            tcp = web.TCPSite(runner, "127.0.0.1", 0)
            self._loop.run_until_complete(tcp.start())
            port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.standin.urls[site] = f"http://127.0.0.1:{port}"
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def start(self) -> GitHubStandin:
        """Start serving; return the stand-in (its URLs set)."""
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the GitHub stand-in did not start within 10 s")
        return self.standin

    def stop(self) -> None:
        """Stop serving and join the thread."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
