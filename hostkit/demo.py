"""``hostkit demo``: publish sample ML assets on a local origin and resolve them.

Runs offline: the origin is an aiohttp app on 127.0.0.1 serving generated
files (model weights, a parameters file, an additional-files tarball). It
shows a cold download, a warm cache hit, trust on first use, and a wrong hash
being refused, all through the same resolver the CLI and daemon use.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import tarfile
import time

from .errors import HashMismatch
from .resolver import Resolver


def sample_files() -> dict[str, bytes]:
    """Deterministic sample assets, as an MLCube author would host them."""
    weights = bytearray()
    block = b"hostkit-demo"
    while len(weights) < 48 << 20:
        block = hashlib.sha256(block).digest()
        weights += block * 2048
    params = b"batch_size: 8\nthreshold: 0.5\n"
    buf = io.BytesIO()
    # gzip's own header carries a timestamp: pin it so the bytes (and hash) never change
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        info = tarfile.TarInfo("labels.txt")
        info.size = 12
        tar.addfile(info, io.BytesIO(b"cat\ndog\nfox\n"))
    return {"weights.bin": bytes(weights), "parameters.yaml": params,
            "additional_files.tar.gz": buf.getvalue()}


async def _serve(files: dict[str, bytes]):
    from aiohttp import web

    async def handler(request):
        body = files.get(request.match_info["name"])
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body, content_type="application/octet-stream",
                            headers={"ETag": f'"{hashlib.sha256(body).hexdigest()[:16]}"'})

    app = web.Application()
    app.router.add_get("/{name}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def _demo(settings, emit) -> None:
    files = sample_files()
    runner, base = await _serve(files)
    resolver = Resolver(settings)
    known = {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}
    try:
        emit("origin", f"serving {len(files)} sample assets at {base}")
        emit("cache", str(settings.cache_dir))
        for name in files:
            # the publisher gave a hash for two files; parameters.yaml is trust on first use
            expected = None if name == "parameters.yaml" else f"sha256:{known[name]}"
            for round_ in ("first", "again"):
                t0 = time.perf_counter()
                r = await resolver.resolve(f"direct:{base}/{name}", expected)
                ms = (time.perf_counter() - t0) * 1000
                how = "cache hit" if r.cached else "downloaded"
                trust = "verified" if r.verified else "trust on first use"
                emit(f"{round_:5} {name}", f"{how} in {ms:.1f} ms, {r.size} bytes, {trust}",
                     path=str(r.path), sha256=r.sha256)
        try:
            await resolver.resolve(f"{base}/weights.bin?v=2", "sha256:" + "0" * 64)
        except HashMismatch as exc:
            emit("refused", exc.message.split(";")[0] + " (nothing stored)")
        hits, misses = resolver.stats["hits"], resolver.stats["misses"]
        emit("summary", f"{misses} downloads, {hits} cache hits; "
                        "`hostkit cache ls` shows what is stored")
    finally:
        await resolver.aclose()
        await runner.cleanup()


def run_demo(settings, *, as_json: bool = False) -> int:
    """Run the demo against the configured (default) cache; print what happens."""
    events = []

    def emit(what: str, text: str, **extra) -> None:
        events.append({"step": what, "message": text, **extra})
        if not as_json:
            print(f"{what:<30} {text}")
            if "path" in extra:
                print(f"{'':<30}   -> {extra['path']}")

    asyncio.run(_demo(settings, emit))
    if as_json:
        print(json.dumps(events, indent=2))
    return 0
