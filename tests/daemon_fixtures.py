"""Helpers for tests/test_daemon.py: a gated origin, the daemon in a thread or a subprocess.

- :class:`GatedOrigin` serves files on 127.0.0.1 (ETag, Range, If-Range), counts
  every request, and can *hold* a file: its responses send the first bytes and
  then wait until the test releases them, so "a download is in flight" is a
  state the test controls instead of a race against the clock.
- :class:`DaemonThread` runs the daemon app in-process on its own event loop
  thread (fast; lets a test read the daemon's log lines).
- :class:`DaemonProcess` runs ``hostkit daemon`` as a real subprocess (signals,
  kill -9, the CLI's startup checks).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from tests.servers import LOOPBACK, free_port


def payload(size: int, seed: int) -> bytes:
    """Deterministic incompressible-looking bytes."""
    out = bytearray()
    block = hashlib.sha256(f"daemon-{seed}".encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:size])


def catch_all(handler):
    """A ``make_app`` for :func:`serve_in_thread`: every method and path go to ``handler``."""
    def make_app():
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        return app

    return make_app


def serve_in_thread(make_app, name: str, *, on_stop=None, **runner_kwargs):
    """Serve ``make_app()`` on 127.0.0.1 (a free port) from a new event-loop thread.

    Returns ``(thread, loop, url)``. Stopping the loop (``loop.stop`` from any
    thread) runs ``on_stop()`` on the loop's thread, then cleans the app up.
    """
    ready = threading.Event()
    started: dict = {}

    def run():
        loop = started["loop"] = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(make_app(), access_log=None, **runner_kwargs)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, LOOPBACK, 0).start())
        started["url"] = f"http://{LOOPBACK}:{runner.addresses[0][1]}"
        ready.set()
        loop.run_forever()
        if on_stop is not None:
            on_stop()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError(f"{name} did not start")
    return thread, started["loop"], started["url"]


# -- origin ----------------------------------------------------------------------------


@dataclass
class Request:
    """One request the origin saw."""

    method: str
    name: str
    range: str | None


@dataclass
class GatedOrigin:
    """Files by name at ``{url}/f/{name}``; ``hold(name)`` pauses their bodies mid-way."""

    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    seen: list[Request] = field(default_factory=list)
    _gates: dict[str, tuple[int, asyncio.Event]] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _started: dict[str, threading.Event] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)  # name -> status answered instead

    def add(self, name: str, data: bytes) -> str:
        """Publish ``data``; return its sha256."""
        self.files[name] = data
        return hashlib.sha256(data).hexdigest()

    def file_url(self, name: str) -> str:
        return f"{self.url}/f/{name}"

    def hold(self, name: str, after: int = 65536) -> None:
        """Send at most ``after`` bytes of ``name``, then wait for :meth:`release`."""
        self._started[name] = threading.Event()
        self._gates[name] = (after, asyncio.Event())

    def wait_started(self, name: str, timeout: float = 15.0) -> None:
        """Block until a held response of ``name`` has sent its first bytes."""
        if not self._started[name].wait(timeout):
            raise AssertionError(f"no download of {name} reached the origin")

    def release(self, name: str) -> None:
        """Let held responses of ``name`` finish."""
        gate = self._gates.pop(name, None)
        if gate is not None:
            self._loop.call_soon_threadsafe(gate[1].set)

    def gets(self, name: str) -> list[Request]:
        """GET requests for ``name``."""
        return [r for r in self.seen if r.method == "GET" and r.name == name]

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.seen.append(Request(request.method, name, request.headers.get("Range")))
        if name in self.refused:
            return web.Response(status=self.refused[name])
        data = self.files.get(name)
        if data is None:
            raise web.HTTPNotFound()
        etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
        headers = {"ETag": etag, "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        start, status = 0, 200
        match = re.fullmatch(r"bytes=(\d+)-", request.headers.get("Range", ""))
        if match and request.headers.get("If-Range", etag) == etag:
            start, status = int(match.group(1)), 206
            if start >= len(data):
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        headers["Content-Length"] = str(len(data) - start)
        resp = web.StreamResponse(status=status, headers=headers)
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        body = memoryview(data)[start:]
        gate = self._gates.get(name)
        if gate is not None:
            after, event = gate
            await resp.write(bytes(body[:after]))
            self._started[name].set()
            await event.wait()
            body = body[after:]
        for i in range(0, len(body), 1 << 18):
            await resp.write(bytes(body[i:i + (1 << 18)]))
        await resp.write_eof()
        return resp

    def start(self) -> GatedOrigin:
        def make_app():
            app = web.Application()
            app.router.add_route("GET", "/f/{name}", self._serve)
            app.router.add_route("HEAD", "/f/{name}", self._serve)
            # files named like paths ("owner/repo/<commit>/file"), as a raw GitHub host
            app.router.add_route("GET", "/raw/{name:.+}", self._serve)
            app.router.add_route("HEAD", "/raw/{name:.+}", self._serve)
            return app

        def open_gates():
            for gate in self._gates.values():
                gate[1].set()

        self._thread, self._loop, self.url = serve_in_thread(make_app, "gated-origin",
                                                             on_stop=open_gates)
        return self

    def stop(self) -> None:
        for name in list(self._gates):
            self.release(name)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


# -- talking to a daemon ---------------------------------------------------------------

#: Tokens of the daemons the tests started, by URL: :func:`call` sends them unless told not to.
TOKENS: dict[str, str] = {}


def auth(url: str) -> dict:
    """The Authorization header for the test daemon at ``url`` (empty if it has no token)."""
    token = TOKENS.get(url)
    return {"Authorization": f"Bearer {token}"} if token else {}


def call(url: str, method: str, path: str, body=None, *, raw: bytes | None = None,
         headers: dict | None = None, timeout: float = 30.0,
         anonymous: bool = False) -> tuple[int, dict, bytes]:
    """One HTTP request to a daemon at ``url`` (http://... or unix:/path).

    The daemon's token goes along unless ``anonymous`` or ``headers`` has an Authorization.
    """
    from hostkit.client import connection, parse_url

    conn = connection(parse_url(url), timeout)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = dict(headers or {})
    if not anonymous and not any(k.lower() == "authorization" for k in headers):
        headers.update(auth(url))
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def call_json(url: str, method: str, path: str, body=None, **kwargs) -> tuple[int, dict]:
    """Like :func:`call`, parsing a JSON answer."""
    status, _, data = call(url, method, path, body, **kwargs)
    return status, json.loads(data)


def wait_until(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    """Poll ``predicate`` every 20 ms."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class LogCapture:
    """A thread-safe stream for the in-process daemon's JSON lines."""

    def __init__(self):
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._buf = ""

    def write(self, text: str) -> int:
        with self._lock:
            self._buf += text
            *done, self._buf = self._buf.split("\n")
            self._lines.extend(done)
        return len(text)

    def flush(self) -> None:
        pass

    @property
    def text(self) -> str:
        with self._lock:
            return "\n".join(self._lines)

    def events(self, kind: str | None = None) -> list[dict]:
        with self._lock:
            records = [json.loads(line) for line in self._lines if line.startswith("{")]
        return [r for r in records if kind is None or r.get("event") == kind]


class DaemonThread:
    """The daemon app served from a thread in this process (127.0.0.1, a free port).

    Like every TCP daemon it requires a token (a fresh one unless given); :func:`call`
    sends it, and :attr:`env` gives a CLI subprocess the URL and the token.
    """

    def __init__(self, cache_dir: Path, token: str | None = None, **app_options):
        import secrets

        from hostkit.settings import Settings

        # explicit settings: independent of the environment of whichever test starts it;
        # GitHub's API is a dead loopback port (a branch lookup must never leave the machine)
        self.settings = Settings(cache_dir=Path(cache_dir), backoff=0.01, retries=2,
                                 environment={"HOSTKIT_GITHUB_API_URL": "http://127.0.0.1:9"})
        self.token = token or secrets.token_urlsafe(16)
        self.app_options = app_options
        self.logs = LogCapture()
        self.url = ""
        self.app = None

    @property
    def env(self) -> dict:
        """Environment for a client process that should use this daemon."""
        return {"HOSTKIT_DAEMON_URL": self.url, "HOSTKIT_DAEMON_TOKEN": self.token}

    def start(self) -> DaemonThread:
        from hostkit_daemon import logs
        from hostkit_daemon.app import create_app

        logs._stream = self.logs

        def make_app():
            self.app = create_app(self.settings, token=self.token, **self.app_options)
            return self.app

        self._thread, self.loop, self.url = serve_in_thread(
            make_app, "hostkit-daemon", handler_cancellation=True, shutdown_timeout=2.0)
        TOKENS[self.url] = self.token
        return self

    @property
    def state(self):
        from hostkit_daemon.state import STATE

        return self.app[STATE]

    def stop(self) -> None:
        import sys as _sys

        from hostkit_daemon import logs

        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(15)
        TOKENS.pop(self.url, None)
        logs._stream = _sys.stderr


class DaemonProcess:
    """``hostkit daemon ARGS`` as a subprocess; stderr (JSON lines) goes to a log file.

    With ``default_address`` it is started with no address flag at all (its default
    socket); ``socket_path`` then names where that is expected to be.
    A TCP daemon's token is read from the token file it announces, as its owner's CLI would.
    """

    def __init__(self, tmp: Path, *args: str, env: dict | None = None, port: int | None = None,
                 socket_path: str | None = None, wait: bool = True,
                 default_address: bool = False):
        self.log_path = tmp / f"daemon-{time.monotonic_ns()}.log"
        self.token: str | None = None
        if socket_path:
            self.url = f"unix:{socket_path}"
            where = [] if default_address else ["--socket", socket_path]
        else:
            self.port = port or free_port()
            self.url = f"http://{LOOPBACK}:{self.port}"
            where = ["--port", str(self.port)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hostkit.cli", "daemon", *where, *args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})})
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 20.0) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            if not self.events("listening"):
                return False
            with contextlib.suppress(OSError, http.client.HTTPException):
                return call(self.url, "GET", "/healthz", timeout=1)[0] == 200
            return False

        wait_until(ready, timeout, "the daemon to answer /healthz")
        token_file = self.events("listening")[0].get("token_file")
        if token_file:
            self.token_file = Path(token_file)
            self.token = json.loads(self.token_file.read_text())["token"]
            TOKENS[self.url] = self.token

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self, kind: str | None = None) -> list[dict]:
        records = []
        for line in self.log().splitlines():
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        return [r for r in records if kind is None or r.get("event") == kind]

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGKILL)
            self.proc.wait(10)
