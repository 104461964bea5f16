"""The daemon: HTTP contract per route, single flight, disconnects, signals, tokens, CLI.

Everything binds 127.0.0.1 (or a unix socket). The origin is the gated origin of
tests/daemon_fixtures.py: it counts requests and can hold a download mid-body
until the test releases it, so "in flight" is a state, not a race.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest

from tests.conftest import run_cli
from tests.daemon_fixtures import (
    DaemonProcess,
    DaemonThread,
    auth,
    call,
    call_json,
    payload,
    wait_until,
)
from tests.servers import free_port

pytestmark = pytest.mark.timeout(60)


def _blob_path(cache: Path, sha: str) -> Path:
    return cache / "blobs" / "sha256" / sha


def _post_many(url: str, n: int, body: dict) -> list[tuple[int, dict]]:
    async def go():
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=n)) as s:
            async def one():
                async with s.post(f"{url}/v1/resolve", json=body, headers=auth(url)) as r:
                    return r.status, await r.json()
            return await asyncio.gather(*(one() for _ in range(n)))

    return asyncio.run(go())


def _in_background(fn, *args) -> tuple[threading.Thread, list]:
    out: list = []

    def run():
        try:
            out.append(fn(*args))
        except BaseException as exc:  # reported by the test through `out`
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def _raw_post(url: str, body: dict) -> socket.socket:
    """Send a resolve request on a raw socket and return it (to hang up on purpose)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    data = json.dumps(body).encode()
    token = auth(url)["Authorization"]
    sock.sendall(f"POST /v1/resolve HTTP/1.1\r\nHost: {host}:{port}\r\n".encode()
                 + f"Authorization: {token}\r\nContent-Type: application/json\r\n".encode()
                 + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


# -- contract, route by route ------------------------------------------------------------


def test_openapi_describes_every_route(daemon):
    status, doc = call_json(daemon.url, "GET", "/v1/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    from hostkit_daemon.frontdoor import UNROUTED

    for route in daemon.app.router.routes():
        if route.method == "HEAD" or route.resource.canonical == UNROUTED:
            continue  # the catch-all answering 404/405 is not a route
        path = route.resource.canonical
        assert route.method.lower() in doc["paths"].get(path, {}), (route.method, path)


def test_resolve_cold_then_warm_then_with_hash(daemon, gated):
    sha = gated.add("contract.bin", payload(300_000, 1))
    url = gated.file_url("contract.bin")
    status, cold = call_json(daemon.url, "POST", "/v1/resolve", {"identifier": url})
    assert status == 200
    assert cold["cached"] is False and cold["verified"] is False
    assert cold["sha256"] == sha and cold["size"] == 300_000 and cold["identifier"] == url
    assert cold["path"] == str(_blob_path(daemon.settings.cache_dir, sha))
    assert cold["blob"] == f"/v1/blobs/{sha}"
    assert hashlib.sha256(Path(cold["path"]).read_bytes()).hexdigest() == sha
    status, warm = call_json(daemon.url, "POST", "/v1/resolve",
                             {"identifier": f"direct:{url}", "hash": f"sha256:{sha}"})
    assert status == 200 and warm["cached"] is True and warm["verified"] is True
    assert warm["path"] == cold["path"]
    assert len(gated.gets("contract.bin")) == 1
    # offline answers from the cache; an uncached identifier offline is a 404 offline error
    status, off = call_json(daemon.url, "POST", "/v1/resolve",
                            {"identifier": gated.file_url("never.bin"), "offline": True})
    assert status == 404 and off["error"] == "offline" and off["hint"]
    status, err = call_json(daemon.url, "POST", "/v1/resolve",
                            {"identifier": gated.file_url("missing.bin")})
    assert status == 404 and err["error"] == "not_found"


def test_resolve_without_waiting_returns_a_job(daemon, gated):
    sha = gated.add("later.bin", payload(200_000, 2))
    status, started = call_json(daemon.url, "POST", "/v1/resolve",
                                {"identifier": gated.file_url("later.bin"), "wait": False})
    assert status == 202 and started["href"] == f"/v1/jobs/{started['job']}"

    def finished():
        return call_json(daemon.url, "GET", started["href"])[1]["state"] == "done"

    wait_until(finished, what="the job to finish")
    job = call_json(daemon.url, "GET", started["href"])[1]
    assert job["kind"] == "resolve" and job["errors"] == 0
    assert job["items"][0]["result"]["sha256"] == sha
    assert job["bytes_done"] == job["bytes_total"] == 200_000


def test_prefetch_reports_progress_and_errors_per_item(daemon, gated):
    big = payload(2_000_000, 3)
    sha_big = gated.add("pf-big.bin", big)
    sha_small = gated.add("pf-small.bin", payload(1000, 4))
    gated.hold("pf-big.bin", after=500_000)
    status, job = call_json(daemon.url, "POST", "/v1/prefetch", {"items": [
        {"identifier": gated.file_url("pf-big.bin"), "hash": sha_big},
        gated.file_url("pf-small.bin"),
        {"identifier": gated.file_url("pf-missing.bin")},
    ]})
    assert status == 202 and len(job["items"]) == 3
    gated.wait_started("pf-big.bin")

    def big_in_progress():
        item = call_json(daemon.url, "GET", job["href"])[1]["items"][0]
        return item["state"] == "running" and item["bytes_done"] >= 500_000

    wait_until(big_in_progress, what="progress of the held download")
    running = call_json(daemon.url, "GET", job["href"])[1]
    assert running["state"] == "running" and running["items"][0]["bytes_total"] == len(big)
    gated.release("pf-big.bin")
    wait_until(lambda: call_json(daemon.url, "GET", job["href"])[1]["state"] != "running",
               what="the prefetch to finish")
    done = call_json(daemon.url, "GET", job["href"])[1]
    assert done["state"] == "failed" and done["errors"] == 1
    big_item, small_item, missing = done["items"]
    assert big_item["state"] == "done" and big_item["result"]["verified"] is True
    assert small_item["result"]["sha256"] == sha_small
    assert missing["state"] == "failed" and missing["error"]["error"] == "not_found"
    assert _blob_path(daemon.settings.cache_dir, sha_big).exists()


def test_warm_answers_equal_the_resolvers_and_notice_removals(daemon, gated):
    from hostkit.store.cache import Cache

    sha = gated.add("warm.bin", payload(50_000, 20))
    body = {"identifier": f"direct:{gated.file_url('warm.bin')}", "hash": sha}
    assert call_json(daemon.url, "POST", "/v1/resolve", body)[1]["cached"] is False
    first = call_json(daemon.url, "POST", "/v1/resolve", body)[1]  # from the resolver
    cache = Cache(daemon.settings.cache_dir)
    before = cache.blob(sha).accessed
    time.sleep(0.05)
    second = call_json(daemon.url, "POST", "/v1/resolve", body)[1]  # remembered
    assert first == second and second["cached"] is True and second["verified"] is True
    # the use is recorded for LRU eviction, a moment later
    wait_until(lambda: cache.blob(sha).accessed > before, what="the access time to be written")
    # another process removes the blob: the daemon notices and downloads again
    assert run_cli("cache", "rm", sha, "--cache-dir", daemon.settings.cache_dir).returncode == 0
    again = call_json(daemon.url, "POST", "/v1/resolve", body)[1]
    assert again["cached"] is False and again["sha256"] == sha
    assert len(gated.gets("warm.bin")) == 2
    status, st = call_json(daemon.url, "GET", "/v1/status")
    assert st["stats"]["hits"] == 2


def test_repeated_bodies_are_remembered_only_when_small(daemon, gated):
    """A warm hit's request body is remembered by its bytes (answered again unparsed), but
    not a padded one: a caller must not make the daemon hold thousands of large bodies."""
    sha = gated.add("warm-padded.bin", payload(2000, 24))
    body = {"identifier": gated.file_url("warm-padded.bin"), "hash": sha}
    padded = json.dumps(body).encode()[:-1] + b" " * 100_000 + b"}"
    for raw in (None, padded):
        for _ in range(3):
            status, answer = call_json(daemon.url, "POST", "/v1/resolve", body, raw=raw)
            assert status == 200 and answer["sha256"] == sha
    assert [len(raw) for _, raw in daemon.state.warm._bodies] == [len(json.dumps(body))]


def test_a_remembered_body_passes_the_front_door_and_answers_only_a_plain_warm_hit(
        daemon, gated):
    """A body answered again unparsed still meets the token and draining checks, the same
    bytes asking for a stream get one, and a removal through the daemon is noticed."""
    sha = gated.add("warm-body.bin", payload(3000, 25))
    raw = json.dumps({"identifier": gated.file_url("warm-body.bin"), "hash": sha}).encode()
    for _ in range(3):  # a miss, a hit of the resolver, a remembered one (its body kept)
        assert call_json(daemon.url, "POST", "/v1/resolve", raw=raw)[0] == 200
    assert raw in [body for _, body in daemon.state.warm._bodies]
    status, answer = call_json(daemon.url, "POST", "/v1/resolve", raw=raw,
                               headers={"Authorization": "Bearer wrong"})
    assert status == 401 and answer["error"] == "unauthorized"
    status, headers, lines = call(daemon.url, "POST", "/v1/resolve", raw=raw,
                                  headers={"Accept": "application/x-ndjson"})
    assert status == 200 and headers["content-type"].startswith("application/x-ndjson")
    last = json.loads(lines.splitlines()[-1])
    assert last["event"] == "resolved" and last["sha256"] == sha
    daemon.state.draining = True
    try:
        status, answer = call_json(daemon.url, "POST", "/v1/resolve", raw=raw)
    finally:
        daemon.state.draining = False
    assert status == 503 and answer["error"] == "shutting_down"
    assert call_json(daemon.url, "DELETE", f"/v1/cache/{sha}")[0] == 200
    status, again = call_json(daemon.url, "POST", "/v1/resolve", raw=raw)
    assert status == 200 and again["cached"] is False and again["sha256"] == sha
    assert len(gated.gets("warm-body.bin")) == 2


def test_warm_answers_of_a_short_commit_keep_the_resolvers_pinned_identifier(tmp_path):
    """A short commit is looked up and answered under the full one (``pinned_from`` the
    identifier asked): that answer depends on a lookup, not only on the identifier and
    the hash, so a repeat gets the resolver's answer, never a memo without the pin."""
    from dataclasses import replace

    from tests.standins.github import GitHubServer

    server = GitHubServer()
    gh = server.start()
    d = DaemonThread(tmp_path / "cache")
    d.settings = replace(d.settings, environment={
        "HOSTKIT_GITHUB_API_URL": gh.api_url, "HOSTKIT_GITHUB_RAW_URL": gh.raw_url,
        "HOSTKIT_GITHUB_LFS_URL": gh.lfs_url})
    d.start()
    try:
        data = payload(1500, 26)
        commit = gh.commit("o/r", {"w.bin": data})
        body = {"identifier": f"github:o/r@{commit[:7]}/w.bin",
                "hash": hashlib.sha256(data).hexdigest()}
        answers = [call_json(d.url, "POST", "/v1/resolve", body)[1] for _ in range(4)]
        pinned = f"{gh.raw_url}/o/r/{commit}/w.bin"
        assert [(a["identifier"], a.get("pinned_from"), a["cached"]) for a in answers] == [
            (pinned, body["identifier"], cached) for cached in (False, True, True, True)]
    finally:
        d.stop()
        server.stop()


def test_warm_answers_redact_secrets_as_the_resolver_does(daemon, gated):
    sha = gated.add("warm-secret.bin", payload(3000, 23))
    url = gated.file_url("warm-secret.bin") + "?token=TOKENVALUE456&part=1"
    body = {"identifier": url, "hash": sha}
    assert call_json(daemon.url, "POST", "/v1/resolve", body)[0] == 200
    first = call_json(daemon.url, "POST", "/v1/resolve", body)[1]  # from the resolver
    second = call_json(daemon.url, "POST", "/v1/resolve", body)[1]  # remembered
    assert first == second and second["cached"] is True
    assert "TOKENVALUE456" not in second["identifier"] and "part=1" in second["identifier"]


def test_blobs_range_etag_conditionals(daemon, gated):
    data = payload(100_000, 5)
    sha = gated.add("blob.bin", data)
    call_json(daemon.url, "POST", "/v1/resolve", {"identifier": gated.file_url("blob.bin")})
    path = f"/v1/blobs/{sha}"
    status, headers, body = call(daemon.url, "GET", path)
    assert status == 200 and body == data
    assert headers["etag"] == f'"{sha}"' and headers["content-length"] == str(len(data))
    assert headers["accept-ranges"] == "bytes"
    status, headers, body = call(daemon.url, "GET", path, headers={"Range": "bytes=10-19"})
    assert status == 206 and body == data[10:20]
    assert headers["content-range"] == f"bytes 10-19/{len(data)}"
    assert headers["content-length"] == "10"
    status, _, body = call(daemon.url, "GET", path, headers={"Range": "bytes=-5"})
    assert status == 206 and body == data[-5:]
    status, headers, body = call(daemon.url, "GET", path, headers={"If-None-Match": f'"{sha}"'})
    assert status == 304 and body == b"" and headers["etag"] == f'"{sha}"'
    status, _, body = call(daemon.url, "GET", path, headers={"If-None-Match": '"other"'})
    assert status == 200 and body == data
    status, _, body = call(daemon.url, "GET", path,
                           headers={"If-Match": f'"{sha}"', "Range": "bytes=0-3"})
    assert status == 206 and body == data[:4]
    status, _, body = call(daemon.url, "GET", path, headers={"If-Match": '"other"'})
    assert status == 412 and json.loads(body)["error"] == "precondition_failed"
    status, _, _ = call(daemon.url, "GET", path, headers={"Range": f"bytes={len(data)}-"})
    assert status == 416
    status, headers, body = call(daemon.url, "HEAD", path)
    assert status == 200 and body == b"" and headers["content-length"] == str(len(data))
    status, _, body = call(daemon.url, "GET", f"/v1/blobs/{sha.upper()}")
    assert status == 200 and body == data
    metrics = call(daemon.url, "GET", "/metrics")[2].decode()
    served = next(line for line in metrics.splitlines()
                  if line.startswith("hostkit_served_bytes_total"))
    assert int(served.split()[1]) == 3 * len(data) + 10 + 5 + 4


def test_cache_list_info_pin_unpin_delete(daemon, gated):
    sha_a = gated.add("ca.bin", payload(5000, 6))
    sha_b = gated.add("cb.bin", payload(6000, 7))
    url_a, url_b = gated.file_url("ca.bin"), gated.file_url("cb.bin")
    for url in (url_a, url_b):
        assert call_json(daemon.url, "POST", "/v1/resolve", {"identifier": url})[0] == 200
    status, listing = call_json(daemon.url, "GET", "/v1/cache")
    assert status == 200 and listing["total_bytes"] == 11000
    assert {e["identifier"] for e in listing["entries"]} == {url_a, url_b}
    assert all("key" not in e for e in listing["entries"])
    enc_a = quote(url_a, safe="")
    status, info = call_json(daemon.url, "GET", f"/v1/cache/{enc_a}")
    assert status == 200 and info["entries"][0]["sha256"] == sha_a
    status, pinned = call_json(daemon.url, "POST", f"/v1/cache/{enc_a}/pin")
    assert status == 200 and pinned == {"pinned": [url_a]}
    assert call_json(daemon.url, "GET", f"/v1/cache/{enc_a}")[1]["entries"][0]["pinned"]
    status, unpinned = call_json(daemon.url, "DELETE", f"/v1/cache/{sha_a[:12]}/pin")
    assert status == 200 and unpinned == {"unpinned": [url_a]}
    status, removed = call_json(daemon.url, "DELETE", f"/v1/cache/{enc_a}")
    assert status == 200 and removed["removed_blobs"] == [sha_a]
    assert not _blob_path(daemon.settings.cache_dir, sha_a).exists()
    status, removed = call_json(daemon.url, "DELETE", f"/v1/cache/{sha_b}")
    assert status == 200 and removed["removed_entries"] == [url_b]
    assert removed["freed_bytes"] == 6000
    assert call_json(daemon.url, "GET", "/v1/cache")[1]["entries"] == []
    assert call_json(daemon.url, "DELETE", f"/v1/cache/{sha_b}")[0] == 404


def test_cache_routes_never_echo_the_secrets_of_an_identifier_not_found(daemon, gated):
    """Like ``hostkit cache``, the daemon names an identifier it did not find redacted:
    the answer (printed by the client, kept in CI logs) must not carry its userinfo or
    signature."""
    url = gated.file_url("nowhere.bin").replace("http://", "http://user:PWSECRET1@") \
        + "?X-Amz-Signature=SIGSECRET1&token=TOKSECRET1"
    enc = quote(url, safe="")
    for method, path in (("GET", f"/v1/cache/{enc}"), ("DELETE", f"/v1/cache/{enc}"),
                         ("POST", f"/v1/cache/{enc}/pin"), ("DELETE", f"/v1/cache/{enc}/pin")):
        status, _, body = call(daemon.url, method, path)
        assert status == 404 and json.loads(body)["error"] == "not_in_cache", body
        assert b"nowhere.bin" in body
        assert not re.search(rb"PWSECRET1|SIGSECRET1|TOKSECRET1", body), body


def test_healthz_status_and_metrics(daemon, gated):
    gated.add("m.bin", payload(4096, 8))
    call_json(daemon.url, "POST", "/v1/resolve", {"identifier": gated.file_url("m.bin")})
    call_json(daemon.url, "POST", "/v1/resolve", {"identifier": gated.file_url("m.bin")})
    call_json(daemon.url, "POST", "/v1/resolve", {"identifier": "gopher://x/y"})
    assert call_json(daemon.url, "GET", "/healthz") == (200, {"status": "ok"})
    status, st = call_json(daemon.url, "GET", "/v1/status")
    assert status == 200 and st["cache"]["entries"] == 1 and st["in_flight_count"] == 0
    assert st["stats"]["downloads"] == 1 and st["pid"] == os.getpid()
    status, headers, body = call(daemon.url, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values["hostkit_cache_hits_total"] == 1
    assert values["hostkit_cache_misses_total"] == 1
    assert values["hostkit_origin_bytes_total"] == 4096
    assert values['hostkit_downloads_total{outcome="ok"}'] == 1
    assert values["hostkit_inflight_downloads"] == 0
    assert values['hostkit_errors_total{kind="unknown_scheme"}'] == 1
    assert values['hostkit_resolve_duration_seconds_bucket{le="+Inf"}'] == 3
    assert values["hostkit_resolve_duration_seconds_count"] == 3
    assert "m.bin" not in text  # labels never carry identifiers


def test_credentials_never_reach_logs_metrics_or_listings(daemon, gated):
    gated.add("secret.bin", payload(2048, 9))
    host = gated.url.removeprefix("http://")
    url = (f"http://user:PASSWORD123@{host}/f/secret.bin"
           "?X-Amz-Signature=SIGVALUE123&token=TOKENVALUE123&part=1")
    status, out = call_json(daemon.url, "POST", "/v1/resolve", {"identifier": url})
    assert status == 200
    call_json(daemon.url, "POST", "/v1/resolve", {"identifier": url + "&x=1", "hash": "bad"})
    bodies = [call(daemon.url, "GET", p)[2].decode()
              for p in ("/metrics", "/v1/cache", "/v1/status")]
    logged = daemon.logs.text
    assert "download" in {e["event"] for e in daemon.logs.events()}
    for secret in ("PASSWORD123", "SIGVALUE123", "TOKENVALUE123"):
        assert secret not in logged
        for body in bodies:
            assert secret not in body
    assert "part=1" in logged  # redaction masks values of secret parameters only


HOSTILE = [
    ("POST", "/v1/resolve", b"{bad", 400, "bad_json"),
    ("POST", "/v1/resolve", b"", 400, "bad_json"),
    ("POST", "/v1/resolve", b"\xff\xfe\x00", 400, "bad_json"),
    ("POST", "/v1/resolve", b"[1, 2]", 400, "bad_request"),
    ("POST", "/v1/resolve", b"{}", 400, "bad_request"),
    ("POST", "/v1/resolve", b'{"identifier": 5}', 400, "bad_request"),
    ("POST", "/v1/resolve", b'{"identifier": "https://h/x", "extra": 1}', 400, "bad_request"),
    ("POST", "/v1/resolve", b'{"identifier": "https://h/x", "wait": "no"}', 400, "bad_request"),
    ("POST", "/v1/resolve", b'{"identifier": "gopher://h/x"}', 400, "unknown_scheme"),
    ("POST", "/v1/resolve", b'{"identifier": "not an identifier"}', 400, "usage"),
    ("POST", "/v1/resolve", b'{"identifier": "https://h/x", "hash": "sha256:abc"}', 400,
     "bad_hash"),
    ("POST", "/v1/resolve", b'{"identifier": "https://h/x", "hash": "crc32:ab"}', 400,
     "bad_hash"),
    ("POST", "/v1/resolve", b'{"identifier": "https://h/x", "hash": "zz", "wait": false}', 400,
     "bad_hash"),
    ("POST", "/v1/resolve", json.dumps({"identifier": "https://h/" + "a" * 9000}).encode(),
     400, "bad_request"),
    ("POST", "/v1/resolve", b"{" + b" " * (2 << 20) + b"}", 413, "too_large"),
    ("POST", "/v1/prefetch", b"{bad", 400, "bad_json"),
    ("POST", "/v1/prefetch", b'{"items": []}', 400, "bad_request"),
    ("POST", "/v1/prefetch", b'{"items": "https://h/x"}', 400, "bad_request"),
    ("POST", "/v1/prefetch", b'{"items": [5]}', 400, "bad_request"),
    ("POST", "/v1/prefetch", b'{"items": [{"identifier": "gopher://h/x"}]}', 400,
     "unknown_scheme"),
    ("POST", "/v1/prefetch", b'{"items": [{"identifier": "https://h/x", "hash": "q"}]}', 400,
     "bad_hash"),
    ("POST", "/v1/prefetch", json.dumps({"items": ["https://h/x"] * 1001}).encode(), 400,
     "bad_request"),
    # lone surrogates (valid JSON, not encodable text) anywhere, and absurd nesting
    ("POST", "/v1/resolve", b'{"identifier": "https://h/\\ud800"}', 400, "bad_json"),
    ("POST", "/v1/resolve", b'{"identifier": "synapse:syn1\\udfff"}', 400, "bad_json"),
    ("POST", "/v1/resolve", b'{"identifier": "https://h/x", "hash": "\\udc00"}', 400,
     "bad_json"),
    ("POST", "/v1/resolve", b'{"identifier": "https://h/x", "\\ud800": 1}', 400, "bad_json"),
    ("POST", "/v1/prefetch", b'{"items": ["https://h/\\ud800"]}', 400, "bad_json"),
    ("POST", "/v1/prefetch", b'{"items": [{"identifier": "https://h/x\\udbff"}]}', 400,
     "bad_json"),
    ("POST", "/v1/resolve", b"[" * 100_000, 400, "bad_json"),
    ("POST", "/v1/resolve", b'{"identifier": ' + b'{"a": ' * 100_000, 400, "bad_json"),
    ("POST", "/v1/prefetch", b'{"items": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400,
     "bad_json"),
    ("GET", "/v1/jobs/nope", None, 404, "unknown_job"),
    ("GET", "/v1/jobs/0123456789abcdef", None, 404, "unknown_job"),
    ("GET", "/v1/jobs/..%2F..%2Fetc%2Fpasswd", None, 404, "unknown_job"),
    ("GET", "/v1/blobs/xyz", None, 400, "bad_digest"),
    ("GET", "/v1/blobs/" + "g" * 64, None, 400, "bad_digest"),
    ("GET", "/v1/blobs/..%2F..%2F..%2Fetc%2Fpasswd", None, 400, "bad_digest"),
    ("GET", "/v1/blobs/%2e%2e", None, 400, "bad_digest"),
    ("GET", "/v1/blobs/" + "0" * 63 + "%2F", None, 400, "bad_digest"),
    ("GET", "/v1/blobs/" + "0" * 64, None, 404, "blob_not_found"),
    ("GET", "/v1/blobs/../../../etc/passwd", None, 404, "no_route"),
    ("GET", "/v1/cache/nothing-here", None, 404, "not_in_cache"),
    ("DELETE", "/v1/cache/..%2F..%2Findex.db", None, 404, "not_in_cache"),
    ("POST", "/v1/cache/nothing-here/pin", None, 404, "not_in_cache"),
    ("DELETE", "/v1/cache/nothing-here/pin", None, 404, "not_in_cache"),
    ("GET", "/v1/resolve", None, 405, "method_not_allowed"),
    ("PUT", "/v1/cache", None, 405, "method_not_allowed"),
    ("GET", "/v2/resolve", None, 404, "no_route"),
]


def test_hostile_inputs_get_json_4xx_and_the_daemon_keeps_serving(daemon):
    for method, path, raw, want, kind in HOSTILE:
        status, headers, body = call(daemon.url, method, path, raw=raw,
                                     headers={"Content-Type": "application/json"})
        assert status == want, (method, path, raw and raw[:60], status, body[:300])
        assert headers["content-type"].startswith("application/json"), (path, headers)
        err = json.loads(body)
        assert err["error"] == kind and err["message"] and err["hint"], (path, err)
    # a chunked body over the limit (no Content-Length to check up front)
    conn = http.client.HTTPConnection(daemon.url.removeprefix("http://"), timeout=30)
    conn.request("POST", "/v1/resolve", body=iter([b"{" + b" " * (1 << 20)] * 3),
                 encode_chunked=True,
                 headers={"Content-Type": "application/json", **auth(daemon.url)})
    resp = conn.getresponse()
    assert resp.status == 413 and json.loads(resp.read())["error"] == "too_large"
    conn.close()
    assert call_json(daemon.url, "GET", "/healthz") == (200, {"status": "ok"})
    metrics = call(daemon.url, "GET", "/metrics")[2].decode()
    assert 'status="500"' not in metrics


#: Header bytes that are not UTF-8 (aiohttp hands them over as lone surrogates), and
#: Unicode digits where ASCII ones belong: (headers, path kind, status, error kind or None).
#: ``{host}`` is the daemon's own ``host:port``; ``blob`` paths name a stored blob.
HOSTILE_HEADERS = [
    (b"Authorization: Bearer \xff\xfe\r\n", "status", 401, "unauthorized"),
    (b"Authorization: \xff\r\n", "status", 401, "unauthorized"),
    (b"Authorization: Bearer {token}\xff\r\n", "status", 401, "unauthorized"),
    (b"Authorization: Bearer \xed\xa0\x80\r\n", "status", 401, "unauthorized"),
    (b"Host: \xff\xfe:{port}\r\n", "status", 403, "forbidden_host"),
    (b"Host: 127.0.0.1:\xc2\xb2\r\n", "status", 403, "forbidden_host"),  # superscript 2
    (b"Host: 127.0.0.1:\xd9\xa1\r\n", "status", 403, "forbidden_host"),  # Arabic-Indic 1
    (b"Origin: http://\xff\r\n", "status", 403, "forbidden_origin"),
    (b"Origin: http://{host}\xff\r\n", "status", 403, "forbidden_origin"),
    (b'If-None-Match: "\xff"\r\n', "blob", 200, None),
    (b'If-Match: "\xff", W/"\xfe"\r\n', "blob", 412, "precondition_failed"),
    (b"Range: bytes=\xff-\r\n", "blob", 416, None),
    (b"Range: bytes=\xd9\xa1-\r\n", "blob", 416, None),
    (b"Range: bytes=0-\xff\r\n", "blob", 416, None),
    (b"If-Range: \xff\r\nRange: bytes=0-3\r\n", "blob", 206, None),
    (b"If-Modified-Since: \xff\r\n", "blob", 200, None),
]


def _raw_request(url: str, method: str, path: str, headers: bytes) -> tuple[int, dict, bytes]:
    """One request with header bytes exactly as given (Host and token added unless present)."""
    host, port = url.removeprefix("http://").split(":")
    extra = b""
    if not headers.lower().startswith(b"host:") and b"\r\nhost:" not in headers.lower():
        extra += f"Host: {host}:{port}\r\n".encode()
    if b"authorization:" not in headers.lower():
        extra += f"Authorization: {auth(url)['Authorization']}\r\n".encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nConnection: close\r\n".encode()
                     + extra + headers + b"\r\n")
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    found = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    if found.get("transfer-encoding") == "chunked":
        out, rest = b"", body
        while True:
            size, _, rest = rest.partition(b"\r\n")
            if not int(size, 16):
                break
            out, rest = out + rest[:int(size, 16)], rest[int(size, 16) + 2:]
        body = out
    return int(lines[0].split()[1]), found, body


def test_hostile_header_bytes_get_json_4xx_never_500(daemon, gated):
    data = payload(70_000, 30)
    sha = gated.add("headers.bin", data)
    call_json(daemon.url, "POST", "/v1/resolve", {"identifier": gated.file_url("headers.bin")})
    host = daemon.url.removeprefix("http://")
    for raw, where, want, kind in HOSTILE_HEADERS:
        headers = raw.replace(b"{host}", host.encode()).replace(
            b"{port}", host.split(":")[1].encode()).replace(b"{token}", daemon.token.encode())
        path = f"/v1/blobs/{sha}" if where == "blob" else "/v1/status"
        status, got, body = _raw_request(daemon.url, "GET", path, headers)
        assert status == want, (raw, status, body[:300])
        if kind is not None:
            assert got["content-type"].startswith("application/json"), (raw, got)
            err = json.loads(body)
            assert err["error"] == kind and err["message"] and err["hint"], (raw, err)
        elif want == 200:
            assert body == data, raw
    assert call_json(daemon.url, "GET", "/healthz") == (200, {"status": "ok"})
    metrics = call(daemon.url, "GET", "/metrics")[2].decode()
    assert 'status="500"' not in metrics
    assert not daemon.logs.events("internal_error")


def test_origin_failures_are_json_errors_for_resolve_and_prefetch(daemon, gated):
    sha = gated.add("of.bin", payload(2000, 24))
    gated.refused.update({"private.bin": 401, "forbidden.bin": 403})
    dead = f"http://127.0.0.1:{free_port()}/gone.bin"  # nobody listens there
    cases = [({"identifier": dead}, 503, "unreachable"),
             ({"identifier": gated.file_url("private.bin")}, 401, "credentials_needed"),
             ({"identifier": gated.file_url("forbidden.bin")}, 401, "credentials_needed"),
             ({"identifier": gated.file_url("of.bin"), "hash": "1" * 64}, 502, "hash_mismatch")]
    for body, want, kind in cases:
        status, headers, raw = call(daemon.url, "POST", "/v1/resolve", body)
        assert status == want, (body, status, raw[:300])
        assert headers["content-type"].startswith("application/json")
        err = json.loads(raw)
        assert err["error"] == kind and err["message"] and err["hint"], err
    status, job = call_json(daemon.url, "POST", "/v1/prefetch",
                            {"items": [body for body, _, _ in cases]})
    assert status == 202
    wait_until(lambda: call_json(daemon.url, "GET", job["href"])[1]["state"] != "running",
               what="the prefetch to finish")
    done = call_json(daemon.url, "GET", job["href"])[1]
    assert done["state"] == "failed" and done["errors"] == len(cases)
    assert [i["error"]["error"] for i in done["items"]] == [kind for _, _, kind in cases]
    assert call_json(daemon.url, "GET", "/v1/cache")[1]["blobs"] == []  # nothing stored
    assert call_json(daemon.url, "POST", "/v1/resolve",
                     {"identifier": gated.file_url("of.bin"), "hash": sha})[1]["sha256"] == sha


# -- single flight and disconnects --------------------------------------------------------


def _64_requests_on_one_held_download(daemon, gated, name: str, body: dict,
                                      after: int) -> list[tuple[int, dict]]:
    """64 identical resolves, all waiting while ``name`` is held; one origin GET, one answer."""
    gated.hold(name, after=after)
    thread, out = _in_background(_post_many, daemon.url, 64, body)
    gated.wait_started(name)
    wait_until(lambda: daemon.state.metrics.in_progress >= 64, what="64 requests waiting")
    gated.release(name)
    thread.join(30)
    answers = out[0]
    assert not isinstance(answers, BaseException), answers
    assert len(gated.gets(name)) == 1
    assert all(a == answers[0][1] for _, a in answers)  # 64 identical answers
    return answers


def test_64_concurrent_cold_requests_make_one_origin_get(daemon, gated):
    sha = gated.add("sf.bin", payload(3_000_000, 10))
    answers = _64_requests_on_one_held_download(
        daemon, gated, "sf.bin", {"identifier": gated.file_url("sf.bin")}, after=1 << 20)
    assert {status for status, _ in answers} == {200}
    assert answers[0][1]["sha256"] == sha and answers[0][1]["cached"] is False


def test_64_concurrent_requests_share_one_error(daemon, gated):
    gated.add("sf-bad.bin", payload(500_000, 11))
    body = {"identifier": gated.file_url("sf-bad.bin"), "hash": "0" * 64}
    answers = _64_requests_on_one_held_download(daemon, gated, "sf-bad.bin", body,
                                                after=100_000)
    assert {status for status, _ in answers} == {502}
    assert answers[0][1]["error"] == "hash_mismatch"
    assert call_json(daemon.url, "GET", "/v1/cache")[1]["blobs"] == []


def test_a_client_hanging_up_does_not_cancel_the_download_others_wait_for(daemon, gated):
    sha = gated.add("dc.bin", payload(1_500_000, 12))
    gated.hold("dc.bin")
    body = {"identifier": gated.file_url("dc.bin")}
    leaver = _raw_post(daemon.url, body)  # starts the download, then hangs up
    gated.wait_started("dc.bin")
    thread, out = _in_background(call_json, daemon.url, "POST", "/v1/resolve", body)
    wait_until(lambda: daemon.state.metrics.in_progress >= 2, what="both requests waiting")
    leaver.close()
    wait_until(lambda: any(e.get("status") == 499 for e in daemon.logs.events("request")),
               what="the daemon to notice the hang-up")
    assert len(daemon.state.resolver.in_flight()) == 1  # the download goes on
    gated.release("dc.bin")
    thread.join(30)
    status, answer = out[0]
    assert status == 200 and answer["sha256"] == sha and answer["cached"] is False
    assert len(gated.gets("dc.bin")) == 1


def test_a_download_nobody_waits_for_still_completes_into_the_cache(daemon, gated):
    sha = gated.add("orphan.bin", payload(800_000, 13))
    gated.hold("orphan.bin")
    leaver = _raw_post(daemon.url, {"identifier": gated.file_url("orphan.bin")})
    gated.wait_started("orphan.bin")
    leaver.close()
    wait_until(lambda: any(e.get("status") == 499 for e in daemon.logs.events("request")),
               what="the daemon to notice the hang-up")
    gated.release("orphan.bin")
    wait_until(lambda: daemon.state.resolver.in_flight() == [], what="the download to end")
    assert [e["outcome"] for e in daemon.logs.events("download")] == ["ok"]
    status, again = call_json(daemon.url, "POST", "/v1/resolve",
                              {"identifier": gated.file_url("orphan.bin")})
    assert status == 200 and again["cached"] is True and again["sha256"] == sha
    assert len(gated.gets("orphan.bin")) == 1


def test_a_cli_process_on_the_same_cache_waits_for_the_daemons_download(daemon, gated):
    sha = gated.add("xproc.bin", payload(1_000_000, 21))
    gated.hold("xproc.bin")
    url = gated.file_url("xproc.bin")
    thread, out = _in_background(call_json, daemon.url, "POST", "/v1/resolve",
                                 {"identifier": url})
    gated.wait_started("xproc.bin")
    cli = subprocess.Popen([sys.executable, "-m", "hostkit.cli", "resolve", url, "--json",
                            "--cache-dir", str(daemon.settings.cache_dir)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)  # the CLI is now waiting on the download's lock
    assert cli.poll() is None
    gated.release("xproc.bin")
    thread.join(30)
    stdout, stderr = cli.communicate(timeout=30)
    assert cli.returncode == 0, stderr
    assert out[0][0] == 200 and json.loads(stdout)["path"] == out[0][1]["path"]
    assert json.loads(stdout)["sha256"] == sha
    assert len(gated.gets("xproc.bin")) == 1


# -- the daemon as a process: signals, kill -9, tokens ----------------------------------


def _cache_env(tmp_path: Path, name: str) -> dict:
    return {"HOSTKIT_CACHE_DIR": str(tmp_path / name)}


def test_sigterm_lets_the_download_in_flight_finish(tmp_path, gated):
    sha = gated.add("term.bin", payload(2_000_000, 14))
    gated.hold("term.bin")
    d = DaemonProcess(tmp_path, "--grace", "20", env=_cache_env(tmp_path, "tcache"))
    try:
        thread, out = _in_background(call_json, d.url, "POST", "/v1/resolve",
                                     {"identifier": gated.file_url("term.bin")})
        gated.wait_started("term.bin")
        d.signal(signal.SIGTERM)
        wait_until(lambda: d.events("draining"), what="the daemon to start draining")
        with pytest.raises(OSError):  # no longer accepting connections
            call(d.url, "GET", "/healthz", timeout=2)
        assert d.proc.poll() is None  # still finishing the download
        gated.release("term.bin")
        thread.join(30)
        status, answer = out[0]
        assert status == 200 and answer["sha256"] == sha
        assert d.wait(20) == 0
    finally:
        d.stop()
    cache = tmp_path / "tcache"
    assert _blob_path(cache, sha).exists()
    assert list((cache / "tmp").iterdir()) == []
    assert d.events("stopped")[0]["finished"] == 1


def test_sigterm_after_the_grace_period_leaves_no_entry_and_resumes_later(tmp_path, gated):
    data = payload(3_000_000, 15)
    sha = gated.add("grace.bin", data)
    gated.hold("grace.bin", after=2_000_000)
    d = DaemonProcess(tmp_path, "--grace", "0.5", env=_cache_env(tmp_path, "gcache"))
    try:
        thread, out = _in_background(call_json, d.url, "POST", "/v1/resolve",
                                     {"identifier": gated.file_url("grace.bin"), "hash": sha})
        gated.wait_started("grace.bin")
        d.signal(signal.SIGTERM)
        thread.join(30)
        status, answer = out[0]
        assert status == 503 and answer["error"] == "shutting_down" and answer["hint"]
        assert d.wait(20) == 0
    finally:
        d.stop()
        gated.release("grace.bin")
    cache = tmp_path / "gcache"
    assert list((cache / "blobs" / "sha256").iterdir()) == []
    parts = list((cache / "tmp").glob("*.part"))
    kept = parts[0].stat().st_size if len(parts) == 1 else 0
    assert kept > 0  # one resumable partial, and no cache entry
    # the next resolve (here in-process, as the CLI would fall back to) resumes it
    proc = run_cli("resolve", gated.file_url("grace.bin"), sha, "--cache-dir", cache, check=True)
    assert proc.stdout.strip() == str(_blob_path(cache, sha))
    assert gated.gets("grace.bin")[-1].range == f"bytes={kept}-"


def test_a_second_signal_skips_the_grace_period(tmp_path, gated):
    sha = gated.add("twice.bin", payload(1_000_000, 22))
    gated.hold("twice.bin")
    d = DaemonProcess(tmp_path, "--grace", "120", env=_cache_env(tmp_path, "twcache"))
    try:
        thread, out = _in_background(call_json, d.url, "POST", "/v1/resolve",
                                     {"identifier": gated.file_url("twice.bin"), "hash": sha})
        gated.wait_started("twice.bin")
        d.signal(signal.SIGTERM)
        wait_until(lambda: d.events("draining"), what="the daemon to start draining")
        d.signal(signal.SIGINT)
        assert d.wait(15) == 0  # well before the 120 s grace period
        thread.join(15)
        assert out[0][0] == 503 and out[0][1]["error"] == "shutting_down"
    finally:
        d.stop()
        gated.release("twice.bin")
    assert d.events("stopped")[0]["cancelled"] == 1


def test_kill_9_then_restart_on_the_same_socket_recovers(tmp_path, gated):
    data = payload(4_000_000, 16)
    sha = gated.add("k9.bin", data)
    gated.hold("k9.bin", after=3_000_000)
    sock = str(tmp_path / "run" / "hostkit.sock")
    env = _cache_env(tmp_path, "kcache")
    d = DaemonProcess(tmp_path, socket_path=sock, env=env)
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    tmp_dir = tmp_path / "kcache" / "tmp"
    try:
        _in_background(call_json, d.url, "POST", "/v1/resolve",
                       {"identifier": gated.file_url("k9.bin")})
        gated.wait_started("k9.bin")
        wait_until(lambda: any(p.stat().st_size >= 1 << 20 for p in tmp_dir.glob("*.part")),
                   what="a partial on disk")
        d.signal(signal.SIGKILL)
        d.wait(10)
    finally:
        d.stop()
        gated.release("k9.bin")
    assert os.path.exists(sock)  # left behind by the killed daemon
    d2 = DaemonProcess(tmp_path, socket_path=sock, env=env)
    try:
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        proc = run_cli("resolve", gated.file_url("k9.bin"), "--json",
                       env={"HOSTKIT_DAEMON_URL": f"unix:{sock}"}, check=True)
        answer = json.loads(proc.stdout)
        assert answer["sha256"] == sha and answer["cached"] is False
        assert answer["path"] == str(_blob_path(tmp_path / "kcache", sha))
        resumed = gated.gets("k9.bin")[-1].range
        assert resumed and int(resumed.removeprefix("bytes=").rstrip("-")) >= 1 << 20
        assert d2.events("request")[-1]["status"] == 200  # it went through the daemon
    finally:
        d2.signal(signal.SIGTERM)
        assert d2.wait(20) == 0
    assert not os.path.exists(sock)  # a clean stop removes the socket


def test_binding_off_loopback_without_a_token_is_refused(tmp_path):
    proc = run_cli("daemon", "--host", "0.0.0.0", "--port", free_port(), timeout=30)
    assert proc.returncode == 2
    assert "refusing to listen on 0.0.0.0" in proc.stderr and "--token" in proc.stderr


def test_a_token_is_enforced_on_every_route_but_healthz(tmp_path, gated):
    gated.add("tok.bin", payload(1000, 17))
    d = DaemonProcess(tmp_path, "--token", "s3cret-token-value",
                      env=_cache_env(tmp_path, "tokcache"))
    try:
        good = {"Authorization": "Bearer s3cret-token-value"}
        assert call(d.url, "GET", "/healthz")[0] == 200
        for method, path in (("GET", "/v1/status"), ("GET", "/metrics"), ("GET", "/v1/cache"),
                             ("POST", "/v1/resolve"), ("GET", "/v1/blobs/" + "0" * 64)):
            for headers in ({}, {"Authorization": "Bearer wrong"},
                            {"Authorization": "Basic czNjcmV0"}):
                status, _, body = call(d.url, method, path, headers=headers, anonymous=True)
                assert status == 401 and json.loads(body)["error"] == "unauthorized", path
            assert call(d.url, method, path, headers=good, raw=b"{}")[0] != 401
        url = gated.file_url("tok.bin")
        env = {"HOSTKIT_DAEMON_URL": d.url}
        refused = run_cli("resolve", url, "--json", env=env)
        assert refused.returncode == 2
        assert json.loads(refused.stdout)["error"] == "unauthorized"
        ok = run_cli("resolve", url, "--json", check=True,
                     env={**env, "HOSTKIT_DAEMON_TOKEN": "s3cret-token-value"})
        assert json.loads(ok.stdout)["path"].startswith(str(tmp_path / "tokcache"))
        assert "s3cret-token-value" not in d.log()
    finally:
        d.stop()


# -- the CLI and the Python API through the daemon, and without it -----------------------


def test_cli_goes_through_the_daemon_and_falls_back_when_it_is_down(daemon, gated, settings):
    sha = gated.add("cli.bin", payload(70_000, 18))
    url = gated.file_url("cli.bin")
    via = run_cli("resolve", url, "--json", env=daemon.env, check=True)
    through = json.loads(via.stdout)
    assert through["path"] == str(_blob_path(daemon.settings.cache_dir, sha))
    assert not (settings.cache_dir / "blobs" / "sha256" / sha).exists()
    down = f"http://127.0.0.1:{free_port()}"
    local = json.loads(run_cli("resolve", url, "--json", env={"HOSTKIT_DAEMON_URL": down},
                               check=True).stdout)
    assert local["path"] == str(settings.cache_dir / "blobs" / "sha256" / sha)
    same = ("sha256", "size", "identifier", "verified", "digests")
    assert {k: local[k] for k in same} == {k: through[k] for k in same}
    # the same errors, with the same exit codes, either way
    for identifier, extra, code in ((gated.file_url("nope.bin"), [], 4),
                                    (url, ["--hash", "sha256:" + "1" * 64], 3),
                                    (url.replace("http", "gopher", 1), [], 2),
                                    (gated.file_url("never.bin"), ["--offline"], 5),
                                    (gated.file_url("never.bin"), ["--require-hash"], 2)):
        args = ["resolve", identifier, "--json", *extra]
        remote = run_cli(*args, env=daemon.env)
        inproc = run_cli(*args, env={"HOSTKIT_DAEMON_URL": down})
        assert remote.returncode == inproc.returncode == code, (remote.stderr, inproc.stderr)
        remote_err, inproc_err = json.loads(remote.stdout), json.loads(inproc.stdout)
        if code == 2:  # the hint lists backends in pluggy's (per-process) set order
            remote_err.pop("hint"), inproc_err.pop("hint")
        assert remote_err == inproc_err
    requests = [e for e in daemon.logs.events("request") if e["route"] == "/v1/resolve"]
    assert len(requests) == 6


def test_status_command(daemon):
    up = run_cli("status", "--json", env=daemon.env)
    assert up.returncode == 0
    info = json.loads(up.stdout)
    assert info["running"] is True and info["cache"]["root"] == str(daemon.settings.cache_dir)
    text = run_cli("status", env=daemon.env)
    assert text.returncode == 0 and "running at" in text.stdout
    down = run_cli("status", "--json",
                   env={"HOSTKIT_DAEMON_URL": f"http://127.0.0.1:{free_port()}"})
    assert down.returncode == 3 and json.loads(down.stdout)["running"] is False


def test_python_api_uses_the_daemon_and_rebuilds_its_errors(daemon, gated, settings,
                                                             monkeypatch):
    from hostkit import api
    from hostkit.errors import HashMismatch, NotFound

    sha = gated.add("api.bin", payload(9000, 19))
    url = gated.file_url("api.bin")
    monkeypatch.setenv("HOSTKIT_DAEMON_TOKEN", daemon.token)
    with_daemon = settings.with_overrides(daemon_url=daemon.url)
    down = settings.with_overrides(daemon_url=f"http://127.0.0.1:{free_port()}")
    through = api.resolve_info(url, settings=with_daemon)
    assert through.path == _blob_path(daemon.settings.cache_dir, sha)
    local = api.resolve_info(url, sha, settings=down)
    assert local.path == _blob_path(settings.cache_dir, sha) and local.sha256 == sha
    for s in (with_daemon, down):
        with pytest.raises(NotFound) as missing:
            api.resolve(gated.file_url("absent.bin"), settings=s)
        assert missing.value.exit_code == 4 and missing.value.hint
    errors = []
    for s in (with_daemon, down):
        with pytest.raises(HashMismatch) as bad:
            api.resolve(url + "?v=2", "sha256:" + "2" * 64, settings=s)
        errors.append(bad.value)
    assert errors[0].to_dict() == errors[1].to_dict() and errors[0].found == f"sha256:{sha}"


def test_a_locked_index_never_stalls_the_event_loop(daemon, gated):
    """Cache routes wait for a busy index in a worker thread; other requests go on meanwhile."""
    import sqlite3
    import threading

    sha = gated.add("lockwait.bin", payload(10_000, 77))
    assert call_json(daemon.url, "POST", "/v1/resolve",
                     {"identifier": gated.file_url("lockwait.bin"), "hash": sha})[0] == 200
    holder = sqlite3.connect(daemon.settings.cache_dir / "index.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process is writing the index
    answers: list[int] = []
    pinning = threading.Thread(target=lambda: answers.append(
        call(daemon.url, "POST", f"/v1/cache/{sha}/pin")[0]))
    pinning.start()  # a write: it waits for the lock
    time.sleep(0.5)
    started = time.monotonic()
    for path in ("/healthz", "/v1/openapi.json"):  # routes that need no index
        assert call(daemon.url, "GET", path, timeout=60)[0] == 200
    stalled = time.monotonic() - started
    holder.execute("COMMIT")
    holder.close()
    pinning.join(60)
    assert answers == [200]  # the pin went through once the lock was free
    assert stalled < 1.5, f"the event loop stalled {stalled:.1f} s on the locked index"
