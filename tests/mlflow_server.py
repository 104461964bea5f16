"""A real MLflow tracking server (``mlflow server`` from PyPI) for the mlflow backend's tests.

Plain Python (no pytest). :class:`MlflowServer` starts ``mlflow server`` with a
SQLite backend store in its own process group and returns at once; call
:meth:`MlflowServer.wait` before using it (so the caller can start SeaweedFS
and import the MLflow client meanwhile: the first start, SQLite migrations
included, takes 20 to 40 s on a shared machine). :meth:`stop` kills the whole
group: ``mlflow server`` runs uvicorn as a child process.

Artifacts: ``--serve-artifacts --artifacts-destination s3://BUCKET/`` on a
SeaweedFS, so runs of the default experiment log through the server's proxy
(``mlflow-artifacts:/``), and an experiment created with an ``s3://``
artifact location is read and written directly, as a ``--no-serve-artifacts``
server's runs are. The S3 keys and endpoint are given to the server's
environment only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.servers import LOOPBACK, _http_status, _Server, free_port


class MlflowServer(_Server):
    """``mlflow server`` on 127.0.0.1 with a SQLite store; artifacts proxied to S3."""

    name = "mlflow"
    startup_timeout = 150.0
    term_timeout = 5.0

    def __init__(self, *, destination: str, s3_env: dict[str, str]):
        super().__init__()
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        mlflow = Path(sys.executable).with_name("mlflow")
        argv = [str(mlflow), "server",
                "--backend-store-uri", f"sqlite:///{self.tmp_dir / 'mlflow.db'}",
                "--host", LOOPBACK, "--port", str(self.port), "--workers", "1",
                "--serve-artifacts", "--artifacts-destination", destination]
        keep = {k: v for k, v in os.environ.items()
                if not k.startswith(("AWS_", "MLFLOW_", "HOSTKIT_"))}
        # without it the server also starts a job runner whose workers outlive SIGTERM
        env = {**keep, **s3_env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
               "PYTHONUNBUFFERED": "1"}
        self._t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, cwd=self.tmp_dir, env=env,
                                          start_new_session=True)

    def wait(self) -> MlflowServer:
        """Block until ``/health`` answers 200; raise with the server's output if it cannot."""
        deadline = self._t0 + self.startup_timeout
        while True:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = proc.returncode if proc is not None else "?"
                message = self._fail_msg(f"exited with code {code} during startup")
                self.stop()
                raise RuntimeError(message)
            if _http_status(self.url + "/health") == 200:
                self.startup_seconds = time.monotonic() - self._t0
                return self
            if time.monotonic() > deadline:
                message = self._fail_msg(f"not ready after {self.startup_timeout:.0f} s")
                self.stop()
                raise RuntimeError(message)
            time.sleep(0.1)

    def _fail_msg(self, what: str) -> str:
        return f"mlflow server {what}; `uv sync` installs mlflow.\n{self.log_tail()}"

    def children(self) -> list[int]:
        """Process ids still in the server's process group (for the no-leftovers check)."""
        if self.pid is None:
            return []
        out = subprocess.run(["ps", "-o", "pid=", "-g", str(self.pid)], capture_output=True,
                             text=True).stdout
        return [int(p) for p in out.split()]


class Gate:
    """An aiohttp reverse proxy in front of the MLflow server: auth, a request log, faults.

    With a ``token`` (and/or ``username``/``password``) it answers 401, as MLflow's
    basic-auth app does, to a request without ``Authorization: Bearer TOKEN`` or
    the right basic credentials; without, it lets everyone through. It records
    every request (``hits``: ``"GET /path?query"``) and the ``Authorization``
    headers it saw (``auth_seen``); ``cut_once[substring] = n`` aborts the next
    response whose path contains ``substring`` after ``n`` body bytes;
    ``redirect = (substring, base)`` answers such requests with a 307 to
    ``base`` + the same path and query.
    """

    def __init__(self, target: str, *, token: str | None = None, username: str | None = None,
                 password: str | None = None):
        import asyncio
        import threading

        self.target = target.rstrip("/")
        self.token, self.username, self.password = token, username, password
        self.hits: list[str] = []
        self.auth_seen: list[str | None] = []
        self.cut_once: dict[str, int] = {}
        self.redirect: tuple[str, str] | None = None
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def _allowed(self, header: str | None) -> bool:
        import base64

        if not (self.token or self.username):
            return True
        if self.token and header == f"Bearer {self.token}":
            return True
        if self.username and header and header.startswith("Basic "):
            pair = f"{self.username}:{self.password}".encode()
            return header[6:] == base64.b64encode(pair).decode()
        return False

    async def _start(self):
        import aiohttp
        from aiohttp import web

        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, self.port).start()

    async def _handle(self, request):
        from aiohttp import web

        self.hits.append(f"{request.method} {request.path_qs}")
        header = request.headers.get("Authorization")
        self.auth_seen.append(header)
        if not self._allowed(header):
            return web.json_response(
                {"error_code": "UNAUTHENTICATED",
                 "message": "You are not authenticated. Please see the documentation."},
                status=401, headers={"WWW-Authenticate": 'Basic realm="mlflow"'})
        if self.redirect and self.redirect[0] in request.path_qs:
            raise web.HTTPTemporaryRedirect(self.redirect[1] + request.path_qs)
        cut = next((k for k in self.cut_once if k in request.path), None)
        limit = self.cut_once.pop(cut) if cut is not None else None
        forward = {k: v for k, v in request.headers.items()
                   if k.lower() in ("range", "if-range", "accept-encoding", "content-type")}
        body = await request.read()
        async with self._session.request(request.method, self.target + request.path_qs,
                                         headers=forward, data=body or None,
                                         allow_redirects=False) as upstream:
            resp = web.StreamResponse(status=upstream.status)
            for k, v in upstream.headers.items():
                if k.lower() in ("content-type", "content-length", "etag", "content-range",
                                 "accept-ranges", "content-disposition", "last-modified"):
                    resp.headers[k] = v
            await resp.prepare(request)
            sent = 0
            async for chunk in upstream.content.iter_chunked(16 << 10):
                if limit is not None and sent + len(chunk) > limit:
                    await resp.write(chunk[:limit - sent])
                    request.transport.abort()
                    return resp
                await resp.write(chunk)
                sent += len(chunk)
            await resp.write_eof()
            return resp

    def reset(self):
        """Forget the request log and the faults."""
        self.hits.clear()
        self.auth_seen.clear()
        self.cut_once.clear()
        self.redirect = None

    def close(self):
        import asyncio

        async def stop():
            await self._runner.cleanup()
            await self._session.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
