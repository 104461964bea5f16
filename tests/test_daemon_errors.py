"""Errors across the daemon boundary: status by class, rebuilt by kind through the registry."""

from __future__ import annotations

import pytest
from aiohttp import web

from tests.daemon_fixtures import TOKENS, call_json, serve_in_thread

pytestmark = pytest.mark.timeout(60)


def test_a_file_changing_while_uploading_is_a_409_and_exit_code_2(tmp_path):
    """Any route raising SourceChanged (an upload) answers 409 ``source_changed``."""
    from hostkit_daemon.app import create_app
    from hostkit_daemon.frontdoor import behind_frontdoor

    from hostkit.errors import SourceChanged
    from hostkit.settings import Settings

    async def upload(request: web.Request) -> web.Response:
        raise SourceChanged("w.bin changed while it was being uploaded",
                            hint="upload it again once it no longer changes")

    def make_app():
        app = create_app(Settings(cache_dir=tmp_path / "c"), token="t0ken")
        app.router.add_post("/v1/upload-test", behind_frontdoor(upload, "/v1/upload-test"))
        return app

    thread, loop, url = serve_in_thread(make_app, "errors-daemon", handler_cancellation=True)
    TOKENS[url] = "t0ken"
    try:
        status, err = call_json(url, "POST", "/v1/upload-test", {})
        assert status == 409 and err["error"] == "source_changed" and err["hint"]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        TOKENS.pop(url, None)
    from hostkit.client import error_from_dict

    rebuilt = error_from_dict(err, status)
    assert type(rebuilt) is SourceChanged and rebuilt.exit_code == 2
    assert rebuilt.to_dict() == err


def test_a_route_added_outside_the_front_door_stops_the_daemon_from_starting(tmp_path):
    """Routes are guarded by wrapping, not by a middleware: one added bare is refused."""
    import asyncio

    from hostkit_daemon.app import create_app

    from hostkit.settings import Settings

    async def bare(request: web.Request) -> web.Response:
        return web.json_response({"secret": "unguarded"})

    async def start() -> None:
        app = create_app(Settings(cache_dir=tmp_path / "c"), token="t0ken")
        app.router.add_get("/v1/bare", bare)
        runner = web.AppRunner(app)
        try:
            with pytest.raises(RuntimeError, match="GET /v1/bare"):
                await runner.setup()
        finally:
            await runner.cleanup()

    asyncio.run(start())


def test_the_client_rebuilds_every_kind_through_the_registry():
    from hostkit.client import UnknownDaemonError, error_from_dict
    from hostkit.errors import HashMismatch, NotFound, Stalled, error_class

    err = error_from_dict({"error": "not_found", "message": "m", "hint": "h"}, 404)
    assert type(err) is NotFound and isinstance(err, FileNotFoundError) and err.exit_code == 4
    mismatch = error_from_dict({"error": "hash_mismatch", "message": "m", "expected": "sha256:1",
                                "found": "sha256:2"}, 502)
    assert type(mismatch) is HashMismatch and mismatch.found == "sha256:2"
    assert type(error_from_dict({"error": "stalled", "message": "m"}, 503)) is Stalled
    # the daemon's own kinds: registered by its plugin module (loaded with the plugins)
    refused = error_from_dict({"error": "unauthorized", "message": "wrong token"}, 401)
    assert refused.kind == "unauthorized" and isinstance(refused, PermissionError)
    assert refused.exit_code == 2 and error_class("queue_full").http_status == 429
    # a kind nobody registered keeps its kind and status; 4xx is the caller's (exit 2)
    newer = error_from_dict({"error": "brand_new", "message": "m"}, 418)
    assert isinstance(newer, UnknownDaemonError) and newer.kind == "brand_new"
    assert newer.http_status == 418 and newer.exit_code == 2
    assert error_from_dict({"error": "other_new", "message": "m"}, 500).exit_code == 1

