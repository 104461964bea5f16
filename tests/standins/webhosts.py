"""HTTPS stand-ins for the public hosts authors link to, under their real names (tests only).

One aiohttp app on 127.0.0.1 serves every name below over TLS, with a
certificate from a throwaway CA (``trustme``). hostkit reaches it through
``HOSTKIT_RESOLVE`` (each ``host:443`` sent to ``127.0.0.1:PORT``) with
``SSL_CERT_FILE`` naming the CA, so URLs, ``Host`` headers, SNI and certificate
checks all carry the real host names. What each host answers (``files``: name ->
bytes; a Drive id is a file's name):

    files.example.org         /f/NAME: the file (Range: bytes=A-B, bytes=A-); /page: an HTML
                              page; /login: a 200 HTML login form; /private/NAME: 401
    www.dropbox.com           /s/KEY/NAME: the share page; with dl=1 or raw=1 a 302 to
                              dl.dropboxusercontent.com/s/KEY/NAME (the file)
    drive.google.com          /file/d/ID/view, /open?id=ID, /uc?export=view&id=ID: a page;
                              /uc?export=download&id=ID (or /uc?id=ID): a 303 to
                              drive.usercontent.google.com/download?id=ID (the file), or for an
                              ID in ``big`` the virus-scan confirmation page
    1drv.ms, onedrive.live.com, contoso.sharepoint.com   pages (1drv.ms redirects first)
    github.com                /OWNER/REPO/blob/REF/PATH: GitHub's HTML page
    raw.githubusercontent.com /OWNER/REPO/REF/PATH: the file named by PATH's last segment (for
                              a name in ``lfs``, its Git LFS pointer)
    media.githubusercontent.com /media/OWNER/REPO/REF/PATH: the LFS object named so (``lfs``)
    api.github.com            /repos/OWNER/REPO/commits/REF: the commit ``commits[REF]`` names

Every request is logged (host, method, path, Range, Authorization).
"""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from tests.standins.github import pointer_for

HOSTS = ("files.example.org", "www.dropbox.com", "dl.dropboxusercontent.com",
         "drive.google.com", "drive.usercontent.google.com", "1drv.ms", "onedrive.live.com",
         "contoso.sharepoint.com", "github.com", "raw.githubusercontent.com", "api.github.com",
         "media.githubusercontent.com")
PAGE = "<!DOCTYPE html><html><head><title>{title}</title></head><body>{body}</body></html>"
LOGIN = ('<form action="/session" method="post"><input name="login">'
         '<input type="password" name="password"><button>Sign in</button></form>')


@dataclass
class Hit:
    """One request a stand-in host saw."""

    host: str
    method: str
    path: str
    range: str | None
    authorization: str | None


@dataclass
class WebHosts:
    """Files, Drive ids too big to skip the virus-scan page, and the request log."""

    files: dict[str, bytes] = field(default_factory=dict)
    big: set[str] = field(default_factory=set)
    #: Git LFS objects by name: the raw host serves their pointers, the media host the bytes
    lfs: dict[str, bytes] = field(default_factory=dict)
    #: branch or tag -> the 40-hex commit it names now (GitHub's API answers these)
    commits: dict[str, str] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    port: int = 0
    ca_file: Path | None = None

    def env(self) -> dict[str, str]:
        """The environment that points hostkit (and its TLS checks) at the stand-in."""
        return {"HOSTKIT_RESOLVE": ",".join(f"{h}:443:127.0.0.1:{self.port}" for h in HOSTS),
                "SSL_CERT_FILE": str(self.ca_file)}

    def seen(self, host: str) -> list[Hit]:
        """Requests to ``host``."""
        return [h for h in self.hits if h.host == host]


def _page(title: str, body: str = "") -> web.Response:
    return web.Response(text=PAGE.format(title=title, body=body or title),
                        content_type="text/html")


def _send(request: web.Request, data: bytes) -> web.Response:
    """The file, honouring ``Range: bytes=A-B`` and ``bytes=A-`` as a CDN does."""
    headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
               "ETag": f'"{len(data)}-{hash(data) & 0xffffff:x}"'}
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("Range", ""))
    if match and int(match.group(1)) < len(data):
        start = int(match.group(1))
        end = min(int(match.group(2)), len(data) - 1) if match.group(2) else len(data) - 1
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return web.Response(status=206, body=data[start:end + 1], headers=headers)
    return web.Response(body=data, headers=headers)


def _app(hosts: WebHosts) -> web.Application:
    app = web.Application()

    async def route(request: web.Request) -> web.StreamResponse:
        host = (request.host or "").rsplit(":", 1)[0].lower()
        hosts.hits.append(Hit(host, request.method, request.path_qs,
                              request.headers.get("Range"),
                              request.headers.get("Authorization")))
        path, query = request.path, request.query

        def file(name: str) -> web.StreamResponse:
            data = hosts.files.get(name)
            return _send(request, data) if data is not None else web.Response(status=404)

        if host == "files.example.org":
            if path.startswith("/f/"):
                return file(path[3:])
            if path == "/page":
                return _page("Welcome", "Our models")
            if path == "/login":
                return _page("Sign in", LOGIN)
            if path.startswith("/private/"):
                return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="x"'})
        if host == "www.dropbox.com" and (m := re.fullmatch(r"/s/(\w+)/(.+)", path)):
            if query.get("dl") == "1" or query.get("raw") == "1":  # both the file itself
                raise web.HTTPFound(f"https://dl.dropboxusercontent.com/s/{m[1]}/{m[2]}")
            return _page(f"{m[2]} - Dropbox", "Download")
        if host == "dl.dropboxusercontent.com" and (m := re.fullmatch(r"/s/\w+/(.+)", path)):
            return file(m[1])
        if host == "drive.google.com":
            if re.fullmatch(r"/file/d/[\w-]+/view", path) or path == "/open":
                return _page("model - Google Drive", "Preview")
            if path == "/uc" and query.get("export") == "view" and query.get("id"):
                return _page("model - Google Drive", "Preview")
            # no export: a download, as gdown's https://drive.google.com/uc?id=ID knows
            if path == "/uc" and query.get("export", "download") == "download" \
                    and query.get("id"):
                if query["id"] in hosts.big:
                    return _page("Google Drive - Virus scan warning",
                                 "Google Drive can't scan this file for viruses.")
                raise web.HTTPSeeOther("https://drive.usercontent.google.com/download?id="
                                       f"{query['id']}&export=download")
        if host == "drive.usercontent.google.com" and path == "/download":
            return file(query.get("id", ""))
        if host == "1drv.ms":
            raise web.HTTPMovedPermanently("https://onedrive.live.com/redir?resid=ABC%21123")
        if host in ("onedrive.live.com", "contoso.sharepoint.com"):
            return _page("OneDrive", "Sign in to see this file")
        if host == "github.com" and re.fullmatch(r"/[^/]+/[^/]+/blob/[^/]+/.+", path):
            return _page("model.bin at main", "<table><tr><td>binary</td></tr></table>")
        if host == "raw.githubusercontent.com" and (
                m := re.fullmatch(r"/[^/]+/[^/]+/[^/]+/(?:.*/)?([^/]+)", path)):
            if m[1] in hosts.lfs:
                return _send(request, pointer_for(hosts.lfs[m[1]]))
            return file(m[1])
        if host == "media.githubusercontent.com" and (
                m := re.fullmatch(r"/media/[^/]+/[^/]+/[^/]+/(?:.*/)?([^/]+)", path)):
            data = hosts.lfs.get(m[1])
            return _send(request, data) if data is not None else web.Response(status=404)
        if host == "api.github.com" and (
                m := re.fullmatch(r"/repos/[^/]+/[^/]+/commits/([^/]+)", path)):
            if m[1] in hosts.commits:
                return web.Response(text=hosts.commits[m[1]],
                                    content_type="application/vnd.github.sha")
            return web.json_response({"message": "No commit found for SHA: " + m[1]},
                                     status=422)
        return web.Response(status=404, text="not here")

    app.router.add_route("*", "/{tail:.*}", route)
    return app


class WebHostsServer:
    """Runs :class:`WebHosts` over TLS on 127.0.0.1 in a background thread."""

    def __init__(self, tmp_dir: Path):
        import ssl

        import trustme

        self.hosts = WebHosts()
        ca = trustme.CA()
        self.hosts.ca_file = tmp_dir / "standin-ca.pem"
        ca.cert_pem.write_to_path(str(self.hosts.ca_file))
        self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*HOSTS).configure_cert(self._ssl)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="webhosts")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(_app(self.hosts), access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self._ssl)
        self._loop.run_until_complete(site.start())
        self.hosts.port = runner.addresses[0][1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def start(self) -> WebHosts:
        """Start serving; return the hosts (``.port`` and ``.ca_file`` set)."""
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the web hosts stand-in did not start within 10 s")
        return self.hosts

    def stop(self) -> None:
        """Stop serving and join the thread."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
