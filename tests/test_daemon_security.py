"""The daemon's security model and its own integrity checks, against real daemon processes.

- the default daemon is a 0600 unix socket in the user's runtime dir, found by the
  CLI and the API with no configuration; TCP always needs a token, generated and
  written 0600 for the owner when none is given;
- foreign Host / Origin headers are refused (DNS rebinding, cross-site requests);
- another local user (a real second account) can neither use a default daemon nor,
  through a shared one, the owner's credentials or the blobs only they gave;
- the job queue is bounded, fair between callers, and stalled downloads give their
  slots back;
- a blob whose bytes rotted is quarantined by the background scrub, and
  ``/v1/blobs`` never sends it as a complete body.
"""

from __future__ import annotations

import grp
import hashlib
import http.client
import json
import os
import pwd
import signal
import stat
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from tests import github_fixtures as ghfx
from tests.conftest import run_cli
from tests.daemon_fixtures import (
    DaemonProcess,
    DaemonThread,
    GatedOrigin,
    call,
    call_json,
    payload,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)

OTHER_USER = "hostkit-test-other"
SHARED_GROUP = "hostkit-test-shared"


@pytest.fixture(scope="module")
def gated():
    origin = GatedOrigin().start()
    yield origin
    origin.stop()


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _requests(d: DaemonProcess, route: str) -> list[dict]:
    return [e for e in d.events("request") if e["route"] == route]


def _wait_for_requests(d: DaemonProcess, n: int) -> None:
    """Exactly ``n`` resolve requests logged (a line may follow its answer by a moment)."""
    wait_until(lambda: len(_requests(d, "/v1/resolve")) >= n, timeout=5,
               what=f"{n} logged resolve requests")
    assert len(_requests(d, "/v1/resolve")) == n


# -- the default: a private socket, found with no configuration --------------------------


def test_the_default_daemon_is_a_private_socket_the_cli_and_api_find(tmp_path, gated,
                                                                      monkeypatch):
    sha = gated.add("default.bin", payload(40_000, 101))
    url = gated.file_url("default.bin")
    run = tmp_path / "xdg-run"
    run.mkdir(mode=0o700)
    daemon_cache = tmp_path / "daemon-cache"
    sock = run / "hostkit" / "daemon.sock"
    env = {"XDG_RUNTIME_DIR": str(run), "HOSTKIT_CACHE_DIR": str(daemon_cache)}
    d = DaemonProcess(tmp_path, env=env, socket_path=str(sock), default_address=True)
    try:
        assert d.events("listening")[0]["url"] == f"unix:{sock}"
        assert _mode(sock) == 0o600 and _mode(sock.parent) == 0o700
        # the CLI, on its own cache and with no HOSTKIT_DAEMON_URL, goes through the daemon
        proc = run_cli("resolve", url, "--json", env={"XDG_RUNTIME_DIR": str(run)}, check=True)
        assert json.loads(proc.stdout)["path"] == str(daemon_cache / "blobs/sha256" / sha)
        _wait_for_requests(d, 1)
        # and so does the Python API
        from hostkit import api
        from hostkit.settings import load_settings

        monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
        info = api.resolve_info(url, sha, settings=load_settings())
        assert info.path == daemon_cache / "blobs/sha256" / sha
        _wait_for_requests(d, 2)
        assert run_cli("status", "--json", env={"XDG_RUNTIME_DIR": str(run)}).returncode == 0
    finally:
        d.signal(signal.SIGTERM)
        d.wait(20)
    assert not sock.exists()
    # no daemon: the same command resolves in-process, from the caller's own cache
    proc = run_cli("resolve", url, "--json", env={"XDG_RUNTIME_DIR": str(run)}, check=True)
    assert json.loads(proc.stdout)["path"].startswith(os.environ["HOSTKIT_CACHE_DIR"])


def test_without_a_runtime_dir_the_socket_lives_in_a_private_dir_of_the_cache(tmp_path, gated):
    sha = gated.add("noxdg.bin", payload(30_000, 102))
    cache = Path(os.environ["HOSTKIT_CACHE_DIR"])  # the CLI's own cache: the same user's
    sock = cache / "run" / "daemon.sock"
    d = DaemonProcess(tmp_path, socket_path=str(sock), default_address=True)
    try:
        assert _mode(sock) == 0o600 and _mode(sock.parent) == 0o700
        proc = run_cli("resolve", gated.file_url("noxdg.bin"), sha, check=True)
        assert proc.stdout.strip() == str(cache / "blobs/sha256" / sha)
        _wait_for_requests(d, 1)
    finally:
        d.stop()


def test_a_tcp_daemon_always_requires_a_token_and_tells_only_its_owner(tmp_path, gated):
    sha = gated.add("tcp.bin", payload(20_000, 103))
    run = tmp_path / "xdg-run"
    run.mkdir(mode=0o700)
    env = {"XDG_RUNTIME_DIR": str(run), "HOSTKIT_CACHE_DIR": str(tmp_path / "tcp-cache")}
    d = DaemonProcess(tmp_path, env=env)  # loopback, no token given
    try:
        listening = d.events("listening")[0]
        assert listening["auth"] is True
        token_file = Path(listening["token_file"])
        assert token_file == run / "hostkit" / f"daemon-{d.port}.json"
        assert _mode(token_file) == 0o600 and _mode(token_file.parent) == 0o700
        token = json.loads(token_file.read_text())["token"]
        assert len(token) >= 32 and token not in d.log()
        status, _, body = call(d.url, "POST", "/v1/resolve",
                               {"identifier": gated.file_url("tcp.bin")}, anonymous=True)
        assert status == 401 and json.loads(body)["error"] == "unauthorized"
        assert not gated.gets("tcp.bin")
        # the owner's CLI finds the token next to its runtime dir: no HOSTKIT_DAEMON_TOKEN
        proc = run_cli("resolve", gated.file_url("tcp.bin"), sha, "--json", check=True,
                       env={"XDG_RUNTIME_DIR": str(run), "HOSTKIT_DAEMON_URL": d.url})
        assert json.loads(proc.stdout)["path"].startswith(str(tmp_path / "tcp-cache"))
        assert _requests(d, "/v1/resolve")[-1]["status"] == 200
    finally:
        d.signal(signal.SIGTERM)
        d.wait(20)
    assert not token_file.exists()


# -- DNS rebinding and cross-site requests ----------------------------------------------------


def test_foreign_host_and_origin_headers_are_refused(tmp_path, gated):
    gated.add("csrf.bin", payload(1000, 104))
    d = DaemonThread(tmp_path / "hcache").start()
    try:
        port = d.url.rsplit(":", 1)[1]
        body = {"identifier": gated.file_url("csrf.bin")}
        for headers, kind in (({"Host": f"evil.example:{port}"}, "forbidden_host"),
                              ({"Host": f"127.0.0.1:{int(port) + 1}"}, "forbidden_host"),
                              ({"Host": "127.0.0.1"}, "forbidden_host"),
                              ({"Origin": "http://evil.example"}, "forbidden_origin"),
                              ({"Origin": f"http://evil.example:{port}"}, "forbidden_origin"),
                              ({"Origin": "null"}, "forbidden_origin")):
            for method, path, data in (("POST", "/v1/resolve", body), ("GET", "/v1/cache", None),
                                       ("DELETE", "/v1/cache/" + "a" * 64, None)):
                status, _, raw = call(d.url, method, path, data, headers=headers)
                assert status == 403, (headers, path, status, raw[:200])
                err = json.loads(raw)
                assert err["error"] == kind and err["hint"], err
        assert not gated.gets("csrf.bin")  # nothing was fetched for a refused request
        for headers in ({"Host": f"localhost:{port}"}, {"Host": f"127.0.0.1:{port}"},
                        {"Origin": f"http://127.0.0.1:{port}"}):
            assert call(d.url, "GET", "/v1/status", headers=headers)[0] == 200, headers
        assert call(d.url, "GET", "/healthz", headers={"Host": "evil.example"})[0] == 200
    finally:
        d.stop()


# -- the job queue --------------------------------------------------------------------------


def test_the_job_queue_is_bounded_with_429_and_retry_after(tmp_path, gated):
    gated.add("queue.bin", payload(300_000, 105))
    gated.hold("queue.bin")
    d = DaemonProcess(tmp_path, "--max-queued", "10", "--jobs", "2",
                      env={"HOSTKIT_CACHE_DIR": str(tmp_path / "qcache")})
    try:
        items = [gated.file_url("queue.bin") + f"?n={i}" for i in range(6)]
        assert call_json(d.url, "POST", "/v1/prefetch", {"items": items})[0] == 202
        status, headers, raw = call(d.url, "POST", "/v1/prefetch", {"items": items})
        assert status == 429 and int(headers["retry-after"]) > 0
        err = json.loads(raw)
        assert err["error"] == "queue_full" and err["hint"]
        status, headers, _ = call(d.url, "POST", "/v1/resolve",
                                  {"identifier": items[0] + "&x", "wait": False})
        assert status == 202  # room for 4 more
        assert call(d.url, "POST", "/v1/prefetch", {"items": items[:5]})[0] == 429
        gated.release("queue.bin")
        wait_until(lambda: call_json(d.url, "GET", "/v1/status")[1]["jobs"]["active"] == 0,
                   what="the jobs to finish")
        assert call_json(d.url, "POST", "/v1/prefetch", {"items": items})[0] == 202
    finally:
        gated.release("queue.bin")
        d.stop()


def test_stalled_downloads_give_their_slots_back(tmp_path, gated):
    gated.add("stuck-a.bin", payload(400_000, 106))
    gated.add("stuck-b.bin", payload(400_000, 107))
    sha = gated.add("after.bin", payload(5000, 108))
    gated.hold("stuck-a.bin")
    gated.hold("stuck-b.bin")
    d = DaemonProcess(tmp_path, "--jobs", "2", "--stall", "1",
                      env={"HOSTKIT_CACHE_DIR": str(tmp_path / "scache")})
    try:
        stuck = call_json(d.url, "POST", "/v1/prefetch", {"items": [
            gated.file_url("stuck-a.bin"), gated.file_url("stuck-b.bin")]})[1]
        gated.wait_started("stuck-a.bin")
        gated.wait_started("stuck-b.bin")
        later = call_json(d.url, "POST", "/v1/prefetch",
                          {"items": [gated.file_url("after.bin")]})[1]
        wait_until(lambda: call_json(d.url, "GET", later["href"])[1]["state"] == "done",
                   timeout=20, what="the later job to get a slot")
        assert call_json(d.url, "GET", later["href"])[1]["items"][0]["result"]["sha256"] == sha
        # the stalled items were stopped, not left running without a slot
        wait_until(lambda: call_json(d.url, "GET", stuck["href"])[1]["state"] == "failed",
                   what="the stalled job to end")
        held = call_json(d.url, "GET", stuck["href"])[1]
        assert all(i["state"] == "failed" and i["error"]["error"] == "stalled"
                   and i["error"]["hint"] for i in held["items"]), held
        assert len(d.events("job_item_stalled")) == 2
        assert call_json(d.url, "GET", "/v1/status")[1]["in_flight_count"] == 0
    finally:
        gated.release("stuck-a.bin")
        gated.release("stuck-b.bin")
        d.stop()


@pytest.fixture(scope="module")
def trickling():
    from tests.origin import OriginServer

    server = OriginServer()
    origin = server.start()
    yield origin
    server.stop()


def test_stalled_items_end_and_never_run_beyond_the_slots(tmp_path, trickling):
    names = [f"trickle-{i}.bin" for i in range(12)]
    for i, name in enumerate(names):
        trickling.add(name, payload(200_000, 300 + i))  # 8 KiB, then one byte a second
    cache = tmp_path / "tcache"
    d = DaemonProcess(tmp_path, "--jobs", "2", "--stall", "2",
                      env={"HOSTKIT_CACHE_DIR": str(cache)})
    try:
        job = call_json(d.url, "POST", "/v1/prefetch", {"items": [
            f"{trickling.url}/trickle/{name}" for name in names]})[1]
        most, state = 0, None
        deadline = time.monotonic() + 75
        while time.monotonic() < deadline:
            status = call_json(d.url, "GET", "/v1/status")[1]
            most = max(most, status["in_flight_count"], len(status["in_flight"]))
            state = call_json(d.url, "GET", job["href"])[1]
            if state["state"] != "running" and state["state"] != "queued":
                break
            time.sleep(0.1)
        assert most <= 2, f"{most} downloads in flight with 2 slots"
        assert state["state"] == "failed", state
        for item in state["items"]:
            assert item["state"] == "failed" and item["error"]["error"] == "stalled", item
            assert "resume" in item["error"]["hint"]
        wait_until(lambda: call_json(d.url, "GET", "/v1/status")[1]["in_flight_count"] == 0,
                   what="every stalled download to stop")
        assert len(trickling.gets("/trickle/")) == 12  # each tried once, none left running
        # the partial was kept: asking again resumes after the bytes already received
        call_json(d.url, "POST", "/v1/resolve",
                  {"identifier": f"{trickling.url}/trickle/{names[0]}", "wait": False})
        wait_until(lambda: len(trickling.gets(f"/trickle/{names[0]}")) == 2,
                   what="the second request")
        resumed = trickling.gets(f"/trickle/{names[0]}")[1].range
        assert resumed and int(resumed.removeprefix("bytes=").rstrip("-")) >= 8192, resumed
    finally:
        d.stop()


# -- bit rot: the background scrub and /v1/blobs ---------------------------------------------


def _rot(blob: Path, at: int) -> None:
    os.chmod(blob, 0o600)
    with open(blob, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_blobs_route_never_sends_rotten_bytes_as_a_complete_body(tmp_path, gated):
    data = payload(9_000_000, 109)  # several read chunks
    sha = gated.add("rot.bin", data)
    d = DaemonThread(tmp_path / "rcache").start()
    try:
        call_json(d.url, "POST", "/v1/resolve", {"identifier": gated.file_url("rot.bin")})
        blob = tmp_path / "rcache" / "blobs" / "sha256" / sha
        status, headers, body = call(d.url, "GET", f"/v1/blobs/{sha}")
        assert status == 200 and body == data
        _rot(blob, len(data) - 10)  # in the last chunk: everything before it was already sent
        with pytest.raises(http.client.IncompleteRead) as cut:
            call(d.url, "GET", f"/v1/blobs/{sha}")
        assert len(cut.value.partial) < len(data)
        wait_until(lambda: d.logs.events("quarantined"), what="the quarantine log line")
        event = d.logs.events("quarantined")[0]
        assert event["sha256"] == sha and event["found_by"] == "serve"
        assert not blob.exists()
        assert [p.name.split(".")[0] for p in (tmp_path / "rcache" / "quarantine").iterdir()] \
            == [sha]
        assert call(d.url, "GET", f"/v1/blobs/{sha}")[0] == 404
        metrics = call(d.url, "GET", "/metrics")[2].decode()
        assert 'hostkit_quarantined_blobs_total{found_by="serve"} 1' in metrics
        again = call_json(d.url, "POST", "/v1/resolve", {"identifier": gated.file_url("rot.bin")})
        assert again[1]["cached"] is False and Path(again[1]["path"]).read_bytes() == data
    finally:
        d.stop()


def test_ranged_and_head_requests_send_only_a_blob_hashed_whole(tmp_path, gated):
    never = payload(3_000_000, 120)
    served = payload(3_000_000, 121)
    fresh = payload(2_000_000, 122)
    sha_never, sha_served = gated.add("r-never.bin", never), gated.add("r-served.bin", served)
    sha_fresh = gated.add("r-fresh.bin", fresh)
    cache = tmp_path / "rgcache"
    d = DaemonProcess(tmp_path, "--scrub-rate", "0", env={"HOSTKIT_CACHE_DIR": str(cache)})
    try:
        for name in ("r-never.bin", "r-served.bin", "r-fresh.bin"):
            call_json(d.url, "POST", "/v1/resolve", {"identifier": gated.file_url(name)})
        # a blob never sent whole: the first ranged request hashes it, and refuses rot
        _rot(cache / "blobs" / "sha256" / sha_never, 2_500_000)
        status, headers, raw = call(d.url, "GET", f"/v1/blobs/{sha_never}",
                                    headers={"Range": "bytes=0-"})
        assert status == 404 and headers["content-type"].startswith("application/json")
        assert json.loads(raw)["error"] == "blob_corrupt" and json.loads(raw)["hint"]
        assert not (cache / "blobs" / "sha256" / sha_never).exists()
        # a blob sent whole (remembered as verified), then changed on disk: HEAD refuses it
        assert call(d.url, "GET", f"/v1/blobs/{sha_served}")[2] == served
        status, _, body = call(d.url, "GET", f"/v1/blobs/{sha_served}",
                               headers={"Range": "bytes=10-19"})
        assert status == 206 and body == served[10:20]
        _rot(cache / "blobs" / "sha256" / sha_served, 5)
        status, _, _ = call(d.url, "HEAD", f"/v1/blobs/{sha_served}")
        assert status == 404
        status, _, raw = call(d.url, "GET", f"/v1/blobs/{sha_served}",
                              headers={"Range": "bytes=0-9"})
        assert status == 404 and json.loads(raw)["error"] == "blob_not_found"
        found = sorted(e["sha256"] for e in d.events("quarantined"))
        assert found == sorted([sha_never, sha_served])
        assert {e["found_by"] for e in d.events("quarantined")} == {"serve"}
        # a good blob: HEAD and ranges work, hashed once before the first of them
        status, headers, _ = call(d.url, "HEAD", f"/v1/blobs/{sha_fresh}")
        assert status == 200 and headers["etag"] == f'"{sha_fresh}"'
        assert headers["content-length"] == str(len(fresh))
        status, _, body = call(d.url, "GET", f"/v1/blobs/{sha_fresh}",
                               headers={"Range": "bytes=-100"})
        assert status == 206 and body == fresh[-100:]
    finally:
        d.stop()


def test_a_blob_hashed_whole_recently_is_sent_again_without_hashing(tmp_path, gated):
    data = payload(6_000_000, 125)
    sha = gated.add("fresh-whole.bin", data)
    cache = tmp_path / "fwcache"
    d = DaemonProcess(tmp_path, "--scrub-rate", "0", env={"HOSTKIT_CACHE_DIR": str(cache)})
    try:
        call_json(d.url, "POST", "/v1/resolve", {"identifier": gated.file_url("fresh-whole.bin")})
        reads = []
        for _ in range(3):
            before = _rchar(d.proc.pid)
            assert call(d.url, "GET", f"/v1/blobs/{sha}")[2] == data
            reads.append(_rchar(d.proc.pid) - before)
        # the first full GET sends and hashes (two reads of the file); later ones only send
        assert reads[0] >= 2 * len(data), reads
        assert all(n < 1.5 * len(data) for n in reads[1:]), reads
        # a write to the file is seen: hashed again, and never sent whole
        _rot(cache / "blobs" / "sha256" / sha, len(data) - 10)
        with pytest.raises(http.client.IncompleteRead):
            call(d.url, "GET", f"/v1/blobs/{sha}")
    finally:
        d.stop()


def test_a_whole_blob_hash_vouches_for_full_sends_only_for_a_while(tmp_path):
    from hostkit_daemon.blobs import FRESH_FOR, VerifiedBlobs

    now = [1000.0]
    memo = VerifiedBlobs(clock=lambda: now[0])
    blob = tmp_path / "b"
    blob.write_bytes(b"x")
    st = os.stat(blob)
    memo.add("a" * 64, st)
    assert memo.fresh("a" * 64, st) and memo.holds("a" * 64, st)
    now[0] += FRESH_FOR + 1
    assert not memo.fresh("a" * 64, st)  # hashed again before a full send
    assert memo.holds("a" * 64, st)  # ranges and HEAD still rely on it (the scrub renews it)
    blob.write_bytes(b"y")
    assert not memo.holds("a" * 64, os.stat(blob))


def test_verify_on_hit_is_not_bypassed_by_remembered_answers(tmp_path, gated):
    data = payload(500_000, 123)
    sha = gated.add("voh.bin", data)
    cache = tmp_path / "vcache"
    d = DaemonProcess(tmp_path, "--scrub-rate", "0",
                      env={"HOSTKIT_CACHE_DIR": str(cache), "HOSTKIT_VERIFY_ON_HIT": "1"})
    try:
        body = {"identifier": gated.file_url("voh.bin"), "hash": sha}
        for _ in range(3):  # a miss, then hits (the daemon used to remember those answers)
            assert call_json(d.url, "POST", "/v1/resolve", body)[0] == 200
        _rot(cache / "blobs" / "sha256" / sha, 1000)
        status, answer = call_json(d.url, "POST", "/v1/resolve", body)
        assert status == 200 and answer["cached"] is False, answer
        assert Path(answer["path"]).read_bytes() == data
        assert len(gated.gets("voh.bin")) == 2
        assert [p.name.split(".")[0] for p in (cache / "quarantine").iterdir()] == [sha]
    finally:
        d.stop()


def _rchar(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/PID/io")


def test_the_scrub_holds_its_rate_on_a_large_blob_and_stops_promptly(tmp_path, gated):
    gated.add("scrub-big.bin", payload(20 << 20, 124))
    cache = tmp_path / "bigcache"
    run_cli("resolve", gated.file_url("scrub-big.bin"), "--cache-dir", cache, check=True)
    env = {"HOSTKIT_CACHE_DIR": str(cache)}
    # what a daemon reads in its first seconds without any scrub (imports, the index...)
    quiet = DaemonProcess(tmp_path, "--scrub-rate", "0", env=env)
    try:
        time.sleep(3)
        baseline = _rchar(quiet.proc.pid)
    finally:
        quiet.stop()
    d = DaemonProcess(tmp_path, "--scrub-rate", str(1 << 20), env=env)  # 1 MiB/s
    try:
        time.sleep(3)
        scrubbed = _rchar(d.proc.pid) - baseline
        assert scrubbed < 10 << 20, f"{scrubbed >> 20} MiB read in 3 s at 1 MiB/s"
        metrics = call(d.url, "GET", "/metrics")[2].decode()
        counted = int(next(line.split()[1] for line in metrics.splitlines()
                           if line.startswith("hostkit_scrubbed_bytes_total")))
        assert 0 < counted < 10 << 20
        # shutdown does not wait for the paced read of the rest of the blob
        started = time.monotonic()
        d.signal(signal.SIGTERM)
        assert d.wait(20) == 0
        assert time.monotonic() - started < 5
    finally:
        d.stop()


def test_the_background_scrub_quarantines_rotten_blobs(tmp_path, gated):
    good_data, bad_data = payload(200_000, 110), payload(300_000, 111)
    good, bad = gated.add("scrub-good.bin", good_data), gated.add("scrub-bad.bin", bad_data)
    cache = tmp_path / "sccache"
    d = DaemonProcess(tmp_path, "--scrub-rate", str(50 << 20),
                      env={"HOSTKIT_CACHE_DIR": str(cache)})
    try:
        for name in ("scrub-good.bin", "scrub-bad.bin"):
            call_json(d.url, "POST", "/v1/resolve", {"identifier": gated.file_url(name)})
        _rot(cache / "blobs" / "sha256" / bad, 1234)
        wait_until(lambda: d.events("quarantined"), timeout=30, what="the scrub to find it")
        event = d.events("quarantined")[0]
        assert event["sha256"] == bad and event["found_by"] == "scrub"
        assert not (cache / "blobs" / "sha256" / bad).exists()
        assert (cache / "blobs" / "sha256" / good).read_bytes() == good_data
        again = call_json(d.url, "POST", "/v1/resolve",
                          {"identifier": gated.file_url("scrub-bad.bin")})[1]
        assert again["cached"] is False and again["sha256"] == bad
    finally:
        d.stop()


# -- another local user ---------------------------------------------------------------------

_OTHER_CLIENT = textwrap.dedent('''
    """Run as another user: one request to the daemon, printed as JSON."""
    import http.client, json, socket, sys

    where, method, path, body = sys.argv[1:5]
    class Unix(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(where[5:])
    try:
        conn = Unix("localhost", timeout=30) if where.startswith("unix:") else \\
            http.client.HTTPConnection(*where[7:].split(":"), timeout=30)
        conn.request(method, path, body=body or None,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        print(json.dumps({"status": resp.status, "body": data.decode("latin-1")}))
    except OSError as exc:
        print(json.dumps({"status": None, "error": type(exc).__name__}))
''')


@pytest.fixture(scope="module")
def other_user():
    """A real second local account (and a group for shared sockets), created if missing."""
    if os.geteuid() != 0:
        pytest.skip("creating a second local user needs root (the tests run as root in CI)")
    if subprocess.run(["getent", "group", SHARED_GROUP], capture_output=True).returncode:
        subprocess.run(["groupadd", SHARED_GROUP], check=True)
    if subprocess.run(["id", OTHER_USER], capture_output=True).returncode:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        OTHER_USER], check=True)
    subprocess.run(["usermod", "-aG", SHARED_GROUP, OTHER_USER], check=True)
    return pwd.getpwnam(OTHER_USER)


def _as_other(user, url: str, method: str, path: str, body=None) -> tuple:
    """One request from a process of the other user (the system python: no venv of root's)."""
    proc = subprocess.run(
        ["/usr/bin/python3", "-c", _OTHER_CLIENT, url, method, path,
         json.dumps(body) if body else ""],
        capture_output=True, text=True, timeout=60, user=user.pw_uid, group=user.pw_gid,
        extra_groups=[grp.getgrnam(SHARED_GROUP).gr_gid], env={"PATH": "/usr/bin:/bin"},
        cwd="/")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    body = out.get("body")
    return out["status"], json.loads(body) if body and body.startswith("{") else body


def test_another_local_user_cannot_use_a_default_daemon(tmp_path, gated, other_user):
    sha = gated.add("mine.bin", payload(10_000, 112))
    base = Path("/tmp") / f"hostkit-test-{os.getpid()}-{tmp_path.name}"
    base.mkdir(mode=0o755)
    try:
        run = base / "run"
        run.mkdir(mode=0o755)  # even reachable, the socket itself is the owner's only
        env = {"XDG_RUNTIME_DIR": str(run), "HOSTKIT_CACHE_DIR": str(base / "cache")}
        sock = run / "hostkit" / "daemon.sock"
        unix = DaemonProcess(tmp_path, env=env, socket_path=str(sock), default_address=True)
        tcp = DaemonProcess(tmp_path, env=env)
        try:
            call_json(unix.url, "POST", "/v1/resolve", {"identifier": gated.file_url("mine.bin")})
            os.chmod(sock.parent, 0o755)  # not even a reachable directory lets them in
            status, err = _as_other(other_user, unix.url, "GET", "/v1/status")
            assert status is None and err is None
            for method, path, body in (("POST", "/v1/resolve",
                                        {"identifier": gated.file_url("mine.bin")}),
                                       ("GET", f"/v1/blobs/{sha}", None),
                                       ("DELETE", f"/v1/cache/{sha}", None)):
                status, answer = _as_other(other_user, tcp.url, method, path, body)
                assert status == 401 and answer["error"] == "unauthorized", (path, answer)
            assert len(gated.gets("mine.bin")) == 1
            assert (base / "cache" / "blobs" / "sha256" / sha).exists()
        finally:
            unix.stop()
            tcp.stop()
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


@pytest.fixture(scope="module")
def synapse():
    from tests.synapse_standin import SynapseServer

    server = SynapseServer()
    server.start()
    yield server.synapse
    server.stop()


def test_a_shared_daemon_never_lends_its_credentials(tmp_path, gated, other_user, synapse):
    from tests.synapse_standin import TOKEN

    public = gated.add("public.bin", payload(20_000, 113))
    private_data = payload(25_000, 114)
    private_id = f"synapse:{synapse.add_file('private.bin', private_data, access='private')}"
    private = hashlib.sha256(private_data).hexdigest()
    base = Path("/tmp") / f"hostkit-shared-{os.getpid()}-{tmp_path.name}"
    base.mkdir(mode=0o755)
    sock = base / "sock" / "daemon.sock"
    env = {"HOSTKIT_CACHE_DIR": str(base / "cache"), "HOME": str(tmp_path / "home"),
           "HOSTKIT_SYNAPSE_ENDPOINT": synapse.url, "SYNAPSE_AUTH_TOKEN": TOKEN,
           "HOSTKIT_SYNAPSE_CONFIG": str(tmp_path / "synapseConfig")}
    d = DaemonProcess(tmp_path, "--group", SHARED_GROUP, env=env, socket_path=str(sock))
    try:
        assert _mode(sock) == 0o660 and os.stat(sock).st_gid == grp.getgrnam(SHARED_GROUP).gr_gid
        assert _mode(sock.parent) == 0o710
        owner = call_json(d.url, "POST", "/v1/resolve", {"identifier": private_id})
        assert owner[0] == 200 and owner[1]["sha256"] == private, owner
        api_calls = len(synapse.hits)
        # the other user: anonymous sources yes, the owner's credentialed ones no
        status, answer = _as_other(other_user, d.url, "POST", "/v1/resolve",
                                   {"identifier": gated.file_url("public.bin")})
        assert status == 200 and answer["sha256"] == public
        for identifier in (private_id, private_id + ".1", "s3://bucket/key", "gs://bucket/k"):
            status, answer = _as_other(other_user, d.url, "POST", "/v1/resolve",
                                       {"identifier": identifier})
            assert status == 403 and answer["error"] == "credentials_not_lent", answer
            assert answer["hint"]
        status, answer = _as_other(other_user, d.url, "POST", "/v1/prefetch",
                                   {"items": [gated.file_url("public.bin"), private_id]})
        assert status == 403 and answer["message"].startswith("items[1]")
        assert len(synapse.hits) == api_calls  # the token was not used for them
        # bytes: the public blob, not the one only credentials gave, even named by its hash
        assert _as_other(other_user, d.url, "GET", f"/v1/blobs/{public}")[0] == 200
        status, _ = _as_other(other_user, d.url, "POST", "/v1/resolve",
                              {"identifier": gated.file_url("public.bin") + "?x",
                               "hash": private})
        status, answer = _as_other(other_user, d.url, "GET", f"/v1/blobs/{private}")
        assert status == 404 and answer["error"] == "blob_not_found"
        assert call(d.url, "GET", f"/v1/blobs/{private}")[2] == private_data  # the owner can
        # and no cache management
        for method, path in (("GET", "/v1/cache"), ("GET", f"/v1/cache/{private}"),
                             ("DELETE", f"/v1/cache/{private}"),
                             ("POST", f"/v1/cache/{private}/pin")):
            status, answer = _as_other(other_user, d.url, method, path)
            assert status == 403 and answer["error"] == "forbidden", (path, answer)
        assert (base / "cache" / "blobs" / "sha256" / private).exists()
        assert TOKEN not in d.log()
    finally:
        d.stop()
        subprocess.run(["rm", "-rf", str(base)], check=False)


#: hostkit run by the other user: the system python (same ABI as the venv's, which lives
#: under root's home) with the venv's site-packages, the editable install's .pth included.
_OTHER_HOSTKIT = ("import site, sys; site.addsitedir(sys.argv.pop(1)); "
                  "from hostkit.cli import main; sys.exit(main(sys.argv[1:]))")


def _hostkit_as_other(user, env: dict, *args) -> subprocess.CompletedProcess:
    import sysconfig

    return subprocess.run(
        ["/usr/bin/python3", "-S", "-c", _OTHER_HOSTKIT, sysconfig.get_paths()["purelib"],
         *map(str, args)], capture_output=True, text=True, timeout=120, user=user.pw_uid,
        group=user.pw_gid, extra_groups=[grp.getgrnam(SHARED_GROUP).gr_gid],
        env={"PATH": "/usr/bin:/bin", **env}, cwd="/")


def test_another_users_cli_resolves_in_process_when_a_shared_daemon_cannot_serve_it(
        tmp_path, gated, other_user, synapse):
    """The shared daemon declines the other user's credentialed source (its token is not
    lent) and its own copies are unreadable to them: their CLI resolves in-process, with
    their own token and cache, instead of failing or printing a path they cannot read."""
    from tests.synapse_standin import TOKEN

    public_data, private_data = payload(15_000, 120), payload(16_000, 121)
    gated.add("fallback-public.bin", public_data)
    private_id = f"synapse:{synapse.add_file('fb.bin', private_data, access='private')}"
    base = Path("/tmp") / f"hostkit-fallback-{os.getpid()}-{tmp_path.name}"
    base.mkdir(mode=0o755)
    sock = base / "sock" / "daemon.sock"
    env = {"HOSTKIT_CACHE_DIR": str(base / "cache"), "HOME": str(tmp_path / "home"),
           "HOSTKIT_SYNAPSE_ENDPOINT": synapse.url, "SYNAPSE_AUTH_TOKEN": TOKEN,
           "HOSTKIT_SYNAPSE_CONFIG": str(tmp_path / "synapseConfig")}
    d = DaemonProcess(tmp_path, "--group", SHARED_GROUP, env=env, socket_path=str(sock))
    theirs = base / "theirs"
    theirs.mkdir()
    os.chown(theirs, other_user.pw_uid, other_user.pw_gid)
    their_env = {"HOSTKIT_DAEMON_URL": d.url, "HOSTKIT_CACHE_DIR": str(theirs / "cache"),
                 "HOME": str(theirs), "HOSTKIT_SYNAPSE_ENDPOINT": synapse.url,
                 "SYNAPSE_AUTH_TOKEN": TOKEN, "HOSTKIT_SYNAPSE_CONFIG": str(theirs / "none")}
    try:
        assert call_json(d.url, "POST", "/v1/resolve", {"identifier": private_id})[0] == 200
        for identifier, data in ((private_id, private_data),
                                 (gated.file_url("fallback-public.bin"), public_data)):
            proc = _hostkit_as_other(other_user, their_env, "resolve", identifier, "--json", "-v")
            assert proc.returncode == 0, proc.stderr
            answer = json.loads(proc.stdout)
            assert answer["path"].startswith(str(theirs / "cache")), answer
            assert Path(answer["path"]).read_bytes() == data
            assert answer["sha256"] == hashlib.sha256(data).hexdigest()
            assert TOKEN not in proc.stdout + proc.stderr
    finally:
        d.stop()
        subprocess.run(["rm", "-rf", str(base)], check=False)


github_server = ghfx.github_server


def test_a_shared_daemon_never_lends_a_token_an_https_url_would_carry(
        tmp_path, other_user, github_server):
    """A private repository's raw URL is plain https, but the daemon would send its owner's
    GH_TOKEN with it: refused to another user as credentials_not_lent, with no request."""
    github = github_server
    from tests.standins.github import TOKEN

    github.reset()
    commit = github.commit("o/private", {"w.bin": payload(5000, 122)}, private=True)
    public = github.commit("o/open", {"p.bin": payload(4000, 123)})
    raw = f"{github.raw_url}/o/private/{commit}/w.bin"
    base = Path("/tmp") / f"hostkit-gh-{os.getpid()}-{tmp_path.name}"
    base.mkdir(mode=0o755)
    sock = base / "sock" / "daemon.sock"
    env = {"HOSTKIT_CACHE_DIR": str(base / "cache"), "HOME": str(tmp_path / "home"),
           "GITHUB_TOKEN": TOKEN, "HOSTKIT_GITHUB_API_URL": github.api_url,
           "HOSTKIT_GITHUB_RAW_URL": github.raw_url, "HOSTKIT_GITHUB_LFS_URL": github.lfs_url}
    d = DaemonProcess(tmp_path, "--group", SHARED_GROUP, env=env, socket_path=str(sock))
    try:
        first = call_json(d.url, "POST", "/v1/resolve", {"identifier": raw})
        assert first[0] == 200
        seen = len(github.hits)
        status, answer = _as_other(other_user, d.url, "POST", "/v1/resolve", {"identifier": raw})
        assert status == 403 and answer["error"] == "credentials_not_lent", answer
        assert "sha256" not in answer and len(github.hits) == seen
        # the owner's repeated request is answered from memory by its bytes; the very same
        # bytes from the other user are not (the memory is the owner's, checks included)
        pinned = {"identifier": raw, "hash": first[1]["sha256"]}
        for _ in range(2):
            assert call_json(d.url, "POST", "/v1/resolve", pinned)[0] == 200
        status, answer = _as_other(other_user, d.url, "POST", "/v1/resolve", pinned)
        assert status == 403 and answer["error"] == "credentials_not_lent", answer
        assert "sha256" not in answer and len(github.hits) == seen
        # with the token set, even a public repository's file is fetched with it: not lent
        status, answer = _as_other(other_user, d.url, "POST", "/v1/resolve",
                                   {"identifier": f"{github.raw_url}/o/open/{public}/p.bin"})
        assert status == 403 and answer["error"] == "credentials_not_lent", answer
        assert TOKEN not in d.log()
    finally:
        d.stop()
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_a_shared_daemon_serves_blobs_fetched_with_credentials_only_to_trusted_callers(
        tmp_path, gated, other_user):
    signed_data, userinfo_data = payload(21_000, 130), payload(22_000, 131)
    signed, userinfo = gated.add("cred-signed.bin", signed_data), \
        gated.add("cred-userinfo.bin", userinfo_data)
    public = gated.add("cred-public.bin", payload(23_000, 132))
    gated.add("cred-other.bin", payload(24_000, 133))
    host = gated.url.removeprefix("http://")
    signed_url = gated.file_url("cred-signed.bin") + \
        "?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA123"
    base = Path("/tmp") / f"hostkit-cred-{os.getpid()}-{tmp_path.name}"
    base.mkdir(mode=0o755)
    sock = base / "sock" / "daemon.sock"
    d = DaemonProcess(tmp_path, "--group", SHARED_GROUP, socket_path=str(sock),
                      env={"HOSTKIT_CACHE_DIR": str(base / "cache")})
    try:
        # the owner fetches with credentials of its own: a signed URL, URL userinfo
        for identifier, sha in ((signed_url, signed),
                                (f"http://alice:pw@{host}/f/cred-userinfo.bin", userinfo),
                                (gated.file_url("cred-public.bin"), public)):
            status, answer = call_json(d.url, "POST", "/v1/resolve", {"identifier": identifier})
            assert status == 200 and answer["sha256"] == sha, answer
        # another user gets the anonymously fetched bytes only
        assert _as_other(other_user, d.url, "GET", f"/v1/blobs/{public}")[0] == 200
        for sha in (signed, userinfo):
            status, answer = _as_other(other_user, d.url, "GET", f"/v1/blobs/{sha}")
            assert status == 404, (sha, status)  # not the bytes
            assert answer["error"] == "blob_not_found", answer
        # asking for the same URL without the credentials answers from the cache (the key is
        # the same) but writes no entry: the bytes stay the owner's
        status, answer = _as_other(other_user, d.url, "POST", "/v1/resolve",
                                   {"identifier": gated.file_url("cred-signed.bin")})
        assert status == 200 and answer["sha256"] == signed
        assert _as_other(other_user, d.url, "GET", f"/v1/blobs/{signed}")[0] == 404
        assert call(d.url, "GET", f"/v1/blobs/{signed}")[2] == signed_data  # the owner can
        # and the other user's own credentials are not taken: their bytes would be shared
        for identifier in (f"http://bob:pw@{host}/f/cred-other.bin",
                           gated.file_url("cred-other.bin") + "?X-Amz-Signature=b0b"):
            for method, path, body in (("POST", "/v1/resolve", {"identifier": identifier}),
                                       ("POST", "/v1/prefetch", {"items": [identifier]})):
                status, answer = _as_other(other_user, d.url, method, path, body)
                assert status == 403 and answer["error"] == "credentials_not_accepted", answer
                assert answer["hint"] and "pw" not in answer["message"] + answer["hint"]
        assert not gated.gets("cred-other.bin")
    finally:
        d.stop()
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_a_shared_daemon_trusts_allowed_users_and_shares_slots_fairly(tmp_path, gated,
                                                                      other_user):
    commit = "d" * 40
    gated.add(f"owner/repo/{commit}/allowed.bin", payload(15_000, 115))
    for seed, name in enumerate(("fair-held.bin", "fair-owner-2.bin", "fair-other.bin")):
        gated.add(name, payload(12_000, 200 + seed))
    gated.hold("fair-held.bin", after=1000)
    base = Path("/tmp") / f"hostkit-fair-{os.getpid()}-{tmp_path.name}"
    base.mkdir(mode=0o755)
    sock = base / "sock" / "daemon.sock"
    env = {"HOSTKIT_CACHE_DIR": str(base / "cache"),
           "HOSTKIT_GITHUB_RAW_URL": gated.url + "/raw"}
    d = DaemonProcess(tmp_path, "--group", SHARED_GROUP, "--allow-user", OTHER_USER,
                      "--jobs", "1", "--stall", "600", env=env, socket_path=str(sock))
    try:
        status, answer = _as_other(other_user, d.url, "POST", "/v1/resolve",
                                   {"identifier": f"github:owner/repo@{commit}/allowed.bin"})
        assert status == 200, answer  # an allowed user may use the daemon's credentials
        # the owner's job holds the only slot and queues a second item ...
        job = call_json(d.url, "POST", "/v1/prefetch", {"items": [
            gated.file_url("fair-held.bin"), gated.file_url("fair-owner-2.bin")]})[1]
        gated.wait_started("fair-held.bin")
        # ... then the other user queues one: when the slot frees it goes to them first
        status, other_job = _as_other(other_user, d.url, "POST", "/v1/prefetch",
                                      {"items": [gated.file_url("fair-other.bin")]})
        assert status == 202
        gated.release("fair-held.bin")
        wait_until(lambda: call_json(d.url, "GET", job["href"])[1]["state"] == "done",
                   what="the owner's job")
        order = [r.name for r in gated.seen if r.name in ("fair-owner-2.bin", "fair-other.bin")]
        assert order[0] == "fair-other.bin", order
    finally:
        gated.release("fair-held.bin")
        d.stop()
        subprocess.run(["rm", "-rf", str(base)], check=False)
