"""The example third-party backend (tests/plugins/hostkit-example), installed as its own package.

It registers through the ``hostkit`` entry-point group like any plugin and is
built on the backend toolkit only: these tests resolve through it with a hash,
resume after the server cuts the first answer, watch the progress events, run
its CLI subcommand and read its setting from config.toml and the environment.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import threading

import pytest
from aiohttp import web

from hostkit import errors
from hostkit.events import DownloadStarted, Finished, Progressed
from tests.conftest import run_cli

DATA = os.urandom(3 << 20)
SHA = hashlib.sha256(DATA).hexdigest()
ETAG = f'"{SHA[:16]}"'
CUT = 1 << 20  # the first answer stops after this many bytes


class ExampleServer:
    """Serves DATA as any NAME with ETag and Range; cuts the first GET after CUT bytes."""

    def __init__(self):
        self.ranges: list[str | None] = []
        self.loop = asyncio.new_event_loop()
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "HEAD":
            return web.Response(headers={"ETag": ETAG, "Content-Length": str(len(DATA))})
        self.ranges.append(request.headers.get("Range"))
        start, status, headers = 0, 200, {"ETag": ETAG}
        match = re.fullmatch(r"bytes=(\d+)-", request.headers.get("Range", ""))
        if match and request.headers.get("If-Range") == ETAG:
            start, status = int(match.group(1)), 206
            headers["Content-Range"] = f"bytes {start}-{len(DATA) - 1}/{len(DATA)}"
        headers["Content-Length"] = str(len(DATA) - start)
        resp = web.StreamResponse(status=status, headers=headers)
        await resp.prepare(request)
        if len(self.ranges) == 1:  # the first answer: CUT bytes, then the connection drops
            await resp.write(DATA[:CUT])
            await asyncio.sleep(0.2)  # let the client read them before the reset
            request.transport.close()
            return resp
        await resp.write(DATA[start:])
        await resp.write_eof()
        return resp

    def start(self) -> None:
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            app = web.Application()
            app.router.add_route("*", "/{name}", self.handle)
            self.runner = web.AppRunner(app, access_log=None)
            self.loop.run_until_complete(self.runner.setup())
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
            ready.set()
            self.loop.run_forever()
            self.loop.run_until_complete(self.runner.cleanup())

        self.thread = threading.Thread(target=run, name="example-server", daemon=True)
        self.thread.start()
        assert ready.wait(10), "the example server did not start"

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def server():
    srv = ExampleServer()
    srv.start()
    yield srv
    srv.stop()


def write_config(isolated_env, text: str) -> None:
    (isolated_env / "config.toml").write_text(text)


def resolve_watching(identifier: str, expected: str | None = None):
    """Resolve in-process; return the result and every event the resolver published."""
    from hostkit.resolver import Resolver

    events = []

    async def go():
        resolver = Resolver()
        resolver.events.subscribe(events.append)
        try:
            return await resolver.resolve(identifier, expected)
        finally:
            await resolver.aclose()

    return asyncio.run(go()), events


def test_the_example_is_an_installed_plugin():
    from importlib.metadata import entry_points

    from hostkit.plugins import load_plugins

    (ep,) = [ep for ep in entry_points(group="hostkit") if ep.name == "example"]
    assert ep.dist.name == "hostkit-example" and ep.value == "hostkit_example"
    plugins = load_plugins()
    assert plugins.sources["example"] == "hostkit-example"
    assert ("example", "base_url") in plugins.options()


def test_resolve_with_hash_resumes_after_a_cut_and_reports_progress(server, isolated_env):
    write_config(isolated_env, f'[backends.example]\nbase_url = "{server.url}"\n')
    resolved, events = resolve_watching("example://model.bin", f"sha256:{SHA}")
    assert resolved.sha256 == SHA and resolved.verified and not resolved.cached
    assert resolved.path.read_bytes() == DATA
    # the first answer was cut at CUT bytes; the retry asked only for the rest
    assert server.ranges == [None, f"bytes={CUT}-"]
    kinds = [type(e) for e in events]
    assert DownloadStarted in kinds and Progressed in kinds and kinds[-1] is Finished
    started = [e for e in events if isinstance(e, DownloadStarted)]
    assert started[-1].offset == CUT and started[-1].total == len(DATA)
    assert events[-1].sha256 == SHA and events[-1].size == len(DATA)
    again, _ = resolve_watching("example://model.bin", f"sha256:{SHA}")
    assert again.cached and len(server.ranges) == 2


def test_setting_from_the_environment_over_config(server, isolated_env, monkeypatch):
    write_config(isolated_env, '[backends.example]\nbase_url = "http://127.0.0.1:9"\n')
    monkeypatch.setenv("HOSTKIT_EXAMPLE_BASE_URL", server.url)
    resolved, _ = resolve_watching("example://other.bin")
    assert resolved.sha256 == SHA
    from hostkit.plugins import load_plugins
    from hostkit.settings import load_settings

    option = load_plugins().options()[("example", "base_url")]
    assert load_settings().option_source(option) == (server.url, "HOSTKIT_EXAMPLE_BASE_URL")


def test_unreachable_base_url_is_a_clean_error(isolated_env):
    write_config(isolated_env, '[backends.example]\nbase_url = "http://127.0.0.1:9"\n')
    with pytest.raises(errors.Unreachable):
        resolve_watching("example://gone.bin")


def test_cli_subcommand_reads_the_setting(isolated_env):
    write_config(isolated_env, '[backends.example]\nbase_url = "http://files.test/x/"\n')
    proc = run_cli("example-url", "model.bin", check=True)
    assert proc.stdout.strip() == "http://files.test/x/model.bin"
    proc = run_cli("example-url", "model.bin", check=True,
                   env={"HOSTKIT_EXAMPLE_BASE_URL": "http://env.test"})
    assert proc.stdout.strip() == "http://env.test/model.bin"
    proc = run_cli("resolve", "example://bad/name")
    assert proc.returncode == 2 and "example://NAME" in proc.stderr
