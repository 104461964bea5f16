"""The byte path under faults: servers that ignore If-Range or trickle, kills, Ctrl-C, bit rot.

Each test runs the real CLI in a subprocess against the fault-injecting
origin (tests/origin.py), kills it with real signals, and checks what the
next run does with the bytes left on disk.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli


def spawn(*args, env=None) -> subprocess.Popen:
    """Start ``hostkit ARGS`` in the background with the test's environment."""
    return subprocess.Popen([sys.executable, "-m", "hostkit.cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def partial_bytes(cache: Path) -> int:
    """Bytes in partial downloads under ``cache``."""
    return sum(p.stat().st_size for p in (cache / "tmp").glob("*.part")) \
        if (cache / "tmp").exists() else 0


def wait_for_partial(cache: Path, at_least: int, proc: subprocess.Popen, limit=30.0) -> int:
    """Wait until the partial holds ``at_least`` bytes; return its size."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if (n := partial_bytes(cache)) >= at_least:
            return n
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    raise AssertionError(f"the partial never reached {at_least} bytes")


def served_bytes(origin, part: str, total: int) -> int:
    """Bytes the origin was asked for by GETs on paths containing ``part``."""
    n = 0
    for hit in origin.gets(part):
        start = int(hit.range[6:-1]) if hit.range else 0
        n += total - start
    return n


@pytest.fixture
def cache(isolated_env) -> Path:
    return isolated_env / "cache"


# -- 1. a server that ignores If-Range never gets its bytes mixed in ---------------


@pytest.mark.parametrize("mode", ["ifr-ignore", "ifr-noetag"])
def test_resume_against_a_server_ignoring_if_range_never_mixes(origin, cache, mode):
    old, new = os.urandom(1 << 20), os.urandom(1 << 20)
    origin.add(f"{mode}.bin", old)
    url = f"{origin.url}/{mode}/{mode}.bin"
    first = run_cli("resolve", url, env={"HOSTKIT_RETRIES": "0"})
    assert first.returncode == 4, first.stderr  # cut at 40%: a partial stays
    assert partial_bytes(cache) > 0
    new_sha = origin.add(f"{mode}.bin", new)  # the publisher replaced the file meanwhile
    origin.hits.clear()
    second = run_cli("resolve", url, "--json")
    assert second.returncode == 0, second.stderr
    got = json.loads(second.stdout)
    assert got["sha256"] == new_sha
    assert Path(got["path"]).read_bytes() == new
    # the server's 206 (new ETag, or none) was refused; it started again from byte 0
    assert [h.range for h in origin.gets(mode)][-1] is None
    third = run_cli("resolve", url, "--json", check=True)  # revalidates by HEAD: same answer
    assert json.loads(third.stdout)["sha256"] == new_sha


def test_a_weak_etag_never_resumes():
    from hostkit.remote import strong_validator as _strong

    assert not _strong('W/"abc"') and not _strong("lm:Tue, 01 Jan 2030 00:00:00 GMT")
    assert not _strong(None) and _strong('"abc"') and _strong("3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY")


# -- 4. resume survives any number of interruptions --------------------------------


def test_kill_rerun_kill_rerun_resumes_each_time(origin, cache):
    data = os.urandom(6 << 20)
    sha = origin.add("twice.bin", data)
    url = f"{origin.url}/slow/twice.bin"
    first = spawn("resolve", url, sha)
    wait_for_partial(cache, 1 << 20, first)
    first.kill()
    first.wait()
    second = spawn("resolve", url, sha)
    held = wait_for_partial(cache, 3 << 20, second)
    second.kill()
    second.wait()
    assert partial_bytes(cache) >= held
    assert list((cache / "tmp").glob("*.json")), "the second kill lost the resume sidecar"
    origin.hits.clear()
    last = run_cli("resolve", url, sha, check=True)
    assert Path(last.stdout.strip()).read_bytes() == data
    ranges = [h.range for h in origin.gets("twice.bin")]
    assert ranges and ranges[0] is not None and int(ranges[0][6:-1]) >= held, ranges
    assert served_bytes(origin, "twice.bin", len(data)) <= len(data) - held


@pytest.mark.parametrize("point", ["fsync", "verify", "rename"])
def test_a_kill_after_the_last_byte_is_adopted_without_a_request(origin, cache, point):
    data = os.urandom(1 << 20)
    sha = origin.add(f"done-{point}.bin", data)
    url = f"{origin.url}/f/done-{point}.bin"
    killed = run_cli("resolve", url, env={"HOSTKIT_FAILPOINT": point})
    assert killed.returncode == -signal.SIGKILL
    origin.hits.clear()
    again = run_cli("resolve", url, sha, "--json", check=True)
    assert json.loads(again.stdout)["sha256"] == sha
    assert origin.gets(f"done-{point}") == [], "the whole file was downloaded again"
    assert partial_bytes(cache) == 0 and not list((cache / "tmp").glob("*.json"))


@pytest.mark.parametrize("point", ["index", "entry"])
def test_an_orphan_blob_left_by_a_kill_is_adopted(origin, cache, point):
    data = os.urandom(1 << 20)
    sha = origin.add(f"orphan-{point}.bin", data)
    url = f"{origin.url}/f/orphan-{point}.bin"
    killed = run_cli("resolve", url, env={"HOSTKIT_FAILPOINT": point})
    assert killed.returncode == -signal.SIGKILL
    assert (cache / "blobs" / "sha256" / sha).exists()
    origin.hits.clear()
    again = run_cli("resolve", url, "--json", check=True)  # no hash: found through the sidecar
    assert json.loads(again.stdout)["sha256"] == sha
    assert origin.gets(f"orphan-{point}") == []
    listed = json.loads(run_cli("cache", "ls", "--json", check=True).stdout)
    assert sha in json.dumps(listed)


def test_ctrl_c_keeps_the_partial_and_says_one_line(origin, cache):
    data = os.urandom(6 << 20)
    sha = origin.add("ctrlc.bin", data)
    url = f"{origin.url}/slow/ctrlc.bin"
    proc = spawn("resolve", url, sha)
    held = wait_for_partial(cache, 1 << 20, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0], err
    assert "Task was destroyed" not in err and "Traceback" not in err
    assert partial_bytes(cache) >= held
    origin.hits.clear()
    run_cli("resolve", url, sha, check=True)
    first = origin.gets("ctrlc.bin")[0]
    assert first.range and int(first.range[6:-1]) >= held


# -- 5. a trickling server cannot hold a resolve for ever --------------------------


def test_a_trickling_server_stalls_retries_then_fails_clearly(origin, cache):
    origin.add("trickle.bin", os.urandom(64 << 10))
    started = time.monotonic()
    proc = run_cli("resolve", f"{origin.url}/trickle/trickle.bin", "--json", timeout=60,
                   env={"HOSTKIT_READ_TIMEOUT": "2", "HOSTKIT_MIN_RATE": "1000",
                        "HOSTKIT_RETRIES": "1"})
    assert proc.returncode == 4, proc.stderr
    assert json.loads(proc.stdout)["error"] == "stalled"
    assert "below 1000 bytes/s" in proc.stderr
    assert time.monotonic() - started < 20
    assert len(origin.gets("trickle.bin")) == 2  # retried once, resuming
    assert origin.gets("trickle.bin")[1].range is not None


def test_a_total_deadline_ends_a_slow_resolve(origin, cache):
    origin.add("deadline.bin", os.urandom(64 << 10))
    started = time.monotonic()
    proc = run_cli("resolve", f"{origin.url}/trickle/deadline.bin", "--json", timeout=60,
                   env={"HOSTKIT_DEADLINE": "2", "HOSTKIT_MIN_RATE": "0"})
    assert proc.returncode == 4, proc.stderr
    assert json.loads(proc.stdout)["error"] == "deadline"
    assert time.monotonic() - started < 15
    assert partial_bytes(cache) >= 8192  # kept for the next run


# -- 9. bit rot ---------------------------------------------------------------------


def _rot(path: Path) -> None:
    os.chmod(path, 0o600)
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(b"\x00rot\x00")
    os.chmod(path, 0o400)


def test_verify_on_hit_quarantines_a_rotten_blob_and_downloads_again(origin, cache):
    data = os.urandom(256 << 10)
    sha = origin.add("rot.bin", data)
    url = f"{origin.url}/f/rot.bin"
    path = Path(run_cli("resolve", url, sha, check=True).stdout.strip())
    _rot(path)
    served = run_cli("resolve", url, "--json", check=True)  # default: hits are not re-hashed
    assert json.loads(served.stdout)["cached"] is True
    origin.hits.clear()
    fixed = run_cli("resolve", url, "--json", env={"HOSTKIT_VERIFY_ON_HIT": "1"}, check=True)
    assert json.loads(fixed.stdout)["cached"] is False
    assert path.read_bytes() == data
    assert len(origin.gets("rot.bin")) == 1
    assert [p.name.split(".")[0] for p in (cache / "quarantine").iterdir()] == [sha]


def test_cache_verify_quarantines_rotten_blobs(origin, cache):
    sha = origin.add("rot2.bin", os.urandom(64 << 10))
    path = Path(run_cli("resolve", f"{origin.url}/f/rot2.bin", sha, check=True).stdout.strip())
    _rot(path)
    report = run_cli("cache", "verify", "--report-only", "--json")
    assert report.returncode == 8 and path.exists()
    assert run_cli("cache", "verify").returncode == 8
    assert not path.exists()
    assert len(list((cache / "quarantine").iterdir())) == 1


def test_scrub_walks_every_blob_and_quarantines_the_rotten_one(origin, resolver):
    import asyncio

    shas = [origin.add(f"scrub{i}.bin", os.urandom(32 << 10)) for i in range(5)]

    async def fill():
        for i, sha in enumerate(shas):
            await resolver.resolve(f"{origin.url}/f/scrub{i}.bin", sha)
        await resolver.context.aclose()

    asyncio.run(fill())
    _rot(resolver.cache.blob_path(shas[3]))
    found = []
    for _ in range(10):
        found += resolver.cache.scrub(64 << 10)
    assert [b.sha256 for b, _ in found] == [shas[3]]
    assert resolver.cache.blob(shas[3]) is None


# -- 2 (files). the cache is private ---------------------------------------------------


def test_the_cache_is_private(origin, cache):
    sha = origin.add("private.bin", os.urandom(1000))
    path = Path(run_cli("resolve", f"{origin.url}/f/private.bin", sha, check=True).stdout.strip())
    mode = lambda p: oct(p.stat().st_mode & 0o777)  # noqa: E731
    assert mode(cache) == "0o700"
    for sub in ("blobs", "blobs/sha256", "tmp", "locks"):
        assert mode(cache / sub) == "0o700", sub
    assert mode(cache / "index.db") == "0o600"
    assert mode(path) == "0o400"


def test_an_older_world_readable_cache_is_made_private(origin, cache):
    sha = origin.add("older.bin", os.urandom(1000))
    run_cli("resolve", f"{origin.url}/f/older.bin", sha, check=True)
    os.chmod(cache, 0o755)
    os.chmod(cache / "index.db", 0o644)
    run_cli("cache", "ls", check=True)
    assert oct(cache.stat().st_mode & 0o777) == "0o700"
    assert oct((cache / "index.db").stat().st_mode & 0o777) == "0o600"


# -- 10. many processes opening one fresh cache ----------------------------------------


@pytest.mark.parametrize("kills", [False, True])
def test_many_processes_open_a_fresh_cache_at_once(origin, cache, kills):
    data = os.urandom(2 << 20)
    sha = origin.add("crowd.bin", data)
    url = f"{origin.url}/slow/crowd.bin"
    procs = [spawn("resolve", url, sha) for _ in range(10)]
    if kills:
        time.sleep(0.3)
        for proc in procs[::2]:
            proc.kill()
    survivors = procs[1::2] if kills else procs
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        if proc in survivors:
            assert proc.returncode == 0, err
            assert Path(out.strip()).read_bytes() == data
            assert "database is locked" not in err


def test_a_busy_index_is_waited_for_when_opening(cache):
    """A process holding the index's write lock while another opens it: the opener waits."""
    import sqlite3
    import threading

    from hostkit.store.cache import Cache

    first = Cache(cache)
    first.entries()
    first.close()
    holder = sqlite3.connect(cache / "index.db", isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode=DELETE")  # the opener must switch it back: a write
    holder.execute("BEGIN EXCLUSIVE")
    threading.Timer(1.0, lambda: holder.execute("COMMIT")).start()
    opener = Cache(cache)
    assert opener.entries() == []
    assert opener.read_only is None
    holder.close()


# -- 6. full disk and read-only caches -------------------------------------------------


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("mounting a small tmpfs or a read-only bind mount needs root; "
                    "the CI and developer machines run the tests as root")


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """A 16 MiB tmpfs as the cache's disk."""
    _require_root()
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    monkeypatch.setenv("HOSTKIT_CACHE_DIR", str(mount / "cache"))
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_still_answers_hits_and_lets_prune_and_rm_free_space(origin, small_disk):
    cache = small_disk / "cache"
    shas = [origin.add(f"full{i}.bin", os.urandom(1 << 20)) for i in range(3)]
    urls = [f"{origin.url}/f/full{i}.bin" for i in range(3)]
    for url, sha in zip(urls, shas, strict=True):
        run_cli("resolve", url, sha, check=True)
    _fill(small_disk)
    hit = run_cli("resolve", urls[0], "--offline", "--json")  # the full path, not the fast one
    assert hit.returncode == 0, hit.stderr
    assert json.loads(hit.stdout)["sha256"] == shas[0]
    assert run_cli("resolve", urls[1], shas[1]).returncode == 0
    for args in (("cache", "ls"), ("cache", "info", urls[0]), ("cache", "verify", "--report-only")):
        proc = run_cli(*args)
        assert proc.returncode == 0, (args, proc.stderr)
    origin.add("more.bin", os.urandom(1 << 20))
    miss = run_cli("resolve", f"{origin.url}/f/more.bin")
    assert miss.returncode == 6, miss.stderr
    assert "Traceback" not in miss.stderr and "disk full" in miss.stderr
    assert partial_bytes(cache) == 0
    removed = run_cli("cache", "rm", urls[2])
    assert removed.returncode == 0, removed.stderr
    assert not (cache / "blobs" / "sha256" / shas[2]).exists()
    _fill(small_disk)
    pruned = run_cli("cache", "prune", "--max-size", "0")
    assert pruned.returncode == 0, pruned.stderr
    assert list((cache / "blobs" / "sha256").iterdir()) == []
    assert json.loads(run_cli("cache", "ls", "--json", check=True).stdout)["entries"] == []


def test_disk_full_at_the_index_write_is_a_clean_exit_6(origin, small_disk):
    """Leave room for the download but not for the index's WAL frames: a clean exit 6."""
    cache = small_disk / "cache"
    from hostkit.store.cache import Cache

    Cache(cache).entries()  # creates the index (`cache ls` no longer creates a cache)
    assert (cache / "index.db").exists()
    filler = small_disk / "filler"
    outcomes = []
    for extra in range(0, 48):  # free pages beyond the file's own: find the index's edge
        data = os.urandom(256 << 10)
        origin.add(f"edge{extra}.bin", data)
        filler.unlink(missing_ok=True)
        _fill(small_disk)
        with open(filler, "r+b") as f:
            f.truncate(max(0, filler.stat().st_size - (len(data) // 4096 + extra) * 4096))
        proc = run_cli("resolve", f"{origin.url}/f/edge{extra}.bin")
        assert "Traceback" not in proc.stderr and "OperationalError" not in proc.stderr
        if proc.returncode == 0:
            break
        assert proc.returncode == 6, proc.stderr
        outcomes.append(proc.stderr)
        if "cache index" in proc.stderr:
            assert "disk full" in proc.stderr
            # nothing half-stored: no blob without its row, no partial, no sidecar
            assert list((cache / "blobs" / "sha256").iterdir()) == []
            assert list((cache / "tmp").iterdir()) == []
            return
    raise AssertionError("never ran out of space exactly at the index write:\n"
                         + "\n".join(outcomes[-3:]))


@pytest.fixture
def read_only_cache(tmp_path, monkeypatch, origin):
    """A cache with one entry, then seen through a read-only bind mount."""
    _require_root()
    sha = origin.add("ro.bin", os.urandom(200_000))
    url = f"{origin.url}/f/ro.bin"
    run_cli("resolve", url, sha, check=True)
    view = tmp_path / "ro-view"
    view.mkdir()
    subprocess.run(["mount", "--bind", str(tmp_path / "cache"), str(view)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
    monkeypatch.setenv("HOSTKIT_CACHE_DIR", str(view))
    yield url, sha
    subprocess.run(["umount", "-l", str(view)], check=False)


def test_a_read_only_cache_serves_hits_and_listings(origin, read_only_cache):
    url, sha = read_only_cache
    for args in (("resolve", url, "--offline"), ("resolve", url, sha), ("resolve", url),
                 ("cache", "ls"), ("cache", "info", url), ("cache", "verify", "--report-only")):
        proc = run_cli(*args)
        assert proc.returncode == 0, (args, proc.stderr)
    origin.add("ro-miss.bin", b"x" * 1000)
    miss = run_cli("resolve", f"{origin.url}/f/ro-miss.bin")
    assert miss.returncode == 6 and "read-only" in miss.stderr, miss.stderr
    assert "Traceback" not in miss.stderr
    rm = run_cli("cache", "rm", url)
    assert rm.returncode == 6 and "read-only" in rm.stderr, rm.stderr


def test_an_object_store_ignoring_if_match_never_gets_two_objects_mixed(cache):
    """A store that answers later parts with another object's bytes (and ETag): refused."""
    from aiohttp import web

    from tests.daemon_fixtures import catch_all, serve_in_thread

    old, new = b"A" * (256 << 10), b"B" * (256 << 10)
    seen = []

    async def liar(request):
        seen.append(request.headers.get("Range"))
        if request.method == "HEAD":
            return web.Response(headers={"ETag": '"aaaa-2"', "Content-Length": str(len(old))})
        first, last = map(int, request.headers["Range"][6:].split("-"))
        data, tag = (old, '"aaaa-2"') if first == 0 else (new, '"bbbb-2"')  # ignores If-Match
        return web.Response(status=206, body=data[first:last + 1], headers={
            "ETag": tag, "Content-Range": f"bytes {first}-{last}/{len(data)}"})

    _, loop, url = serve_in_thread(catch_all(liar), "lying-s3")
    host = url.removeprefix("http://")
    try:
        proc = run_cli("resolve", f"minio://{host}/bkt/model.bin", "--json",
                       env={"HOSTKIT_MINIO_INSECURE_HOSTS": host, "HOSTKIT_S3_ANONYMOUS": "1",
                            "HOSTKIT_PART_SIZE": "65536", "HOSTKIT_RETRIES": "2"})
    finally:
        loop.call_soon_threadsafe(loop.stop)
    assert proc.returncode == 4, proc.stdout
    assert json.loads(proc.stdout)["error"] == "transient"
    assert "changed during the download" in proc.stderr
    assert not list((cache / "blobs" / "sha256").iterdir())
    assert json.loads(run_cli("cache", "ls", "--json", check=True).stdout)["entries"] == []
    assert len(seen) > 2  # it was asked for later parts, and retried


@pytest.fixture(scope="module")
def header_trickler():
    """A raw HTTP server that sends its response headers one byte a second.

    ``/headonly/NAME`` answers GET at once and trickles only HEAD; any other
    path trickles both. aiohttp restarts its read timeout on every byte, so
    only a timer on the whole answer ends such a request.
    """
    import asyncio
    import threading

    body = b"t" * 100_000
    head = (f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nETag: \"t1\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()

    async def handle(reader, writer):
        try:
            method, path = (await reader.readuntil(b"\r\n\r\n")).split()[:2]
            if path.startswith(b"/headonly/") and method == b"GET":
                writer.write(head + body)
            else:
                for byte in head:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(1.0)
                if method == b"GET":
                    writer.write(body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        writer.close()

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    found = {}

    def serve():
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0))
        found["url"] = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        ready.set()
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    assert ready.wait(10)
    yield found["url"]
    loop.call_soon_threadsafe(loop.stop)


FAST = {"HOSTKIT_READ_TIMEOUT": "2", "HOSTKIT_CONNECT_TIMEOUT": "1", "HOSTKIT_RETRIES": "0"}


def test_trickled_response_headers_stall(header_trickler):
    started = time.monotonic()
    proc = run_cli("resolve", f"{header_trickler}/slow-headers.bin", "--json", env=FAST,
                   timeout=60)
    assert proc.returncode == 4, proc.stderr
    assert json.loads(proc.stdout)["error"] == "stalled"
    assert time.monotonic() - started < 15


def test_a_trickled_revalidation_serves_the_cached_copy(header_trickler):
    url = f"{header_trickler}/headonly/reval.bin"
    first = json.loads(run_cli("resolve", url, "--json", check=True).stdout)
    started = time.monotonic()
    again = run_cli("resolve", url, "--json", env=FAST, timeout=60)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["sha256"] == first["sha256"]
    assert "could not revalidate" in again.stderr
    assert time.monotonic() - started < 15


def test_a_deadline_covers_waiting_for_another_process(header_trickler, cache):
    url = f"{header_trickler}/held.bin"
    holder = spawn("resolve", url, env={"HOSTKIT_READ_TIMEOUT": "120"})
    try:
        deadline = time.monotonic() + 10
        while not list((cache / "locks").glob("*.lock")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        started = time.monotonic()
        waiter = run_cli("resolve", url, "--json", env={"HOSTKIT_DEADLINE": "2"}, timeout=60)
        assert waiter.returncode == 4, waiter.stderr
        assert json.loads(waiter.stdout)["error"] == "deadline"
        assert time.monotonic() - started < 12
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("round_", range(3))
def test_repeated_ctrl_c_still_keeps_the_partial_quietly(origin, cache, round_):
    data = os.urandom(6 << 20)
    sha = origin.add(f"ctrlc3-{round_}.bin", data)
    proc = spawn("resolve", f"{origin.url}/slow/ctrlc3-{round_}.bin", sha)
    held = wait_for_partial(cache, 1 << 20, proc)
    for _ in range(3):
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0], err
    assert partial_bytes(cache) >= held
    assert list((cache / "tmp").glob("*.json"))
