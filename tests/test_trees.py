"""Folders (trees): a prefix or a Synapse folder resolves to a verified, read-only snapshot.

Real servers: SeaweedFS (S3), the GCS emulator and Azurite, each behind a TCP relay
that counts connections (so "no network" is checked, not assumed); the Synapse
stand-in for folders of entities; an aiohttp stand-in that lies in its S3 listings.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import unicodedata
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from hostkit.errors import ContentChanged, HashMismatch, NotFound, OfflineMiss
from hostkit.store.snapshots import (
    ListingCheck,
    TreeFile,
    UnsafeTree,
    manifest_bytes,
    parse_manifest,
)
from tests import github_fixtures as ghfx
from tests import objectstore_fixtures as fx
from tests import test_synapse as syn
from tests.conftest import run_cli
from tests.objectstore_fixtures import TcpProxy, resolve
from tests.servers import AppThread

# fixtures (module-scoped servers, relays, per-test environments)
seaweed, seaweed_proxy, proxy, s3env = fx.seaweed, fx.seaweed_proxy, fx.proxy, fx.s3env
gcs_emulator, gcs_proxy, gcsenv = fx.gcs_emulator, fx.gcs_proxy, fx.gcsenv
azurite, azenv = fx.azurite, fx.azenv


# -- helpers ------------------------------------------------------------------------------


def manifest_digest(folder: Path) -> str:
    """The tree digest of a folder, computed here from the documented form (not hostkit's)."""
    lines = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        lines.append((path.relative_to(folder).as_posix(),
                      f"{hashlib.sha256(data).hexdigest()} {len(data)}"))
    text = "".join(f"{meta} {rel}\n" for rel, meta in sorted(lines))
    return hashlib.sha256(text.encode()).hexdigest()


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in folder.rglob("*") if p.is_file()}


@dataclass
class Store:
    """One object store as the tests use it: identifiers through a counting relay, writes
    straight to the server."""

    name: str
    base: str  # e.g. minio://127.0.0.1:PORT/plain/ (through the relay)
    put: object
    delete: object
    proxy: TcpProxy

    def folder(self, files: dict[str, bytes]) -> str:
        """A fresh prefix holding ``files``; returns its folder identifier."""
        prefix = f"t{secrets.token_hex(4)}/"
        for rel, data in files.items():
            self.put(prefix + rel, data)
        return self.base + prefix


@pytest.fixture(scope="module")
def azurite_proxy(azurite):
    proxy = TcpProxy(azurite.port)
    yield proxy
    proxy.close()


@pytest.fixture(params=["s3", "gcs", "azure"])
def store(request, monkeypatch) -> Store:
    """Each object store in turn, its environment set, its relay's counters at zero."""
    name = request.param
    if name == "s3":
        base = request.getfixturevalue("s3env")
        seaweed = request.getfixturevalue("seaweed")
        proxy = request.getfixturevalue("proxy")

        def put(key, data):
            seaweed.admin.put_object(Bucket="plain", Key=key, Body=data)

        def delete(key):
            seaweed.admin.delete_object(Bucket="plain", Key=key)

        result = Store(name, f"minio://127.0.0.1:{proxy.port}/plain/", put, delete, proxy)
        assert base  # the environment (keys, insecure hosts) is set
    elif name == "gcs":
        emulator = request.getfixturevalue("gcsenv")
        proxy = request.getfixturevalue("gcs_proxy")
        proxy.reset()
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{proxy.port}")
        url = emulator.endpoint_url

        def put(key, data):  # a multipart upload: the emulator drops a media upload of b""
            body = (b"--BB\r\nContent-Type: application/json\r\n\r\n"
                    + json.dumps({"name": key}).encode()
                    + b"\r\n--BB\r\nContent-Type: application/octet-stream\r\n\r\n"
                    + data + b"\r\n--BB--\r\n")
            urllib.request.urlopen(urllib.request.Request(
                f"{url}/upload/storage/v1/b/gbucket/o?uploadType=multipart", data=body,
                method="POST", headers={"Content-Type": "multipart/related; boundary=BB"}),
                timeout=10)

        def delete(key):
            urllib.request.urlopen(urllib.request.Request(
                f"{url}/storage/v1/b/gbucket/o/{urllib.parse.quote(key, safe='')}",
                method="DELETE"), timeout=10)

        result = Store(name, "gs://gbucket/", put, delete, proxy)
    else:
        azurite = request.getfixturevalue("azenv")
        proxy = request.getfixturevalue("azurite_proxy")
        proxy.reset()
        relayed = azurite.connection_string.replace(f":{azurite.port}/", f":{proxy.port}/")
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", relayed)
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        container = service.get_container_client("cont")

        def put(key, data):
            container.upload_blob(key, data, overwrite=True)

        def delete(key):
            container.delete_blob(key)

        result = Store(name, "az://cont/", put, delete, proxy)
    return result


def resolve_tree(identifier: str, expected: str | None = None, **kwargs):
    got, stats = resolve(identifier, expected, **kwargs)
    assert got.tree, got
    return got, stats


def resolve_with_events(identifier: str, expected: str | None = None, **kwargs):
    """Resolve with a fresh Resolver; return (Resolved, the events it published)."""
    from hostkit.resolver import Resolver

    async def go():
        resolver = Resolver()
        seen: list = []
        resolver.events.subscribe(seen.append)
        try:
            return await resolver.resolve(identifier, expected, **kwargs), seen
        finally:
            await resolver.aclose()

    return asyncio.run(go())


# -- every object store --------------------------------------------------------------------


def test_folder_resolves_to_a_read_only_snapshot_and_pins_by_manifest(store, tmp_path):
    big = os.urandom(200_000)
    files = {"a.txt": b"alpha\n", "sub/b.bin": big, "sub/deeper/c.txt": b"alpha\n"}
    ident = store.folder({**files, "sub/": b""})  # a zero-byte folder placeholder: skipped
    got, stats = resolve_tree(ident)
    assert (got.cached, got.verified, got.files, got.size) == (False, False, 3,
                                                               sum(map(len, files.values())))
    assert got.identifier == ident and got.digests == {"sha256": got.sha256}
    assert files_of(got.path) == files
    assert got.sha256 == manifest_digest(got.path)  # the documented form, recomputed
    # each key is fetched (a download per key), identical bytes are stored once
    assert stats["downloads"] == 3
    blobs = Path(os.environ["HOSTKIT_CACHE_DIR"], "blobs", "sha256")
    assert len(list(blobs.iterdir())) == 3  # alpha, b.bin and the manifest
    for path in got.path.rglob("*"):  # read-only, files and folders
        assert not path.stat().st_mode & 0o222, path
    # the manifest lies beside the snapshot, and its sha256 is the digest
    manifest = got.path.with_name(got.path.name + ".manifest").read_bytes()
    assert hashlib.sha256(manifest).hexdigest() == got.sha256
    assert [f.path for f in parse_manifest(manifest)] == ["a.txt", "sub/b.bin",
                                                          "sub/deeper/c.txt"]
    # pinned by its digest: answered from the cache, no connection at all
    store.proxy.reset()
    pinned, stats = resolve_tree(ident, f"sha256:{got.sha256}")
    assert (pinned.cached, pinned.verified, pinned.path) == (True, True, got.path)
    assert store.proxy.connections == 0 and stats["bytes_from_origin"] == 0
    # a wrong digest: HashMismatch, and nothing placed at the output
    out = tmp_path / "model"
    with pytest.raises(HashMismatch):
        import hostkit

        hostkit.resolve(ident, "sha256:" + "0" * 64, cache_dir=os.environ["HOSTKIT_CACHE_DIR"],
                        output=out)
    assert not out.exists() and not list(tmp_path.glob(".model*"))


def test_only_a_changed_file_is_fetched_again(store):
    ident = store.folder({"keep.bin": os.urandom(100_000), "w.bin": b"version 1",
                          "x/y.txt": b"why"})
    first, _ = resolve_tree(ident)
    prefix = ident.removeprefix(store.base)
    store.put(prefix + "w.bin", b"version 2!")
    store.proxy.reset()
    second, stats = resolve_tree(ident)
    assert stats["downloads"] == 1 and stats["bytes_from_origin"] == len(b"version 2!")
    assert files_of(second.path)["w.bin"] == b"version 2!" and second.sha256 != first.sha256
    assert second.changed_from["sha256"] == first.sha256  # trust on first use, for a folder
    assert second.cached is False
    # unchanged: listed again, and no file asked about (its listed validator is its entry's)
    from hostkit.events import Hit

    third, events = resolve_with_events(ident)
    assert (third.sha256, third.cached) == (second.sha256, True)
    assert [type(e).__name__ for e in events] == ["Hit"] and events[0].key.endswith("/")
    assert isinstance(events[0], Hit) and events[0].revalidated  # the listing confirmed it
    # the old snapshot is still its digest's: pinning it answers with the old files
    old, _ = resolve_tree(ident, f"sha256:{first.sha256}")
    assert files_of(old.path)["w.bin"] == b"version 1"
    # strict trust on first use refuses a change, and keeps the recorded manifest
    store.delete(prefix + "x/y.txt")
    with pytest.raises(ContentChanged):
        resolve_tree(ident, require_same=True)
    again, _ = resolve_tree(ident, offline=True)
    assert again.sha256 == second.sha256


def test_two_folders_share_identical_files(store):
    shared = os.urandom(50_000)
    one = store.folder({"w.bin": shared, "a.txt": b"a"})
    two = store.folder({"nested/w2.bin": shared, "b.txt": b"b"})
    first, _ = resolve_tree(one)
    second, _ = resolve_tree(two)
    a, b = first.path / "w.bin", second.path / "nested" / "w2.bin"
    assert os.stat(a).st_ino == os.stat(b).st_ino  # one inode: the blob itself
    blobs = Path(os.environ["HOSTKIT_CACHE_DIR"], "blobs", "sha256")
    assert (blobs / hashlib.sha256(shared).hexdigest()).stat().st_ino == os.stat(a).st_ino


#: Names each server stores as given and hostkit must refuse (what the servers accept
#: differs: SeaweedFS and Azurite normalise '//' or '\\', the GCS emulator keeps all).
HOSTILE = {
    "s3": [["x", "x/y"], ["\u00e9", "e\u0301"], ["ctl\x01"]],
    "gcs": [["a//b"], ["a\\b"], ["./c"], ["/abs"], ["x", "x/y"], ["\u00e9", "e\u0301"]],
    "azure": [["a//b"], ["/abs"], ["x", "x/y"], ["\u00e9", "e\u0301"]],
}


def test_hostile_names_are_refused(store, tmp_path):
    for names in HOSTILE[store.name]:
        ident = store.folder({**{n: b"z" for n in names}, "fine.txt": b"ok"})
        with pytest.raises(UnsafeTree, match="unsafe listing") as exc:
            resolve_tree(ident)
        assert exc.value.exit_code == 2
        snapshots = Path(os.environ["HOSTKIT_CACHE_DIR"], "snapshots")
        assert not snapshots.exists() or not any(snapshots.iterdir()), names


def test_output_dir_is_built_next_to_it_and_swapped_in(store, tmp_path):
    ident = store.folder({"m/w.bin": b"weights", "cfg.json": b"{}"})
    out = tmp_path / "srv" / "model"
    proc = run_cli("resolve", ident, "-o", out, "--json")
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["placed"] == str(out) and answer["tree"] is True and answer["files"] == 2
    assert files_of(out) == {"m/w.bin": b"weights", "cfg.json": b"{}"}
    blob = Path(answer["path"], "m", "w.bin")
    assert os.stat(out / "m" / "w.bin").st_ino == os.stat(blob).st_ino  # a hard link
    # again, after a change: replaced as a whole, nothing left beside it
    store.put(ident.removeprefix(store.base) + "cfg.json", b'{"v": 2}')
    inode = os.stat(out).st_ino
    proc = run_cli("resolve", ident, "-o", out)
    assert proc.returncode == 0, proc.stderr and proc.stdout.strip() == str(out)
    assert (out / "cfg.json").read_bytes() == b'{"v": 2}' and os.stat(out).st_ino != inode
    assert sorted(p.name for p in out.parent.iterdir()) == ["model"]
    # a folder hostkit did not place (a writable file in it) is refused and left alone
    (out / "mine.txt").write_text("my notes")
    proc = run_cli("resolve", ident, "-o", out)
    assert proc.returncode == 2 and "did not place" in proc.stderr
    assert (out / "mine.txt").read_text() == "my notes"


# -- SeaweedFS only: a killed resolve resumes --------------------------------------------------


def _indexed_blobs(cache: Path) -> list[str]:
    """The blobs the cache's index lists now (read-only; none while there is no index)."""
    import sqlite3

    try:
        db = sqlite3.connect(f"file:{cache / 'index.db'}?mode=ro", uri=True, timeout=5)
        try:
            return [row[0] for row in db.execute("SELECT sha256 FROM blobs")]
        finally:
            db.close()
    except sqlite3.Error:
        return []


class SlowProxy(TcpProxy):
    """A relay that sleeps ``pause`` seconds per 256 KiB sent to the client."""

    pause = 0.0

    async def _pump(self, src, dst, downstream: bool):
        import contextlib

        try:
            while data := await src.read(256 << 10):
                if downstream:
                    self.down += len(data)
                    if self.pause:
                        await asyncio.sleep(self.pause)
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.close()


def test_killed_tree_resolve_resumes_without_fetching_again(s3env, seaweed, tmp_path):
    proxy = SlowProxy(seaweed.port)
    try:
        small = {f"s{i}.bin": os.urandom(300_000) for i in range(6)}
        big = os.urandom(8 << 20)
        prefix = f"k{secrets.token_hex(4)}/"
        for rel, data in {**small, "z/big.bin": big}.items():
            seaweed.admin.put_object(Bucket="plain", Key=prefix + rel, Body=data)
        ident = f"minio://127.0.0.1:{proxy.port}/plain/{prefix}"
        cache = Path(os.environ["HOSTKIT_CACHE_DIR"])
        env = {**os.environ, "HOSTKIT_PART_SIZE": str(1 << 20), "HOSTKIT_CONCURRENCY": "1"}
        proxy.pause = 0.05  # 8 MiB take about 1.6 s
        killed = subprocess.Popen([sys.executable, "-m", "hostkit.cli", "resolve", ident],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        part_size = 0
        while time.monotonic() < deadline and killed.poll() is None:
            blobs = _indexed_blobs(cache)  # stored and indexed: a rerun knows them
            part_size = 0
            for part in (cache / "tmp").glob("*.part"):
                try:
                    part_size = max(part_size, part.stat().st_size)
                except FileNotFoundError:  # claimed (renamed) or finished meanwhile
                    continue
            if len(blobs) >= len(small) and part_size >= (2 << 20):
                break
            time.sleep(0.02)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(10)
        assert killed.returncode == -signal.SIGKILL, killed.stderr.read()
        assert len(blobs) >= len(small) and part_size >= 2 << 20
        assert not (cache / "snapshots").exists() or not any(
            p.is_dir() for p in (cache / "snapshots").iterdir())  # never a partial snapshot
        proxy.pause = 0.0
        proxy.reset()
        proc = run_cli("resolve", ident, "--json", env=env)
        assert proc.returncode == 0, proc.stderr
        answer = json.loads(proc.stdout)
        assert files_of(Path(answer["path"])) == {**small, "z/big.bin": big}
        # the small files (1.8 MB) were not fetched again and the big one resumed (near
        # where it stopped: the last part in flight may be fetched again): a fresh fetch of
        # everything would be 10.2 MB
        assert proxy.down < len(big) - part_size + (1 << 20), (proxy.down, part_size)
    finally:
        proxy.close()


# -- hostile listings from a lying server ------------------------------------------------------


class LyingS3:
    """An aiohttp 'S3' answering ListObjectsV2 with whatever a test puts in ``pages``."""

    def __init__(self):
        from aiohttp import web

        self.pages: list[str] = []
        #: objects served (whole, or from a Range's start), by key
        self.objects: dict[str, bytes] = {}
        #: send each listing page in two pieces, 50 ms apart
        self.slow = False
        self.gets = 0
        app = web.Application()
        app.router.add_get("/bucket/", self.listing)
        app.router.add_route("*", "/{tail:.*}", self.other)
        self.server = AppThread(app)
        self.port = self.server.port

    async def listing(self, request):
        from aiohttp import web

        token = int(request.query.get("continuation-token") or 0)
        body = self.pages[min(token, len(self.pages) - 1)].encode()
        if not self.slow:
            return web.Response(body=body, content_type="application/xml")
        resp = web.StreamResponse(headers={"Content-Type": "application/xml"})
        await resp.prepare(request)
        await resp.write(body[:40])
        await asyncio.sleep(0.05)
        await resp.write(body[40:])
        await resp.write_eof()
        return resp

    async def other(self, request):
        from aiohttp import web

        from tests.origin import _etag, _send

        self.gets += 1
        key = request.path.removeprefix("/bucket/")
        if key not in self.objects:
            return web.Response(status=404)
        data = self.objects[key]
        closed = re.fullmatch(r"bytes=(\d+)-(\d+)", request.headers.get("Range", ""))
        if closed and request.method == "GET":  # a part, as S3 answers one
            a, b = int(closed[1]), min(int(closed[2]), len(data) - 1)
            return web.Response(status=206, body=data[a:b + 1], headers={
                "Content-Range": f"bytes {a}-{b}/{len(data)}", "ETag": _etag(data),
                "Content-Type": "application/octet-stream"})
        return await _send(request, data)

    def close(self):
        self.server.close()


def page(keys, token: str | None = None, *, encoded: bool = True,
         objects: dict[str, bytes] | None = None) -> str:
    from tests.origin import _etag

    def meta(i: int, key: str) -> str:
        data = (objects or {}).get(key)
        if data is None:
            return f"<Size>1</Size><ETag>&quot;e{i}&quot;</ETag>"
        return f"<Size>{len(data)}</Size><ETag>{_etag(data).replace(chr(34), '&quot;')}</ETag>"

    contents = "".join(
        f"<Contents><Key>{urllib.parse.quote_plus(k, safe='/') if encoded else k}</Key>"
        f"{meta(i, k)}</Contents>" for i, k in enumerate(keys))
    more = f"<IsTruncated>true</IsTruncated><NextContinuationToken>{token}" \
           "</NextContinuationToken>" if token else "<IsTruncated>false</IsTruncated>"
    kind = "<EncodingType>url</EncodingType>" if encoded else ""
    return ('<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.'
            f'amazonaws.com/doc/2006-03-01/"><Name>bucket</Name>{kind}{contents}{more}'
            "</ListBucketResult>")


@pytest.fixture
def liar(monkeypatch):
    server = LyingS3()
    monkeypatch.setenv("HOSTKIT_S3_ANONYMOUS", "1")
    monkeypatch.setenv("HOSTKIT_MINIO_INSECURE_HOSTS", "127.0.0.1")
    monkeypatch.setenv("HOSTKIT_RETRIES", "0")
    yield server
    server.close()


@pytest.mark.parametrize("keys, why", [
    (["p/../etc/passwd"], "climbs out"), (["p/a/../../x"], "climbs out"),
    (["p//etc/passwd"], "absolute"), (["p/a//b"], "empty or '.'"), (["p/./a"], "empty or '.'"),
    (["p/a\\..\\b"], "backslash"), (["p/a\nb"], "control character"),
    (["p/x", "p/x"], "listed twice"), (["p/x", "p/x/y"], "also a folder"),
    (["p/\u00e9", "p/e\u0301"], "normalisation"), (["p/" + "n" * 256], "longer than"),
])
def test_lying_listing_is_refused_before_any_download(liar, keys, why):
    liar.pages = [page(["p/fine.txt", *keys])]
    with pytest.raises(UnsafeTree, match=why):
        resolve(f"minio://127.0.0.1:{liar.port}/bucket/p/")
    assert liar.gets == 0


def test_listing_caps_and_loops(liar, monkeypatch):
    ident = f"minio://127.0.0.1:{liar.port}/bucket/p/"
    liar.pages = [page([f"p/{i}" for i in range(3)], "1"), page([f"p/{i}" for i in range(3, 6)])]
    monkeypatch.setenv("HOSTKIT_TREE_MAX_FILES", "4")
    with pytest.raises(UnsafeTree, match="more than 4 files") as exc:
        resolve(ident)
    assert "HOSTKIT_TREE_MAX_FILES" in exc.value.hint and liar.gets == 0
    monkeypatch.setenv("HOSTKIT_TREE_MAX_FILES", "100")
    liar.pages = [page([], "0")]  # "more" forever, the same token, no keys
    with pytest.raises(Exception, match="goes round in circles"):
        resolve(ident)
    liar.pages = [page(["q/outside"])]
    with pytest.raises(Exception, match="not under the prefix"):
        resolve(ident)
    liar.pages = [page([])]
    with pytest.raises(NotFound, match="no files in this folder"):
        resolve(ident)
    liar.pages = ["<html>not s3</html>"]
    with pytest.raises(Exception, match="not ListObjectsV2"):
        resolve(ident)


def test_pages_arriving_in_pieces_are_read_whole(liar):
    """A listing page is read to its end, however the server sends it (it was cut at the
    first piece, and a page of 1000 keys from SeaweedFS was refused as not XML)."""
    liar.objects = {"p/a b+c.txt": b"plus and space", "p/d/e.bin": b"e" * 5000,
                    "p/z.txt": b"zed"}
    keys = sorted(liar.objects)
    liar.pages = [page(keys[:2], "1", objects=liar.objects),
                  page(keys[2:], objects=liar.objects)]
    liar.slow = True
    got, _ = resolve_tree(f"minio://127.0.0.1:{liar.port}/bucket/p/")
    assert files_of(got.path) == {k.removeprefix("p/"): v for k, v in liar.objects.items()}


def test_a_listing_told_to_retry_after_n_seconds_waits_at_least_that(tmp_path, monkeypatch):
    """A listing answered "busy, Retry-After: 1" is asked again no sooner than 1 s later,
    as a download is (the listing's retry jittered the server's wait downwards: 0.5-1 s)."""
    from types import SimpleNamespace

    from hostkit import trees
    from hostkit.errors import TransientError
    from hostkit.remote import Remote, TreeEntry
    from hostkit.settings import Settings

    asked: list[float] = []

    class Busy(Remote):
        cache_key = display = "stub:busy/"
        tree = True

        async def list(self):
            asked.append(time.monotonic())
            if len(asked) == 1:
                raise TransientError("stub:busy/: the server answered 503", retry_after=1.0,
                                     hint="try again later")
            yield TreeEntry("a.bin", self, 1)

    monkeypatch.setattr("random.random", lambda: 0.0)  # the jitter at its low end
    resolver = SimpleNamespace(settings=Settings(cache_dir=tmp_path, retries=1))
    entries = asyncio.run(trees._listing(resolver, Busy()))
    assert [e.path for e in entries] == ["a.bin"] and len(asked) == 2
    assert asked[1] - asked[0] >= 1.0


# -- the manifest and the name rules, on their own -----------------------------------------


def test_manifest_is_canonical_and_recomputable_with_the_shell(tmp_path):
    root = tmp_path / "t"
    files = {"b.txt": b"b", "a/z.bin": b"\x00" * 10, "a b/c": b"space", "\u00e9.txt": b"e",
             "A.txt": b"upper"}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    entries = [TreeFile(rel, len(d), hashlib.sha256(d).hexdigest()) for rel, d in files.items()]
    data = manifest_bytes(reversed(entries))
    assert data == manifest_bytes(entries)  # order of the listing does not matter
    assert parse_manifest(data) == sorted(entries, key=lambda f: f.path.encode())
    script = ("cd \"$1\" && find . -type f -printf '%P\\n' | LC_ALL=C sort | "
              "while IFS= read -r p; do printf '%s %s %s\\n' \"$(sha256sum < \"$p\" | "
              "cut -c1-64)\" \"$(stat -c %s \"$p\")\" \"$p\"; done | sha256sum")
    shell = subprocess.run(["bash", "-c", script, "-", str(root)], capture_output=True,
                           text=True, check=True).stdout.split()[0]
    assert shell == hashlib.sha256(data).hexdigest()
    for bad in (b"x", data + b"junk\n", data[:-1], data.replace(b"\n", b"\r\n", 1)):
        with pytest.raises(ValueError):
            parse_manifest(bad)


def test_listing_check_rules():
    check = ListingCheck("t")
    for good in ("a", "a b", "x/y/z", "\u00e9", ".hidden", "..a", "a..", "A"):
        check.add(good)
    check.finish()
    for bad in ("", "/a", "a/", "a//b", "./a", "a/.", "..", "a/../b", "a\\b", "a\x00b",
                "a\x7fb", "\ud800", "n" * 256, "a/" * 2100):
        with pytest.raises(UnsafeTree):
            ListingCheck("t").add(bad)
    nfd = ListingCheck("t")
    nfd.add(unicodedata.normalize("NFD", "\u00e9"))
    with pytest.raises(UnsafeTree, match="normalisation"):
        nfd.add("\u00e9")
    both = ListingCheck("t")
    both.add("a/b/c")
    both.add("a/b")
    with pytest.raises(UnsafeTree, match="also a folder"):
        both.finish()


# -- the cache: ls, pin, prune, rm, verify, offline, the index schema ---------------------------


def test_a_cache_without_hard_links_gets_read_only_copies(s3env, seaweed, monkeypatch):
    """Where links fail (too many links to one blob, a file system without them) the
    snapshot holds read-only copies (the blob store and `-o` use the same fallback)."""
    import errno

    prefix = f"n{secrets.token_hex(4)}/"
    data = {"w.bin": os.urandom(30_000), "d/v.bin": os.urandom(20_000)}
    for rel, body in data.items():
        seaweed.admin.put_object(Bucket="plain", Key=prefix + rel, Body=body)

    def no_link(*_, **__):
        raise OSError(errno.EMLINK, "Too many links")

    monkeypatch.setattr(os, "link", no_link)
    got, _ = resolve_tree(f"{s3env}/plain/{prefix}")
    assert files_of(got.path) == data
    blobs = Path(os.environ["HOSTKIT_CACHE_DIR"]) / "blobs" / "sha256"
    for rel, body in data.items():
        copy = os.stat(got.path / rel)
        assert copy.st_mode & 0o777 == 0o400
        assert copy.st_ino != os.stat(blobs / hashlib.sha256(body).hexdigest()).st_ino


def test_cache_commands_account_for_snapshots(s3env, seaweed, monkeypatch):
    prefix = f"c{secrets.token_hex(4)}/"
    data = {"w.bin": os.urandom(30_000), "v.bin": os.urandom(20_000)}
    for rel, body in data.items():
        seaweed.admin.put_object(Bucket="plain", Key=prefix + rel, Body=body)
    ident = f"{s3env}/plain/{prefix}"
    got, _ = resolve_tree(ident)
    listing = json.loads(run_cli("cache", "ls", "--json", check=True).stdout)
    tree = [e for e in listing["entries"] if e["identifier"] == ident]
    assert tree and tree[0]["files"] == 2 and tree[0]["size"] == 50_000
    assert tree[0]["sha256"] == got.sha256
    assert "(folder, 2 files)" in run_cli("cache", "ls", check=True).stdout
    # pinned: prune keeps its files (and its snapshot)
    run_cli("cache", "pin", ident, check=True)
    run_cli("cache", "prune", "--max-size", "0", "-y", check=True)
    assert got.path.is_dir() and files_of(got.path) == data
    run_cli("cache", "unpin", ident, check=True)
    # evicting a file it links drops the snapshot; the next resolve fetches just that file
    w = hashlib.sha256(data["w.bin"]).hexdigest()
    run_cli("cache", "rm", w, "-y", check=True)
    assert not got.path.exists()
    again, stats = resolve_tree(ident)
    assert again.path == got.path and stats["downloads"] == 1 and files_of(again.path) == data
    # a file whose bytes rot is quarantined by verify, and the snapshot goes with it
    blob = Path(os.environ["HOSTKIT_CACHE_DIR"], "blobs", "sha256", w)
    os.chmod(blob, 0o600)
    blob.write_bytes(b"rotten" + data["w.bin"][6:])
    assert run_cli("cache", "verify").returncode == 8
    assert not got.path.exists()
    # rm of the folder: its row, its manifest and its snapshot go; its files stay cached
    again, _ = resolve_tree(ident)
    proc = run_cli("cache", "rm", ident, "-y", "--json", check=True)
    assert json.loads(proc.stdout)["removed_blobs"] == [again.sha256]
    assert not again.path.exists()
    with pytest.raises(OfflineMiss):
        resolve_tree(ident, offline=True)
    v = hashlib.sha256(data["v.bin"]).hexdigest()
    assert Path(os.environ["HOSTKIT_CACHE_DIR"], "blobs", "sha256", v).exists()


def test_offline_and_rebuilt_from_blobs(s3env, seaweed):
    prefix = f"o{secrets.token_hex(4)}/"
    seaweed.admin.put_object(Bucket="plain", Key=prefix + "w.bin", Body=b"offline bytes")
    ident = f"{s3env}/plain/{prefix}"
    got, _ = resolve_tree(ident)
    # the snapshot folder gone (deleted by hand): rebuilt from the blobs, with no request
    from hostkit.store.layout import Layout
    from hostkit.store.snapshots import drop_snapshot

    drop_snapshot(Layout(os.environ["HOSTKIT_CACHE_DIR"]), got.sha256)
    again, stats = resolve_tree(ident, f"sha256:{got.sha256}", offline=True)
    assert again.path == got.path and files_of(again.path) == {"w.bin": b"offline bytes"}
    offline, _ = resolve_tree(ident, offline=True)
    assert offline.cached and offline.sha256 == got.sha256


def test_an_older_index_gains_the_tree_tables(tmp_path):
    import sqlite3

    from hostkit.store.index import SCHEMA_VERSION, Index
    from hostkit.store.layout import Layout

    root = tmp_path / "old"
    root.mkdir()
    db = sqlite3.connect(root / "index.db")
    db.executescript("""
        CREATE TABLE blobs (sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL,
            digests TEXT NOT NULL, created REAL NOT NULL, accessed REAL NOT NULL);
        CREATE TABLE entries (key TEXT PRIMARY KEY, identifier TEXT NOT NULL,
            sha256 TEXT NOT NULL, size INTEGER NOT NULL, validator TEXT,
            immutable INTEGER NOT NULL DEFAULT 0, verified INTEGER NOT NULL DEFAULT 0,
            pinned INTEGER NOT NULL DEFAULT 0, anonymous INTEGER NOT NULL DEFAULT 0,
            created REAL NOT NULL, accessed REAL NOT NULL, checked REAL NOT NULL);
        PRAGMA user_version=2;""")
    db.close()
    index = Index(Layout(root))
    assert index.trees() == [] and index.tree("k") is None
    index.put_tree("k", "s3://b/p/", "ab" * 32, 10, 1, {"cd" * 32}, immutable=False,
                   verified=False, anonymous=False)
    assert index.tree("k").files == 1
    assert sqlite3.connect(root / "index.db").execute(
        "PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    index.close()


# -- Synapse folders -------------------------------------------------------------------------


synapse_server, synapse = syn.synapse_server, syn.synapse


def test_synapse_folder(synapse, tmp_path):
    shared = os.urandom(40_000)
    folder = synapse.add_folder(f"model-{secrets.token_hex(3)}")
    sub = synapse.add_folder("weights", parent=folder)
    ids = {"config.json": synapse.add_file("config.json", b"{}", parent=folder),
           "README": synapse.add_file("README", b"read me", parent=folder),
           "weights/w.bin": synapse.add_file("w.bin", shared, parent=sub),
           "weights/v.bin": synapse.add_file("v.bin", b"v1", parent=sub)}
    got, stats = resolve_tree(f"synapse:{folder}")
    expected = {"config.json": b"{}", "README": b"read me", "weights/w.bin": shared,
                "weights/v.bin": b"v1"}
    assert files_of(got.path) == expected and got.sha256 == manifest_digest(got.path)
    assert len(synapse.requests("/entity/children")) >= 3  # paginated (2 a page), recursive
    # pinned: no request at all
    synapse.hits.clear()
    pinned, _ = resolve_tree(f"synapse:{folder}", f"sha256:{got.sha256}")
    assert pinned.path == got.path and synapse.hits == []
    # a new version of one file: only it is downloaded (files are pinned to their version)
    synapse.add_version(ids["weights/v.bin"], b"v2 bytes")
    synapse.hits.clear()
    again, stats = resolve_tree(f"synapse:{folder}")
    assert files_of(again.path)["weights/v.bin"] == b"v2 bytes"
    assert len(synapse.storage_hits()) == 1 and stats["downloads"] == 1
    # a second folder holding the same bytes shares the inode
    other = synapse.add_folder(f"copy-{secrets.token_hex(3)}")
    synapse.add_file("same.bin", shared, parent=other)
    copy, _ = resolve_tree(f"synapse:{other}")
    assert os.stat(copy.path / "same.bin").st_ino == os.stat(got.path / "weights/w.bin").st_ino
    # a file still resolves as a file (and a version of a folder is not a folder)
    single, _ = resolve(f"synapse:{ids['README']}")
    assert not single.tree and single.path.read_bytes() == b"read me"
    # -o DIR
    out = tmp_path / "model"
    proc = run_cli("resolve", f"synapse:{folder}", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert files_of(out) == {**expected, "weights/v.bin": b"v2 bytes"}


@pytest.mark.parametrize("names, why", [
    (["..", "ok"], "climbs out"), (["a\\b"], "backslash"), (["\u00e9", "e\u0301"],
                                                            "normalisation")])
def test_synapse_hostile_names(synapse, names, why):
    folder = synapse.add_folder(f"bad-{secrets.token_hex(3)}")
    for name in names:
        synapse.add_file(name, b"x", parent=folder)
    with pytest.raises(UnsafeTree, match=why):
        resolve(f"synapse:{folder}")
    assert synapse.storage_hits() == []


def test_empty_synapse_folder_is_not_found(synapse):
    folder = synapse.add_folder(f"empty-{secrets.token_hex(3)}")
    with pytest.raises(NotFound, match="no files"):
        resolve(f"synapse:{folder}")


# -- through the daemon ----------------------------------------------------------------------


def test_tree_through_the_daemon(s3env, seaweed, daemon, monkeypatch):
    prefix = f"d{secrets.token_hex(4)}/"
    # 4096 bytes: as large as the snapshot folder itself (a memo checking the path's size
    # alone would take the folder for the blob it remembered)
    body = b"via the daemon".ljust(4096, b".")
    seaweed.admin.put_object(Bucket="plain", Key=prefix + "w.bin", Body=body)
    # s3:// with the endpoint in the environment: the daemon (in this process) reads it too
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", seaweed.endpoint_url)
    ident = f"s3://plain/{prefix}"
    import hostkit
    from hostkit.settings import load_settings

    for name, value in daemon.env.items():
        monkeypatch.setenv(name, value)
    got = hostkit.resolve_info(ident, settings=load_settings())
    assert str(got.path).startswith(str(daemon.settings.cache_dir))  # the daemon's answer
    assert got.tree and got.files == 1 and files_of(got.path) == {"w.bin": body}
    assert os.stat(got.path).st_size == got.size  # the case the memo must not take
    for _ in range(2):  # the second: an answer the daemon could have remembered
        again = hostkit.resolve_info(ident, f"sha256:{got.sha256}", settings=load_settings())
        assert again.tree and again.files == 1 and again.cached and again.path == got.path


# -- GitHub folders at a commit -------------------------------------------------------------


github_server, gh = ghfx.github_server, ghfx.gh


def test_github_folder_at_a_commit(gh, tmp_path):
    from hostkit.errors import NotPermanent

    weights = os.urandom(30_000)
    commit = gh.commit("o/r", {"models/m/config.json": b"{}", "models/m/w.bin": gh.lfs(weights),
                               "models/m/sub/x.txt": b"x", "models/other.txt": b"other",
                               "README.md": b"# r"})
    ident = f"github:o/r@{commit}/models/m/"
    got, _ = resolve_tree(ident)
    assert files_of(got.path) == {"config.json": b"{}", "w.bin": weights, "sub/x.txt": b"x"}
    assert got.identifier == ident and got.sha256 == manifest_digest(got.path)
    assert len(gh.seen("api", "GET")) == 1  # one listing for the whole folder
    # a commit never changes: no request at all, hash or no hash
    gh.hits.clear()
    again, _ = resolve_tree(ident)
    assert again.cached and again.path == got.path and gh.hits == []
    # the repository's root, and a second commit sharing the weights: one inode
    later = gh.commit("o/r", {"models/m/config.json": b'{"v": 2}'})
    root, _ = resolve_tree(f"github:o/r@{later}/")
    assert files_of(root.path)["models/m/config.json"] == b'{"v": 2}'
    assert os.stat(root.path / "models/m/w.bin").st_ino == os.stat(got.path / "w.bin").st_ino
    # a branch is looked up, refused with the pinned folder, or pinned with --pin
    with pytest.raises(NotPermanent) as exc:
        resolve("github:o/r@main/models/m/")
    assert exc.value.suggestion == f"github:o/r@{later}/models/m/"
    pinned, _ = resolve_tree("github:o/r@main/models/m/", pin=True)
    assert pinned.identifier == f"github:o/r@{later}/models/m/"
    assert pinned.pinned_from == "github:o/r@main/models/m/"
    # no such folder; a symbolic link in it
    with pytest.raises(NotFound, match="no folder"):
        resolve(f"github:o/r@{commit}/nothing/")
    gh.repos["o/r"].modes["models/m/sub/x.txt"] = "120000"
    with pytest.raises(UnsafeTree, match="symbolic link"):
        resolve(f"github:o/r@{commit}/models/")


def test_fast_path_answers_a_pinned_folder_as_the_full_path(s3env, seaweed, monkeypatch):
    prefix = f"f{secrets.token_hex(4)}/"
    seaweed.admin.put_object(Bucket="plain", Key=prefix + "w.bin", Body=b"fast")
    # s3:// with the endpoint from AWS_ENDPOINT_URL_S3: no plugin setting in the environment
    # (one would send the fast path to the full path, which checks it)
    monkeypatch.delenv("HOSTKIT_MINIO_INSECURE_HOSTS")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", seaweed.endpoint_url)
    ident = f"s3://plain/{prefix}"
    digest = json.loads(run_cli("resolve", ident, "--json", check=True).stdout)["sha256"]
    fast = run_cli("resolve", ident, digest, "--json", check=True)
    full = run_cli("resolve", ident, digest, "--json", "--offline", check=True)  # not fast
    assert json.loads(fast.stdout) == json.loads(full.stdout)
    assert json.loads(fast.stdout)["tree"] is True
    # it was the fast path: the resolver was never imported (-X importtime lists imports)
    env = {"PYTHONPROFILEIMPORTTIME": "1"}
    fast = run_cli("resolve", ident, digest, "--json", env=env)
    assert fast.returncode == 0 and json.loads(fast.stdout) == json.loads(full.stdout)
    assert "hostkit.resolver" not in fast.stderr and "hostkit.fastpath" in fast.stderr
    # a snapshot gone: the fast path does not answer (the full path rebuilds it)
    from hostkit.store.layout import Layout
    from hostkit.store.snapshots import drop_snapshot

    drop_snapshot(Layout(os.environ["HOSTKIT_CACHE_DIR"]), digest)
    rebuilt = run_cli("resolve", ident, digest, env=env)
    assert rebuilt.returncode == 0 and "hostkit.resolver" in rebuilt.stderr
    assert rebuilt.stdout.strip() == json.loads(full.stdout)["path"]


def test_output_dir_killed_before_the_swap_keeps_the_old_tree(s3env, seaweed, tmp_path):
    prefix = f"x{secrets.token_hex(4)}/"
    seaweed.admin.put_object(Bucket="plain", Key=prefix + "w.bin", Body=b"old")
    ident = f"{s3env}/plain/{prefix}"
    out = tmp_path / "model"
    run_cli("resolve", ident, "-o", out, check=True)
    seaweed.admin.put_object(Bucket="plain", Key=prefix + "w.bin", Body=b"new")
    killed = run_cli("resolve", ident, "-o", out, env={"HOSTKIT_FAILPOINT": "tree-swap"})
    assert killed.returncode == -signal.SIGKILL
    assert files_of(out) == {"w.bin": b"old"}  # never half-built, never the new one half-way
    assert len(list(tmp_path.glob(".model.hostkit-*.tmp"))) == 1  # what the kill left
    run_cli("resolve", ident, "-o", out, check=True)
    assert files_of(out) == {"w.bin": b"new"}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".model")) == []


@pytest.mark.parametrize("mount", ["tmpfs", "bind"])
def test_output_dir_that_is_a_mount_point_is_filled_in_place(s3env, seaweed, tmp_path, mount):
    """``-o DIR`` where DIR is a volume's mount point (an init container filling an
    emptyDir): it cannot be renamed or swapped, so it is filled where it is. A tmpfs is
    another file system (copies); a bind mount is the cache's own (os.path.ismount
    cannot see it: the swap's EBUSY says so)."""
    if os.geteuid() != 0:
        pytest.fail("needs root, to mount a tmpfs or a bind mount as the output folder")
    prefix = f"m{secrets.token_hex(4)}/"
    for rel, data in {"w.bin": b"old weights", "cfg/a.json": b"{}", "gone.txt": b"x"}.items():
        seaweed.admin.put_object(Bucket="plain", Key=prefix + rel, Body=data)
    ident = f"{s3env}/plain/{prefix}"
    out = tmp_path / "app" / "model"
    out.mkdir(parents=True)
    if mount == "tmpfs":
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(out)], check=True)
    else:
        (tmp_path / "volume").mkdir()
        subprocess.run(["mount", "--bind", str(tmp_path / "volume"), str(out)], check=True)
    try:
        proc = run_cli("resolve", ident, "-o", out, "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["placed"] == str(out)
        assert files_of(out) == {"w.bin": b"old weights", "cfg/a.json": b"{}", "gone.txt": b"x"}
        # the folder changed: what was there goes, whole; a kill before the moves changes
        # nothing and leaves only its hidden folder, which the next run removes
        seaweed.admin.put_object(Bucket="plain", Key=prefix + "w.bin", Body=b"new weights")
        seaweed.admin.delete_object(Bucket="plain", Key=prefix + "gone.txt")
        killed = run_cli("resolve", ident, "-o", out, env={"HOSTKIT_FAILPOINT": "tree-swap"})
        assert killed.returncode == -signal.SIGKILL
        visible = {k: v for k, v in files_of(out).items() if not k.startswith(".hostkit-")}
        assert visible == {"w.bin": b"old weights", "cfg/a.json": b"{}", "gone.txt": b"x"}
        # (built inside the tmpfs; beside the bind mount, whose EBUSY comes at the swap)
        left = [*out.glob(".hostkit-*.tmp"), *out.parent.glob(".model.hostkit-*.tmp")]
        assert len(left) == 1
        proc = run_cli("resolve", ident, "-o", out)
        assert proc.returncode == 0, proc.stderr
        assert sorted(p.name for p in out.iterdir()) == ["cfg", "w.bin"]  # nothing hidden
        assert [p.name for p in out.parent.iterdir()] == ["model"]
        assert files_of(out) == {"w.bin": b"new weights", "cfg/a.json": b"{}"}
        # a file hostkit did not place is refused and left alone, as for any folder
        (out / "mine.txt").write_text("my notes")
        proc = run_cli("resolve", ident, "-o", out)
        assert proc.returncode == 2 and "did not place" in proc.stderr
        assert (out / "mine.txt").read_text() == "my notes"
    finally:
        subprocess.run(["umount", "-l", str(out)], check=False)


def _mounted_tmpfs(out: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root, to mount a tmpfs as the output folder")
    out.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(out)], check=True)


def _hostkit(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hostkit.cli", *map(str, args)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def _until(what, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, f"timed out waiting for {what.__doc__}"
        time.sleep(0.02)


def test_mount_point_fills_one_at_a_time_and_check_it_again_after_the_build(
        s3env, seaweed, tmp_path):
    """A fill in place holds a lock on the mount point: a second run waits for it (two
    runs' removals and moves interleaved: a traceback, a half-filled folder). And the
    mount point is checked again after the build: a file of the user's written
    meanwhile is not deleted."""
    prefix = f"q{secrets.token_hex(4)}/"
    for rel, data in {"w.bin": b"weights", "cfg/a.json": b"{}"}.items():
        seaweed.admin.put_object(Bucket="plain", Key=prefix + rel, Body=data)
    ident = f"{s3env}/plain/{prefix}"
    out = tmp_path / "app" / "model"
    _mounted_tmpfs(out)
    first = second = None
    try:
        first = _hostkit("resolve", ident, "-o", out,
                         env={"HOSTKIT_FAILPOINT": "tree-swap:SIGSTOP"})

        def stopped():
            """the first run to stop, its folder built"""
            with open(f"/proc/{first.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "T"
        _until(stopped)
        second = _hostkit("resolve", ident, "-o", out)

        def waits():
            """the second run to wait for the first's lock (or to end: it did not wait)"""
            assert second.poll() is None, f"did not wait: {second.communicate()}"
            with open("/proc/locks") as f:
                return any("->" in line and str(second.pid) in line.split() for line in f)
        _until(waits)
        (out / "notes.txt").write_text("mine")
        os.kill(first.pid, signal.SIGCONT)
        for proc in (first, second):
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 2 and "notes.txt, which hostkit did not place" in err
        assert [p.name for p in out.iterdir()] == ["notes.txt"]
        (out / "notes.txt").unlink()
        proc = run_cli("resolve", ident, "-o", out)
        assert proc.returncode == 0, proc.stderr
        assert sorted(p.name for p in out.iterdir()) == ["cfg", "w.bin"]
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
        subprocess.run(["umount", "-l", str(out)], check=False)


def test_mount_point_hidden_folder_of_a_killed_run_goes_whatever_its_pid(
        s3env, seaweed, tmp_path):
    """A restarted init container runs as the same pid (1) as the one killed mid-fill:
    the hidden folder it left names a live pid, yet nothing fills the volume any more.
    Before, it stayed for good (a second copy of the model on the volume)."""
    prefix = f"p{secrets.token_hex(4)}/"
    seaweed.admin.put_object(Bucket="plain", Key=prefix + "w.bin", Body=b"weights")
    ident = f"{s3env}/plain/{prefix}"
    out = tmp_path / "model"
    _mounted_tmpfs(out)
    try:
        killed = run_cli("resolve", ident, "-o", out, env={"HOSTKIT_FAILPOINT": "tree-swap"})
        assert killed.returncode == -signal.SIGKILL
        [left] = out.iterdir()
        left.rename(out / ".hostkit-1-0123456789ab.tmp")  # pid 1: alive, here as in a pod
        proc = run_cli("resolve", ident, "-o", out)
        assert proc.returncode == 0, proc.stderr
        assert [p.name for p in out.iterdir()] == ["w.bin"]
    finally:
        subprocess.run(["umount", "-l", str(out)], check=False)


def test_mount_point_is_not_filled_with_a_folder_naming_the_hidden_folder(
        s3env, seaweed, tmp_path):
    """A listed top-level name shaped like the fill's hidden folder would be taken for a
    killed run's (removed, never replaced): refused, the mount point left as it was."""
    prefix = f"h{secrets.token_hex(4)}/"
    for rel in ("w.bin", ".hostkit-99999999-0123456789ab.tmp/y"):
        seaweed.admin.put_object(Bucket="plain", Key=prefix + rel, Body=b"data")
    ident = f"{s3env}/plain/{prefix}"
    out = tmp_path / "model"
    _mounted_tmpfs(out)
    try:
        (out / "old.bin").write_bytes(b"placed before")
        (out / "old.bin").chmod(0o400)
        proc = run_cli("resolve", ident, "-o", out)
        assert proc.returncode == 2, proc.stderr
        assert "hostkit's hidden folder" in proc.stderr and f"-o {out}/" in proc.stderr
        assert [p.name for p in out.iterdir()] == ["old.bin"]
        proc = run_cli("resolve", ident, "-o", f"{out}/model")  # the way out it names
        assert proc.returncode == 0, proc.stderr
        assert files_of(out / "model") == {"w.bin": b"data",
                                           ".hostkit-99999999-0123456789ab.tmp/y": b"data"}
    finally:
        subprocess.run(["umount", "-l", str(out)], check=False)


def test_lock_file_pins_a_folder(s3env, seaweed, tmp_path):
    prefix = f"l{secrets.token_hex(4)}/"
    seaweed.admin.put_object(Bucket="plain", Key=prefix + "a/w.bin", Body=b"locked")
    ident = f"{s3env}/plain/{prefix}"
    lock = tmp_path / "hostkit.lock"
    run_cli("lock", ident, "-o", lock, check=True)
    assert ident in lock.read_text()
    proc = run_cli("resolve", "-r", lock, "-o", f"{tmp_path / 'out'}/", check=True)
    placed = Path(proc.stdout.strip())
    assert placed == tmp_path / "out" / prefix.rstrip("/") and files_of(placed) == {
        "a/w.bin": b"locked"}
    # the folder changes: here the pinned folder is still answered from the cache (no
    # request); on another machine (an empty cache) the lock refuses it
    seaweed.admin.put_object(Bucket="plain", Key=prefix + "a/w.bin", Body=b"changed")
    again = run_cli("resolve", "-r", lock, check=True)
    assert files_of(Path(again.stdout.strip())) == {"a/w.bin": b"locked"}
    refused = run_cli("resolve", "-r", lock, env={"HOSTKIT_CACHE_DIR": str(tmp_path / "c2")})
    assert refused.returncode == 3 and "hash mismatch" in refused.stderr
    assert not (tmp_path / "c2" / "snapshots").exists() or not any(
        (tmp_path / "c2" / "snapshots").iterdir())


def test_one_progress_for_the_whole_folder(s3env, seaweed):
    from hostkit.results import Progress

    class Recorder(Progress):
        def __init__(self):
            self.calls: list = []

        def start(self, identifier, total, done):
            self.calls.append(("start", identifier, total, done))

        def advance(self, nbytes):
            self.calls.append(("advance", nbytes))

        def close(self):
            self.calls.append(("close",))

    prefix = f"p{secrets.token_hex(4)}/"
    files = {"a.bin": os.urandom(300_000), "b/c.bin": os.urandom(70_000)}
    for rel, body in files.items():
        seaweed.admin.put_object(Bucket="plain", Key=prefix + rel, Body=body)
    ident = f"{s3env}/plain/{prefix}"
    first = Recorder()
    resolve_tree(ident, progress=first)
    assert first.calls[0] == ("start", ident, 370_000, 0) and first.calls[-1] == ("close",)
    assert sum(c[1] for c in first.calls if c[0] == "advance") == 370_000
    seaweed.admin.put_object(Bucket="plain", Key=prefix + "a.bin", Body=b"x" * 1000)
    second = Recorder()
    resolve_tree(ident, progress=second)
    assert second.calls[0] == ("start", ident, 71_000, 70_000)  # the rest is cached
    assert sum(c[1] for c in second.calls if c[0] == "advance") == 1000


def test_a_read_only_cache_answers_a_pinned_folder(s3env, seaweed, tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.fail("needs root, for a read-only bind mount of the cache")
    body = {"w.bin": b"read only", "c/d.txt": b"d"}
    one, two = f"r{secrets.token_hex(4)}/", f"r{secrets.token_hex(4)}/"
    for prefix in (one, two):
        for rel, data in body.items():
            seaweed.admin.put_object(Bucket="plain", Key=prefix + rel, Body=data)
    got, _ = resolve_tree(f"{s3env}/plain/{one}")
    view = tmp_path / "ro-view"
    view.mkdir()
    subprocess.run(["mount", "--bind", os.environ["HOSTKIT_CACHE_DIR"], str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
        monkeypatch.setenv("HOSTKIT_CACHE_DIR", str(view))
        # the same files under another prefix: the same manifest, held; no row can be written
        pinned, _ = resolve_tree(f"{s3env}/plain/{two}", f"sha256:{got.sha256}")
        assert pinned.cached and files_of(pinned.path) == body
        listing = run_cli("cache", "ls", "--json")
        assert listing.returncode == 0 and json.loads(listing.stdout)["entries"]
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)


def test_listings_page_through_every_server(store, monkeypatch):
    """Two keys a page: each backend follows its continuation (S3's token, Azure's marker)
    to the last page. (The GCS emulator ignores maxResults: see the next test.)"""
    module = {"s3": "s3", "gcs": "gcs", "azure": "azure"}[store.name]
    import importlib

    monkeypatch.setattr(importlib.import_module(f"hostkit_backends.{module}"), "LIST_PAGE", 2)
    files = {f"n{i}/f{i}.txt": f"file {i}".encode() for i in range(7)}
    got, _ = resolve_tree(store.folder(files))
    assert files_of(got.path) == files and got.files == 7


def test_gcs_listing_follows_page_tokens(monkeypatch, tmp_path):
    """An aiohttp 'GCS' answering two objects a page (the emulator gives all at once)."""
    import threading

    from aiohttp import web

    from tests.origin import _send

    objects = {f"p/{i}/f.bin": f"object {i}".encode() for i in range(5)}
    names = sorted(objects)
    asked: list[str | None] = []

    async def listing(request):
        token = request.query.get("pageToken")
        asked.append(token)
        start = int(token or 0)
        page = {"kind": "storage#objects", "items": [
            {"name": n, "size": str(len(objects[n])), "etag": f"e{i}"}
            for i, n in enumerate(names[start:start + 2], start)]}
        if start + 2 < len(names):
            page["nextPageToken"] = str(start + 2)
        return web.json_response(page)

    async def media(request):
        return await _send(request, objects[request.match_info["key"]])

    app = web.Application()
    app.router.add_get("/storage/v1/b/gbucket/o", listing)
    app.router.add_get("/download/storage/v1/b/gbucket/o/{key:.+}", media)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    runner = web.AppRunner(app)

    async def start():
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]

    port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("HOSTKIT_GCS_ANONYMOUS", "1")
        got, _ = resolve_tree("gs://gbucket/p/")
        assert files_of(got.path) == {k.removeprefix("p/"): v for k, v in objects.items()}
        assert asked == [None, "2", "4"]
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)


def test_a_listing_smaller_than_the_object_never_stores_a_truncated_file(liar, monkeypatch):
    """An S3 listing that says 100 bytes for a 2 MiB object (stale, or lying) while the
    server honours ranges: the read of bytes 0-99 came back as a fine 206 and the folder
    held a 100-byte file, exit 0. The 206's Content-Range total names another object:
    re-read (a HEAD for the real size), the file is whole."""
    monkeypatch.setenv("HOSTKIT_RETRIES", "2")
    monkeypatch.setenv("HOSTKIT_BACKOFF", "0.01")
    big, small = os.urandom(2 << 20), b"fine"
    liar.objects = {"p/big.bin": big, "p/ok.txt": small}
    listing = page(sorted(liar.objects), objects=liar.objects)
    liar.pages = [listing.replace(f"<Size>{len(big)}</Size>", "<Size>100</Size>")]
    got, _ = resolve_tree(f"minio://127.0.0.1:{liar.port}/bucket/p/")
    assert files_of(got.path) == {"big.bin": big, "ok.txt": small}
