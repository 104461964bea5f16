"""A site on one machine for the shared tier's tests and benchmark: real parts only.

- :class:`ThrottledOrigin`: files over HTTP (ETag, Range, HEAD) through one
  rate-limited link shared by every connection (as a site's uplink is), counting
  the GET requests and the body bytes it sent per file; ``/private/NAME`` serves
  the same files behind HTTP basic auth (a source that needs credentials).
- :class:`Site`: one SeaweedFS (the tier's engine) and ``hostkit daemon``
  processes, each with its own cache directory and port on 127.0.0.1, all
  pointed at the same tier.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web

from tests.daemon_fixtures import DaemonProcess, call_json, serve_in_thread
from tests.objectstore_fixtures import KEY, SECRET, start_seaweed
from tests.servers import free_port

#: The bucket and prefix of the tier in :class:`Site`.
BUCKET, PREFIX = "site", "tier"
#: The only credentials ``/private/`` accepts.
USER, PASSWORD = "alice", "s3cret-pw"


class ThrottledOrigin:
    """Files at ``{url}/f/NAME`` through one link of ``rate`` bytes/s (0: unlimited)."""

    def __init__(self, rate: int = 0):
        self.rate = rate
        self.files: dict[str, bytes] = {}
        self.sent: Counter[str] = Counter()  # body bytes sent, by file name
        self.gets: Counter[str] = Counter()  # GET requests, by file name
        self.heads: Counter[str] = Counter()
        self._next = 0.0  # when the link is free again (the loop's clock)
        self._lock = threading.Lock()
        self.url = ""

    def add(self, name: str, data: bytes) -> str:
        """Publish ``data`` as NAME; return its sha256."""
        self.files[name] = data
        return hashlib.sha256(data).hexdigest()

    def reset(self) -> None:
        """Zero the counters."""
        with self._lock:
            self.sent.clear()
            self.gets.clear()
            self.heads.clear()

    async def _pace(self, n: int) -> None:
        if not self.rate:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = max(now, self._next)
        self._next = start + n / self.rate
        if start > now:
            await asyncio.sleep(start - now)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if request.path.startswith("/private/"):
            expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if request.headers.get("Authorization") != expected:
                return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="x"'})
        data = self.files.get(name)
        if data is None:
            raise web.HTTPNotFound()
        with self._lock:
            (self.heads if request.method == "HEAD" else self.gets)[name] += 1
        etag = '"' + hashlib.sha256(data).hexdigest()[:24] + '"'
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
        view = memoryview(data)[start:]
        step = 64 << 10
        try:
            for i in range(0, len(view), step):
                chunk = bytes(view[i:i + step])
                await self._pace(len(chunk))
                await resp.write(chunk)
                with self._lock:
                    self.sent[name] += len(chunk)
            await resp.write_eof()
        except ConnectionError:
            pass  # the client went away (killed): what was sent is counted
        return resp

    def start(self) -> ThrottledOrigin:
        def make_app():
            app = web.Application()
            for prefix in ("/f/", "/private/"):
                app.router.add_route("GET", prefix + "{name}", self._serve)
                app.router.add_route("HEAD", prefix + "{name}", self._serve)
            return app

        self._thread, self._loop, self.url = serve_in_thread(make_app, "throttled-origin")
        return self

    def file_url(self, name: str) -> str:
        """The anonymous URL of NAME."""
        return f"{self.url}/f/{name}"

    def private_url(self, name: str) -> str:
        """NAME behind basic auth, the credentials in the URL (a credentialed identifier)."""
        return f"{self.url.replace('://', f'://{USER}:{PASSWORD}@')}/private/{name}"

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def node_env(tmp: Path, seaweed_port: int, **settings: str) -> dict[str, str]:
    """The environment of a node: its own nothing-else environment, the tier, the keys."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HOSTKIT_", "AWS_", "MLFLOW_", "XDG_RUNTIME"))}
    env.update({
        "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_CONFIG_FILE": str(tmp / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "HOSTKIT_CONFIG": str(tmp / "no-config.toml"),
        "HOSTKIT_MINIO_INSECURE_HOSTS": "127.0.0.1",
        "HOSTKIT_TIER": f"minio://127.0.0.1:{seaweed_port}/{BUCKET}/{PREFIX}",
        "HOSTKIT_BACKOFF": "0.05", "HOSTKIT_RETRIES": "2",
    })
    env.update({f"HOSTKIT_{k.upper()}": v for k, v in settings.items()})
    return env


class Site:
    """SeaweedFS, a throttled origin and daemons on 127.0.0.1 sharing one tier."""

    def __init__(self, tmp: Path, *, rate: int = 0, tier: bool = True, **settings: str):
        self.tmp = Path(tmp)
        self.seaweed = start_seaweed(buckets=(BUCKET, "private"))
        self.origin = ThrottledOrigin(rate).start()
        self.settings = settings
        self.tier = tier
        self.nodes: list[DaemonProcess | None] = []
        self.ports: list[int] = []

    def env(self, n: int) -> dict[str, str]:
        """Node ``n``'s environment (cache ``node<n>``)."""
        env = node_env(self.tmp, self.seaweed.port, **self.settings)
        env["HOSTKIT_CACHE_DIR"] = str(self.tmp / f"node{n}")
        if not self.tier:
            del env["HOSTKIT_TIER"]
        return env

    def start_nodes(self, count: int) -> list[int]:
        """Start ``count`` more daemons at once; return their numbers."""
        first = len(self.nodes)
        numbers = list(range(first, first + count))
        for n in numbers:
            self.ports.append(free_port())
            self.nodes.append(DaemonProcess(self.tmp, "--scrub-rate", "0", env=self.env(n),
                                            port=self.ports[n], wait=False))
        for n in numbers:
            self.nodes[n].wait_ready(60)
        return numbers

    def restart(self, n: int) -> None:
        """Start node ``n`` again (after a kill), on its cache and port."""
        self.nodes[n] = DaemonProcess(self.tmp, "--scrub-rate", "0", env=self.env(n),
                                      port=self.ports[n])

    def node(self, n: int) -> DaemonProcess:
        node = self.nodes[n]
        assert node is not None
        return node

    def resolve(self, n: int, identifier: str, digest: str | None = None,
                timeout: float = 120.0) -> tuple[int, dict]:
        """``POST /v1/resolve`` on node ``n``: (status, answer)."""
        body = {"identifier": identifier}
        if digest:
            body["hash"] = f"sha256:{digest}"
        return call_json(self.node(n).url, "POST", "/v1/resolve", body, timeout=timeout)

    def resolve_all(self, nodes, identifier: str, digest: str | None = None,
                    timeout: float = 120.0) -> list[tuple[int, dict, float]]:
        """Resolve on every node at once: (status, answer, seconds) each."""
        def one(n):
            started = time.monotonic()
            status, answer = self.resolve(n, identifier, digest, timeout)
            return status, answer, time.monotonic() - started

        with ThreadPoolExecutor(len(nodes)) as pool:
            return list(pool.map(one, nodes))

    def metrics(self, n: int) -> dict[str, float]:
        """Node ``n``'s unlabelled /metrics samples."""
        from tests.daemon_fixtures import call

        _, _, body = call(self.node(n).url, "GET", "/metrics")
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#") and "{" not in line:
                name, value = line.split()
                out[name] = float(value)
        return out

    def keys(self, prefix: str = "") -> dict[str, int]:
        """The tier's objects under ``prefix`` (relative to its own): key -> size."""
        admin = self.seaweed.admin
        found, token = {}, None
        while True:
            page = admin.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/{prefix}",
                                         **({"ContinuationToken": token} if token else {}))
            for obj in page.get("Contents", []):
                found[obj["Key"][len(PREFIX) + 1:]] = obj["Size"]
            token = page.get("NextContinuationToken")
            if not token:
                return found

    def tier_object(self, key: str) -> bytes:
        """An object of the tier (a key relative to its prefix), read with admin keys."""
        return self.seaweed.admin.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}")["Body"].read()

    def leases(self) -> list[dict]:
        """Every lease, parsed."""
        return [json.loads(self.tier_object(k)) for k in self.keys("leases/")]

    def stop_nodes(self) -> None:
        for node in self.nodes:
            if node is not None:
                node.stop()

    def close(self) -> None:
        self.stop_nodes()
        self.origin.stop()
        self.seaweed.stop()
