"""The daemon's OpenAPI document is generated from its routes and declares every status they answer.

Every route is driven: working requests, the hostile inputs of tests/test_daemon.py
(bodies and header bytes), origin failures, a branch-pinned identifier (422), a
cache that cannot store (507), foreign Host headers (403). Then every status the
daemon's request log shows for a route must be declared for that route.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.daemon_fixtures import call, call_json, payload
from tests.servers import free_port
from tests.test_daemon import HOSTILE, HOSTILE_HEADERS, _raw_request

pytestmark = pytest.mark.timeout(60)


def _drive_every_route(daemon, gated, monkeypatch) -> None:
    d = daemon.url
    data = payload(70_000, 501)
    sha = gated.add("oa.bin", data)
    url = gated.file_url("oa.bin")
    gated.refused.update({"oa-private.bin": 401, "oa-gone.bin": 500})
    for path in ("/healthz", "/metrics", "/v1/openapi.json", "/v1/status", "/v1/cache"):
        call(d, "GET", path)
    call(d, "POST", "/v1/resolve", {"identifier": url})
    call(d, "POST", "/v1/resolve", {"identifier": url, "hash": sha})  # remembered
    call(d, "POST", "/v1/resolve", {"identifier": url, "hash": sha})
    call(d, "POST", "/v1/resolve", {"identifier": url, "progress": True})
    job = call_json(d, "POST", "/v1/resolve", {"identifier": url, "wait": False})[1]
    call(d, "GET", job["href"])
    job = call_json(d, "POST", "/v1/prefetch", {"items": [url]})[1]
    call(d, "GET", job["href"])
    blob = f"/v1/blobs/{sha}"
    for headers in ({}, {"Range": "bytes=0-9"}, {"If-None-Match": f'"{sha}"'},
                    {"If-Match": '"other"'}, {"Range": f"bytes={len(data)}-"}):
        call(d, "GET", blob, headers=headers)
    call(d, "HEAD", blob)
    enc = quote(url, safe="")
    for method, path in (("GET", f"/v1/cache/{enc}"), ("POST", f"/v1/cache/{enc}/pin"),
                         ("DELETE", f"/v1/cache/{enc}/pin"), ("DELETE", f"/v1/cache/{enc}")):
        call(d, method, path)
    # failures of the origin and of the identifier
    for body in ({"identifier": gated.file_url("oa-missing.bin")},
                 {"identifier": gated.file_url("oa-private.bin")},
                 {"identifier": f"http://127.0.0.1:{free_port()}/x"},
                 {"identifier": url, "hash": "1" * 64},
                 {"identifier": gated.file_url("oa-never.bin"), "offline": True},
                 {"identifier": "github:o/r@main/f.bin"},  # a branch: 422 not_permanent
                 {"identifier": "https://drive.google.com/file/d/abc/view"}):
        call(d, "POST", "/v1/resolve", body)
    call(d, "POST", "/v1/prefetch", {"items": ["github:o/r@main/f.bin"]})
    # hostile bodies, paths and header bytes
    for method, path, raw, _, _ in HOSTILE:
        call(d, method, path, raw=raw, headers={"Content-Type": "application/json"})
    host = d.removeprefix("http://")
    for raw, where, _, _ in HOSTILE_HEADERS:
        headers = raw.replace(b"{host}", host.encode()).replace(
            b"{port}", host.split(":")[1].encode()).replace(b"{token}", daemon.token.encode())
        _raw_request(d, "GET", blob if where == "blob" else "/v1/status", headers)
    for path in ("/v1/resolve", "/v1/cache", blob):
        call(d, "GET" if path != "/v1/resolve" else "POST", path, {"identifier": url},
             headers={"Host": "evil.example"})
    call(d, "GET", "/v1/status", anonymous=True)  # 401
    # a cache that cannot store anything: a miss is 507
    from hostkit.errors import CacheError

    def full() -> None:
        raise CacheError("the disk is full", hint="free space")

    monkeypatch.setattr(daemon.state.resolver.cache, "require_writable", full)
    call(d, "POST", "/v1/resolve", {"identifier": gated.file_url("oa-full.bin")})
    gated.add("oa-full.bin", payload(1000, 502))
    call(d, "POST", "/v1/resolve", {"identifier": gated.file_url("oa-full.bin")})


def test_every_status_a_route_answers_is_declared_for_it(daemon, gated, monkeypatch):
    _drive_every_route(daemon, gated, monkeypatch)
    doc = call_json(daemon.url, "GET", "/v1/openapi.json")[1]
    answered: dict[tuple[str, str], set[int]] = {}
    for e in daemon.logs.events("request"):
        answered.setdefault((e["route"], e["method"]), set()).add(e["status"])
    missing = []
    for (route, method), statuses in sorted(answered.items()):
        if route == "unmatched":
            continue  # no such route: 404 no_route, documented for any path
        operation = doc["paths"][route].get("get" if method == "HEAD" else method.lower())
        if operation is None:
            assert statuses == {405}, (route, method, statuses)  # no such method on it
            continue
        # 499 is the log's mark for a client that hung up mid-answer (the blob route's
        # tests do, and the test client may): the daemon never sends it
        missing += [(method, route, s) for s in statuses
                    if s != 499 and str(s) not in operation["responses"]]
    assert not missing, missing
    # what the hand-written document lacked is answered, and declared
    resolve = answered[("/v1/resolve", "POST")]
    assert {403, 422, 507} <= resolve, resolve
    assert {403, 422, 507} <= {int(s) for s in doc["paths"]["/v1/resolve"]["post"]["responses"]}


def test_the_document_is_made_from_the_routes_the_app_serves(daemon):
    doc = call_json(daemon.url, "GET", "/v1/openapi.json")[1]
    # the catch-all ('*': JSON 404 no_route / 405 method_not_allowed) is not an API route
    served = {(r.resource.canonical, r.method.lower()) for r in daemon.app.router.routes()
              if r.method not in ("HEAD", "*")}
    described = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert served == described
    resolve = doc["paths"]["/v1/resolve"]["post"]
    assert resolve["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ResolveRequest")
    # an error status lists the kinds answered with it, from the classes the route raises
    kinds = resolve["responses"]["422"]["content"]["application/json"]["schema"]["allOf"][1]
    assert set(kinds["properties"]["error"]["enum"]) == {"not_a_file", "not_permanent",
                                                         "not_direct_link"}
    assert doc["paths"]["/healthz"]["get"]["security"] == []
