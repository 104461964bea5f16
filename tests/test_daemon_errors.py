"""Errors across the daemon boundary: status by class, rebuilt by kind through the registry."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from aiohttp import web

from tests.daemon_fixtures import TOKENS, call_json, catch_all, serve_in_thread

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


#: A tier bucket's listing as a hostile S3 server gives it: a blob, a stray object, a ref
#: and a lease whose texts carry terminal escapes.
_HOSTILE_SHA = "ab" * 32
_HOSTILE_TIER = {
    f"tier/cas/sha256/{_HOSTILE_SHA}": b"12345",
    "tier/cas/sha256/not-a-digest": b"x",
    "tier/refs/r1": json.dumps({"sha256": _HOSTILE_SHA, "size": 5,
                                "identifier": "\x1b]0;owned\x07https://h/f"}).encode(),
    "tier/leases/l1": json.dumps({"node": "\x1b[2Jnode", "pid": 7, "expires": 1e300}).encode(),
}


def _listing(prefix: str) -> str:
    items = "".join(f"<Contents><Key>{quote(key)}</Key><Size>{len(data)}</Size>"
                    f"<LastModified>2001-01-01T00:00:00Z</LastModified><ETag>\"e\"</ETag>"
                    "</Contents>" for key, data in _HOSTILE_TIER.items()
                    if key.startswith(prefix))
    return ('<?xml version="1.0"?><ListBucketResult><EncodingType>url</EncodingType>'
            f"<IsTruncated>false</IsTruncated>{items}</ListBucketResult>")


def test_tier_commands_refuse_a_dead_tier_and_missing_credentials_and_survive_a_hostile_one(
        tmp_path):
    """``hostkit tier``: a dead endpoint and missing credentials are clear errors (exit 4,
    a hint, no secret); a hostile listing is shown without its escapes and nothing is
    deleted by a dry run."""
    from tests.conftest import run_cli
    from tests.servers import free_port

    seen: list[str] = []

    async def s3(request: web.Request) -> web.Response:
        if request.path == "/v1/status":  # this node's daemon, asked with the wrong token
            return web.json_response({"error": "unauthorized", "message": "wrong token",
                                      "hint": "send the token"}, status=401)
        seen.append(request.method)
        if "list-type" in request.query:
            return web.Response(text=_listing(request.query.get("prefix", "")),
                                content_type="application/xml")
        data = _HOSTILE_TIER.get(request.path.removeprefix("/site/"))
        return web.Response(body=data) if data is not None else web.Response(status=404)

    thread, loop, url = serve_in_thread(catch_all(s3), "hostile-tier")
    hostport = url.removeprefix("http://")
    dead = f"127.0.0.1:{free_port()}"
    base = {"HOME": str(tmp_path), "HOSTKIT_CACHE_DIR": str(tmp_path / "cache"),
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "HOSTKIT_MINIO_INSECURE_HOSTS": f"{hostport},{dead}"}
    creds = {"AWS_ACCESS_KEY_ID": "AKIDTIERTEST", "AWS_SECRET_ACCESS_KEY": "SECRETTIERVALUE"}
    try:
        down = run_cli("tier", "status", env={**base, **creds,
                                              "HOSTKIT_TIER": f"minio://{dead}/site/tier"})
        assert down.returncode == 4 and "cannot connect" in down.stderr, down.stderr
        assert "hint:" in down.stderr and "SECRETTIERVALUE" not in down.stdout + down.stderr
        anonymous = run_cli("tier", "ls", env={**base, "AWS_ACCESS_KEY_ID": "",
                                               "AWS_SECRET_ACCESS_KEY": "",
                                               "HOSTKIT_TIER": f"minio://{hostport}/site/tier"})
        assert anonymous.returncode != 0 and "credentials" in anonymous.stderr, anonymous.stderr
        assert "hint:" in anonymous.stderr and seen == []
        env = {**base, **creds, "HOSTKIT_TIER": f"minio://{hostport}/site/tier"}
        for args in (("status",), ("ls",), ("prune", "--older-than", "1d", "--dry-run")):
            proc = run_cli("tier", *args, env=env)
            assert proc.returncode == 0, (args, proc.stderr)
            out = proc.stdout + proc.stderr
            assert "\x1b" not in out and "\x07" not in out and "SECRETTIERVALUE" not in out
            assert _HOSTILE_SHA[:12] in out or args == ("status",), out
        assert "1 held" in run_cli("tier", "status", env=env).stdout
        # this node's daemon refuses its counters: the tier is still shown, the refusal said
        env.update(HOSTKIT_DAEMON_URL=url, HOSTKIT_DAEMON_TOKEN="not-it")
        proc = run_cli("tier", "status", env=env)
        assert proc.returncode == 0 and "1 held" in proc.stdout, proc.stderr
        assert "wrong token" in proc.stdout and "not-it" not in proc.stdout + proc.stderr
        answer = json.loads(run_cli("tier", "status", "--json", env=env, check=True).stdout)
        assert answer["blobs"] == 1 and answer["node"] is None
        assert "wrong token" in answer["node_error"]
        assert set(seen) <= {"GET", "HEAD"}  # a dry run deletes nothing
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
