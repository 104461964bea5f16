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
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/doc"


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
