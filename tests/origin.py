"""A real HTTP origin the tests control: an aiohttp app on a loopback port, in its own thread.

It serves files with Range/If-Range/ETag like a CDN, counts every request, and
injects faults by path prefix:

    /f/NAME              normal (ETag, Range, If-Range, HEAD)
    /noetag/NAME         no ETag/Last-Modified, no Range
    /trunc/NAME          announces the full length, sends half, closes (no Range)
    /reset-once/NAME     first GET sends 40% and resets; later GETs are normal
    /flaky/N/NAME        first N GETs answer 503, then normal
    /slow/NAME           normal, but ~64 KiB every 20 ms (for kill -9 tests)
    /ifr-ignore/NAME     like /reset-once/, but answers every Range with 206 and the
                         current ETag, ignoring If-Range (RFC 9110 allows it)
    /ifr-noetag/NAME     like /ifr-ignore/, but its 206 answers carry no ETag at all
    /trickle/NAME        8 KiB, then one byte a second (a stalled transfer)
    /redirect/N/NAME     N chained 302s, then /f/NAME
    /page                an HTML login page served as 200
    /private/NAME        401 with a WWW-Authenticate challenge
    /redirect-to/KIND    302 to a URL no client may follow: KIND ``file`` (file:///etc/passwd)
                         or ``nohost`` (http:///f)

Every hit records the Host header, so a test sending requests through the origin
as an HTTP proxy sees which host name went out.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Hit:
    """One request the origin saw."""

    method: str
    path: str
    range: str | None
    host: str | None = None


@dataclass
class Origin:
    """Files and a request log shared with the server thread."""

    files: dict[str, bytes] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    url: str = ""
    _counters: Counter = field(default_factory=Counter)

    def add(self, name: str, data: bytes) -> str:
        """Publish ``data`` as NAME; return its sha256."""
        self.files[name] = data
        return hashlib.sha256(data).hexdigest()

    def gets(self, path_part: str = "") -> list[Hit]:
        """GET requests whose path contains ``path_part``."""
        return [h for h in self.hits if h.method == "GET" and path_part in h.path]

    def requests(self, path_part: str = "") -> list[Hit]:
        """All requests whose path contains ``path_part``."""
        return [h for h in self.hits if path_part in h.path]


def _etag(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:16] + '"'


async def _send(request: web.Request, data: bytes, *, ranges=True, etag=True,
                limit: int | None = None, pace: float = 0.0, reset_at: int | None = None,
                honour_if_range=True, etag_on_206=True, trickle_after: int | None = None):
    headers = {"Content-Type": "application/octet-stream"}
    tag = _etag(data)
    if etag:
        headers["ETag"] = tag
        headers["Accept-Ranges"] = "bytes"
    start = 0
    rng = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    status = 200
    if ranges and etag and rng and (if_range is None or if_range == tag or not honour_if_range):
        match = re.match(r"bytes=(\d+)-$", rng)
        if match:
            start = int(match.group(1))
            if start >= len(data):
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            if not etag_on_206:
                del headers["ETag"]
    body = data[start:]
    headers["Content-Length"] = str(len(body))
    resp = web.StreamResponse(status=status, headers=headers)
    await resp.prepare(request)
    if request.method == "HEAD":
        return resp
    send = body if limit is None else body[:limit]
    if trickle_after is not None:
        try:
            await resp.write(send[:trickle_after])
            for i in range(trickle_after, len(send)):
                await asyncio.sleep(1.0)
                await resp.write(send[i:i + 1])
            await resp.write_eof()
        except ConnectionError:
            pass  # the client gave up on us, as it should
        return resp
    step = 65536
    for i in range(0, len(send), step):
        if reset_at is not None and i >= reset_at:
            # let the client consume what was sent: aiohttp drops buffered bytes on a reset
            await asyncio.sleep(0.2)
            request.transport.close()
            return resp
        try:
            await resp.write(send[i:i + step])
        except ConnectionError:
            return resp  # the client hung up (killed, interrupted): nothing to report
        if pace:
            await asyncio.sleep(pace)
    if limit is not None or reset_at is not None:
        request.transport.close()  # hang up early: a truncated body
        return resp
    await resp.write_eof()
    return resp


def _app(origin: Origin) -> web.Application:
    app = web.Application()

    @web.middleware
    async def log(request, handler):
        origin.hits.append(Hit(request.method, request.path, request.headers.get("Range"),
                               request.headers.get("Host")))
        return await handler(request)

    app.middlewares.append(log)

    def file(request) -> bytes:
        name = request.match_info["name"]
        if name not in origin.files:
            raise web.HTTPNotFound()
        return origin.files[name]

    async def normal(request):
        return await _send(request, file(request))

    async def noetag(request):
        return await _send(request, file(request), etag=False)

    async def trunc(request):
        data = file(request)
        return await _send(request, data, ranges=False, etag=False, limit=len(data) // 2)

    async def reset_once(request):
        data = file(request)
        key = ("reset", request.path)
        origin._counters[key] += 1
        if origin._counters[key] == 1 and request.method == "GET":
            return await _send(request, data, reset_at=int(len(data) * 0.4))
        return await _send(request, data)

    def reset_first_get(request, **options):
        data = file(request)
        key = ("reset", request.path)
        if request.method == "GET":
            origin._counters[key] += 1
        first = origin._counters[key] == 1 and request.method == "GET"
        return _send(request, data, reset_at=int(len(data) * 0.4) if first else None,
                     **options)

    async def ifr_ignore(request):
        return await reset_first_get(request, honour_if_range=False)

    async def ifr_noetag(request):
        return await reset_first_get(request, honour_if_range=False, etag_on_206=False)

    async def trickle(request):
        return await _send(request, file(request), trickle_after=8192)

    async def flaky(request):
        key = ("flaky", request.path)
        origin._counters[key] += 1
        if origin._counters[key] <= int(request.match_info["n"]):
            return web.Response(status=503, text="busy")
        return await _send(request, file(request))

    async def slow(request):
        return await _send(request, file(request), pace=0.02)

    async def redirect(request):
        n = int(request.match_info["n"])
        name = request.match_info["name"]
        target = f"/redirect/{n - 1}/{name}" if n > 1 else f"/f/{name}"
        raise web.HTTPFound(target)

    async def page(request):
        return web.Response(text="<!DOCTYPE html><html><body>Sign in</body></html>",
                            content_type="text/html")

    for prefix, handler in (("/f", normal), ("/noetag", noetag), ("/trunc", trunc),
                            ("/reset-once", reset_once), ("/slow", slow),
                            ("/ifr-ignore", ifr_ignore), ("/ifr-noetag", ifr_noetag),
                            ("/trickle", trickle)):
        app.router.add_route("GET", prefix + "/{name:.+}", handler)
        app.router.add_route("HEAD", prefix + "/{name:.+}", handler)
    app.router.add_get("/flaky/{n}/{name}", flaky)
    app.router.add_get("/redirect/{n}/{name}", redirect)
    app.router.add_get("/page", page)

    async def private(request):
        return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="x"'})

    app.router.add_get("/private/{name}", private)

    async def redirect_to(request):
        targets = {"file": "file:///etc/passwd", "nohost": "http:///f"}
        raise web.HTTPFound(targets[request.match_info["kind"]])

    app.router.add_get("/redirect-to/{kind}", redirect_to)
    return app


class OriginServer:
    """Runs an :class:`Origin` on 127.0.0.1 in a background thread."""

    def __init__(self):
        self.origin = Origin()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(_app(self.origin), access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        port = runner.addresses[0][1]
        self.origin.url = f"http://127.0.0.1:{port}"
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def start(self) -> Origin:
        """Start serving; return the origin (``.url`` is set)."""
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the test origin did not start within 10 s")
        return self.origin

    def stop(self) -> None:
        """Stop serving and join the thread."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
