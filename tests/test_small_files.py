"""A folder's small files (hostkit.small_files): fetched into memory, stored in batches.

Each guarantee of the single-file path, checked on the small-file path with real processes
(`hostkit resolve` in a subprocess, or the API in this process) against real servers:
SeaweedFS (S3), and an aiohttp 'GCS' that lies (sizes, md5, bodies cut short; its listing
advertises md5, as GCS's does, so the advertised digest is checked on the first fetch).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hostkit.store.snapshots import parse_manifest
from tests import objectstore_fixtures as fx
from tests.conftest import run_cli
from tests.servers import AppThread
from tests.test_faults import _fill, small_disk  # noqa: F401 (fixture)
from tests.test_trees import files_of

seaweed, seaweed_proxy, proxy, s3env = fx.seaweed, fx.seaweed_proxy, fx.proxy, fx.s3env


# -- helpers ------------------------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ["HOSTKIT_CACHE_DIR"])


def s3_folder(seaweed, base: str, files: dict[str, bytes]) -> str:
    """A fresh prefix in SeaweedFS holding ``files``; its folder identifier under ``base``."""
    prefix = f"s{secrets.token_hex(4)}/"
    for rel, data in files.items():
        seaweed.admin.put_object(Bucket="plain", Key=prefix + rel, Body=data)
    return f"{base}/plain/{prefix}"


def leftovers(cache: Path) -> list[str]:
    """Partial files and sidecars under tmp/ (half-built snapshots included)."""
    tmp = cache / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []


def snapshots(cache: Path) -> list[str]:
    folder = cache / "snapshots"
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def assert_consistent(cache: Path) -> set[str]:
    """Every blob file is indexed, every indexed blob's file is there, each holds the bytes
    its name says; returns the blobs' sha256."""
    from hostkit.store.cache import Cache

    store = Cache(cache)
    try:
        rows = {b.sha256: b.size for b in store.blobs()}
    finally:
        store.close()
    folder = cache / "blobs" / "sha256"
    names = set(os.listdir(folder)) if folder.is_dir() else set()
    assert names == set(rows), f"unindexed {names - set(rows)}, missing {set(rows) - names}"
    for name in names:
        data = (folder / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == name and len(data) == rows[name]
    return names


def resolve_json(*args, env=None) -> dict:
    proc = run_cli("resolve", *args, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# -- a lying 'GCS' --------------------------------------------------------------------------


@dataclass
class Obj:
    """An object of the lying server, and how it lies."""

    data: bytes
    #: the size the listing says (None: the true one); the object resource tells the truth
    listed: int | None = None
    #: the md5 the listing and the object resource advertise (None: the true one)
    md5: bytes | None = None
    #: a ranged GET gets every byte from the range's start, past its end (as a server
    #: handing out a Git LFS object for a file listed by its pointer's size)
    overserve: bool = False
    #: this many GETs announce their length, send half of it and hang up (-1: every GET)
    cuts: int = 0
    #: the Range header of each GET
    gets: list = field(default_factory=list)


class LyingGcs:
    """An aiohttp stand-in for the GCS JSON API: list, object resource, media."""

    def __init__(self):
        from aiohttp import web

        self.objects: dict[str, Obj] = {}
        app = web.Application()
        app.router.add_get("/storage/v1/b/gbucket/o", self.listing)
        app.router.add_get("/storage/v1/b/gbucket/o/{key:.+}", self.resource)
        app.router.add_get("/download/storage/v1/b/gbucket/o/{key:.+}", self.media)
        self.server = AppThread(app)
        self.port = self.server.port

    def folder(self, files: dict[str, bytes | Obj]) -> tuple[str, str]:
        """A fresh prefix holding ``files``; returns (folder identifier, prefix)."""
        prefix = f"g{secrets.token_hex(4)}/"
        for rel, obj in files.items():
            self.objects[prefix + rel] = obj if isinstance(obj, Obj) else Obj(obj)
        return f"gs://gbucket/{prefix}", prefix

    def _item(self, name: str, *, listing: bool) -> dict:
        obj = self.objects[name]
        md5 = obj.md5 or hashlib.md5(obj.data).digest()
        size = obj.listed if listing and obj.listed is not None else len(obj.data)
        return {"name": name, "size": str(size), "generation": "7", "etag": "CAc=",
                "md5Hash": base64.b64encode(md5).decode()}

    async def listing(self, request):
        from aiohttp import web

        prefix = request.query.get("prefix", "")
        return web.json_response({"kind": "storage#objects", "items": [
            self._item(n, listing=True) for n in sorted(self.objects) if n.startswith(prefix)]})

    async def resource(self, request):
        from aiohttp import web

        name = urllib.parse.unquote(request.match_info["key"])
        if name not in self.objects:
            return web.json_response({"error": {"code": 404}}, status=404)
        return web.json_response(self._item(name, listing=False))

    async def media(self, request):
        from aiohttp import web

        name = urllib.parse.unquote(request.match_info["key"])
        obj = self.objects.get(name)
        if obj is None:
            return web.Response(status=404)
        rng = request.headers.get("Range")
        obj.gets.append(rng)
        start, end = 0, len(obj.data)
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
        if match:
            start = int(match.group(1))
            if match.group(2) and not obj.overserve:
                end = min(int(match.group(2)) + 1, end)
        body = obj.data[start:end]
        headers = {"Content-Length": str(len(body)), "x-goog-generation": "7",
                   "Content-Type": "application/octet-stream"}
        if match:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(obj.data)}"
        resp = web.StreamResponse(status=206 if match else 200, headers=headers)
        await resp.prepare(request)
        if obj.cuts:
            obj.cuts -= obj.cuts > 0
            await resp.write(body[:len(body) // 2])
            await asyncio.sleep(0.05)  # the client reads what was sent, then the cut
            request.transport.close()
            return resp
        await resp.write(body)
        await resp.write_eof()
        return resp

    def close(self):
        self.server.close()


@pytest.fixture(scope="module")
def gcs_server():
    server = LyingGcs()
    yield server
    server.close()


@pytest.fixture
def liar(gcs_server, monkeypatch, tmp_path):
    fx._clear_cloud_env(monkeypatch, tmp_path)  # (HOSTKIT_RETRIES=1)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{gcs_server.port}")
    monkeypatch.setenv("HOSTKIT_GCS_ANONYMOUS", "1")
    return gcs_server


# -- 1. a file larger than listed ------------------------------------------------------------


def test_a_file_larger_than_listed_is_fetched_whole_through_the_single_file_path(liar):
    lfs = os.urandom(2 << 20)
    small = {f"c{i}.json": os.urandom(3000) for i in range(5)}
    ident, _ = liar.folder({**small, "w.bin": Obj(lfs, listed=100, overserve=True)})
    got = resolve_json(ident)
    assert files_of(Path(got["path"])) == {**small, "w.bin": lfs}
    manifest = {f.path: f for f in parse_manifest(
        Path(got["path"] + ".manifest").read_bytes())}
    assert manifest["w.bin"].size == len(lfs)
    assert manifest["w.bin"].sha256 == hashlib.sha256(lfs).hexdigest()
    assert got["size"] == len(lfs) + sum(map(len, small.values()))
    assert leftovers(cache_dir()) == []
    assert_consistent(cache_dir())


def test_a_small_file_larger_than_listed_is_recorded_as_verified_and_pins(liar, tmp_path):
    """Listed 10 bytes, 20 served: the manifest holds the 20 bytes verified, and a pin by
    that manifest holds in this cache and in a fresh one."""
    body = b"twenty bytes of data"
    ident, _ = liar.folder({"a.txt": Obj(body, listed=10, overserve=True), "b.txt": b"b"})
    got = resolve_json(ident)
    assert files_of(Path(got["path"])) == {"a.txt": body, "b.txt": b"b"}
    manifest = {f.path: f for f in parse_manifest(
        Path(got["path"] + ".manifest").read_bytes())}
    assert (manifest["a.txt"].size, manifest["a.txt"].sha256) == (
        20, hashlib.sha256(body).hexdigest())
    pin = f"sha256:{got['sha256']}"
    again = resolve_json(ident, "--hash", pin)
    assert again["path"] == got["path"] and again["verified"]
    fresh = resolve_json(ident, "--hash", pin, env={"HOSTKIT_CACHE_DIR": str(tmp_path / "c2")})
    assert fresh["sha256"] == got["sha256"]
    assert files_of(Path(fresh["path"])) == {"a.txt": body, "b.txt": b"b"}


# -- 2. an advertised md5 that does not match ------------------------------------------------


def test_a_small_file_failing_its_advertised_md5_is_refused_and_nothing_kept(liar):
    good = {f"ok{i}.bin": os.urandom(2000) for i in range(6)}
    bad = os.urandom(3000)
    ident, prefix = liar.folder({**good, "bad.bin": Obj(bad, md5=hashlib.md5(b"x").digest())})
    proc = run_cli("resolve", ident)
    assert proc.returncode == 3, proc.stderr
    assert "bad.bin" in proc.stderr and "md5" in proc.stderr and "Traceback" not in proc.stderr
    cache = cache_dir()
    assert snapshots(cache) == [] and leftovers(cache) == []
    stored = assert_consistent(cache)
    assert hashlib.sha256(bad).hexdigest() not in stored
    listed = json.loads(run_cli("cache", "ls", "--json", check=True).stdout)
    assert "bad.bin" not in json.dumps(listed)
    # the bad file alone: the single-file path refuses it the same way
    alone = run_cli("resolve", f"gs://gbucket/{prefix}bad.bin")
    assert alone.returncode == 3 and "md5" in alone.stderr


# -- 3. bodies cut short -----------------------------------------------------------------------


def test_a_cut_small_file_is_resumed_within_the_run(liar):
    body = os.urandom(200_000)
    cut = Obj(body, cuts=1)
    ident, _ = liar.folder({"cut.bin": cut, "other.bin": b"other"})
    got = resolve_json(ident)
    assert files_of(Path(got["path"])) == {"cut.bin": body, "other.bin": b"other"}
    # asked again from where the cut left it (held in memory), not from byte 0
    assert len(cut.gets) == 2 and cut.gets[1].startswith("bytes=") and \
        int(cut.gets[1][6:].split("-")[0]) > 0, cut.gets
    assert leftovers(cache_dir()) == []


def test_a_small_file_cut_every_time_fails_clearly_and_leaves_nothing(liar):
    ident, _ = liar.folder({"never.bin": Obj(os.urandom(100_000), cuts=-1),
                            "fine.bin": b"fine"})
    proc = run_cli("resolve", ident)
    assert proc.returncode == 4, proc.stderr
    assert "never.bin" in proc.stderr and "Traceback" not in proc.stderr
    cache = cache_dir()
    assert snapshots(cache) == [] and leftovers(cache) == []
    assert_consistent(cache)


# -- 4. killed while a batch is stored --------------------------------------------------------


@pytest.mark.parametrize("point", ["batch-rename", "batch-index"])
def test_a_kill_while_a_batch_is_stored_is_repaired_by_the_rerun(s3env, seaweed, point):
    files = {f"d{i % 3}/f{i}.bin": os.urandom(20_000 + i) for i in range(12)}
    ident = s3_folder(seaweed, s3env, files)
    cache = cache_dir()
    killed = run_cli("resolve", ident, env={"HOSTKIT_FAILPOINT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert snapshots(cache) == []
    blobs = cache / "blobs" / "sha256"
    if point == "batch-rename":  # the batch's files are written, none moved in
        assert len([n for n in leftovers(cache) if n.endswith(".part")]) == len(files)
        assert not blobs.is_dir() or not any(blobs.iterdir())
    else:  # moved in, not indexed
        assert len(list(blobs.iterdir())) == len(files)
    got = resolve_json(ident)
    assert files_of(Path(got["path"])) == files
    # the dead run's files are gone or indexed: the rerun leaves nothing behind
    assert leftovers(cache) == []
    stored = assert_consistent(cache)
    assert {hashlib.sha256(d).hexdigest() for d in files.values()} <= stored
    pruned = run_cli("cache", "prune", "--max-size", "1G")
    assert pruned.returncode == 0, pruned.stderr
    assert resolve_json(ident, "--offline")["path"] == got["path"]


# -- 5. the disk fills up during a batch ------------------------------------------------------


def test_a_full_disk_during_a_batch_is_exit_6_and_nothing_half_stored(s3env, seaweed,
                                                                       small_disk):  # noqa: F811
    from hostkit.store.cache import Cache

    cache = small_disk / "cache"
    store = Cache(cache)
    store.entries()  # the index exists: the batch is what meets the full disk
    store.close()
    files = {f"f{i}.bin": os.urandom(256 << 10) for i in range(12)}  # 3 MiB, one batch
    ident = s3_folder(seaweed, s3env, files)
    filler = _fill(small_disk)
    with open(filler, "r+b") as f:
        f.truncate(filler.stat().st_size - (1 << 20))  # 1 MiB free
    proc = run_cli("resolve", ident)
    assert proc.returncode == 6, proc.stderr
    # met by the batch's writes (not the index): the files written before it are gone too
    assert "disk full while writing" in proc.stderr and "Traceback" not in proc.stderr
    assert leftovers(cache) == [] and snapshots(cache) == []
    assert_consistent(cache)
    filler.unlink()
    got = resolve_json(ident)
    assert files_of(Path(got["path"])) == files
    assert leftovers(cache) == []


def test_a_batch_failing_half_way_through_its_move_in_leaves_no_blob_behind(tmp_path,
                                                                            monkeypatch):
    """The disk fills up (or the blob folder refuses a name) after some of a batch's files
    were moved in: those are taken back out, as when the index write fails; none is left
    unindexed in blobs/ (they were left there before)."""
    import errno

    from hostkit.errors import CacheError
    from hostkit.store.cache import Cache
    from hostkit.store.index import StoredFile

    store = Cache(tmp_path / "cache")
    store.require_writable()  # as SmallFiles does first
    kept = store.add_small_files([(b"kept", StoredFile(
        "k:kept", "k:kept", hashlib.sha256(b"kept").hexdigest(), 4, {}, None, False, False,
        True))])[0]
    # first the same bytes as a stored blob (the batch's copy is dropped, the blob kept)
    batch = [(b"kept", StoredFile("k:again", "k:again", kept.sha256, 4, {}, None, False,
                                  False, True))]
    for i in range(3):
        data = f"file {i}".encode()
        batch.append((data, StoredFile(f"k:{i}", f"k:{i}", hashlib.sha256(data).hexdigest(),
                                       len(data), {}, None, False, False, True)))
    real_link, real_replace, links = os.link, os.replace, []

    def full(real):
        def call(src, dst, **kw):  # the blob folder takes no new name after three
            if "blobs" in str(dst):
                links.append(dst)
                if len(links) > 3:
                    raise OSError(errno.ENOSPC, "No space left on device")
            return real(src, dst, **kw)
        return call

    monkeypatch.setattr(os, "link", full(real_link))
    monkeypatch.setattr(os, "replace", full(real_replace))
    with pytest.raises(CacheError, match="disk full"):
        store.add_small_files(batch)
    monkeypatch.setattr(os, "link", real_link)
    monkeypatch.setattr(os, "replace", real_replace)
    store.close()
    assert len(links) >= 4
    assert assert_consistent(tmp_path / "cache") == {kept.sha256}  # another's blob stays
    assert leftovers(tmp_path / "cache") == []


# -- 6. strict trust on first use ---------------------------------------------------------------


def test_require_same_refuses_a_changed_small_file_and_keeps_the_old_one(s3env, seaweed):
    files = {"a.txt": b"alpha", "b.txt": b"bravo", "c/d.txt": b"delta"}
    ident = s3_folder(seaweed, s3env, files)
    first = resolve_json(ident)
    key = ident.removeprefix(f"{s3env}/plain/")
    seaweed.admin.put_object(Bucket="plain", Key=key + "b.txt", Body=b"BRAVO, changed")
    refused = run_cli("resolve", ident, "--require-same")
    assert refused.returncode == 3, refused.stderr
    assert "b.txt" in refused.stderr and "changed" in refused.stderr
    # the old snapshot, the folder's row and the file's entry and blob all stay
    assert files_of(Path(first["path"])) == files
    assert resolve_json(ident, "--offline")["sha256"] == first["sha256"]
    old_b = resolve_json(ident + "b.txt", "--offline")
    assert old_b["sha256"] == hashlib.sha256(b"bravo").hexdigest()
    assert hashlib.sha256(b"BRAVO, changed").hexdigest() not in assert_consistent(cache_dir())
    # without --require-same the change is taken, and said
    taken = resolve_json(ident)
    assert taken["sha256"] != first["sha256"]
    assert taken["changed_from"]["sha256"] == first["sha256"]
    assert files_of(Path(taken["path"]))["b.txt"] == b"BRAVO, changed"


# -- 7. two processes at once ---------------------------------------------------------------------


def test_two_processes_on_one_folder_store_each_blob_once(s3env, seaweed):
    files = {f"x/{i:03d}.bin": os.urandom(4096) + i.to_bytes(2, "big") for i in range(160)}
    files["dup.bin"] = files["x/000.bin"]  # the same bytes under two names
    ident = s3_folder(seaweed, s3env, files)
    cmd = [sys.executable, "-m", "hostkit.cli", "resolve", ident, "--json"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    answers = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        answers.append(json.loads(out))
    assert answers[0]["sha256"] == answers[1]["sha256"]
    assert answers[0]["path"] == answers[1]["path"]
    cache = cache_dir()
    snapshot = Path(answers[0]["path"])
    assert files_of(snapshot) == files
    stored = assert_consistent(cache)
    assert len(stored) == len(files)  # dup.bin shares a blob; the manifest is one
    for rel, data in files.items():  # one inode: the snapshot's file is the blob
        blob = cache / "blobs" / "sha256" / hashlib.sha256(data).hexdigest()
        assert os.stat(snapshot / rel).st_ino == os.stat(blob).st_ino, rel
    assert leftovers(cache) == []


# -- 8. a read-only cache -------------------------------------------------------------------------


def test_a_read_only_cache_refuses_a_new_small_folder_before_fetching(s3env, seaweed, proxy,
                                                                      tmp_path, monkeypatch):
    cached = s3_folder(seaweed, s3env, {"kept.txt": b"kept"})
    resolve_json(cached)
    files = {f"f{i}.bin": os.urandom(64 << 10) for i in range(10)}
    ident = s3_folder(seaweed, f"minio://127.0.0.1:{proxy.port}", files)
    view = tmp_path / "ro-view"
    view.mkdir()
    subprocess.run(["mount", "--bind", str(cache_dir()), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
        monkeypatch.setenv("HOSTKIT_CACHE_DIR", str(view))
        proxy.reset()
        proc = run_cli("resolve", ident)
        assert proc.returncode == 6, proc.stderr
        assert "read-only" in proc.stderr.lower() and "Traceback" not in proc.stderr
        # as the single-file path: the cache is found unwritable before any file is fetched
        assert proxy.down < 64 << 10, proxy.down
        assert resolve_json(cached, "--offline")  # what it holds still answers
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)


# -- the same process: a file resolved alone while its folder's batch is stored -----------------


def test_a_file_resolved_alone_while_its_batch_is_stored_leaves_the_batch_alone(
        s3env, seaweed, monkeypatch):
    """In one process (the daemon's), the single-file path must not take a batch's file
    being written for a dead run's partial of the same key."""
    import hostkit.store.cache as cache_module
    from hostkit.resolver import Resolver

    reached, go = threading.Event(), threading.Event()

    def point(name: str) -> None:
        if name == "batch-rename" and not reached.is_set():
            reached.set()
            go.wait(20)

    monkeypatch.setattr(cache_module, "failpoint", point)
    files = {"a.bin": os.urandom(30_000), "b.bin": os.urandom(30_000)}
    ident = s3_folder(seaweed, s3env, files)

    async def both():
        resolver = Resolver()
        try:
            folder = asyncio.ensure_future(resolver.resolve(ident))
            assert await asyncio.to_thread(reached.wait, 20)
            alone = await resolver.resolve(ident + "a.bin")
            go.set()
            return await folder, alone
        finally:
            go.set()
            await resolver.aclose()

    folder, alone = asyncio.run(both())
    assert files_of(folder.path) == files
    assert alone.path.read_bytes() == files["a.bin"]
    assert leftovers(cache_dir()) == []
    assert_consistent(cache_dir())
