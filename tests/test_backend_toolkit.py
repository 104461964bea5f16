"""The backend toolkit's small-body reader against a real server that sends in pieces."""

from __future__ import annotations

import asyncio

from aiohttp import web

from hostkit.backend import read_body, request
from hostkit.remote import Context
from hostkit.settings import Settings

PIECES = [b'{"files": [', b'{"path": "a"}, ' * 2000, b'{"path": "b"}]}']


async def _serve(pieces: list[bytes]):
    async def handler(request):
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        for piece in pieces:
            await resp.write(piece)
            await asyncio.sleep(0.05)  # flushed: the client sees the pieces apart
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/doc", handler)
    runner, base = await _started(app)
    return runner, f"{base}/doc"


async def _started(app) -> tuple:
    """Serve ``app`` on 127.0.0.1 in the running loop: (its runner, its base URL)."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def test_a_body_sent_in_pieces_is_read_whole_and_capped(tmp_path):
    async def go():
        runner, url = await _serve(PIECES)
        context = Context(Settings(cache_dir=tmp_path))
        try:
            async with request(context, "GET", url) as resp:
                first = await resp.content.read(1 << 20)  # what has arrived: not the body
            async with request(context, "GET", url) as resp:
                whole = await read_body(resp, 1 << 20)
            async with request(context, "GET", url) as resp:
                capped = await read_body(resp, 100)
        finally:
            await context.aclose()
            await runner.cleanup()
        return first, whole, capped

    first, whole, capped = asyncio.run(go())
    assert len(first) < len(b"".join(PIECES))  # why a plain read(n) is not enough
    assert whole == b"".join(PIECES)
    assert len(capped) == 101  # more than the limit: the caller knows it is too large


DATA = bytes(range(256)) * 64  # 16 KiB


async def _serve_object():
    """``/ranged`` answers a Range with a 206 (its Content-Range total the object's size),
    ``/ignores`` answers every GET with the whole object (200), ``/refuses`` a Range with 416
    and a GET without one with the whole object."""
    import re

    async def ranged(request):
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("Range", ""))
        if not match:
            return web.Response(body=DATA)
        a = int(match[1])
        b = int(match[2]) if match[2] else len(DATA) - 1
        return web.Response(status=206, body=DATA[a:b + 1],
                            headers={"Content-Range": f"bytes {a}-{b}/{len(DATA)}"})

    async def ignores(request):
        return web.Response(body=DATA)

    async def refuses(request):
        if "Range" in request.headers:
            return web.Response(status=416, headers={"Content-Range": f"bytes */{len(DATA)}"})
        return web.Response(body=DATA)

    app = web.Application()
    app.router.add_get("/ranged", ranged)
    app.router.add_get("/ignores", ignores)
    app.router.add_get("/refuses", refuses)
    return await _started(app)


def test_an_answer_for_an_object_of_another_size_is_another_object(tmp_path):
    """``size`` (what a listing or HEAD said): a 206 whose Content-Range total, or a 200
    whose length, names another size is :class:`ObjectChanged`, however well the range fits."""
    import pytest

    from hostkit.backend import ObjectChanged, open_range, ranged_get

    async def part(url, start, end, size):
        context = Context(Settings(cache_dir=tmp_path))
        try:
            return b"".join([c async for c in ranged_get(context, url, start, end, size=size)])
        finally:
            await context.aclose()

    async def resume(url, offset, size):
        context = Context(Settings(cache_dir=tmp_path))
        try:
            async with open_range(context, url, offset, size=size) as got:
                return got.start, b"".join([c async for c in got.chunks()])
        finally:
            await context.aclose()

    async def go():
        runner, base = await _serve_object()
        try:
            assert await part(f"{base}/ranged", 0, 100, len(DATA)) == DATA[:100]
            assert await part(f"{base}/ranged", 0, 100, None) == DATA[:100]
            for url, start, end in ((f"{base}/ranged", 0, 100), (f"{base}/ranged", 100, 200),
                                    (f"{base}/ignores", 0, 100)):
                with pytest.raises(ObjectChanged, match="size"):
                    await part(url, start, end, 100)  # the listing said 100 bytes
            assert await resume(f"{base}/ranged", 10, len(DATA)) == (10, DATA[10:])
            assert await resume(f"{base}/refuses", 10, len(DATA)) == (0, DATA)
            for url in (f"{base}/ranged", f"{base}/refuses", f"{base}/ignores"):
                with pytest.raises(ObjectChanged, match="size"):
                    await resume(url, 10, 100)
        finally:
            await runner.cleanup()

    asyncio.run(go())
